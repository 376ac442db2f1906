// Reads a squashfs superblock (the first 96 bytes; layout in the kernel's
// fs/squashfs/squashfs_fs.h) to identify the file and its compression without mounting it.
import { open } from 'node:fs/promises';
import { BerthError, errnoOf } from '../errors.js';

export const COMPRESSOR_NAMES: Record<number, string> = { 1: 'gzip', 2: 'lzma', 3: 'lzo', 4: 'xz', 5: 'lz4', 6: 'zstd' };

export interface Superblock {
  compression: string;
  blockSize: number;
  inodes: number;
  bytesUsed: number;
  version: string;
}

export async function readSuperblock(file: string): Promise<Superblock> {
  let buf: Buffer;
  try {
    const fh = await open(file, 'r');
    try {
      buf = Buffer.alloc(96);
      const { bytesRead } = await fh.read(buf, 0, 96, 0);
      buf = buf.subarray(0, bytesRead);
    } finally {
      await fh.close();
    }
  } catch (e: unknown) {
    if (errnoOf(e) === 'ENOENT') throw new BerthError('SOURCE_NOT_FOUND', `${file} does not exist`, 'check the path');
    throw new BerthError('SOURCE_INVALID', `cannot read ${file}: ${(e as Error).message}`, 'check the path and its permissions', { cause: e });
  }
  if (buf.length < 96 || buf.readUInt32LE(0) !== 0x73717368) {
    throw new BerthError('NOT_A_BERTH_IMAGE', `${file} is not a squashfs file`, 'make one with `berth convert SOURCE -o IMAGE.sqsh`');
  }
  const major = buf.readUInt16LE(28);
  const minor = buf.readUInt16LE(30);
  return {
    inodes: buf.readUInt32LE(4),
    blockSize: buf.readUInt32LE(12),
    compression: COMPRESSOR_NAMES[buf.readUInt16LE(20)] ?? `unknown (${buf.readUInt16LE(20)})`,
    version: `${major}.${minor}`,
    bytesUsed: Number(buf.readBigUInt64LE(40)),
  };
}
