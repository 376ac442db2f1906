// Reads a squashfs superblock (the first 96 bytes; layout in the kernel's
// fs/squashfs/squashfs_fs.h) to identify the file and its compression without mounting it.
import { BerthError } from '../errors.js';

export const COMPRESSOR_NAMES: Record<number, string> = { 1: 'gzip', 2: 'lzma', 3: 'lzo', 4: 'xz', 5: 'lz4', 6: 'zstd' };

export interface Superblock {
  compression: string;
  blockSize: number;
  inodes: number;
  bytesUsed: number;
  version: string;
}

/** Parses the first 96 bytes of a file; refuses anything that is not squashfs. */
export function parseSuperblock(buf: Buffer, file: string): Superblock {
  if (buf.length < 96 || buf.readUInt32LE(0) !== 0x73717368) {
    throw new BerthError('NOT_A_BERTH_IMAGE', `${file} is not a squashfs file`, 'make one with `berth convert SOURCE -o IMAGE.sqsh`');
  }
  return {
    inodes: buf.readUInt32LE(4),
    blockSize: buf.readUInt32LE(12),
    compression: COMPRESSOR_NAMES[buf.readUInt16LE(20)] ?? `unknown (${buf.readUInt16LE(20)})`,
    version: `${buf.readUInt16LE(28)}.${buf.readUInt16LE(30)}`,
    bytesUsed: Number(buf.readBigUInt64LE(40)),
  };
}
