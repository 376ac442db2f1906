// SIF, the Singularity Image Format of Apptainer and SingularityCE (sylabs/sif, format "01"):
// a 128-byte header, a table of fixed-size descriptors, and the data objects they point at.
// berth runs a SIF in place: it finds the primary system partition (a squashfs) and serves it
// at its offset, copying nothing. The file may be hostile: every field is checked against the
// file's size before it is used. Layouts (little-endian, packed, as Go's encoding/binary writes):
//   header:     launch[32] magic[10]="SIF_MAGIC\0" version[3]="01\0" arch[3] uuid[16]
//               created i64, modified i64, descrFree i64, descrTotal i64, descrOffset i64,
//               descrSize i64, dataOffset i64, dataSize i64
//   descriptor: type i32, used u8, id u32, group u32, link u32, offset i64, size i64,
//               sizeWithPadding i64, created i64, modified i64, uid i64, gid i64, name[128], extra[384]
//   partition extra: fstype i32, parttype i32, arch[3]
import { fstatSync, readSync } from 'node:fs';
import { BerthError } from '../errors.js';

const MAGIC = 'SIF_MAGIC\0';
const MAGIC_AT = 32;
const HEADER_SIZE = 128;
const DESCRIPTOR_SIZE = 585;
/** More descriptors than any real SIF has; a header claiming more is refused, not read. */
const MAX_DESCRIPTORS = 4096;

export const SIF_DATA = {
  deffile: 0x4001, envvar: 0x4002, labels: 0x4003, partition: 0x4004, signature: 0x4005,
  genericJson: 0x4006, generic: 0x4007, cryptoMessage: 0x4008, sbom: 0x4009, ociRootIndex: 0x400a, ociBlob: 0x400b,
} as const;
export const SIF_FS = { squashfs: 1, ext3: 2, archive: 3, raw: 4, encryptedSquashfs: 5 } as const;
export const SIF_PART = { system: 1, primarySystem: 2, data: 3, overlay: 4 } as const;

/** SIF's architecture codes, in the names berth (and OCI) use. */
const ARCH: Record<string, string> = {
  '01': '386', '02': 'amd64', '03': 'arm', '04': 'arm64', '05': 'ppc64', '06': 'ppc64le', '07': 'mips',
  '08': 'mipsle', '09': 'mips64', '10': 'mips64le', '11': 's390x', '12': 'riscv64',
};

export interface SifDescriptor {
  type: number;
  id: number;
  groupId: number;
  linkedId: number;
  offset: number;
  size: number;
  name: string;
  /** Partitions only. */
  fsType?: number;
  partType?: number;
  architecture?: string;
}

export interface Sif {
  /** The header's architecture, when it names one. */
  architecture: string | undefined;
  descriptors: SifDescriptor[];
}

/** Whether the first bytes of a file are a SIF header. */
export function isSif(head: Buffer): boolean {
  return head.length >= MAGIC_AT + MAGIC.length && head.toString('latin1', MAGIC_AT, MAGIC_AT + MAGIC.length) === MAGIC;
}

const cstring = (b: Buffer, start: number, length: number): string => {
  const s = b.subarray(start, start + length);
  const nul = s.indexOf(0);
  return s.toString('utf8', 0, nul < 0 ? s.length : nul);
};

function invalid(file: string, what: string): BerthError {
  return new BerthError('SOURCE_INVALID', `${file} is not a valid SIF image: ${what}`,
    'the file is damaged or was cut short; copy it again, or rebuild it (apptainer build)');
}

/** A signed 64-bit field that must be a size or an offset in the file. */
function int64(b: Buffer, at: number, file: string, what: string): number {
  const v = b.readBigInt64LE(at);
  if (v < 0n || v > BigInt(Number.MAX_SAFE_INTEGER)) throw invalid(file, `its ${what} is ${v}`);
  return Number(v);
}

function readFully(fd: number, length: number, position: number, file: string, what: string): Buffer {
  const b = Buffer.alloc(length);
  let got = 0;
  while (got < length) {
    const n = readSync(fd, b, got, length - got, position + got);
    if (n === 0) throw invalid(file, `it ends inside its ${what}`);
    got += n;
  }
  return b;
}

/** The header and descriptors of the SIF open at fd; throws SOURCE_INVALID for anything inconsistent. */
export function readSif(fd: number, file: string): Sif {
  const size = fstatSync(fd).size;
  const h = readFully(fd, HEADER_SIZE, 0, file, 'header');
  if (!isSif(h)) throw invalid(file, 'it has no SIF_MAGIC');
  const version = cstring(h, 42, 3);
  if (version !== '01') {
    throw new BerthError('IMAGE_UNSUPPORTED', `${file} is a SIF of format version '${version}', which berth does not read (it reads '01')`,
      'convert it with the tool that made it (apptainer build out.sif ...) or upgrade berth');
  }
  const total = int64(h, 88, file, 'descriptor count');
  const offset = int64(h, 96, file, 'descriptor offset');
  if (total > MAX_DESCRIPTORS) throw invalid(file, `it claims ${total} descriptors`);
  if (offset + total * DESCRIPTOR_SIZE > size) throw invalid(file, 'its descriptors lie past its end');
  const table = total > 0 ? readFully(fd, total * DESCRIPTOR_SIZE, offset, file, 'descriptors') : Buffer.alloc(0);
  const descriptors: SifDescriptor[] = [];
  for (let i = 0; i < total; i++) {
    const d = table.subarray(i * DESCRIPTOR_SIZE, (i + 1) * DESCRIPTOR_SIZE);
    if (d[4] === 0) continue; // an unused slot
    const desc: SifDescriptor = {
      type: d.readInt32LE(0),
      id: d.readUInt32LE(5),
      groupId: d.readUInt32LE(9),
      linkedId: d.readUInt32LE(13),
      offset: int64(d, 17, file, `descriptor ${i}'s offset`),
      size: int64(d, 25, file, `descriptor ${i}'s size`),
      name: cstring(d, 73, 128),
    };
    if (desc.offset + desc.size > size) throw invalid(file, `descriptor ${desc.id} (${desc.name || 'unnamed'}) points past the end of the file`);
    if (desc.type === SIF_DATA.partition) {
      desc.fsType = d.readInt32LE(201);
      desc.partType = d.readInt32LE(205);
      desc.architecture = ARCH[cstring(d, 209, 3)];
    }
    descriptors.push(desc);
  }
  return { architecture: ARCH[cstring(h, 45, 3)], descriptors };
}

/**
 * The partition to run: the primary system partition, a squashfs. What berth cannot serve
 * faithfully is refused with the reason, never run as a different image: an encrypted root,
 * an ext3 root, and an overlay partition (its changes would be missing).
 */
export function rootPartition(sif: Sif, file: string): SifDescriptor {
  const partitions = sif.descriptors.filter((d) => d.type === SIF_DATA.partition);
  const overlay = partitions.find((d) => d.partType === SIF_PART.overlay);
  if (overlay) {
    throw new BerthError('IMAGE_UNSUPPORTED', `${file} carries an overlay partition (descriptor ${overlay.id}), which berth cannot apply without root: running it without would run a different image`,
      `run a copy without it (cp ${file} copy.sif; siftool del ${overlay.id} copy.sif), or keep the changes elsewhere: apptainer overlay or berth --writable-tmpfs`);
  }
  const primary = partitions.find((d) => d.partType === SIF_PART.primarySystem) ?? partitions.find((d) => d.partType === SIF_PART.system);
  if (!primary) {
    const oci = sif.descriptors.some((d) => d.type === SIF_DATA.ociRootIndex || d.type === SIF_DATA.ociBlob);
    throw new BerthError(oci ? 'IMAGE_UNSUPPORTED' : 'SOURCE_INVALID', oci
      ? `${file} is an OCI-SIF (an OCI image inside a SIF), not a SIF with a root file system partition`
      : `${file} has no system partition: it holds no root file system to run`,
    oci ? 'run the OCI image it was made from (berth run docker://...), or build a plain SIF (apptainer build --oci=false)' : 'check that it is a container image (siftool list FILE)');
  }
  if (primary.fsType === SIF_FS.encryptedSquashfs) {
    throw new BerthError('IMAGE_UNSUPPORTED', `${file} has an encrypted root file system, which berth cannot decrypt`, 'run it with apptainer, or build an unencrypted SIF');
  }
  if (primary.fsType !== SIF_FS.squashfs) {
    throw new BerthError('IMAGE_UNSUPPORTED', `${file}'s root file system is not squashfs (SIF file system type ${primary.fsType})`,
      'rebuild it as squashfs (apptainer build out.sif old.sif), or unpack it (apptainer build --sandbox DIR FILE) and run the directory');
  }
  return primary;
}

/** A data object's bytes (labels, environment, a JSON descriptor), at most `limit` of them. */
export function readObject(fd: number, d: SifDescriptor, file: string, limit = 1 << 20): Buffer {
  if (d.size > limit) throw invalid(file, `descriptor ${d.id} is ${d.size} bytes, more than berth reads for metadata`);
  return readFully(fd, d.size, d.offset, file, `descriptor ${d.id}`);
}
