// What InfiniBand/RDMA binding takes from this node: the uverbs and rdma_cm devices, the host's
// libibverbs and librdmacm (found where the host's loader finds them: its ld.so cache), their
// provider plugins and /etc/libibverbs.d driver files, every library those need that a
// container cannot be assumed to have, and the fabric libraries the site lists (UCX,
// libfabric). Everything keeps its host path inside: libibverbs looks for its providers at a
// path compiled into it. Facts only: nothing is mounted here. `root` stands in for / in tests.
import { existsSync, readdirSync, realpathSync, statSync } from 'node:fs';
import path from 'node:path';
import type { SettingTable } from '../config/schema.js';
import { BerthError } from '../errors.js';
import { emptyBinding, type HostBinding } from '../plan/types.js';
import type { Binding } from './bindings.js';
import { readLdCache, findInCache } from './ldcache.js';
import { libraryClosure, onHost } from './libraries.js';

export const RDMA_SETTINGS = {
  'run.rdma': {
    type: 'boolean', default: undefined, flag: '--rdma',
    describe: "bind the host's InfiniBand/RDMA stack in (default: where /dev/infiniband has devices)",
  },
  'rdma.libraries': {
    type: 'strings', default: [],
    describe: 'fabric libraries bound in with RDMA: sonames (e.g. libucp.so.0, libfabric.so.1) or absolute paths (e.g. their plugin directories)',
  },
} as const satisfies SettingTable;

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

/** The host's verbs stack, as berth binds it. */
export interface RdmaStack {
  /** libibverbs is in the ld.so cache: without it no RDMA program runs. */
  verbs: boolean;
  /** The provider plugins beside it (rdma-core's libibverbs/ directory). */
  providers: string[];
  binding: HostBinding;
}

export interface RdmaFacts {
  devices: string[];
  /** The verbs stack, read (ld.so cache, ELF headers) when asked for. */
  stack(): RdmaStack;
}

/**
 * `extra`: the site's rdma.libraries: sonames (found through the ld.so cache, with what they
 * need) or absolute paths (bound as they are: UCX's and libfabric's plugin directories).
 */
export function rdmaBinding(root = '/', extra: readonly string[] = []): HostBinding {
  return rdmaStack(root, extra).binding;
}

function rdmaStack(root: string, extra: readonly string[]): RdmaStack {
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
  return { verbs: entries.some((e) => e.soname === 'libibverbs.so.1'), providers, binding: b };
}

export const rdma = {
  name: 'RDMA',
  settings: RDMA_SETTINGS,
  facts: (root, settings) => ({ devices: rdmaDevices(root), stack: () => rdmaStack(root, settings['rdma.libraries']) }),
  plan(facts, { settings }) {
    // Unset: bound where the node has devices; --rdma: bound, or refused where it cannot be.
    const wanted = settings['run.rdma'];
    if (wanted === false || (wanted === undefined && facts.devices.length === 0)) return [];
    const stack = facts.stack();
    if (wanted && !stack.verbs) {
      throw new BerthError('HOST_MISSING', '--rdma: this node has no libibverbs in its ld.so cache', 'install rdma-core (libibverbs) on the node, or leave out --rdma');
    }
    return [stack.binding];
  },
  doctor(facts) {
    if (facts.devices.length === 0) return [{ name: 'RDMA', verdict: 'ok', detail: 'no /dev/infiniband devices: nothing is bound unless --rdma' }];
    const { verbs, providers, binding } = facts.stack();
    if (!verbs) {
      return [{ name: 'RDMA', verdict: 'fail', detail: `${facts.devices.length} devices, but no libibverbs in the ld.so cache`, fix: 'install rdma-core (libibverbs1, ibverbs-providers) and run ldconfig' }];
    }
    return [{ name: 'RDMA', verdict: 'ok', detail: `bound by default: ${facts.devices.length} devices, ${binding.binds.length} libraries and directories, ${providers.length} providers` }];
  },
} satisfies Binding<typeof RDMA_SETTINGS, RdmaFacts>;
