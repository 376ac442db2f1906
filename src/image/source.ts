// What every image source (oci:, docker-archive:, docker://) hands to the converter: a
// resolved manifest, its checked config and its layer blobs, each of which can be opened again
// from the start (the merge may read a layer twice).
import type { Readable } from 'node:stream';
import type { Platform } from './platform.js';

export type Compression = 'gzip' | 'zstd' | 'none';

export interface LayerBlob {
  /** Digest of the blob as stored (compressed bytes); checked while streaming. */
  digest: string;
  /** Digest of the uncompressed tar, from the config's rootfs.diff_ids; checked too. */
  diffId: string;
  mediaType: string;
  size: number;
  /** From the media type; undefined where the source does not say (classic docker save). */
  compression: Compression | undefined;
  open(range?: { start: number; end: number }): Readable;
  /** open()'s bytes were already checked against `digest` (a registry download, hashed as it came). */
  verified?: boolean;
}

/**
 * The parts of an OCI image config that berth carries into the image file, as schema.ts
 * checked them: null there has become absent here.
 */
export interface ImageConfig {
  architecture: string;
  os: string;
  variant?: string;
  created?: string;
  config: {
    User?: string;
    Env?: string[];
    Entrypoint?: string[];
    Cmd?: string[];
    WorkingDir?: string;
    Labels?: Record<string, string>;
    Volumes?: Record<string, unknown>;
    ExposedPorts?: Record<string, unknown>;
    StopSignal?: string;
  };
  rootfs: { type: string; diff_ids: string[] };
}

export interface ResolvedImage {
  /** The source as the user can name it again, e.g. "oci:/data/img:latest". */
  reference: string;
  /** Absent only for classic docker-archive tarballs, which carry no manifest. */
  manifestDigest: string | undefined;
  configDigest: string;
  config: ImageConfig;
  layers: LayerBlob[];
}

export interface ImageSource {
  /** Human-readable name for messages. */
  readonly describe: string;
  resolve(platform: Platform): Promise<ResolvedImage>;
}
