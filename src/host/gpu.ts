// What GPU binding takes from this node: the granted device nodes and the driver's user-space
// side (libraries through the host's ld.so cache, utilities, firmware), so that CUDA or ROCm
// programs in any image use the node's own driver. The lists of what makes up a driver are
// the site's to extend (gpu.* settings). Facts only; `root` stands in for / in tests.
import { existsSync, readFileSync, readdirSync, realpathSync } from 'node:fs';
import path from 'node:path';
import type { SettingTable, SettingValues } from '../config/schema.js';
import { BerthError } from '../errors.js';
import { emptyBinding, HOST_LIB_DIR, type HostBinding } from '../plan/types.js';
import type { Binding } from './bindings.js';
import { findInCache, readLdCache, type CachedLibrary } from './ldcache.js';
import { libraryClosure, onHost } from './libraries.js';

export const GPU_SETTINGS = {
  'run.gpus': {
    type: 'string', default: undefined, flag: '--gpus <which>',
    describe: "GPUs to bind in with the host's driver: all, none or device numbers (default: what the job was given; on a node without GPUs, a warning)",
  },
  'gpu.nvidia-libraries': {
    type: 'strings',
    default: ['libcuda.so', 'libcudadebugger.so', 'libnvidia-ml.so', 'libnvidia-ptxjitcompiler.so', 'libnvidia-nvvm.so',
      'libnvidia-opencl.so', 'libnvidia-cfg.so', 'libnvidia-allocator.so', 'libnvidia-gpucomp.so', 'libnvidia-pkcs11.so',
      'libnvidia-pkcs11-openssl3.so', 'libnvcuvid.so', 'libnvidia-encode.so', 'libnvidia-opticalflow.so', 'libnvidia-fbc.so',
      'libnvidia-ngx.so', 'libnvoptix.so', 'libnvidia-rtcore.so', 'libnvidia-glcore.so', 'libnvidia-tls.so', 'libnvidia-glsi.so',
      'libnvidia-glvkspirv.so', 'libnvidia-eglcore.so', 'libGLX_nvidia.so', 'libEGL_nvidia.so', 'libGLESv2_nvidia.so',
      'libGLESv1_CM_nvidia.so', 'libvdpau_nvidia.so'],
    describe: "the NVIDIA driver's user-space libraries (soname prefixes, found through the ld.so cache), as NVIDIA's container toolkit lists them",
  },
  'gpu.nvidia-binaries': {
    type: 'strings', default: ['nvidia-smi', 'nvidia-debugdump', 'nvidia-persistenced', 'nvidia-cuda-mps-control', 'nvidia-cuda-mps-server'],
    describe: 'NVIDIA utilities bound into /usr/bin',
  },
  'gpu.amd-libraries': {
    type: 'strings', default: ['libamdhip64.so', 'libhsa-runtime64.so', 'libamd_comgr.so', 'librocm_smi64.so', 'libhsakmt.so', 'libdrm_amdgpu.so'],
    describe: 'ROCm libraries (soname prefixes, found through the ld.so cache)',
  },
  'gpu.amd-binaries': {
    type: 'strings', default: ['rocm-smi', 'rocminfo'],
    describe: 'ROCm utilities bound into /usr/bin',
  },
} as const satisfies SettingTable;

/** Which GPUs: all the node has, none, or these device numbers. */
export type GpuGrant = 'all' | 'none' | number[];

/**
 * `--gpus all|none|LIST`; without it, what the job was given: Slurm's step (or job) GPUs inside a
 * Slurm job, else CUDA_VISIBLE_DEVICES or ROCR_VISIBLE_DEVICES when they hold device numbers,
 * else all (a workstation: Apptainer's --nv habit).
 */
export function gpuGrant(flag: string | undefined, env: Record<string, string | undefined>): GpuGrant {
  const parse = (value: string, from: string): GpuGrant => {
    if (value === 'all' || value === 'none') return value;
    const list = value.split(',').filter(Boolean);
    if (list.length === 0 || !list.every((v) => /^\d+$/.test(v))) {
      throw new BerthError('USAGE', `${from}=${value}: expected all, none or device numbers such as 0,1`, 'e.g. --gpus 0,1');
    }
    return list.map(Number);
  };
  if (flag !== undefined) return parse(flag, '--gpus');
  if (env.SLURM_JOB_ID) {
    const slurm = env.SLURM_STEP_GPUS ?? env.SLURM_JOB_GPUS;
    return slurm ? parse(slurm, env.SLURM_STEP_GPUS ? 'SLURM_STEP_GPUS' : 'SLURM_JOB_GPUS') : 'none';
  }
  for (const name of ['CUDA_VISIBLE_DEVICES', 'ROCR_VISIBLE_DEVICES']) {
    const v = env[name];
    if (v === undefined) continue;
    if (v === '' || v === '-1' || v === 'NoDevFiles') return 'none';
    if (/^\d+(,\d+)*$/.test(v)) return v.split(',').map(Number);
    return 'all'; // UUIDs: the runtime inside filters by them itself
  }
  return 'all';
}

const granted = (grant: GpuGrant, n: number) => grant === 'all' || (Array.isArray(grant) && grant.includes(n));

function list(dir: string): string[] {
  try {
    return readdirSync(dir).sort();
  } catch {
    return [];
  }
}

export interface GpuLists {
  libraries: readonly string[];
  binaries: readonly string[];
}

/** Cache entries named by a list entry: the exact soname, or any soname it is a prefix of up to a dot ("libnvidia-glcore.so" matches libnvidia-glcore.so.535.104.05). */
function matching(cache: CachedLibrary[], entry: string): string[] {
  const names = new Set(cache.filter((l) => l.soname === entry || l.soname.startsWith(`${entry}.`)).map((l) => l.soname));
  return [...names];
}

function driverLibraries(b: HostBinding, root: string, cache: CachedLibrary[], names: readonly string[], vendor: string): void {
  const entries = names.flatMap((n) => matching(cache, n)).map((soname) => ({ path: findInCache(cache, soname)!, soname, origin: `${soname} from the host's ld.so cache` }))
    .filter((e) => e.path);
  for (const lib of libraryClosure(root, cache, entries)) {
    b.libraries.push({ source: onHost(root, lib.path), name: lib.soname, origin: `gpu: ${vendor} ${lib.origin}` });
    b.verify.push(`${HOST_LIB_DIR}/${lib.soname}`);
  }
}

function utilities(b: HostBinding, root: string, cache: CachedLibrary[], names: readonly string[], vendor: string): void {
  for (const name of names) {
    const dir = ['/usr/bin', '/usr/local/bin', '/bin', '/usr/sbin', '/opt/rocm/bin'].find((d) => existsSync(onHost(root, `${d}/${name}`)));
    if (!dir) continue;
    b.binds.push({ source: onHost(root, `${dir}/${name}`), target: `/usr/bin/${name}`, origin: `gpu: ${vendor} utility ${name}` });
    // What a utility links beyond the driver libraries (rare) comes too.
    const have = new Set(b.libraries.map((l) => l.name));
    for (const lib of libraryClosure(root, cache, [{ path: `${dir}/${name}`, soname: name, origin: name }], (s) => have.has(s)).slice(1)) {
      b.libraries.push({ source: onHost(root, lib.path), name: lib.soname, origin: `gpu: ${lib.origin}` });
      have.add(lib.soname);
    }
  }
}

/** The driver's version, for its firmware directory: /proc/driver/nvidia/version, else libcuda's file name. */
function nvidiaDriverVersion(root: string, cache: CachedLibrary[]): string | undefined {
  try {
    const m = /Kernel Module(?: for \w+)?\s+(\d+\.\d+(?:\.\d+)?)/.exec(readFileSync(onHost(root, 'proc/driver/nvidia/version'), 'utf8'));
    if (m) return m[1];
  } catch {
    // no driver loaded here (or a test root): the library's name says it too
  }
  const libcuda = findInCache(cache, 'libcuda.so.1');
  if (!libcuda) return undefined;
  return /libcuda\.so\.(\d+\.\d+(?:\.\d+)?)$/.exec(path.basename(realpathSync(onHost(root, libcuda))))?.[1];
}

export function nvidiaBinding(root: string, grant: GpuGrant, lists: GpuLists): HostBinding | undefined {
  const nodes = list(onHost(root, 'dev')).filter((n) => /^nvidia\d+$/.test(n));
  if (nodes.length === 0 || grant === 'none') return undefined;
  const b = emptyBinding();
  const wanted = nodes.filter((n) => granted(grant, Number(n.slice(6))));
  if (Array.isArray(grant)) {
    const absent = grant.filter((n) => !nodes.includes(`nvidia${n}`));
    if (absent.length > 0) {
      throw new BerthError('USAGE', `GPU ${absent.join(', ')} is not on this node (it has ${nodes.map((n) => n.slice(6)).join(', ')})`, 'name GPUs the node has, or use --gpus all');
    }
  }
  // Only the granted GPUs, plus the control devices every CUDA program opens.
  for (const n of [...wanted, 'nvidiactl', 'nvidia-uvm', 'nvidia-uvm-tools', 'nvidia-modeset']) {
    if (existsSync(onHost(root, `dev/${n}`))) b.devices.push({ source: onHost(root, `dev/${n}`), target: `/dev/${n}` });
  }
  for (const n of list(onHost(root, 'dev/nvidia-caps'))) b.devices.push({ source: onHost(root, `dev/nvidia-caps/${n}`), target: `/dev/nvidia-caps/${n}` });
  const cache = readLdCache(root);
  driverLibraries(b, root, cache, lists.libraries, 'nvidia');
  utilities(b, root, cache, lists.binaries, 'nvidia');
  const version = nvidiaDriverVersion(root, cache);
  const firmware = `/lib/firmware/nvidia/${version}`;
  if (version && existsSync(onHost(root, firmware))) b.binds.push({ source: onHost(root, firmware), target: firmware, origin: `gpu: nvidia GSP firmware ${version}` });
  return b;
}

export function amdBinding(root: string, grant: GpuGrant, lists: GpuLists): HostBinding | undefined {
  if (!existsSync(onHost(root, 'dev/kfd')) || grant === 'none') return undefined;
  const b = emptyBinding();
  b.devices.push({ source: onHost(root, 'dev/kfd'), target: '/dev/kfd' });
  // Render nodes in order are the GPUs ROCm numbers 0, 1, ...
  const render = list(onHost(root, 'dev/dri')).filter((n) => /^renderD\d+$/.test(n)).sort((a, c) => Number(a.slice(7)) - Number(c.slice(7)));
  render.forEach((n, i) => {
    if (granted(grant, i)) b.devices.push({ source: onHost(root, `dev/dri/${n}`), target: `/dev/dri/${n}` });
  });
  const cache = readLdCache(root);
  driverLibraries(b, root, cache, lists.libraries, 'amd');
  utilities(b, root, cache, lists.binaries, 'amd');
  return b;
}

/** A GPU vendor whose devices this node has. */
interface GpuVendor {
  label: 'NVIDIA' | 'AMD';
  /** The granted devices with the driver's side (read from the ld.so cache when called). */
  bind(grant: GpuGrant): HostBinding | undefined;
}

export interface GpuFacts {
  vendors: GpuVendor[];
}

function gpuVendors(root: string, settings: SettingValues<typeof GPU_SETTINGS>): GpuVendor[] {
  const lists = (vendor: 'nvidia' | 'amd'): GpuLists => ({ libraries: settings[`gpu.${vendor}-libraries`], binaries: settings[`gpu.${vendor}-binaries`] });
  const vendors: GpuVendor[] = [];
  if (list(onHost(root, 'dev')).some((n) => /^nvidia\d+$/.test(n))) vendors.push({ label: 'NVIDIA', bind: (grant) => nvidiaBinding(root, grant, lists('nvidia')) });
  if (existsSync(onHost(root, 'dev/kfd'))) vendors.push({ label: 'AMD', bind: (grant) => amdBinding(root, grant, lists('amd')) });
  return vendors;
}

export const gpu = {
  name: 'GPU',
  settings: GPU_SETTINGS,
  facts: (root, settings) => ({ vendors: gpuVendors(root, settings) }),
  plan(facts, { settings, given, env }) {
    const grant = gpuGrant(settings['run.gpus'], env);
    const bound = facts.vendors.map((v) => v.bind(grant)).filter((b): b is HostBinding => !!b);
    // Apptainer's --nv warns and goes on, so that one job script serves CPU and GPU nodes.
    if (bound.length === 0 && given.has('run.gpus') && grant !== 'none') {
      process.stderr.write(`berth: warning: --gpus ${settings['run.gpus']}: this node has no NVIDIA (/dev/nvidia*) or AMD (/dev/kfd) GPU; the container runs without one\n`);
    }
    return bound;
  },
  doctor(facts) {
    const present = facts.vendors.flatMap((v) => {
      const b = v.bind('all');
      return b ? [{ label: v.label, b }] : [];
    });
    if (present.length === 0) return [{ name: 'GPU', verdict: 'ok', detail: 'no NVIDIA (/dev/nvidia*) or AMD (/dev/kfd) GPU on this node' }];
    const noDriver = present.find(({ b }) => b.libraries.length === 0);
    if (noDriver) {
      return [{ name: 'GPU', verdict: 'warn', detail: `${noDriver.label} devices, but none of the driver's libraries in the ld.so cache`, fix: "install the driver's user-space libraries and run ldconfig, or list them in gpu.*-libraries" }];
    }
    const found = present.map(({ label, b }) => `${label}: ${b.devices.length} devices, ${b.libraries.length} libraries, ${b.binds.length} utilities/firmware`);
    return [{ name: 'GPU', verdict: 'ok', detail: `${found.join('; ')} (bound for the GPUs a job is given; --gpus)` }];
  },
} satisfies Binding<typeof GPU_SETTINGS, GpuFacts>;
