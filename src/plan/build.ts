// buildPlan: image metadata + host facts + options -> LaunchPlan. Pure and deterministic: no
// I/O, so every rule here is unit-tested without a kernel.
import { BerthError } from '../errors.js';
import type { ImageLocation } from '../image/files.js';
import type { ImageMetadata } from '../squashfs/metadata.js';
import { DEFAULT_PATH, STEP_PLAN_INPUTS } from './contract.js';
import { HOST_LIB_DIR, type HostBinding, type LaunchPlan, type MountOp, type Network } from './types.js';

export interface HostFacts {
  uid: number;
  gid: number;
  user: string;
  group: string;
  home: string;
  cwd: string;
  env: Record<string, string | undefined>;
  runtimeDir: string;
  /** slurm-JOB in a Slurm job, else ''. */
  scope: string;
  /** Seconds an idle image server lingers (images.linger). */
  linger: number;
  /** In a Slurm job: seconds it lingers while the job lives on the node (images.job-linger). */
  jobLinger?: number;
  /** Host files that are bound when present. */
  has: { hosts: boolean; resolvConf: boolean };
}

export interface BindSpec {
  source: string;
  target: string;
  readOnly: boolean;
  /** Mount options beyond ro: noexec (nosuid and nodev every bind has anyway). */
  options?: string[];
}

export interface RunOptions {
  binds: BindSpec[];
  /** Bind $HOME (default) and the working directory. */
  home: boolean;
  /**
   * --contain (and --containall): no host $HOME, /tmp, /dev/shm or working directory, only what
   * is asked for, and an empty, writable home of the container's own (Apptainer's).
   */
  contain: boolean;
  /** --home SRC[:DST]: SRC is the home, at DST inside, and $HOME is DST (Apptainer's). */
  homeDir?: { source: string; target: string };
  /** --user: the uid and gid inside (the caller's own outside), and the name if the image has one. */
  user?: { uid: number; gid: number; name?: string; home?: string };
  writableTmpfs: boolean;
  /** --overlay DIR: the root writable, its changes kept in DIR/upper (checked by prepare.ts). */
  overlay: string | undefined;
  fakeroot: boolean;
  /** A PID namespace of its own (--pid, and what --containall implies); --fakeroot implies it. */
  pid: boolean;
  /** An IPC namespace of its own (--ipc, and what --containall implies). */
  ipc: boolean;
  /** A UTS namespace of its own with this hostname (--hostname, or the host's for --uts). */
  hostname: string | undefined;
  /** A network namespace of its own (--network none|user); undefined: the host's. */
  network: Network | undefined;
  cleanenv: boolean;
  /** K=V from --env-file then --env, in order; later ones win. */
  env: string[];
  pwd: string | undefined;
  /** What of the host to bind in: what each host binding adds (src/host/bindings.ts, through plan/prepare.ts). */
  bindings: HostBinding[];
}

export type Command =
  | { mode: 'run'; args: string[]; /** --entrypoint: replaces the image's ('' for none); its Cmd then goes too, as in docker run. */ entrypoint?: string }
  | { mode: 'exec'; args: string[] }
  | { mode: 'shell'; args: string[] };

export { DEFAULT_PATH };

/**
 * Host variables that never enter the container: they describe the host's files (PATH,
 * the loader's LD_* variables, Python's and the module system's paths) and would break or
 * subvert the image's own programs. The image's values, or --env, apply instead. Nor do
 * berth's own (its configuration, BERTH_REGISTRY_PASSWORD): they are for berth, not the job.
 */
export const ENV_DENY = [
  /^BERTH_/, /^PATH$/, /^LD_/, /^PYTHONHOME$/, /^BASH_ENV$/, /^ENV$/, /^BASH_FUNC_/, /^PROMPT_COMMAND$/,
  /^PWD$/, /^OLDPWD$/, /^SHLVL$/, /^_$/, /^MODULEPATH/, /^MODULESHOME$/, /^LOADEDMODULES$/, /^_LMFILES_/, /^LMOD_/,
];

/** Kept even with --cleanenv: a terminal and a locale keep a shell usable. */
const CLEANENV_KEEP = ['TERM', 'LANG', 'LC_ALL', 'TZ'];

/** A hostname as sethostname and resolvers take it (RFC 1123). */
export function checkHostname(name: string): string {
  if (!/^[A-Za-z0-9]([A-Za-z0-9.-]{0,62}[A-Za-z0-9])?$/.test(name)) {
    throw new BerthError('USAGE', `--hostname '${name}' is not a hostname`, 'use letters, digits, - and . (at most 64), e.g. --hostname worker1');
  }
  return name;
}

/** --publish HOST_PORT:CONTAINER_PORT (Docker's -p), each 1-65535; TCP, as pasta forwards it. */
export function parsePublish(spec: string): string {
  const m = /^(\d{1,5}):(\d{1,5})(?:\/tcp)?$/.exec(spec);
  if (!m || [m[1], m[2]].some((n) => Number(n) < 1 || Number(n) > 65535)) {
    throw new BerthError('USAGE', `-p/--publish '${spec}' is not HOST_PORT:CONTAINER_PORT`,
      "e.g. -p 8888:8888 (TCP). Apptainer's -p is --pid here: a PID namespace of its own");
  }
  return `${Number(m[1])}:${Number(m[2])}`;
}

/**
 * A bind's options as Apptainer and Docker write them: ro and rw; nosuid and nodev, which every
 * bind of berth's has anyway; noexec; Docker's z and Z (SELinux relabelling, nothing to do on
 * the nodes berth runs on) and rbind (every bind is recursive).
 */
const BIND_OPTIONS = new Set(['ro', 'rw', 'nosuid', 'nodev', 'noexec', 'z', 'Z', 'rbind']);

/**
 * Parses --bind values as Apptainer accepts them: SRC[:DST[:OPTION[:OPTION...]]], comma-separated;
 * a piece that is only an option (Docker's `-v /a:/b:ro,z`) belongs to the bind before it.
 */
export function parseBinds(values: string[]): BindSpec[] {
  const specs: BindSpec[] = [];
  for (const value of values) {
    for (const spec of value.split(',').filter(Boolean)) {
      const last = specs[specs.length - 1];
      if (BIND_OPTIONS.has(spec) && last) {
        applyBindOption(last, spec);
        continue;
      }
      const [source, target, ...options] = spec.split(':');
      const bad = options.find((o) => !BIND_OPTIONS.has(o));
      if (!source || bad !== undefined || BIND_OPTIONS.has(source)) {
        throw new BerthError('USAGE', `invalid --bind '${spec}'${bad !== undefined ? `: unknown option '${bad}'` : ''}`,
          'write it as SRC[:DST[:ro|rw|nosuid|nodev|noexec]], e.g. --bind /scratch:/data:ro');
      }
      const dst = target || source;
      if (!dst.startsWith('/')) throw new BerthError('USAGE', `--bind '${spec}': the destination must be an absolute path`, 'e.g. --bind ./data:/data');
      const bind: BindSpec = { source, target: dst, readOnly: false };
      for (const o of options) applyBindOption(bind, o);
      specs.push(bind);
    }
  }
  return specs;
}

function applyBindOption(bind: BindSpec, option: string): void {
  if (option === 'ro' || option === 'rw') bind.readOnly = option === 'ro';
  else if (option === 'noexec') bind.options = [...(bind.options ?? []), 'noexec'];
}

/** KEY=VALUE lines of an --env-file; blank lines and # comments are skipped. */
export function parseEnvFile(text: string, file: string): string[] {
  return text.split('\n').map((l) => l.trim()).filter((l) => l && !l.startsWith('#')).map((l, i) => {
    const line = l.startsWith('export ') ? l.slice(7).trim() : l;
    if (!/^[A-Za-z_][A-Za-z0-9_]*=/.test(line)) {
      throw new BerthError('USAGE', `${file}: line ${i + 1} is not KEY=VALUE: '${l}'`, 'write one KEY=VALUE per line');
    }
    return line.replace(/^([^=]+)=(["'])(.*)\2$/, '$1=$3');
  });
}

function setEnv(env: Map<string, string>, kv: string): void {
  const eq = kv.indexOf('=');
  if (eq <= 0) throw new BerthError('USAGE', `invalid --env '${kv}'`, 'write it as KEY=VALUE');
  env.set(kv.slice(0, eq), kv.slice(eq + 1));
}

/** The origin of the op that makes the home when none is bound (berth build's steps leave it out: run-step.ts). */
export const HOME_NOT_BOUND = 'home (not bound)';

function buildEnv(meta: ImageMetadata, host: HostFacts, opts: RunOptions, cwd: string, home: string): Map<string, string> {
  const env = new Map<string, string>();
  for (const kv of meta.config.Env) setEnv(env, kv);
  for (const [k, v] of Object.entries(host.env)) {
    if (v === undefined || ENV_DENY.some((re) => re.test(k))) continue;
    if (opts.cleanenv && !CLEANENV_KEEP.includes(k)) continue;
    env.set(k, v);
  }
  if (!env.has('PATH')) env.set('PATH', DEFAULT_PATH);
  env.set('HOME', opts.fakeroot && !opts.home && !opts.homeDir ? '/root' : home);
  if (opts.user) {
    if (opts.user.name) env.set('USER', opts.user.name);
    else env.delete('USER');
  } else env.set('USER', opts.fakeroot ? 'root' : host.user);
  env.set('PWD', cwd);
  env.set('BERTH_CONTAINER', '1');
  for (const kv of opts.env) setEnv(env, kv);
  return env;
}

/** bash where the image has it, else sh: decided inside, where the files are. */
const SHELL = 'if [ -x /bin/bash ]; then exec /bin/bash "$@"; else exec /bin/sh "$@"; fi';

/**
 * What an Apptainer image runs first, whatever the command (its actions/exec, run and shell
 * scripts do the same): each /.singularity.d/env/*.sh sourced in the shell's glob order, so
 * their exports (%environment, a docker image's 10-docker2singularity.sh) apply.
 */
const APPTAINER_ENV = 'for f in /.singularity.d/env/*.sh; do if [ -f "$f" ]; then . "$f"; fi; done; ';

/** The environment an Apptainer image's scripts make, on stdout (NUL-separated); their own output goes to stderr. */
export const APPTAINER_ENV_PROBE = ['/bin/sh', '-c', 'for f in /.singularity.d/env/*.sh; do if [ -f "$f" ]; then . "$f" >&2; fi; done; exec cat /proc/self/environ'];

/** argv run from a shell that has sourced an Apptainer image's environment scripts first. */
const withApptainerEnvScripts = (argv: string[]): string[] => ['/bin/sh', '-c', `${APPTAINER_ENV}exec "$@"`, 'sh', ...argv];

/** Docker's ENTRYPOINT/CMD rules for run; a plain command for exec; the image's shell. */
export function commandLine(meta: ImageMetadata, cmd: Command): string[] {
  const replaced = cmd.mode === 'run' && cmd.entrypoint !== undefined;
  const entrypoint = replaced ? (cmd.entrypoint ? [cmd.entrypoint] : []) : meta.config.Entrypoint ?? [];
  const apptainer = meta.startup === 'apptainer';
  // An Apptainer image's command runs from a shell that has sourced the environment first.
  const wrap = (argv: string[]) => (apptainer ? withApptainerEnvScripts(argv) : argv);
  if (cmd.mode === 'exec') return wrap(cmd.args);
  if (cmd.mode === 'shell') return ['/bin/sh', '-c', apptainer ? APPTAINER_ENV + SHELL : SHELL, 'sh', ...cmd.args];
  const argv = cmd.args.length > 0 || replaced ? [...entrypoint, ...cmd.args] : [...entrypoint, ...(meta.config.Cmd ?? [])];
  if (argv.length === 0) {
    throw new BerthError('NO_COMMAND', apptainer ? 'the image has no runscript (/.singularity.d/runscript)' : 'the image has neither an Entrypoint nor a Cmd',
      'name a command: berth exec IMAGE COMMAND [ARGS...]');
  }
  return wrap(argv);
}

/** What Apptainer tells a container about itself, which images' scripts read. */
function apptainerEnv(image: string): string[] {
  const name = image.split('/').pop() ?? image;
  return [`APPTAINER_CONTAINER=${image}`, `SINGULARITY_CONTAINER=${image}`, `APPTAINER_NAME=${name}`, `SINGULARITY_NAME=${name}`];
}

const op = (kind: MountOp['kind'], source: string, target: string, options: string[], ifMissing: MountOp['ifMissing'], origin: string): MountOp =>
  ({ kind, source, target, options, ifMissing, origin });

/** Paths bound from the host anyway, whose subdirectories need no bind of their own. */
function isUnder(path: string, dirs: string[]): boolean {
  return dirs.some((d) => path === d || path.startsWith(d.endsWith('/') ? d : `${d}/`));
}

/**
 * Whether the container gets a PID namespace. --fakeroot's root has every capability in its
 * user namespace, and without one it could reach the user's other processes' roots through
 * /proc (their homes, whatever --contain and --no-home left out). --containall asks for one
 * (prepare.ts sets pid), as Apptainer's does.
 */
export const wantsPidNamespace = (opts: RunOptions): boolean => opts.pid || opts.fakeroot;

function systemOps(host: HostFacts, opts: RunOptions): MountOp[] {
  const ops = [
    wantsPidNamespace(opts)
      ? op('proc', '', '/proc', ['nosuid', 'nodev', 'noexec'], 'create', "system: /proc of the container's own PID namespace")
      : op('bind', '/proc', '/proc', ['rbind', 'nosuid', 'nodev', 'noexec'], 'create', 'system: /proc'),
    op('bind', '/sys', '/sys', ['rbind', 'nosuid', 'nodev', 'noexec', 'ro'], 'create', 'system: /sys'),
    // A minimal /dev: only the devices a job needs, so nothing of the host's shows by accident.
    // GPU and RDMA binding add their devices to the plan explicitly.
    op('tmpfs', '', '/dev', ['nosuid', 'noexec', 'mode=755'], 'create', 'system: minimal /dev'),
    ...['null', 'zero', 'full', 'random', 'urandom', 'tty'].map((d) => op('bind', `/dev/${d}`, `/dev/${d}`, ['nosuid', 'noexec'], 'create', 'system: /dev')),
    op('bind', '/dev/pts', '/dev/pts', ['rbind', 'nosuid', 'noexec'], 'create', 'system: /dev/pts (terminals)'),
    op('symlink', 'pts/ptmx', '/dev/ptmx', [], 'create', 'system: /dev'),
    op('symlink', '/proc/self/fd', '/dev/fd', [], 'create', 'system: /dev'),
    op('symlink', '/proc/self/fd/0', '/dev/stdin', [], 'create', 'system: /dev'),
    op('symlink', '/proc/self/fd/1', '/dev/stdout', [], 'create', 'system: /dev'),
    op('symlink', '/proc/self/fd/2', '/dev/stderr', [], 'create', 'system: /dev'),
  ];
  if (opts.contain) {
    ops.push(op('tmpfs', '', '/dev/shm', ['nosuid', 'nodev', 'mode=1777'], 'create', '--contain: private /dev/shm'));
    ops.push(op('tmpfs', '', '/tmp', ['nosuid', 'nodev', 'mode=1777'], 'create', '--contain: private /tmp'));
  } else {
    // Shared with the host so that tasks on a node (MPI shared memory) and the job see one /dev/shm and /tmp.
    ops.push(op('bind', '/dev/shm', '/dev/shm', ['rbind', 'nosuid', 'nodev'], 'create', 'system: /dev/shm'));
    ops.push(op('bind', '/tmp', '/tmp', ['rbind', 'nosuid', 'nodev'], 'create', 'system: /tmp'));
  }
  if (host.has.hosts) ops.push(op('bind', '/etc/hosts', '/etc/hosts', ['ro', 'nosuid', 'nodev'], 'create', 'system: host names'));
  if (host.has.resolvConf) ops.push(op('bind', '/etc/resolv.conf', '/etc/resolv.conf', ['ro', 'nosuid', 'nodev'], 'create', 'system: DNS'));
  return ops;
}

function identityOps(host: HostFacts, opts: RunOptions, home: string): MountOp[] {
  // --fakeroot is the image's root; --user is an account of the image's, or a bare number, as in docker run -u.
  if (opts.fakeroot || opts.user) return [];
  return [
    op('line', `${host.user}:x:${host.uid}:${host.gid}:${host.user}:${home}:/bin/sh`, '/etc/passwd', [`${host.user}:`], 'create', 'identity: your passwd entry'),
    op('line', `${host.group}:x:${host.gid}:`, '/etc/group', [`${host.group}:`], 'create', 'identity: your group entry'),
  ];
}

/** The loader of each architecture, at its ABI's path: it checks injected libraries inside. */
const LOADERS: Record<string, string> = { amd64: '/lib64/ld-linux-x86-64.so.2', arm64: '/lib/ld-linux-aarch64.so.1', ppc64le: '/lib64/ld64.so.2' };

/**
 * Host parts (devices, files, libraries) in the container. Libraries go into a tmpfs at
 * HOST_LIB_DIR so that the image's own files stay untouched; devices keep working device
 * nodes, so no nodev. The first binding to claim a target or a library name wins.
 */
function bindingOps(bindings: HostBinding[], architecture: string): { ops: MountOp[]; libraryPath: string[]; env: string[] } {
  const ops: MountOp[] = [];
  const targets = new Set<string>();
  const claim = (t: string) => !targets.has(t) && !!targets.add(t);
  const libraries = bindings.flatMap((b) => b.libraries).filter((l) => claim(`${HOST_LIB_DIR}/${l.name}`));
  if (libraries.length > 0) {
    ops.push(op('tmpfs', '', HOST_LIB_DIR, ['nosuid', 'nodev', 'mode=755'], 'create', 'host libraries'));
    ops.push(...libraries.map((l) => op('bind', l.source, `${HOST_LIB_DIR}/${l.name}`, ['ro', 'nosuid', 'nodev'], 'create', l.origin)));
  }
  for (const b of bindings) {
    ops.push(...b.devices.filter((d) => claim(d.target)).map((d) => op('bind', d.source, d.target, ['nosuid', 'noexec'], 'create', `device ${d.target}`)));
    ops.push(...b.binds.filter((f) => claim(f.target)).map((f) => op('bind', f.source, f.target, ['rbind', ...(f.writable ? [] : ['ro']), 'nosuid', 'nodev'], 'create', f.origin)));
    ops.push(...b.symlinks.filter((l) => claim(l.link)).map((l) => op('symlink', l.target, l.link, [], 'create', l.origin)));
  }
  const loader = LOADERS[architecture];
  const verify = [...new Set(bindings.flatMap((b) => b.verify))];
  if (loader) ops.push(...verify.map((lib) => op('verify', loader, lib, [], 'skip', 'check that an injected library resolves inside')));
  const libraryPath = [...new Set([...(libraries.length > 0 ? [HOST_LIB_DIR] : []), ...bindings.flatMap((b) => b.libraryPath)])];
  return { ops, libraryPath, env: bindings.flatMap((b) => b.env) };
}

export function buildPlan(location: ImageLocation, meta: ImageMetadata, host: HostFacts, opts: RunOptions, cmd: Command): LaunchPlan {
  const image = location.path;
  const ops = systemOps(host, opts);
  // What the image asks for itself (an enroot image's /etc/fstab tmpfs), before what the user does.
  for (const m of meta.mounts ?? []) ops.push(op('tmpfs', '', m.target, ['nosuid', 'nodev', ...m.options], 'create', `the image's /etc/fstab: tmpfs ${m.target}`));
  if (opts.fakeroot && opts.user) throw new BerthError('USAGE', '--fakeroot and --user both say who you are inside', 'choose one (--fakeroot is --user 0:0 with a root of its own)');
  // The home inside: --home's DST, else yours.
  const home = opts.homeDir?.target ?? host.home;
  ops.push(...identityOps(host, opts, home));
  const hostBound = bindingOps(opts.bindings, meta.platform.architecture);
  ops.push(...hostBound.ops.filter((o) => o.kind !== 'verify'));
  const bound = ['/proc', '/sys', '/dev', ...(opts.contain ? [] : ['/tmp'])];
  let bindHome = opts.home && !opts.contain && host.home !== '/' && !isUnder(host.home, bound);
  if (opts.homeDir) {
    // Bound even under --contain, as Apptainer's --home is: it was asked for.
    bindHome = true;
    ops.push(op('bind', opts.homeDir.source, home, ['rbind', 'nosuid', 'nodev'], 'create', `--home ${opts.homeDir.source}:${home}`));
    bound.push(home);
  } else if (bindHome) {
    ops.push(op('bind', host.home, host.home, ['rbind', 'nosuid', 'nodev'], 'create', `home: ${host.home}`));
    bound.push(host.home);
  } else if (opts.contain && opts.home && home !== '/') {
    // Apptainer's --contain: an empty home of the container's own, writable, gone at exit.
    bindHome = true;
    ops.push(op('tmpfs', '', home, ['nosuid', 'nodev', 'mode=700'], 'create', '--contain: an empty home of its own'));
  }
  const bindCwd = opts.home && !opts.contain && host.cwd !== '/' && !isUnder(host.cwd, bound);
  if (bindCwd) {
    ops.push(op('bind', host.cwd, host.cwd, ['rbind', 'nosuid', 'nodev'], 'create', `working directory: ${host.cwd}`));
  }
  for (const b of opts.binds) {
    ops.push(op('bind', b.source, b.target, ['rbind', 'nosuid', 'nodev', ...(b.readOnly ? ['ro'] : []), ...(b.options ?? [])], 'create', `--bind ${b.source}:${b.target}`));
  }
  // `run` starts the image's own program where its author said (WorkingDir), as docker run
  // does; exec and shell start where the user is, when that is bound in (Apptainer's habit,
  // which job scripts with relative paths rely on), else in WorkingDir. --pwd wins over both.
  const hostCwdInside = bindCwd || (opts.home && !opts.contain && isUnder(host.cwd, bound));
  const workingDir = meta.config.WorkingDir || '/';
  const cwd = opts.pwd ?? (cmd.mode === 'run' || !hostCwdInside ? workingDir : host.cwd);
  if (!cwd.startsWith('/')) throw new BerthError('USAGE', `--pwd ${cwd}: must be an absolute path`, 'e.g. --pwd /data');
  ops.push(op('mkdir', '', cwd, [], 'create', 'working directory'));
  if (!bindHome && !opts.fakeroot) ops.push(op('mkdir', '', home, [], 'create', HOME_NOT_BOUND));

  const imageEnv = meta.startup === 'apptainer' ? apptainerEnv(image) : [];
  const env = buildEnv(meta, host, { ...opts, env: [...imageEnv, ...hostBound.env, ...opts.env] }, cwd, home);
  if (hostBound.libraryPath.length > 0) {
    // The host libraries first, so that they win over any the image has.
    const before = env.get('LD_LIBRARY_PATH');
    env.set('LD_LIBRARY_PATH', [...hostBound.libraryPath, ...(before ? [before] : [])].join(':'));
  }
  // Checked last, when every file is in place.
  ops.push(...hostBound.ops.filter((o) => o.kind === 'verify'));
  return {
    image,
    imageFormat: location.format,
    imageOffset: location.offset,
    scope: host.scope,
    linger: host.linger,
    ...(host.jobLinger !== undefined ? { jobLinger: host.jobLinger } : {}),
    runtimeDir: host.runtimeDir,
    userns: opts.fakeroot ? 'root' : 'self',
    ...(opts.user ? { user: { uid: opts.user.uid, gid: opts.user.gid } } : {}),
    writable: opts.writableTmpfs || opts.overlay !== undefined,
    ...(opts.overlay ? { overlay: opts.overlay } : {}),
    pidns: wantsPidNamespace(opts),
    ...(opts.ipc ? { ipcns: true } : {}),
    ...(opts.hostname ? { hostname: opts.hostname } : {}),
    ...(opts.network ? { net: opts.network } : {}),
    cwd,
    path: env.get('PATH')!,
    env: [...env].map(([k, v]) => `${k}=${v}`),
    argv: commandLine(meta, cmd),
    ops,
  };
}

/**
 * The plan of a Slurm step's container, which every task of the step on a node joins (the
 * SPANK plugin, `berth srun`). The tasks differ in their environment (SLURM_PROCID, PMI
 * ranks, GPUs), so the plan carries the difference from the environment it was computed in:
 * what the container sets (the image's variables the host lacks, PATH, HOME, --env, the host
 * libraries' LD_LIBRARY_PATH) and the host variables it drops (ENV_DENY). `keep` names host
 * variables that pass as they are (pyxis's --container-env). The step container is per step
 * (it leaves `stepLinger` seconds after its last task); the image server is the job's, which
 * its later steps find warm (`jobLinger`).
 * --ipc, --hostname and --network none are the container's: made once by the step server on
 * each node and joined by every task there (native/helper/step.c). `overlayOfNode`: the
 * overlay is a directory of this node's alone (--container-save's), not one the nodes share.
 */
export function stepPlan(plan: LaunchPlan, host: HostFacts, keep: string[], stepLinger: number, init: string[] = [], overlayOfNode = false): LaunchPlan {
  if (plan.net?.mode === 'user') {
    // pasta must run in the host's network namespace, one per node and step, and a published
    // port would be each node's own: a service is a one-node thing, better as its own container.
    throw new BerthError('USAGE', '--network user and -p are not offered for Slurm steps: each node would need its own pasta, publishing the ports on that node',
      'use --network none (a loopback only, shared by the tasks of a node), or start the service with berth exec --network user -p ... in the job script');
  }
  if (plan.overlay && !overlayOfNode) {
    // Every node of a step would write the same upper directory at once, which overlayfs forbids.
    throw new BerthError('USAGE', '--overlay is not offered for Slurm steps: the nodes of a step would all write the one directory',
      'use --container-writable (a writable root per node, in memory), or berth exec --overlay DIR in a one-node job');
  }
  const full = new Map(plan.env.map((kv) => [kv.slice(0, kv.indexOf('=')), kv.slice(kv.indexOf('=') + 1)]));
  const env = [...full].filter(([k, v]) => host.env[k] !== v && !keep.includes(k)).map(([k, v]) => `${k}=${v}`);
  const unset = Object.keys(host.env).filter((k) => !full.has(k) && !keep.includes(k));
  // The tasks join by setns, which cannot put them in a PID namespace: a step shares the node's.
  const ops = plan.ops.map((o) => (o.kind === 'proc' ? op('bind', '/proc', '/proc', ['rbind', 'nosuid', 'nodev', 'noexec'], 'create', 'system: /proc') : o));
  return { ...plan, scope: '', pidns: false, ops, env, unset, stepLinger, inputs: [...STEP_PLAN_INPUTS], ...(init.length > 0 ? { init } : {}) };
}
