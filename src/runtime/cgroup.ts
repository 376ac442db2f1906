// The container's cgroup: made in the delegated directory that src/plan/limits.ts chose, with
// the limits written in it, before the helper starts (the helper moves the container into it,
// native/helper/cgroup.c); removed once the container has ended. berth waits for the helper,
// so it is berth that removes it; one left by a berth that was killed is removed by the next
// start in that directory (its name carries the pid of the berth that made it).
import { closeSync, constants, lstatSync, mkdirSync, openSync, readdirSync, readFileSync, rmdirSync, writeSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { config } from '../config/load.js';
import { BerthError, isBerthError } from '../errors.js';
import { cgroupFacts } from '../host/cgroup.js';
import { bestEffortWarning, hasLimits, limitFiles, limitsTarget, oomNote, type Limits, type LimitsTarget } from '../plan/limits.js';
import type { LaunchPlan } from '../plan/types.js';

const NAME = /^berth-(\d+)-[0-9a-f]{8}$/;

function code(e: unknown): string {
  return (e as NodeJS.ErrnoException).code ?? String(e);
}

/** Writes one cgroup file: an existing one only, never through a symlink. */
function put(file: string, value: string): void {
  const fd = openSync(file, constants.O_WRONLY | constants.O_NOFOLLOW);
  try {
    writeSync(fd, value);
  } finally {
    closeSync(fd);
  }
}

function readOr(file: string): string | undefined {
  try {
    return readFileSync(file, 'utf8');
  } catch {
    return undefined;
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e: unknown) {
    return code(e) === 'EPERM';
  }
}

/**
 * Empty cgroups of berths that are gone (killed before they could remove their own). A berth
 * of the same user in another PID namespace looks gone too: its cgroup, empty for the moment
 * between its mkdir and its helper's move, may go, and that start then fails (the helper cannot
 * open it); it never runs unlimited.
 */
function sweep(parent: string): void {
  let names: string[];
  try {
    names = readdirSync(parent);
  } catch {
    return;
  }
  for (const n of names) {
    const m = NAME.exec(n);
    if (!m || alive(Number(m[1]))) continue;
    try {
      rmdirSync(path.join(parent, n)); // refused (EBUSY) while a process is in it
    } catch {
      // still in use, or already gone
    }
  }
}

/** Makes the container's cgroup with the limits written; returns its path. */
export function makeContainerCgroup(target: LimitsTarget, limits: Limits, uid: number): string {
  const fail = (what: string, e: unknown) => new BerthError('LIMITS_UNAVAILABLE', `cannot ${what}: ${code(e)}`,
    'check the delegation with berth doctor; or add --limits best-effort to run without the limits');
  sweep(target.parent);
  if (target.enable.length > 0) {
    try {
      put(path.join(target.parent, 'cgroup.subtree_control'), target.enable.map((c) => `+${c}`).join(' '));
    } catch (e: unknown) {
      throw fail(`enable ${target.enable.join(', ')} in ${target.parent}/cgroup.subtree_control`, e);
    }
  }
  // In the caller's own directory, which no one else can write: a name no one could take first.
  const dir = path.join(target.parent, `berth-${process.pid}-${randomBytes(4).toString('hex')}`);
  try {
    rmdirIfEmptyOnError(dir, () => {
      const st = lstatSync(dir);
      if (!st.isDirectory() || st.uid !== uid) throw new Error(`${dir} is not a directory of uid ${uid}`);
      for (const f of limitFiles(limits)) {
        try {
          put(path.join(dir, f.file), f.value);
        } catch (e: unknown) {
          if (f.optional && code(e) === 'ENOENT') continue; // no swap accounting: no swap to limit
          throw fail(`write ${f.value} to ${dir}/${f.file}`, e);
        }
      }
    });
  } catch (e: unknown) {
    if (e instanceof BerthError) throw e;
    throw fail(`make the container's cgroup ${dir}`, e);
  }
  return dir;
}

/** Makes dir (EEXIST is an error: never adopt a cgroup someone made first), fills it, and removes it again if filling fails. */
function rmdirIfEmptyOnError(dir: string, fill: () => void): void {
  mkdirSync(dir, { mode: 0o755 });
  try {
    fill();
  } catch (e: unknown) {
    try {
      rmdirSync(dir);
    } catch {
      // nothing in it yet; a failure here leaves an empty cgroup for the next sweep
    }
    throw e;
  }
}

/**
 * Removes the container's cgroup once its command has ended. What the command left running
 * (a daemon it started) is part of the container and ends with it, as with docker run:
 * cgroup.kill (Linux 5.14), then the directory, which the kernel removes only when empty.
 * Returns a warning when it could not.
 */
export function removeContainerCgroup(dir: string): string | undefined {
  try {
    rmdirSync(dir);
    return undefined;
  } catch (e: unknown) {
    if (code(e) === 'ENOENT') return undefined;
    if (code(e) !== 'EBUSY') return `berth: warning: cannot remove the container's cgroup ${dir}: ${code(e)}`;
  }
  try {
    put(path.join(dir, 'cgroup.kill'), '1');
  } catch {
    // before 5.14: what is left keeps the cgroup until it ends; the next start removes it
  }
  const until = Date.now() + 2000;
  const wait = new Int32Array(new SharedArrayBuffer(4));
  while (Date.now() < until) {
    try {
      if (/^populated 0$/m.test(readFileSync(path.join(dir, 'cgroup.events'), 'utf8'))) break;
    } catch {
      break;
    }
    Atomics.wait(wait, 0, 0, 20);
  }
  try {
    rmdirSync(dir);
    return undefined;
  } catch (e: unknown) {
    return `berth: warning: cannot remove the container's cgroup ${dir} (${code(e)}): processes of the container are still in it; the next berth started there removes it once they end`;
  }
}

/**
 * Runs `start` with the plan's limits applied: the container's cgroup made and named in the
 * plan, and removed once `start` is done. With --limits best-effort, a limit that cannot be
 * applied is a warning and the plan runs without it.
 */
export async function withLimits(plan: LaunchPlan, warn: (line: string) => void, start: (plan: LaunchPlan) => Promise<number>): Promise<number> {
  if (!hasLimits(plan.limits)) return start(plan);
  const uid = process.getuid!();
  let dir: string;
  try {
    dir = makeContainerCgroup(limitsTarget(plan.limits, cgroupFacts(config().values['host.root'], uid, process.env)), plan.limits, uid);
  } catch (e: unknown) {
    if (!plan.limitsBestEffort || !isBerthError(e)) throw e;
    warn(bestEffortWarning(e));
    return start(plan);
  }
  try {
    return await start({ ...plan, cgroup: dir });
  } finally {
    const oom = oomNote(readOr(path.join(dir, 'memory.events')), plan.limits);
    if (oom) warn(oom);
    const left = removeContainerCgroup(dir);
    if (left) warn(left);
  }
}
