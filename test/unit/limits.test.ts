// --memory, --cpus, --pids-limit (#15): the values, the files written, and the decision made
// from fixture cgroup trees (a fake /sys/fs/cgroup with /proc/self/cgroup and mountinfo), for
// the layouts this machine does not have: a systemd user manager's delegation, a site's
// directory, a Slurm job. A directory another user owns is played by one that others may write
// (the test cannot chown as an ordinary user): neither is the caller's alone.
import { chmodSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { cgroupFacts } from '../../src/host/cgroup.js';
import { bestEffortWarning, limitFiles, limitsTarget, oomNote, parseLimits, parseSize } from '../../src/plan/limits.js';
import { serializePlan } from '../../src/plan/serialize.js';
import type { LaunchPlan } from '../../src/plan/types.js';
import { isBerthError } from '../../src/errors.js';

const UID = process.getuid!();
const roots: string[] = [];
afterEach(() => {
  for (const r of roots.splice(0)) rmSync(r, { recursive: true, force: true });
});

const UNIFIED = '36 25 0:31 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot';
const HYBRID = [
  '32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu',
  '35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory',
  '39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids',
  '41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw',
].join('\n');

interface Node { controllers?: string; subtree?: string; procs?: string; foreign?: boolean }

/** A fixture root: mountinfo, the `0::` line, and cgroup directories (host paths) with their files. */
function tree(mountinfo: string, own: string | undefined, dirs: Record<string, Node>): string {
  const root = mkdtempSync(path.join(tmpdir(), 'berth-cgroup-'));
  roots.push(root);
  mkdirSync(path.join(root, 'proc/self'), { recursive: true });
  writeFileSync(path.join(root, 'proc/self/mountinfo'), `${mountinfo}\n`);
  writeFileSync(path.join(root, 'proc/self/cgroup'), own === undefined ? '4:memory:/\n' : `4:memory:/\n0::${own}\n`);
  // Parents first, so that making a child's files never needs a foreign parent writable by us.
  for (const [dir, n] of Object.entries(dirs).sort(([a], [b]) => a.length - b.length)) {
    const d = path.join(root, dir);
    mkdirSync(d, { recursive: true });
    writeFileSync(path.join(d, 'cgroup.controllers'), `${n.controllers ?? ''}\n`);
    writeFileSync(path.join(d, 'cgroup.subtree_control'), `${n.subtree ?? ''}\n`);
    writeFileSync(path.join(d, 'cgroup.procs'), n.procs ?? '');
  }
  for (const [dir, n] of Object.entries(dirs)) if (n.foreign) chmodSync(path.join(root, dir), 0o777);
  return root;
}

const ALL = 'cpuset cpu io memory hugetlb pids rdma misc';
/** systemd's layout: a login session in a root-owned scope, the user manager's subtree delegated. */
function systemd(subtree = 'cpu memory pids'): Record<string, Node> {
  const u = '/sys/fs/cgroup/user.slice/user-1000.slice';
  return {
    '/sys/fs/cgroup': { controllers: ALL, subtree: ALL, foreign: true },
    '/sys/fs/cgroup/user.slice': { controllers: ALL, subtree: 'cpu memory pids', foreign: true },
    [u]: { controllers: 'cpu memory pids', subtree: 'cpu memory pids', foreign: true },
    [`${u}/session-3.scope`]: { controllers: 'cpu memory pids', procs: '812\n', foreign: true },
    [`${u}/user@1000.service`]: { controllers: 'cpu memory pids', subtree },
    [`${u}/user@1000.service/app.slice`]: { controllers: subtree },
    [`${u}/user@1000.service/app.slice/run-r1.scope`]: { procs: '900\n' },
  };
}

function reason(f: () => unknown): string {
  try {
    f();
  } catch (e: unknown) {
    if (isBerthError(e)) return `${e.message} | ${e.hint}`;
    throw e;
  }
  throw new Error('no error');
}

describe('the limit values', () => {
  it.each([
    ['512m', 512 * 1024 ** 2], ['4g', 4 * 1024 ** 3], ['4G', 4 * 1024 ** 3], ['1.5g', 1.5 * 1024 ** 3], ['7340032', 7340032], ['8192k', 8388608], ['2GiB', 2 * 1024 ** 3], ['16mb', 16 * 1024 ** 2],
  ])('--memory %s is %d bytes', (spec, bytes) => {
    expect(parseSize(spec)).toBe(bytes);
  });

  it.each([
    [{ memory: '0' }, /invalid --memory '0'/], [{ memory: '4x' }, /invalid --memory '4x'/], [{ memory: '-1g' }, /invalid --memory/],
    [{ memory: '5m' }, /--memory 5m is too little to start a container/], [{ cpus: '0' }, /invalid --cpus '0'/], [{ cpus: 'two' }, /invalid --cpus/], [{ cpus: '0.001' }, /at least 0.01/],
    [{ pidsLimit: '0' }, /invalid --pids-limit '0'/], [{ pidsLimit: '1.5' }, /invalid --pids-limit/],
    [{ limits: 'lenient' }, /--limits lenient: berth knows strict/],
  ])('%j is refused', (flags, message) => {
    expect(reason(() => parseLimits(flags))).toMatch(message);
  });

  it('cpu.max is the quota over the 100 ms period; memory.swap.max 0 where it exists; pids.max', () => {
    const { limits, mode } = parseLimits({ memory: '512m', cpus: '1.5', pidsLimit: '64' });
    expect(mode).toBe('strict');
    expect(limitFiles(limits)).toEqual([
      { file: 'memory.max', value: '536870912' }, { file: 'memory.swap.max', value: '0', optional: true },
      { file: 'cpu.max', value: '150000 100000' }, { file: 'pids.max', value: '64' },
    ]);
    expect(parseLimits({ cpus: '.25', limits: 'best-effort' })).toEqual({ limits: { cpus: 0.25 }, mode: 'best-effort' });
  });

  it("memory.events' oom_kill becomes a note, since exit status 137 alone says nothing of the limit", () => {
    expect(oomNote('low 0\nhigh 0\nmax 12\noom 1\noom_kill 1\noom_group_kill 0\n', { memory: 64 << 20 })).toBe(
      "berth: note: the container reached its --memory limit (67108864 bytes): the kernel's OOM killer ended 1 of its processes");
    expect(oomNote('oom 0\noom_kill 0\n', { memory: 64 << 20 })).toBeUndefined();
    expect(oomNote(undefined, { memory: 64 << 20 })).toBeUndefined();
  });

  it('the plan names the cgroup for the helper', () => {
    const plan = { image: '/i.sqsh', imageFormat: 'squashfs', imageOffset: 0, scope: '', linger: 0, runtimeDir: '/r', userns: 'self', writable: false, pidns: false,
      cwd: '/', path: '/bin', env: [], argv: ['true'], ops: [], limits: { memory: 1 }, cgroup: '/sys/fs/cgroup/a b/berth-1-00ff00ff' } satisfies LaunchPlan;
    expect(serializePlan(plan)).toMatch(/\ncgroup \/sys\/fs\/cgroup\/a\\040b\/berth-1-00ff00ff\n/);
    expect(serializePlan({ ...plan, cgroup: undefined })).not.toMatch(/cgroup/);
  });
});

describe('where the limits can go', () => {
  const mem = { memory: 1 << 30 };
  const user = '/user.slice/user-1000.slice/user@1000.service/app.slice/run-r1.scope';

  it("a systemd user manager's delegation: the cgroup goes in user@UID.service, its controllers already enabled", () => {
    const root = tree(UNIFIED, user, systemd());
    const facts = cgroupFacts(root, UID, {});
    expect(facts.delegated).toMatchObject({ cgroup: '/user.slice/user-1000.slice/user@1000.service', hasProcesses: false });
    expect(limitsTarget({ ...mem, cpus: 2, pids: 10 }, facts)).toEqual({ parent: `${root}/sys/fs/cgroup/user.slice/user-1000.slice/user@1000.service`, enable: [] });
  });

  it('enables what its subtree lacks', () => {
    const facts = cgroupFacts(tree(UNIFIED, user, systemd('memory')), UID, {});
    expect(limitsTarget({ ...mem, pids: 10 }, facts).enable).toEqual(['pids']);
  });

  it('a login session (a root-owned scope) is not delegated, and says how to get a delegated one', () => {
    const own = '/user.slice/user-1000.slice/session-3.scope';
    const facts = cgroupFacts(tree(UNIFIED, own, systemd()), UID, {});
    expect(facts.delegated).toBeUndefined();
    expect(reason(() => limitsTarget(mem, facts))).toBe(
      `--memory cannot be applied: your cgroup ${own} (/sys/fs/cgroup${own}) is not delegated to you (it is yours, but others may write it), so berth cannot make a cgroup for the container`
      + ' | start berth in a delegated cgroup: systemd-run --user --scope -p Delegate=yes berth run ... (with a systemd user manager), or ask the site to delegate a cgroup to you;'
      + ' or add --limits best-effort to run without the limits (berth doctor says what this node allows)');
  });

  it("a delegation that was not given a controller names it and its cgroup.controllers", () => {
    const dirs = systemd();
    dirs['/sys/fs/cgroup/user.slice/user-1000.slice/user@1000.service']!.controllers = 'memory pids';
    const facts = cgroupFacts(tree(UNIFIED, user, dirs), UID, {});
    expect(reason(() => limitsTarget({ cpus: 1 }, facts))).toMatch(/^--cpus cannot be applied: your delegated cgroup \/user\.slice\/user-1000\.slice\/user@1000\.service \(.*\) was not given the cpu controller \(its cgroup\.controllers: memory, pids\) \| the parent must enable cpu for it \(systemd: Delegate=memory cpu pids on user@\.service\)/);
  });

  it("a site's directory with the user's shell in it: the no-internal-process rule, and what to do", () => {
    const facts = cgroupFacts(tree(UNIFIED, '/users/u1000', {
      '/sys/fs/cgroup': { controllers: ALL, subtree: ALL, foreign: true },
      '/sys/fs/cgroup/users': { controllers: ALL, subtree: 'memory', foreign: true },
      '/sys/fs/cgroup/users/u1000': { controllers: 'memory', procs: '4242\n' },
    }), UID, {});
    expect(reason(() => limitsTarget(mem, facts))).toMatch(/^--memory cannot be applied: your delegated cgroup \/users\/u1000 .* has processes of its own, so no controller can be enabled for a cgroup below it \(cgroup v2's no-internal-process rule\) \| start berth from a cgroup below it/);
    // With the controller already enabled below it, the child can be made beside the shell's.
    const site = tree(UNIFIED, '/users/u1000/shell', {
      '/sys/fs/cgroup': { controllers: ALL, subtree: ALL, foreign: true },
      '/sys/fs/cgroup/users': { controllers: ALL, subtree: 'memory', foreign: true },
      '/sys/fs/cgroup/users/u1000': { controllers: 'memory', subtree: 'memory' },
      '/sys/fs/cgroup/users/u1000/shell': { controllers: 'memory', procs: '4242\n' },
    });
    expect(limitsTarget(mem, cgroupFacts(site, UID, {}))).toEqual({ parent: `${site}/sys/fs/cgroup/users/u1000`, enable: [] });
  });

  it("inside a Slurm job, the job's root-owned cgroup already limits: said, and never fought", () => {
    const own = '/system.slice/slurmstepd.scope/job_77/step_0/user/task_0';
    const dirs: Record<string, Node> = { '/sys/fs/cgroup': { controllers: ALL, subtree: ALL, foreign: true } };
    for (let d = own; d !== '/'; d = path.posix.dirname(d)) dirs[`/sys/fs/cgroup${d}`] = { controllers: 'cpu memory pids', subtree: 'cpu memory pids', foreign: true };
    const facts = cgroupFacts(tree(UNIFIED, own, dirs), UID, { SLURM_JOB_ID: '77' });
    expect(facts.slurmJob).toBe('77');
    expect(reason(() => limitsTarget(mem, facts))).toMatch(new RegExp(`^--memory cannot be applied: this is Slurm job 77, whose cgroup ${own.replace(/\./g, '\\.')} \\(.*\\) is Slurm's and already limits every process of the job, this container included \\| ask Slurm for the limits instead \\(sbatch/srun --mem, --cpus-per-task\\)`));
    // Without SLURM_JOB_ID it is only a cgroup that is not the caller's.
    expect(cgroupFacts(tree(UNIFIED, own, dirs), UID, {}).slurmJob).toBeUndefined();
  });

  it("a hybrid layout (this machine's): cgroup v1 holds the controllers, and that is said first", () => {
    const facts = cgroupFacts(tree(HYBRID, '/', { '/sys/fs/cgroup/unified': { controllers: 'hugetlb', foreign: true } }), UID, {});
    expect(facts).toMatchObject({ mount: '/sys/fs/cgroup/unified', v2Controllers: ['hugetlb'], own: '/' });
    const e = reason(() => limitsTarget({ memory: 1, pids: 1 }, facts));
    expect(e).toBe('--memory, --pids-limit cannot be applied: the memory, pids controllers are held by cgroup v1 (/sys/fs/cgroup/memory, /sys/fs/cgroup/pids): this node has a hybrid layout, and cgroup v2 (/sys/fs/cgroup/unified) has none of memory, pids'
      + ' | an administrator can boot with cgroup v2 only (systemd.unified_cgroup_hierarchy=1); or add --limits best-effort to run without the limits (berth doctor says what this node allows)');
  });

  it('no cgroup2 at all, and no 0:: line', () => {
    expect(reason(() => limitsTarget(mem, cgroupFacts(tree(HYBRID.split('\n').slice(0, 3).join('\n'), undefined, {}), UID, {})))).toMatch(/^--memory cannot be applied: cgroup v2 is not mounted on this node/);
  });

  it('a symlink on the way is not a delegation', () => {
    const root = tree(UNIFIED, user, systemd());
    const svc = path.join(root, 'sys/fs/cgroup/user.slice/user-1000.slice/user@1000.service');
    rmSync(svc, { recursive: true });
    mkdirSync(path.join(root, 'elsewhere/app.slice/run-r1.scope'), { recursive: true });
    for (const f of ['cgroup.procs', 'cgroup.subtree_control', 'cgroup.controllers']) writeFileSync(path.join(root, 'elsewhere', f), '');
    symlinkSync(path.join(root, 'elsewhere'), svc);
    expect(cgroupFacts(root, UID, {}).delegated).toBeUndefined();
  });

  it('best effort turns the reason into a warning', () => {
    const facts = cgroupFacts(tree(HYBRID, '/', { '/sys/fs/cgroup/unified': { foreign: true } }), UID, {});
    try {
      limitsTarget(mem, facts);
    } catch (e: unknown) {
      if (!isBerthError(e)) throw e;
      expect(bestEffortWarning(e)).toBe('berth: warning: --memory not applied (--limits best-effort): the memory controller is held by cgroup v1 (/sys/fs/cgroup/memory): this node has a hybrid layout, and cgroup v2 (/sys/fs/cgroup/unified) has none of memory; the container runs without the limits');
      return;
    }
    throw new Error('no error');
  });
});
