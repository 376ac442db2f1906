// Reads what a shared library or program needs, from its ELF dynamic section, without running
// anything (ldd would execute the loader on host files): DT_NEEDED, DT_SONAME, DT_RUNPATH and
// DT_RPATH, the symbol versions it needs from each library (DT_VERNEED) and the ones it
// defines (DT_VERDEF). MPI, RDMA and GPU binding use it to find a host library's own
// dependencies and to check them against the container's glibc before anything is mounted.
// ELF64, little-endian (x86_64, aarch64, ppc64le); see the System V gABI, "Dynamic Section".
import { closeSync, openSync, readSync, fstatSync } from 'node:fs';
import { BerthError } from '../errors.js';

export interface ElfInfo {
  machine: string;
  soname: string | undefined;
  needed: string[];
  runpath: string[];
  rpath: string[];
  /** library soname -> symbol versions needed from it (e.g. libc.so.6 -> GLIBC_2.34) */
  versionsNeeded: Map<string, string[]>;
  /** symbol versions this file defines (a libc defines GLIBC_2.2.5 ... GLIBC_2.36) */
  versionsDefined: string[];
}

const MACHINES: Record<number, string> = { 62: 'x86_64', 183: 'aarch64', 21: 'ppc64' };
const PT_LOAD = 1, PT_DYNAMIC = 2;
const DT = { NULL: 0, NEEDED: 1, STRTAB: 5, STRSZ: 10, SONAME: 14, RPATH: 15, RUNPATH: 29, VERDEF: 0x6ffffffc, VERDEFNUM: 0x6ffffffd, VERNEED: 0x6ffffffe, VERNEEDNUM: 0x6fffffff };

/** Reads a file's ELF dynamic section; `source` is a path, or the file's bytes (read from an image). */
export function readElf(source: string | Buffer, file = typeof source === 'string' ? source : 'ELF data'): ElfInfo {
  const fd = typeof source === 'string' ? openSync(source, 'r') : -1;
  try {
    const size = fd >= 0 ? fstatSync(fd).size : (source as Buffer).length;
    const read = (offset: number, length: number): Buffer => {
      if (offset < 0 || offset + length > size) throw notElf(file, 'truncated');
      if (fd < 0) return (source as Buffer).subarray(offset, offset + length);
      const buf = Buffer.alloc(length);
      readSync(fd, buf, 0, length, offset);
      return buf;
    };
    const h = read(0, 64);
    if (h.readUInt32BE(0) !== 0x7f454c46) throw notElf(file, 'no ELF magic');
    if (h[4] !== 2 || h[5] !== 1) throw notElf(file, 'not a 64-bit little-endian ELF file');
    const machine = MACHINES[h.readUInt16LE(18)] ?? `machine ${h.readUInt16LE(18)}`;
    const phoff = Number(h.readBigUInt64LE(32));
    const phentsize = h.readUInt16LE(54);
    const phnum = h.readUInt16LE(56);

    // Program headers: the loadable segments map addresses to file offsets; PT_DYNAMIC is the table.
    const loads: { vaddr: number; offset: number; filesz: number }[] = [];
    let dynamic: { offset: number; size: number } | undefined;
    for (let i = 0; i < phnum; i++) {
      const p = read(phoff + i * phentsize, 56);
      const type = p.readUInt32LE(0);
      const offset = Number(p.readBigUInt64LE(8));
      const vaddr = Number(p.readBigUInt64LE(16));
      const filesz = Number(p.readBigUInt64LE(32));
      if (type === PT_LOAD) loads.push({ vaddr, offset, filesz });
      if (type === PT_DYNAMIC) dynamic = { offset, size: filesz };
    }
    const info: ElfInfo = { machine, soname: undefined, needed: [], runpath: [], rpath: [], versionsNeeded: new Map(), versionsDefined: [] };
    if (!dynamic) return info; // statically linked
    const toOffset = (addr: number): number => {
      const seg = loads.find((l) => addr >= l.vaddr && addr < l.vaddr + l.filesz);
      if (!seg) throw notElf(file, `address 0x${addr.toString(16)} is in no segment`);
      return addr - seg.vaddr + seg.offset;
    };

    const entries: [number, number][] = [];
    const dyn = read(dynamic.offset, dynamic.size);
    for (let off = 0; off + 16 <= dyn.length; off += 16) {
      const tag = Number(dyn.readBigInt64LE(off));
      if (tag === DT.NULL) break;
      entries.push([tag, Number(dyn.readBigUInt64LE(off + 8))]);
    }
    const value = (tag: number) => entries.find(([t]) => t === tag)?.[1];
    const strtab = toOffset(value(DT.STRTAB) ?? 0);
    const strsz = value(DT.STRSZ) ?? 0;
    const strings = read(strtab, strsz);
    const str = (at: number) => {
      const end = strings.indexOf(0, at);
      return strings.toString('utf8', at, end === -1 ? strings.length : end);
    };

    for (const [tag, v] of entries) {
      if (tag === DT.NEEDED) info.needed.push(str(v));
      else if (tag === DT.SONAME) info.soname = str(v);
      else if (tag === DT.RUNPATH) info.runpath.push(...str(v).split(':').filter(Boolean));
      else if (tag === DT.RPATH) info.rpath.push(...str(v).split(':').filter(Boolean));
    }

    // Elf64_Verneed { vn_version u16, vn_cnt u16, vn_file u32, vn_aux u32, vn_next u32 }
    // Elf64_Vernaux { vna_hash u32, vna_flags u16, vna_other u16, vna_name u32, vna_next u32 }
    const verneed = value(DT.VERNEED);
    let needOff = verneed === undefined ? -1 : toOffset(verneed);
    for (let n = value(DT.VERNEEDNUM) ?? 0; n > 0 && needOff >= 0; n--) {
      const vn = read(needOff, 16);
      const versions: string[] = [];
      let auxOff = needOff + vn.readUInt32LE(8);
      for (let c = vn.readUInt16LE(2); c > 0; c--) {
        const aux = read(auxOff, 16);
        versions.push(str(aux.readUInt32LE(8)));
        auxOff += aux.readUInt32LE(12);
      }
      info.versionsNeeded.set(str(vn.readUInt32LE(4)), versions);
      const next = vn.readUInt32LE(12);
      needOff = next === 0 ? -1 : needOff + next;
    }

    // Elf64_Verdef { vd_version u16, vd_flags u16, vd_ndx u16, vd_cnt u16, vd_hash u32, vd_aux u32, vd_next u32 }
    // Elf64_Verdaux { vda_name u32, vda_next u32 }; the first aux names the version itself.
    const verdef = value(DT.VERDEF);
    let defOff = verdef === undefined ? -1 : toOffset(verdef);
    for (let n = value(DT.VERDEFNUM) ?? 0; n > 0 && defOff >= 0; n--) {
      const vd = read(defOff, 20);
      const flags = vd.readUInt16LE(2);
      const aux = read(defOff + vd.readUInt32LE(12), 8);
      if (!(flags & 1)) info.versionsDefined.push(str(aux.readUInt32LE(0))); // VER_FLG_BASE names the file
      const next = vd.readUInt32LE(16);
      defOff = next === 0 ? -1 : defOff + next;
    }
    return info;
  } finally {
    if (fd >= 0) closeSync(fd);
  }
}

function notElf(file: string, why: string): BerthError {
  return new BerthError('SOURCE_INVALID', `${file} is not a readable ELF library (${why})`, 'check the path; the host library may be damaged');
}
