// Reads the host's loader cache (/etc/ld.so.cache, written by ldconfig), so that libraries are
// found where the host's own loader finds them, without running ldconfig -p. Takes a root, so
// tests and `--root` can point it at a tree of their own (made with `ldconfig -r ROOT`).
// Format: glibc's elf/cache.c, "glibc-ld.so.cache" "1.1": a 48-byte header, then 24-byte
// entries whose key (soname) and value (path) are offsets from the header's start.
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { BerthError } from '../errors.js';

export interface CachedLibrary {
  soname: string;
  path: string;
  /** glibc's FLAG_* bits: the low byte the library type, the next the architecture. */
  flags: number;
}

const MAGIC = 'glibc-ld.so.cache1.1';
/** FLAG_ELF_LIBC6 with the architecture flag of the usual 64-bit ABI of each machine. */
const ARCH_FLAGS: Record<string, number> = { x86_64: 0x0303, aarch64: 0x0a03, ppc64: 0x0503 };

export function readLdCache(root = '/'): CachedLibrary[] {
  const file = path.join(root, 'etc/ld.so.cache');
  let data: Buffer;
  try {
    data = readFileSync(file);
  } catch (e: unknown) {
    throw new BerthError('SOURCE_INVALID', `cannot read ${file}: ${(e as Error).message}`, 'run ldconfig on the node (as root) to create it');
  }
  return parseLdCache(data, file);
}

/** The entries of an ld.so.cache file's bytes (the host's, or an image's). */
export function parseLdCache(data: Buffer, file: string): CachedLibrary[] {
  // Old caches put an "ld.so-1.7.0" table first; the new one follows it, 8-byte aligned.
  const start = data.indexOf(MAGIC);
  if (start === -1) throw new BerthError('SOURCE_INVALID', `${file} is not a glibc ld.so cache in the 1.1 format`, 'run ldconfig on the node to rebuild it');
  const nlibs = data.readUInt32LE(start + 20);
  const str = (offset: number) => {
    const at = start + offset;
    return data.toString('utf8', at, data.indexOf(0, at));
  };
  const libs: CachedLibrary[] = [];
  for (let i = 0; i < nlibs; i++) {
    const e = start + 48 + i * 24;
    libs.push({ flags: data.readInt32LE(e), soname: str(data.readUInt32LE(e + 4)), path: str(data.readUInt32LE(e + 8)) });
  }
  return libs;
}

/** Where the loader of `machine` would find `soname`: the cache's first entry of that ABI. */
export function findInCache(cache: CachedLibrary[], soname: string, machine = 'x86_64'): string | undefined {
  const want = ARCH_FLAGS[machine];
  return cache.find((l) => l.soname === soname && (want === undefined || l.flags === want))?.path;
}
