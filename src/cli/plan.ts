// berth plan IMAGE [flags] [-- COMMAND]: the launch plan, without running it. With
// --slurm-step it is the plan of a Slurm step's container (what the SPANK plugin asks for once
// per step and node), written atomically to -o for the tasks that wait on it.
import { renameSync, writeFileSync } from 'node:fs';
import { BerthError } from '../errors.js';
import { hostFacts, runtimeDir } from '../host/user.js';
import { stepPlan } from '../plan/build.js';
import { openImage } from '../runtime/image.js';
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

/** The image's Entrypoint with `true` as its command: run once, it does its setup and ends. */
export function entrypointInit(meta: { config: { Entrypoint: string[] | null } }): string[] {
  const ep = meta.config.Entrypoint ?? [];
  return ep.length > 0 ? [...ep, 'true'] : [];
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
    const host = stepHostFacts();
    const prepared = await preparePlan('exec', image, args, flags, host);
    const init = flags.entrypoint ? entrypointInit((await openImage(prepared.image)).metadata) : [];
    const plan = stepPlan(prepared, host, (flags.keepEnv ?? '').split(',').filter(Boolean), linger, init);
    text = formatPlan(plan, flags.format ?? 'helper');
  } else {
    text = formatPlan(await preparePlan(args.length > 0 ? 'exec' : 'run', image, args, flags), flags.format ?? 'json');
  }
  if (!flags.output) return text;
  const tmp = `${flags.output}.tmp-${process.pid}`;
  writeFileSync(tmp, text.endsWith('\n') ? text : `${text}\n`, { mode: 0o600 });
  renameSync(tmp, flags.output);
  return '';
}
