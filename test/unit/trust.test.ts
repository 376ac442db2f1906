// The cache's trust rules (src/image/trust.ts) on real files and directories. One user cannot
// make another's files, so "another user" is played by a Trust whose self is some other uid:
// this user's files are then someone else's, as they would be to that uid.
import { spawnSync } from 'node:child_process';
import { chmodSync, closeSync, lstatSync, mkdirSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { checkDirPath, describeDoubt, fileDoubt, makeTrust, modeText, openTrusted } from '../../src/image/trust.js';
import { cleanup, tempDir } from '../helpers.js';

const me = makeTrust(process.getuid!());
const stranger = makeTrust(process.getuid!() === 4242 ? 4343 : 4242);
let dir: string;

beforeAll(() => {
  dir = tempDir('trust');
});
afterAll(() => cleanup(dir));

const made = (name: string, mode: number) => {
  const p = path.join(dir, name);
  mkdirSync(p, { recursive: true });
  chmodSync(p, mode);
  return p;
};

describe('directories', () => {
  it('a path of directories only trusted owners can write is believed, down from /', () => {
    expect(checkDirPath(made('private/a/b', 0o700), me)).toEqual({ missing: false });
    // The same path seen by another user: the first directory of this user's on the way is named.
    const seen = checkDirPath(path.join(dir, 'private/a/b'), stranger);
    expect(seen.doubt).toMatchObject({ path: dir, why: 'belongs to another user' });
  });

  it('a directory others can write is not believed, unless it is sticky', () => {
    expect(checkDirPath(made('open', 0o777), me).doubt).toMatchObject({ path: path.join(dir, 'open'), why: 'can be written by other users', mode: expect.any(Number) });
    expect(checkDirPath(made('group', 0o770), me).doubt?.why).toBe('can be written by other users');
    expect(checkDirPath(made('sticky', 0o1777), me)).toEqual({ missing: false });
    expect(checkDirPath(path.join(made('open2', 0o777), 'below'), me).doubt?.path).toBe(path.join(dir, 'open2'));
  });

  it('symlinks are followed as the kernel would, and what they lead to is checked', () => {
    made('target', 0o700);
    symlinkSync(path.join(dir, 'target'), path.join(dir, 'good-link'));
    expect(checkDirPath(path.join(dir, 'good-link'), me)).toEqual({ missing: false });
    made('bad/inner', 0o700);
    chmodSync(path.join(dir, 'bad'), 0o777);
    symlinkSync('bad/inner', path.join(dir, 'bad-link'));
    expect(checkDirPath(path.join(dir, 'bad-link'), me).doubt?.path).toBe(path.join(dir, 'bad'));
    symlinkSync('loop', path.join(dir, 'loop'));
    expect(checkDirPath(path.join(dir, 'loop'), me).doubt?.why).toMatch(/too many symlinks/);
  });

  it('a missing directory is reported, or made 0700 and checked when asked', () => {
    expect(checkDirPath(path.join(dir, 'none/deeper'), me)).toEqual({ missing: true });
    const p = path.join(dir, 'new/one');
    expect(checkDirPath(p, me, 0o700)).toEqual({ missing: false });
    expect(statSync(p).mode & 0o7777).toBe(0o700);
    expect(statSync(path.dirname(p)).mode & 0o7777).toBe(0o700);
  });

  it('an existing directory of another user is never accepted in place of one berth makes', () => {
    made('theirs', 0o755);
    expect(checkDirPath(path.join(dir, 'theirs/mine'), stranger, 0o700).doubt?.path).toBe(dir);
  });
});

describe('files', () => {
  it('regular, a trusted owner\'s and writable by nobody else: opened and believed', () => {
    const f = path.join(dir, 'good.sqsh');
    writeFileSync(f, 'x', { mode: 0o644 });
    const opened = openTrusted(f, me);
    expect(opened && 'fd' in opened).toBe(true);
    if (opened && 'fd' in opened) closeSync(opened.fd);
    expect(openTrusted(f, stranger)).toEqual({ doubt: expect.objectContaining({ why: 'belongs to another user' }) });
    expect(openTrusted(path.join(dir, 'absent.sqsh'), me)).toBeUndefined();
  });

  it('group- or other-writable files, symlinks and FIFOs are not, and a FIFO does not hang the open', () => {
    const w = path.join(dir, 'writable.sqsh');
    writeFileSync(w, 'x');
    chmodSync(w, 0o664);
    expect(openTrusted(w, me)).toEqual({ doubt: expect.objectContaining({ why: 'can be written by other users' }) });
    const link = path.join(dir, 'link.sqsh');
    symlinkSync(path.join(dir, 'good.sqsh'), link);
    expect(openTrusted(link, me)).toEqual({ doubt: expect.objectContaining({ why: expect.stringMatching(/is a symlink/) }) });
    const fifo = path.join(dir, 'fifo.sqsh');
    expect(spawnSync('mkfifo', [fifo]).status).toBe(0);
    expect(openTrusted(fifo, me)).toEqual({ doubt: expect.objectContaining({ why: 'is not a regular file' }) });
    expect(fileDoubt(dir, lstatSync(dir), me)?.why).toBe('is not a regular file');
  });

  it('a doubt reads as one line: path, owner by name, mode in octal, why', () => {
    const w = path.join(dir, 'writable.sqsh');
    const d = fileDoubt(w, lstatSync(w), me)!;
    const name = spawnSync('id', ['-un'], { encoding: 'utf8' }).stdout.trim();
    expect(describeDoubt(d)).toBe(`${w} (owner ${name}, mode 0664) can be written by other users`);
    expect(modeText(0o41777)).toBe('1777');
  });
});

describe('found in review (#11)', () => {
  it("a symlink in a sticky directory is followed only when a trusted owner made it", () => {
    const link = path.join('/tmp', `berth-trust-link-${process.pid}`);
    symlinkSync(made('linked', 0o700), link);
    try {
      expect(checkDirPath(link, me)).toEqual({ missing: false });
      expect(checkDirPath(link, stranger).doubt).toMatchObject({ path: link, why: expect.stringMatching(/symlink made by another user/) });
    } finally {
      spawnSync('rm', ['-f', link]);
    }
  });

  it('a file with a second name (a hard link someone could have made) is not believed', () => {
    const file = path.join(made('linkdir', 0o700), 'one');
    writeFileSync(file, 'x', { mode: 0o644 });
    expect(fileDoubt(file, lstatSync(file), me)).toBeUndefined();
    spawnSync('ln', [file, path.join(dir, 'linkdir', 'two')]);
    expect(fileDoubt(file, lstatSync(file), me)?.why).toMatch(/has 2 names/);
  });
});
