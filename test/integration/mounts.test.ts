// Hostile images and bind sources against the root berth-helper builds (#11, items 5 and 6), run
// for real by the test user: symlinks planted where the helper makes mount points or writes your
// passwd and group lines must never have it create or write anything outside the container, and
// a read-only bind is read-only all the way down, its submounts (and /sys's) included.
// Images: test/fixtures/hostile_layers.py (hand-made layers), converted by berth.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { homedir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BERTH, PYTHON, ROOT, berth, cleanup, makeLayout, run, tempDir } from '../helpers.js';

const HOME = homedir();
const IMAGES = ['symlinks', 'friendly', 'tmp-missing', 'tmp-existing', 'fifo', 'chardev', 'plain'];
let work: string;
let src: string; // a bind source: hello, and sub/ (a mount point for the submount tests)
const mark = `/tmp/berth-pwned-${process.pid}`; // where some images aim, in the host's /tmp
const img = (name: string) => path.join(work, `${name}.sqsh`);
const env = (extra: Record<string, string> = {}) =>
  ({ ...process.env, BERTH_RUNTIME_DIR: path.join(work, 'runtime'), BERTH_IMAGE_LINGER: '0', ...extra });
const b = (args: string[], extra: Record<string, string> = {}) => run(process.execPath, [BERTH, ...args], { env: env(extra), cwd: work });

/** Whatever the images aimed at in your home: created there, it is the attack succeeding. */
const inHome = () => readdirSync(HOME).filter((n) => n.startsWith('pwned-'));

beforeAll(async () => {
  expect(inHome(), `leftovers of an earlier run in ${HOME}: remove them`).toEqual([]);
  work = tempDir('mounts');
  src = path.join(work, 'src');
  mkdirSync(path.join(src, 'sub'), { recursive: true });
  writeFileSync(path.join(src, 'hello'), 'hello from src\n');
  const made = spawnSync(PYTHON, [path.join(ROOT, 'test/fixtures/hostile_layers.py'), path.join(work, 'layers'), HOME, mark], { encoding: 'utf8' });
  if (made.status !== 0) throw new Error(`hostile_layers.py failed: ${made.stderr}`);
  for (const name of IMAGES) {
    const layer = readFileSync(path.join(work, 'layers', `${name}.tar`));
    makeLayout(path.join(work, `oci-${name}`), [layer], { config: { Env: ['PATH=/bin'], Cmd: ['/bin/sh'] } });
    const r = await berth('convert', `oci:${work}/oci-${name}`, '-o', img(name), '--quiet');
    if (r.code !== 0) throw new Error(r.stderr);
  }
}, 180_000);
afterAll(() => {
  for (const f of [`${mark}-passwd`, `${mark}-group`]) spawnSync('rm', ['-f', f]);
  if (work) cleanup(work);
});

describe('symlinks in the image never lead the helper out of the root (#11)', () => {
  it('dangling /etc/hosts, passwd, group and resolv.conf into your home: the container starts, nothing is made there', async () => {
    const r = await b(['exec', img('symlinks'), 'true']);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(inHome()).toEqual([]);
  });

  it('a --bind whose target, or a parent of it, is such a symlink is refused, naming where it led', async () => {
    const cases = [
      ['/data', `${HOME}/pwned-data`], // absolute, the target itself
      ['/parent/sub', `${HOME}/pwned-parent`], // absolute, the target's parent
      ['/rel/sub', `${HOME.slice(1)}/pwned-rel`], // relative, climbing out with ../../..
    ];
    for (const [target, lead] of cases) {
      const r = await b(['exec', '--bind', `${src}:${target}`, img('symlinks'), 'true']);
      expect(r.code, r.stderr).toBe(125);
      expect(r.stderr).toContain(`cannot create ${target} (--bind ${src}:${target}): a symlink on the way leads it to `);
      expect(r.stderr).toContain(`${lead}, in a directory bound from the host`);
    }
    expect(inHome()).toEqual([]);
  });

  it('without your home bound in, the same symlink resolves inside the root, where the bind lands', async () => {
    const r = await b(['exec', '--no-home', '--bind', `${src}:/data`, img('symlinks'), 'sh', '-c', 'cat /data/hello; readlink /data']);
    expect(r.stderr).toBe('');
    expect(r.stdout).toBe(`hello from src\n${HOME}/pwned-data\n`);
    expect(inHome()).toEqual([]);
  });

  it('a missing target named directly in your home, with no symlink on the way, is still made there', async () => {
    const dir = path.join(HOME, `berth-mounts-direct-${process.pid}`);
    try {
      const r = await b(['exec', '--bind', `${src}:${dir}/in`, img('symlinks'), 'cat', `${dir}/in/hello`]);
      expect(r.stderr).toBe('');
      expect(r.stdout).toBe('hello from src\n');
      expect(existsSync(path.join(dir, 'in'))).toBe(true);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('symlinks that stay inside the image keep working: a bind through one, a dangling /etc/resolv.conf', async () => {
    const r = await b(['exec', '--bind', `${src}:/srv`, img('friendly'), 'sh', '-c',
      'cat /srv/hello /opt/real/hello; test -f /run/systemd/resolve/stub-resolv.conf && echo made-inside']);
    expect(r.stderr).toBe('');
    expect(r.stdout).toBe('hello from src\nhello from src\nmade-inside\n');
    const resolv = await b(['exec', img('friendly'), 'cat', '/etc/resolv.conf']);
    expect(resolv.stdout).toBe(readFileSync('/etc/resolv.conf', 'utf8'));
  });

  it("passwd and group lines never go into the host's /tmp through a symlink, missing or there", async () => {
    const missing = await b(['exec', img('tmp-missing'), 'true']);
    expect(missing.code).toBe(125);
    expect(missing.stderr).toContain(`cannot create /etc/passwd (identity: your passwd entry): a symlink on the way leads it to ${mark}-passwd, in a directory bound from the host`);
    expect(existsSync(`${mark}-passwd`)).toBe(false);

    writeFileSync(`${mark}-group`, 'untouched\n');
    const there = await b(['exec', img('tmp-existing'), 'true']);
    expect(there.code).toBe(125);
    expect(there.stderr).toContain("cannot add a line to /etc/group (identity: your group entry): a symlink in the image leads it out of the container's own files");
    expect(readFileSync(`${mark}-group`, 'utf8')).toBe('untouched\n');
  });

  it('a FIFO as /etc/passwd or a device node as /etc/group fails at once, naming it (no hang)', async () => {
    for (const [name, file, origin] of [['fifo', '/etc/passwd', 'passwd'], ['chardev', '/etc/group', 'group']]) {
      const started = Date.now();
      const r = await b(['exec', img(name!), 'true']);
      expect(r.code).toBe(125);
      expect(r.stderr).toContain(`cannot add a line to ${file} (identity: your ${origin} entry): the image has something else than a regular file there`);
      expect(Date.now() - started).toBeLessThan(20_000);
    }
  });
});

/** mountinfo's mount points and per-mount options (fields 5 and 6), as a map. */
function mounts(mountinfo: string): Map<string, string[]> {
  return new Map(mountinfo.trim().split('\n').map((l) => l.split(' ')).map((f) => [f[4]!, f[5]!.split(',')]));
}
const under = (m: Map<string, string[]>, top: string) => [...m.entries()].filter(([p]) => p === top || p.startsWith(`${top}/`));

// A submount that an ordinary user can make: fuse-overlayfs through the setuid fusermount3, as a
// user's sshfs or squashfuse would be, writable (its upper directory is the user's).
const fuseOverlay = spawnSync('sh', ['-c', 'command -v fuse-overlayfs && command -v fusermount3']).status === 0;

describe.skipIf(!fuseOverlay)('read-only binds are read-only all the way down (#11)', () => {
  let sub: string;
  beforeAll(() => {
    sub = path.join(src, 'sub');
    for (const d of ['lower', 'upper', 'fo-work']) mkdirSync(path.join(work, d));
    writeFileSync(path.join(work, 'lower', 'low'), 'in the submount\n');
    const m = spawnSync('fuse-overlayfs', ['-o', `lowerdir=${work}/lower,upperdir=${work}/upper,workdir=${work}/fo-work`, sub], { encoding: 'utf8' });
    if (m.status !== 0) throw new Error(`fuse-overlayfs: ${m.stderr}`);
  });
  afterAll(() => {
    spawnSync('fusermount3', ['-u', sub]);
  });

  for (const forced of [false, true]) {
    it(forced ? 'without mount_setattr (forced): each mount below is remounted and checked' : 'mount_setattr(AT_RECURSIVE): --bind SRC:/data:ro covers the mount in SRC', async () => {
      const r = await b(['exec', '--bind', `${src}:/data:ro`, img('plain'), 'sh', '-c',
        'touch /data/top; touch /data/sub/new; cat /data/sub/low; cat /proc/self/mountinfo'], forced ? { BERTH_FORCE_NO_MOUNT_SETATTR: '1' } : {});
      expect(r.stderr).toContain('touch: /data/top: Read-only file system');
      expect(r.stderr).toContain('touch: /data/sub/new: Read-only file system');
      expect(r.stdout).toMatch(/^in the submount\n/);
      const inside = mounts(r.stdout.slice('in the submount\n'.length));
      expect(inside.get('/data/sub')).toEqual(expect.arrayContaining(['ro', 'nosuid', 'nodev']));
      expect(existsSync(path.join(sub, 'new'))).toBe(false);
    });
  }

  it('a writable bind keeps its submount writable, and nosuid,nodev', async () => {
    const r = await b(['exec', '--bind', `${src}:/data`, img('plain'), 'sh', '-c', 'touch /data/sub/new-rw && cat /proc/self/mountinfo']);
    expect(r.stderr).toBe('');
    const options = mounts(r.stdout).get('/data/sub');
    expect(options).toEqual(expect.arrayContaining(['rw', 'nosuid', 'nodev']));
    expect(existsSync(path.join(sub, 'new-rw'))).toBe(true);
  });
});

describe('/sys and /proc from the host (#11)', () => {
  it('every mount under /sys is ro,nosuid,nodev,noexec and every one under /proc nosuid,nodev,noexec', async () => {
    const host = mounts(readFileSync('/proc/self/mountinfo', 'utf8'));
    const r = await b(['exec', img('plain'), 'sh', '-c', 'cat /proc/self/mountinfo; touch /sys/fs/cgroup/x']);
    const inside = mounts(r.stdout);
    expect(under(inside, '/sys').length).toBe(under(host, '/sys').length); // all of them came in
    for (const [point, options] of under(inside, '/sys')) expect([point, ...options]).toEqual(expect.arrayContaining([point, 'ro', 'nosuid', 'nodev', 'noexec']));
    for (const [point, options] of under(inside, '/proc')) expect([point, ...options]).toEqual(expect.arrayContaining([point, 'nosuid', 'nodev', 'noexec']));
    if (host.has('/sys/fs/cgroup')) expect(r.stderr).toContain('touch: /sys/fs/cgroup/x: Read-only file system');
  });
});
