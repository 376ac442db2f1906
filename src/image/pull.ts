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
import type { Platform } from './platform.js';
import { formatDockerReference, type DockerReference } from './docker-reference.js';
import { imageName } from '../signature/policy.js';
import { hasPolicy } from '../signature/decide.js';
import { currentPolicy, readTrailerMetadata, recordedVerdictHolds, recordProvenance, verifyPull, type Provenance } from '../signature/provenance.js';
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
  // A Slurm job's image is judged here, at submission (the plugin resolves it), as well as on each node.
  await verifyPull(source.ref, digest, opts.insecure, digest !== source.ref.digest ? await source.index() : undefined);
  return formatDockerReference({ ...source.ref, tag: undefined, digest });
}

export async function pullImage(
  reference: string, platform: Platform, opts: PullOptions, squash: Squash, events: ConvertEvents,
): Promise<PullResult> {
  const source = new RegistrySource(reference, opts);
  const { caches } = opts;
  // Pinned to an image manifest converted before (what `berth resolve` hands to a job's nodes): no request at all.
  // Under a signature policy, only if the verdict it carries still holds (src/signature/); else it is judged again below.
  const pinned = source.ref.digest && (await caches.findImage(source.ref.digest));
  if (pinned && verdictHolds(pinned.path, source.ref)) return { manifestDigest: source.ref.digest!, reference: source.describe, ...pinned, cached: true };
  let manifestDigest: string;
  try {
    manifestDigest = await source.manifestDigest(platform);
  } catch (e: unknown) {
    // A tag on a node cut off from its registry: the image it named when last resolved here,
    // said so, rather than no job. Only for a network that is not there: a registry that
    // answers wrongly, or a certificate that fails, is no reason to run anything.
    const last = opts.offlineFallback && !source.ref.digest && isOffline(e) ? caches.lastResolved(source.describe) : undefined;
    const found = last && (await caches.findImage(last));
    if (!found) throw e;
    return { ...found, manifestDigest: last, reference: source.describe, cached: true, offline: true };
  }
  // The site's signature policy, before anything is downloaded: a refused image is never converted.
  const provenance = await verifyPull(source.ref, manifestDigest, opts.insecure, manifestDigest !== source.ref.digest ? await source.index() : undefined);
  if (!source.ref.digest) caches.noteResolved(source.describe, manifestDigest);
  const found = (manifestDigest !== source.ref.digest || pinned) && (await caches.findImage(manifestDigest));
  if (found) return withVerdict({ manifestDigest, reference: source.describe, ...found, cached: true }, provenance, source.ref);
  return withVerdict(await convertIntoCache(source, manifestDigest, platform, caches, squash, events, undefined), provenance, source.ref);
}

/**
 * Whether the cached image's recorded signature verdict is for this repository and passes
 * today's policy (always, without a policy). The same digest pulled from another repository
 * is judged for the one asked for: a rule that denies a repository is not escaped through
 * another that holds the same image.
 */
function verdictHolds(file: string, ref: DockerReference): boolean {
  if (!hasPolicy(currentPolicy())) return true;
  const metadata = readTrailerMetadata(file);
  return metadata?.provenance?.name === imageName(ref.registry, ref.repository) && recordedVerdictHolds(metadata, file);
}

/**
 * The pull's verdict recorded in the image, unless the one it carries already holds. Only the
 * user's own cache is written: a site cache's image without one is its owner's to pull again.
 */
async function withVerdict(result: PullResult, provenance: Provenance | undefined, ref: DockerReference): Promise<PullResult> {
  if (!provenance || verdictHolds(result.path, ref)) return result;
  if (result.cache !== 'user') {
    throw new BerthError('IMAGE_UNTRUSTED', `the site cache's ${result.path} (${result.reference}) carries no signature verdict that today's policy accepts`,
      "ask the site cache's owner to pull it again: berth pull records the verdict");
  }
  // Under the image's lock (the conversion's): the nodes of a job pulling at once append one verdict, not several at one offset.
  await withLock(`${result.path}.lock`, async () => {
    if (!verdictHolds(result.path, ref)) recordProvenance(result.path, provenance);
  });
  return result;
}

/** Errors that say the network is not there: refused, unreachable, unresolvable, timed out. */
const OFFLINE = new Set(['ECONNREFUSED', 'ENOTFOUND', 'EAI_AGAIN', 'ETIMEDOUT', 'ENETUNREACH', 'EHOSTUNREACH', 'ECONNRESET', 'UND_ERR_CONNECT_TIMEOUT']);

function isOffline(e: unknown): boolean {
  if (!isBerthError(e) || e.code !== 'REGISTRY_UNREACHABLE') return false;
  for (let c: unknown = e.cause, depth = 0; c && depth < 5; c = (c as { cause?: unknown }).cause, depth++) {
    const err = c as { code?: unknown; name?: unknown };
    if (typeof err.code === 'string' && OFFLINE.has(err.code)) return true;
    if (err.name === 'TimeoutError') return true;
  }
  return false;
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
