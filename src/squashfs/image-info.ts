// What a berth image file says about itself: its superblock, its size and its metadata, read
// through one descriptor with a few small synchronous reads, since `berth run` pays for this
// on every start. Images made before the metadata trailer existed are read with rdsquashfs.
import { closeSync, fstatSync, openSync, readSync } from 'node:fs';
import { BerthError, errnoOf } from '../errors.js';
import { METADATA_PATH, parseMetadata, readMetadataTrailer, type ImageMetadata } from './metadata.js';
import { readImageFile } from './read-file.js';
import { parseSuperblock, type Superblock } from './superblock.js';

export interface ImageInfo {
  file: string;
  size: number;
  squashfs: Superblock;
  image: ImageMetadata;
}

export async function readImageInfo(file: string): Promise<ImageInfo> {
  let fd: number;
  try {
    fd = openSync(file, 'r');
  } catch (e: unknown) {
    if (errnoOf(e) === 'ENOENT') throw new BerthError('SOURCE_NOT_FOUND', `${file} does not exist`, 'check the path');
    throw new BerthError('SOURCE_INVALID', `cannot read ${file}: ${(e as Error).message}`, 'check the path and its permissions', { cause: e });
  }
  let squashfs: Superblock;
  let size: number;
  let data: string | undefined;
  try {
    const head = Buffer.alloc(96);
    const got = readSync(fd, head, 0, 96, 0);
    squashfs = parseSuperblock(head.subarray(0, got), file);
    size = fstatSync(fd).size;
    data = readMetadataTrailer(fd, size);
  } finally {
    closeSync(fd);
  }
  data ??= (await readImageFile(file, METADATA_PATH))?.toString('utf8');
  if (!data) {
    throw new BerthError('NOT_A_BERTH_IMAGE', `${file} is a squashfs file but has no /${METADATA_PATH}`,
      'it was not made by berth convert; convert the original image with berth');
  }
  return { file, size, squashfs, image: parseMetadata(data, file) };
}
