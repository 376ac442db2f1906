// Facts about the calling user and this node that a launch plan needs. Read-only: host/*
// modules observe, they never change anything.
import { existsSync, readFileSync, statSync } from 'node:fs';
import { userInfo } from 'node:os';
import { config } from '../config/load.js';
import { BerthError, errnoOf } from '../errors.js';
import type { HostFacts } from '../plan/build.js';

function groupName(gid: number): string | undefined {
  try {
    for (const line of readFileSync('/etc/group', 'utf8').split('\n')) {
      const [name, , id] = line.split(':');
      if (name && Number(id) === gid) return name;
    }
  } catch {
    // no /etc/group (or an LDAP-only site): fall through
  }
  return undefined;
}

/**
 * Where berth-helper makes its per-run directories: private to the user, ideally a tmpfs. In a
 * Slurm job under berth's plugin, the plugin's own (it says which in every task's environment),
 * so a `berth exec` of the batch script or of a step shares the steps' image servers, and the
 * job's epilog clears it.
 */
export function runtimeDir(uid: number, env: NodeJS.ProcessEnv): string {
  const configured = config(env).values['runtime.dir'];
  if (configured !== undefined) return configured;
  const plugin = env.BERTH_SLURM_KEEPS_SERVERS;
  if (env.SLURM_JOB_ID && plugin?.startsWith('/') && statSync(plugin, { throwIfNoEntry: false })?.isDirectory()) return plugin;
  const xdg = env.XDG_RUNTIME_DIR;
  if (xdg && statSync(xdg, { throwIfNoEntry: false })?.isDirectory()) return `${xdg}/berth`;
  return `/tmp/berth-${uid}`;
}

/**
 * How long an idle image server stays up for the next container, in seconds: images.linger
 * (BERTH_IMAGE_LINGER), long enough that a script's successive containers find the image warm,
 * short enough that nothing lingers after them.
 */
function imageLinger(env: NodeJS.ProcessEnv): number {
  return config(env).values['images.linger'];
}

/**
 * In a Slurm job, images.job-linger: the job's steps share its image servers (scope), which
 * wait that long for the next step while the job lives on the node (the helper follows its
 * batch or extern step there; where it finds neither, images.linger it is).
 */
export function jobImageLinger(env: NodeJS.ProcessEnv): number {
  return config(env).values['images.job-linger'];
}

/** Where the user is; a directory removed under the shell (getcwd fails) is said plainly. */
function workingDirectory(): string {
  try {
    return process.cwd();
  } catch (e: unknown) {
    throw new BerthError('PATH_UNUSABLE', `the working directory cannot be found (${errnoOf(e) ?? 'getcwd failed'}): it was removed, or you may not read a directory above it`,
      'cd to a directory that exists first');
  }
}

export function hostFacts(env: NodeJS.ProcessEnv = process.env): HostFacts {
  const me = userInfo();
  const gid = process.getgid!();
  return {
    uid: me.uid,
    gid,
    user: me.username,
    group: groupName(gid) ?? me.username,
    home: env.HOME || me.homedir,
    cwd: workingDirectory(),
    env: { ...env },
    runtimeDir: runtimeDir(me.uid, env),
    // A job's steps and containers on a node share its image servers; the helper narrows
    // this to the step where the step's cgroup would end the server with it (plantext.h).
    scope: /^\d+$/.test(env.SLURM_JOB_ID ?? '') ? `slurm-${env.SLURM_JOB_ID}` : '',
    linger: imageLinger(env),
    ...(env.SLURM_JOB_ID !== undefined ? { jobLinger: jobImageLinger(env) } : {}),
    has: { hosts: existsSync('/etc/hosts'), resolvConf: existsSync('/etc/resolv.conf') },
  };
}
