// The cache's locks (withLock, on the addon's tryLock): real flock(2) locks that flock(1) in
// another process sees and respects, released when their holder dies however it dies, never
// handed to a child, and never taken through a symlink.
import { spawn, spawnSync } from 'node:child_process';
import { chmodSync, existsSync, lstatSync, symlinkSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { withLock } from '../../src/image/cache.js';
import { cleanup, tempDir } from '../helpers.js';

let dir: string;
beforeAll(() => {
  dir = tempDir('locks');
});
afterAll(() => cleanup(dir));

/** Whether another process (flock(1)) could take the lock now: exit 0 yes, 1 no. */
function freeForOthers(file: string): boolean {
  const r = spawnSync('flock', ['--nonblock', '--conflict-exit-code', '1', file, 'true']);
  if (r.status !== 0 && r.status !== 1) throw new Error(`flock(1) failed: ${r.stderr}`);
  return r.status === 0;
}

it('holds a flock(2) lock that another process sees while the function runs, and only then', async () => {
  const file = path.join(dir, 'a.lock');
  const seen = await withLock(file, async () => freeForOthers(file));
  expect(seen).toBe(false);
  expect(freeForOthers(file)).toBe(true);
  expect(lstatSync(file).mode & 0o777).toBe(0o600);
});

it('makes a lock file of the user\'s own that others could open (flock(1) made them 0644) the user\'s alone', async () => {
  const file = path.join(dir, 'old.lock');
  writeFileSync(file, '', { mode: 0o644 });
  chmodSync(file, 0o644);
  await withLock(file, async () => undefined);
  expect(lstatSync(file).mode & 0o777).toBe(0o600);
});

it('waits for a holder in another process, and goes on as soon as that one is killed with -9', async () => {
  const file = path.join(dir, 'b.lock');
  const holder = spawn('flock', ['--exclusive', file, '-c', 'echo locked; exec sleep 60']);
  await new Promise((r) => holder.stdout!.once('data', r));
  let entered = 0;
  const waiter = withLock(file, async () => {
    entered = Date.now();
  });
  await new Promise((r) => setTimeout(r, 300));
  expect(entered).toBe(0); // still held
  const killed = Date.now();
  spawnSync('pkill', ['-KILL', '-P', String(holder.pid)]); // the sleep that holds the lock
  holder.kill('SIGKILL');
  await waiter;
  expect(entered - killed).toBeLessThan(1000);
});

it('lets two waiters of one process take turns, never both at once', async () => {
  const file = path.join(dir, 'c.lock');
  let inside = 0;
  let most = 0;
  const body = async () => {
    inside++;
    most = Math.max(most, inside);
    await new Promise((r) => setTimeout(r, 50));
    inside--;
  };
  await Promise.all([withLock(file, body), withLock(file, body), withLock(file, body)]);
  expect(most).toBe(1);
});

it('gives no child the lock: a child started under it does not keep it once the function returns', async () => {
  const file = path.join(dir, 'd.lock');
  let child: ReturnType<typeof spawn> | undefined;
  await withLock(file, async () => {
    child = spawn('sleep', ['30'], { stdio: 'ignore' });
  });
  try {
    expect(freeForOthers(file)).toBe(true);
  } finally {
    child!.kill('SIGKILL');
  }
});

it('refuses a lock path that is a symlink, naming it, and creates nothing where it points', async () => {
  const file = path.join(dir, 'e.lock');
  const target = path.join(dir, 'elsewhere');
  symlinkSync(target, file);
  await expect(withLock(file, async () => 'ran')).rejects.toMatchObject({
    code: 'OUTPUT_UNWRITABLE',
    message: expect.stringContaining(`cannot lock ${file}`),
  });
  expect(existsSync(target)).toBe(false);
});

it('refuses a lock path that is a FIFO at once, rather than waiting in open() for a writer', async () => {
  const file = path.join(dir, 'f.lock');
  expect(spawnSync('mkfifo', [file]).status).toBe(0);
  await expect(withLock(file, async () => 'ran')).rejects.toMatchObject({
    code: 'OUTPUT_UNWRITABLE',
    message: expect.stringContaining('not a regular file'),
  });
});
