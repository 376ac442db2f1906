// berth run | exec | shell IMAGE ...: the plan (plan/prepare.ts), then the helper runs it (the
// launcher becomes the container, runtime/launch.ts, or berth starts the helper and waits); with
// --dry-run, the plan printed instead. IMAGE may be instance://NAME: the command joins that
// running instance (berth instance start).
import { EXIT } from '../errors.js';
import type { Command } from '../plan/build.js';
import { hasLimits } from '../plan/limits.js';
import { isInstanceReference, prepareJoinPlan, preparePlan, type RunFlags } from '../plan/prepare.js';
import { formatPlan } from '../plan/serialize.js';
import { withLimits } from '../runtime/cgroup.js';
import { runPlan } from '../runtime/helper.js';
import { handOver } from '../runtime/launch.js';
import { checkImageArgument } from './habits.js';
import type { CommandResult } from './options.js';
import { progressMode } from './progress.js';
import { pullDisplay } from './pull-progress.js';

export interface RunCommandFlags extends RunFlags {
  dryRun?: boolean;
  planFormat?: string;
  /** berth run --entrypoint (docker run's). */
  entrypoint?: string;
}

export async function runCommand(mode: Command['mode'], image: string, args: string[], flags: RunCommandFlags): Promise<CommandResult> {
  checkImageArgument(image, flags);
  if (args[0] === '--') args = args.slice(1); // `berth run IMAGE -- ARGS`: the -- only ends berth's options
  if (isInstanceReference(image)) {
    // instance://NAME: into the running instance's namespaces (berth instance start).
    const plan = prepareJoinPlan(mode, image, args, flags);
    if ('exitCode' in plan) return plan;
    if (flags.dryRun) return formatPlan(plan, flags.planFormat);
    if (handOver(plan, 'instanceJoin')) return { exitCode: EXIT.ok };
    return { exitCode: await runPlan(plan, ['--instance-join']) };
  }
  // An image used for the first time shows its pull and conversion on stderr (a bar on a
  // terminal, lines in a batch log); a cached one says nothing before the container's output.
  const pulls = pullDisplay(progressMode({}), true);
  const { plan, metadata } = await preparePlan(mode, image, args, flags, pulls, undefined, flags.entrypoint);
  // berth runs you as yourself (Apptainer's habit); an image that names its user is told so, not silently ignored.
  const user = metadata.config.User;
  if (user && !/^(root|0)(:(root|0))?$/.test(user) && flags.user === undefined && !flags.fakeroot) {
    pulls.cacheWarning(`berth: note: the image's User is '${user}'; berth runs the command as you, as Apptainer does (--user ${user} runs it as the image's user)`);
  }
  if (flags.dryRun) return formatPlan(plan, flags.planFormat);
  // The launcher becomes the container (exec in place), unless berth must stay to remove the
  // container's cgroup after it and say whether it ran out of memory.
  if (!hasLimits(plan.limits) && handOver(plan, 'container')) return { exitCode: EXIT.ok };
  return { exitCode: await withLimits(plan, pulls.cacheWarning, (p) => runPlan(p)) };
}
