// berth plan IMAGE [flags] [-- COMMAND]: the launch plan, without running it. With
// --slurm-step it is the plan of a Slurm step's container (what the SPANK plugin asks for once
// per step and node), written atomically to -o for the tasks that wait on it.
import { BerthError } from '../errors.js';
import { preparePlan, prepareStepPlan, type RunFlags } from '../plan/prepare.js';
import { formatPlan } from '../plan/serialize.js';
import { writeFileAtomic } from '../util/atomic-file.js';
import { checkImageArgument } from './habits.js';
import { pullDisplay } from './pull-progress.js';

export interface PlanFlags extends RunFlags {
  slurmStep?: boolean;
  keepEnv?: string;
  stepLinger?: string;
  output?: string;
  format?: string;
  /** With --slurm-step: run the image's Entrypoint once when the step's container starts. */
  entrypoint?: boolean;
  /** With --slurm-step: the container's writable layer in this directory of the node's (--container-save). */
  saveOverlay?: string;
}

function stepLinger(text: string | undefined): number {
  const linger = Number(text ?? 2);
  if (!Number.isInteger(linger) || linger < 0) throw new BerthError('USAGE', `--step-linger ${text}: expected seconds`, 'e.g. --step-linger 2');
  return linger;
}

export async function planCommand(image: string, args: string[], flags: PlanFlags): Promise<string> {
  checkImageArgument(image, flags);
  if (args[0] === '--') args = args.slice(1);
  // stdout is the plan (or -o's file): a docker:// pull says nothing but its warnings.
  const pulls = pullDisplay('quiet');
  const text = flags.slurmStep
    ? formatPlan(await prepareStepPlan(image, args, flags, { keepEnv: flags.keepEnv, linger: stepLinger(flags.stepLinger), entrypoint: flags.entrypoint, ...(flags.saveOverlay ? { saveOverlay: flags.saveOverlay } : {}) }, pulls), flags.format ?? 'helper')
    : formatPlan((await preparePlan(args.length > 0 ? 'exec' : 'run', image, args, flags, pulls)).plan, flags.format ?? 'json');
  if (!flags.output) return text;
  writeFileAtomic(flags.output, text.endsWith('\n') ? text : `${text}\n`);
  return '';
}
