// A push-based, zero-copy tar parser for image layers. It understands what layer producers
// write: ustar, PAX extended headers (path, linkpath, sizes, ids, mtime, SCHILY.xattr,
// LIBARCHIVE.xattr, ACLs), GNU long names (L/K), base-256 numbers and GNU sparse files in all
// four formats. Names are kept as latin1 strings, i.e. one char per byte, so names that are not
// valid UTF-8 survive byte for byte. File bodies are handed on as slices of the input chunks.
//
// Every field is read strictly (tar-fields.ts), and every step of push() consumes at least one
// byte, so no input can make the parser spin: a negative PAX size once made it loop forever,
// deaf to signals. Which entries have a body follows Go's archive/tar (Docker's and umoci's
// reader): only regular files and unknown types; a size on a link, directory or device is
// ignored, so berth and they cannot disagree on where the next header starts.
import { AttributeLosses } from './attributes.js';
import { decodeEntry, sparseFormat, type Extended, type SparseFormat } from './tar-entry.js';
import { cString, headerNumber, LIMITS, parsePaxRecords, paxUnsigned, shownName, TarFormatError, verifyChecksum, where, type At } from './tar-fields.js';
import { checkSparse, Map10Reader, oldGnuSegments, parseMap00, parseMap01, type SparseMap, type SparseSegment } from './tar-sparse.js';

export { TarFormatError } from './tar-fields.js';
export type { SparseMap } from './tar-sparse.js';

export type EntryType = 'file' | 'hardlink' | 'symlink' | 'char' | 'block' | 'dir' | 'fifo';

export interface TarEntry {
  name: string;
  linkname: string;
  type: EntryType;
  mode: number; // permission bits and setuid/setgid/sticky, no file type bits
  uid: number;
  gid: number;
  uname: string;
  gname: string;
  /** Bytes of data that follow in the archive (for a sparse file: the stored segments only). */
  size: number;
  mtime: number;
  devmajor: number;
  devminor: number;
  /** Extended attributes squashfs can store: name (latin1) -> raw value. */
  xattrs: Map<string, Buffer>;
  /** Set for GNU sparse files. */
  sparse?: SparseMap;
}

export interface TarSink {
  /** Called for every entry; return true to receive its body through data(). */
  entry(e: TarEntry): boolean;
  data(chunk: Buffer): void;
  entryEnd(): void;
}

const BLOCK = 512;
const TYPES: Record<string, EntryType> = {
  '0': 'file', '\0': 'file', '7': 'file', S: 'file', '1': 'hardlink', '2': 'symlink',
  '3': 'char', '4': 'block', '5': 'dir', '6': 'fifo',
};
const HEADER_ONLY = new Set<EntryType>(['hardlink', 'symlink', 'char', 'block', 'dir', 'fifo']);

type State = 'header' | 'sparseExt' | 'sparseMap' | 'body' | 'meta' | 'padding' | 'ended';

/** An entry read but not yet handed on: its sparse map is still being read. */
interface Pending {
  entry: TarEntry;
  segments: SparseSegment[];
  realSize: number;
  map10?: Map10Reader;
  /** The size field: the stored bytes (old GNU), or map and data together (1.0). */
  recordSize: number;
}

export class TarParser {
  private state: State = 'header';
  private block = Buffer.alloc(BLOCK);
  private blockFill = 0;
  private remaining = 0; // bytes of body (or meta) still to come
  private padding = 0;
  private wantBody = false;
  private zeroBlocks = 0;
  private metaType = '';
  private metaChunks: Buffer[] = [];
  private metaBytes = 0; // extended header bytes read for the coming entry
  private pax = new Map<string, Buffer>();
  private sparse00: string[] = [];
  private globalPax = new Map<string, Buffer>();
  private gnuLongName: string | undefined;
  private gnuLongLink: string | undefined;
  private pending: Pending | undefined;
  private readonly losses = new AttributeLosses();
  /** Offset in the uncompressed stream, for error messages. */
  offset = 0;
  private headerOffset = 0;

  constructor(
    private readonly sink: TarSink,
    private readonly warn: (msg: string) => void = () => {},
  ) {}

  /** The end-of-archive marker (two zero blocks) was read: nothing after it is looked at. */
  get ended(): boolean {
    return this.state === 'ended';
  }

  push(chunk: Buffer): void {
    let pos = 0;
    while (pos < chunk.length) {
      if (this.state === 'ended') {
        // Whatever follows the end marker (record padding) is not part of the archive.
        this.offset += chunk.length - pos;
        return;
      }
      const n = this.step(chunk, pos);
      if (!(n > 0)) throw new Error(`internal: the tar parser made no progress in state ${this.state}`);
      pos += n;
    }
  }

  /** One step of the state machine over chunk[pos..]; returns the bytes it consumed (> 0). */
  private step(chunk: Buffer, pos: number): number {
    const avail = chunk.length - pos;
    if (this.state === 'header' || this.state === 'sparseExt' || this.state === 'sparseMap') {
      const n = Math.min(BLOCK - this.blockFill, avail);
      chunk.copy(this.block, this.blockFill, pos, pos + n);
      this.blockFill += n;
      this.offset += n;
      if (this.blockFill === BLOCK) {
        this.blockFill = 0;
        this.onBlock(this.block);
      }
      return n;
    }
    if (this.state === 'padding') {
      const n = Math.min(this.padding, avail);
      this.offset += n;
      this.padding -= n;
      if (this.padding === 0) this.state = 'header';
      return n;
    }
    const n = Math.min(this.remaining, avail);
    const slice = chunk.subarray(pos, pos + n);
    if (this.state === 'meta') this.metaChunks.push(Buffer.from(slice));
    else if (this.wantBody) this.sink.data(slice);
    this.offset += n;
    this.remaining -= n;
    if (this.remaining === 0) this.finishBody();
    return n;
  }

  /**
   * For seekable input: the bytes of an unwanted body (and its padding) that the caller may
   * seek past instead of pushing; the parser then expects the next header.
   */
  skipUnwantedBody(): number {
    if (this.state !== 'body' || this.wantBody) return 0;
    const n = this.remaining + this.padding;
    this.offset += n;
    this.remaining = this.padding = 0;
    this.state = 'header';
    return n;
  }

  /**
   * The input is exhausted. Anything but the end-of-archive marker is truncation: a tar cut at
   * an entry boundary looks whole otherwise, and would quietly lose the entries after the cut.
   */
  end(): void {
    if (this.state === 'ended') return;
    if (this.state === 'header' && this.blockFill === 0 && this.pending === undefined) {
      throw new TarFormatError(`the tar stream ends at byte ${this.offset} without its end-of-archive marker (two zero blocks): it is truncated`);
    }
    throw new TarFormatError(`the tar stream ends in the middle of an entry (at byte ${this.offset}): it is truncated`);
  }

  private onBlock(b: Buffer): void {
    if (this.state === 'sparseExt') return this.onSparseExtension(b);
    if (this.state === 'sparseMap') return this.onSparseMapBlock(b);
    this.headerOffset = this.offset - BLOCK;
    if (isZeroBlock(b)) {
      if (++this.zeroBlocks === 2) this.onEnd();
      return;
    }
    if (this.zeroBlocks > 0) {
      // Go's archive/tar refuses this too; GNU tar stops reading; tar2sqfs reads on.
      throw new TarFormatError(`a lone zero block at byte ${this.headerOffset - BLOCK} is followed by more entries: the layer is corrupt`);
    }
    this.onHeader(b);
  }

  private onEnd(): void {
    this.state = 'ended';
    for (const w of this.losses.warnings(shownName)) this.warn(w);
  }

  private onHeader(h: Buffer): void {
    verifyChecksum(h, this.headerOffset);
    const flag = String.fromCharCode(h[156]!);
    const at: At = { offset: this.headerOffset };
    const size = headerNumber(h, 124, 12, 'size', at);
    if (size < 0) throw new TarFormatError(`the size field of ${where(at)} is negative`);
    if (flag === 'x' || flag === 'g' || flag === 'L' || flag === 'K') return this.beginMeta(flag, size);
    const type = TYPES[flag];
    if (!type) {
      this.warn(`skipping tar entry of unknown type '${flag}' at byte ${this.headerOffset}`);
      const paxSize = this.pax.get('size');
      this.resetExtended();
      this.wantBody = false;
      return this.beginBody(paxSize ? paxUnsigned(paxSize.toString('latin1'), 'size', at) : size, 'body');
    }
    // The entry's own records over the global ones (a new Map only where there are global ones).
    const pax = this.globalPax.size === 0 ? this.pax : new Map([...this.globalPax, ...this.pax]);
    const ext: Extended = { pax, longName: this.gnuLongName, longLink: this.gnuLongLink, sparse00: this.sparse00 };
    const { entry, attributes } = decodeEntry(h, flag, type, ext, size, this.headerOffset);
    this.losses.note(attributes, entry.name);
    const sparse = sparseFormat(h, flag, ext, entry, this.headerOffset);
    this.resetExtended();
    if (!sparse) return this.deliver(entry, HEADER_ONLY.has(type) ? 0 : entry.size);
    this.pending = { entry, segments: [], realSize: sparse.realSize, recordSize: entry.size };
    this.beginSparse(h, sparse.format, ext);
  }

  private resetExtended(): void {
    if (this.pax.size > 0) this.pax = new Map(); // an empty one is never written to by what reads it
    if (this.sparse00.length > 0) this.sparse00 = [];
    this.metaBytes = 0;
    this.gnuLongName = this.gnuLongLink = undefined;
  }

  private beginMeta(flag: string, size: number): void {
    this.metaBytes += size;
    if (size > LIMITS.maxMeta || this.metaBytes > LIMITS.maxMeta) {
      throw new TarFormatError(`extended headers of ${this.metaBytes} bytes before the entry at byte ${this.headerOffset} are implausibly large`);
    }
    this.metaType = flag;
    this.beginBody(size, 'meta');
  }

  private beginBody(size: number, state: 'body' | 'meta'): void {
    this.remaining = size;
    this.padding = (BLOCK - (size % BLOCK)) % BLOCK;
    this.state = state;
    if (size === 0) this.finishBody();
  }

  private finishBody(): void {
    if (this.state === 'meta') this.finishMeta();
    else if (this.wantBody) this.sink.entryEnd();
    this.state = this.padding > 0 ? 'padding' : 'header';
  }

  private finishMeta(): void {
    const body = Buffer.concat(this.metaChunks);
    this.metaChunks = [];
    if (this.metaType === 'x') parsePaxRecords(body, this.pax, this.sparse00, this.headerOffset);
    else if (this.metaType === 'g') this.applyGlobal(body);
    else if (this.metaType === 'L') this.gnuLongName = cString(body);
    else this.gnuLongLink = cString(body);
  }

  /** A global header's records apply to every later entry; an empty value removes one (POSIX). */
  private applyGlobal(body: Buffer): void {
    const records = new Map<string, Buffer>();
    parsePaxRecords(body, records, [], this.headerOffset);
    for (const [k, v] of records) {
      if (v.length === 0) this.globalPax.delete(k);
      else this.globalPax.set(k, v);
    }
    let total = 0;
    for (const v of this.globalPax.values()) total += v.length;
    if (total > LIMITS.maxMeta) throw new TarFormatError(`global extended headers up to byte ${this.headerOffset} are implausibly large`);
  }

  private deliver(entry: TarEntry, bodySize: number): void {
    this.wantBody = this.sink.entry(entry) && entry.type === 'file';
    this.beginBody(bodySize, 'body');
  }

  private beginSparse(h: Buffer, format: SparseFormat, ext: Extended): void {
    const p = this.pending!;
    const at: At = { name: p.entry.name, offset: this.headerOffset };
    if (format === '0.1') p.segments = parseMap01(ext.pax.get('GNU.sparse.map')!.toString('latin1'), at);
    else if (format === '0.0') p.segments = parseMap00(ext.sparse00, at);
    else if (format === 'old') {
      oldGnuSegments(h, 386, 4, p.segments, at);
      if (h[482] !== 0) return void (this.state = 'sparseExt'); // extension blocks follow
    } else {
      if (p.recordSize < BLOCK) throw new TarFormatError(`the sparse file ${where(at)} has no room for its map`);
      p.map10 = new Map10Reader(at, p.recordSize);
      return void (this.state = 'sparseMap');
    }
    this.deliverSparse(0);
  }

  /** Old GNU: 21 more entries a block, for as long as the block says another one follows. */
  private onSparseExtension(b: Buffer): void {
    const p = this.pending!;
    oldGnuSegments(b, 0, 21, p.segments, { name: p.entry.name, offset: this.headerOffset });
    if (b[504] === 0) this.deliverSparse(0);
  }

  private onSparseMapBlock(b: Buffer): void {
    const p = this.pending!;
    if (!p.map10!.push(b)) return;
    p.segments = p.map10!.segments();
    this.deliverSparse(p.map10!.consumed);
  }

  private deliverSparse(mapBytes: number): void {
    const p = this.pending!;
    this.pending = undefined;
    this.state = 'header';
    const at: At = { name: p.entry.name, offset: this.headerOffset };
    if (mapBytes > p.recordSize) throw new TarFormatError(`the sparse map of ${where(at)} is larger than the entry`);
    const stored = p.recordSize - mapBytes;
    p.entry.size = stored;
    p.entry.sparse = checkSparse({ realSize: p.realSize, segments: p.segments }, stored, at);
    this.deliver(p.entry, stored);
  }
}

function isZeroBlock(b: Buffer): boolean {
  for (let i = 0; i < BLOCK; i++) if (b[i] !== 0) return false;
  return true;
}
