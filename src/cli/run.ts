// berth run | exec | shell IMAGE ...
import { readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { checkedFlag, config } from '../config/load.js';
import { flagAttribute, type ConfigValues, type Setting, type SettingKey } from '../config/schema.js';
import { BerthError } from '../errors.js';
import { ImageFiles } from '../image/files.js';
import { ALL_BINDINGS, bindingSettings, type Binding, type ImageView } from '../host/bindings.js';
import { hostFacts } from '../host/user.js';
import { buildPlan, parseBinds, parseEnvFile, type Command, type HostFacts, type RunOptions } from '../plan/build.js';
import { serializePlan } from '../plan/serialize.js';
import type { HostBinding, LaunchPlan } from '../plan/types.js';
import { runPlan } from '../runtime/helper.js';
import { openImage } from '../runtime/image.js';
import type { ImageMetadata } from '../squashfs/metadata.js';
import type { CommandResult } from '../main.js';

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
  dryRun?: boolean;
  rdma?: boolean;
  gpus?: string;
  mpi?: boolean;
  device?: string[];
  planFormat?: string;
}

/** A setting that has a flag: the flag for this container, else the configured value. */
function setting<K extends SettingKey>(key: K, flag: ConfigValues[K] | undefined): ConfigValues[K] {
  return flag ?? config().values[key];
}

export function runOptions(flags: RunFlags, image: { path: string; architecture: string }): RunOptions {
  // The site's and user's default binds (run.binds) come first, then --bind.
  const binds = parseBinds([...(config().values['run.binds']), ...(flags.bind ?? [])]).map((b) => ({ ...b, source: path.resolve(b.source) }));
  for (const b of binds) {
    if (!statSync(b.source, { throwIfNoEntry: false })) {
      throw new BerthError('BIND_SOURCE_MISSING', `--bind ${b.source}: no such file or directory on this node`,
        'check the path, or create it before the job starts');
    }
  }
  let env: string[] = [];
  if (flags.envFile) {
    let text: string;
    try {
      text = readFileSync(flags.envFile, 'utf8');
    } catch (e: unknown) {
      throw new BerthError('USAGE', `cannot read --env-file ${flags.envFile}: ${(e as Error).message}`, 'check the path');
    }
    env = parseEnvFile(text, flags.envFile);
  }
  return {
    binds,
    home: setting('run.home', flags.home) !== false,
    containall: flags.containall ?? false,
    writableTmpfs: flags.writableTmpfs ?? false,
    fakeroot: flags.fakeroot ?? false,
    pid: flags.pid ?? false,
    cleanenv: flags.cleanenv ?? false,
    env: [...env, ...(flags.env ?? [])],
    pwd: flags.pwd,
    bindings: hostBindings(flags, image),
  };
}

/** The image as the bindings see it, its files opened only if one asks. */
function imageView(image: { path: string; architecture: string }): ImageView & { close(): void } {
  let files: ImageFiles | undefined;
  return {
    ...image,
    files: () => (files ??= new ImageFiles(image.path, image.architecture === 'arm64' ? 'aarch64' : 'x86_64')),
    close: () => files?.close(),
  };
}

/** The values of a binding's flags that the command line gave, by setting, checked as its settings are. */
function flagsOf(flags: RunFlags, binding: Binding): Partial<ConfigValues> {
  const byAttribute: Record<string, unknown> = { ...flags };
  const out: Partial<ConfigValues> = {};
  const set = <K extends SettingKey>(key: K, value: unknown) => { out[key] = checkedFlag(key, value); };
  for (const [key, s] of Object.entries(binding.settings) as [SettingKey, Setting][]) {
    const value = s.flag ? byAttribute[flagAttribute(s.flag)] : undefined;
    if (value !== undefined) set(key, value);
  }
  return out;
}

/** What of this node goes into the container: what each binding (src/host/bindings.ts) adds. */
export function hostBindings(flags: RunFlags, image: { path: string; architecture: string }): HostBinding[] {
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

/** The launch plan for IMAGE (a file, or docker:// pulled through the cache) on this node, and the image's metadata. */
export async function preparePlan(mode: Command['mode'], image: string, args: string[], flags: RunFlags, host: HostFacts = hostFacts()): Promise<{ plan: LaunchPlan; metadata: ImageMetadata }> {
  if (image.startsWith('docker://')) {
    const { pullToCache } = await import('./pull.js');
    image = (await pullToCache(image, { platform: undefined }, 'quiet')).path;
  }
  const opened = await openImage(image);
  const options = runOptions(flags, { path: opened.path, architecture: opened.metadata.platform.architecture });
  return { plan: buildPlan(opened.path, opened.metadata, host, options, { mode, args } as Command), metadata: opened.metadata };
}

export const formatPlan = (plan: LaunchPlan, format: string | undefined) => (format === 'helper' ? serializePlan(plan) : JSON.stringify(plan, null, 2));

export async function runCommand(mode: Command['mode'], image: string, args: string[], flags: RunFlags): Promise<CommandResult> {
  if (args[0] === '--') args = args.slice(1); // `berth run IMAGE -- ARGS`: the -- only ends berth's options
  const { plan } = await preparePlan(mode, image, args, flags);
  if (flags.dryRun) return formatPlan(plan, flags.planFormat);
  return { exitCode: await runPlan(plan) };
}
