// berth run | exec | shell IMAGE ...: the plan (plan/prepare.ts), then the helper runs it; with
// --dry-run, the plan printed instead. IMAGE may be instance://NAME: the command joins that
// running instance (berth instance start).
import type { Command } from '../plan/build.js';
import { isInstanceReference, prepareJoinPlan, preparePlan, type RunFlags } from '../plan/prepare.js';
import { formatPlan } from '../plan/serialize.js';
import { runPlan } from '../runtime/helper.js';
import type { CommandResult } from './options.js';
import { pullDisplay } from './pull-progress.js';

export interface RunCommandFlags extends RunFlags {
  dryRun?: boolean;
  planFormat?: string;
}

export async function runCommand(mode: Command['mode'], image: string, args: string[], flags: RunCommandFlags): Promise<CommandResult> {
  if (args[0] === '--') args = args.slice(1); // `berth run IMAGE -- ARGS`: the -- only ends berth's options
  if (isInstanceReference(image)) {
    // instance://NAME: into the running instance's namespaces (berth instance start).
    const plan = prepareJoinPlan(mode, image, args, flags);
    if ('exitCode' in plan) return plan;
    if (flags.dryRun) return formatPlan(plan, flags.planFormat);
    return { exitCode: await runPlan(plan, ['--instance-join']) };
  }
  // A docker:// image is pulled quietly: the container's output is what the user wants to see.
  const { plan } = await preparePlan(mode, image, args, flags, pullDisplay('quiet'));
  if (flags.dryRun) return formatPlan(plan, flags.planFormat);
  return { exitCode: await runPlan(plan) };
}
