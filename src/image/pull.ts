// Pulling: a docker:// reference to a converted image in a cache. An image pinned by digest
// that a cache already holds costs no request; a tag is resolved to a manifest digest first (one
// request), and an image converted before costs nothing more. Either way the cached file is used
// only if caches.ts believes it (owner, mode, and the manifest digest it carries). Otherwise one
// process converts into the user's own cache, under a lock keyed by that digest, while any
// others wait for it.
import { convertImage, type ConvertEvents, type ConvertOptions } from '../convert/convert.js';
import { imagePath, withLock } from './cache.js';
import type { CacheKind } from './caches.js';
import type { Platform } from './platform.js';
import { formatDockerReference } from './docker-reference.js';
import { RegistrySource, type PullOptions } from './registry-source.js';

export interface PullResult {
  path: string;
  manifestDigest: string;
  /** It was converted before: at most the manifest was fetched. */
  cached: boolean;
  /** Which cache holds it: the site's (read only) or the user's own. */
  cache: CacheKind;
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
  const { caches } = opts;
  // Pinned to an image manifest converted before (what `berth resolve` hands to a job's nodes): no request at all.
  const pinned = source.ref.digest && (await caches.findImage(source.ref.digest));
  if (pinned) return { manifestDigest: source.ref.digest!, reference: source.describe, ...pinned, cached: true };
  const manifestDigest = await source.manifestDigest(platform);
  const base = { manifestDigest, reference: source.describe };
  const found = manifestDigest !== source.ref.digest && (await caches.findImage(manifestDigest));
  if (found) return { ...base, ...found, cached: true };
  const root = caches.writable();
  const target = imagePath(root, manifestDigest);
  return withLock(`${target}.lock`, async () => {
    const converted = await caches.trustedImage(target, manifestDigest, 'user'); // by another process meanwhile
    if (converted) return { ...base, ...converted, cached: true };
    await convertImage(source, { ...squash, output: target, force: true, platform }, events);
    return { ...base, path: target, cache: 'user', cached: false };
  });
}
