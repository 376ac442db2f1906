// The fields of a tar header and of PAX records, read strictly. A layer is someone else's input:
// every number is checked for its syntax and its range before berth acts on it, because a size
// taken on trust decides where the next header starts (a negative one made the parser loop
// forever), and a value that one reader takes and another refuses lets two tools see two
// different archives. The syntax accepted is Go's archive/tar's (what Docker and umoci read
// layers with): octal with NUL or space padding, GNU base-256, PAX decimal.

export class TarFormatError extends Error {}

/** Bounds of the format's sanity, which fit a JS number exactly (Linux's own: linux-limits.ts). */
export const LIMITS = {
  maxSize: Number.MAX_SAFE_INTEGER,
  /** One extended header, and what all of an entry's extended headers may add up to. */
  maxMeta: 16 * 1024 * 1024,
  /** Sparse map entries of one file. */
  maxSparseSegments: 1 << 20,
} as const;

/** Where an error happened: the entry's name when it is known, and the header's offset. */
export interface At {
  name?: string;
  offset: number;
}

export function where(at: At): string {
  return at.name === undefined ? `the entry at byte ${at.offset}` : `entry '${shownName(at.name)}' (at byte ${at.offset})`;
}

/** A name as a message shows it: bytes read as UTF-8, and a very long one shortened. */
export function shownName(name: string): string {
  const text = Buffer.from(name, 'latin1').toString('utf8');
  return text.length > 160 ? `${text.slice(0, 100)}…${text.slice(-40)}` : text;
}

/**
 * A numeric header field: octal text, or GNU base-256 (high bit of the first byte set, the next
 * bit the sign, big-endian two's complement). Leading and trailing NULs and spaces are padding;
 * anything else that is not an octal digit is an error.
 */
export function headerNumber(b: Buffer, off: number, len: number, field: string, at: At): number {
  const first = b[off]!;
  if (first & 0x80) {
    let n = BigInt(first & 0x7f);
    for (let i = 1; i < len; i++) n = (n << 8n) | BigInt(b[off + i]!);
    if (first & 0x40) n -= 1n << BigInt(8 * len - 1); // the sign bit, under the marker bit
    if (n > BigInt(Number.MAX_SAFE_INTEGER) || n < -BigInt(Number.MAX_SAFE_INTEGER)) {
      throw new TarFormatError(`the ${field} field of ${where(at)} is out of range (${n})`);
    }
    return Number(n);
  }
  const n = octalField(b, off, len, 0);
  if (n >= 0) return n; // 12 octal digits at most: exact
  const text = b.toString('latin1', off, off + len).replace(/^[\0 ]+|[\0 ]+$/g, '');
  throw new TarFormatError(`the ${field} field of ${where(at)} is not an octal number: '${printableField(text)}'`);
}

/**
 * Octal digits between padding (leading and trailing NULs and spaces), read from the bytes:
 * the value, `empty` for padding alone, or NaN for anything else (the caller says what).
 * Decoding each field to a string for two regular expressions cost microseconds a field, and a
 * header has eight.
 */
function octalField(b: Buffer, off: number, len: number, empty: number): number {
  let start = off;
  let end = off + len;
  while (start < end && (b[start] === 0 || b[start] === 0x20)) start++;
  while (end > start && (b[end - 1] === 0 || b[end - 1] === 0x20)) end--;
  if (start === end) return empty;
  let n = 0;
  for (let i = start; i < end; i++) {
    const digit = b[i]! - 0x30;
    if (digit < 0 || digit > 7) return NaN;
    n = n * 8 + digit;
  }
  return n;
}

/** A PAX decimal: digits only (no sign, no spaces, no exponent), exactly representable. */
export function paxUnsigned(value: string, key: string, at: At, max: number = LIMITS.maxSize): number {
  if (!/^[0-9]+$/.test(value)) throw badPax(key, value, at);
  const n = Number(value.replace(/^0+(?=.)/, '').slice(0, 17)); // 17 digits are already out of range
  if (n > max) throw new TarFormatError(`PAX ${key}=${value} of ${where(at)} is out of range (at most ${max})`);
  return n;
}

/** PAX mtime: a signed decimal with an optional fraction (POSIX allows sub-second times). */
export function paxTime(value: string, key: string, at: At): number {
  const m = /^(-?)0*([0-9]{1,16})(?:\.[0-9]*)?$/.exec(value);
  if (!m) throw badPax(key, value, at);
  const whole = Number(m[2]);
  if (whole > Number.MAX_SAFE_INTEGER) throw new TarFormatError(`PAX ${key}=${value} of ${where(at)} is out of range`);
  const fraction = value.includes('.') && /[1-9]/.test(value.slice(value.indexOf('.'))) ? 1 : 0;
  // floor() of the time, as a non-negative fraction always rounds towards the past.
  return m[1] === '-' ? -whole - fraction : whole;
}

function badPax(key: string, value: string, at: At): TarFormatError {
  return new TarFormatError(`PAX ${key}='${printableField(value)}' of ${where(at)} is not a decimal number`);
}

function printableField(text: string): string {
  const short = text.length > 40 ? `${text.slice(0, 40)}…` : text;
  return short.replace(/[^\x20-\x7e]/g, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`);
}

/** A NUL-terminated string field, byte for byte (latin1: one char per byte). */
export function headerString(b: Buffer, off: number, len: number): string {
  const end = b.indexOf(0, off);
  return b.toString('latin1', off, end === -1 || end > off + len ? off + len : end);
}

export function cString(b: Buffer): string {
  const end = b.indexOf(0);
  return b.toString('latin1', 0, end === -1 ? b.length : end);
}

/**
 * Verifies a header's checksum: the sum of its bytes with the checksum field counted as spaces.
 * Like GNU tar and Python, the sum over signed bytes (old Sun tar) is accepted too.
 */
export function verifyChecksum(h: Buffer, offset: number): void {
  let unsigned = 0;
  let signed = 0;
  for (let i = 0; i < 512; i++) {
    const v = i >= 148 && i < 156 ? 32 : h[i]!;
    unsigned += v;
    signed += v > 127 ? v - 256 : v;
  }
  const recorded = octalField(h, 148, 8, NaN); // no number, or none at all: NaN, which equals no sum
  if (recorded !== unsigned && recorded !== signed) {
    throw new TarFormatError(`bad tar header checksum at byte ${offset}: the layer is corrupt or not a tar archive`);
  }
}

/**
 * PAX records, "<length> <key>=<value>\n" with the length counting the whole record, into
 * `into` (keys and values byte for byte; an empty value is kept: it is a real, empty xattr, and
 * the caller decides what it means elsewhere). GNU.sparse.offset and .numbytes repeat in sparse
 * format 0.0, so they are collected, in order, in `sparse00` instead.
 */
export function parsePaxRecords(body: Buffer, into: Map<string, Buffer>, sparse00: string[], at: number): void {
  let pos = 0;
  while (pos < body.length && body[pos] !== 0) {
    const space = body.indexOf(0x20, pos);
    const digits = space === -1 ? '' : body.toString('latin1', pos, space);
    const len = /^[0-9]{1,9}$/.test(digits) ? Number(digits) : NaN;
    if (!(len > digits.length + 1) || pos + len > body.length || body[pos + len - 1] !== 0x0a) {
      throw new TarFormatError(`malformed PAX record at offset ${pos} of the extended header at byte ${at} (its length is wrong or it does not end in a newline)`);
    }
    const record = body.subarray(space + 1, pos + len - 1);
    const eq = record.indexOf(0x3d);
    if (eq <= 0) throw new TarFormatError(`malformed PAX record at offset ${pos} of the extended header at byte ${at} (no key=value)`);
    const key = record.toString('latin1', 0, eq);
    const value = Buffer.from(record.subarray(eq + 1));
    if (key === 'GNU.sparse.offset' || key === 'GNU.sparse.numbytes') sparse00.push(`${key}=${value.toString('latin1')}`);
    else into.set(key, value);
    pos += len;
  }
  for (; pos < body.length; pos++) {
    if (body[pos] !== 0) throw new TarFormatError(`garbage after the last record of the extended header at byte ${at}`);
  }
}

/** LIBARCHIVE.xattr.NAME: NAME is percent-encoded (RFC 3986), the value base64 (padded or not). */
export function libarchiveXattr(encodedName: string, value: string, at: At): [string, Buffer] {
  if (/%(?![0-9A-Fa-f]{2})/.test(encodedName)) {
    throw new TarFormatError(`malformed LIBARCHIVE.xattr name '${printableField(encodedName)}' on ${where(at)}: bad %-escape`);
  }
  const name = encodedName.replace(/%([0-9A-Fa-f]{2})/g, (_m, hex: string) => String.fromCharCode(parseInt(hex, 16)));
  const stripped = value.replace(/=+$/, '');
  if (!/^[A-Za-z0-9+/]*$/.test(stripped) || stripped.length % 4 === 1 || value.length - stripped.length > 2) {
    throw new TarFormatError(`malformed LIBARCHIVE.xattr.${printableField(encodedName)} on ${where(at)}: the value is not base64`);
  }
  return [name, Buffer.from(stripped, 'base64')];
}
