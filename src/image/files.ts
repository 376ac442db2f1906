// Reading an image's files without mounting it (the native addon, over libsquashfuse): MPI
// and GPU binding check the image's C library and MPI before any container starts. Symlinks
// resolve inside the image, as they would in the container, never on the host.
import { closeSync, constants, fstatSync, lstatSync, openSync, readdirSync, readFileSync, readlinkSync } from 'node:fs';
import path from 'node:path';
import { BerthError, errnoOf } from '../errors.js';
import { readElf, type ElfInfo } from '../host/elf.js';
import { findInCache, parseLdCache, type CachedLibrary } from '../host/ldcache.js';
import { loadAddon, type SquashfsEntry, type SquashfsImageHandle } from '../runtime/native.js';

/** Where an image's loader looks when the image has no /etc/ld.so.cache. */
const DEFAULT_LIB_DIRS: Record<string, string[]> = {
  x86_64: ['/lib/x86_64-linux-gnu', '/usr/lib/x86_64-linux-gnu', '/lib64', '/usr/lib64', '/lib', '/usr/lib'],
  aarch64: ['/lib/aarch64-linux-gnu', '/usr/lib/aarch64-linux-gnu', '/lib64', '/usr/lib64', '/lib', '/usr/lib'],
};

/** Where an image's files are: a squashfs in a file (at an offset in a SIF), or a root directory. */
export interface ImageLocation {
  path: string;
  format: 'squashfs' | 'directory';
  /** Where the squashfs starts in the file; 0 but for a SIF's partition. */
  offset: number;
}

/** A root directory read as the addon reads a squashfs: paths are looked up below it, never followed out. */
class DirectoryImage implements SquashfsImageHandle {
  constructor(private readonly root: string) {}

  private at(p: string): string {
    return path.join(this.root, path.posix.normalize(`/${p}`));
  }

  lstat(p: string): SquashfsEntry | null {
    try {
      const st = lstatSync(this.at(p));
      const type = st.isFile() ? 'file' : st.isDirectory() ? 'dir' : st.isSymbolicLink() ? 'symlink'
        : st.isCharacterDevice() ? 'char' : st.isBlockDevice() ? 'block' : st.isFIFO() ? 'fifo' : 'socket';
      return { type, mode: st.mode & 0o7777, size: st.isFile() ? st.size : 0, ...(type === 'symlink' ? { target: readlinkSync(this.at(p)) } : {}) };
    } catch (e: unknown) {
      if (['ENOENT', 'ENOTDIR'].includes(errnoOf(e) ?? '')) return null;
      throw new BerthError('SOURCE_INVALID', `cannot read ${p} in the image directory ${this.root}: ${(e as Error).message}`, 'check the permissions of the image directory');
    }
  }

  read(p: string): Buffer {
    // No symlink is followed here (ImageFiles resolved them inside the image), nor a FIFO opened for good.
    const fd = openSync(this.at(p), constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
    try {
      if (!fstatSync(fd).isFile()) throw new Error(`${p} is not a regular file`);
      return readFileSync(fd);
    } finally {
      closeSync(fd);
    }
  }

  list(p: string): string[] | null {
    return this.lstat(p)?.type === 'dir' ? readdirSync(this.at(p)) : null;
  }

  close(): void {}
}

export class ImageFiles {
  private readonly handle: SquashfsImageHandle;
  private cache: CachedLibrary[] | null | undefined;
  private readonly elves = new Map<string, ElfInfo | undefined>();
  readonly image: string;

  constructor(location: ImageLocation, readonly machine = 'x86_64') {
    this.image = location.path;
    try {
      this.handle = location.format === 'directory' ? new DirectoryImage(location.path) : new (loadAddon().SquashfsImage)(location.path, location.offset);
    } catch (e: unknown) {
      if (e instanceof BerthError) throw e;
      throw new BerthError('SOURCE_INVALID', `cannot read the image ${(e as Error).message}`, 'the file is damaged or is not an image: convert it again, or copy it again');
    }
  }

  /** The names in a directory of the image (symlinks resolved inside), or undefined. */
  list(p: string): string[] | undefined {
    const real = this.realpath(p);
    return (real && this.handle.list(real)) || undefined;
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
    try {
      return this.handle.read(real);
    } catch (e: unknown) {
      throw new BerthError('SOURCE_INVALID', `cannot read ${p} in the image ${this.image}: ${(e as Error).message}`, 'check the image (convert it again, or fix the permissions of its files)');
    }
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
