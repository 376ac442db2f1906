// `berth convert`: one image source -> one squashfs file, streamed end to end.
//
//   layer blob -> digest check -> gunzip/zstd -> diff_id check -> TarParser -> LayerMerger --+
//   (top layer first; each layer in turn)                                                   v
//   /.berth/image.json ----------------------------------------------------> tar2sqfs stdin -> IMAGE.sqsh
//
// Back-pressure flows from tar2sqfs to the blob reader, so memory stays flat whatever the size.
// Every check (digests, diff_ids, the decompressors' exit, the tar's end) fails its layer's
// stream by the time that stream ends, and the output is named only after the last layer.
import { Transform, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { BerthError } from '../errors.js';
import type { Platform } from '../image/platform.js';
import type { Compression, ImageSource, LayerBlob, ResolvedImage } from '../image/source.js';
import { buildMetadata, metadataBytes, METADATA_DIR, METADATA_PATH, writeMetadataTrailer, type ImageMetadata } from '../squashfs/metadata.js';
import { layerCompressionOf, tarStages } from './layer-stream.js';
import { LayerIndexBuilder, Merger, NeedsLayerIndex, type LayerIndex } from './merge.js';
import { AtomicOutput, writeError } from './output.js';
import { TarFormatError, TarParser, type TarEntry, type TarSink } from './tar-reader.js';
import { END_OF_ARCHIVE, encodeHeader, paddingFor } from './tar-writer.js';
import { Tar2sqfs, type SquashOptions } from './tar2sqfs.js';

export interface ConvertOptions extends SquashOptions {
  output: string;
  force: boolean;
  platform: Platform;
}

/** What the converter reports as it goes; the CLI draws it. */
export interface ConvertEvents {
  resolved(image: ResolvedImage): void;
  layerStart(n: number, of: number, layer: LayerBlob, pass: 'index' | 'merge'): void;
  bytes(n: number): void;
  finishing(): void;
  warn(message: string): void;
}

export interface ConvertResult {
  output: string;
  size: number;
  metadata: ImageMetadata;
  /** Whether the second, indexed pass was needed (duplicate entries or orphaned hard links). */
  indexed: boolean;
  /** The squashfs's compression when it is not the one asked for (a squashfs copied as it was). */
  compression?: string;
}

export async function convertImage(source: ImageSource, opts: ConvertOptions, events: ConvertEvents): Promise<ConvertResult> {
  const image = await source.resolve(opts.platform);
  events.resolved(image);
  const metadata = buildMetadata(image);
  // Each layer's compression is read from its first bytes when its turn comes: a registry's
  // lower layers may still be downloading while the top ones are merged.
  const compressions: Compression[] = [];
  const output = AtomicOutput.create(opts.output, opts.force);
  const onSignal = () => output.abort();
  process.once('exit', onSignal);
  try {
    let indexed = false;
    try {
      await writeImage(image, compressions, metadata, output, opts, events, false);
    } catch (e: unknown) {
      if (!(e instanceof NeedsLayerIndex)) throw e;
      events.warn(`${e.message}: reading each layer twice to apply the layers exactly`);
      indexed = true;
      output.truncate();
      await writeImage(image, compressions, metadata, output, opts, events, true);
    }
    try {
      writeMetadataTrailer(output.fd, output.size, metadataBytes(metadata));
    } catch (e: unknown) {
      throw writeError(output.target, e); // a full disk here too is DISK_FULL, whichever command converts
    }
    const size = output.size;
    output.commit();
    return { output: output.target, size, metadata, indexed };
  } finally {
    output.abort();
    process.removeListener('exit', onSignal);
  }
}

function describeLayer(image: ResolvedImage, i: number): string {
  return `layer ${i + 1}/${image.layers.length} (${image.layers[i]!.digest})`;
}

async function writeImage(
  image: ResolvedImage, compressions: Compression[], metadata: ImageMetadata, output: AtomicOutput,
  opts: ConvertOptions, events: ConvertEvents, indexed: boolean,
): Promise<void> {
  const squash = new Tar2sqfs(opts, output);
  const stdin = squash.stdin;
  let out: (parts: Buffer[]) => void = (parts) => {
    writeParts(stdin, parts);
  };
  const batch = new Batch((parts) => out(parts));
  const merger = new Merger((chunk) => batch.add(chunk));
  try {
    writeMetadata(metadata, (chunk) => batch.add(chunk));
    batch.flush();
    merger.reserve(METADATA_DIR);
    for (let i = image.layers.length - 1; i >= 0; i--) {
      const layer = image.layers[i]!;
      const describe = describeLayer(image, i);
      compressions[i] ??= await layerCompressionOf(layer, describe);
      let index: LayerIndex | undefined;
      if (indexed) {
        events.layerStart(i + 1, image.layers.length, layer, 'index');
        const builder = new LayerIndexBuilder();
        await streamLayer(layer, compressions[i]!, describe, builder, events, null, null);
        index = builder.build();
      }
      events.layerStart(i + 1, image.layers.length, layer, 'merge');
      const sink = merger.layer(i, describe, index);
      await streamLayer(layer, compressions[i]!, describe, sink, events, batch, (transform) => {
        out = (parts) => transform.push(parts);
      }, stdin);
      out = (parts) => {
        writeParts(stdin, parts);
      };
    }
    merger.finish();
    batch.flush();
    events.finishing();
    stdin.end(END_OF_ARCHIVE);
    await squash.wait(output.target);
  } catch (e: unknown) {
    if (e instanceof SinkClosed) await squash.wait(output.target); // throws tar2sqfs's own error
    await squash.kill();
    throw e;
  }
}

/** The image's own metadata goes first, into a directory no layer may touch. */
function writeMetadata(metadata: ImageMetadata, out: (chunk: Buffer) => void): void {
  const body = metadataBytes(metadata);
  const base: TarEntry = {
    name: METADATA_DIR, linkname: '', type: 'dir', mode: 0o755, uid: 0, gid: 0, uname: 'root', gname: 'root',
    size: 0, mtime: 0, devmajor: 0, devminor: 0, xattrs: new Map(),
  };
  out(encodeHeader(base));
  out(encodeHeader({ ...base, name: METADATA_PATH, type: 'file', mode: 0o644, size: body.length }));
  out(body);
  out(paddingFor(body.length));
}

/**
 * Streams one layer through its checks and the tar parser into `sink`. With a `bind`, the
 * sink's output is pushed by a Transform whose output (a batch's pieces, one object) goes to
 * `dest`, so tar2sqfs's pace sets the pace of reading.
 */
async function streamLayer(
  layer: LayerBlob, compression: Compression, describe: string, sink: TarSink, events: ConvertEvents,
  batch: Batch | null, bind: ((t: Transform) => void) | null, dest?: Writable,
): Promise<void> {
  const parser = new TarParser(sink, (msg) => events.warn(`${describe}: ${msg}`));
  const parse = new Transform({
    readableObjectMode: true,
    readableHighWaterMark: 1, // a batch, about a MiB
    transform(chunk: Buffer, _enc, cb) {
      try {
        parser.push(chunk);
        batch?.flush(); // what this chunk gave goes on now: the next may be long in coming
        cb();
      } catch (e: unknown) {
        cb(e as Error);
      }
    },
    flush(cb) {
      try {
        parser.end();
        batch?.flush();
        // A layer cut at an entry boundary parses cleanly up to its end; only the missing
        // end-of-archive blocks tell that entries (or whole directories) are gone. (tar-reader's
        // end() refuses that too now; this keeps the rule where the conversion relies on it.)
        if (!parser.ended) throw new TarFormatError(`the tar stream ends at byte ${parser.offset} without its end-of-archive marker: it is truncated`);
        cb();
      } catch (e: unknown) {
        cb(e as Error);
      }
    },
  });
  bind?.(parse);
  const counter = new Transform({
    transform(chunk: Buffer, _enc, cb) {
      events.bytes(chunk.length);
      cb(null, chunk);
    },
  });
  const forward = dest ? forwardTo(dest) : new Writable({ objectMode: true, write: (_c, _e, cb) => cb() });
  try {
    await pipeline([layer.open(), counter, ...tarStages(layer, compression, describe), parse, forward]);
  } catch (e: unknown) {
    if (e instanceof TarFormatError) {
      throw new BerthError('LAYER_CORRUPT', `${describe}: ${e.message}`, 'the layer is corrupt; copy the image again. Nothing was written.');
    }
    throw e;
  }
}

/**
 * The merged tar in batches of about a MiB: a layer of small files comes out of the merger as
 * three small buffers an entry (header, data, padding), and each write through the streams and
 * into tar2sqfs's pipe costs far more than a piece of one writev. The pieces are not copied:
 * file data are slices of the decompressor's output blocks, which nothing writes to again
 * (a block goes back to the addon's pool only once Node frees the last slice of it), and
 * headers and padding are the merger's own. Copying them into one buffer (Buffer.concat) cost
 * the main thread ~280 MB of memcpy and fresh pages on the numpy bench image, and its GC the
 * work of freeing them.
 */
class Batch {
  private parts: Buffer[] = [];
  private bytes = 0;

  constructor(private readonly sink: (parts: Buffer[]) => void) {}

  add(chunk: Buffer): void {
    if (chunk.length === 0) return;
    this.parts.push(chunk);
    this.bytes += chunk.length;
    if (this.bytes >= BATCH_BYTES) this.flush();
  }

  flush(): void {
    if (this.bytes === 0) return;
    const parts = this.parts;
    this.parts = [];
    this.bytes = 0;
    this.sink(parts);
  }
}

/** One batch into `dest` as one writev (a corked stream hands its buffered writes to _writev). */
function writeParts(dest: Writable, parts: Buffer[]): boolean {
  if (parts.length === 1) return dest.write(parts[0]!);
  dest.cork();
  for (const part of parts) dest.write(part);
  dest.uncork();
  return !dest.writableNeedDrain;
}

const BATCH_BYTES = 1 << 20;

/** tar2sqfs stopped reading: its exit status says why. */
class SinkClosed extends Error {}

/** A Writable that feeds another, a batch at a time, without ever ending it (more layers follow). */
function forwardTo(dest: Writable): Writable {
  return new Writable({
    objectMode: true,
    highWaterMark: 1,
    write(parts: Buffer[], _enc, cb) {
      if (dest.destroyed || dest.writableEnded) return cb(new SinkClosed());
      if (writeParts(dest, parts)) return cb();
      const onDrain = () => {
        dest.off('close', onClose);
        cb();
      };
      const onClose = () => {
        dest.off('drain', onDrain);
        cb(new SinkClosed());
      };
      dest.once('drain', onDrain);
      dest.once('close', onClose);
    },
  });
}
