// A push-based, zero-copy tar parser for image layers. It understands what layer producers
// write: ustar, PAX extended headers (path, linkpath, sizes, ids, mtime, SCHILY.xattr and
// LIBARCHIVE.xattr), GNU long names (L/K) and base-256 numbers. Names are kept as latin1
// strings, i.e. one char per byte, so names that are not valid UTF-8 survive byte for byte.
// File bodies are handed on as slices of the input chunks; nothing is copied or buffered.

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
  size: number;
  mtime: number;
  devmajor: number;
  devminor: number;
  /** Extended attributes: name -> raw value. */
  xattrs: Map<string, Buffer>;
}

export interface TarSink {
  /** Called for every entry; return true to receive its body through data(). */
  entry(e: TarEntry): boolean;
  data(chunk: Buffer): void;
  entryEnd(): void;
}

export class TarFormatError extends Error {}

const BLOCK = 512;
const TYPES: Record<string, EntryType> = {
  '0': 'file', '\0': 'file', '7': 'file', '1': 'hardlink', '2': 'symlink',
  '3': 'char', '4': 'block', '5': 'dir', '6': 'fifo',
};

type State = 'header' | 'body' | 'meta' | 'padding' | 'ended';

export class TarParser {
  private state: State = 'header';
  private headerBuf = Buffer.alloc(BLOCK);
  private headerFill = 0;
  private remaining = 0; // bytes of body (or meta) still to come
  private padding = 0;
  private wantBody = false;
  private metaType = '';
  private metaChunks: Buffer[] = [];
  private pax = new Map<string, Buffer>();
  private globalPax = new Map<string, Buffer>();
  private gnuLongName: string | undefined;
  private gnuLongLink: string | undefined;
  /** Offset in the uncompressed stream, for error messages. */
  offset = 0;
  private headerOffset = 0;

  constructor(
    private readonly sink: TarSink,
    private readonly warn: (msg: string) => void = () => {},
  ) {}

  get ended(): boolean {
    return this.state === 'ended';
  }

  push(chunk: Buffer): void {
    let pos = 0;
    while (pos < chunk.length) {
      const avail = chunk.length - pos;
      switch (this.state) {
        case 'header': {
          const n = Math.min(BLOCK - this.headerFill, avail);
          chunk.copy(this.headerBuf, this.headerFill, pos, pos + n);
          this.headerFill += n;
          pos += n;
          this.offset += n;
          if (this.headerFill === BLOCK) {
            this.headerFill = 0;
            this.headerOffset = this.offset - BLOCK;
            this.onHeader(this.headerBuf);
          }
          break;
        }
        case 'body':
        case 'meta': {
          const n = Math.min(this.remaining, avail);
          const slice = chunk.subarray(pos, pos + n);
          if (this.state === 'meta') this.metaChunks.push(Buffer.from(slice));
          else if (this.wantBody) this.sink.data(slice);
          pos += n;
          this.offset += n;
          this.remaining -= n;
          if (this.remaining === 0) this.finishBody();
          break;
        }
        case 'padding': {
          const n = Math.min(this.padding, avail);
          pos += n;
          this.offset += n;
          this.padding -= n;
          if (this.padding === 0) this.state = 'header';
          break;
        }
        case 'ended':
          // Trailing zero blocks and whatever padding the producer added after them.
          this.offset += avail;
          return;
      }
    }
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

  /** The input is exhausted: anything but a clean end of archive is truncation. */
  end(): void {
    if (this.state === 'ended') return;
    if (this.state === 'header' && this.headerFill === 0) return; // no end marker: tolerated, as GNU tar does
    throw new TarFormatError(`tar stream ends in the middle of an entry (at byte ${this.offset})`);
  }

  private onHeader(h: Buffer): void {
    if (isZeroBlock(h)) {
      this.state = 'ended';
      return;
    }
    verifyChecksum(h, this.headerOffset);
    const flag = String.fromCharCode(h[156]!);
    const size = readNumber(h, 124, 12, 'size', this.headerOffset);
    if (flag === 'x' || flag === 'g' || flag === 'L' || flag === 'K') {
      this.metaType = flag;
      this.beginBody(size, 'meta');
      return;
    }
    const type = TYPES[flag];
    const entry = type && this.buildEntry(h, type, size);
    this.pax = new Map();
    this.gnuLongName = this.gnuLongLink = undefined;
    if (!entry) {
      if (flag === 'S') throw new TarFormatError(`GNU sparse file at byte ${this.headerOffset} is not supported in image layers`);
      this.warn(`skipping tar entry of unknown type '${flag}' at byte ${this.headerOffset}`);
      this.wantBody = false;
      this.beginBody(size, 'body');
      return;
    }
    // Only regular files carry data; a size on anything else (old hard-link writers) is skipped.
    const bodySize = entry.type === 'file' ? entry.size : size;
    this.wantBody = this.sink.entry(entry) && entry.type === 'file';
    this.beginBody(bodySize, 'body');
  }

  private buildEntry(h: Buffer, type: EntryType, size: number): TarEntry | undefined {
    const pax = new Map([...this.globalPax, ...this.pax]);
    for (const key of pax.keys()) {
      if (key.startsWith('GNU.sparse.')) {
        throw new TarFormatError(`PAX sparse file at byte ${this.headerOffset} is not supported in image layers`);
      }
    }
    const str = (key: string) => pax.get(key)?.toString('latin1');
    const num = (key: string, fallback: number) => {
      const v = str(key);
      if (v === undefined) return fallback;
      const n = Number(v);
      if (!Number.isFinite(n)) throw new TarFormatError(`bad PAX ${key}=${v} at byte ${this.headerOffset}`);
      return n;
    };
    const isUstar = h.toString('latin1', 257, 262) === 'ustar';
    let name = this.gnuLongName ?? readString(h, 0, 100);
    if (this.gnuLongName === undefined && isUstar) {
      const prefix = readString(h, 345, 155);
      if (prefix) name = `${prefix}/${name}`;
    }
    name = str('path') ?? name;
    const linkname = str('linkpath') ?? this.gnuLongLink ?? readString(h, 157, 100);
    const xattrs = new Map<string, Buffer>();
    for (const [key, value] of pax) {
      if (key.startsWith('SCHILY.xattr.')) xattrs.set(key.slice(13), value);
      else if (key.startsWith('LIBARCHIVE.xattr.')) {
        xattrs.set(decodeURIComponent(key.slice(17)), Buffer.from(value.toString('latin1'), 'base64'));
      }
    }
    const off = this.headerOffset;
    return {
      name,
      linkname,
      type,
      mode: readNumber(h, 100, 8, 'mode', off) & 0o7777,
      uid: num('uid', readNumber(h, 108, 8, 'uid', off)),
      gid: num('gid', readNumber(h, 116, 8, 'gid', off)),
      uname: str('uname') ?? readString(h, 265, 32),
      gname: str('gname') ?? readString(h, 297, 32),
      size: type === 'file' ? num('size', size) : 0,
      mtime: Math.floor(num('mtime', readNumber(h, 136, 12, 'mtime', off))),
      devmajor: type === 'char' || type === 'block' ? num('SCHILY.devmajor', readNumber(h, 329, 8, 'devmajor', off)) : 0,
      devminor: type === 'char' || type === 'block' ? num('SCHILY.devminor', readNumber(h, 337, 8, 'devminor', off)) : 0,
      xattrs,
    };
  }

  private beginBody(size: number, state: 'body' | 'meta'): void {
    this.remaining = size;
    this.padding = (BLOCK - (size % BLOCK)) % BLOCK;
    this.state = state;
    if (state === 'meta' && size > 16 * 1024 * 1024) {
      throw new TarFormatError(`extended header of ${size} bytes at byte ${this.headerOffset} is implausibly large`);
    }
    if (size === 0) this.finishBody();
  }

  private finishBody(): void {
    if (this.state === 'meta') {
      const body = Buffer.concat(this.metaChunks);
      this.metaChunks = [];
      if (this.metaType === 'x') parsePax(body, this.pax, this.headerOffset);
      else if (this.metaType === 'g') parsePax(body, this.globalPax, this.headerOffset);
      else if (this.metaType === 'L') this.gnuLongName = cString(body);
      else this.gnuLongLink = cString(body);
    } else if (this.wantBody) {
      this.sink.entryEnd();
    }
    this.state = this.padding > 0 ? 'padding' : 'header';
  }
}

function isZeroBlock(b: Buffer): boolean {
  for (let i = 0; i < BLOCK; i++) if (b[i] !== 0) return false;
  return true;
}

function verifyChecksum(h: Buffer, offset: number): void {
  let sum = 0;
  for (let i = 0; i < BLOCK; i++) sum += i >= 148 && i < 156 ? 32 : h[i]!;
  const recorded = parseInt(h.toString('latin1', 148, 156).replace(/[\0 ]/g, ''), 8);
  if (recorded !== sum) {
    throw new TarFormatError(`bad tar header checksum at byte ${offset}: the layer is corrupt or not a tar archive`);
  }
}

function readString(b: Buffer, off: number, len: number): string {
  const end = b.indexOf(0, off);
  return b.toString('latin1', off, end === -1 || end > off + len ? off + len : end);
}

function cString(b: Buffer): string {
  const end = b.indexOf(0);
  return b.toString('latin1', 0, end === -1 ? b.length : end);
}

function readNumber(b: Buffer, off: number, len: number, field: string, at: number): number {
  if (b[off]! & 0x80) {
    // GNU base-256: big-endian two's complement in the remaining bytes.
    let n = 0;
    for (let i = 1; i < len; i++) n = n * 256 + b[off + i]!;
    if (b[off] === 0xff) n -= 256 ** (len - 1);
    return n;
  }
  const text = b.toString('latin1', off, off + len).replace(/[\0 ]+$/g, '').replace(/^[ \0]+/, '');
  if (text === '') return 0;
  if (!/^[0-7]+$/.test(text)) throw new TarFormatError(`bad ${field} field '${text}' in tar header at byte ${at}`);
  return parseInt(text, 8);
}

/** PAX records: "<len> <key>=<value>\n", len counting the whole record. */
function parsePax(body: Buffer, into: Map<string, Buffer>, at: number): void {
  let pos = 0;
  while (pos < body.length && body[pos] !== 0) {
    const space = body.indexOf(0x20, pos);
    const len = space === -1 ? NaN : parseInt(body.toString('latin1', pos, space), 10);
    if (!(len > 0) || pos + len > body.length) throw new TarFormatError(`malformed PAX header at byte ${at}`);
    const record = body.subarray(space + 1, pos + len - 1);
    const eq = record.indexOf(0x3d);
    if (eq === -1) throw new TarFormatError(`malformed PAX record at byte ${at}`);
    into.set(record.toString('utf8', 0, eq), Buffer.from(record.subarray(eq + 1)));
    pos += len;
  }
}
