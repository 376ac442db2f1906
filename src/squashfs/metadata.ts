// What a berth image carries about itself, at /.berth/image.json inside the squashfs, so that
// running and inspecting need nothing but the file. The format is versioned; readers refuse a
// newer major version rather than guess. See README "The image file".
import { BerthError } from '../errors.js';
import type { ImageConfig, ResolvedImage } from '../image/source.js';

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
