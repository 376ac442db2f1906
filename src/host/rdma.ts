// What InfiniBand/RDMA binding takes from this node: the uverbs and rdma_cm devices, the host's
// libibverbs and librdmacm (found where the host's loader finds them: its ld.so cache), their
// provider plugins and /etc/libibverbs.d driver files, every library those need that a
// container cannot be assumed to have, and the fabric libraries the site lists (UCX,
// libfabric). Everything keeps its host path inside: libibverbs looks for its providers at a
// path compiled into it. Facts only: nothing is mounted here. `root` stands in for / in tests.
import { existsSync, readdirSync, realpathSync, statSync } from 'node:fs';
import path from 'node:path';
import { readLdCache, findInCache } from './ldcache.js';
import { libraryClosure, onHost } from './libraries.js';
import { emptyBinding, type HostBinding } from '../plan/types.js';

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

/**
 * `extra`: the site's rdma.libraries: sonames (found through the ld.so cache, with what they
 * need) or absolute paths (bound as they are: UCX's and libfabric's plugin directories).
 */
export function rdmaBinding(root = '/', extra: string[] = []): HostBinding {
  const b = emptyBinding();
  b.devices = rdmaDevices(root).map((d) => ({ source: onHost(root, d), target: d }));
  const cache = readLdCache(root);
  const entries: { path: string; soname: string; origin: string }[] = [];
  const providers: string[] = [];
  for (const soname of ENTRY_POINTS) {
    const found = findInCache(cache, soname);
    if (!found) continue;
    entries.push({ path: found, soname, origin: `${soname} from the host's ld.so cache` });
    if (soname !== 'libibverbs.so.1') continue;
    // Providers live beside the real file, in libibverbs/ (rdma-core's layout), each needing more.
    const realDir = path.dirname(realpathSync(onHost(root, found)));
    const providerDir = path.join('/', path.relative(path.resolve(root), realDir), 'libibverbs');
    for (const p of list(onHost(root, providerDir)).filter((n) => n.endsWith('.so'))) {
      providers.push(`${providerDir}/${p}`);
      entries.push({ path: `${providerDir}/${p}`, soname: p, origin: `provider ${p}` });
      // Some providers are links to a library of their own beside libibverbs (libmlx5.so.1, libefa.so.1).
      const real = path.join('/', path.relative(path.resolve(root), realpathSync(onHost(root, `${providerDir}/${p}`))));
      if (path.dirname(real) !== providerDir) b.binds.push({ source: onHost(root, real), target: real, origin: `rdma: ${path.basename(real)}, provider ${p}` });
    }
    if (providers.length > 0) b.binds.push({ source: onHost(root, providerDir), target: providerDir, origin: 'rdma: libibverbs provider plugins' });
  }
  for (const item of extra) {
    if (item.startsWith('/')) {
      if (existsSync(onHost(root, item))) b.binds.push({ source: onHost(root, item), target: item, origin: 'rdma: rdma.libraries' });
      continue;
    }
    const found = findInCache(cache, item);
    if (found) entries.push({ path: found, soname: item, origin: `${item} (rdma.libraries)` });
  }
  // The providers are bound with their directory; the rest one file each, at their host paths.
  for (const lib of libraryClosure(root, cache, entries)) {
    if (!providers.includes(lib.path)) b.binds.push({ source: onHost(root, lib.path), target: lib.path, origin: `rdma: ${lib.origin}` });
    if (!b.libraryPath.includes(path.dirname(lib.path))) b.libraryPath.push(path.dirname(lib.path));
  }
  b.libraryPath = b.libraryPath.filter((d) => !providers.some((p) => path.dirname(p) === d));
  const driverDir = '/etc/libibverbs.d';
  if (statSync(onHost(root, driverDir), { throwIfNoEntry: false })?.isDirectory()) {
    b.binds.push({ source: onHost(root, driverDir), target: driverDir, origin: 'rdma: provider driver files' });
  }
  b.verify = entries.map((e) => e.path);
  return b;
}
