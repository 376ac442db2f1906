// docker:// images: manifests come from the registry, and so does every blob, into the
// verified cache (several layers at once, top layer first); conversion reads each layer from
// there as soon as it has arrived, while the ones below it still download.
import { createReadStream, readFileSync, statSync } from 'node:fs';
import { Readable } from 'node:stream';
import { config } from '../config/load.js';
import { BerthError } from '../errors.js';
import { ensureBlob } from './cache.js';
import type { Caches } from './caches.js';
import { findCredentials } from './credentials.js';
import { parseDigest, verifyBytes } from './digest.js';
import { formatDockerReference, parseDockerReference, type DockerReference } from './docker-reference.js';
import { checkSize, choosePlatform, resolveDescriptor, sha256, type BlobStore } from './oci-layout.js';
import type { Platform } from './platform.js';
import { RegistryClient, type BlobResponse } from './registry.js';
import { parseJson, readManifestOrIndex, type Descriptor, type IndexDoc, type ManifestDoc } from './schema.js';
import type { ImageSource, ResolvedImage } from './source.js';

const TAMPERING = 'the registry is corrupt or tampering; nothing was cached';

interface TopManifest {
  doc: IndexDoc | ManifestDoc;
  bytes: Buffer;
  digest: string;
  mediaType: string;
}

/** What a pull reports as blobs arrive, for progress bars. */
export interface DownloadEvents {
  start(digest: string, size: number): void;
  bytes(digest: string, n: number): void;
  done(digest: string): void;
}

export interface PullOptions {
  /** Where images are found, and blobs and images written (the user's own cache). */
  caches: Caches;
  insecure: boolean;
  /** Layers downloaded at once. */
  parallel: number;
  events?: DownloadEvents;
  /** A tag whose registry cannot be reached runs the image it named when last resolved (berth run, not pull). */
  offlineFallback?: boolean;
}

/** A file's bytes once `file` is there; the stream fails with the download's error if it failed. */
function readWhenReady(file: Promise<string>, range?: { start: number; end: number }): Readable {
  return Readable.from((async function* () {
    yield* createReadStream(await file, { ...range, highWaterMark: 1 << 20 });
  })(), { objectMode: false, highWaterMark: 1 << 20 });
}

/** Runs at most `limit` of the started tasks at a time. */
function limiter(limit: number): <T>(task: () => Promise<T>) => Promise<T> {
  let active = 0;
  const queue: (() => void)[] = [];
  return async (task) => {
    if (active >= limit) await new Promise<void>((r) => queue.push(r));
    active++;
    try {
      return await task();
    } finally {
      active--;
      queue.shift()?.();
    }
  };
}

export class RegistrySource implements ImageSource {
  readonly describe: string;
  readonly ref: DockerReference;
  private readonly client: RegistryClient;
  private top: TopManifest | undefined;

  constructor(text: string, private readonly opts: PullOptions) {
    this.ref = parseDockerReference(text);
    this.describe = formatDockerReference(this.ref);
    const allowed = config().values['pull.registries'];
    if (Array.isArray(allowed) && !allowed.includes(this.ref.registry)) {
      throw new BerthError('REGISTRY_NOT_ALLOWED', `this site allows pulling only from ${allowed.join(', ')}, not ${this.ref.registry} (${config().sources['pull.registries']})`,
        'ask the site\'s admins to add it to pull.registries, or bring the image as a file (berth convert, berth push)');
    }
    this.client = new RegistryClient(this.ref, {
      // Looked up only when the registry asks for them: a public image needs none, and a
      // credential helper is a program to run.
      insecure: opts.insecure, credentials: () => findCredentials(this.ref.registry), timeoutMs: 30_000, retries: 4,
    });
  }

  /** The tag's (or digest's) manifest or index: one request, remembered. */
  private async topManifest(): Promise<TopManifest> {
    if (this.top) return this.top;
    const id = this.ref.digest ?? this.ref.tag!;
    if (this.ref.digest) parseDigest(this.ref.digest, this.describe); // one berth cannot verify is refused before asking
    const { bytes, mediaType, digest: claimed } = await this.client.manifest(id);
    const digest = sha256(bytes);
    if (this.ref.digest) verifyBytes(bytes, this.ref.digest, `${this.describe}: the manifest the registry sent`, TAMPERING);
    if (claimed && claimed !== digest && claimed.startsWith('sha256:')) {
      throw new BerthError('DIGEST_MISMATCH', `${this.describe}: the manifest's digest is ${digest}, not ${claimed} as the registry says`, TAMPERING);
    }
    const what = `the manifest of ${this.describe}`;
    this.top = { doc: readManifestOrIndex(parseJson(bytes, what), what, mediaType || undefined), bytes, digest, mediaType };
    return this.top;
  }

  /** The digest of the image manifest for this platform, at the cost of one request. */
  async manifestDigest(platform: Platform): Promise<string> {
    const top = await this.topManifest();
    if (top.doc.kind === 'manifest') return top.digest;
    const chosen = choosePlatform(this.describe, top.doc.manifests, platform);
    // A nested index is resolved later; its own digest still names what will be converted.
    return chosen.digest;
  }

  /** The index the reference named, if it named one: a signature over it covers the manifests it lists (src/signature/). */
  async index(): Promise<{ digest: string; bytes: Buffer } | undefined> {
    const top = await this.topManifest();
    return top.doc.kind === 'index' ? { digest: top.digest, bytes: top.bytes } : undefined;
  }

  async resolve(platform: Platform): Promise<ResolvedImage> {
    const top = await this.topManifest();
    const run = limiter(this.opts.parallel);
    const store: BlobStore = {
      describe: this.describe,
      manifest: async (desc) => {
        if (desc.digest === top.digest) return top.bytes; // fetched and checked already
        const { bytes } = await this.client.manifest(desc.digest);
        verifyBytes(bytes, desc.digest, `${this.describe}: manifest ${desc.digest}`, TAMPERING);
        return bytes;
      },
      config: async (desc) => readFileSync(await this.blob(desc, 'the image config')),
      // Each layer's download starts now and is awaited only by the stream that reads it, so
      // the top layers are merged while the ones below still download. A layer in the cache was
      // hashed against its digest just now (ensureBlob), so conversion need not hash it again.
      layer: async (l: Descriptor) => {
        const file = run(async () => {
          this.opts.events?.start(l.digest, l.size);
          const f = await this.blob(l, `layer ${l.digest}`);
          checkSize(l, statSync(f).size, `${this.describe}: layer ${l.digest}`);
          this.opts.events?.done(l.digest);
          return f;
        });
        file.catch(() => {}); // reported by the stream that reads it (or not at all, if none does)
        return { size: l.size, verified: true, open: (range) => readWhenReady(file, range) };
      },
    };
    return resolveDescriptor(store, { mediaType: top.mediaType, digest: top.digest, size: -1 }, { platform }, this.describe, 0);
  }

  /** The blob in the cache, downloaded if need be; a download that keeps failing names the registry. */
  private async blob(desc: Descriptor, what: string): Promise<string> {
    if (parseDigest(desc.digest, `${this.describe}: ${what}`).algorithm !== 'sha256') {
      throw new BerthError('UNSUPPORTED_MEDIA_TYPE', `${this.describe}: ${what} has the digest ${desc.digest}, and berth's cache keeps sha256 blobs only`,
        'push the image with sha256 digests (what registries and image tools use by default)');
    }
    try {
      return await ensureBlob(this.opts.caches.blobDir(), desc.digest, (start) => this.fetchBlob(desc, what, start),
        `${this.describe}: ${what}`, (n) => this.opts.events?.bytes(desc.digest, n));
    } catch (e: unknown) {
      // The cache retries a dropped download itself, then gives up with what the network said:
      // said here as the registry's doing, with the registry named.
      if (e instanceof BerthError && e.code === 'DOWNLOAD_INTERRUPTED') throw this.client.dropped(what, e.cause ?? e);
      if (e instanceof BerthError) throw e;
      throw this.client.dropped(what, e);
    }
  }

  /** One GET of a blob from byte `start`, refused when the registry offers more or less than its descriptor says. */
  private async fetchBlob(desc: Descriptor, what: string, start: number): Promise<BlobResponse> {
    const res = await this.client.blob(desc.digest, start);
    const total = (res.status === 206 ? start : 0) + (res.length ?? NaN);
    if (res.length !== undefined && desc.size >= 0 && total !== desc.size) {
      res.cancel();
      throw new BerthError('SOURCE_INVALID', `${this.describe}: the registry has ${total} bytes for ${what}, but its descriptor says ${desc.size}`,
        'the image does not match its own manifest; push it again, or report it to the registry\'s admins. Nothing was cached.');
    }
    return res;
  }
}
