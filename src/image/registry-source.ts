// docker:// images: manifests come from the registry, and so does every blob, into the
// verified cache (several layers at once) before conversion reads them from there.
import { createReadStream, readFileSync } from 'node:fs';
import { config } from '../config/load.js';
import { BerthError } from '../errors.js';
import { ensureBlob } from './cache.js';
import type { Caches } from './caches.js';
import { findCredentials } from './credentials.js';
import { formatDockerReference, parseDockerReference, type DockerReference } from './docker-reference.js';
import { choosePlatform, manifestKind, parseJson, resolveDescriptor, sha256, type BlobStore, type Descriptor, type ManifestDoc } from './oci-layout.js';
import type { Platform } from './platform.js';
import { RegistryClient } from './registry.js';
import type { ImageSource, ResolvedImage } from './source.js';

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
  private top: { doc: ManifestDoc; bytes: Buffer; digest: string; mediaType: string } | undefined;

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
  private async topManifest(): Promise<{ doc: ManifestDoc; bytes: Buffer; digest: string; mediaType: string }> {
    if (this.top) return this.top;
    const id = this.ref.digest ?? this.ref.tag!;
    const { bytes, mediaType, digest: claimed } = await this.client.manifest(id);
    const digest = sha256(bytes);
    if (this.ref.digest && digest !== this.ref.digest) {
      throw new BerthError('DIGEST_MISMATCH', `${this.describe}: the registry sent a manifest whose digest is ${digest}`, 'the registry is corrupt or tampering; nothing was cached');
    }
    if (claimed && claimed !== digest && claimed.startsWith('sha256:')) {
      throw new BerthError('DIGEST_MISMATCH', `${this.describe}: the manifest's digest is ${digest}, not ${claimed} as the registry says`, 'the registry is corrupt or tampering; nothing was cached');
    }
    this.top = { doc: parseJson<ManifestDoc>(bytes, `${this.describe} manifest`), bytes, digest, mediaType };
    return this.top;
  }

  /** The digest of the image manifest for this platform, at the cost of one request. */
  async manifestDigest(platform: Platform): Promise<string> {
    const top = await this.topManifest();
    if (manifestKind(top.doc, top.digest, top.mediaType) === 'manifest') return top.digest;
    const chosen = choosePlatform(this.describe, top.doc.manifests ?? [], platform);
    // A nested index is resolved later; its own digest still names what will be converted.
    return chosen.digest;
  }

  async resolve(platform: Platform): Promise<ResolvedImage> {
    const top = await this.topManifest();
    const run = limiter(this.opts.parallel);
    const store: BlobStore = {
      describe: this.describe,
      manifest: async (digest) => {
        if (digest === top.digest) return top.bytes; // fetched and checked already
        const { bytes } = await this.client.manifest(digest);
        if (sha256(bytes) !== digest) {
          throw new BerthError('DIGEST_MISMATCH', `${this.describe}: manifest ${digest} arrived with digest ${sha256(bytes)}`, 'the registry is corrupt or tampering; nothing was cached');
        }
        return bytes;
      },
      config: async (digest) => readFileSync(await this.blob(digest, 'the image config')),
      layer: async (l: Descriptor) => {
        const file = await run(async () => {
          this.opts.events?.start(l.digest, l.size);
          const f = await this.blob(l.digest, `layer ${l.digest}`);
          this.opts.events?.done(l.digest);
          return f;
        });
        return (range) => createReadStream(file, { ...range, highWaterMark: 1 << 20 });
      },
    };
    return resolveDescriptor(store, { mediaType: top.mediaType, digest: top.digest, size: -1 }, { platform }, this.describe, 0);
  }

  private blob(digest: string, what: string): Promise<string> {
    return ensureBlob(this.opts.caches.blobDir(), digest, (start) =>
      this.client.get('blobs', digest, start > 0 ? { range: `bytes=${start}-` } : {}), `${this.describe}: ${what}`,
    (n) => this.opts.events?.bytes(digest, n));
  }
}
