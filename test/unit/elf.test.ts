// The ELF reader and the ld.so cache reader, each against the real tool that reads the same
// files (readelf from binutils, ldconfig from glibc).
import { spawnSync } from 'node:child_process';
import { copyFileSync, mkdirSync, realpathSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readElf } from '../../src/host/elf.js';
import { findInCache, readLdCache } from '../../src/host/ldcache.js';
import { cleanup, tempDir } from '../helpers.js';

const libc = realpathSync('/lib/x86_64-linux-gnu/libc.so.6');
const libz = realpathSync('/lib/x86_64-linux-gnu/libz.so.1');
const readelf = (...args: string[]) => spawnSync('readelf', ['-W', ...args], { encoding: 'utf8' }).stdout;

describe('readElf, as readelf -d and -V see it', () => {
  it.each([['/bin/ls'], [libz], ['/usr/bin/python3']])('%s: needed libraries and soname', (file) => {
    const info = readElf(file);
    const dyn = readelf('-d', file);
    expect(info.needed).toEqual([...dyn.matchAll(/\(NEEDED\)\s+Shared library: \[([^\]]+)\]/g)].map((m) => m[1]));
    expect(info.soname).toBe(/\(SONAME\)\s+Library soname: \[([^\]]+)\]/.exec(dyn)?.[1]);
    expect(info.machine).toBe('x86_64');
  });

  it('the symbol versions a program needs, and those libc defines', () => {
    const ls = readElf('/bin/ls');
    const needed = [...readelf('-V', '/bin/ls').matchAll(/Name: (GLIBC_[\d.]+)\s+Flags/g)].map((m) => m[1]);
    expect(ls.versionsNeeded.get('libc.so.6')?.sort()).toEqual([...new Set(needed)].sort());
    const defined = readElf(libc).versionsDefined;
    expect(defined).toContain('GLIBC_2.2.5');
    expect(defined).toContain('GLIBC_2.34');
    expect(defined.every((v) => /^GLIBC_/.test(v))).toBe(true);
  });

  it('refuses what is not ELF', () => {
    expect(() => readElf('/etc/hostname')).toThrow(/not a readable ELF library/);
  });
});

describe('readLdCache', () => {
  let root: string;
  beforeAll(() => {
    root = tempDir('ldcache');
    mkdirSync(path.join(root, 'opt/vendor/lib'), { recursive: true });
    mkdirSync(path.join(root, 'etc'), { recursive: true });
    copyFileSync(libz, path.join(root, 'opt/vendor/lib', path.basename(libz)));
    writeFileSync(path.join(root, 'etc/ld.so.conf'), '/opt/vendor/lib\n');
  });
  afterAll(() => cleanup(root));

  it("agrees with ldconfig -p on this machine's cache", () => {
    const cache = readLdCache('/');
    const listed = [...spawnSync('/sbin/ldconfig', ['-p'], { encoding: 'utf8' }).stdout.matchAll(/^\s+(\S+) \(libc6,x86-64[^)]*\) => (\S+)$/gm)];
    expect(listed.length).toBeGreaterThan(10);
    for (const [, soname] of listed.slice(0, 50)) expect(findInCache(cache, soname!)).toBeDefined();
    expect(findInCache(cache, 'libc.so.6')).toMatch(/libc\.so\.6$/);
  });

  it('reads a cache that ldconfig -r made for a host root of our own', () => {
    const r = spawnSync('/sbin/ldconfig', ['-r', root, '-C', '/etc/ld.so.cache', '-f', '/etc/ld.so.conf'], { encoding: 'utf8' });
    expect(r.status, r.stderr).toBe(0);
    expect(findInCache(readLdCache(root), 'libz.so.1')).toBe('/opt/vendor/lib/libz.so.1');
    expect(findInCache(readLdCache(root), 'libnothing.so.9')).toBeUndefined();
  });
});
