// Pulling: a docker:// reference to a converted image in a cache. An image pinned by digest
// that a cache already holds costs no request; a tag is resolved to a manifest digest first (one
// request), and an image converted before costs nothing more. Either way the cached file is used
// only if caches.ts believes it (owner, mode, and the manifest digest it carries). Otherwise one
// process converts into the user's own cache, under a lock keyed by that digest, while any
// others wait for it.
import { convertImage, type ConvertEvents, type ConvertOptions } from '../convert/convert.js';
import { BerthError, isBerthError } from '../errors.js';
import { imagePath, withLock } from './cache.js';
import type { CacheKind, Caches } from './caches.js';
import { platformMatches, type Platform } from './platform.js';
import { formatDockerReference } from './docker-reference.js';
import { RegistrySource, type PullOptions } from './registry-source.js';
import type { ImageSource, ResolvedImage } from './source.js';

type Squash = Pick<ConvertOptions, 'compression' | 'level' | 'jobs'>;

export interface PullResult {
  path: string;
  manifestDigest: string;
  /** It was converted before: at most the manifest was fetched. */
  cached: boolean;
  /** Which cache holds it: the site's (read only) or the user's own. */
  cache: CacheKind;
  reference: string;
  /** The registry could not be reached, and this is the newest image cached for the tag. */
  offline?: boolean;
}

/** The reference pinned to this platform's image manifest: every node of a job then runs the same image. */
export async function resolveReference(reference: string, platform: Platform, opts: PullOptions): Promise<string> {
  const source = new RegistrySource(reference, opts);
  const digest = await source.manifestDigest(platform);
  return formatDockerReference({ ...source.ref, tag: undefined, digest });
}

export async function pullImage(
  reference: string, platform: Platform, opts: PullOptions, squash: Squash, events: ConvertEvents,
): Promise<PullResult> {
  const source = new RegistrySource(reference, opts);
  const { caches } = opts;
  // Pinned to an image manifest converted before (what `berth resolve` hands to a job's nodes): no request at all.
  const pinned = source.ref.digest && (await caches.findImage(source.ref.digest));
  if (pinned) return { manifestDigest: source.ref.digest!, reference: source.describe, ...pinned, cached: true };
  let manifestDigest: string;
  try {
    manifestDigest = await source.manifestDigest(platform);
  } catch (e: unknown) {
    // A tag on a node cut off from its registry: the image it named last time, said so, rather than no job.
    const last = isBerthError(e) && e.code === 'REGISTRY_UNREACHABLE' && !source.ref.digest && (await lastCached(caches, source.describe, platform));
    if (!last) throw e;
    return { ...last, reference: source.describe, cached: true, offline: true };
  }
  const found = manifestDigest !== source.ref.digest && (await caches.findImage(manifestDigest));
  if (found) return { manifestDigest, reference: source.describe, ...found, cached: true };
  return convertIntoCache(source, manifestDigest, platform, caches, squash, events, undefined);
}

/** The newest image a cache holds that was pulled from `reference` for `platform`, if one is to be believed. */
async function lastCached(caches: Caches, reference: string, platform: Platform): Promise<Omit<PullResult, 'reference' | 'cached'> | undefined> {
  const { images } = await caches.listImages();
  const newest = images
    .filter((i) => !i.doubt && i.source === reference && platformMatches(i.platform, platform))
    .sort((a, b) => b.mtime.getTime() - a.mtime.getTime())[0];
  return newest && { path: newest.path, cache: newest.cache, manifestDigest: newest.manifestDigest };
}

/**
 * A local source (oci:DIR, docker-archive:FILE) run directly: converted once into the user's
 * cache under its manifest digest, as a pull is, so the next run costs only the resolve. The
 * digest is the layout's own and every blob is checked against it while converting, so an entry
 * made from a layout and one pulled from a registry with the same digest are the same image.
 */
export async function cacheLocalImage(source: ImageSource, platform: Platform, caches: Caches, squash: Squash, events: ConvertEvents): Promise<PullResult> {
  const image = await source.resolve(platform);
  const digest = image.manifestDigest;
  if (!digest) {
    throw new BerthError('IMAGE_UNSUPPORTED', `${image.reference} is a classic \`docker save\` archive: it has no manifest digest to keep its converted image under`,
      `convert it once and run the file: berth convert ${image.reference} -o IMAGE.sqsh && berth exec IMAGE.sqsh ...`);
  }
  const found = await caches.findImage(digest);
  if (found) return { manifestDigest: digest, reference: image.reference, ...found, cached: true };
  return convertIntoCache(source, digest, platform, caches, squash, events, image);
}

/** Converts into the user's cache, one process per digest while any others wait for it. */
function convertIntoCache(
  source: ImageSource, manifestDigest: string, platform: Platform, caches: Caches, squash: Squash, events: ConvertEvents, resolved: ResolvedImage | undefined,
): Promise<PullResult> {
  const target = imagePath(caches.writable(), manifestDigest);
  const base = { manifestDigest, reference: resolved?.reference ?? source.describe };
  return withLock(`${target}.lock`, async () => {
    const converted = await caches.trustedImage(target, manifestDigest, 'user'); // by another process meanwhile
    if (converted) return { ...base, ...converted, cached: true };
    // Resolved already (a local source): converted from what was resolved, not resolved again.
    const from: ImageSource = resolved ? { describe: source.describe, resolve: async () => resolved } : source;
    await convertImage(from, { ...squash, output: target, force: true, platform }, events);
    return { ...base, path: target, cache: 'user', cached: false };
  });
}
