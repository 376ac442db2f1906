// Encodes the merged stream that tar2sqfs reads: plain ustar headers where the fields fit,
// a PAX extended header in front where they do not (long or non-ASCII names, big ids or
// sizes, xattrs as SCHILY.xattr, which tar2sqfs stores in the image). Sparse files go in GNU's
// PAX 1.0 form, the map at the start of the data: tar2sqfs takes at most 64 KiB of PAX records
// an entry (TAR_MAX_PAX_LEN in squashfs-tools-ng), too little for a long map in 0.1 form.
import type { EntryType, SparseMap, TarEntry } from './tar-reader.js';

const BLOCK = 512;
const TYPEFLAG: Record<EntryType, string> = {
  file: '0', hardlink: '1', symlink: '2', char: '3', block: '4', dir: '5', fifo: '6',
};
export const END_OF_ARCHIVE = Buffer.alloc(2 * BLOCK);

export function paddingFor(size: number): Buffer {
  const n = (BLOCK - (size % BLOCK)) % BLOCK;
  return ZEROS.subarray(0, n);
}
const ZEROS = Buffer.alloc(BLOCK);

/** Header block(s) for one entry; its body and padding follow separately. */
export function encodeHeader(e: TarEntry): Buffer {
  const name = e.type === 'dir' && !e.name.endsWith('/') ? `${e.name}/` : e.name;
  const records: Buffer[] = [];
  const needPax = (s: string, max: number) => Buffer.byteLength(s, 'latin1') > max || /[^\x20-\x7e]/.test(s);
  if (needPax(name, 100)) records.push(paxRecord('path', Buffer.from(name, 'latin1')));
  if (needPax(e.linkname, 100)) records.push(paxRecord('linkpath', Buffer.from(e.linkname, 'latin1')));
  if (e.uid > 0o7777777) records.push(paxRecord('uid', Buffer.from(String(e.uid))));
  if (e.gid > 0o7777777) records.push(paxRecord('gid', Buffer.from(String(e.gid))));
  if (needPax(e.uname, 32)) records.push(paxRecord('uname', Buffer.from(e.uname, 'latin1')));
  if (needPax(e.gname, 32)) records.push(paxRecord('gname', Buffer.from(e.gname, 'latin1')));
  if (e.xattrs.size > 0) {
    for (const key of [...e.xattrs.keys()].sort()) records.push(paxRecord(`SCHILY.xattr.${key}`, e.xattrs.get(key)!));
  }
  const map = e.sparse ? sparseMapBlocks(e.sparse) : undefined;
  if (e.sparse) {
    records.push(paxRecord('GNU.sparse.major', Buffer.from('1')), paxRecord('GNU.sparse.minor', Buffer.from('0')),
      paxRecord('GNU.sparse.realsize', Buffer.from(String(e.sparse.realSize))));
  }
  const size = e.size + (map?.length ?? 0); // the size field counts the map too
  if (size > 0o77777777777) records.push(paxRecord('size', Buffer.from(String(size))));
  const main = ustar(
    { name, linkname: e.linkname, uname: e.uname, gname: e.gname },
    { ...e, size },
    TYPEFLAG[e.type],
  );
  if (records.length === 0) return main;
  const body = Buffer.concat(records);
  const paxHeader = ustar(
    { name: 'PaxHeader', linkname: '', uname: '', gname: '' },
    { ...e, size: body.length, mode: 0o644, uid: 0, gid: 0, devmajor: 0, devminor: 0 },
    'x',
  );
  return Buffer.concat([paxHeader, body, paddingFor(body.length), main, ...(map ? [map] : [])]);
}

/** GNU sparse 1.0's map: decimal lines (count, then offset and size pairs), padded to a block. */
function sparseMapBlocks(sparse: SparseMap): Buffer {
  // tar2sqfs refuses an empty map; GNU tar always ends one with (realsize, 0) anyway.
  const segments = sparse.segments.length > 0 ? sparse.segments : [{ offset: sparse.realSize, size: 0 }];
  const text = `${segments.length}\n${segments.map((s) => `${s.offset}\n${s.size}\n`).join('')}`;
  const bytes = Buffer.from(text, 'latin1');
  return Buffer.concat([bytes, paddingFor(bytes.length)]);
}

function ustar(
  text: { name: string; linkname: string; uname: string; gname: string },
  e: Pick<TarEntry, 'mode' | 'uid' | 'gid' | 'size' | 'mtime' | 'devmajor' | 'devminor'>,
  typeflag: string,
): Buffer {
  const h = zeroBlock();
  field(h, 0, 100, text.name);
  octal(h, 100, 8, e.mode);
  octal(h, 108, 8, Math.min(e.uid, 0o7777777));
  octal(h, 116, 8, Math.min(e.gid, 0o7777777));
  octal(h, 124, 12, Math.min(e.size, 0o77777777777));
  // squashfs keeps 32-bit unsigned seconds; clamp here so the tar stays well-formed.
  octal(h, 136, 12, Math.max(0, Math.min(e.mtime, 0xffffffff)));
  h[156] = typeflag.charCodeAt(0);
  field(h, 157, 100, text.linkname);
  h.set(USTAR_MAGIC, 257);
  field(h, 265, 32, text.uname);
  field(h, 297, 32, text.gname);
  octal(h, 329, 8, e.devmajor);
  octal(h, 337, 8, e.devminor);
  h.fill(0x20, 148, 156);
  let sum = 0;
  for (let i = 0; i < BLOCK; i++) sum += h[i]!;
  octal(h, 148, 7, sum); // six digits and a NUL, then the space already there
  return h;
}

const USTAR_MAGIC = Buffer.from('ustar\x0000', 'latin1');

/**
 * Header blocks are carved from zeroed slabs: one ArrayBuffer a header made ~10,000 of them for
 * the numpy bench image, each a malloc and, for the GC, a backing store to sweep. A block is
 * never written again once encoded, so its slab's other blocks cannot disturb it.
 */
let slab = Buffer.alloc(0);
let slabUsed = 0;
const SLAB_BYTES = 64 * 1024;

function zeroBlock(): Buffer {
  if (slabUsed + BLOCK > slab.length) {
    slab = Buffer.alloc(SLAB_BYTES);
    slabUsed = 0;
  }
  slabUsed += BLOCK;
  return slab.subarray(slabUsed - BLOCK, slabUsed);
}

/** A text field, clipped to its width; a name that needed PAX gets a printable stand-in. */
function field(h: Buffer, off: number, len: number, s: string): void {
  if (s.length === 0) return;
  h.write(clip(s, len), off, len, 'latin1');
}

function clip(s: string, max: number): string {
  return /[^\x20-\x7e]/.test(s) || s.length > max ? s.slice(0, max).replace(/[^\x20-\x7e]/g, '_') : s;
}

/** `n` (0 <= n < 8^(len-1)) as len-1 octal digits, zero-padded, and a NUL. */
function octal(h: Buffer, off: number, len: number, n: number): void {
  let i = off + len - 1;
  h[i] = 0;
  for (i--; i >= off; i--) {
    h[i] = 0x30 + (n % 8);
    n = Math.floor(n / 8);
  }
}

/** One PAX record; keys are latin1 strings like names (an xattr name is bytes). */
function paxRecord(key: string, value: Buffer): Buffer {
  const rest = Buffer.byteLength(key, 'latin1') + value.length + 3; // ' ', '=', '\n'
  let len = rest + String(rest).length;
  if (String(len).length !== String(len - rest).length) len = rest + String(len).length;
  return Buffer.concat([Buffer.from(`${len} ${key}=`, 'latin1'), value, Buffer.from('\n')]);
}
