// Reading an OCI image layout (index.json + blobs/ALG/HEX), from a directory or from inside a
// tarball, and resolving it to one manifest by tag, digest or platform.
import { createHash } from 'node:crypto';
import type { Readable } from 'node:stream';
import { BerthError } from '../errors.js';
import { parseDigest, verifyBytes } from './digest.js';
import { formatPlatform, platformMatches, type Platform } from './platform.js';
import { parseJson, readImageConfig, readIndex, readManifestOrIndex, type Descriptor } from './schema.js';
import type { Compression, LayerBlob, ResolvedImage } from './source.js';

export { MEDIA, type Descriptor } from './schema.js';

/** A layer blob made available: its size as stored, and how to read it. */
export interface LayerAccess {
  size: number;
  open(range?: { start: number; end: number }): Readable;
  /** What open() gives was hashed against the digest by the store itself (a registry's download). */
  verified?: boolean;
}

/**
 * Where resolution gets manifests, configs and layers: an OCI layout (directory or tarball)
 * or a registry. Manifests and configs come back checked against their descriptor's digest;
 * resolveDescriptor compares every size with its descriptor's.
 */
export interface BlobStore {
  readonly describe: string;
  manifest(desc: Descriptor): Promise<Buffer>;
  config(desc: Descriptor): Promise<Buffer>;
  /** Makes a layer blob available (a registry downloads it). */
  layer(desc: Descriptor): Promise<LayerAccess>;
}

/** Files of a layout, wherever they live. */
export interface LayoutFiles {
  readonly describe: string;
  /** Whole small file (JSON), or undefined if absent. */
  read(path: string): Promise<Buffer | undefined>;
  size(path: string): Promise<number | undefined>;
  open(path: string, range?: { start: number; end: number }): Readable;
}

/**
 * Manifests, indexes and configs are read whole; the distribution spec lets registries refuse
 * manifests over 4 MiB, and configs of real images are kilobytes. This bounds what a hostile
 * layout can make berth hold in memory.
 */
export const MAX_JSON_BLOB = 16 * 1024 * 1024;

const REF_NAME = 'org.opencontainers.image.ref.name';

/** Layer media types and how their bytes are compressed. */
export function layerCompression(mediaType: string): Compression {
  const m = /^application\/vnd\.(?:oci\.image\.layer(?:\.nondistributable)?\.v1\.tar|docker\.image\.rootfs\.(?:foreign\.)?diff\.tar)(?:\+gzip|\.gzip|\+zstd)?$/.exec(mediaType);
  if (!m) {
    throw new BerthError('UNSUPPORTED_MEDIA_TYPE', `layer media type '${mediaType}' is not a filesystem layer berth can read`,
      'berth reads tar layers, uncompressed or compressed with gzip or zstd; encrypted or artifact layers are not images');
  }
  if (mediaType.endsWith('gzip')) return 'gzip';
  if (mediaType.endsWith('zstd')) return 'zstd';
  return 'none';
}

/** Where a layout keeps a blob; only for digests berth can verify (digest.ts). */
export function blobPath(digest: string): string {
  const { algorithm, hex } = parseDigest(digest, 'a blob of the image');
  return `blobs/${algorithm}/${hex}`;
}

export function sha256(data: Buffer): string {
  return `sha256:${createHash('sha256').update(data).digest('hex')}`;
}

/** A blob's stored size against its descriptor's (-1: a descriptor berth made, size unknown). */
export function checkSize(desc: Descriptor, actual: number, what: string): void {
  if (desc.size >= 0 && actual !== desc.size) {
    throw new BerthError('SOURCE_INVALID', `${what} is ${actual} bytes, but its descriptor says ${desc.size}`,
      'the image does not match its own manifest; rebuild or copy it again from a trusted source');
  }
}

/**
 * Reads a small blob (manifest, index, config) whole and checks its digest, then its size: a
 * blob changed since is told as such, and one whose descriptor lies about it as that.
 */
export async function readVerifiedBlob(files: LayoutFiles, desc: Descriptor): Promise<Buffer> {
  const path = blobPath(desc.digest);
  const size = await files.size(path);
  if (size === undefined) {
    throw new BerthError('SOURCE_INVALID', `${files.describe} lacks blob ${desc.digest}`, 'the image layout is incomplete; copy it again (e.g. with skopeo copy)');
  }
  if (size > MAX_JSON_BLOB) {
    throw new BerthError('SOURCE_INVALID', `blob ${desc.digest} in ${files.describe} is ${size} bytes, too large for a manifest or config`,
      'the image layout is corrupt; copy it again');
  }
  const data = (await files.read(path)) ?? Buffer.alloc(0);
  verifyBytes(data, desc.digest, `blob ${desc.digest} in ${files.describe}`,
    'the image layout is corrupt or was tampered with; copy it again from a trusted source');
  checkSize(desc, size, `blob ${desc.digest} in ${files.describe}`);
  return data;
}

export interface Selector {
  tag?: string;
  digest?: string;
  platform: Platform;
}

export function layoutStore(files: LayoutFiles): BlobStore {
  return {
    describe: files.describe,
    manifest: (desc) => readVerifiedBlob(files, desc),
    config: (desc) => readVerifiedBlob(files, desc),
    layer: async (l) => {
      const path = blobPath(l.digest);
      const size = await files.size(path);
      if (size === undefined) {
        throw new BerthError('SOURCE_INVALID', `${files.describe} lacks layer blob ${l.digest}`,
          'the image layout is incomplete; copy it again (e.g. with skopeo copy)');
      }
      return { size, open: (range) => files.open(path, range) };
    },
  };
}

/** Walks index.json (and nested indexes) down to one image manifest. */
export async function resolveLayout(files: LayoutFiles, sel: Selector, reference: string): Promise<ResolvedImage> {
  const store = layoutStore(files);
  const indexData = await files.read('index.json');
  if (!indexData) {
    throw new BerthError('SOURCE_INVALID', `${files.describe} has no index.json, so it is not an OCI image layout`,
      'point berth at the directory that holds oci-layout and index.json');
  }
  const what = `${files.describe}: index.json`;
  const top = readIndex(parseJson(indexData, what), what).manifests;
  let desc: Descriptor;
  if (sel.digest) {
    parseDigest(sel.digest, reference);
    desc = top.find((d) => d.digest === sel.digest) ?? { mediaType: '', digest: sel.digest, size: -1 };
  } else {
    const tagged = top.filter((d) => d.annotations?.[REF_NAME] !== undefined);
    const wanted = sel.tag ?? (top.length === 1 ? undefined : 'latest');
    const named = wanted === undefined ? top : top.filter((d) => tagMatches(d, wanted));
    if (named.length === 0) {
      const tags = [...new Set(tagged.map((d) => d.annotations![REF_NAME]))];
      throw new BerthError('IMAGE_NOT_IN_SOURCE', `${files.describe} has no image tagged '${wanted}'`,
        tags.length ? `it has: ${tags.join(', ')}; name one as ${reference.replace(/:[^:/]*$/, '')}:TAG` : 'name one by digest with @sha256:...');
    }
    if (named.length > 1) return resolveFromList(store, named, sel, reference);
    desc = named[0]!;
  }
  return resolveDescriptor(store, desc, sel, reference, 0);
}

function tagMatches(d: Descriptor, tag: string): boolean {
  const name = d.annotations?.[REF_NAME];
  const full = d.annotations?.['io.containerd.image.name'];
  return name === tag || (full !== undefined && (full === tag || full.endsWith(`:${tag}`)));
}

/** The entry of an index (image list) that serves the platform, or an error naming what there is. */
export function choosePlatform(describe: string, list: Descriptor[], want: Platform): Descriptor {
  const fit = list.filter((d) => !d.platform || platformMatches(d.platform, want));
  const chosen = fit.find((d) => d.platform) ?? fit[0];
  if (chosen) return chosen;
  const have = list.map((d) => (d.platform ? formatPlatform(d.platform) : '?')).filter((p) => p !== 'unknown/unknown');
  throw new BerthError('PLATFORM_NOT_FOUND', `${describe} has no image for ${formatPlatform(want)}`,
    `it has: ${[...new Set(have)].join(', ')}; choose one with --platform`);
}

async function resolveFromList(store: BlobStore, list: Descriptor[], sel: Selector, reference: string): Promise<ResolvedImage> {
  return resolveDescriptor(store, choosePlatform(store.describe, list, sel.platform), sel, reference, 1);
}

export async function resolveDescriptor(store: BlobStore, desc: Descriptor, sel: Selector, reference: string, depth: number): Promise<ResolvedImage> {
  if (depth > 4) throw new BerthError('SOURCE_INVALID', `${store.describe} nests indexes too deeply`, 'the image index is malformed');
  const data = await store.manifest(desc);
  const what = `manifest ${desc.digest} in ${store.describe}`;
  checkSize(desc, data.length, what);
  const doc = readManifestOrIndex(parseJson(data, what), what, desc.mediaType || undefined);
  if (doc.kind === 'index') return resolveFromList(store, doc.manifests, sel, reference);
  const configData = await store.config(doc.config);
  const configWhat = `image config ${doc.config.digest} in ${store.describe}`;
  checkSize(doc.config, configData.length, configWhat);
  const config = readImageConfig(parseJson(configData, configWhat), configWhat);
  const diffIds = config.rootfs.diff_ids;
  if (diffIds.length !== doc.layers.length) {
    throw new BerthError('SOURCE_INVALID', `manifest ${desc.digest} lists ${doc.layers.length} layers but its config has ${diffIds.length} diff_ids`,
      'the image is inconsistent; rebuild or copy it again');
  }
  const compressions = doc.layers.map((l) => layerCompression(l.mediaType)); // refuse artifacts before fetching anything
  // Asked for top layer first, the one conversion reads first: a registry starts its downloads
  // in that order, and conversion begins while the layers below still arrive.
  const access: LayerAccess[] = [];
  await Promise.all(doc.layers.map((_, i) => doc.layers.length - 1 - i).map(async (i) => {
    access[i] = await store.layer(doc.layers[i]!);
  }));
  return {
    reference, manifestDigest: desc.digest, configDigest: doc.config.digest, config,
    layers: doc.layers.map((l, i): LayerBlob => {
      checkSize(l, access[i]!.size, `layer ${i + 1}/${doc.layers.length} (${l.digest}) in ${store.describe}`);
      return {
        digest: l.digest, diffId: diffIds[i]!, mediaType: l.mediaType, size: l.size, compression: compressions[i]!, open: access[i]!.open,
        ...(access[i]!.verified ? { verified: true } : {}),
      };
    }),
  };
}
