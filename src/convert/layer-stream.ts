// One layer as a verified stream of tar bytes: the blob's digest is checked over the bytes as
// stored, then they are decompressed (gzip in-process by zlib, zstd by the zstd program on the
// other core), then the diff_id is checked over the tar, in the same pass. A mismatch, or a
// decompressor that fails (truncated input, trailing garbage), fails the stream at its end,
// before the conversion can be committed.
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { createHash } from 'node:crypto';
import { Duplex, Transform } from 'node:stream';
import { createGunzip } from 'node:zlib';
import { BerthError, messageOf } from '../errors.js';
import { parseDigest } from '../image/digest.js';
import type { Compression, LayerBlob } from '../image/source.js';

export function sniffCompression(head: Buffer): Compression | 'xz' | 'bzip2' | 'unknown' {
  if (head[0] === 0x1f && head[1] === 0x8b) return 'gzip';
  if (head.readUInt32LE(0) === 0xfd2fb528) return 'zstd';
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

/** Hashes what flows through and fails at the end if the digest differs. */
export function digestCheck(expected: string, what: () => string, kind = 'its digest'): Transform {
  const { algorithm, hex } = parseDigest(expected, what());
  const hash = createHash(algorithm);
  return new Transform({
    transform(chunk: Buffer, _enc, cb) {
      hash.update(chunk);
      cb(null, chunk);
    },
    flush(cb) {
      const actual = hash.digest('hex');
      if (actual === hex) cb();
      else cb(new BerthError('DIGEST_MISMATCH', `${what()} does not match ${kind}: expected ${expected}, got ${algorithm}:${actual}`,
        'the image was corrupted or tampered with; copy it again from a trusted source. Nothing was written.'));
    },
  });
}

/**
 * `zstd -d` in a process of its own. Its output ends only once zstd has exited cleanly: the end
 * of its stdout alone does not say that the input was whole (a truncated frame ends it too,
 * with exit status 1 and "premature end" on stderr, a little later).
 */
class ZstdDecompressor extends Duplex {
  private readonly child: ChildProcessWithoutNullStreams;
  private stderr = '';
  /** A write waiting for zstd's stdin to drain. */
  private waiting: (() => void) | undefined;

  constructor(private readonly describe: string) {
    super({ readableHighWaterMark: 1 << 20 });
    this.child = spawn('zstd', ['-dcq']);
    const { stdin, stdout, stderr } = this.child;
    stderr.setEncoding('utf8').on('data', (d: string) => { this.stderr = (this.stderr + d).slice(0, 4096); });
    stdout.on('data', (c: Buffer) => {
      if (!this.push(c)) stdout.pause();
    });
    // EPIPE when zstd stops reading early (corrupt input): its exit status says why, so the
    // write is let go and 'close' reports it.
    stdin.on('error', () => this.release());
    stdin.on('drain', () => this.release());
    this.child.on('error', (e) => this.destroy(new BerthError('TOOL_MISSING', `cannot run zstd to read ${describe}: ${messageOf(e)}`,
      'install zstd (apt-get install zstd)')));
    this.child.on('close', (code, signal) => this.exited(code, signal));
  }

  override _read(): void {
    this.child.stdout.resume();
  }

  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (e?: Error | null) => void): void {
    if (this.child.stdin.destroyed || this.child.stdin.write(chunk)) cb();
    else this.waiting = cb;
  }

  override _final(cb: (e?: Error | null) => void): void {
    this.child.stdin.end();
    cb();
  }

  override _destroy(e: Error | null, cb: (e?: Error | null) => void): void {
    this.child.kill();
    this.release();
    cb(e);
  }

  private release(): void {
    const waiting = this.waiting;
    this.waiting = undefined;
    waiting?.();
  }

  private exited(code: number | null, signal: NodeJS.Signals | null): void {
    this.release();
    if (this.destroyed) return;
    const said = this.stderr.trim().replace(/^zstd: /, '').replace(/\/\*stdin\*\\ ?: ?/g, '');
    if (code === 0 && said === '') {
      this.push(null);
      return;
    }
    this.destroy(new BerthError('LAYER_CORRUPT', `${this.describe} is not a valid zstd stream: ${said || `zstd ${signal ? `was killed by ${signal}` : `exited with ${code}`}`}`,
      'the layer is corrupt or truncated; copy the image again. Nothing was written.'));
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
  const stages: (Transform | Duplex)[] = [];
  const blobChecked = layer.compression !== undefined; // classic docker-archive layers have only the diff_id
  if (blobChecked) stages.push(digestCheck(layer.digest, () => describe));
  if (compression === 'gzip') stages.push(createGunzip({ chunkSize: 1024 * 1024 }));
  else if (compression === 'zstd') stages.push(new ZstdDecompressor(describe));
  // An uncompressed layer's diff_id is its blob digest: checked once is enough.
  if (!(blobChecked && compression === 'none' && layer.diffId === layer.digest)) {
    stages.push(digestCheck(layer.diffId, () => `the uncompressed content of ${describe}`, 'its diff_id in the image config'));
  }
  return stages;
}

/** zlib's own errors ("incorrect header check", "unexpected end of file") name no layer. */
export function explainLayerError(e: unknown, describe: string): unknown {
  const code = (e as { code?: unknown } | null)?.code;
  if (typeof code === 'string' && code.startsWith('Z_')) {
    return new BerthError('LAYER_CORRUPT', `${describe} is not a valid gzip stream: ${messageOf(e)}`,
      'the layer is corrupt or truncated; copy the image again. Nothing was written.', { cause: e });
  }
  return e;
}
