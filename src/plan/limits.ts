// --memory, --cpus and --pids-limit: the values checked, and whether and where this node lets
// the caller apply them (from src/host/cgroup.ts's facts). Pure: no I/O. The cgroup is made by
// src/runtime/cgroup.ts and the helper moves the container into it (native/helper/cgroup.c).
import { BerthError } from '../errors.js';
import { LIMIT_CONTROLLERS, type CgroupFacts, type LimitController } from '../host/cgroup.js';

export interface Limits {
  /** memory.max, in bytes. */
  memory?: number;
  /** CPUs, possibly fractional: cpu.max's quota over its period. */
  cpus?: number;
  /** pids.max. */
  pids?: number;
}

/** strict: a limit that cannot be applied stops the container; best-effort: a warning, and it runs without. */
export type LimitsMode = 'strict' | 'best-effort';

export interface LimitFlags {
  memory?: string;
  cpus?: string;
  pidsLimit?: string;
  limits?: string;
}

/** cpu.max's period, the kernel's default (100 ms); the quota is cpus × period. */
export const CPU_PERIOD = 100_000;
/** The kernel refuses a quota under 1 ms (kernel/sched/core.c, min_cfs_quota_period). */
const MIN_QUOTA = 1000;

const UNITS: Record<string, number> = { '': 1, b: 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3, t: 1024 ** 4 };

/** Docker's floor for --memory: below it the kernel kills the container before its command has started, with nothing said. */
export const MIN_MEMORY = 6 * 1024 ** 2;

/** 4g, 512m, 1.5G, 65536 (bytes): binary units, as Docker's and Apptainer's --memory read them. */
export function parseSize(spec: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?$/i.exec(spec.trim());
  const bytes = m ? Math.floor(Number(m[1]) * UNITS[m[2]!.toLowerCase()]!) : NaN;
  if (!Number.isSafeInteger(bytes) || bytes <= 0) {
    throw new BerthError('USAGE', `invalid --memory '${spec}'`, 'give a size such as 512m or 4g (k, m, g, t: binary units)');
  }
  if (bytes < MIN_MEMORY) throw new BerthError('USAGE', `--memory ${spec} is too little to start a container`, 'give at least 6m');
  return bytes;
}

/**
 * What memory.events says after the container: the kernel's OOM killer ended some of its
 * processes, which otherwise shows only as exit status 137.
 */
export function oomNote(events: string | undefined, l: Limits): string | undefined {
  const killed = Number(/^oom_kill (\d+)$/m.exec(events ?? '')?.[1] ?? 0);
  if (!killed || l.memory === undefined) return undefined;
  return `berth: note: the container reached its --memory limit (${l.memory} bytes): the kernel's OOM killer ended ${killed} of its processes`;
}

export function parseLimits(flags: LimitFlags): { limits: Limits; mode: LimitsMode } {
  const mode = flags.limits ?? 'strict';
  if (mode !== 'strict' && mode !== 'best-effort') {
    throw new BerthError('USAGE', `--limits ${mode}: berth knows strict (the default: a limit that cannot be applied is an error) and best-effort (a warning, and the container runs without it)`, 'e.g. --limits best-effort');
  }
  const limits: Limits = {};
  if (flags.memory !== undefined) limits.memory = parseSize(flags.memory);
  if (flags.cpus !== undefined) {
    const n = /^\d+(\.\d+)?$|^\.\d+$/.test(flags.cpus) ? Number(flags.cpus) : NaN;
    if (!(n > 0) || Math.round(n * CPU_PERIOD) < MIN_QUOTA) {
      throw new BerthError('USAGE', `invalid --cpus '${flags.cpus}'`, 'give a number of CPUs, fractional if you like: --cpus 2, --cpus 0.5 (at least 0.01)');
    }
    limits.cpus = n;
  }
  if (flags.pidsLimit !== undefined) {
    const n = /^\d+$/.test(flags.pidsLimit) ? Number(flags.pidsLimit) : NaN;
    if (!Number.isSafeInteger(n) || n < 1) throw new BerthError('USAGE', `invalid --pids-limit '${flags.pidsLimit}'`, 'give the most processes and threads the container may have, e.g. --pids-limit 1024');
    limits.pids = n;
  }
  return { limits, mode };
}

export function hasLimits(l: Limits | undefined): l is Limits {
  return !!l && (l.memory !== undefined || l.cpus !== undefined || l.pids !== undefined);
}

/** The controllers the limits need, in cgroup.subtree_control's order. */
export function controllersFor(l: Limits): LimitController[] {
  return LIMIT_CONTROLLERS.filter((c) => (c === 'memory' ? l.memory : c === 'cpu' ? l.cpus : l.pids) !== undefined);
}

/** The files written in the container's cgroup, in order. memory.swap.max is written where it exists (swap accounting on). */
export function limitFiles(l: Limits): { file: string; value: string; optional?: boolean }[] {
  return [
    ...(l.memory !== undefined ? [{ file: 'memory.max', value: String(l.memory) }, { file: 'memory.swap.max', value: '0', optional: true }] : []),
    ...(l.cpus !== undefined ? [{ file: 'cpu.max', value: `${Math.round(l.cpus * CPU_PERIOD)} ${CPU_PERIOD}` }] : []),
    ...(l.pids !== undefined ? [{ file: 'pids.max', value: String(l.pids) }] : []),
  ];
}

/** Where the container's cgroup is made: the delegated directory, with the controllers to enable in its subtree_control. */
export interface LimitsTarget {
  parent: string;
  enable: LimitController[];
}

const flagOf: Record<LimitController, string> = { memory: '--memory', cpu: '--cpus', pids: '--pids-limit' };
const list = (xs: string[]) => xs.join(', ');

/**
 * Where the limits go, or why they cannot: a BerthError naming the reason and what to do. The
 * checks run from the node's layout down to the caller's own directory, so the first reason
 * given is the one no lower fix could get past.
 */
export function limitsTarget(l: Limits, facts: CgroupFacts): LimitsTarget {
  const need = controllersFor(l);
  const flags = list(need.map((c) => flagOf[c]));
  const cannot = (why: string, hint: string) => new BerthError('LIMITS_UNAVAILABLE', `${flags} cannot be applied: ${why}`, `${hint}; or add --limits best-effort to run without the limits (berth doctor says what this node allows)`);
  if (!facts.mount || facts.own === undefined) {
    throw cannot('cgroup v2 is not mounted on this node (berth applies limits only through cgroup v2)', 'an administrator can boot with cgroup v2 (systemd.unified_cgroup_hierarchy=1)');
  }
  const own = `${facts.own} (${facts.mount}${facts.own === '/' ? '' : facts.own})`;
  const d = facts.delegated;
  if (facts.slurmJob && !d) {
    // Slurm's cgroup is root's: it limits the job, and berth never works against it.
    throw cannot(`this is Slurm job ${facts.slurmJob}, whose cgroup ${own} is Slurm's and already limits every process of the job, this container included`,
      'ask Slurm for the limits instead (sbatch/srun --mem, --cpus-per-task); inside the job the container gets what the job has');
  }
  const missing = need.filter((c) => !facts.v2Controllers.includes(c));
  if (missing.length > 0) {
    const inV1 = facts.v1.filter((v) => missing.includes(v.controller as LimitController));
    const why = inV1.length > 0
      ? `the ${list(missing)} controller${missing.length > 1 ? 's are' : ' is'} held by cgroup v1 (${list(inV1.map((v) => v.mount))}): this node has a hybrid layout, and cgroup v2 (${facts.mount}) has none of ${list(missing)}`
      : `the kernel offers no ${list(missing)} controller in cgroup v2 (${facts.mount}/cgroup.controllers)`;
    throw cannot(why, 'an administrator can boot with cgroup v2 only (systemd.unified_cgroup_hierarchy=1)');
  }
  if (!d) {
    const whose = facts.ownOwner === facts.uid ? 'it is yours, but others may write it' : `its owner is uid ${facts.ownOwner ?? '?'}`;
    throw cannot(`your cgroup ${own} is not delegated to you (${whose}), so berth cannot make a cgroup for the container`,
      'start berth in a delegated cgroup: systemd-run --user --scope -p Delegate=yes berth run ... (with a systemd user manager), or ask the site to delegate a cgroup to you');
  }
  const at = `${d.cgroup} (${d.dir})`;
  const notGiven = need.filter((c) => !d.controllers.includes(c));
  if (notGiven.length > 0) {
    throw cannot(`your delegated cgroup ${at} was not given the ${list(notGiven)} controller${notGiven.length > 1 ? 's' : ''} (its cgroup.controllers: ${list(d.controllers) || 'none'})`,
      `the parent must enable ${list(notGiven)} for it (systemd: Delegate=${LIMIT_CONTROLLERS.join(' ')} on user@.service)`);
  }
  const enable = need.filter((c) => !d.subtreeControl.includes(c));
  if (enable.length > 0 && d.hasProcesses && !d.isRoot) {
    throw cannot(`your delegated cgroup ${at} has processes of its own, so no controller can be enabled for a cgroup below it (cgroup v2's no-internal-process rule)`,
      'start berth from a cgroup below it (systemd-run --user --scope berth run ...), or move your shell into one');
  }
  return { parent: d.dir, enable };
}

/** The line a best-effort run warns with instead of the error. */
export function bestEffortWarning(e: BerthError): string {
  return `berth: warning: ${e.message.replace(/ cannot be applied:/, ' not applied (--limits best-effort):')}; the container runs without the limits`;
}
