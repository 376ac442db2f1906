// buildPlan's rules, without a kernel: command line, environment, mounts, working directory.
import { describe, expect, it } from 'vitest';
import { buildPlan, parseBinds, parseEnvFile, stepPlan, type HostFacts, type RunOptions } from '../../src/plan/build.js';
import { serializePlan } from '../../src/plan/serialize.js';
import { hostFacts } from '../../src/host/user.js';
import type { ImageMetadata } from '../../src/squashfs/metadata.js';

const IMAGE = { path: '/i', format: 'squashfs', offset: 0 } as const;

const meta = (config: Partial<ImageMetadata['config']> = {}): ImageMetadata => ({
  berthImage: 1, source: 'oci:/x', manifestDigest: null, configDigest: 'sha256:0', platform: { os: 'linux', architecture: 'amd64' },
  created: null, layers: [],
  config: { Env: ['PATH=/opt/bin:/bin', 'FOO=image'], Entrypoint: null, Cmd: ['/bin/sh'], WorkingDir: '', User: '', Labels: {}, Volumes: [], ExposedPorts: [], StopSignal: null, ...config },
});

const host: HostFacts = {
  uid: 1000, gid: 1000, user: 'alice', group: 'users', home: '/home/alice', cwd: '/scratch/run1',
  env: { PATH: '/host/bin', LD_LIBRARY_PATH: '/host/lib', LD_PRELOAD: 'x.so', FOO: 'host', HOME: '/home/alice', TERM: 'xterm', SLURM_JOB_ID: '42', BASH_FUNC_module: '() {}' },
  runtimeDir: '/run/user/1000/berth', scope: 'slurm-42.0', linger: 10, has: { hosts: true, resolvConf: false },
};

const opts = (o: Partial<RunOptions> = {}): RunOptions => ({
  binds: [], home: true, contain: false, writableTmpfs: false, fakeroot: false, pid: false, cleanenv: false, env: [], pwd: undefined, bindings: [], ...o,
});

const envOf = (plan: { env: string[] }) => Object.fromEntries(plan.env.map((kv) => [kv.slice(0, kv.indexOf('=')), kv.slice(kv.indexOf('=') + 1)]));
const targets = (plan: { ops: { target: string }[] }) => plan.ops.map((o) => o.target);

describe('command line (docker run rules)', () => {
  it('run: Entrypoint + Cmd, arguments replace Cmd', () => {
    const m = meta({ Entrypoint: ['/bin/echo', 'ep'], Cmd: ['default'] });
    expect(buildPlan(IMAGE, m, host, opts(), { mode: 'run', args: [] }).argv).toEqual(['/bin/echo', 'ep', 'default']);
    expect(buildPlan(IMAGE, m, host, opts(), { mode: 'run', args: ['x'] }).argv).toEqual(['/bin/echo', 'ep', 'x']);
    expect(buildPlan(IMAGE, meta({ Cmd: ['python3'] }), host, opts(), { mode: 'run', args: ['-V'] }).argv).toEqual(['-V']);
  });

  it('run without Entrypoint or Cmd asks for a command', () => {
    expect(() => buildPlan(IMAGE, meta({ Cmd: null }), host, opts(), { mode: 'run', args: [] })).toThrow(/neither an Entrypoint nor a Cmd/);
  });

  it('exec runs the command as given; shell prefers bash', () => {
    expect(buildPlan(IMAGE, meta(), host, opts(), { mode: 'exec', args: ['ls', '-l'] }).argv).toEqual(['ls', '-l']);
    expect(buildPlan(IMAGE, meta(), host, opts(), { mode: 'shell', args: [] }).argv.join(' ')).toMatch(/^\/bin\/sh -c if \[ -x \/bin\/bash \]/);
  });
});

describe('environment', () => {
  it("is the image's Env, then the host's minus the deny-list, then --env", () => {
    const env = envOf(buildPlan(IMAGE, meta(), host, opts({ env: ['EXTRA=1', 'FOO=flag'] }), { mode: 'exec', args: ['x'] }));
    expect(env['PATH']).toBe('/opt/bin:/bin'); // the image's, never the host's
    expect(env['LD_LIBRARY_PATH']).toBeUndefined();
    expect(env['LD_PRELOAD']).toBeUndefined();
    expect(env['BASH_FUNC_module']).toBeUndefined();
    expect(env['SLURM_JOB_ID']).toBe('42');
    expect(env['FOO']).toBe('flag');
    expect(env['EXTRA']).toBe('1');
    expect(env['HOME']).toBe('/home/alice');
    expect(env['BERTH_CONTAINER']).toBe('1');
  });

  it('--cleanenv keeps only the image, a terminal and a locale', () => {
    const env = envOf(buildPlan(IMAGE, meta(), host, opts({ cleanenv: true }), { mode: 'exec', args: ['x'] }));
    expect(env['SLURM_JOB_ID']).toBeUndefined();
    expect(env['FOO']).toBe('image');
    expect(env['TERM']).toBe('xterm');
  });

  it('defaults PATH when the image has none, and looks argv[0] up in the final PATH', () => {
    const plan = buildPlan(IMAGE, meta({ Env: [] }), host, opts({ env: ['PATH=/mine'] }), { mode: 'exec', args: ['x'] });
    expect(plan.path).toBe('/mine');
    expect(buildPlan(IMAGE, meta({ Env: [] }), host, opts(), { mode: 'exec', args: ['x'] }).path).toMatch(/^\/usr\/local\/sbin:/);
  });

  it('reads env files', () => {
    expect(parseEnvFile('# c\nA=1\nexport B="two words"\n\n', 'f')).toEqual(['A=1', 'B=two words']);
    expect(() => parseEnvFile('oops', 'f')).toThrow(/f: line 1 is not KEY=VALUE/);
  });
});

describe('mounts', () => {
  it('binds home and the working directory, the user and group entries, host names', () => {
    const plan = buildPlan(IMAGE, meta(), host, opts(), { mode: 'exec', args: ['x'] });
    expect(targets(plan)).toEqual(expect.arrayContaining(['/proc', '/sys', '/dev', '/dev/null', '/dev/shm', '/tmp', '/etc/hosts', '/home/alice', '/scratch/run1']));
    expect(targets(plan)).not.toContain('/etc/resolv.conf'); // the host has none
    expect(plan.ops.find((o) => o.target === '/etc/passwd')).toMatchObject({ kind: 'line', source: 'alice:x:1000:1000:alice:/home/alice:/bin/sh', options: ['alice:'] });
    expect(plan.ops.find((o) => o.target === '/home/alice')).toMatchObject({ kind: 'bind', options: ['rbind', 'nosuid', 'nodev'] });
    expect(plan.cwd).toBe('/scratch/run1');
  });

  it('--no-home and --contain bind less; --contain gives an empty, writable home of its own', () => {
    const noHome = buildPlan(IMAGE, meta(), host, opts({ home: false }), { mode: 'exec', args: ['x'] });
    expect(noHome.ops.filter((o) => o.kind === 'bind').map((o) => o.target)).not.toContain('/home/alice');
    expect(noHome.cwd).toBe('/');
    const contained = buildPlan(IMAGE, meta(), host, opts({ contain: true }), { mode: 'exec', args: ['x'] });
    expect(contained.ops.find((o) => o.target === '/tmp')!.kind).toBe('tmpfs');
    expect(contained.ops.find((o) => o.target === '/dev/shm')!.kind).toBe('tmpfs');
    expect(contained.ops.find((o) => o.target === '/home/alice')).toMatchObject({ kind: 'tmpfs', options: ['nosuid', 'nodev', 'mode=700'] });
    expect(contained.pidns).toBe(false); // --contain is file systems only; --containall adds --pid (prepare.ts)
  });

  it('run starts in WorkingDir; exec where the user is, when bound; --pwd wins', () => {
    const m = meta({ WorkingDir: '/app' });
    expect(buildPlan(IMAGE, m, host, opts(), { mode: 'run', args: [] }).cwd).toBe('/app');
    expect(buildPlan(IMAGE, m, host, opts(), { mode: 'exec', args: ['x'] }).cwd).toBe('/scratch/run1');
    expect(buildPlan(IMAGE, m, host, opts({ home: false }), { mode: 'exec', args: ['x'] }).cwd).toBe('/app');
    expect(buildPlan(IMAGE, m, host, opts({ pwd: '/data' }), { mode: 'run', args: [] }).cwd).toBe('/data');
  });

  it('parses --bind as Apptainer does', () => {
    expect(parseBinds(['/a', '/b:/c:ro,/d:/e'])).toEqual([
      { source: '/a', target: '/a', readOnly: false },
      { source: '/b', target: '/c', readOnly: true },
      { source: '/d', target: '/e', readOnly: false },
    ]);
    expect(() => parseBinds(['/a:/b:rx'])).toThrow(/invalid --bind/);
    expect(() => parseBinds(['/a:rel'])).toThrow(/must be an absolute path/);
  });

  it('--fakeroot maps to root and adds no passwd entry', () => {
    const plan = buildPlan(IMAGE, meta(), host, opts({ fakeroot: true }), { mode: 'exec', args: ['x'] });
    expect(plan.userns).toBe('root');
    expect(plan.ops.some((o) => o.kind === 'line')).toBe(false);
  });
});

describe('serializePlan', () => {
  it('escapes spaces, newlines and backslashes, fstab-style', () => {
    const text = serializePlan({
      image: '/a b.sqsh', imageFormat: 'squashfs', imageOffset: 0, scope: '', linger: 0, runtimeDir: '/r', userns: 'self', writable: false, pidns: false, cwd: '/', path: '/bin', env: ['A=x y'],
      argv: ['sh', '-c', 'echo "a\\b"\nexit 1', '-', ''],
      ops: [{ kind: 'bind', source: '/s p', target: '/t', options: ['ro', 'nosuid'], ifMissing: 'create', origin: '--bind /s p' }],
    });
    expect(text).toBe([
      '# berth-plan v1', 'image /a\\040b.sqsh', 'imageformat squashfs', 'imageoffset 0', 'scope -', 'linger 0', 'runtime /r', 'userns self', 'writable 0', 'pidns 0', 'cwd /', 'path /bin', 'env A=x\\040y',
      'arg sh', 'arg -c', 'arg echo\\040"a\\134b"\\012exit\\0401', 'arg \\055', 'arg -',
      'op bind /s\\040p /t ro,nosuid create --bind\\040/s\\040p', '',
    ].join('\n'));
  });
});

describe("a Slurm job's image servers (#19)", () => {
  const facts = (more: Record<string, string>) => hostFacts({ PATH: '/bin', HOME: '/nonexistent', ...more });
  it('are shared by the whole job, and wait images.job-linger for its next step', () => {
    expect(facts({ SLURM_JOB_ID: '42', SLURM_STEP_ID: '3' })).toMatchObject({ scope: 'slurm-42', linger: 10, jobLinger: 600 });
    expect(facts({ SLURM_JOB_ID: '42', BERTH_IMAGE_JOB_LINGER: '30', BERTH_IMAGE_LINGER: '1' })).toMatchObject({ scope: 'slurm-42', linger: 1, jobLinger: 30 });
    const plan = buildPlan(IMAGE, meta(), { ...host, jobLinger: 30 }, opts(), { mode: 'run', args: [] });
    expect(serializePlan(plan).split('\n').filter((l) => /linger/.test(l))).toEqual(['linger 10', 'joblinger 30']);
  });
  it('outside a job, or with a job id that is not one, have no scope and no job linger', () => {
    expect(facts({})).toMatchObject({ scope: '' });
    expect(facts({}).jobLinger).toBeUndefined();
    expect(facts({ SLURM_JOB_ID: '4/../2' }).scope).toBe('');
  });
});

describe('isolation that the flags promise (#11)', () => {
  const exec = { mode: 'exec', args: ['true'] } as const;
  const procOp = (plan: { ops: { kind: string; target: string }[] }) => plan.ops.find((o) => o.target === '/proc')!.kind;

  it('--fakeroot and --pid (which --containall sets) get a PID namespace with its own /proc; the default shares the host\'s', () => {
    for (const o of [{ fakeroot: true }, { pid: true }]) {
      const plan = buildPlan(IMAGE, meta(), host, opts(o), exec);
      expect(plan.pidns).toBe(true);
      expect(procOp(plan)).toBe('proc');
      expect(serializePlan(plan)).toMatch(/^pidns 1$/m);
    }
    const plain = buildPlan(IMAGE, meta(), host, opts(), exec);
    expect(plain.pidns).toBe(false);
    expect(procOp(plain)).toBe('bind');
  });

  it('a Slurm step shares the node\'s PID namespace (its tasks join by setns)', () => {
    const step = stepPlan(buildPlan(IMAGE, meta(), host, opts({ fakeroot: true }), exec), host, [], 2);
    expect(step.pidns).toBe(false);
    expect(procOp(step)).toBe('bind');
  });

  it('a Slurm step keeps --ipc, --hostname and --network none (its server makes them, every task joins them); --network user is refused (#15)', () => {
    const step = stepPlan(buildPlan(IMAGE, meta(), host, opts({ ipc: true, hostname: 'worker', network: { mode: 'none' } }), exec), host, [], 2);
    expect(serializePlan(step)).toMatch(/^ipcns 1$/m);
    expect(serializePlan(step)).toMatch(/^hostname worker$/m);
    expect(serializePlan(step)).toMatch(/^net none$/m);
    const user = buildPlan(IMAGE, meta(), host, opts({ network: { mode: 'user', pasta: '/usr/bin/pasta', publish: ['8080:80'] } }), exec);
    expect(() => stepPlan(user, host, [], 2)).toThrow(/not offered for Slurm steps: each node would need its own pasta/);
  });

  it('a Slurm step plan names the Slurm variables it is made from, which the plugin keys its cached plans by (#18)', () => {
    const text = serializePlan(stepPlan(buildPlan(IMAGE, meta(), host, opts(), exec), host, [], 2));
    expect(text.match(/^input .*$/gm)).toEqual(['input SLURM_JOB_ID', 'input SLURM_STEP_GPUS', 'input SLURM_JOB_GPUS']);
    expect(serializePlan(buildPlan(IMAGE, meta(), host, opts(), exec))).not.toMatch(/^input /m);
  });

  it("berth's own variables (credentials, configuration) never enter the container", () => {
    const h = { ...host, env: { ...host.env, BERTH_REGISTRY_PASSWORD: 'secret', BERTH_CACHE_DIR: '/c', BERTH_RUNTIME_DIR: '/r' } };
    const env = envOf(buildPlan(IMAGE, meta(), h, opts(), exec));
    expect(Object.keys(env).filter((k) => k.startsWith('BERTH_'))).toEqual(['BERTH_CONTAINER']);
    expect(stepPlan(buildPlan(IMAGE, meta(), h, opts(), exec), h, [], 2).unset).toEqual(expect.arrayContaining(['BERTH_REGISTRY_PASSWORD']));
  });
});
