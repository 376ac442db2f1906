// Instances (berth instance start, exec instance://NAME), as pure decisions: what an instance
// runs, which options joining one takes, and the plan that joins it. The helper does the rest
// (native/helper/instance.c); plan/prepare.ts reads what these need.
import { BerthError } from '../errors.js';
import type { ImageMetadata } from '../squashfs/metadata.js';
import type { Command } from './build.js';
import type { LaunchPlan } from './types.js';

/** The helper's rule too (instance_state.c): safe in a path, on a command line and in a table. */
export const INSTANCE_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

export const INSTANCE_PREFIX = 'instance://';

/** Apptainer's %startscript, which `instance start` runs in an Apptainer image. */
export const STARTSCRIPT = '/.singularity.d/startscript';

export function checkInstanceName(name: string): void {
  if (!INSTANCE_NAME.test(name)) {
    throw new BerthError('USAGE', `invalid instance name '${name}'`, "use 1 to 64 letters, digits, '.', '_' or '-', starting with a letter or a digit");
  }
}

/**
 * What an instance runs: an Apptainer image's startscript (given ARGS), or, as `berth run`
 * does, the image's Entrypoint/Cmd with ARGS replacing Cmd. 'hold' when there is nothing to
 * run (an Apptainer image without a startscript, an image with neither Entrypoint nor Cmd and
 * no ARGS): the instance then only holds its namespaces for `exec instance://` to join, as an
 * Apptainer instance without a startscript does.
 */
export function instanceCommand(meta: ImageMetadata, args: string[], hasStartscript: boolean): Command | 'hold' {
  if (meta.startup === 'apptainer') {
    if (hasStartscript) return { mode: 'exec', args: [STARTSCRIPT, ...args] };
    return args.length > 0 ? { mode: 'exec', args } : 'hold';
  }
  const image = [...(meta.config.Entrypoint ?? []), ...(meta.config.Cmd ?? [])];
  return image.length > 0 || args.length > 0 ? { mode: 'run', args } : 'hold';
}

/** The options `exec instance://` takes: the rest (mounts, namespaces, bindings) are the instance's. */
const JOIN_FLAGS = new Set(['env', 'envFile', 'pwd', 'dryRun', 'planFormat']);

/** Refuses a container option that joining cannot apply, naming it and where it belongs. */
export function checkJoinFlags(name: string, flags: Record<string, unknown>): void {
  for (const [key, value] of Object.entries(flags)) {
    if (JOIN_FLAGS.has(key) || value === undefined || (Array.isArray(value) && value.length === 0)) continue;
    const flag = `--${key.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`;
    throw new BerthError('USAGE', `${flag} cannot change the running instance ${name}: it keeps the mounts and namespaces it was started with`,
      `give ${flag} to berth instance start; exec ${INSTANCE_PREFIX}${name} takes only --env, --env-file and --pwd`);
  }
}

/**
 * The plan that runs `argv` in the instance NAME (berth-helper --instance-join). The helper
 * takes the instance's own plan for the rest: its environment (these `env` entries win), PATH
 * and working directory (`pwd` wins; empty: where the caller is when the instance has that
 * bound at the same path, else the instance's). BERTH_CONTAINER=1 is always there (it is in
 * every container's environment), so that the helper's default PATH never stands in for an
 * empty list.
 */
export function joinPlan(name: string, runtimeDir: string, argv: string[], env: string[], pwd: string | undefined): LaunchPlan {
  if (pwd !== undefined && !pwd.startsWith('/')) throw new BerthError('USAGE', `--pwd ${pwd}: must be an absolute path`, 'e.g. --pwd /data');
  const bad = env.find((kv) => !/^[^=]+=/.test(kv));
  if (bad !== undefined) throw new BerthError('USAGE', `--env ${bad}: not NAME=VALUE`, 'e.g. --env OMP_NUM_THREADS=4');
  return {
    image: `${INSTANCE_PREFIX}${name}`, imageFormat: 'squashfs', imageOffset: 0, scope: '', linger: 0, runtimeDir,
    userns: 'self', writable: false, pidns: false, cwd: pwd ?? '', path: '',
    env: ['BERTH_CONTAINER=1', ...env], argv, ops: [], instance: name,
  };
}
