// `berth convert` of an image that is already a file system: a SIF, a squashfs made by another
// tool, a root directory. The result is a berth image (squashfs + metadata trailer) that runs
// as the original ran (its metadata keeps whose conventions start it):
//   a squashfs (a SIF's partition included) is copied as it is, byte for byte up to its end
//     (bytes_used; nothing recompressed), then the trailer;
//   a directory is made a squashfs by mksquashfs, every file root's (as an OCI image's are),
//     then the trailer.
// Like every conversion, the output appears whole or not at all (output.ts).
import { spawn } from 'node:child_process';
import { closeSync, openSync, readSync, writeSync } from 'node:fs';
import { BerthError, messageOf } from '../errors.js';
import { describeImage, type OpenedImage } from '../runtime/image.js';
import { metadataBytes, writeMetadataTrailer } from '../squashfs/metadata.js';
import type { ConvertEvents, ConvertOptions, ConvertResult } from './convert.js';
import { AtomicOutput, writeError } from './output.js';

/** Whether `text` names a local image to repack (a path), not a transport:reference source. */
export function isLocalImage(text: string): boolean {
  return !/^[a-z][a-z0-9+.-]*:/.test(text) || text.startsWith('/') || text.startsWith('.');
}

const BLOCK = 1 << 20;

function copySquashfs(image: OpenedImage, out: AtomicOutput, events: ConvertEvents): number {
  const length = image.squashfs!.bytesUsed;
  const fd = openSync(image.location.path, 'r');
  try {
    const buf = Buffer.alloc(BLOCK);
    let done = 0;
    while (done < length) {
      const n = readSync(fd, buf, 0, Math.min(BLOCK, length - done), image.location.offset + done);
      if (n === 0) throw new BerthError('SOURCE_INVALID', `${image.location.path} ends inside its squashfs`, 'the file was cut short; copy it again');
      writeSync(out.fd, buf, 0, n, done);
      done += n;
      events.bytes(n);
    }
  } finally {
    closeSync(fd);
  }
  // squashfs readers want the image padded to 4 KiB, as mksquashfs and tar2sqfs leave it.
  const padded = Math.ceil(length / 4096) * 4096;
  if (padded > length) writeSync(out.fd, Buffer.alloc(padded - length), 0, padded - length, length);
  return padded;
}

function compressionArgs(opts: ConvertOptions): string[] {
  if (opts.compression === 'none') return ['-noI', '-noD', '-noF', '-noX'];
  const level = opts.level !== undefined && ['zstd', 'gzip', 'xz'].includes(opts.compression) ? ['-Xcompression-level', String(opts.level)] : [];
  return ['-comp', opts.compression, ...level];
}

function squashDirectory(dir: string, out: AtomicOutput, opts: ConvertOptions): Promise<number> {
  const args = [dir, AtomicOutput.childPath, '-noappend', '-quiet', '-no-progress', '-all-root', '-no-xattrs',
    '-processors', String(opts.jobs), ...compressionArgs(opts)];
  return new Promise((resolve, reject) => {
    const child = spawn('mksquashfs', args, { stdio: ['ignore', 'ignore', 'pipe', out.fd] });
    let err = '';
    child.stderr?.setEncoding('utf8').on('data', (d: string) => { err += d; });
    child.on('error', (e) => reject(new BerthError('TOOL_MISSING', `cannot run mksquashfs: ${messageOf(e)}`, 'install squashfs-tools (apt-get install squashfs-tools)')));
    child.on('close', (code) => {
      if (code === 0) resolve(out.size);
      else reject(new BerthError('TOOL_FAILED', `mksquashfs could not pack ${dir}: ${err.trim().split('\n').slice(-3).join('; ') || `exit ${code}`}`,
        'check that every file of the directory is readable by you; nothing was written'));
    });
  });
}

export async function repackImage(file: string, opts: ConvertOptions, events: ConvertEvents): Promise<ConvertResult> {
  const image = describeImage(file);
  for (const line of [...image.warnings, ...image.notes]) events.warn(line);
  // A signature verdict is not carried over: the new file is a local image, whatever the old one said.
  const { provenance: _dropped, ...metadata } = image.metadata;
  const out = AtomicOutput.create(opts.output, opts.force);
  const onSignal = () => out.abort();
  process.once('exit', onSignal);
  try {
    events.finishing();
    const end = image.format === 'directory' ? await squashDirectory(image.location.path, out, opts) : copySquashfs(image, out, events);
    try {
      writeMetadataTrailer(out.fd, end, metadataBytes(metadata));
    } catch (e: unknown) {
      throw writeError(out.target, e);
    }
    const size = out.size;
    out.commit();
    return { output: out.target, size, metadata, indexed: false, ...(image.squashfs ? { compression: image.squashfs.compression } : {}) };
  } finally {
    out.abort();
    process.removeListener('exit', onSignal);
  }
}
