// berth srun [SRUN OPTIONS] --image IMAGE [BERTH OPTIONS] -- COMMAND [ARGS...]
// For sites without the SPANK plugin: the image is pulled once (here, into the shared cache),
// the step's plan is computed once (here), and srun starts berth-helper --join in each task,
// which joins (or, first on its node, starts) the step's container: no Node process per task,
// and the same semantics as the plugin. The plan travels in the environment srun passes on.
import { spawn } from 'node:child_process';
import { constants } from 'node:os';
import { Command } from 'commander';
import { BerthError, EXIT } from '../errors.js';
import { prepareStepPlan, type RunFlags } from '../plan/prepare.js';
import { serializePlan } from '../plan/serialize.js';
import { helperPath } from '../runtime/helper.js';
import { checkImageArgument } from './habits.js';
import { containerOptions, type CommandResult } from './options.js';
import { progressMode } from './progress.js';
import { pullDisplay } from './pull-progress.js';

export interface SrunArgs {
  srun: string[];
  image: string;
  berth: string[];
  command: string[];
}

/** Splits the command line at --image and --: srun's options before, berth's after, the command last. */
export function splitSrunArgs(args: string[]): SrunArgs {
  const at = args.findIndex((a) => a === '--image' || a.startsWith('--image='));
  const dashes = args.indexOf('--');
  if (at === -1 || (dashes !== -1 && dashes < at)) {
    throw new BerthError('USAGE', 'berth srun needs --image IMAGE before the --', 'e.g. berth srun -N2 -n8 --image docker://mpich:4 --mpi -- ./hello');
  }
  const inline = args[at]!.startsWith('--image=');
  const image = inline ? args[at]!.slice(8) : args[at + 1];
  if (!image) throw new BerthError('USAGE', '--image needs a value', 'e.g. --image app.sqsh');
  const rest = args.slice(at + (inline ? 1 : 2));
  const end = rest.indexOf('--');
  const command = end === -1 ? [] : rest.slice(end + 1);
  if (command.length === 0) throw new BerthError('USAGE', 'berth srun needs a command after --', 'e.g. berth srun -n4 --image app.sqsh -- ./solver input');
  return { srun: args.slice(0, at), image, berth: end === -1 ? rest : rest.slice(0, end), command };
}

export async function srunCommand(args: string[]): Promise<CommandResult> {
  const split = splitSrunArgs(args);
  // berth's own options, parsed by the same table as run/exec take them.
  const parser = containerOptions(new Command('srun').exitOverride().configureOutput({ outputError: () => {} }).allowExcessArguments(false))
    .option('--keep-env <names>', "host variables that pass as they are, comma-separated (pyxis's --container-env)")
    .option('--entrypoint', "run the image's Entrypoint once when each node's container starts (pyxis's --container-entrypoint)");
  parser.parse(split.berth, { from: 'user' });
  const flags = parser.opts<RunFlags & { keepEnv?: string; entrypoint?: boolean }>();
  checkImageArgument(split.image, flags);
  // A docker:// image is pulled once, here, into the cache the nodes share; the tasks run the very file.
  const pulls = pullDisplay(progressMode({}), true);
  const plan = await prepareStepPlan(split.image, [], flags, { keepEnv: flags.keepEnv, linger: 2, entrypoint: flags.entrypoint }, pulls);
  const child = spawn('srun', [...split.srun, helperPath(), '--join', '--', ...split.command], {
    stdio: 'inherit',
    env: { ...process.env, BERTH_STEP_PLAN: serializePlan(plan) },
  });
  for (const sig of ['SIGTERM', 'SIGHUP', 'SIGUSR1', 'SIGUSR2'] as const) process.on(sig, () => child.kill(sig));
  return new Promise((resolve, reject) => {
    child.on('error', (e) => reject(new BerthError('TOOL_MISSING', `cannot run srun: ${e.message}`, 'run berth srun where Slurm\'s srun is on PATH (a login node)')));
    child.on('exit', (code, signal) => resolve({ exitCode: code ?? (signal ? 128 + constants.signals[signal] : EXIT.berth) }));
  });
}
