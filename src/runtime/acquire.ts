// The image file to run for a reference: a local file as it is; a docker:// reference pulled into
// the cache and converted once (src/image/pull.ts decides what is fetched and what a cache may
// be believed), then the cached file, and copied out where -o asks. berth run, plan, srun and
// pull all acquire images here; how a pull shows on the terminal (bars, lines, nothing) is the
// caller's, passed as events.
import { statSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import path from 'node:path';
import { config } from '../config/load.js';
import type { ConvertEvents } from '../convert/convert.js';
import { DEFAULT_COMPRESSION } from '../convert/tar2sqfs.js';
import { BerthError, messageOf } from '../errors.js';
import { Caches } from '../image/caches.js';
import { hostPlatform, type Platform } from '../image/platform.js';
import { pullImage, resolveReference, type PullResult } from '../image/pull.js';
import type { DownloadEvents, PullOptions } from '../image/registry-source.js';
import { copyFileAtomic } from '../util/atomic-file.js';

/** What a pull reports, as it goes. */
export interface AcquireEvents {
  download?: DownloadEvents;
  /** The conversion, when no cache holds the image yet. */
  convert: ConvertEvents;
  /**
   * A cache entry that berth does not use, and why. Worth telling even a quiet command (berth
   * run pulls quietly): it says something in a cache the user relies on could have been planted.
   * Also what berth leaves out of an image that asked for it (an enroot image's host mounts).
   */
  cacheWarning(line: string): void;
  /** The pull is over: with what it gave, or undefined when it failed. */
  end?(result: PullResult | undefined): void;
}

export interface AcquireOptions {
  /** Which image of a multi-platform index (default: this node's). */
  platform?: Platform;
  /** Plain http for a registry off this host (loopback registries never need it). */
  insecure?: boolean;
  /** Layers downloaded at once (default: pull.parallel). */
  parallel?: number;
}

export function isRegistryReference(text: string): boolean {
  return text.startsWith('docker://');
}

function pullOptions(options: AcquireOptions, events: Pick<AcquireEvents, 'cacheWarning' | 'download'>): PullOptions {
  return {
    caches: new Caches(events.cacheWarning),
    insecure: options.insecure ?? false,
    parallel: options.parallel ?? config().values['pull.parallel'],
    events: events.download,
  };
}

/** Pulls `reference` into the cache (converting it once, with berth's default compression). */
export async function acquireImage(reference: string, options: AcquireOptions, events: AcquireEvents): Promise<PullResult> {
  let result: PullResult | undefined;
  try {
    const squash = { compression: DEFAULT_COMPRESSION, level: undefined, jobs: availableParallelism() };
    result = await pullImage(reference, options.platform ?? hostPlatform(), pullOptions(options, events), squash, events.convert);
    return result;
  } finally {
    events.end?.(result);
  }
}

/** The file to run for `image`: itself, or for docker:// the cached image. */
export async function imageFile(image: string, events: AcquireEvents): Promise<string> {
  return isRegistryReference(image) ? (await acquireImage(image, {}, events)).path : image;
}

/** `reference` pinned to this platform's image manifest digest: what every node of a job then runs. */
export function pinReference(reference: string, options: AcquireOptions, events: Pick<AcquireEvents, 'cacheWarning'>): Promise<string> {
  return resolveReference(reference, options.platform ?? hostPlatform(), pullOptions({ ...options, parallel: 1 }, events));
}

/** Copies an acquired image to where the user asked (-o), whole or not at all; returns the absolute path. */
export function copyImage(from: string, to: string, force: boolean): string {
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
