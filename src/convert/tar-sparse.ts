// GNU sparse files: the stored bytes are only the data segments, and a map says where each
// goes in a file of `realSize` bytes (the rest reads as zeros). GNU tar writes four formats,
// all read here (GNU tar manual, "Storing Sparse Files"): old GNU (type 'S', the map in the
// header and in extension blocks after it), PAX 0.0 (repeated GNU.sparse.offset/numbytes), PAX
// 0.1 (GNU.sparse.map) and PAX 1.0 (the map as decimal lines at the start of the data). The map
// is handed on as it is: tar2sqfs reads sparse entries itself, so holes never cross the pipe
// (a 1 TB /var/log/lastlog stays a few blocks).
import { headerNumber, LIMITS, paxUnsigned, TarFormatError, where, type At } from './tar-fields.js';

export interface SparseSegment {
  offset: number;
  size: number;
}

export interface SparseMap {
  /** The file's size, holes included. */
  realSize: number;
  /** Ascending, non-overlapping; their sizes add up to the bytes stored in the archive. */
  segments: SparseSegment[];
}

/** Checks a map as Go's archive/tar does (validateSparseEntries), and against the bytes stored. */
export function checkSparse(map: SparseMap, stored: number, at: At): SparseMap {
  let end = 0;
  let sum = 0;
  for (const s of map.segments) {
    if (s.offset < end || s.offset + s.size > map.realSize) {
      throw new TarFormatError(`the sparse map of ${where(at)} is invalid: segments overlap, are out of order or pass its size of ${map.realSize} bytes`);
    }
    end = s.offset + s.size;
    sum += s.size;
  }
  if (sum !== stored) {
    throw new TarFormatError(`the sparse map of ${where(at)} describes ${sum} bytes of data but ${stored} are stored`);
  }
  return map;
}

function tooMany(at: At): TarFormatError {
  return new TarFormatError(`the sparse map of ${where(at)} has more than ${LIMITS.maxSparseSegments} segments`);
}

/**
 * Old GNU entries: `count` pairs of 12-byte numbers from `off`; an entry whose offset field
 * starts with NUL ends the list (as in GNU and BSD tar). Appends to `into`.
 */
export function oldGnuSegments(block: Buffer, off: number, count: number, into: SparseSegment[], at: At): void {
  for (let i = 0; i < count; i++) {
    const p = off + i * 24;
    if (block[p] === 0) return;
    if (into.length >= LIMITS.maxSparseSegments) throw tooMany(at);
    const offset = headerNumber(block, p, 12, 'sparse offset', at);
    const size = headerNumber(block, p + 12, 12, 'sparse size', at);
    if (offset < 0 || size < 0) throw new TarFormatError(`the sparse map of ${where(at)} has a negative number`);
    into.push({ offset, size });
  }
}

/** PAX 0.1: GNU.sparse.map = "offset,size,offset,size,...". */
export function parseMap01(text: string, at: At): SparseSegment[] {
  const parts = text.split(',');
  if (parts.length % 2 !== 0) throw new TarFormatError(`GNU.sparse.map of ${where(at)} has an odd number of fields`);
  if (parts.length / 2 > LIMITS.maxSparseSegments) throw tooMany(at);
  const segments: SparseSegment[] = [];
  for (let i = 0; i < parts.length; i += 2) {
    segments.push({ offset: paxUnsigned(parts[i]!, 'GNU.sparse.map', at), size: paxUnsigned(parts[i + 1]!, 'GNU.sparse.map', at) });
  }
  return segments;
}

/** PAX 0.0: "GNU.sparse.offset=N" and "GNU.sparse.numbytes=N" records, alternating, in order. */
export function parseMap00(records: string[], at: At): SparseSegment[] {
  if (records.length % 2 !== 0) throw new TarFormatError(`the GNU.sparse.offset/numbytes records of ${where(at)} do not pair up`);
  if (records.length / 2 > LIMITS.maxSparseSegments) throw tooMany(at);
  const segments: SparseSegment[] = [];
  for (let i = 0; i < records.length; i += 2) {
    const [k1, v1] = splitRecord(records[i]!);
    const [k2, v2] = splitRecord(records[i + 1]!);
    if (k1 !== 'GNU.sparse.offset' || k2 !== 'GNU.sparse.numbytes') {
      throw new TarFormatError(`the GNU.sparse.offset/numbytes records of ${where(at)} do not alternate`);
    }
    segments.push({ offset: paxUnsigned(v1, k1, at), size: paxUnsigned(v2, k2, at) });
  }
  return segments;
}

function splitRecord(r: string): [string, string] {
  const eq = r.indexOf('=');
  return [r.slice(0, eq), r.slice(eq + 1)];
}

/**
 * PAX 1.0: the data starts with decimal numbers, one a line (the count, then offset and size
 * pairs), padded with NULs to a 512-byte block. Fed block by block until done().
 */
export class Map10Reader {
  private numbers: number[] = [];
  private partial = '';
  private count = -1;
  /** Bytes of the data the map took (whole blocks). */
  consumed = 0;

  constructor(private readonly at: At, private readonly available: number) {}

  /** Takes one 512-byte block; returns true when the map is complete. */
  push(block: Buffer): boolean {
    this.consumed += block.length;
    const lines = (this.partial + block.toString('latin1')).split('\n');
    this.partial = lines.pop()!;
    for (let i = 0; i < lines.length; i++) {
      const n = paxUnsigned(lines[i]!, 'sparse map', this.at);
      if (this.count === -1) {
        if (n > LIMITS.maxSparseSegments) throw tooMany(this.at);
        this.count = n;
      } else this.numbers.push(n);
      if (this.numbers.length < this.count * 2) continue;
      // Complete: what is left of the block must be the NUL padding.
      if (i + 1 < lines.length || !/^\0*$/.test(this.partial)) {
        throw new TarFormatError(`the sparse map at the start of the data of ${where(this.at)} is followed by garbage`);
      }
      return true;
    }
    if (this.partial.length > 20 || this.consumed >= this.available) {
      throw new TarFormatError(`the sparse map at the start of the data of ${where(this.at)} is malformed or cut off`);
    }
    return false;
  }

  segments(): SparseSegment[] {
    const out: SparseSegment[] = [];
    for (let i = 0; i < this.numbers.length; i += 2) out.push({ offset: this.numbers[i]!, size: this.numbers[i + 1]! });
    return out;
  }
}
