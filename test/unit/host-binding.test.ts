// GPU, CDI and library discovery on a host root the test builds (test/host-root.ts), the glibc
// check on libraries made with gcc, and how bindings become plan ops. The same bindings run
// for real in test/integration/host-binding.test.ts.
import { spawnSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cdiBinding } from '../../src/host/cdi.js';
import { readElf } from '../../src/host/elf.js';
import { amdBinding, gpuGrant, nvidiaBinding } from '../../src/host/gpu.js';
import { checkAgainstImage, fileVersion, type HostLibrary } from '../../src/host/libraries.js';
import { buildPlan, type HostFacts } from '../../src/plan/build.js';
import { emptyBinding, HOST_LIB_DIR } from '../../src/plan/types.js';
import { SETTINGS } from '../../src/config/schema.js';
import { cleanup, tempDir } from '../helpers.js';
import { DRIVER, LIB, makeGpuRoot } from '../host-root.js';

const IMAGE = { path: '/i', format: 'squashfs', offset: 0 } as const;

let root: string;
const lists = { libraries: [...SETTINGS['gpu.nvidia-libraries'].default], binaries: [...SETTINGS['gpu.nvidia-binaries'].default] };
beforeAll(() => {
  root = makeGpuRoot(tempDir('gpu-root'));
});
afterAll(() => cleanup(root));

describe('gpuGrant', () => {
  it('takes --gpus first, then Slurm, then CUDA_VISIBLE_DEVICES/ROCR_VISIBLE_DEVICES, else all', () => {
    expect(gpuGrant('1,3', { SLURM_JOB_ID: '5', SLURM_STEP_GPUS: '0' })).toEqual([1, 3]);
    expect(gpuGrant('none', {})).toBe('none');
    expect(gpuGrant(undefined, { SLURM_JOB_ID: '5', SLURM_STEP_GPUS: '2,3', CUDA_VISIBLE_DEVICES: '0,1' })).toEqual([2, 3]);
    expect(gpuGrant(undefined, { SLURM_JOB_ID: '5', SLURM_JOB_GPUS: '1' })).toEqual([1]);
    expect(gpuGrant(undefined, { SLURM_JOB_ID: '5' })).toBe('none'); // a job that asked for no GPU gets none
    expect(gpuGrant(undefined, { CUDA_VISIBLE_DEVICES: '1' })).toEqual([1]);
    expect(gpuGrant(undefined, { CUDA_VISIBLE_DEVICES: '' })).toBe('none');
    expect(gpuGrant(undefined, { CUDA_VISIBLE_DEVICES: 'GPU-8f1c' })).toBe('all');
    expect(gpuGrant(undefined, { ROCR_VISIBLE_DEVICES: '0' })).toEqual([0]);
    expect(gpuGrant(undefined, {})).toBe('all');
    expect(() => gpuGrant('first', {})).toThrow(/--gpus=first: expected all, none or device numbers/);
  });
});

describe('nvidiaBinding', () => {
  it('binds only the granted GPUs with the control devices, the driver libraries with what they need, utilities and firmware', () => {
    const b = nvidiaBinding(root, [1], lists)!;
    expect(b.devices.map((d) => d.target)).toEqual(['/dev/nvidia1', '/dev/nvidiactl', '/dev/nvidia-uvm', '/dev/nvidia-caps/nvidia-cap1']);
    expect(b.devices[0]!.source).toBe(path.join(root, 'dev/nvidia1'));
    expect(b.libraries.map((l) => l.name).sort()).toEqual(['libcuda.so.1', `libnvidia-glcore.so.${DRIVER}`, 'libnvidia-fakedep.so.1', 'libnvidia-ml.so.1'].sort());
    expect(b.libraries.find((l) => l.name === 'libnvidia-fakedep.so.1')!.origin).toBe('gpu: nvidia libnvidia-fakedep.so.1, needed by libcuda.so.1');
    expect(b.binds).toEqual([
      { source: path.join(root, 'usr/bin/nvidia-smi'), target: '/usr/bin/nvidia-smi', origin: 'gpu: nvidia utility nvidia-smi' },
      { source: path.join(root, `lib/firmware/nvidia/${DRIVER}`), target: `/lib/firmware/nvidia/${DRIVER}`, origin: `gpu: nvidia GSP firmware ${DRIVER}` },
    ]);
    expect(b.verify).toContain(`${HOST_LIB_DIR}/libcuda.so.1`);
  });

  it('binds nothing for none, and names GPUs the node lacks', () => {
    expect(nvidiaBinding(root, 'none', lists)).toBeUndefined();
    expect(nvidiaBinding(root, 'all', lists)!.devices.map((d) => d.target)).toContain('/dev/nvidia0');
    expect(() => nvidiaBinding(root, [4], lists)).toThrow(/GPU 4 is not on this node \(it has 0, 1\)/);
    expect(nvidiaBinding(tempDir('empty'), 'all', lists)).toBeUndefined();
  });

  it('site lists extend the driver (gpu.nvidia-libraries)', () => {
    const b = nvidiaBinding(root, 'all', { ...lists, libraries: [...lists.libraries, 'libnvidia-broken.so'] })!;
    expect(b.libraries.map((l) => l.name)).toContain('libnvidia-broken.so.1');
  });
});

describe('amdBinding', () => {
  it('binds /dev/kfd, the granted render nodes in order, and ROCm libraries', () => {
    const b = amdBinding(root, [1], { libraries: ['libamdhip64.so'], binaries: [] })!;
    expect(b.devices.map((d) => d.target)).toEqual(['/dev/kfd', '/dev/dri/renderD129']);
    expect(b.libraries.map((l) => l.name)).toEqual(['libamdhip64.so.5']);
  });
});

describe('cdiBinding', () => {
  it("applies a device's and its spec's edits, and does what nvidia-ctk's hooks would", () => {
    const b = cdiBinding(root, ['/etc/cdi'], ['example.com/gpu=0', 'vendor.org/fpga=a']);
    expect(b.devices).toEqual([{ source: path.join(root, 'dev/nvidia0'), target: '/dev/nvidia0' }]);
    expect(b.binds).toEqual([{ source: path.join(root, LIB, `libcuda.so.${DRIVER}`), target: `/${LIB}/libcuda.so.1`, origin: 'cdi: example.com/gpu=0' }]);
    expect(b.env).toEqual(['EXAMPLE_DRIVER=yes', 'FPGA=a']);
    expect(b.symlinks).toEqual([{ link: `/${LIB}/libcuda.so`, target: 'libcuda.so.1', origin: expect.stringContaining('create-symlinks hook') }]);
    expect(b.libraryPath).toEqual([`/${LIB}`]);
  });

  it('names what the specs describe when a device is unknown', () => {
    expect(() => cdiBinding(root, ['/etc/cdi'], ['example.com/gpu=7'])).toThrow(/--device example.com\/gpu=7: no CDI spec/);
    try {
      cdiBinding(root, ['/etc/cdi'], ['example.com/gpu=7']);
    } catch (e) {
      expect((e as { hint: string }).hint).toBe('this node has: example.com/gpu=0, example.com/gpu=1');
    }
    expect(() => cdiBinding(root, ['/etc/cdi'], ['gpu0'])).toThrow(/expected VENDOR\/CLASS=NAME/);
  });

  it('refuses a spec that is not valid', () => {
    const bad = tempDir('cdi-bad');
    mkdirSync(path.join(bad, 'etc/cdi'), { recursive: true });
    writeFileSync(path.join(bad, 'etc/cdi/broken.json'), '{"kind": "x"');
    expect(() => cdiBinding(bad, ['/etc/cdi'], ['a.b/c=d'])).toThrow(/CDI spec .*broken.json is not valid JSON/);
    cleanup(bad);
  });
});

describe('checkAgainstImage', () => {
  it('refuses a library that needs a newer glibc than the image has, naming both', () => {
    // A stand-in libc defining GLIBC_2.99, and a library linked against it (so it needs 2.99).
    const dir = tempDir('glibc');
    writeFileSync(path.join(dir, 'v.map'), 'GLIBC_2.2.5 { global: old_fn; };\nGLIBC_2.99 { global: new_fn; } GLIBC_2.2.5;\n');
    writeFileSync(path.join(dir, 'stub.c'), 'int old_fn(void) { return 0; } int new_fn(void) { return 1; }');
    writeFileSync(path.join(dir, 'use.c'), 'int new_fn(void); int use(void) { return new_fn(); }');
    const cc = (args: string[]) => expect(spawnSync('cc', args, { cwd: dir, encoding: 'utf8' }).stderr).toBe('');
    cc(['-shared', '-fPIC', '-nostdlib', '-Wl,-soname,libc.so.6', '-Wl,--version-script=v.map', '-o', 'libc.so.6', 'stub.c']);
    cc(['-shared', '-fPIC', '-nostdlib', '-Wl,-soname,libneeds.so.1', '-o', 'libneeds.so.1', 'use.c', '-L.', '-l:libc.so.6']);
    const lib: HostLibrary = { path: '/opt/x/libneeds.so.1', soname: 'libneeds.so.1', origin: 'test', elf: readElf(path.join(dir, 'libneeds.so.1')) };
    const debian12 = readElf('/lib/x86_64-linux-gnu/libc.so.6');
    expect(() => checkAgainstImage('--mpi', [lib], () => debian12)).toThrow(
      "--mpi: the host's libneeds.so.1 (/opt/x/libneeds.so.1) needs GLIBC_2.99 from libc.so.6, but the image's libc.so.6 goes up to GLIBC_2.36");
    expect(() => checkAgainstImage('--mpi', [lib], () => undefined)).toThrow(/needs libc.so.6, which the image does not have/);
    expect(() => checkAgainstImage('--mpi', [lib], () => readElf(path.join(dir, 'libc.so.6')))).not.toThrow();
    cleanup(dir);
  });

  it('reads ABI versions from file names', () => {
    expect(fileVersion('/usr/lib/libmpich.so.12.2.2')).toEqual([12, 2, 2]);
    expect(fileVersion('libmpi.so.12')).toEqual([12, 0, 0]);
  });
});

describe('bindings in the plan', () => {
  const host: HostFacts = { uid: 1000, gid: 1000, user: 'u', group: 'g', home: '/home/u', cwd: '/', env: {}, runtimeDir: '/r', scope: '', linger: 0, has: { hosts: false, resolvConf: false } };
  const meta = {
    berthImage: 1, source: 's', manifestDigest: null, configDigest: 'c', platform: { os: 'linux', architecture: 'amd64' }, created: null, layers: [],
    config: { Env: ['LD_LIBRARY_PATH=/opt/app/lib'], Entrypoint: null, Cmd: ['x'], WorkingDir: '', User: '', Labels: {}, Volumes: [], ExposedPorts: [], StopSignal: null },
  };
  const plan = (bindings: ReturnType<typeof emptyBinding>[], env: string[] = []) => buildPlan(IMAGE, meta, host,
    { binds: [], home: false, contain: false, writableTmpfs: false, fakeroot: false, pid: false, cleanenv: false, env, pwd: undefined, bindings }, { mode: 'exec', args: ['x'] });

  it('puts libraries in a tmpfs that leads LD_LIBRARY_PATH, devices without nodev, and checks last', () => {
    const p = plan([nvidiaBinding(root, [0], lists)!]);
    const ops = p.ops.map((o) => `${o.kind} ${o.target} ${o.options.join(',')}`);
    expect(ops).toContain(`tmpfs ${HOST_LIB_DIR} nosuid,nodev,mode=755`);
    expect(ops).toContain(`bind ${HOST_LIB_DIR}/libcuda.so.1 ro,nosuid,nodev`);
    expect(ops).toContain('bind /dev/nvidia0 nosuid,noexec');
    expect(ops).toContain('bind /usr/bin/nvidia-smi rbind,ro,nosuid,nodev');
    expect(p.env).toContain(`LD_LIBRARY_PATH=${HOST_LIB_DIR}:/opt/app/lib`);
    const firstVerify = p.ops.findIndex((o) => o.kind === 'verify');
    expect(p.ops.slice(firstVerify).every((o) => o.kind === 'verify' && o.source === '/lib64/ld-linux-x86-64.so.2')).toBe(true);
  });

  it('lets the first binding claim a target, and --env win over a binding', () => {
    const a = { ...emptyBinding(), binds: [{ source: '/a', target: '/t', origin: 'a' }], env: ['X=binding'] };
    const c = { ...emptyBinding(), binds: [{ source: '/c', target: '/t', origin: 'c' }], libraries: [{ source: '/h/l', name: 'l.so', origin: 'x' }] };
    const p = plan([a, c], ['X=mine']);
    expect(p.ops.filter((o) => o.target === '/t').map((o) => o.source)).toEqual(['/a']);
    expect(p.env).toContain('X=mine');
  });
});
