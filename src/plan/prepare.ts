// Preparing a container's launch plan: the image (a file, or docker:// through the cache) opened
// and checked, which settings win (a flag for this container, else the configuration), what
// each host binding adds (src/host/bindings.ts), then buildPlan, which is pure. The reading of
// files and of the node happens here, not in build.ts. Shared by berth run/exec/shell, berth
// plan (and its --slurm-step, the SPANK plugin's) and berth srun, so all of them plan alike.
import { readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { checkedFlag, config } from '../config/load.js';
import { flagAttribute, type ConfigValues, type Setting, type SettingKey } from '../config/schema.js';
import { BerthError, messageOf } from '../errors.js';
import { ALL_BINDINGS, bindingSettings, type Binding, type ImageView } from '../host/bindings.js';
import { hostFacts, runtimeDir } from '../host/user.js';
import { ImageFiles, type ImageLocation } from '../image/files.js';
import { imageFile, type AcquireEvents } from '../runtime/acquire.js';
import { openImage } from '../runtime/image.js';
import type { ImageMetadata } from '../squashfs/metadata.js';
import { listInstances } from '../runtime/instances.js';
import { buildPlan, commandLine, parseBinds, parseEnvFile, stepPlan, type Command, type HostFacts, type RunOptions } from './build.js';
import { checkInstanceName, checkJoinFlags, instanceCommand, INSTANCE_PREFIX, joinPlan, STARTSCRIPT } from './instance.js';
import type { HostBinding, LaunchPlan } from './types.js';

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

export function runOptions(flags: RunFlags, image: Target): RunOptions {
  return {
    binds: binds(flags),
    home: setting('run.home', flags.home) !== false,
    containall: flags.containall ?? false,
    writableTmpfs: flags.writableTmpfs ?? false,
    fakeroot: flags.fakeroot ?? false,
    pid: flags.pid ?? false,
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
  const { plan, metadata } = await preparePlan('exec', image, args, flags, pulls, host);
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
 * The plan of the instance NAME (berth instance start): the image's startscript or
 * Entrypoint/Cmd (plan/instance.ts), in a PID namespace of its own, which the helper always
 * gives an instance so that stopping it ends all of it.
 */
export async function prepareInstancePlan(name: string, image: string, args: string[], flags: RunFlags, pulls: AcquireEvents): Promise<LaunchPlan> {
  checkInstanceName(name);
  const opened = openImage(await imageFile(image, pulls));
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
  try {
    if (instance) argv = commandLine(openImage(instance.image).metadata, { mode, args } as Command);
  } catch (e: unknown) {
    // The image may be gone or replaced since the instance started (it runs from its mount):
    // a plain command still runs as it is; run and shell need the image's own rules.
    if (mode !== 'exec') throw e;
  }
  return joinPlan(name, runtime, argv, [...envFileLines(flags.envFile), ...(flags.env ?? [])], flags.pwd);
}
