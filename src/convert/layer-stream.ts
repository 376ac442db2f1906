// One layer as a verified stream of tar bytes: the blob's digest is checked over the bytes as
// stored, then they are decompressed (by the addon, off the main thread: ISA-L's inflate for
// gzip, libzstd for zstd), then the diff_id is checked over the tar, in the same pass. A mismatch, or a
// decompressor that fails (truncated input, trailing garbage), fails the stream at its end,
// before the conversion can be committed.
import { createHash } from 'node:crypto';
import { Duplex, Transform } from 'node:stream';
import { BerthError } from '../errors.js';
import { parseDigest, type DigestAlgorithm } from '../image/digest.js';
import type { Compression, LayerBlob } from '../image/source.js';
import { loadAddon, type NativeDecompressor } from '../runtime/native.js';

export function sniffCompression(head: Buffer): Compression | 'xz' | 'bzip2' | 'unknown' {
  if (head[0] === 0x1f && head[1] === 0x8b) return 'gzip';
  if (head.length >= 4 && head.readUInt32LE(0) === 0xfd2fb528) return 'zstd';
  if (head.subarray(0, 6).equals(Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]))) return 'xz';
  if (head.toString('latin1', 0, 3) === 'BZh') return 'bzip2';
  if (head.length >= 262 && head.toString('latin1', 257, 262) === 'ustar') return 'none';
  if (head.length >= 512 && head.subarray(0, 512).every((b) => b === 0)) return 'none'; // empty tar
  if (head.length >= 512 && plausibleV7Header(head)) return 'none';
  return 'unknown';
}

function plausibleV7Header(h: Buffer): boolean {
  let sum = 0;
  for (let i = 0; i < 512; i++) sum += i >= 148 && i < 156 ? 32 : h[i]!;
  return parseInt(h.toString('latin1', 148, 156).replace(/[\0 ]/g, ''), 8) === sum;
}

async function readHead(layer: LayerBlob): Promise<Buffer> {
  const n = Math.min(512, layer.size);
  if (n <= 0) return Buffer.alloc(0);
  const chunks: Buffer[] = [];
  for await (const c of layer.open({ start: 0, end: n - 1 })) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

/** Decides how a layer is compressed: its media type, checked against its first bytes. */
export async function layerCompressionOf(layer: LayerBlob, describe: string): Promise<Compression> {
  const head = await readHead(layer);
  if (head.length === 0) {
    throw new BerthError('LAYER_CORRUPT', `${describe} is empty (0 bytes): not even a tar's end-of-archive marker`,
      'the image is corrupt; rebuild or copy it again');
  }
  const found = sniffCompression(head);
  if (found === 'xz' || found === 'bzip2' || found === 'unknown') {
    throw new BerthError('LAYER_CORRUPT', `${describe} is ${found === 'unknown' ? 'neither a tar archive nor gzip- or zstd-compressed' : `${found}-compressed, which OCI layers may not be`}`,
      'the image is corrupt or not an OCI/Docker image; rebuild or copy it again');
  }
  if (layer.compression !== undefined && layer.compression !== found) {
    throw new BerthError('LAYER_CORRUPT', `${describe} is declared as ${layer.compression === 'none' ? 'uncompressed tar' : layer.compression} (${layer.mediaType}) but its bytes are ${found === 'none' ? 'an uncompressed tar' : found}`,
      'the manifest does not match its blobs; rebuild or copy the image again');
  }
  return found;
}

/** An expected digest and what a mismatch names. */
interface Expected {
  digest: string;
  what: () => string;
  kind: string;
}

function expect(digest: string, what: () => string, kind = 'its digest'): Expected & { algorithm: DigestAlgorithm; hex: string } {
  return { digest, what, kind, ...parseDigest(digest, what()) };
}

function mismatch(e: Expected, algorithm: DigestAlgorithm, actual: string): BerthError {
  return new BerthError('DIGEST_MISMATCH', `${e.what()} does not match ${e.kind}: expected ${e.digest}, got ${algorithm}:${actual}`,
    'the image was corrupted or tampered with; copy it again from a trusted source. Nothing was written.');
}

/** Hashes what flows through and fails at the end if the digest differs. */
export function digestCheck(expected: string, what: () => string, kind = 'its digest'): Transform {
  const e = expect(expected, what, kind);
  const hash = createHash(e.algorithm);
  return new Transform({
    transform(chunk: Buffer, _enc, cb) {
      hash.update(chunk);
      cb(null, chunk);
    },
    flush(cb) {
      const actual = hash.digest('hex');
      cb(actual === e.hex ? undefined : mismatch(e, e.algorithm, actual));
    },
  });
}

/**
 * gzip or zstd decompressed by the addon on the thread pool (ISA-L's inflate, libzstd): one
 * step at a time, each taking what was written and giving at most a few MiB, so a small blob
 * that inflates hugely still waits for its reader. The stream ends only once the decompressor
 * said the input was whole: a cut stream, bytes after it, or a bad checksum fail it instead.
 * The blob's digest (over the input) and the diff_id (over the output) are computed by the
 * addon in the same steps, and checked once the input is whole: a blob that is not the one
 * named is told as that, before what its bytes then fail to be.
 */
class LayerDecompressor extends Duplex {
  private readonly native: NativeDecompressor;
  /** The step to run once the reader wants more. */
  private pending: (() => void) | undefined;
  private readonly blob: ReturnType<typeof expect> | undefined;
  private readonly diffId: ReturnType<typeof expect> | undefined;

  constructor(private readonly kind: 'gzip' | 'zstd', private readonly describe: string, blob?: Expected, diffId?: Expected) {
    // Room for a few of the addon's 2 MiB blocks, so that the next step can run while the
    // parser takes this one (step).
    super({ readableHighWaterMark: 8 << 20, writableHighWaterMark: 1 << 20 });
    this.blob = blob && expect(blob.digest, blob.what, blob.kind);
    this.diffId = diffId && expect(diffId.digest, diffId.what, diffId.kind);
    this.native = new (loadAddon().Decompressor)(kind, this.blob?.algorithm ?? null, this.diffId?.algorithm ?? null);
  }

  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (e?: Error | null) => void): void {
    this.step(chunk, false, cb);
  }

  override _final(cb: (e?: Error | null) => void): void {
    this.step(null, true, (e) => {
      if (!e) this.push(null);
      cb(e);
    });
  }

  /** After the last step (the input whole): the blob's digest first, then what it gave. */
  private verdict(decompressed: Error | undefined): Error | undefined {
    if (this.blob === undefined && this.diffId === undefined) return decompressed;
    const [input, output] = this.native.digests();
    if (this.blob && input !== this.blob.hex) return mismatch(this.blob, this.blob.algorithm, input ?? '');
    if (decompressed) return decompressed;
    if (this.diffId && output !== this.diffId.hex) return mismatch(this.diffId, this.diffId.algorithm, output ?? '');
    return undefined;
  }

  override _read(): void {
    const pending = this.pending;
    this.pending = undefined;
    pending?.();
  }

  private step(input: Buffer | null, last: boolean, cb: (e?: Error | null) => void): void {
    this.native.step(input, last, (err, out, more) => {
      if (this.destroyed) return cb();
      if (err) {
        const corrupt = new BerthError('LAYER_CORRUPT', `${this.describe} is not a valid ${this.kind} stream: ${err.message}`,
          'the layer is corrupt or truncated; copy the image again. Nothing was written.');
        return cb(last ? this.verdict(corrupt) : corrupt);
      }
      // Nothing more from this input: the next is taken (cb) only once the reader wants more,
      // or an incompressible layer (one step per chunk) would pile up here at the reader's cost.
      const next = more ? () => this.step(null, last, cb) : last ? () => cb(this.verdict(undefined)) : () => cb();
      // The reader (the tar parser) runs on this thread, inside the push when it is flowing, so
      // the next step goes to the thread pool first wherever the reader has room for its output:
      // pushing first made inflate and parse take turns. The end (last, nothing more) still
      // waits for the push, which must come before the stream's own end.
      if (!(last && !more) && this.readableLength + (out?.length ?? 0) < this.readableHighWaterMark) {
        next();
        if (out) this.push(out);
        return;
      }
      const wanted = out ? this.push(out) : true;
      if (wanted) next();
      else this.pending = next;
    });
  }
}

/**
 * The stages that turn a layer blob into verified tar bytes, to be put into a pipeline after
 * the blob's own stream: the blob's digest over the stored bytes (where the source names one),
 * the decompressor, and the diff_id over the tar it gives. The blob's digest alone would pin
 * the bytes but not say that they are the tar the config describes (a layer cut short and
 * stored under its own digest decompresses to less); hashing the tar in the same pass, as it
 * streams to the parser, costs no second read.
 */
export function tarStages(layer: LayerBlob, compression: Compression, describe: string): (Transform | Duplex)[] {
  const blobChecked = layer.compression !== undefined; // classic docker-archive layers have only the diff_id
  const blob: Expected | undefined = blobChecked && !layer.verified ? { digest: layer.digest, what: () => describe, kind: 'its digest' } : undefined;
  const diffId: Expected = { digest: layer.diffId, what: () => `the uncompressed content of ${describe}`, kind: 'its diff_id in the image config' };
  if (compression !== 'none') return [new LayerDecompressor(compression, describe, blob, diffId)];
  const stages: Transform[] = [];
  if (blob) stages.push(digestCheck(blob.digest, blob.what));
  // An uncompressed layer's diff_id is its blob digest: checked once is enough (with `verified`,
  // by the store, over these same bytes).
  if (!(blobChecked && layer.diffId === layer.digest)) stages.push(digestCheck(diffId.digest, diffId.what, diffId.kind));
  return stages;
}
