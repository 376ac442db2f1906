// One tar entry decoded from its header and the extended headers before it (PAX records, GNU
// long names): which field wins (PAX over GNU over ustar), what each value must look like, and
// which of its attributes squashfs can keep. The state machine around it is tar-reader.ts's.
import { storableAttributes, type Attributes } from './attributes.js';
import { headerNumber, headerString, libarchiveXattr, paxTime, paxUnsigned, TarFormatError, where, type At } from './tar-fields.js';
import type { EntryType, TarEntry } from './tar-reader.js';

/** What came before the header: PAX records (global ones merged under the entry's own), GNU long names. */
export interface Extended {
  pax: Map<string, Buffer>;
  longName: string | undefined;
  longLink: string | undefined;
  /** PAX sparse 0.0's repeated records, in order. */
  sparse00: string[];
}

export type SparseFormat = '1.0' | '0.1' | '0.0' | 'old';

/** Decodes one entry's header with its extended headers; its ACLs and xattrs sorted (attributes.ts). */
export function decodeEntry(h: Buffer, flag: string, headerType: EntryType, ext: Extended, headerSize: number, offset: number): { entry: TarEntry; attributes: Attributes } {
  const { pax } = ext;
  const at: At = { offset };
  const magic = h.toString('latin1', 257, 263);
  const posix = magic === 'ustar\0';
  const named = posix || magic === 'ustar ';
  let name = ext.longName ?? headerString(h, 0, 100);
  if (ext.longName === undefined && posix && h[345] !== 0) name = `${headerString(h, 345, 155)}/${name}`;
  name = paxString(pax, 'GNU.sparse.name', at) ?? paxString(pax, 'path', at) ?? name;
  if (name === '') throw new TarFormatError(`${where(at)} has an empty name`);
  at.name = name;
  // Pre-POSIX tars mark directories by a trailing slash on a regular file's name.
  const type = flag === '\0' && name.endsWith('/') ? 'dir' : headerType;
  if (type !== 'dir' && name.endsWith('/')) throw new TarFormatError(`${where(at)} is not a directory but its name ends in '/'`);
  const str = (key: string) => pax.get(key)?.toString('latin1');
  const num = (key: string, off: number) => unsigned(str(key), key, h, off, at);
  const size = str('size') !== undefined ? paxUnsigned(str('size')!, 'size', at) : headerSize;
  const dev = type === 'char' || type === 'block';
  const entry: TarEntry = {
    name,
    linkname: type === 'hardlink' || type === 'symlink' ? linkname(h, ext, at) : '',
    type,
    mode: headerNumber(h, 100, 8, 'mode', at) & 0o7777,
    uid: num('uid', 108),
    gid: num('gid', 116),
    uname: str('uname') ?? (named ? headerString(h, 265, 32) : ''),
    gname: str('gname') ?? (named ? headerString(h, 297, 32) : ''),
    size: type === 'file' ? size : 0,
    mtime: str('mtime') !== undefined ? paxTime(str('mtime')!, 'mtime', at) : headerNumber(h, 136, 12, 'mtime', at),
    devmajor: dev ? num('SCHILY.devmajor', 329) : 0,
    devminor: dev ? num('SCHILY.devminor', 337) : 0,
    xattrs: new Map(),
  };
  const attributes = storable(entry, pax, at);
  entry.xattrs = attributes.xattrs;
  entry.mode = attributes.mode;
  return { entry, attributes };
}

function linkname(h: Buffer, ext: Extended, at: At): string {
  const link = paxString(ext.pax, 'linkpath', at) ?? ext.longLink ?? headerString(h, 157, 100);
  if (link === '') throw new TarFormatError(`${where(at)} is a link with an empty target`);
  return link;
}

/** An id or device number: never negative; what Linux can hold is linux-limits.ts's to check. */
function unsigned(paxValue: string | undefined, key: string, h: Buffer, off: number, at: At): number {
  const n = paxValue !== undefined ? paxUnsigned(paxValue, key, at) : headerNumber(h, off, 8, key.replace('SCHILY.', ''), at);
  if (n < 0) throw new TarFormatError(`the ${key.replace('SCHILY.', '')} of ${where(at)} is negative (${n})`);
  return n;
}

/** xattrs and ACLs: what squashfs can store is kept, the rest dropped (attributes.ts). */
function storable(entry: TarEntry, pax: Map<string, Buffer>, at: At): Attributes {
  const xattrs = new Map<string, Buffer>();
  for (const [key, value] of pax) {
    if (key.startsWith('SCHILY.xattr.')) xattrs.set(xattrName(key.slice(13), at), value);
    else if (key.startsWith('LIBARCHIVE.xattr.')) {
      const [name, decoded] = libarchiveXattr(key.slice(17), value.toString('latin1'), at);
      xattrs.set(xattrName(name, at), decoded);
    }
  }
  const text = (key: string) => pax.get(`SCHILY.acl.${key}`)?.toString('latin1');
  return storableAttributes(xattrs, { access: text('access'), default: text('default'), ace: text('ace') }, entry.mode, at);
}

/** The sparse map's format and the file's size, if this entry is a GNU sparse file (the map may follow). */
export function sparseFormat(h: Buffer, flag: string, ext: Extended, entry: TarEntry, offset: number): { realSize: number; format: SparseFormat } | undefined {
  const { pax } = ext;
  const at: At = { name: entry.name, offset };
  const str = (key: string) => pax.get(key)?.toString('latin1');
  let format: SparseFormat | undefined;
  if (flag === 'S') format = 'old';
  else if (str('GNU.sparse.major') !== undefined || str('GNU.sparse.minor') !== undefined) {
    if (str('GNU.sparse.major') !== '1' || str('GNU.sparse.minor') !== '0') {
      throw new TarFormatError(`${where(at)} is a GNU sparse file of unknown format ${str('GNU.sparse.major')}.${str('GNU.sparse.minor')}`);
    }
    format = '1.0';
  } else if (str('GNU.sparse.map') !== undefined) format = '0.1';
  else if (ext.sparse00.length > 0) format = '0.0';
  else if ([...pax.keys()].some((k) => k.startsWith('GNU.sparse.') && k !== 'GNU.sparse.name')) {
    throw new TarFormatError(`${where(at)} has GNU.sparse records but no sparse map`);
  }
  if (!format) return undefined;
  if (entry.type !== 'file') throw new TarFormatError(`${where(at)} has a sparse map but is not a regular file`);
  const sizeKey = format === '1.0' ? 'GNU.sparse.realsize' : 'GNU.sparse.size';
  const real = format === 'old' ? headerNumber(h, 483, 12, 'realsize', at) : str(sizeKey);
  if (real === undefined) throw new TarFormatError(`${where(at)} is a GNU sparse file without ${sizeKey}`);
  const realSize = typeof real === 'number' ? real : paxUnsigned(real, sizeKey, at);
  if (realSize < 0) throw new TarFormatError(`the sparse file ${where(at)} has a negative size`);
  return { realSize, format };
}

/** A PAX path or linkpath: empty deletes the header's field (POSIX), so no name is left; a NUL cannot be in a Linux path. */
function paxString(pax: Map<string, Buffer>, key: string, at: At): string | undefined {
  const v = pax.get(key);
  if (v === undefined) return undefined;
  if (v.length === 0) throw new TarFormatError(`PAX ${key} of ${where(at)} is empty`);
  if (v.includes(0)) throw new TarFormatError(`PAX ${key} of ${where(at)} contains a NUL byte`);
  return v.toString('latin1');
}

function xattrName(name: string, at: At): string {
  if (name === '' || name.includes('\0')) throw new TarFormatError(`${where(at)} has an extended attribute with an empty name or a NUL byte in it`);
  return name;
}
