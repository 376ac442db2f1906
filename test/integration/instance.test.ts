// Instances (berth instance start|stop|list, exec instance://NAME), run for real by an ordinary
// user: a detached container whose command runs in a PID namespace of its own, joined by setns
// into its user, mount and PID namespaces, stopped with nothing left behind. The images are
// test/fixtures/make-instance-images.sh's.
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, readlinkSync } from 'node:fs';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { EXIT } from '../../src/errors.js';
import { BERTH, ROOT, cleanup, run, tempDir } from '../helpers.js';

// berth's own failures exit 125 (the helper's, from native/exit_codes.h). A usage error (a bad
// name) exits USAGE_FAILED until issue 13's exit contract makes every berth failure 125.
const BERTH_FAILED = 125;
const USAGE_FAILED = (EXIT as Record<string, number>).usage ?? BERTH_FAILED;

let work: string;
const img = (name: string) => path.join(work, `${name}.sqsh`);
const runtime = () => path.join(work, 'runtime');
// Image servers leave with their last container, so that what is left can be checked at once.
const env = () => ({ ...process.env, BERTH_RUNTIME_DIR: runtime(), BERTH_IMAGE_LINGER: '0' });
const b = (...args: string[]) => run(process.execPath, [BERTH, ...args], { env: env(), cwd: work });
const bIn = (cwd: string, ...args: string[]) => run(process.execPath, [BERTH, ...args], { env: env(), cwd });

interface Listed { name: string; status: string; pid: number; started: string; exitStatus: number | null; job: string; image: string; log: string }
async function list(): Promise<Listed[]> {
  const r = await b('instance', 'list', '--json');
  expect(r.stderr).toBe('');
  return JSON.parse(r.stdout) as Listed[];
}

/** A process that has not ended (a zombie has: this machine's PID 1 may never reap it). */
function alive(pid: number): boolean {
  try {
    return !/^\d+ \(.*\) Z/s.test(readFileSync(`/proc/${pid}/stat`, 'latin1'));
  } catch {
    return false;
  }
}

/** Processes of this file's helpers still running (told apart by their BERTH_RUNTIME_DIR). */
function liveHelpers(): number[] {
  const ps = spawnSync('ps', ['-u', String(process.getuid!()), '-o', 'pid=,comm=']).stdout.toString();
  return ps.split('\n').filter((l) => l.includes('berth-helper')).map((l) => Number(l.trim().split(/\s+/)[0])).filter((pid) => {
    try {
      return alive(pid) && readFileSync(`/proc/${pid}/environ`, 'latin1').split('\0').includes(`BERTH_RUNTIME_DIR=${runtime()}`);
    } catch {
      return false; // gone meanwhile, or not dumpable: an image server, counted by its directory
    }
  });
}

async function until(check: () => boolean, ms: number): Promise<boolean> {
  for (const end = Date.now() + ms; Date.now() < end; await new Promise((r) => setTimeout(r, 50))) if (check()) return true;
  return check();
}

/** Processes of this user whose mounts involve this file's runtime directory (a container's overlay). */
function mountingProcesses(): number[] {
  return readdirSync('/proc').filter((n) => /^\d+$/.test(n)).map(Number).filter((pid) => {
    try {
      return readFileSync(`/proc/${pid}/mountinfo`, 'utf8').includes(runtime());
    } catch {
      return false; // gone, or not ours to read
    }
  });
}

/** Nothing of any instance (or its image server) on this node: no process, directory or mount. */
async function nothingLeft(pids: number[]): Promise<void> {
  const empty = () => !existsSync(runtime()) || readdirSync(runtime()).length === 0;
  expect(await until(() => empty() && liveHelpers().length === 0 && !pids.some(alive), 5000)).toBe(true);
  expect(mountingProcesses()).toEqual([]);
}


beforeAll(async () => {
  work = tempDir('instance');
  const made = await run(path.join(ROOT, 'test/fixtures/make-instance-images.sh'), [work]);
  if (made.code !== 0) throw new Error(made.stderr);
}, 180_000);
afterEach(async () => {
  await b('instance', 'stop', '--all', '--force');
});
afterAll(() => cleanup(work));

describe('start, list, exec instance://, stop', () => {
  it('starts detached, is listed, is joined in its own root and PID namespace, and stops leaving nothing', async () => {
    const started = await b('instance', 'start', '--writable-tmpfs', img('daemon'), 'db');
    expect(started.stdout).toBe('');
    expect(started.stderr).toMatch(/^berth: instance db started \(pid \d+\); its output goes to .*\/instances\/db\/log\n$/);
    expect(started.code).toBe(0);

    const [db, ...others] = await list();
    expect(others).toEqual([]);
    expect(db).toMatchObject({ name: 'db', status: 'running', image: img('daemon'), exitStatus: null, job: '', log: path.join(runtime(), 'instances/db/log') });
    expect(alive(db!.pid)).toBe(true);
    expect(mountingProcesses()).toContain(db!.pid); // what nothingLeft() checks is gone at the end
    expect(readFileSync(`/proc/${db!.pid}/cmdline`, 'latin1')).toBe('sleep\u00001000\u0000');
    expect(Math.abs(Date.parse(db!.started) - Date.now())).toBeLessThan(60_000);
    const table = await b('instance', 'list');
    expect(table.stdout).toMatch(new RegExp(`^NAME +PID +STATUS +STARTED +JOB +IMAGE +LOG\ndb +${db!.pid} +running +\\S+ +- +${img('daemon')} +\\S+/log\n$`));
    expect(readFileSync(db!.log, 'utf8')).toBe('daemon up\n');
    // The log is the user's alone, in a directory of the user's alone.
    expect(spawnSync('stat', ['-c', '%a %u', path.dirname(db!.log), db!.log], { encoding: 'utf8' }).stdout)
      .toBe(`700 ${process.getuid!()}\n600 ${process.getuid!()}\n`);

    // The same root (the file the command wrote in its writable tmpfs, which the host has not),
    // and the same PID namespace: the instance's shell is PID 2, its init PID 1.
    const seen = await b('exec', 'instance://db', 'sh', '-c', 'cat /written-by-instance; cat /proc/2/cmdline | tr "\\0" " "; echo; echo $$');
    expect(seen.stderr).toBe('');
    expect(seen.stdout).toMatch(/^2\nsleep 1000 \n\d+\n$/);
    expect(existsSync('/written-by-instance')).toBe(false);
    // What one joined process writes, the next one sees.
    expect((await b('exec', 'instance://db', 'sh', '-c', 'echo shared > /new-file')).code).toBe(0);
    expect((await b('exec', 'instance://db', 'cat', '/new-file')).stdout).toBe('shared\n');
    // A joined command's status is its own.
    expect((await b('exec', 'instance://db', 'sh', '-c', 'exit 7')).code).toBe(7);
    expect((await b('exec', 'instance://db', 'no-such-command')).code).toBe(EXIT.notFound);

    const stopped = await b('instance', 'stop', 'db');
    expect(stopped.stderr).toBe('berth: instance db stopped\n');
    expect(stopped.code).toBe(0);
    await nothingLeft([db!.pid]);
    expect(await list()).toEqual([]);
  });

  it("keeps none of the caller's descriptors: a script that reads berth's output gets its EOF", async () => {
    // fd 200 is this test's stdout pipe too: were the instance to hold it, run() would wait for
    // the instance's end.
    const r = await run('bash', ['-c', `exec 200>&1; ${process.execPath} ${BERTH} instance start ${img('daemon')} quiet | cat; echo done`], { env: env(), cwd: work });
    expect(r.stdout).toBe('done\n');
    const [quiet] = await list();
    const fds = readdirSync(`/proc/${quiet!.pid}/fd`).map((fd) => `${fd} ${readlinkSync(`/proc/${quiet!.pid}/fd/${fd}`)}`);
    expect(fds).toEqual(['0 /dev/null', `1 ${quiet!.log}`, `2 ${quiet!.log}`]);
  });

  it('takes --env and --pwd when joining, and the instance environment otherwise', async () => {
    expect((await b('instance', 'start', img('daemon'), 'envs')).code).toBe(0);
    const r = await b('exec', '--env', 'EXTRA=1', '--pwd', '/bin', 'instance://envs', 'sh', '-c', 'echo $EXTRA $PATH $BERTH_CONTAINER; pwd');
    expect(r.stderr).toBe('');
    expect(r.stdout).toBe('1 /bin 1\n/bin\n');
    // Without --pwd: where the caller is, when the instance has it bound at the same path (it
    // was started here); else the instance's own (the image's WorkingDir).
    expect((await b('exec', 'instance://envs', 'pwd')).stdout).toBe(`${work}\n`);
    expect((await bIn('/', 'exec', 'instance://envs', 'pwd')).stdout).toBe('/work\n');
  });

  it('refuses options that would change the running instance', async () => {
    expect((await b('instance', 'start', img('daemon'), 'fixed')).code).toBe(0);
    const r = await b('exec', '--bind', `${work}:/data`, 'instance://fixed', 'true');
    expect(r.stderr).toContain('--bind cannot change the running instance fixed');
    expect(r.stderr).toContain('give --bind to berth instance start');
    expect(r.code).not.toBe(0);
  });

  it('a --fakeroot instance is joined as root, in the namespace that locks its mounts', async () => {
    expect((await b('instance', 'start', '--fakeroot', '--writable-tmpfs', img('daemon'), 'root')).code).toBe(0);
    const r = await b('exec', 'instance://root', 'sh', '-c', 'id -u; cat /written-by-instance; umount /proc 2>&1 || echo refused');
    expect(r.stdout).toMatch(/^0\n2\n(.*\n)?refused\n$/);
  });

  it('runs an Apptainer image\'s startscript with its arguments and environment; shell instance:// too', async () => {
    expect((await b('instance', 'start', '--containall', img('app'), 'app', 'one', 'two')).code).toBe(0);
    const r = await b('exec', 'instance://app', 'cat', '/dev/shm/started-by-startscript');
    expect(r.stdout).toBe('startscript one two from-env-script\n');
    expect((await b('shell', 'instance://app', '-c', 'echo $GREETING')).stdout).toBe('from-env-script\n');
  });

  it("a SIF's startscript, too; run instance:// runs the image's runscript inside", async () => {
    expect((await b('instance', 'start', '--containall', path.join(work, 'app.sif'), 'sif')).code).toBe(0);
    expect((await b('exec', 'instance://sif', 'cat', '/dev/shm/started-by-startscript')).stdout).toBe('startscript  from-env-script\n');
    expect((await b('run', 'instance://sif', 'x', 'y')).stdout).toBe('runscript x y\n');
    const [sif] = await list();
    expect(sif?.image).toBe(path.join(work, 'app.sif'));
  });

  it('with nothing to run, holds its namespaces for exec to join', async () => {
    expect((await b('instance', 'start', img('hold'), 'idle')).code).toBe(0);
    const [idle] = await list();
    expect(idle?.status).toBe('running');
    expect((await b('exec', 'instance://idle', 'sh', '-c', 'echo $$')).stdout).toBe('3\n'); // init 1, holder 2
    expect((await b('instance', 'stop', 'idle')).code).toBe(0);
    await nothingLeft([idle!.pid]);
  });
});

describe('refusals and ends', () => {
  it.each([
    ['a/b'], ['../up'], ['-dash'], ['.hidden'], ['sp ace'], ['x'.repeat(65)], ['new\nline'], ['ünï'],
  ])('refuses the name %j, before anything is made', async (name) => {
    const r = await b('instance', 'start', img('daemon'), name);
    expect(r.stderr).toContain('invalid instance name');
    expect(r.code).toBe(USAGE_FAILED);
    const stop = await b('instance', 'stop', '--', name);
    expect(stop.stderr).toContain('invalid instance name');
    expect(stop.code).not.toBe(0);
    expect((await b('exec', `instance://${name}`, 'true')).stderr).toContain('invalid instance name');
    expect(existsSync(path.join(runtime(), 'instances'))).toBe(false);
  });

  it('takes a name of 64 characters', async () => {
    const name = `a${'b'.repeat(62)}-`;
    expect((await b('instance', 'start', img('hold'), name)).code).toBe(0);
    expect((await list()).map((i) => i.name)).toEqual([name]);
  });

  it('refuses a second instance of the same name, naming berth instance stop', async () => {
    expect((await b('instance', 'start', img('daemon'), 'twice')).code).toBe(0);
    const [first] = await list();
    const r = await b('instance', 'start', img('hold'), 'twice');
    expect(r.stderr).toBe(`berth: error: an instance named twice is already running on this node (pid ${first!.pid}); stop it first: berth instance stop twice\n`);
    expect(r.code).toBe(BERTH_FAILED);
    expect(await list()).toEqual([first]);
  });

  it('of two starts of one name at once, one runs and the other is refused', async () => {
    const both = await Promise.all([b('instance', 'start', img('daemon'), 'race'), b('instance', 'start', img('daemon'), 'race')]);
    expect(both.map((r) => r.code).sort()).toEqual([0, BERTH_FAILED]);
    expect(both.find((r) => r.code !== 0)!.stderr).toContain('an instance named race is already running');
    expect((await list()).map((i) => [i.name, i.status])).toEqual([['race', 'running']]);
  });

  it('stopping or joining an instance that does not exist fails with the way to list them', async () => {
    const stop = await b('instance', 'stop', 'ghost');
    expect(stop.stderr).toBe('berth: error: there is no instance named ghost on this node; `berth instance list` shows yours\n');
    expect(stop.code).toBe(BERTH_FAILED);
    const join = await b('exec', 'instance://ghost', 'true');
    expect(join.stderr).toBe(stop.stderr);
    expect(join.code).toBe(BERTH_FAILED);
    expect((await b('instance', 'stop')).stderr).toContain('which instance? give its name, or --all');
  });

  it('a command that is not in the image fails the start, with the reason and nothing left', async () => {
    const r = await b('instance', 'start', img('missing'), 'broken');
    expect(r.stderr).toContain("berth: error: '/no/such/program' is not in the image");
    expect(r.code).toBe(BERTH_FAILED);
    await nothingLeft([]);
  });

  it('an instance whose command ended is listed with its status until stop removes it', async () => {
    expect((await b('instance', 'start', img('brief'), 'once')).code).toBe(0);
    expect(await until(() => liveHelpers().length === 0, 5000)).toBe(true); // its monitor has recorded the end
    const [once] = await list();
    expect(once).toMatchObject({ name: 'once', status: 'exited', exitStatus: 3 });
    expect(readFileSync(once!.log, 'utf8')).toBe('bye\n');
    const join = await b('exec', 'instance://once', 'true');
    expect(join.stderr).toContain('the instance once is no longer running');
    expect(join.code).toBe(BERTH_FAILED);
    // Starting the name again replaces what is left of it.
    expect((await b('instance', 'start', img('hold'), 'once')).code).toBe(0);
    expect((await list()).map((i) => i.status)).toEqual(['running']);
  });

  it('stop sends --signal, then SIGKILL after --timeout to a command that ignores it', async () => {
    expect((await b('instance', 'start', img('stubborn'), 'deaf')).code).toBe(0);
    const [deaf] = await list();
    const t0 = Date.now();
    const r = await b('instance', 'stop', '--timeout', '1', 'deaf');
    expect(r.stderr).toBe('berth: warning: the instance deaf did not end within 1 s of signal 15; killing it\nberth: instance deaf stopped\n');
    expect(Date.now() - t0).toBeGreaterThan(900);
    await nothingLeft([deaf!.pid]);
    expect((await b('instance', 'stop', '--signal', 'NOPE', 'deaf')).stderr).toContain('--signal NOPE: not a signal');
  });

  it('stop --all stops every instance', async () => {
    for (const name of ['one', 'two']) expect((await b('instance', 'start', img('daemon'), name)).code).toBe(0);
    const pids = (await list()).map((i) => i.pid);
    const r = await b('instance', 'stop', '--all', '--signal', 'KILL');
    expect(r.stderr).toBe('berth: instance one stopped\nberth: instance two stopped\n');
    await nothingLeft(pids);
  });
});
