// berth plan IMAGE [flags] [-- COMMAND]: the launch plan, without running it. With
// --slurm-step it is the plan of a Slurm step's container (what the SPANK plugin asks for once
// per step and node), written atomically to -o for the tasks that wait on it.
import { renameSync, writeFileSync } from 'node:fs';
import { BerthError } from '../errors.js';
import { hostFacts, runtimeDir } from '../host/user.js';
import { stepPlan } from '../plan/build.js';
import type { LaunchPlan } from '../plan/types.js';
import { formatPlan, preparePlan, type RunFlags } from './run.js';

export interface PlanFlags extends RunFlags {
  slurmStep?: boolean;
  keepEnv?: string;
  stepLinger?: string;
  output?: string;
  format?: string;
  /** With --slurm-step: run the image's Entrypoint once when the step's container starts. */
  entrypoint?: boolean;
}

/**
 * The plan of a Slurm step's container (the plugin's `berth plan --slurm-step`, and `berth
 * srun`'s): `keepEnv` as pyxis's --container-env, and with `entrypoint` the image's Entrypoint
 * run once, with `true` as its command, when the container starts.
 */
export async function prepareStepPlan(image: string, args: string[], flags: RunFlags, step: { keepEnv?: string; linger: number; entrypoint?: boolean }): Promise<LaunchPlan> {
  const host = stepHostFacts();
  const { plan, metadata } = await preparePlan('exec', image, args, flags, host);
  const entrypoint = metadata.config.Entrypoint ?? [];
  const init = step.entrypoint && entrypoint.length > 0 ? [...entrypoint, 'true'] : [];
  return stepPlan(plan, host, (step.keepEnv ?? '').split(',').filter(Boolean), step.linger, init);
}

/** Host facts for a step: the runtime directory every node has (a login session's XDG_RUNTIME_DIR is not on them). */
export function stepHostFacts() {
  const host = hostFacts();
  return { ...host, runtimeDir: runtimeDir(host.uid, { ...process.env, XDG_RUNTIME_DIR: undefined }) };
}

export async function planCommand(image: string, args: string[], flags: PlanFlags): Promise<string> {
  if (args[0] === '--') args = args.slice(1);
  let text: string;
  if (flags.slurmStep) {
    const linger = Number(flags.stepLinger ?? 2);
    if (!Number.isInteger(linger) || linger < 0) throw new BerthError('USAGE', `--step-linger ${flags.stepLinger}: expected seconds`, 'e.g. --step-linger 2');
    text = formatPlan(await prepareStepPlan(image, args, flags, { keepEnv: flags.keepEnv, linger, entrypoint: flags.entrypoint }), flags.format ?? 'helper');
  } else {
    text = formatPlan((await preparePlan(args.length > 0 ? 'exec' : 'run', image, args, flags)).plan, flags.format ?? 'json');
  }
  if (!flags.output) return text;
  const tmp = `${flags.output}.tmp-${process.pid}`;
  writeFileSync(tmp, text.endsWith('\n') ? text : `${text}\n`, { mode: 0o600 });
  renameSync(tmp, flags.output);
  return '';
}
