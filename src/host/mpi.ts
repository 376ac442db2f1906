// `--mpi`: the container's MPI is swapped for the node's, for the MPICH ABI family (MPICH, Cray
// MPICH, Intel MPI, MVAPICH), whose libraries share the libmpi.so.12 / libmpich.so.12 ABI.
// As Sarus does, the swap is refused unless the ABI versions agree: the same major, and a
// host minor no older than the image's (unless the site allows it). The host library's own
// dependencies come from its DT_NEEDED (RUNPATH, then the ld.so cache) and are checked against
// the image's C library by symbol version, all before anything is mounted.
import { existsSync, realpathSync } from 'node:fs';
import path from 'node:path';
import type { SettingTable } from '../config/schema.js';
import { BerthError, isBerthError, messageOf } from '../errors.js';
import type { ImageFiles } from '../image/files.js';
import { emptyBinding, HOST_LIB_DIR, type HostBinding } from '../plan/types.js';
import type { Binding } from './bindings.js';
import { readElf } from './elf.js';
import { findInCache, readLdCache } from './ldcache.js';
import { checkAgainstImage, fileVersion, libraryClosure, onHost } from './libraries.js';

export const MPI_SETTINGS = {
  'run.mpi': {
    type: 'boolean', default: false, flag: '--mpi',
    describe: "replace the image's MPICH-ABI MPI with the host's (see mpi.library)",
  },
  'mpi.library': {
    type: 'path', default: undefined,
    describe: "the host MPI's main library for --mpi (default: libmpi.so.12 or libmpich.so.12 from the ld.so cache)",
  },
  'mpi.allow-older-minor': {
    type: 'boolean', default: false,
    describe: "let --mpi use a host MPI whose ABI minor version is older than the image's",
  },
} as const satisfies SettingTable;

/** The ABI's main library under its two names (Debian's MPICH ships libmpich.so.12 only). */
export const MPICH_ABI = ['libmpi.so.12', 'libmpich.so.12'];
/** The ABI's language bindings, swapped too where both sides have them. */
const COMPANIONS = ['libmpicxx.so.12', 'libmpichcxx.so.12', 'libmpifort.so.12', 'libmpichfort.so.12'];
const FAMILY = new Set([...MPICH_ABI, ...COMPANIONS]);
/** Plugin directories that libraries look for beside themselves. */
const PLUGIN_DIRS: Record<string, string> = { 'libucs.so.0': 'ucx', 'libfabric.so.1': 'libfabric' };
/** Where a Slurm step's PMIx server keeps its sockets: the tasks must reach them. */
const PMI_DIR_VARS = ['PMIX_SERVER_TMPDIR', 'PMIX_SYSTEM_TMPDIR'];

export interface MpiSettings {
  /** mpi.library: the host MPI's main library; default: the ld.so cache's libmpi.so.12 or libmpich.so.12. */
  library?: string;
  /** mpi.allow-older-minor: accept a host MPI whose minor version is older than the image's. */
  allowOlderMinor: boolean;
}

const versionOf = (v: number[]) => v.join('.');

/** The host's MPI: the library as named (a link, maybe), the file it is, and its ABI version. */
export interface HostMpi {
  path: string;
  real: string;
  version: number[];
}

export interface MpiFacts {
  root: string;
  settings: MpiSettings;
  /** The host's MPI, found when asked for; throws HOST_MISSING where there is none. */
  host(): HostMpi;
}

export function hostMpi(root: string, settings: Pick<MpiSettings, 'library'>): HostMpi {
  let p = settings.library;
  if (!p) {
    const cache = readLdCache(root);
    p = MPICH_ABI.map((n) => findInCache(cache, n)).find(Boolean);
    if (!p) {
      throw new BerthError('HOST_MISSING', "--mpi: this node's ld.so cache has no MPICH-ABI MPI (libmpi.so.12 or libmpich.so.12)",
        'set mpi.library in /etc/berth/config.yaml to the host MPI (e.g. /opt/cray/pe/mpich/default/ofi/gnu/lib/libmpi.so.12), or load its module first');
    }
  } else if (!existsSync(onHost(root, p))) {
    throw new BerthError('HOST_MISSING', `mpi.library ${p} does not exist on this node`, 'fix mpi.library in the site or user configuration');
  }
  const real = path.join('/', path.relative(path.resolve(root), realpathSync(onHost(root, p))));
  return { path: p, real, version: fileVersion(real) };
}

export function mpiBinding(facts: MpiFacts, image: ImageFiles, env: Record<string, string | undefined>): HostBinding {
  const { root, settings } = facts;
  const host = facts.host();
  const inImage = MPICH_ABI.map((name) => ({ name, found: image.findLibrary(name) })).filter((c) => c.found);
  if (inImage.length === 0) {
    const openMpi = image.findLibrary('libmpi.so.40');
    throw new BerthError('MPI_ABI_MISMATCH', `--mpi: the image has no MPICH-ABI MPI (libmpi.so.12 or libmpich.so.12) to replace`,
      openMpi ? "the image uses Open MPI, whose ABI differs: run it without --mpi (the image's Open MPI with the host's PMIx and fabric; see the README)"
        : 'build the image with MPICH (or Intel MPI, MVAPICH) so that the host MPI can take its place, or run without --mpi');
  }
  for (const c of inImage) {
    const mine = fileVersion(c.found!.real);
    const why = host.version[0] !== mine[0] ? 'different major versions'
      : host.version[1]! < mine[1]! && !settings.allowOlderMinor ? "the host's minor version is older" : undefined;
    if (why) {
      throw new BerthError('MPI_ABI_MISMATCH',
        `--mpi: the host's MPI ${host.real} (ABI ${versionOf(host.version)}) cannot replace the image's ${c.found!.real} (ABI ${versionOf(mine)}): ${why}`,
        why.includes('major') ? 'use a host MPI of the same ABI family and major version, or run without --mpi'
          : 'use an image built against an older MPI, or let the site set mpi.allow-older-minor: true');
    }
  }
  const cache = readLdCache(root);
  const libs = libraryClosure(root, cache, [{ path: host.path, soname: path.basename(host.path), origin: 'the host MPI' }], (s) => FAMILY.has(s));
  // The companions the host has beside its MPI, for those the image has.
  const companions = COMPANIONS.filter((n) => image.findLibrary(n)).map((n) => ({ n, p: [path.join(path.dirname(host.path), n)].find((c) => existsSync(onHost(root, c))) ?? findInCache(cache, n) }))
    .filter((c): c is { n: string; p: string } => !!c.p);
  const companionLibs = companions.map((c) => ({ path: c.p, soname: c.n, origin: `the host MPI's ${c.n}`, elf: readElf(onHost(root, c.p)) }));
  checkAgainstImage('--mpi', [...libs, ...companionLibs], (s) => image.library(s));

  const b = emptyBinding();
  for (const c of inImage) {
    // Under the image's name (programs need that soname), and over the image's own file, for
    // programs whose RPATH names the image's directory before LD_LIBRARY_PATH.
    b.libraries.push({ source: onHost(root, host.path), name: c.name, origin: `mpi: the host MPI ${host.real} as ${c.name}` });
    b.binds.push({ source: onHost(root, host.path), target: c.found!.real, origin: `mpi: the host MPI over the image's ${c.found!.real}` });
    b.verify.push(`${HOST_LIB_DIR}/${c.name}`);
  }
  for (const c of companionLibs) {
    b.libraries.push({ source: onHost(root, c.path), name: c.soname, origin: `mpi: ${c.origin}` });
    b.binds.push({ source: onHost(root, c.path), target: image.findLibrary(c.soname)!.real, origin: `mpi: ${c.origin} over the image's` });
  }
  for (const lib of libs.slice(1)) {
    b.libraries.push({ source: onHost(root, lib.path), name: lib.soname, origin: `mpi: ${lib.origin}` });
    const plugins = PLUGIN_DIRS[lib.soname] && path.join(path.dirname(realpathSync(onHost(root, lib.path))), PLUGIN_DIRS[lib.soname]!);
    if (plugins && existsSync(plugins)) b.binds.push({ source: plugins, target: `${HOST_LIB_DIR}/${PLUGIN_DIRS[lib.soname]}`, origin: `mpi: ${lib.soname}'s plugins` });
  }
  for (const v of PMI_DIR_VARS) {
    const dir = env[v];
    if (dir?.startsWith('/') && existsSync(dir)) b.binds.push({ source: dir, target: dir, origin: `mpi: $${v} (PMIx sockets)`, writable: true });
  }
  return b;
}

export const mpi = {
  name: 'MPI',
  settings: MPI_SETTINGS,
  facts(root, settings) {
    const mine: MpiSettings = { library: settings['mpi.library'], allowOlderMinor: settings['mpi.allow-older-minor'] };
    return { root, settings: mine, host: () => hostMpi(root, mine) };
  },
  plan: (facts, { settings, image, env }) => (settings['run.mpi'] ? [mpiBinding(facts, image.files(), env)] : []),
  doctor(facts) {
    try {
      const host = facts.host();
      return [{ name: 'MPI', verdict: 'ok', detail: `--mpi would use ${host.real} (MPICH ABI ${versionOf(host.version)})` }];
    } catch (e: unknown) {
      // A node without MPI is fine for most jobs: a warning, with what --mpi would need.
      return [{ name: 'MPI', verdict: 'warn', detail: messageOf(e), fix: isBerthError(e) ? e.hint : undefined }];
    }
  },
} satisfies Binding<typeof MPI_SETTINGS, MpiFacts>;
