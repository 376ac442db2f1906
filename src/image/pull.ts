// Pulling: a docker:// reference to a converted image in the cache. The tag is resolved to a
// manifest digest first (one request); an image converted before costs nothing more. Otherwise
// one process converts, under a lock keyed by that digest, while any others wait for it.
import { statSync } from 'node:fs';
import { convertImage, type ConvertEvents, type ConvertOptions } from '../convert/convert.js';
import { imagePath, withLock } from './cache.js';
import type { Platform } from './platform.js';
import { formatDockerReference } from './docker-reference.js';
import { RegistrySource, type PullOptions } from './registry-source.js';

export interface PullResult {
  path: string;
  manifestDigest: string;
  /** It was converted before: only the manifest was fetched. */
  cached: boolean;
  reference: string;
}

/** The reference pinned to this platform's image manifest: every node of a job then runs the same image. */
export async function resolveReference(reference: string, platform: Platform, opts: PullOptions): Promise<string> {
  const source = new RegistrySource(reference, opts);
  const digest = await source.manifestDigest(platform);
  return formatDockerReference({ ...source.ref, tag: undefined, digest });
}

export async function pullImage(
  reference: string, platform: Platform, opts: PullOptions, squash: Pick<ConvertOptions, 'compression' | 'level' | 'jobs'>, events: ConvertEvents,
): Promise<PullResult> {
  const source = new RegistrySource(reference, opts);
  // Pinned to an image manifest converted before (what `berth resolve` hands to a job's nodes): no request at all.
  const pinned = source.ref.digest && imagePath(opts.cacheRoot, source.ref.digest);
  if (pinned && statSync(pinned, { throwIfNoEntry: false })) {
    return { manifestDigest: source.ref.digest!, reference: source.describe, path: pinned, cached: true };
  }
  const manifestDigest = await source.manifestDigest(platform);
  const target = imagePath(opts.cacheRoot, manifestDigest);
  const base = { manifestDigest, reference: source.describe, path: target };
  if (statSync(target, { throwIfNoEntry: false })) return { ...base, cached: true };
  return withLock(`${target}.lock`, async () => {
    if (statSync(target, { throwIfNoEntry: false })) return { ...base, cached: true };
    await convertImage(source, { ...squash, output: target, force: true, platform }, events);
    return { ...base, cached: false };
  });
}
