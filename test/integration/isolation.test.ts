// A container never gains more than its flags allow (#11.4): --fakeroot's root, with every
// capability in its user namespace, cannot turn a read-only bind writable or unmount what
// covers, and neither it nor --containall can reach the user's other processes (and so their
// roots, the home --no-home left out) through /proc; --pid's init passes signals and the exit
// status on and reaps what is orphaned.
import { spawn } from 'node:child_process';
import { mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import { homedir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BERTH, ROOT, berth, cleanup, run, tempDir } from '../helpers.js';

let work: string;
const img = () => path.join(work, 'busybox.sqsh');
const env = () => ({ ...process.env, BERTH_RUNTIME_DIR: path.join(work, 'runtime'), BERTH_IMAGE_LINGER: '0' });
const b = (...args: string[]) => run(process.execPath, [BERTH, ...args], { env: env(), cwd: work });

beforeAll(async () => {
  work = tempDir('isolation');
  const made = await run(path.join(ROOT, 'test/fixtures/make-run-images.sh'), [work]);
  if (made.code !== 0) throw new Error(made.stderr);
  const r = await berth('convert', `oci:${work}/oci:busybox`, '-o', img(), '--quiet');
  if (r.code !== 0) throw new Error(r.stderr);
}, 180_000);
afterAll(() => cleanup(work));

describe('--fakeroot', () => {
  it('cannot remount a read-only bind writable, nor unmount it to write beneath (#11.4)', async () => {
    const data = path.join(work, 'data');
    mkdirSync(data);
    const r = await b('exec', '--fakeroot', '--bind', `${data}:/data:ro`, img(), 'sh', '-c',
      'id -u; mount -o remount,bind,rw /data; echo x > /data/remounted; umount /data; echo x > /data/beneath; mount -o remount,rw /; echo x > /rootfs-rw');
    expect(r.stdout).toBe('0\n');
    expect(r.stderr).toMatch(/\/data\/remounted: Read-only file system/);
    expect(readdirSync(data)).toEqual([]);
  });

  it("sees only its own processes, so no other process's root: not the home --no-home left out (#11.4)", async () => {
    // This test's own process, the user's, is the one whose root would show the home.
    const r = await b('exec', '--fakeroot', '--no-home', img(), 'sh', '-c',
      `ls /proc | grep -E '^[0-9]+$' | sort -n | tr '\\n' ' '; echo; ls /proc/${process.pid}/root${homedir()} 2>&1; cat /proc/1/environ 2>&1 | head -c 0`);
    const [pids, ...rest] = r.stdout.trim().split('\n');
    expect(pids!.trim().split(' ').map(Number).every((p) => p < 10)).toBe(true);
    expect(rest.join('\n')).toMatch(/No such file or directory/);
  });
});

describe('--containall and --pid', () => {
  it('--containall leaves the host\'s processes out', async () => {
    const r = await b('exec', '--containall', img(), 'sh', '-c', 'echo $$; ls /proc | grep -cE "^[0-9]+$"');
    expect(r.stdout).toMatch(/^2\n[0-9]\n$/); // the command is PID 2, after berth's init
  });

  it('--pid passes the exit status on, and 128+N for a command killed by signal N', async () => {
    expect((await b('exec', '--pid', img(), 'sh', '-c', 'exit 42')).code).toBe(42);
    expect((await b('exec', '--pid', img(), 'sh', '-c', 'kill -9 $$')).code).toBe(137);
  });

  it('--pid forwards SIGTERM to the command, and reaps what it orphans', async () => {
    const child = spawn(process.execPath, [BERTH, 'exec', '--pid', img(), 'sh', '-c',
      "(sleep 0.1 &) ; sleep 0.3; ps -o stat= | grep -c Z; trap 'echo got TERM; exit 15' TERM; echo ready; while :; do sleep 0.05; done"], { env: env() });
    let out = '';
    await new Promise<void>((resolve) => child.stdout.on('data', (d: Buffer) => {
      out += d.toString();
      if (out.includes('ready')) resolve();
    }));
    child.kill('SIGTERM');
    const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
    expect(out).toBe('0\nready\ngot TERM\n');
    expect(code).toBe(15);
  });
});

describe('the default', () => {
  it('shares the node\'s PID namespace (MPI ranks and tools see each other)', async () => {
    writeFileSync(path.join(work, 'marker'), '');
    const r = await b('exec', img(), 'sh', '-c', `test -d /proc/${process.pid} && echo shared`);
    expect(r.stdout).toBe('shared\n');
  });
});
