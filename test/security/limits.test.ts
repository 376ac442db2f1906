// The container's cgroup (#15, SECURITY.md "Resource limits"), with a real cgroup v2 subtree
// delegated to the victim as systemd delegates user@UID.service (the directory, cgroup.procs,
// cgroup.subtree_control and cgroup.threads chowned), and the victim's processes started in a
// cgroup below it. berth-helper moves the container into the plan's cgroup only when what it
// opened is on cgroup2, reached without a symlink, and the caller's alone: a cgroup of the
// attacker's (where the attacker's limits, or a freeze, would hold the victim's container) and
// a symlink the attacker planted are refused, and nothing is moved. The plans are berth's own
// with the `cgroup` line added, since on a node whose controllers cgroup v1 holds (this one)
// berth itself stops before it makes a cgroup; that explanation is checked here too, as the
// victim inside the delegation.
import { spawnSync } from 'node:child_process';
import { chownSync, mkdirSync, readdirSync, readFileSync, rmdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BERTH, ROOT, cleanup, run, type Ran } from '../helpers.js';
import { makeContainerCgroup, removeContainerCgroup } from '../../src/runtime/cgroup.js';
import { account, as, ATTACKER, dirOf, VICTIM } from './users.js';

let work: string;
let base: string;
const image = () => path.join(work, 'plain.sqsh');
const env = () => ({ BERTH_RUNTIME_DIR: path.join(work, 'runtime'), BERTH_IMAGE_LINGER: '0' });
const made: string[] = [];

/** Where cgroup2 is mounted here, from mountinfo (unified at /sys/fs/cgroup, hybrid at .../unified). */
function cgroup2(): string {
  const line = readFileSync('/proc/self/mountinfo', 'utf8').split('\n').find((l) => / - cgroup2 /.test(l) && l.split(' ')[3] === '/');
  if (!line) throw new Error('no cgroup2 mounted: the limits suite needs one');
  return line.split(' ')[4]!;
}

/** The child cgroups of dir (its other entries are its control files). */
const children = (dir: string) => readdirSync(dir, { withFileTypes: true }).filter((e) => e.isDirectory()).map((e) => e.name);

/** A cgroup delegated to `user`: its directory and the files delegation hands over. */
function delegated(dir: string, user: string): string {
  mkdirSync(dir);
  made.push(dir);
  const a = account(user);
  for (const f of ['', 'cgroup.procs', 'cgroup.subtree_control', 'cgroup.threads']) chownSync(path.join(dir, f), a.uid, a.gid);
  return dir;
}

/** Runs cmd as `user` from within the cgroup `cg` (root moves the shell there first). */
function inCgroup(cg: string, user: string, cmd: string, args: string[], stdin?: string): Promise<Ran> {
  const a = account(user);
  const vars = Object.entries({ PATH: '/usr/local/bin:/usr/bin:/bin', HOME: a.home, ...env() }).map(([k, v]) => `${k}=${v}`);
  return run('sh', ['-c', 'echo $$ > "$0/cgroup.procs" && exec "$@"', cg, 'runuser', '-u', user, '--', 'env', '-i', ...vars, cmd, ...args], { input: stdin });
}

/** The victim's plan for `sh -c SCRIPT`, as berth writes it, with a `cgroup` line. */
async function planWith(cg: string, script: string): Promise<string> {
  const r = await as(VICTIM, process.execPath, [BERTH, 'plan', '--format', 'helper', image(), '--', 'sh', '-c', script], { env: env() });
  expect(r.code, r.stderr).toBe(0);
  return `${r.stdout}cgroup ${cg}\n`;
}

const helper = () => path.join(ROOT, 'native/build/berth-helper');
/** berth-helper with the plan on fd 3, as berth starts it. */
function helperWith(cg: string, user: string, plan: string): Promise<Ran> {
  const file = path.join(work, `plan-${made.length}-${Math.random().toString(36).slice(2)}`);
  writeFileSync(file, plan, { mode: 0o600 });
  chownSync(file, account(user).uid, account(user).gid);
  return inCgroup(cg, user, 'sh', ['-c', `exec "$0" 3< "$1"`, helper(), file]);
}

beforeAll(async () => {
  work = dirOf(VICTIM, 'limits', 0o755);
  const r = await as(VICTIM, path.join(ROOT, 'test/fixtures/make-foreign-images.sh'), [work]);
  expect(r.code, r.stderr).toBe(0);
  base = delegated(path.join(cgroup2(), `berth-sec-${process.pid}`), VICTIM);
  delegated(path.join(base, 'shell'), VICTIM);
}, 120_000);
afterAll(() => {
  // Children first; each is empty once its container has ended.
  for (const d of made.reverse()) {
    try {
      rmdirSync(d);
    } catch {
      // already gone
    }
  }
  cleanup(work);
});

describe("the container's cgroup", () => {
  it("is entered when it is the caller's own, on cgroup2 (checked from inside)", async () => {
    const cg = delegated(path.join(base, 'c-own'), VICTIM);
    const r = await helperWith(path.join(base, 'shell'), VICTIM, await planWith(cg, 'grep ^0:: /proc/self/cgroup'));
    expect(r.stderr).toBe('');
    expect(r.stdout).toBe(`0::/${path.basename(base)}/c-own\n`);
    expect(r.code).toBe(0);
    expect(readFileSync(path.join(cg, 'cgroup.events'), 'utf8')).toMatch(/^populated 0$/m);
  });

  it("is refused when it is the attacker's, and nothing is moved", async () => {
    const cg = delegated(path.join(base, 'c-attacker'), ATTACKER);
    const r = await helperWith(path.join(base, 'shell'), VICTIM, await planWith(cg, 'echo ran'));
    expect(r.stdout).toBe('');
    expect(r.code).toBe(125);
    expect(r.stderr).toBe(`berth: error: refusing the container's cgroup ${cg}: not yours alone (owner uid ${account(ATTACKER).uid}, mode 0755)\n`);
    expect(readFileSync(path.join(cg, 'cgroup.procs'), 'utf8')).toBe('');
  });

  it('is refused through a symlink the attacker planted, even to a cgroup of the victim', async () => {
    const cg = delegated(path.join(base, 'c-linked'), VICTIM);
    const dir = dirOf(ATTACKER, 'limits-link', 0o755);
    const link = path.join(dir, 'cg');
    spawnSync('runuser', ['-u', ATTACKER, '--', 'ln', '-s', cg, link]);
    const r = await helperWith(path.join(base, 'shell'), VICTIM, await planWith(link, 'echo ran'));
    cleanup(dir);
    expect(r.stdout).toBe('');
    expect(r.code).toBe(125);
    expect(r.stderr).toBe(`berth: error: cannot open the container's cgroup ${link} (a symlink on the way): Too many levels of symbolic links\n`);
    expect(readFileSync(path.join(cg, 'cgroup.procs'), 'utf8')).toBe('');
  });

  it('is refused when it is not a cgroup at all (a directory of the victim)', async () => {
    const dir = path.join(work, 'not-a-cgroup');
    mkdirSync(dir);
    chownSync(dir, account(VICTIM).uid, account(VICTIM).gid);
    const r = await helperWith(path.join(base, 'shell'), VICTIM, await planWith(dir, 'echo ran'));
    expect(r.stdout).toBe('');
    expect(r.code).toBe(125);
    expect(r.stderr).toBe(`berth: error: refusing the container's cgroup ${dir}: not on cgroup2\n`);
  });
});

describe('berth run --memory inside a delegation', () => {
  it("says why the limit cannot be applied on this node, as the victim, and makes no cgroup", async () => {
    const controllers = readFileSync(path.join(cgroup2(), 'cgroup.controllers'), 'utf8').split(/\s+/);
    const r = await inCgroup(path.join(base, 'shell'), VICTIM, process.execPath, [BERTH, 'exec', '--memory', '256m', image(), 'echo', 'ran']);
    expect(r.stdout).toBe('');
    expect(r.code).toBe(125);
    if (controllers.includes('memory')) {
      // A node with memory in cgroup v2: the delegation was not given it (cgroup.controllers is empty).
      expect(r.stderr).toMatch(new RegExp(`^berth: error: --memory cannot be applied: your delegated cgroup /${path.basename(base)} \\(${base}\\) was not given the memory controller`));
    } else {
      expect(r.stderr).toMatch(/^berth: error: --memory cannot be applied: the memory controller is held by cgroup v1 \(\/sys\/fs\/cgroup\/memory\): this node has a hybrid layout/);
    }
    expect(children(base).filter((n) => /^berth-\d+-/.test(n))).toEqual([]);
  });
});

describe("berth's making and removal of the container's cgroup, on the real cgroupfs", () => {
  /** As the victim (this worker is a process of its own: vitest's forks pool). */
  function asVictim<T>(f: () => T): T {
    process.seteuid!(account(VICTIM).uid);
    try {
      return f();
    } finally {
      process.seteuid!(0);
    }
  }
  const uid = () => account(VICTIM).uid;
  const parent = () => path.join(base, 'p');

  beforeAll(() => {
    delegated(parent(), VICTIM);
  });

  it("makes a cgroup of the victim's with a fresh name, sweeping one a killed berth left; what the container left running ends with it", async () => {
    const stale = asVictim(() => {
      mkdirSync(path.join(parent(), 'berth-999999-0badf00d')); // a berth that is gone (no pid 999999)
      return path.join(parent(), 'berth-999999-0badf00d');
    });
    const dir = asVictim(() => makeContainerCgroup({ parent: parent(), enable: [] }, {}, uid()));
    expect(path.basename(dir)).toMatch(new RegExp(`^berth-${process.pid}-[0-9a-f]{8}$`));
    expect(spawnSync('stat', ['-c', '%u', dir], { encoding: 'utf8' }).stdout.trim()).toBe(String(uid()));
    expect(children(parent())).toEqual([path.basename(dir)]); // the stale one swept
    // A daemon the container left behind, in its cgroup.
    const left = spawnSync('sh', ['-c', `echo $$ > ${dir}/cgroup.procs; exec runuser -u ${VICTIM} -- setsid sleep 120 </dev/null >/dev/null 2>&1 & echo $!`], { encoding: 'utf8' });
    const pid = Number(left.stdout.trim());
    await new Promise((r) => setTimeout(r, 200));
    expect(readFileSync(path.join(dir, 'cgroup.events'), 'utf8')).toMatch(/^populated 1$/m);
    expect(asVictim(() => removeContainerCgroup(dir))).toBeUndefined();
    expect(children(parent())).toEqual([]);
    // Gone, or a zombie waiting for whoever inherited it: no longer running either way.
    const state = spawnSync('sh', ['-c', `cut -d' ' -f3 /proc/${pid}/stat 2>/dev/null`], { encoding: 'utf8' }).stdout.trim();
    expect(['', 'Z']).toContain(state);
  });

  it('a limit file the kernel does not offer is an error naming it, and the cgroup is removed again', () => {
    const controllers = readFileSync(path.join(parent(), 'cgroup.controllers'), 'utf8').trim();
    expect(controllers).toBe(''); // nothing delegated: memory.max is not there to write
    let message = '';
    asVictim(() => {
      try {
        makeContainerCgroup({ parent: parent(), enable: [] }, { memory: 1 << 30 }, uid());
      } catch (e: unknown) {
        message = (e as Error).message;
      }
    });
    expect(message).toMatch(new RegExp(`^cannot write 1073741824 to ${parent()}/berth-${process.pid}-[0-9a-f]{8}/memory\\.max: ENOENT$`));
    expect(children(parent())).toEqual([]);
  });
});
