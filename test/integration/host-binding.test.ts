// Host binding for real, as an ordinary user: the host's MPICH replaces the image's (and the
// test proves which file was mapped), mismatched ABIs are refused, and a GPU driver from a
// host root the test builds (test/host-root.ts) is usable inside: its utility runs on its
// libraries, only the granted devices appear, and a library that cannot resolve inside
// stops the start with the missing symbol named.
import { copyFileSync, mkdirSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SETTINGS } from '../../src/config/schema.js';
import { BERTH, ROOT, berth, cleanup, run, tempDir } from '../helpers.js';
import { DRIVER, LIB, makeGpuRoot } from '../host-root.js';

let work: string;
let gpuRoot: string;
const img = (name: string) => path.join(work, `${name}.sqsh`);
const HOST_MPICH = '/usr/lib/x86_64-linux-gnu/libmpich.so.12.2.2';

/** berth with a configuration file of the test's own (BERTH_CONFIG). */
function b(config: string, ...args: string[]) {
  const file = path.join(work, `config-${Math.random().toString(36).slice(2)}.yaml`);
  writeFileSync(file, config);
  return run(process.execPath, [BERTH, ...args], {
    cwd: work,
    env: { ...process.env, BERTH_CONFIG: file, BERTH_RUNTIME_DIR: path.join(work, 'runtime'), BERTH_IMAGE_LINGER: '0'},
  });
}

beforeAll(async () => {
  work = tempDir('host');
  gpuRoot = makeGpuRoot(path.join(work, 'gpu-root'));
  const made = await run(path.join(ROOT, 'test/fixtures/make-run-images.sh'), [work]);
  if (made.code !== 0) throw new Error(made.stderr);
  for (const tag of ['mpich', 'rdma']) {
    const r = await berth('convert', `oci:${work}/oci:${tag}`, '-o', img(tag), '--quiet');
    if (r.code !== 0) throw new Error(r.stderr);
  }
  // A "vendor" MPI outside the loader's paths: a copy of the host's MPICH, and two that do not fit.
  mkdirSync(path.join(work, 'vendor'));
  copyFileSync(HOST_MPICH, path.join(work, 'vendor/libmpich.so.12.2.2'));
  symlinkSync('libmpich.so.12.2.2', path.join(work, 'vendor/libmpich.so.12'));
  copyFileSync(HOST_MPICH, path.join(work, 'vendor/libmpich.so.12.0.0'));
}, 180_000);
afterAll(() => cleanup(work));

const fileId = (p: string) => {
  const st = statSync(p);
  return `${Math.floor(st.dev / 256)}:${st.dev % 256}:${st.ino}`;
};

describe('--mpi', () => {
  const mpiConfig = (lib: string, extra = '') => `mpi:\n  library: ${path.join(work, 'vendor', lib)}\n${extra}`;

  it("runs an MPI program of the image on the host's MPI, and the mapped library is the host's file", async () => {
    const r = await b(mpiConfig('libmpich.so.12'), 'exec', '--mpi', img('mpich'), 'mpi_hello');
    expect(r.stderr).toBe('');
    expect(r.stdout).toBe(`rank 0 of 1 lib /.berth/host/lib/libmpich.so.12 file ${fileId(path.join(work, 'vendor/libmpich.so.12.2.2'))}\n`);
    const own = await b(mpiConfig('libmpich.so.12'), 'exec', img('mpich'), 'mpi_hello');
    expect(own.stdout).toMatch(/^rank 0 of 1 lib \/usr\/lib\/x86_64-linux-gnu\/libmpich\.so\.12\.2\.2 file /);
    expect(own.stdout).not.toContain(fileId(path.join(work, 'vendor/libmpich.so.12.2.2')));
  });

  it('refuses a host MPI of another major version, and an older minor unless the site allows it', async () => {
    const fake = path.join(work, 'vendor/libmpich.so.11.0.0');
    const cc = await run('cc', ['-shared', '-fPIC', '-Wl,-soname,libmpich.so.11', '-o', fake, '-x', 'c', '-'], { input: 'int MPI_Init(void) { return 0; }\n' });
    expect(cc.code).toBe(0);
    const major = await b(mpiConfig('libmpich.so.11.0.0'), 'exec', '--mpi', img('mpich'), 'mpi_hello');
    expect(major.code).toBe(125);
    expect(major.stderr).toContain(`the host's MPI ${fake} (ABI 11.0.0) cannot replace the image's /usr/lib/x86_64-linux-gnu/libmpich.so.12.2.2 (ABI 12.2.2): different major versions`);
    const minor = await b(mpiConfig('libmpich.so.12.0.0'), 'exec', '--mpi', img('mpich'), 'mpi_hello');
    expect(minor.code).toBe(125);
    expect(minor.stderr).toMatch(/\(ABI 12\.0\.0\) cannot replace .* \(ABI 12\.2\.2\): the host's minor version is older\nberth: hint: .*mpi\.allow-older-minor: true/);
    const allowed = await b(mpiConfig('libmpich.so.12.0.0', '  allow-older-minor: true\n'), 'exec', '--mpi', img('mpich'), 'mpi_hello');
    expect(allowed.stdout).toMatch(/^rank 0 of 1 lib \/\.berth\/host\/lib\/libmpich\.so\.12 /);
  });

  it("passes the Slurm step's PMIx socket directories in, writable", async () => {
    const pmix = path.join(work, 'pmix-server');
    mkdirSync(pmix);
    const file = path.join(work, 'pmi.yaml');
    writeFileSync(file, mpiConfig('libmpich.so.12'));
    const r = await run(process.execPath, [BERTH, 'exec', '--mpi', '--containall', '--dry-run', img('mpich'), 'mpi_hello'],
      { env: { ...process.env, BERTH_CONFIG: file, PMIX_SERVER_TMPDIR: pmix } });
    const plan = JSON.parse(r.stdout) as { ops: { source: string; target: string; options: string[] }[] };
    expect(plan.ops.find((o) => o.target === pmix)).toMatchObject({ source: pmix, options: ['rbind', 'nosuid', 'nodev'] });
  });

  it('refuses an image without an MPICH-ABI MPI', async () => {
    const r = await b(mpiConfig('libmpich.so.12'), 'exec', '--mpi', img('rdma'), 'true');
    expect(r.code).toBe(125);
    expect(r.stderr).toContain('--mpi: the image has no MPICH-ABI MPI (libmpi.so.12 or libmpich.so.12) to replace');
  });
});

describe('--gpus (a host root with a stand-in NVIDIA driver)', () => {
  const onGpuRoot = (more = '') => `host:\n  root: ${gpuRoot}\n${more}`;
  it('puts the utilities on PATH with their libraries, only the granted GPUs in /dev, and the firmware', async () => {
    const r = await b(onGpuRoot(), 'exec', '--gpus', '1', img('mpich'), 'sh', '-c', `nvidia-smi && ls /dev && ls /lib/firmware/nvidia/${DRIVER}`);
    expect(r.stderr).toBe('');
    expect(r.stdout).toContain(`fake nvidia-smi, driver ${DRIVER}\n`);
    const listed = r.stdout.split('\n');
    expect(listed).toEqual(expect.arrayContaining(['nvidia1', 'nvidiactl', 'nvidia-uvm', 'nvidia-caps', 'gsp_ga10x.bin']));
    expect(listed).not.toContain('nvidia0');
  });

  it('--gpus none binds no driver', async () => {
    const r = await b(onGpuRoot(), 'exec', '--gpus', 'none', img('mpich'), 'sh', '-c', 'ls /dev; nvidia-smi');
    expect(r.stdout).not.toContain('nvidia');
    expect(r.code).toBe(127);
  });

  it('stops the start when an injected library does not resolve inside, naming the symbol', async () => {
    const libraries = [...SETTINGS['gpu.nvidia-libraries'].default, 'libnvidia-broken.so'];
    const r = await b(onGpuRoot(`gpu:\n  nvidia-libraries: ${JSON.stringify(libraries)}\n`), 'exec', '--gpus', 'all', img('mpich'), 'true');
    expect(r.code).toBe(125);
    expect(r.stderr).toMatch(/\/\.berth\/host\/lib\/libnvidia-broken\.so\.1 .*does not resolve inside the container: .*undefined symbol: berth_no_such_symbol/);
  });

  it('--device applies a CDI spec: its devices, mounts, environment and symlinks', async () => {
    const r = await b(onGpuRoot(), 'exec', '--gpus', 'none', '--device', 'example.com/gpu=0', img('mpich'), 'sh', '-c',
      `ls /dev; echo $EXAMPLE_DRIVER; ls -l /${LIB}/libcuda.so; echo $LD_LIBRARY_PATH`);
    expect(r.stderr).toBe('');
    expect(r.stdout.split('\n')).toContain('nvidia0');
    expect(r.stdout).toContain('\nyes\n');
    expect(r.stdout).toMatch(new RegExp(`/${LIB}/libcuda.so -> libcuda.so.1\n/${LIB}\n`));
  });

  it('berth doctor says what GPU and CDI binding would do on this node', async () => {
    const r = await b(onGpuRoot(), 'doctor', '--json');
    const checks = Object.fromEntries((JSON.parse(r.stdout) as { name: string; detail: string; verdict: string }[]).map((c) => [c.name, c]));
    expect(checks.GPU).toMatchObject({ verdict: 'ok', detail: expect.stringMatching(/^NVIDIA: 5 devices, 4 libraries, 2 utilities\/firmware; AMD: 3 devices/) });
    expect(checks.CDI!.detail).toBe('--device can use vendor.org/fpga=a, example.com/gpu=0, example.com/gpu=1');
    expect(checks.MPI).toMatchObject({ verdict: 'warn', detail: expect.stringContaining('no MPICH-ABI MPI') });
  });
});
