// The image file to run for a reference: a local file as it is; a docker:// reference pulled into
// the cache and converted once (src/image/pull.ts decides what is fetched and what a cache may
// be believed), then the cached file, and copied out where -o asks. berth run, plan, srun and
// pull all acquire images here; how a pull shows on the terminal (bars, lines, nothing) is the
// caller's, passed as events.
import { lstatSync, statSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import path from 'node:path';
import { config } from '../config/load.js';
import type { ConvertEvents } from '../convert/convert.js';
import { DEFAULT_COMPRESSION } from '../convert/tar2sqfs.js';
import { BerthError, messageOf } from '../errors.js';
import { Caches } from '../image/caches.js';
import { hostPlatform, type Platform } from '../image/platform.js';
import { cacheLocalImage, pullImage, resolveReference, type PullResult } from '../image/pull.js';
import { parseSource } from '../image/reference.js';
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
  /** Without the registry, a tag runs the image it named when last resolved (for run, not pull). */
  offlineFallback?: boolean;
}

export function isRegistryReference(text: string): boolean {
  return text.startsWith('docker://');
}

/** An image to convert before it runs: an OCI layout or a `docker save` archive. */
export function isLayoutReference(text: string): boolean {
  return text.startsWith('oci:') || text.startsWith('docker-archive:');
}

function pullOptions(options: AcquireOptions, events: Pick<AcquireEvents, 'cacheWarning' | 'download'>): PullOptions {
  return {
    caches: new Caches(events.cacheWarning),
    insecure: options.insecure ?? false,
    parallel: options.parallel ?? config().values['pull.parallel'],
    events: events.download,
    offlineFallback: options.offlineFallback ?? false,
  };
}

/**
 * Pulls `reference` into the cache, or for oci: and docker-archive: converts it there, once
 * (with berth's default compression).
 */
export async function acquireImage(reference: string, options: AcquireOptions, events: AcquireEvents): Promise<PullResult> {
  let result: PullResult | undefined;
  try {
    const squash = { compression: DEFAULT_COMPRESSION, level: undefined, jobs: availableParallelism() };
    const platform = options.platform ?? hostPlatform();
    const pull = pullOptions(options, events);
    result = isLayoutReference(reference)
      ? await cacheLocalImage(parseSource(reference), platform, pull.caches, squash, events.convert)
      : await pullImage(reference, platform, pull, squash, events.convert);
    if (result.offline) {
      events.cacheWarning(`berth: warning: the registry of ${result.reference} cannot be reached: running the image it named when last resolved here (${result.manifestDigest})`);
    }
    return result;
  } finally {
    events.end?.(result);
  }
}

/** A cached image as `berth images` lists it: its manifest digest, or the first 12 or more of its hex digits. */
const CACHED_DIGEST = /^(?:sha256:)?([0-9a-f]{12,64})$/;

/**
 * The file to run for `image`: for docker://, oci: and docker-archive: the cached image; for a
 * digest that `berth images` shows, the cached image it names; else the file itself. A digest
 * names the cache first: a file of that name in the working directory (which anyone may have
 * put in a shared one) runs only when no cached image has the digest, and only if it is the
 * caller's own (./NAME always means the file).
 */
export async function imageFile(image: string, events: AcquireEvents): Promise<string> {
  return (await imageSource(image, events)).path;
}

/**
 * The image file for `image` and whether it is an entry of berth's caches (a pull's or a
 * conversion's, found by its digest): only such an entry, which berth wrote, may vouch for the
 * signature verdict recorded in it. A file named by path is whatever its maker put in it.
 */
export async function imageSource(image: string, events: AcquireEvents): Promise<{ path: string; cached: boolean }> {
  if (isRegistryReference(image) || isLayoutReference(image)) return { path: (await acquireImage(image, { offlineFallback: true }, events)).path, cached: true };
  const built = await builtImage(image, events);
  if (built) return { path: built, cached: true }; // berth build -t NAME: the cache's entry
  const digest = CACHED_DIGEST.exec(image);
  if (!digest) return { path: image, cached: false }; // a path; vouchedFor tells whether it is a cache's entry
  const cached = await cachedByDigest(digest[1]!, events);
  if (cached) return { path: cached, cached: true };
  const file = lstatSync(image, { throwIfNoEntry: false });
  if (!file) {
    throw new BerthError('SOURCE_NOT_FOUND', `no file is named ${image}, and no cached image has a digest that starts with it`,
      'see `berth images` for the cached images, or give the path of an image file');
  }
  if (file.uid !== process.getuid!()) {
    throw new BerthError('SOURCE_INVALID', `${image} looks like a cached image's digest, but no cached image has it, and the file of that name is uid ${file.uid}'s, not yours`,
      `if you mean that file, name it ./${image}; see \`berth images\` for your cached images`);
  }
  return { path: image, cached: false };
}

/** Whether the image at `source` may vouch for its recorded verdict: an entry of berth's caches, by reference, digest or its own path. */
export function vouchedFor(source: { path: string; cached: boolean }, manifestDigest: string | null | undefined, events: Pick<AcquireEvents, 'cacheWarning'>): boolean {
  return source.cached || new Caches(events.cacheWarning).holds(source.path, manifestDigest);
}

/** Whether `name` can be a `berth build -t` name: paths, image files and digests never are (they mean themselves). */
export function isBuildName(name: string): boolean {
  return !(name.startsWith('.') || name.startsWith('/') || /\.(sqsh|squashfs|sif|img)$/.test(name) || CACHED_DIGEST.test(name));
}

/** What `berth build -t NAME` notes NAME under in the user's cache (beside the docker:// tags). */
export function builtTagReference(name: string): string {
  return `berth-build:${name}`;
}

/**
 * The image `berth build -t NAME` left in the user's cache for `name`: the note is the user's
 * own, and the image is believed only for the manifest digest its own metadata holds
 * (Caches.findImage), as a pulled one is. ./NAME and any path always mean the file.
 */
async function builtImage(name: string, events: Pick<AcquireEvents, 'cacheWarning'>): Promise<string | undefined> {
  if (!isBuildName(name)) return undefined; // only a note of a build is read (no image listing)
  const caches = new Caches(events.cacheWarning);
  const digest = caches.lastResolved(builtTagReference(name));
  return digest ? (await caches.findImage(digest))?.path : undefined;
}

/** The cached image whose manifest digest starts with `hex`, if one is; two that do are refused. */
async function cachedByDigest(hex: string, events: Pick<AcquireEvents, 'cacheWarning'>): Promise<string | undefined> {
  const { images } = await new Caches(events.cacheWarning).listImages();
  const matches = images.filter((i) => !i.doubt && i.manifestDigest.slice(7).startsWith(hex));
  if (matches.length === 0) return undefined;
  const same = new Set(matches.map((m) => m.manifestDigest));
  // The same image in the site cache and the user's: the site's comes first, as findImage takes it.
  if (same.size === 1) return matches[0]!.path;
  throw new BerthError('USAGE', `${hex} is the start of the digests of ${same.size} cached images`, `give more of the digest: ${[...same].join(', ')}`);
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
