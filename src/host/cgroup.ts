// The caller's cgroup v2 position, as facts for --memory, --cpus and --pids-limit (the decision
// is src/plan/limits.ts): where cgroup2 is mounted (/proc/self/mountinfo), the caller's cgroup
// (the `0::` line of /proc/self/cgroup), which controllers cgroup v1 holds, and the delegated
// directory: the topmost ancestor of the caller's cgroup that the caller owns, as systemd's
// user@UID.service is (systemd.resource-control(5), Delegate=) or a directory a site gives a
// user. Only there may the caller make cgroups and move processes between them (cgroups(7),
// "Cgroups v2 delegation"). `root` stands in for `/`, so that fixture trees play other nodes.
import { lstatSync, readFileSync, type Stats } from 'node:fs';
import path from 'node:path';

/** The controllers berth's limits use. */
export const LIMIT_CONTROLLERS = ['memory', 'cpu', 'pids'] as const;
export type LimitController = (typeof LIMIT_CONTROLLERS)[number];

export interface Delegated {
  /** The directory (mount point + cgroup path), under `root` as every host path of the facts is. */
  dir: string;
  /** Its cgroup path, as /proc/self/cgroup writes it. */
  cgroup: string;
  /** cgroup.controllers: what its parent lets it use. */
  controllers: string[];
  /** cgroup.subtree_control: what its children already get. */
  subtreeControl: string[];
  /** Processes of its own: then nothing can be enabled below it (the no-internal-process rule). */
  hasProcesses: boolean;
  /** The mount's root cgroup is exempt from that rule. */
  isRoot: boolean;
}

export interface CgroupFacts {
  /** Where cgroup2 is mounted (host path), if it is. */
  mount?: string;
  /** The controllers cgroup v2's root may hand out (its cgroup.controllers). */
  v2Controllers: string[];
  /** Limit controllers bound to a cgroup v1 hierarchy, with its mount point. */
  v1: { controller: string; mount: string }[];
  /** The caller's cgroup (the `0::` line), if there is one. */
  own?: string;
  /** The caller's uid. */
  uid: number;
  /** The owner and mode of the caller's cgroup directory, if it could be read. */
  ownOwner?: number;
  ownMode?: number;
  delegated?: Delegated;
  /** SLURM_JOB_ID, when the caller's cgroup lies under Slurm's. */
  slurmJob?: string;
}

function read(file: string): string | undefined {
  try {
    return readFileSync(file, 'utf8');
  } catch {
    return undefined;
  }
}

function lstat(file: string): Stats | undefined {
  try {
    return lstatSync(file, { throwIfNoEntry: false });
  } catch {
    return undefined;
  }
}

/** mountinfo's octal escapes (\040 for a space). */
const unescape = (s: string) => s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));

interface CgroupMount { root: string; point: string; type: string; superOptions: string[] }

function cgroupMounts(mountinfo: string): CgroupMount[] {
  return mountinfo.split('\n').flatMap((line) => {
    const [left, right] = line.split(' - ');
    if (!left || !right) return [];
    const f = left.split(' ');
    const [type, , superOptions = ''] = right.split(' ');
    if (type !== 'cgroup2' && type !== 'cgroup') return [];
    return [{ root: unescape(f[3] ?? ''), point: unescape(f[4] ?? ''), type, superOptions: superOptions.split(',') }];
  });
}

const words = (text: string | undefined) => (text ?? '').split(/\s+/).filter(Boolean);

export function cgroupFacts(root: string, uid: number, env: NodeJS.ProcessEnv): CgroupFacts {
  const host = (p: string) => path.join(root, p);
  const mounts = cgroupMounts(read(host('/proc/self/mountinfo')) ?? '');
  const v1 = mounts.filter((m) => m.type === 'cgroup').flatMap((m) =>
    LIMIT_CONTROLLERS.filter((c) => m.superOptions.includes(c)).map((controller) => ({ controller, mount: m.point })));
  // The first cgroup2 mount whose root is the hierarchy's (a bind of a subtree would hide the rest).
  const v2 = mounts.find((m) => m.type === 'cgroup2' && m.root === '/');
  const own = read(host('/proc/self/cgroup'))?.split('\n').find((l) => l.startsWith('0::'))?.slice(3);
  const facts: CgroupFacts = { uid, v1, v2Controllers: [] };
  if (own !== undefined) facts.own = own;
  if (!v2) return facts;
  facts.mount = v2.point;
  facts.v2Controllers = words(read(host(path.join(v2.point, 'cgroup.controllers'))));
  if (own === undefined || !own.startsWith('/')) return facts;
  const dirOf = (cgroup: string) => path.join(v2.point, cgroup);
  const st = lstat(host(dirOf(own)));
  if (st) [facts.ownOwner, facts.ownMode] = [st.uid, st.mode & 0o7777];
  if (env.SLURM_JOB_ID && /\/slurm[^/]*\/|\/job_\d+(\/|$)/.test(own)) facts.slurmJob = env.SLURM_JOB_ID;
  // Up from the caller's cgroup while each directory is the caller's (a real directory, its
  // cgroup.procs and cgroup.subtree_control the caller's too, as delegation chowns them).
  let top: string | undefined;
  for (let c = own; ; c = path.posix.dirname(c)) {
    if (!ownedCgroup(host(dirOf(c)), uid)) break;
    top = c;
    if (c === '/') break;
  }
  if (top !== undefined) {
    const dir = host(dirOf(top));
    facts.delegated = {
      dir,
      cgroup: top,
      controllers: words(read(path.join(dir, 'cgroup.controllers'))),
      subtreeControl: words(read(path.join(dir, 'cgroup.subtree_control'))),
      hasProcesses: words(read(path.join(dir, 'cgroup.procs'))).length > 0,
      isRoot: top === '/',
    };
  }
  return facts;
}

/** A cgroup directory the caller may manage: its own, no one else may write it, and the files that delegation hands over are its own too. */
export function ownedCgroup(dir: string, uid: number): boolean {
  const st = lstat(dir);
  if (!st?.isDirectory() || st.uid !== uid || (st.mode & 0o022) !== 0) return false;
  return ['cgroup.procs', 'cgroup.subtree_control'].every((f) => lstat(path.join(dir, f))?.uid === uid);
}
