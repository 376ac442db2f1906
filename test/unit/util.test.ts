// The small helpers that each have one home (#18): atomic file writes, sha256 of a file,
// backoff, and OpenSSH's patterns.
import { createHash } from 'node:crypto';
import { mkdirSync, readdirSync, readFileSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sshPattern } from '../../src/ssh/glob.js';
import { copyFileAtomic, writeFileAtomic } from '../../src/util/atomic-file.js';
import { backoffDelay } from '../../src/util/backoff.js';
import { sha256File } from '../../src/util/hash.js';
import { cleanup, tempDir } from '../helpers.js';

let dir: string;
beforeAll(() => {
  dir = tempDir('util');
});
afterAll(() => cleanup(dir));

describe('writeFileAtomic and copyFileAtomic', () => {
  it('replace a file whole, mode 0600 unless told, and leave no temporary file', () => {
    const file = path.join(dir, 'config.json');
    writeFileSync(file, 'old');
    writeFileAtomic(file, 'new\n');
    expect(readFileSync(file, 'utf8')).toBe('new\n');
    expect(statSync(file).mode & 0o777).toBe(0o600);
    copyFileAtomic(file, path.join(dir, 'copy.json'));
    expect(readFileSync(path.join(dir, 'copy.json'), 'utf8')).toBe('new\n');
    expect(readdirSync(dir).filter((n) => n.includes('berth-tmp'))).toEqual([]);
  });

  it('give each writer its own temporary name: two logins at once do not share one (#18)', () => {
    const file = path.join(dir, 'two.json');
    // The fixed name login.ts used: a writer that finds it (another login's, or a planted link) is not disturbed by it.
    symlinkSync('/nonexistent/elsewhere', `${file}.berth-tmp`);
    writeFileAtomic(file, 'first');
    writeFileAtomic(file, 'second');
    expect(readFileSync(file, 'utf8')).toBe('second');
    // The other file is left as it was, and nothing of these writes is left.
    expect(readdirSync(dir).filter((n) => n.startsWith('two.json.'))).toEqual(['two.json.berth-tmp']);
  });

  it('leave nothing behind when the write fails', () => {
    const sub = path.join(dir, 'sub');
    mkdirSync(sub);
    mkdirSync(path.join(sub, 'target')); // rename(2) cannot replace a directory with a file
    expect(() => writeFileAtomic(path.join(sub, 'target'), 'x')).toThrow();
    expect(readdirSync(sub)).toEqual(['target']);
  });
});

describe('sha256File', () => {
  it("hashes a file's bytes", async () => {
    const file = path.join(dir, 'blob');
    writeFileSync(file, Buffer.alloc(3 << 20, 7));
    expect(await sha256File(file)).toBe(createHash('sha256').update(readFileSync(file)).digest('hex'));
  });
});

describe('backoffDelay', () => {
  it('doubles from the first delay up to the cap, within the jitter', () => {
    const plain = { firstMs: 250, maxMs: 8000, jitter: 0 };
    expect([0, 1, 2, 5, 10].map((n) => backoffDelay(n, plain))).toEqual([250, 500, 1000, 8000, 8000]);
    for (let i = 0; i < 50; i++) {
      const d = backoffDelay(1, { ...plain, jitter: 0.25 });
      expect(d).toBeGreaterThanOrEqual(375);
      expect(d).toBeLessThanOrEqual(625);
    }
  });
});

describe('sshPattern', () => {
  it.each([
    ['*.example.com', 'node1.EXAMPLE.com', true],
    ['node?', 'node12', false],
    ['10.0.0.*', '10.0.0.7', true],
    ['10.0.0.*', '10a0b0c7', false],
    ['[host]:22', '[host]:22', true],
    ['a+b(c)', 'a+b(c)', true],
  ])('%s matches %s: %s', (pattern, text, matches) => {
    expect(sshPattern(pattern).test(text)).toBe(matches);
  });
});
