// Reading an OCI image layout (index.json + blobs/ALG/HEX), from a directory or from inside a
// tarball, and resolving it to one manifest by tag, digest or platform.
import { createHash } from 'node:crypto';
import { BerthError } from '../errors.js';
import { formatPlatform, platformMatches, type Platform } from './platform.js';
import type { Compression, ImageConfig, LayerBlob, ResolvedImage } from './source.js';
import type { Readable } from 'node:stream';

/**
 * Where resolution gets manifests, configs and layers: an OCI layout (directory or tarball)
 * or a registry. Everything it returns has been checked against its digest.
 */
export interface BlobStore {
  readonly describe: string;
  manifest(digest: string): Promise<Buffer>;
  config(digest: string): Promise<Buffer>;
  /** Makes a layer blob available (a registry downloads it) and returns how to read it. */
  layer(desc: Descriptor): Promise<(range?: { start: number; end: number }) => Readable>;
}

/** Files of a layout, wherever they live. */
export interface LayoutFiles {
  readonly describe: string;
  /** Whole small file (JSON), or undefined if absent. */
  read(path: string): Promise<Buffer | undefined>;
  size(path: string): Promise<number | undefined>;
  open(path: string, range?: { start: number; end: number }): Readable;
}

export interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
  annotations?: Record<string, string>;
  platform?: Partial<Platform>;
}

export const MEDIA = {
  ociIndex: 'application/vnd.oci.image.index.v1+json',
  ociManifest: 'application/vnd.oci.image.manifest.v1+json',
  dockerList: 'application/vnd.docker.distribution.manifest.list.v2+json',
  dockerManifest: 'application/vnd.docker.distribution.manifest.v2+json',
  dockerSchema1: 'application/vnd.docker.distribution.manifest.v1+json',
  dockerSchema1Signed: 'application/vnd.docker.distribution.manifest.v1+prettyjws',
} as const;

const INDEX_TYPES = new Set<string>([MEDIA.ociIndex, MEDIA.dockerList]);
const MANIFEST_TYPES = new Set<string>([MEDIA.ociManifest, MEDIA.dockerManifest]);
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

export function blobPath(digest: string): string {
  const m = /^([a-z0-9]+(?:[.+_-][a-z0-9]+)*):([a-zA-Z0-9=_-]+)$/.exec(digest);
  if (!m) throw new BerthError('SOURCE_INVALID', `malformed digest '${digest}'`, 'the image index or manifest is corrupt');
  return `blobs/${m[1]}/${m[2]}`;
}

export function sha256(data: Buffer): string {
  return `sha256:${createHash('sha256').update(data).digest('hex')}`;
}

/** Reads a small blob (manifest, index, config) whole and checks its digest. */
export async function readVerifiedBlob(files: LayoutFiles, digest: string): Promise<Buffer> {
  const data = await files.read(blobPath(digest));
  if (!data) {
    throw new BerthError('SOURCE_INVALID', `${files.describe} lacks blob ${digest}`, 'the image layout is incomplete; copy it again (e.g. with skopeo copy)');
  }
  if (digest.startsWith('sha256:') && sha256(data) !== digest) {
    throw new BerthError('DIGEST_MISMATCH', `blob ${digest} in ${files.describe} does not match its digest (it hashes to ${sha256(data)})`,
      'the image layout is corrupt or was tampered with; copy it again from a trusted source');
  }
  return data;
}

export function parseJson<T>(data: Buffer, what: string): T {
  try {
    return JSON.parse(data.toString('utf8')) as T;
  } catch (e: unknown) {
    throw new BerthError('SOURCE_INVALID', `${what} is not valid JSON`, 'the image is corrupt; copy or save it again', { cause: e });
  }
}

export interface Selector {
  tag?: string;
  digest?: string;
  platform: Platform;
}

export function layoutStore(files: LayoutFiles): BlobStore {
  return {
    describe: files.describe,
    manifest: (digest) => readVerifiedBlob(files, digest),
    config: (digest) => readVerifiedBlob(files, digest),
    layer: async (l) => {
      const path = blobPath(l.digest);
      if ((await files.size(path)) === undefined) {
        throw new BerthError('SOURCE_INVALID', `${files.describe} lacks layer blob ${l.digest}`,
          'the image layout is incomplete; copy it again (e.g. with skopeo copy)');
      }
      return (range) => files.open(path, range);
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
  const index = parseJson<{ manifests?: Descriptor[] }>(indexData, `${files.describe}/index.json`);
  const top = index.manifests ?? [];
  let desc: Descriptor;
  if (sel.digest) {
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
  const have = list.map((d) => (d.platform ? formatPlatform(d.platform as Platform) : '?')).filter((p) => p !== 'unknown/unknown');
  throw new BerthError('PLATFORM_NOT_FOUND', `${describe} has no image for ${formatPlatform(want)}`,
    `it has: ${[...new Set(have)].join(', ')}; choose one with --platform`);
}

async function resolveFromList(store: BlobStore, list: Descriptor[], sel: Selector, reference: string): Promise<ResolvedImage> {
  return resolveDescriptor(store, choosePlatform(store.describe, list, sel.platform), sel, reference, 1);
}

export interface ManifestDoc {
  mediaType?: string;
  schemaVersion?: number;
  manifests?: Descriptor[];
  config?: Descriptor;
  layers?: Descriptor[];
}

/** Refuses what is not an image index or manifest berth can read; says which it is. */
export function manifestKind(doc: ManifestDoc, digest: string, declared?: string): 'index' | 'manifest' {
  const mediaType = doc.mediaType ?? declared ?? (doc.manifests ? MEDIA.ociIndex : MEDIA.ociManifest);
  if (mediaType === MEDIA.dockerSchema1 || mediaType === MEDIA.dockerSchema1Signed || doc.schemaVersion === 1) {
    throw new BerthError('UNSUPPORTED_MEDIA_TYPE', `${digest} is a Docker schema 1 manifest, which is deprecated and unsupported`,
      'push the image again with a current Docker or skopeo, which write schema 2 or OCI manifests');
  }
  if (INDEX_TYPES.has(mediaType) || (doc.manifests && !doc.layers)) return 'index';
  if (!MANIFEST_TYPES.has(mediaType) || !doc.config || !doc.layers) {
    throw new BerthError('UNSUPPORTED_MEDIA_TYPE', `${digest} has media type '${mediaType}', not an image manifest`,
      'name an image, not an artifact or attestation');
  }
  return 'manifest';
}

export async function resolveDescriptor(store: BlobStore, desc: Descriptor, sel: Selector, reference: string, depth: number): Promise<ResolvedImage> {
  if (depth > 4) throw new BerthError('SOURCE_INVALID', `${store.describe} nests indexes too deeply`, 'the image index is malformed');
  const data = await store.manifest(desc.digest);
  const doc = parseJson<ManifestDoc>(data, `manifest ${desc.digest}`);
  if (manifestKind(doc, desc.digest, desc.mediaType || undefined) === 'index') {
    return resolveFromList(store, doc.manifests ?? [], sel, reference);
  }
  const configData = await store.config(doc.config!.digest);
  const config = parseJson<ImageConfig>(configData, `image config ${doc.config!.digest}`);
  const layerDescs = doc.layers!;
  const diffIds = config.rootfs?.diff_ids ?? [];
  if (diffIds.length !== layerDescs.length) {
    throw new BerthError('SOURCE_INVALID', `manifest ${desc.digest} lists ${layerDescs.length} layers but its config has ${diffIds.length} diff_ids`,
      'the image is inconsistent; rebuild or copy it again');
  }
  for (const l of layerDescs) layerCompression(l.mediaType); // refuse artifacts before fetching anything
  const openers = await Promise.all(layerDescs.map((l) => store.layer(l)));
  const layers: LayerBlob[] = layerDescs.map((l, i) => ({
    digest: l.digest, diffId: diffIds[i], mediaType: l.mediaType, size: l.size,
    compression: layerCompression(l.mediaType),
    open: openers[i]!,
  }));
  return { reference, manifestDigest: desc.digest, configDigest: doc.config!.digest, config, layers };
}
