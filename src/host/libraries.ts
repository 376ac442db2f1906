// Host libraries that berth injects into containers (RDMA, MPI, GPU drivers), and what they
// need: the DT_NEEDED closure found as the host's loader would find it (RUNPATH, then the
// ld.so cache), never by running ldd on host files. The C library and its companions stay the
// image's own; instead every injected library's symbol versions from them are checked against
// the image's copies before anything is mounted (checkAgainstImage).
import path from 'node:path';
import { BerthError } from '../errors.js';
import { readElf, type ElfInfo } from './elf.js';
import { findInCache, type CachedLibrary } from './ldcache.js';

/** The C library, the loader and the compiler runtimes: every image has its own, and they must stay its own. */
export const IMAGE_OWN = /^(libc\.so|libm\.so|libpthread\.so|libdl\.so|librt\.so|libutil\.so|libresolv\.so|ld-linux|libgcc_s\.so|libstdc\+\+\.so)/;

export interface HostLibrary {
  /** Host path (without the host root). */
  path: string;
  soname: string;
  origin: string;
  elf: ElfInfo;
}

/** Host root + host path: where a host file really is. */
export const onHost = (root: string, p: string) => path.join(root, p);

/**
 * The libraries `entries` need, transitively, as the loader would find them: the needer's
 * RUNPATH/RPATH ($ORIGIN expanded), then the host's ld.so cache. Sonames for which `skip` is
 * true are left out (the image's own, or ones a caller binds itself). Entries come first.
 */
export function libraryClosure(root: string, cache: CachedLibrary[], entries: { path: string; soname: string; origin: string }[],
  skip: (soname: string) => boolean = () => false): HostLibrary[] {
  const out = new Map<string, HostLibrary>();
  const visit = (p: string, soname: string, origin: string) => {
    if (out.has(soname)) return;
    const elf = readElf(onHost(root, p));
    out.set(soname, { path: p, soname, origin, elf });
    for (const needed of elf.needed) {
      if (IMAGE_OWN.test(needed) || skip(needed) || out.has(needed)) continue;
      const found = findNeeded(root, cache, p, elf, needed);
      if (found) visit(found, needed, `${needed}, needed by ${path.basename(p)}`);
    }
  };
  for (const e of entries) visit(e.path, e.soname, e.origin);
  return [...out.values()];
}

function findNeeded(root: string, cache: CachedLibrary[], needer: string, elf: ElfInfo, soname: string): string | undefined {
  const origin = path.dirname(needer);
  for (const dir of [...elf.rpath, ...elf.runpath]) {
    const candidate = path.join(dir.replace(/\$(ORIGIN|\{ORIGIN\})/g, origin), soname);
    try {
      readElf(onHost(root, candidate));
      return candidate;
    } catch {
      // not there: the next directory, then the cache
    }
  }
  return findInCache(cache, soname);
}

/** Major, minor, patch of a library file name such as libmpi.so.12.1.5 (missing parts are 0). */
export function fileVersion(file: string): number[] {
  const m = /\.so\.(\d+(?:\.\d+)*)$/.exec(path.basename(file));
  const parts = m ? m[1]!.split('.').map(Number) : [];
  return [parts[0] ?? 0, parts[1] ?? 0, parts[2] ?? 0];
}

/**
 * Every symbol version an injected library needs from the image's own C library (and libm,
 * libstdc++, ...) must be defined by the image's copy, or the container fails at its first
 * call; refuse before anything is mounted, naming both sides. `imageLib` reads the image's
 * copy of a soname (undefined when the image has none).
 */
export function checkAgainstImage(what: string, libs: HostLibrary[], imageLib: (soname: string) => ElfInfo | undefined): void {
  for (const lib of libs) {
    for (const [soname, versions] of lib.elf.versionsNeeded) {
      if (!IMAGE_OWN.test(soname)) continue;
      const own = imageLib(soname);
      if (!own) {
        throw new BerthError('HOST_INCOMPATIBLE', `${what}: the host's ${lib.soname} needs ${soname}, which the image does not have`,
          `use an image with a C library (${soname}), or leave out the ${what} binding`);
      }
      const missing = versions.filter((v) => !own.versionsDefined.includes(v));
      if (missing.length > 0) {
        const newest = newestVersion(own.versionsDefined.filter((v) => v.startsWith(missing[0]!.replace(/_[\d.]+$/, '_'))));
        throw new BerthError('HOST_INCOMPATIBLE',
          `${what}: the host's ${lib.soname} (${lib.path}) needs ${missing.join(', ')} from ${soname}, but the image's ${soname} ${newest ? `goes up to ${newest}` : 'has none of those versions'}`,
          'use an image built on a newer distribution (a newer glibc), or a host library built for an older one');
      }
    }
  }
}

function newestVersion(versions: string[]): string | undefined {
  const key = (v: string) => (/_([\d.]+)$/.exec(v)?.[1] ?? '0').split('.').map(Number);
  return [...versions].sort((a, b) => {
    const [x, y] = [key(a), key(b)];
    for (let i = 0; i < Math.max(x.length, y.length); i++) if ((x[i] ?? 0) !== (y[i] ?? 0)) return (x[i] ?? 0) - (y[i] ?? 0);
    return 0;
  }).at(-1);
}
