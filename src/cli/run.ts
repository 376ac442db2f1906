// berth run | exec | shell IMAGE ...
import { readFileSync } from 'node:fs';
import { statSync } from 'node:fs';
import path from 'node:path';
import { config } from '../config/load.js';
import { BerthError } from '../errors.js';
import { rdmaDevices, rdmaFacts, type RdmaFacts } from '../host/rdma.js';
import { hostFacts } from '../host/user.js';
import { buildPlan, parseBinds, parseEnvFile, type Command, type RunOptions } from '../plan/build.js';
import { serializePlan } from '../plan/serialize.js';
import { runPlan } from '../runtime/helper.js';
import { openImage } from '../runtime/image.js';
import type { CommandResult } from '../main.js';

export interface RunFlags {
  bind?: string[];
  home?: boolean;
  containall?: boolean;
  writableTmpfs?: boolean;
  fakeroot?: boolean;
  cleanenv?: boolean;
  env?: string[];
  envFile?: string;
  pwd?: string;
  dryRun?: boolean;
  /** true: --rdma, false: --no-rdma, undefined: where /dev/infiniband has devices. */
  rdma?: boolean;
  planFormat?: string;
}

export function runOptions(flags: RunFlags): RunOptions {
  // The site's and user's default binds (run.binds) come first, then --bind.
  const defaults = config().values['run.binds'] as string[];
  const binds = parseBinds([...defaults, ...(flags.bind ?? [])]).map((b) => ({ ...b, source: path.resolve(b.source) }));
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
    home: flags.home !== false,
    containall: flags.containall ?? false,
    writableTmpfs: flags.writableTmpfs ?? false,
    fakeroot: flags.fakeroot ?? false,
    cleanenv: flags.cleanenv ?? false,
    env: [...env, ...(flags.env ?? [])],
    pwd: flags.pwd,
    rdma: rdmaFor(flags.rdma),
  };
}

function rdmaFor(flag: boolean | undefined): RdmaFacts | undefined {
  if (flag === false || (flag === undefined && rdmaDevices().length === 0)) return undefined;
  const facts = rdmaFacts();
  if (flag && facts.files.length === 0) {
    throw new BerthError('USAGE', '--rdma: this node has no libibverbs in its ld.so cache', 'install rdma-core (libibverbs) on the node, or leave out --rdma');
  }
  return facts;
}

export async function runCommand(mode: Command['mode'], image: string, args: string[], flags: RunFlags): Promise<CommandResult> {
  if (args[0] === '--') args = args.slice(1); // `berth run IMAGE -- ARGS`: the -- only ends berth's options
  if (image.startsWith('docker://')) {
    const { pullToCache } = await import('./pull.js');
    image = (await pullToCache(image, { platform: undefined }, 'quiet')).path;
  }
  const opened = await openImage(image);
  const plan = buildPlan(opened.path, opened.metadata, hostFacts(), runOptions(flags), { mode, args } as Command);
  if (flags.dryRun) return flags.planFormat === 'helper' ? serializePlan(plan) : JSON.stringify(plan, null, 2);
  return { exitCode: await runPlan(plan) };
}
