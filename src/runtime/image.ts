// Opening an image to run or inspect it, whatever made it: a berth squashfs, a SIF (its root
// partition served in place, at its offset), a squashfs made by mksquashfs or enroot, or an
// unpacked root directory (an Apptainer sandbox, a Charliecloud image, `enroot create`'s
// output). What is not one of those, or cannot be served faithfully, is refused with the
// reason; an image for another architecture too.
import { closeSync, fstatSync, openSync, readSync, statSync, type Stats } from 'node:fs';
import path from 'node:path';
import { BerthError, errnoOf, osError } from '../errors.js';
import { foreignMetadata } from '../image/foreign.js';
import { ImageFiles, type ImageLocation } from '../image/files.js';
import { formatPlatform, hostPlatform } from '../image/platform.js';
import { isSif, readSif, rootPartition, SIF_DATA } from '../image/sif.js';
import { METADATA_PATH, parseMetadata, readMetadataTrailer, type ImageMetadata } from '../squashfs/metadata.js';
import { parseSuperblock, type Superblock } from '../squashfs/superblock.js';

export type ImageFormat = 'berth' | 'sif' | 'squashfs' | 'directory';

export interface OpenedImage {
  location: ImageLocation;
  format: ImageFormat;
  /** The file's size (0 for a directory). */
  size: number;
  /** The squashfs served (a SIF's partition); absent for a directory. */
  squashfs?: Superblock;
  metadata: ImageMetadata;
  /** What berth does not use of the image, and why: said by inspect. */
  notes: string[];
  /** What berth leaves out that changes how the container runs: said on each run too. */
  warnings: string[];
}

function statImage(file: string): Stats {
  try {
    return statSync(file);
  } catch (e: unknown) {
    const errno = errnoOf(e);
    if (errno === 'ENOENT') throw new BerthError('SOURCE_NOT_FOUND', `${file} does not exist`, 'check the path');
    if (errno === 'ENOTDIR') throw new BerthError('SOURCE_NOT_FOUND', `${file} does not exist: a part of its path is not a directory`, 'check the path');
    throw osError(e, `cannot read the image ${file}`) ?? e;
  }
}

function openFile(file: string): number {
  try {
    return openSync(file, 'r');
  } catch (e: unknown) {
    throw osError(e, `cannot read the image ${file}`) ?? e;
  }
}

/** berth's own metadata inside the image (/.berth/image.json: an image older than the trailer, an unpacked one). */
function berthMetadata(files: ImageFiles, file: string): ImageMetadata | undefined {
  const text = files.read(`/${METADATA_PATH}`)?.toString('utf8');
  return text === undefined ? undefined : parseMetadata(text, file);
}

/** An image berth did not make, read by its own tool's conventions. */
function foreign(files: ImageFiles, file: string, architecture: string | undefined, warnings: string[]): ImageMetadata {
  return foreignMetadata(files, file, architecture, hostPlatform().architecture, (line) => warnings.push(line));
}

/**
 * A root directory runs under an overlay in which the helper creates mount points and adds your
 * passwd entry: in a user namespace that needs the directories to be yours (no capability
 * reaches a file of an owner the namespace does not map). Refused early, with the way out,
 * rather than as a failed mkdir in the middle of the start.
 */
function checkOwnDirectory(abs: string): void {
  const uid = process.getuid?.() ?? 0;
  if (uid === 0) return;
  for (const dir of [abs, path.join(abs, 'etc')]) {
    const st = statSync(dir, { throwIfNoEntry: false });
    if (st && st.uid !== uid) {
      throw new BerthError('IMAGE_UNSUPPORTED', `the image directory ${abs} is not yours (${dir} belongs to uid ${st.uid}): berth runs a root directory only when its files are yours`,
        `make it a squashfs image once (berth convert ${abs} -o IMAGE.sqsh), or run your own copy (cp -a ${abs} DIR)`);
    }
  }
}

function openDirectory(abs: string): OpenedImage {
  const location: ImageLocation = { path: abs, format: 'directory', offset: 0 };
  const files = new ImageFiles(location);
  const warnings: string[] = [];
  const metadata = berthMetadata(files, abs) ?? foreign(files, abs, undefined, warnings);
  return { location, format: 'directory', size: 0, metadata, notes: [], warnings };
}

function openFileImage(abs: string): OpenedImage {
  const fd = openFile(abs);
  let files: ImageFiles | undefined;
  try {
    const size = fstatSync(fd).size;
    const head = Buffer.alloc(96);
    const got = readSync(fd, head, 0, 96, 0);
    const notes: string[] = [];
    const warnings: string[] = [];
    if (isSif(head.subarray(0, got))) {
      const sif = readSif(fd, abs);
      const root = rootPartition(sif, abs);
      const part = Buffer.alloc(96);
      readSync(fd, part, 0, 96, root.offset);
      const squashfs = parseSuperblock(part, `${abs} (its root partition)`);
      const location: ImageLocation = { path: abs, format: 'squashfs', offset: root.offset };
      files = new ImageFiles(location);
      const signatures = sif.descriptors.filter((d) => d.type === SIF_DATA.signature).length;
      if (signatures > 0) notes.push(`it carries ${signatures} signature${signatures > 1 ? 's' : ''}, which berth does not verify (apptainer verify does)`);
      // Partitions other than the root are data (Apptainer binds them only when asked): unused here.
      const metadata = foreign(files, abs, root.architecture ?? sif.architecture, warnings);
      return { location, format: 'sif', size, squashfs, metadata, notes, warnings };
    }
    if (got < 96 || head.readUInt32LE(0) !== 0x73717368) {
      throw new BerthError('NOT_A_BERTH_IMAGE', `${abs} is not an image berth can run (a squashfs or SIF file, or a root directory)`,
        'convert what it is made from: berth convert docker://REF, oci:DIR or docker-archive:FILE -o IMAGE.sqsh');
    }
    const squashfs = parseSuperblock(head, abs);
    const location: ImageLocation = { path: abs, format: 'squashfs', offset: 0 };
    // A berth image's trailer is read without squashfs code: the helper checks the rest as it serves.
    const trailer = readMetadataTrailer(fd, size);
    if (trailer !== undefined) return { location, format: 'berth', size, squashfs, metadata: parseMetadata(trailer, abs), notes, warnings };
    files = new ImageFiles(location);
    const own = berthMetadata(files, abs);
    if (own) return { location, format: 'berth', size, squashfs, metadata: own, notes, warnings };
    return { location, format: 'squashfs', size, squashfs, metadata: foreign(files, abs, undefined, warnings), notes, warnings };
  } finally {
    files?.close();
    closeSync(fd);
  }
}

/** Reads what the image says about itself, without checking that this node can run it. */
export function describeImage(file: string): OpenedImage {
  const abs = path.resolve(file);
  return statImage(abs).isDirectory() ? openDirectory(abs) : openFileImage(abs);
}

/** The image at `file`, checked to be one this node can execute. */
export function openImage(file: string): OpenedImage {
  const image = describeImage(file);
  if (image.format === 'directory') checkOwnDirectory(image.location.path);
  const host = hostPlatform();
  const made = image.metadata.platform;
  if (made.architecture !== host.architecture) {
    throw new BerthError('WRONG_ARCHITECTURE', `${image.location.path} was made for ${formatPlatform(made)}; this node is ${formatPlatform(host)}`,
      `use an image made for ${formatPlatform(host)} (berth convert --platform ${formatPlatform(host)} ... for a registry image)`);
  }
  return image;
}
