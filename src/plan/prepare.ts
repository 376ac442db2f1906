// Preparing a container's launch plan: the image (a file, or docker:// through the cache) opened
// and checked, which settings win (a flag for this container, else the configuration), what
// each host binding adds (src/host/bindings.ts), then buildPlan, which is pure. The reading of
// files and of the node happens here, not in build.ts. Shared by berth run/exec/shell, berth
// plan (and its --slurm-step, the SPANK plugin's) and berth srun, so all of them plan alike.
import { readFileSync, statSync } from 'node:fs';
import { hostname } from 'node:os';
import path from 'node:path';
import { checkedFlag, config } from '../config/load.js';
import { flagAttribute, type ConfigValues, type Setting, type SettingKey } from '../config/schema.js';
import { BerthError, messageOf } from '../errors.js';
import { ALL_BINDINGS, bindingSettings, type Binding, type ImageView } from '../host/bindings.js';
import { findPasta } from '../host/network.js';
import { hostFacts, runtimeDir } from '../host/user.js';
import { ImageFiles, type ImageLocation } from '../image/files.js';
import { imageFile, type AcquireEvents } from '../runtime/acquire.js';
import { captureFromContainer } from '../runtime/helper.js';
import { openImage } from '../runtime/image.js';
import type { ImageMetadata } from '../squashfs/metadata.js';
import { buildPlan, checkHostname, withApptainerEnvScripts, parseBinds, parsePublish, parseEnvFile, stepPlan, type Command, type HostFacts, type RunOptions } from './build.js';
import type { HostBinding, LaunchPlan, Network } from './types.js';

/**
 * A container's options as the command line gives them (src/cli/options.ts makes the flags):
 * those that are settings under the names commander gives their flags, and the rest.
 */
export interface RunFlags {
  bind?: string[];
  home?: boolean;
  containall?: boolean;
  writableTmpfs?: boolean;
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

/** The site's and user's binds (run.binds) first, then --bind; each source must exist here. */
function binds(flags: RunFlags): RunOptions['binds'] {
  const specs = parseBinds([...config().values['run.binds'], ...(flags.bind ?? [])]).map((b) => ({ ...b, source: path.resolve(b.source) }));
  const missing = specs.find((b) => !statSync(b.source, { throwIfNoEntry: false }));
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
    throw new BerthError('USAGE', `cannot read --env-file ${file}: ${messageOf(e)}`, 'check the path');
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

export function runOptions(flags: RunFlags, image: Target): RunOptions {
  return {
    binds: binds(flags),
    home: setting('run.home', flags.home) !== false,
    containall: flags.containall ?? false,
    writableTmpfs: flags.writableTmpfs ?? false,
    fakeroot: flags.fakeroot ?? false,
    pid: flags.pid ?? false,
    ipc: flags.ipc ?? false,
    hostname: flags.hostname !== undefined ? checkHostname(flags.hostname) : flags.uts ? hostname() : undefined,
    network: network(flags),
    cleanenv: flags.cleanenv ?? false,
    env: [...envFileLines(flags.envFile), ...(flags.env ?? [])],
    pwd: flags.pwd,
    bindings: hostBindings(flags, image),
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
}

/**
 * The launch plan for IMAGE on this node, and the image's metadata. A docker:// reference is
 * pulled through the cache first, shown as `pulls` shows it.
 */
export async function preparePlan(mode: Command['mode'], image: string, args: string[], flags: RunFlags, pulls: AcquireEvents, host: HostFacts = hostFacts()): Promise<Prepared> {
  const opened = openImage(await imageFile(image, pulls));
  for (const line of opened.warnings) pulls.cacheWarning(`berth: warning: ${opened.location.path}: ${line}`);
  const options = runOptions(flags, { location: opened.location, architecture: opened.metadata.platform.architecture });
  return { plan: buildPlan(opened.location, opened.metadata, host, options, { mode, args }), metadata: opened.metadata };
}

/** How a Slurm step's container differs from a lone container. */
export interface StepOptions {
  /** Host variables that keep their host value inside, comma-separated (pyxis's --container-env). */
  keepEnv?: string;
  /** Seconds the step's container waits for the next task after the last has ended. */
  linger: number;
  /** Run the image's Entrypoint once, with `true` as its command, when the container starts (as pyxis runs it). */
  entrypoint?: boolean;
}

/** The plan of a Slurm step's container: the SPANK plugin's `berth plan --slurm-step`, and `berth srun`'s. */
export async function prepareStepPlan(image: string, args: string[], flags: RunFlags, step: StepOptions, pulls: AcquireEvents): Promise<LaunchPlan> {
  const host = stepHostFacts();
  const prepared = await preparePlan('exec', image, args, flags, pulls, host);
  const { metadata } = prepared;
  const plan = metadata.startup === 'apptainer' ? await withApptainerEnv(prepared.plan) : prepared.plan;
  const entrypoint = metadata.config.Entrypoint ?? [];
  const init = step.entrypoint && entrypoint.length > 0 ? [...entrypoint, 'true'] : [];
  return stepPlan(plan, host, (step.keepEnv ?? '').split(',').filter(Boolean), step.linger, init);
}

/** Host facts for a step: the runtime directory every node has (a login session's XDG_RUNTIME_DIR is not on them). */
export function stepHostFacts(): HostFacts {
  const host = hostFacts();
  return { ...host, runtimeDir: runtimeDir(host.uid, { ...process.env, XDG_RUNTIME_DIR: undefined }) };
}

/**
 * An Apptainer image's environment comes from its /.singularity.d/env scripts, which a lone
 * container sources before its command (build.ts wraps it). A step's tasks are started by
 * slurmstepd with their own command line, which nothing can wrap: so the scripts are sourced
 * once, in a container of the plan, and what they exported joins the plan's environment.
 */
async function withApptainerEnv(plan: LaunchPlan): Promise<LaunchPlan> {
  // The environment as the scripts leave it, NUL-separated: exact whatever the values hold.
  const probe = { ...plan, linger: 0, argv: withApptainerEnvScripts(['cat', '/proc/self/environ']) };
  const { code, stdout } = await captureFromContainer(probe);
  if (code !== 0) {
    throw new BerthError('IMAGE_UNSUPPORTED', `the image's /.singularity.d/env scripts could not be sourced for the step (status ${code}; its messages are above)`,
      'fix the scripts, or run the step with berth exec IMAGE inside the job script');
  }
  const before = new Map(plan.env.map((kv) => [kv.slice(0, kv.indexOf('=')), kv]));
  const sourced = stdout.toString('utf8').split('\0').filter((kv) => kv.includes('='));
  const changed = sourced.filter((kv) => {
    const key = kv.slice(0, kv.indexOf('='));
    return !SHELL_OWN.has(key) && before.get(key) !== kv;
  });
  const keys = new Set(changed.map((kv) => kv.slice(0, kv.indexOf('='))));
  const env = [...plan.env.filter((kv) => !keys.has(kv.slice(0, kv.indexOf('=')))), ...changed];
  const path = env.find((kv) => kv.startsWith('PATH='))?.slice(5) ?? plan.path;
  return { ...plan, env, path };
}

/** Variables the shell sets for itself, not the image's. */
const SHELL_OWN = new Set(['PWD', 'OLDPWD', 'SHLVL', '_']);
