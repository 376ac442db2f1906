// What a berth image carries about itself, at /.berth/image.json inside the squashfs, so that
// running and inspecting need nothing but the file. The same bytes also follow the squashfs
// (which ends where its superblock's bytes_used says; readers of squashfs ignore what follows),
// in a trailer that a reader finds with two small reads and no squashfs code:
//   [squashfs][JSON][u64 LE length of JSON]["BERTHMD1"]
// The format is versioned; readers refuse a newer version rather than guess. See README.
import { readSync, writeSync } from 'node:fs';
import { BerthError } from '../errors.js';
import type { ImageConfig, ResolvedImage } from '../image/source.js';
import type { Provenance } from '../signature/provenance.js';

export const METADATA_DIR = '.berth';
export const METADATA_PATH = '.berth/image.json';
export const METADATA_VERSION = 1;

export interface ImageMetadata {
  berthImage: number;
  source: string;
  manifestDigest: string | null;
  configDigest: string;
  platform: { os: string; architecture: string; variant?: string };
  created: string | null;
  config: {
    Env: string[];
    Entrypoint: string[] | null;
    Cmd: string[] | null;
    WorkingDir: string;
    User: string;
    Labels: Record<string, string>;
    Volumes: string[];
    ExposedPorts: string[];
    StopSignal: string | null;
  };
  layers: { digest: string; diffId: string | null; mediaType: string; size: number }[];
  /**
   * An image berth did not make (src/image/foreign.ts): whose way the container starts.
   * 'apptainer' sources /.singularity.d/env/*.sh first; 'enroot' and 'plain' start as the
   * config says. Absent for an OCI image.
   */
  startup?: 'apptainer' | 'enroot' | 'plain';
  /** Mounts the image asks for (an enroot image's /etc/fstab): tmpfs only. */
  mounts?: { kind: 'tmpfs'; target: string; options: string[] }[];
  /** The signature policy's verdict when it was pulled (src/signature/provenance.ts); absent for a local image. */
  provenance?: Provenance;
}

export function buildMetadata(image: ResolvedImage): ImageMetadata {
  const c: ImageConfig['config'] = image.config.config ?? {};
  return {
    berthImage: METADATA_VERSION,
    source: image.reference,
    manifestDigest: image.manifestDigest ?? null,
    configDigest: image.configDigest,
    platform: {
      os: image.config.os,
      architecture: image.config.architecture,
      ...(image.config.variant ? { variant: image.config.variant } : {}),
    },
    created: image.config.created ?? null,
    config: {
      Env: c.Env ?? [],
      Entrypoint: c.Entrypoint ?? null,
      Cmd: c.Cmd ?? null,
      WorkingDir: c.WorkingDir ?? '',
      User: c.User ?? '',
      Labels: c.Labels ?? {},
      Volumes: Object.keys(c.Volumes ?? {}).sort(),
      ExposedPorts: Object.keys(c.ExposedPorts ?? {}).sort(),
      StopSignal: c.StopSignal ?? null,
    },
    layers: image.layers.map((l) => ({ digest: l.digest, diffId: l.diffId ?? null, mediaType: l.mediaType, size: l.size })),
  };
}

export function parseMetadata(text: string, file: string): ImageMetadata {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (e: unknown) {
    throw new BerthError('NOT_A_BERTH_IMAGE', `${file} has a corrupt /${METADATA_PATH}`, 'convert the image again', { cause: e });
  }
  const version = (doc as { berthImage?: unknown } | null)?.berthImage;
  if (typeof version !== 'number') {
    throw new BerthError('NOT_A_BERTH_IMAGE', `${file} has no berth image metadata`, 'convert the image again with berth convert');
  }
  if (version > METADATA_VERSION) {
    throw new BerthError('NOT_A_BERTH_IMAGE', `${file} was made by a newer berth (image format ${version})`, 'upgrade berth to read it');
  }
  return doc as ImageMetadata;
}

const TRAILER_MAGIC = Buffer.from('BERTHMD1');

export function metadataBytes(metadata: ImageMetadata): Buffer {
  return Buffer.from(`${JSON.stringify(metadata, null, 2)}\n`);
}

/** Appends the trailer at `offset` (the end of the squashfs) of an open image file. */
export function writeMetadataTrailer(fd: number, offset: number, json: Buffer): void {
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(json.length));
  writeSync(fd, Buffer.concat([json, len, TRAILER_MAGIC]), 0, json.length + 16, offset);
}

/** The trailer's JSON from an open image file of `size` bytes, or undefined if it has none. */
export function readMetadataTrailer(fd: number, size: number): string | undefined {
  if (size < 16) return undefined;
  const tail = Buffer.alloc(16);
  readSync(fd, tail, 0, 16, size - 16);
  if (!tail.subarray(8).equals(TRAILER_MAGIC)) return undefined;
  const len = Number(tail.readBigUInt64LE(0));
  if (len > size - 16 || len > 64 * 1024 * 1024) return undefined;
  const json = Buffer.alloc(len);
  readSync(fd, json, 0, len, size - 16 - len);
  return json.toString('utf8');
}
