// Preparing a container's launch plan: the image (a file, or docker:// through the cache) opened
// and checked, which settings win (a flag for this container, else the configuration), what
// each host binding adds (src/host/bindings.ts), then buildPlan, which is pure. The reading of
// files and of the node happens here, not in build.ts. Shared by berth run/exec/shell, berth
// plan (and its --slurm-step, the SPANK plugin's) and berth srun, so all of them plan alike.
import { lstatSync, mkdirSync, readFileSync, statSync, writeFileSync, type Stats } from 'node:fs';
import { hostname } from 'node:os';
import path from 'node:path';
import { checkedFlag, config } from '../config/load.js';
import { flagAttribute, type ConfigValues, type Setting, type SettingKey } from '../config/schema.js';
import { BerthError, EXIT, osError } from '../errors.js';
import { ALL_BINDINGS, bindingSettings, type Binding, type ImageView } from '../host/bindings.js';
import { findPasta } from '../host/network.js';
import { hostFacts, jobImageLinger, runtimeDir } from '../host/user.js';
import { ImageFiles, type ImageLocation } from '../image/files.js';
import { imageSource, vouchedFor, type AcquireEvents } from '../runtime/acquire.js';
import { captureFromContainer } from '../runtime/helper.js';
import { openImage } from '../runtime/image.js';
import { currentPolicy, describeVerdict, judgeImage, readProvenance } from '../signature/provenance.js';
import { hasPolicy } from '../signature/decide.js';
import type { ImageMetadata } from '../squashfs/metadata.js';
import { listInstances } from '../runtime/instances.js';
import { hasLimits, parseLimits } from './limits.js';
import { buildPlan, checkHostname, commandLine, APPTAINER_ENV_PROBE, parseBinds, parsePublish, parseEnvFile, stepPlan, type Command, type HostFacts, type RunOptions } from './build.js';
import { checkInstanceName, checkJoinFlags, instanceCommand, INSTANCE_PREFIX, joinPlan, STARTSCRIPT } from './instance.js';
import type { HostBinding, LaunchPlan, Network } from './types.js';

/**
 * A container's options as the command line gives them (src/cli/options.ts makes the flags):
 * those that are settings under the names commander gives their flags, and the rest.
 */
export interface RunFlags {
  /**
   * The image is the Slurm plugin's staged copy of a registry image it pulled into the user's
   * cache (the plugin's --staged-registry-image, never the user's): its verdict is the cache's.
   */
  stagedRegistryImage?: boolean;
  bind?: string[];
  /** -H, --home SRC[:DST]; false for --no-home. */
  home?: string | boolean;
  mountHome?: boolean;
  contain?: boolean;
  containall?: boolean;
  user?: string;
  /** Aliases (src/cli/habits.ts): --nv and --rocm of --gpus all, --cwd and -w of --pwd, -v of --bind. */
  nv?: boolean;
  rocm?: boolean;
  cwd?: string;
  workdir?: string;
  volume?: string[];
  writableTmpfs?: boolean;
  overlay?: string;
  fakeroot?: boolean;
  pid?: boolean;
  ipc?: boolean;
  uts?: boolean;
  hostname?: string;
  net?: boolean;
  network?: string;
  publish?: string[];
  cleanenv?: boolean;
  env?: string[];
  envFile?: string;
  pwd?: string;
  rdma?: boolean;
  gpus?: string;
  mpi?: boolean;
  device?: string[];
  /** --memory, --cpus, --pids-limit, --limits (plan/limits.ts). */
  memory?: string;
  cpus?: string;
  pidsLimit?: string;
  limits?: string;
}

/** Image and node as the plan is made for them. */
interface Target {
  location: ImageLocation;
  architecture: string;
}

/** A setting that has a flag: the flag for this container, else the configured value. */
function setting<K extends SettingKey>(key: K, flag: ConfigValues[K] | undefined): ConfigValues[K] {
  return flag ?? config().values[key];
}

/** A path the user named, stat'ed: an operating-system error becomes berth's, naming the flag. */
/** stat (or lstat, `follow` false) with an OS error in berth's form, naming `subject`. */
function statPath(file: string, subject: string, follow = true): Stats | undefined {
  try {
    return (follow ? statSync : lstatSync)(file, { throwIfNoEntry: false });
  } catch (e: unknown) {
    throw osError(e, subject) ?? e;
  }
}

/**
 * Apptainer's environment habits: APPTAINER_BIND/SINGULARITY_BIND (binds, comma-separated) and
 * APPTAINERENV_NAME/SINGULARITYENV_NAME (NAME=value inside), as Apptainer reads them;
 * APPTAINER_ wins over SINGULARITY_, and the command line over both.
 */
export function apptainerEnvironment(env: NodeJS.ProcessEnv): { binds: string[]; env: string[] } {
  const binds = [env.SINGULARITY_BIND, env.APPTAINER_BIND].filter((v): v is string => !!v);
  const vars = new Map<string, string>();
  for (const prefix of ['SINGULARITYENV_', 'APPTAINERENV_']) {
    for (const [k, v] of Object.entries(env)) {
      if (k.startsWith(prefix) && k.length > prefix.length && v !== undefined) vars.set(k.slice(prefix.length), v);
    }
  }
  return { binds, env: [...vars].map(([k, v]) => `${k}=${v}`) };
}

/**
 * --env values: `--env A=1,B=2` is two variables, as Apptainer splits them (a comma followed by
 * NAME= starts the next, so `--env DIRS=a,b` stays one), and `--env NAME` (Docker's) passes the
 * host's value of NAME, refused where the host has none.
 */
export function expandEnvFlags(values: string[], env: NodeJS.ProcessEnv): string[] {
  return values.flatMap((value) => {
    if (value.includes('=')) return value.split(/,(?=[A-Za-z_][A-Za-z0-9_]*=)/);
    if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(value)) throw new BerthError('USAGE', `invalid --env '${value}'`, "write it as NAME=VALUE, or NAME to pass the host's value");
    const host = env[value];
    if (host === undefined) throw new BerthError('USAGE', `--env ${value}: ${value} is not set here, so there is no value to pass`, `set it first, or write --env ${value}=VALUE`);
    return [`${value}=${host}`];
  });
}

/** The site's and user's binds (run.binds), APPTAINER_BIND, then --bind and -v; each source must exist here. */
function binds(flags: RunFlags): RunOptions['binds'] {
  const given = [...config().values['run.binds'], ...apptainerEnvironment(process.env).binds, ...(flags.bind ?? []), ...(flags.volume ?? [])];
  const specs = parseBinds(given).map((b) => ({ ...b, source: path.resolve(b.source) }));
  const missing = specs.find((b) => !statPath(b.source, `--bind ${b.source}:${b.target}`));
  if (missing) {
    throw new BerthError('BIND_SOURCE_MISSING', `--bind ${missing.source}: no such file or directory on this node`, 'check the path, or create it before the job starts');
  }
  return specs;
}

function envFileLines(file: string | undefined): string[] {
  if (!file) return [];
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e: unknown) {
    throw osError(e, `cannot read --env-file ${file}`) ?? e;
  }
  return parseEnvFile(text, file);
}

/**
 * --network none|user|host, with Apptainer's --net and Docker's -p (both mean user-mode
 * networking here: the namespace is unprivileged, so pasta stands in for a bridge).
 */
function network(flags: RunFlags): Network | undefined {
  const publish = (flags.publish ?? []).map(parsePublish);
  const mode = flags.network ?? (flags.net || publish.length > 0 ? 'user' : 'host');
  if (mode !== 'host' && mode !== 'none' && mode !== 'user') {
    throw new BerthError('USAGE', `--network ${mode}: berth knows none (a loopback only), user (pasta's user-mode network) and host (the default)`,
      'e.g. --network none; bridges and CNI networks need root, which berth never has');
  }
  if (publish.length > 0 && mode !== 'user') {
    throw new BerthError('USAGE', `-p/--publish needs --network user, not --network ${mode}`, 'leave out --network: -p alone asks for user-mode networking');
  }
  if (mode === 'host') return undefined;
  return mode === 'none' ? { mode } : { mode, pasta: findPasta(), publish };
}

/**
 * --overlay DIR (Apptainer's writable overlay directory): the root's changes are kept in
 * DIR/upper. Made (0700) if it is missing; otherwise it must be a directory of the caller's that
 * no one else can write, since whatever is in it becomes the container's root.
 */
function overlayDir(spec: string): string {
  const dir = path.resolve(spec);
  if (!statPath(dir, `--overlay ${dir}`, false)) {
    try {
      mkdirSync(dir, { mode: 0o700 });
    } catch (e: unknown) {
      throw osError(e, `--overlay ${dir}`) ?? e;
    }
  }
  return checkOverlayDir(dir, '--overlay');
}

/** An overlay directory as berth may use it: a directory of the caller's that no one else can write. */
export function checkOverlayDir(spec: string, flag: string): string {
  const dir = path.resolve(spec);
  const st = statPath(dir, `${flag} ${dir}`, false);
  if (!st) throw new BerthError('SOURCE_NOT_FOUND', `${flag} ${dir} does not exist`, 'name the directory given to --overlay');
  if (!st.isDirectory()) throw new BerthError('USAGE', `${flag} ${dir}: not a directory${st.isSymbolicLink() ? ' (a symlink: name the directory itself)' : ''}`, 'name a directory of yours, or a path where berth may make one');
  if (st.uid !== process.getuid!() || (st.mode & 0o022) !== 0) {
    throw new BerthError('USAGE', `${flag} ${dir} is not yours alone (owner uid ${st.uid}, mode ${(st.mode & 0o7777).toString(8).padStart(4, '0')}): what is in it becomes the container's root, and any image made from it`,
      `use a directory only you can write (chmod go-w ${dir}, or a new one)`);
  }
  return dir;
}

/** Where an overlay directory notes the image its changes lie over (berth commit's default base). */
const OVERLAY_BASE = 'berth-image';

/** The image `dir` was first used with, if berth noted it. */
export function overlayBase(dir: string): string | undefined {
  try {
    return readFileSync(path.join(dir, OVERLAY_BASE), 'utf8').trim() || undefined;
  } catch {
    return undefined;
  }
}

/** Notes the image on first use; says so when the overlay's changes now lie over another. */
function noteOverlayBase(dir: string, image: string, warn: (line: string) => void): void {
  const noted = overlayBase(dir);
  if (noted === undefined) {
    try {
      writeFileSync(path.join(dir, OVERLAY_BASE), `${image}\n`, { mode: 0o600, flag: 'wx' });
    } catch {
      // Not noted: berth commit then asks for the image.
    }
  } else if (noted !== image) {
    warn(`berth: warning: the overlay ${dir} was made over ${noted}; its changes now lie over ${image}`);
  }
}

/** -H, --home SRC[:DST] (Apptainer's): SRC must be a directory here; DST defaults to SRC. */
function homeDir(spec: string | boolean | undefined): RunOptions['homeDir'] {
  if (typeof spec !== 'string') return undefined;
  const [src, dst, extra] = spec.split(':');
  if (!src || extra !== undefined) throw new BerthError('USAGE', `invalid --home '${spec}'`, 'write it as SRC[:DST], e.g. --home /scratch/me:/home/me');
  const source = path.resolve(src);
  const target = dst || source;
  if (!target.startsWith('/')) throw new BerthError('USAGE', `--home '${spec}': the home inside must be an absolute path`, 'e.g. --home ./myhome:/home/me');
  const st = statPath(source, `--home ${source}`);
  if (!st) throw new BerthError('BIND_SOURCE_MISSING', `--home ${source}: no such directory on this node`, 'create it first, or name another');
  if (!st.isDirectory()) throw new BerthError('USAGE', `--home ${source}: not a directory`, 'name a directory to be the home inside');
  return { source, target };
}

/** A `name:x:id:gid:...` file of the image (/etc/passwd, /etc/group), as [name, id, gid, home] rows. */
function accounts(image: Target, file: string): string[][] {
  const view = imageView(image);
  try {
    return (view.files().read(file)?.toString('utf8') ?? '').split('\n').map((l) => l.split(':')).filter((f) => f.length >= 3).map((f) => [f[0]!, f[2]!, f[3] ?? '', f[5] ?? '']);
  } catch {
    return []; // an image without them, or unreadable: numbers still work
  } finally {
    view.close();
  }
}

/**
 * -u, --user UID[:GID] or NAME[:GROUP] (docker run's): names are the image's (/etc/passwd,
 * /etc/group); a uid without a group takes its passwd entry's, else 0, as Docker does.
 * `written` is how the caller's user wrote it, for messages: `--user` (the default), or
 * berth build's `USER` and `--chown=`.
 */
export function parseUser(spec: string | undefined, image: Target, written = '--user'): RunOptions['user'] {
  if (spec === undefined) return undefined;
  const as = (v: string) => `${written}${written.endsWith('=') ? '' : ' '}${v}`;
  const [u, g, extra] = spec.split(':');
  if (!u || extra !== undefined || g === '') throw new BerthError('USAGE', `invalid ${as(`'${spec}'`)}`, `write it as UID[:GID] or NAME[:GROUP], e.g. ${as('1000:1000')}`);
  const id = (v: string) => /^\d+$/.test(v) && Number(v) < 4294967295;
  const passwd = id(u) && g !== undefined && id(g) ? [] : accounts(image, '/etc/passwd');
  const entry = id(u) ? passwd.find((f) => f[1] === u) : passwd.find((f) => f[0] === u);
  if (!id(u) && !entry) throw new BerthError('USAGE', `${as(u)}: the image has no such user in /etc/passwd`, `give a number instead (${as('UID[:GID]')}), or add the user to the image first`);
  const uid = Number(id(u) ? u : entry![1]);
  let gid = entry && /^\d+$/.test(entry[2]!) ? Number(entry[2]) : 0;
  if (g !== undefined) {
    const group = id(g) ? undefined : accounts(image, '/etc/group').find((f) => f[0] === g);
    if (!id(g) && !group) throw new BerthError('USAGE', `${as(spec)}: the image has no group ${g} in /etc/group`, `give a number instead (${as('UID:GID')}), or add the group to the image first`);
    gid = Number(id(g) ? g : group![1]);
  }
  return { uid, gid, ...(entry ? { name: entry[0] } : {}), ...(entry?.[3] ? { home: entry[3] } : {}) };
}

export function runOptions(flags: RunFlags, image: Target): RunOptions {
  const containall = flags.containall ?? false;
  const dir = homeDir(flags.home);
  return {
    binds: binds(flags),
    home: flags.home === false ? false : setting('run.home', flags.mountHome) !== false || dir !== undefined,
    ...(dir ? { homeDir: dir } : {}),
    // Apptainer's --containall is --contain with a clean environment and PIDs of its own.
    contain: (flags.contain ?? false) || containall,
    writableTmpfs: flags.writableTmpfs ?? false,
    overlay: flags.overlay !== undefined ? overlayDir(flags.overlay) : undefined,
    fakeroot: flags.fakeroot ?? false,
    ...(flags.user !== undefined ? { user: parseUser(flags.user, image) } : {}),
    pid: (flags.pid ?? false) || containall,
    ipc: (flags.ipc ?? false) || containall,
    hostname: flags.hostname !== undefined ? checkHostname(flags.hostname) : flags.uts ? hostname() : undefined,
    network: network(flags),
    cleanenv: (flags.cleanenv ?? false) || containall,
    env: [...apptainerEnvironment(process.env).env, ...envFileLines(flags.envFile), ...expandEnvFlags(flags.env ?? [], process.env)],
    pwd: flags.pwd ?? flags.cwd ?? flags.workdir,
    bindings: hostBindings({ ...flags, gpus: flags.gpus ?? (flags.nv || flags.rocm ? 'all' : undefined) }, image),
  };
}

/** The image as the bindings see it, its files opened only if one asks. */
function imageView(image: Target): ImageView & { close(): void } {
  let files: ImageFiles | undefined;
  return {
    path: image.location.path,
    architecture: image.architecture,
    files: () => (files ??= new ImageFiles(image.location, image.architecture === 'arm64' ? 'aarch64' : 'x86_64')),
    close: () => files?.close(),
  };
}

/** The values the command line gave a binding's flags, by setting, checked as its settings are. */
function flagsOf(flags: RunFlags, binding: Binding): Partial<ConfigValues> {
  const byAttribute: Record<string, unknown> = { ...flags };
  const out: Partial<ConfigValues> = {};
  const set = <K extends SettingKey>(key: K, value: unknown) => {
    out[key] = checkedFlag(key, value);
  };
  for (const [key, s] of Object.entries(binding.settings) as [SettingKey, Setting][]) {
    const value = s.flag ? byAttribute[flagAttribute(s.flag)] : undefined;
    if (value !== undefined) set(key, value);
  }
  return out;
}

/** What of this node goes into the container: what each binding adds, in the order of BINDINGS. */
export function hostBindings(flags: RunFlags, image: Target): HostBinding[] {
  const values = config().values;
  const view = imageView(image);
  try {
    return ALL_BINDINGS.flatMap((b) => {
      const { settings, given } = bindingSettings(b, values, flagsOf(flags, b));
      return b.plan(b.facts(values['host.root'], settings), { settings, given, env: process.env, image: view });
    });
  } finally {
    view.close();
  }
}

export interface Prepared {
  plan: LaunchPlan;
  metadata: ImageMetadata;
  /** The signature policy's verdict in words, where there is a policy. */
  verdict?: string;
}

/**
 * The launch plan for IMAGE on this node, and the image's metadata. A docker:// reference is
 * pulled through the cache first, shown as `pulls` shows it.
 */
export async function preparePlan(mode: Command['mode'], image: string, args: string[], flags: RunFlags, pulls: AcquireEvents, host: HostFacts = hostFacts(),
  entrypoint?: string): Promise<Prepared> {
  const source = await imageSource(image, pulls);
  const opened = openImage(source.path);
  // The site's signature policy, against the verdict the image carries (or as a local image): refused before anything starts.
  const verdict = judgeImage(opened.metadata, opened.location.path, () => flags.stagedRegistryImage === true || vouchedFor(source, opened.metadata.manifestDigest, pulls));
  for (const line of opened.warnings) pulls.cacheWarning(`berth: warning: ${opened.location.path}: ${line}`);
  const options = runOptions(flags, { location: opened.location, architecture: opened.metadata.platform.architecture });
  if (options.overlay) noteOverlayBase(options.overlay, opened.location.path, pulls.cacheWarning);
  const cmd: Command = mode === 'run' ? { mode, args, ...(entrypoint !== undefined ? { entrypoint } : {}) } : { mode, args };
  const { limits, mode: limitsMode } = parseLimits(flags);
  const plan = buildPlan(opened.location, opened.metadata, host, options, cmd);
  return { plan: hasLimits(limits) ? { ...plan, limits, ...(limitsMode === 'best-effort' ? { limitsBestEffort: true } : {}) } : plan, metadata: opened.metadata,
    ...(verdict ? { verdict: describeVerdict(verdict, readProvenance(opened.metadata)?.verifiedAt) } : {}) };
}

/**
 * --memory, --cpus, --pids-limit where berth does not make the container's cgroup: a Slurm
 * step's tasks are in the job's cgroup, which Slurm made and limits (never fought); an
 * instance outlives berth, which removes a container's cgroup when it ends.
 */
function refuseLimits(flags: RunFlags, where: 'step' | 'instance'): void {
  if (!hasLimits(parseLimits(flags).limits)) return;
  throw where === 'step'
    ? new BerthError('USAGE', "--memory, --cpus and --pids-limit are not for a Slurm step: the job's cgroup, which Slurm made, already limits every task of the step",
      'ask Slurm for the limits: srun/sbatch --mem, --cpus-per-task (Slurm\'s cgroup plugin enforces them)')
    : new BerthError('USAGE', '--memory, --cpus and --pids-limit are not (yet) taken by berth instance start',
      'run the service with berth run and the limits, or start the instance in a cgroup of yours (systemd-run --user --scope -p MemoryMax=4G berth instance start ...)');
}

/** How a Slurm step's container differs from a lone container. */
export interface StepOptions {
  /** Host variables that keep their host value inside, comma-separated (pyxis's --container-env). */
  keepEnv?: string;
  /** Seconds the step's container waits for the next task after the last has ended. */
  linger: number;
  /** Run the image's Entrypoint once, with `true` as its command, when the container starts (as pyxis runs it). */
  entrypoint?: boolean;
  /**
   * --container-save: the container's writable layer goes to this directory of the node's (in
   * the user's runtime directory, one per step and node), not to memory, so that the plugin can
   * commit it when the step ends there.
   */
  saveOverlay?: string;
}

/** The plan of a Slurm step's container: the SPANK plugin's `berth plan --slurm-step`, and `berth srun`'s. */
export async function prepareStepPlan(image: string, args: string[], flags: RunFlags, step: StepOptions, pulls: AcquireEvents): Promise<LaunchPlan> {
  refuseLimits(flags, 'step');
  if (flags.uts && flags.hostname === undefined) {
    // --uts alone is this node's name, and `berth srun` makes the plan once on the login node.
    throw new BerthError('USAGE', '--uts needs --hostname NAME in a Slurm step', 'e.g. --hostname worker: every task of the step sees that name (the node\'s own is what it sees without --uts)');
  }
  const host = stepHostFacts();
  const prepared = await preparePlan('exec', image, args, step.saveOverlay ? { ...flags, overlay: step.saveOverlay } : flags, pulls, host);
  const { metadata } = prepared;
  // In the job's log: exactly what the step runs, and who signed it.
  if (prepared.verdict) pulls.cacheWarning(`berth: image ${prepared.verdict}`);
  const sourced = metadata.startup === 'apptainer' ? await withApptainerEnv(prepared.plan) : { plan: prepared.plan, unset: [] };
  const entrypoint = metadata.config.Entrypoint ?? [];
  const init = step.entrypoint && entrypoint.length > 0 ? [...entrypoint, 'true'] : [];
  const plan = stepPlan(sourced.plan, host, (step.keepEnv ?? '').split(',').filter(Boolean), step.linger, init, step.saveOverlay !== undefined);
  return sourced.unset.length > 0 ? { ...plan, unset: [...new Set([...(plan.unset ?? []), ...sourced.unset])] } : plan;
}

/**
 * Host facts for a step: the runtime directory every node has (a login session's
 * XDG_RUNTIME_DIR is not on them), and a job's linger (`berth srun` may plan before the job is).
 */
export function stepHostFacts(): HostFacts {
  const host = hostFacts();
  return { ...host, runtimeDir: runtimeDir(host.uid, { ...process.env, XDG_RUNTIME_DIR: undefined }), jobLinger: jobImageLinger(process.env) };
}

/**
 * An Apptainer image's environment comes from its /.singularity.d/env scripts, which a lone
 * container sources before its command (build.ts wraps it). A step's tasks are started by
 * slurmstepd with their own command line, which nothing can wrap: so the scripts are sourced
 * once, in a container of the plan, and what they exported joins the plan's environment.
 */
async function withApptainerEnv(plan: LaunchPlan): Promise<{ plan: LaunchPlan; unset: string[] }> {
  // In a container of the caller's own runtime directory (a login session's, not the step's),
  // with the scripts' own output sent to stderr: stdout is the environment, NUL-separated.
  const probe = { ...plan, linger: 0, scope: '', runtimeDir: hostFacts().runtimeDir, argv: APPTAINER_ENV_PROBE };
  const { code, stdout } = await captureFromContainer(probe);
  if (code !== 0) {
    throw new BerthError('IMAGE_UNSUPPORTED', code === EXIT.notFound
      ? "the image has no /bin/sh or cat, which berth needs to read the environment its /.singularity.d/env scripts make for a Slurm step"
      : `the image's /.singularity.d/env scripts could not be read for the step (status ${code}; the reason is above)`,
    'fix the scripts, or run the step with berth exec IMAGE inside the job script');
  }
  const key = (kv: string) => kv.slice(0, kv.indexOf('='));
  const before = new Map(plan.env.map((kv) => [key(kv), kv]));
  const sourced = stdout.toString('utf8').split('\0').filter((kv) => kv.includes('=') && !SHELL_OWN.has(key(kv)));
  const after = new Set(sourced.map(key));
  const changed = sourced.filter((kv) => before.get(key(kv)) !== kv);
  // What the scripts unset goes, from the plan and from each task's own environment.
  const unset = [...before.keys()].filter((k) => !after.has(k) && !SHELL_OWN.has(k));
  const replaced = new Set([...changed.map(key), ...unset]);
  const env = [...plan.env.filter((kv) => !replaced.has(key(kv))), ...changed];
  const path = env.find((kv) => kv.startsWith('PATH='))?.slice(5) ?? plan.path;
  return { plan: { ...plan, env, path }, unset };
}

/** Variables the shell sets for itself, not the image's. */
const SHELL_OWN = new Set(['PWD', 'OLDPWD', 'SHLVL', '_']);

/**
 * The plan of the instance NAME (berth instance start): the image's startscript or
 * Entrypoint/Cmd (plan/instance.ts), in a PID namespace of its own, which the helper always
 * gives an instance so that stopping it ends all of it.
 */
export async function prepareInstancePlan(name: string, image: string, args: string[], flags: RunFlags, pulls: AcquireEvents): Promise<LaunchPlan> {
  checkInstanceName(name);
  refuseLimits(flags, 'instance');
  const source = await imageSource(image, pulls);
  const opened = openImage(source.path);
  judgeImage(opened.metadata, opened.location.path, () => vouchedFor(source, opened.metadata.manifestDigest, pulls));
  for (const line of opened.warnings) pulls.cacheWarning(`berth: warning: ${opened.location.path}: ${line}`);
  const target = { location: opened.location, architecture: opened.metadata.platform.architecture };
  const options = { ...runOptions(flags, target), pid: true };
  const hasStartscript = opened.metadata.startup === 'apptainer' && hasFile(target, STARTSCRIPT);
  const command = instanceCommand(opened.metadata, args, hasStartscript);
  const plan = buildPlan(opened.location, opened.metadata, hostFacts(), options, command === 'hold' ? { mode: 'exec', args: [] } : command);
  return { ...plan, argv: command === 'hold' ? [] : plan.argv, instance: name };
}

function hasFile(image: Target, file: string): boolean {
  const view = imageView(image);
  try {
    return view.files().realpath(file) !== undefined;
  } finally {
    view.close();
  }
}

/** Whether IMAGE names an instance (exec instance://NAME) rather than an image. */
export function isInstanceReference(image: string): boolean {
  return image.startsWith(INSTANCE_PREFIX);
}

/**
 * The plan that runs a command in a running instance: the command line as `mode` makes it for
 * the instance's image (an Apptainer image's environment scripts sourced first), --env,
 * --env-file and --pwd; the helper takes the rest from the instance (plan/instance.ts).
 */
export function prepareJoinPlan(mode: Command['mode'], reference: string, args: string[], flags: RunFlags): LaunchPlan | { exitCode: number } {
  const name = reference.slice(INSTANCE_PREFIX.length);
  checkInstanceName(name);
  checkJoinFlags(name, flags as Record<string, unknown>);
  const runtime = hostFacts().runtimeDir;
  const listed = listInstances(runtime);
  if ('exitCode' in listed) return listed;
  // One that is not there (or not running) is the helper's to refuse, as every instance failure is.
  const instance = listed.instances.find((i) => i.name === name && i.status === 'running');
  let argv = args;
  // Under a signature policy, joining is starting something in the image: it is judged again,
  // by the policy of the day, as a new container of it would be (an image that is gone or
  // replaced since the instance started cannot be judged, and is refused).
  if (instance && hasPolicy(currentPolicy())) {
    const opened = openImage(instance.image);
    judgeImage(opened.metadata, instance.image, () => vouchedFor({ path: instance.image, cached: false }, opened.metadata.manifestDigest, { cacheWarning: () => {} }));
  }
  try {
    if (instance) argv = commandLine(openImage(instance.image).metadata, { mode, args } as Command);
  } catch (e: unknown) {
    // The image may be gone or replaced since the instance started (it runs from its mount):
    // a plain command still runs as it is; run and shell need the image's own rules.
    if (mode !== 'exec') throw e;
  }
  return joinPlan(name, runtime, argv, [...envFileLines(flags.envFile), ...(flags.env ?? [])], flags.pwd);
}
