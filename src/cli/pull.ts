// berth pull docker://REF [-o IMAGE.sqsh] and berth resolve docker://REF; convert takes docker://
// references through pullCommand. The pulling is runtime/acquire.ts's; this file is the flags,
// the copy to -o and what is printed.
import { statSync } from 'node:fs';
import path from 'node:path';
import { BerthError, messageOf } from '../errors.js';
import { parsePlatform } from '../image/platform.js';
import { acquireImage, isRegistryReference, pinReference, type AcquireOptions } from '../runtime/acquire.js';
import { copyFileAtomic } from '../util/atomic-file.js';
import { progressMode } from './progress.js';
import { cacheWarning, pullDisplay } from './pull-progress.js';

export interface PullFlags {
  output?: string;
  platform?: string;
  insecure?: boolean;
  parallel?: string;
  force?: boolean;
  quiet?: boolean;
  json?: boolean;
}

function acquireOptions(flags: Pick<PullFlags, 'platform' | 'insecure' | 'parallel'>): AcquireOptions {
  const parallel = flags.parallel === undefined ? undefined : Number(flags.parallel);
  if (parallel !== undefined && (!Number.isInteger(parallel) || parallel < 1)) {
    throw new BerthError('USAGE', `--parallel wants a positive whole number, not '${flags.parallel}'`, 'e.g. --parallel 4');
  }
  return { platform: flags.platform ? parsePlatform(flags.platform) : undefined, insecure: flags.insecure, parallel };
}

/** Copies a cached image to where the user asked, whole or not at all. */
function copyOut(from: string, to: string, force: boolean): string {
  const target = path.resolve(to);
  if (statSync(target, { throwIfNoEntry: false }) && !force) {
    throw new BerthError('OUTPUT_EXISTS', `${target} already exists`, 'pass --force to replace it, or choose another -o');
  }
  try {
    copyFileAtomic(from, target);
  } catch (e: unknown) {
    throw new BerthError('OUTPUT_UNWRITABLE', `cannot write ${target}: ${messageOf(e)}`, 'check the directory and free space');
  }
  return target;
}

export async function pullCommand(reference: string, flags: PullFlags): Promise<string> {
  if (!isRegistryReference(reference)) {
    throw new BerthError('USAGE', `'${reference}' is not a registry reference`, 'write docker://[REGISTRY/]REPO[:TAG|@DIGEST]; for local images use berth convert');
  }
  const result = await acquireImage(reference, acquireOptions(flags), pullDisplay(progressMode(flags)));
  const file = flags.output ? copyOut(result.path, flags.output, flags.force ?? false) : result.path;
  if (flags.json) return JSON.stringify({ ...result, path: file, cachedImage: result.path });
  return flags.quiet ? '' : file;
}

/** berth resolve: the reference pinned to a digest, for every node of a job to run the same image. */
export async function resolveCommand(reference: string, flags: { platform?: string; insecure?: boolean }): Promise<string> {
  return pinReference(reference, acquireOptions(flags), { cacheWarning });
}
