// Reading an image's files without mounting it (the native addon, over libsquashfuse): MPI
// and GPU binding check the image's C library and MPI before any container starts. Symlinks
// resolve inside the image, as they would in the container, never on the host.
import path from 'node:path';
import { BerthError } from '../errors.js';
import { readElf, type ElfInfo } from '../host/elf.js';
import { findInCache, parseLdCache, type CachedLibrary } from '../host/ldcache.js';
import { loadAddon, type SquashfsImageHandle } from '../runtime/native.js';

/** Where an image's loader looks when the image has no /etc/ld.so.cache. */
const DEFAULT_LIB_DIRS: Record<string, string[]> = {
  x86_64: ['/lib/x86_64-linux-gnu', '/usr/lib/x86_64-linux-gnu', '/lib64', '/usr/lib64', '/lib', '/usr/lib'],
  aarch64: ['/lib/aarch64-linux-gnu', '/usr/lib/aarch64-linux-gnu', '/lib64', '/usr/lib64', '/lib', '/usr/lib'],
};

export class ImageFiles {
  private readonly handle: SquashfsImageHandle;
  private cache: CachedLibrary[] | null | undefined;
  private readonly elves = new Map<string, ElfInfo | undefined>();

  constructor(readonly image: string, readonly machine = 'x86_64') {
    try {
      this.handle = new (loadAddon().SquashfsImage)(image);
    } catch (e: unknown) {
      if (e instanceof BerthError) throw e;
      throw new BerthError('SOURCE_INVALID', `cannot read ${image}: ${(e as Error).message}`, 'check that it is an image made by berth convert or pull');
    }
  }

  /** The path with every symlink resolved inside the image, or undefined if it does not exist. */
  realpath(p: string): string | undefined {
    const pending = p.split('/').filter(Boolean);
    let resolved = '';
    for (let hops = 0; pending.length > 0;) {
      const name = pending.shift()!;
      if (name === '.') continue;
      if (name === '..') {
        resolved = path.posix.dirname(resolved || '/').replace(/^\/$/, '');
        continue;
      }
      const here = `${resolved}/${name}`;
      const entry = this.handle.lstat(here);
      if (!entry) return undefined;
      if (entry.type !== 'symlink') {
        resolved = here;
        continue;
      }
      if (++hops > 40) return undefined; // a loop: the kernel would say ELOOP
      const target = entry.target ?? '';
      if (target.startsWith('/')) resolved = '';
      pending.unshift(...target.split('/').filter(Boolean));
    }
    return resolved || '/';
  }

  read(p: string): Buffer | undefined {
    const real = this.realpath(p);
    if (!real || this.handle.lstat(real)?.type !== 'file') return undefined;
    return this.handle.read(real);
  }

  /**
   * Where the image's loader finds `soname`: its ld.so.cache, else the default directories.
   * Gives the path the loader opens and the real file behind it (whose name carries the version).
   */
  findLibrary(soname: string): { path: string; real: string } | undefined {
    if (this.cache === undefined) {
      const data = this.read('/etc/ld.so.cache');
      this.cache = data ? parseLdCache(data, `${this.image}:/etc/ld.so.cache`) : null;
    }
    const candidates = [
      ...(this.cache ? [findInCache(this.cache, soname, this.machine)].filter((p): p is string => !!p) : []),
      ...(DEFAULT_LIB_DIRS[this.machine] ?? []).map((d) => `${d}/${soname}`),
    ];
    for (const p of candidates) {
      const real = this.realpath(p);
      if (real && this.handle.lstat(real)?.type === 'file') return { path: p, real };
    }
    return undefined;
  }

  /** The ELF facts of the image's copy of `soname`, or undefined when the image has none. */
  library(soname: string): ElfInfo | undefined {
    if (!this.elves.has(soname)) {
      const found = this.findLibrary(soname);
      this.elves.set(soname, found ? readElf(this.handle.read(found.real), `${this.image}:${found.real}`) : undefined);
    }
    return this.elves.get(soname);
  }

  close(): void {
    this.handle.close();
  }
}
