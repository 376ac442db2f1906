// berth inspect IMAGE.sqsh [--json]
import { stat } from 'node:fs/promises';
import { BerthError } from '../errors.js';
import { METADATA_PATH, parseMetadata, readMetadataTrailer, type ImageMetadata } from '../squashfs/metadata.js';
import { readImageFile } from '../squashfs/read-file.js';
import { readSuperblock, type Superblock } from '../squashfs/superblock.js';
import { formatBytes } from './progress.js';

export interface Inspection {
  file: string;
  size: number;
  squashfs: Superblock;
  image: ImageMetadata;
}

export async function inspectImage(file: string): Promise<Inspection> {
  const squashfs = await readSuperblock(file);
  // The trailer costs two small reads; the file inside the image needs rdsquashfs.
  const data = readMetadataTrailer(file) ?? (await readImageFile(file, METADATA_PATH))?.toString('utf8');
  if (!data) {
    throw new BerthError('NOT_A_BERTH_IMAGE', `${file} is a squashfs file but has no /${METADATA_PATH}`,
      'it was not made by berth convert; convert the original image with berth');
  }
  const { size } = await stat(file);
  return { file, size, squashfs, image: parseMetadata(data, file) };
}

export async function inspectCommand(file: string, flags: { json?: boolean }): Promise<string> {
  const info = await inspectImage(file);
  if (flags.json) return JSON.stringify(info, null, 2);
  const m = info.image;
  const c = m.config;
  const json = (v: unknown) => JSON.stringify(v);
  const rows: [string, string][] = [
    ['File', `${info.file} (${formatBytes(info.size)}, squashfs ${info.squashfs.version}, ${info.squashfs.compression}, ${info.squashfs.inodes} inodes)`],
    ['Source', m.source],
    ['Manifest digest', m.manifestDigest ?? '(none: classic docker save archive)'],
    ['Config digest', m.configDigest],
    ['Platform', [m.platform.os, m.platform.architecture, m.platform.variant].filter(Boolean).join('/')],
    ['Created', m.created ?? '-'],
    ['Layers', String(m.layers.length)],
    ['Entrypoint', c.Entrypoint ? json(c.Entrypoint) : '-'],
    ['Cmd', c.Cmd ? json(c.Cmd) : '-'],
    ['WorkingDir', c.WorkingDir || '/'],
    ['User', c.User || '(root)'],
    ['Env', c.Env.join('\n' + ' '.repeat(17)) || '-'],
    ['Labels', Object.entries(c.Labels).map(([k, v]) => `${k}=${v}`).join('\n' + ' '.repeat(17)) || '-'],
    ['Volumes', c.Volumes.join(', ') || '-'],
    ['ExposedPorts', c.ExposedPorts.join(', ') || '-'],
  ];
  return rows.map(([k, v]) => `${`${k}:`.padEnd(17)}${v}`).join('\n');
}
