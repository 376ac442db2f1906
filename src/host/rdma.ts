// What InfiniBand/RDMA binding needs from this node: the uverbs and rdma_cm devices, the host's
// libibverbs and librdmacm (found where the host's loader finds them: its ld.so cache), their
// provider plugins and /etc/libibverbs.d driver files, and every library those need that a
// container cannot be assumed to have. Facts only: nothing is mounted here. `root` stands in
// for / in tests (a tree with an `ldconfig -r` cache).
import { readdirSync, realpathSync, statSync } from 'node:fs';
import path from 'node:path';
import { readElf } from './elf.js';
import { findInCache, readLdCache, type CachedLibrary } from './ldcache.js';

export interface RdmaFacts {
  /** Container paths of the character devices (/dev/infiniband/uverbs0, rdma_cm, ...). */
  devices: string[];
  /** Host files to bind at the same path inside, with why each is there. */
  files: { path: string; origin: string }[];
  /** Directories bound whole: the provider plugins and the driver files. */
  dirs: { path: string; origin: string }[];
}

/** The C library and the loader: every image has its own, and they must stay its own. */
const IMAGE_OWN = /^(libc\.so|libm\.so|libpthread\.so|libdl\.so|librt\.so|ld-linux|libgcc_s\.so|libstdc\+\+\.so)/;

const ENTRY_POINTS = ['libibverbs.so.1', 'librdmacm.so.1'];

function list(dir: string): string[] {
  try {
    return readdirSync(dir).sort();
  } catch {
    return [];
  }
}

export function rdmaDevices(root = '/'): string[] {
  return list(path.join(root, 'dev/infiniband')).map((n) => `/dev/infiniband/${n}`);
}

export function rdmaFacts(root = '/'): RdmaFacts {
  const cache: CachedLibrary[] = readLdCache(root);
  const files = new Map<string, string>();
  const seen = new Set<string>();
  // A library and, through DT_NEEDED, what it needs (the ldd closure, without running ldd).
  const add = (hostPath: string, origin: string) => {
    if (seen.has(hostPath)) return;
    seen.add(hostPath);
    files.set(hostPath, origin);
    for (const soname of readElf(path.join(root, hostPath)).needed) {
      if (IMAGE_OWN.test(soname)) continue;
      const dep = findInCache(cache, soname);
      if (dep) add(dep, `rdma: ${soname}, needed by ${path.basename(hostPath)}`);
    }
  };
  const dirs: RdmaFacts['dirs'] = [];
  for (const soname of ENTRY_POINTS) {
    const found = findInCache(cache, soname);
    if (!found) continue;
    add(found, `rdma: ${soname} from the host's ld.so cache`);
    if (soname === 'libibverbs.so.1') {
      // Providers live beside the real file, in libibverbs/ (rdma-core's build layout).
      const realDir = path.dirname(realpathSync(path.join(root, found)));
      const providerDir = path.join('/', path.relative(path.resolve(root), realDir), 'libibverbs');
      const providers = list(path.join(root, providerDir)).filter((n) => n.endsWith('.so'));
      if (providers.length > 0) {
        dirs.push({ path: providerDir, origin: 'rdma: libibverbs provider plugins' });
        for (const p of providers) {
          for (const soname2 of readElf(path.join(root, providerDir, p)).needed) {
            if (IMAGE_OWN.test(soname2) || ENTRY_POINTS.includes(soname2)) continue;
            const dep = findInCache(cache, soname2);
            if (dep) add(dep, `rdma: ${soname2}, needed by provider ${p}`);
          }
        }
      }
    }
  }
  const driverDir = '/etc/libibverbs.d';
  if (statSync(path.join(root, driverDir), { throwIfNoEntry: false })?.isDirectory()) {
    dirs.push({ path: driverDir, origin: 'rdma: provider driver files' });
  }
  return { devices: rdmaDevices(root), files: [...files].map(([p, origin]) => ({ path: p, origin })), dirs };
}
