// The tar reader against archives written by Python's tarfile and GNU tar (independent
// writers), malformed and mutated archives (strict fields, and no input can make it spin), and
// the writer read back by the reader and by Python.
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { closeSync, ftruncateSync, mkdtempSync, openSync, rmSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { storableAttributes } from '../../src/convert/attributes.js';
import { headerNumber, parsePaxRecords, paxTime, paxUnsigned } from '../../src/convert/tar-fields.js';
import { TarParser, TarFormatError, type TarEntry } from '../../src/convert/tar-reader.js';
import { encodeHeader, END_OF_ARCHIVE, paddingFor } from '../../src/convert/tar-writer.js';
import { PYTHON } from '../helpers.js';

function parse(archive: Buffer, chunk = 7): { entries: TarEntry[]; bodies: Buffer[] } {
  const entries: TarEntry[] = [];
  const bodies: Buffer[] = [];
  let current: Buffer[] = [];
  const parser = new TarParser({
    entry(e) {
      entries.push(e);
      current = [];
      bodies.push(Buffer.alloc(0));
      return true;
    },
    data(c) {
      current.push(Buffer.from(c));
    },
    entryEnd() {
      bodies[bodies.length - 1] = Buffer.concat(current);
    },
  });
  // Odd chunk sizes exercise every boundary between header, body and padding.
  for (let i = 0; i < archive.length; i += chunk) parser.push(archive.subarray(i, i + chunk));
  parser.end();
  return { entries, bodies };
}

function python(script: string): Buffer {
  const r = spawnSync(PYTHON, ['-c', `import io, sys, tarfile\n${script}`], { maxBuffer: 1 << 26 });
  if (r.status !== 0) throw new Error(r.stderr.toString());
  return r.stdout;
}

describe('TarParser', () => {
  it.each(['PAX_FORMAT', 'GNU_FORMAT', 'USTAR_FORMAT'])('reads what Python writes in %s', (format) => {
    const long = format === 'USTAR_FORMAT' ? 'd/'.repeat(70) + 'f' : 'long/'.repeat(40) + 'name';
    const archive = python(`
out = io.BytesIO()
with tarfile.open(fileobj=out, mode='w', format=tarfile.${format}) as t:
    i = tarfile.TarInfo(${JSON.stringify(long)}); data = b'hello world'; i.size = len(data); i.mode = 0o4755; i.uid = 1000; i.gid = 100; i.mtime = 1234567890
    t.addfile(i, io.BytesIO(data))
    l = tarfile.TarInfo('link'); l.type = tarfile.SYMTYPE; l.linkname = ${JSON.stringify(format === 'USTAR_FORMAT' ? 't' : 't'.repeat(200))}; t.addfile(l)
    c = tarfile.TarInfo('null'); c.type = tarfile.CHRTYPE; c.devmajor = 1; c.devminor = 3; t.addfile(c)
sys.stdout.buffer.write(out.getvalue())`);
    const { entries, bodies } = parse(archive);
    expect(entries.map((e) => e.name)).toEqual([long, 'link', 'null']);
    expect(entries[0]).toMatchObject({ type: 'file', mode: 0o4755, uid: 1000, gid: 100, mtime: 1234567890, size: 11 });
    expect(bodies[0]!.toString()).toBe('hello world');
    expect(entries[1]).toMatchObject({ type: 'symlink', linkname: format === 'USTAR_FORMAT' ? 't' : 't'.repeat(200) });
    expect(entries[2]).toMatchObject({ type: 'char', devmajor: 1, devminor: 3 });
  });

  it('reads PAX xattrs, big ids and non-UTF-8 names byte for byte', () => {
    const archive = python(`
out = io.BytesIO()
with tarfile.open(fileobj=out, mode='w', format=tarfile.PAX_FORMAT, encoding='latin-1') as t:
    i = tarfile.TarInfo('caf\\xe9'); i.uid = 5000000; i.pax_headers = {'SCHILY.xattr.user.k': 'v', 'LIBARCHIVE.xattr.user.b64': 'aGk='}
    t.addfile(i, io.BytesIO(b''))
sys.stdout.buffer.write(out.getvalue())`);
    const { entries } = parse(archive);
    expect(Buffer.from(entries[0]!.name, 'latin1')).toEqual(Buffer.from('caf\xe9', 'utf8'));
    expect(entries[0]!.uid).toBe(5000000);
    expect(entries[0]!.xattrs.get('user.k')!.toString()).toBe('v');
    expect(entries[0]!.xattrs.get('user.b64')!.toString()).toBe('hi');
  });

  it('rejects a corrupt header and a truncated archive, saying where', () => {
    const good = python(`
out = io.BytesIO()
with tarfile.open(fileobj=out, mode='w') as t:
    i = tarfile.TarInfo('f'); i.size = 1000; t.addfile(i, io.BytesIO(b'x' * 1000))
sys.stdout.buffer.write(out.getvalue())`);
    const corrupt = Buffer.from(good);
    corrupt[10] = 0x41;
    expect(() => parse(corrupt)).toThrow(/bad tar header checksum at byte 0/);
    expect(() => parse(good.subarray(0, 900))).toThrow(TarFormatError);
    expect(() => parse(good.subarray(0, 900))).toThrow(/ends in the middle of an entry/);
  });

  it('requires the end-of-archive marker, and reads nothing after it', () => {
    const one = python(`
out = io.BytesIO()
with tarfile.open(fileobj=out, mode='w') as t:
    i = tarfile.TarInfo('f'); i.size = 3; t.addfile(i, io.BytesIO(b'abc'))
sys.stdout.buffer.write(out.getvalue())`);
    // Cut at the entry boundary: it parses cleanly up to there, so only the marker tells.
    expect(() => parse(one.subarray(0, 1024))).toThrow(/the tar stream ends at byte 1024 without its end-of-archive marker/);
    expect(() => parse(one.subarray(0, 1536))).toThrow(/without its end-of-archive marker/); // one zero block of two
    expect(() => parse(Buffer.alloc(0))).toThrow(/ends at byte 0 without its end-of-archive marker/);
    const junkAfter = Buffer.concat([one.subarray(0, 2048), Buffer.from('not part of the archive')]);
    expect(parse(junkAfter).entries.map((e) => e.name)).toEqual(['f']);
    const parser = new TarParser({ entry: () => false, data() {}, entryEnd() {} });
    parser.push(one);
    expect(parser.ended).toBe(true);
  });
});

describe('strict fields', () => {
  const field = (text: string | Buffer, len = 12) => {
    const b = Buffer.alloc(len);
    (typeof text === 'string' ? Buffer.from(text, 'latin1') : text).copy(b);
    return b;
  };
  const at = { name: 'f', offset: 0 };

  it.each<[string | Buffer, number]>([
    ['00000000012\0', 10], ['12\0', 10], ['  12 \0', 10], ['\0\0\0\0', 0], ['', 0], ['77777777777\0', 0o77777777777],
    [Buffer.from([0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0]), 256], [Buffer.from([0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe]), -2],
  ])('header number %j is %d', (text, n) => {
    expect(headerNumber(field(text), 0, 12, 'size', at)).toBe(n);
  });

  it.each<[string | Buffer, RegExp]>([
    ['12 34', /not an octal number: '12 34'/], ['0x10', /not an octal number/], ['-1', /not an octal number/], ['12a', /not an octal number/],
    ['89', /not an octal number/], [Buffer.from([0x80, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]), /out of range/],
  ])('header number %j is refused', (text, message) => {
    expect(() => headerNumber(field(text), 0, 12, 'size', at)).toThrow(message);
  });

  it('PAX numbers: decimal digits only, exactly representable', () => {
    expect(paxUnsigned('0', 'size', at)).toBe(0);
    expect(paxUnsigned('007', 'size', at)).toBe(7);
    expect(paxUnsigned('9007199254740991', 'size', at)).toBe(Number.MAX_SAFE_INTEGER);
    for (const bad of ['', '-1', '+1', ' 1', '1 ', '1e3', '0x10', '1.5', 'Infinity', 'NaN']) {
      expect(() => paxUnsigned(bad, 'size', at), bad).toThrow(/is not a decimal number/);
    }
    expect(() => paxUnsigned('9007199254740992', 'size', at)).toThrow(/out of range/);
    expect(() => paxUnsigned('4294967296', 'uid', at, 0xffffffff)).toThrow(/out of range \(at most 4294967295\)/);
    expect(paxTime('1234567890.75', 'mtime', at)).toBe(1234567890);
    expect(paxTime('-1.5', 'mtime', at)).toBe(-2);
    expect(paxTime('-1', 'mtime', at)).toBe(-1);
    for (const bad of ['', '1e9', '.5', '1.2.3', '--1', 'now']) expect(() => paxTime(bad, 'mtime', at), bad).toThrow(/not a decimal number/);
  });

  it('PAX records: the length must end the record on its newline', () => {
    const parsed = (text: string) => {
      const m = new Map<string, Buffer>();
      parsePaxRecords(Buffer.from(text, 'latin1'), m, [], 0);
      return Object.fromEntries([...m].map(([k, v]) => [k, v.toString('latin1')]));
    };
    expect(parsed('11 path=ab\n8 uid=7\n')).toEqual({ path: 'ab', uid: '7' });
    expect(parsed('13 k=has\nnl=\n\0\0')).toEqual({ k: 'has\nnl=' }); // values may hold newlines and '='
    expect(parsed('9 uname=\n')).toEqual({ uname: '' });
    for (const bad of ['12 path=ab\n', '10 path=ab\n', 'x path=ab\n', '011path=ab\n', '6 =ab\n', '11 path=ab\nrest', '0 \n', '99999999999 k=v\n']) {
      expect(() => parsed(bad), JSON.stringify(bad)).toThrow(TarFormatError);
    }
  });

  it('never spins: every mutation of every header field ends in entries or a TarFormatError', () => {
    const archive = python(`
out = io.BytesIO()
with tarfile.open(fileobj=out, mode='w', format=tarfile.PAX_FORMAT) as t:
    i = tarfile.TarInfo('a' * 120); i.size = 700; i.pax_headers = {'SCHILY.xattr.user.k': 'v'}; t.addfile(i, io.BytesIO(b'x' * 700))
    l = tarfile.TarInfo('l'); l.type = tarfile.SYMTYPE; l.linkname = 't'; t.addfile(l)
sys.stdout.buffer.write(out.getvalue())`);
    let seed = 12345;
    const random = () => (seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;
    const values = ['-1', '-9999', '1e400', '', ' ', '\xff', '99999999999999999999', '0', '512', '0x20'];
    for (let round = 0; round < 600; round++) {
      const copy = Buffer.from(archive);
      const block = [0, 1, 2, 4][Math.floor(random() * 4)]! * 512;
      if (block === 512) {
        // The PAX body: rewrite a record with a hostile value.
        const body = copy.toString('latin1', 512, 1024).replace(/(\d+) (size|path|uid|SCHILY\.xattr\.user\.k)=[^\n]*/, (_m, _n, k: string) => `${random() * 40 | 0} ${k}=${values[random() * values.length | 0]}`);
        copy.write(body, 512, 'latin1');
      } else {
        const off = block + Math.floor(random() * 345);
        copy[off] = Math.floor(random() * 256);
        fixChecksum(copy, block);
      }
      try {
        parse(copy, 1 + Math.floor(random() * 700));
      } catch (e: unknown) {
        expect(e, String(e)).toBeInstanceOf(TarFormatError);
      }
    }
  });
});

function fixChecksum(archive: Buffer, at: number): void {
  const h = archive.subarray(at, at + 512);
  h.fill(0x20, 148, 156);
  let sum = 0;
  for (let i = 0; i < 512; i++) sum += h[i]!;
  h.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148, 'latin1');
}

describe('GNU sparse files', () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'berth-sparse-'));
  const file = path.join(dir, 'sparse');
  const data = Buffer.alloc(30 * 65536 + 777);
  // Data every 64 KiB, holes between (real ones, written around): GNU tar finds them by SEEK_HOLE.
  const fd = openSync(file, 'w');
  for (let i = 0; i < 30; i++) {
    data.fill(i + 1, i * 65536 + 100, i * 65536 + 1100);
    writeSync(fd, data, i * 65536 + 100, 1000, i * 65536 + 100);
  }
  ftruncateSync(fd, data.length);
  closeSync(fd);

  it.each([['posix', '0.0'], ['posix', '0.1'], ['posix', '1.0'], ['gnu', 'old']])('format %s %s: map read whatever the chunk size, data byte for byte', (format, version) => {
    const args = ['--sparse', `--format=${format}`, ...(version === 'old' ? [] : [`--sparse-version=${version}`]), '-C', dir, '-cf', '-', 'sparse'];
    const archive = spawnSync('tar', args, { maxBuffer: 1 << 26 }).stdout;
    for (const chunk of [1, 7, 512, 513, 100000]) {
      const { entries, bodies } = parse(archive, chunk);
      const e = entries[0]!;
      expect(e.sparse, `${version} chunk ${chunk}`).toBeDefined();
      expect(e.sparse!.realSize).toBe(data.length);
      expect(expand(e, bodies[0]!).equals(data)).toBe(true);
    }
  });

  it('the writer\'s 1.0 form reads back in Python as the same file', () => {
    const archive = spawnSync('tar', ['--sparse', '--format=gnu', '-C', dir, '-cf', '-', 'sparse'], { maxBuffer: 1 << 26 }).stdout;
    const { entries, bodies } = parse(archive);
    const written = Buffer.concat([encodeHeader(entries[0]!), bodies[0]!, paddingFor(bodies[0]!.length), END_OF_ARCHIVE]);
    const r = spawnSync(PYTHON, ['-c', `import hashlib, io, sys, tarfile
with tarfile.open(fileobj=io.BytesIO(sys.stdin.buffer.read()), mode='r:') as t:
    m = t.next(); print(m.name, m.size, m.issparse(), hashlib.sha256(t.extractfile(m).read()).hexdigest())`], { input: written });
    expect(r.stderr.toString()).toBe('');
    expect(r.stdout.toString().trim()).toBe(`sparse ${data.length} True ${createHash('sha256').update(data).digest('hex')}`);
  });

  afterAll(() => rmSync(dir, { recursive: true, force: true }));
});

/** A sparse entry's file: its stored segments placed in zeros. */
function expand(e: TarEntry, stored: Buffer): Buffer {
  const out = Buffer.alloc(e.sparse!.realSize);
  let pos = 0;
  for (const s of e.sparse!.segments) {
    stored.copy(out, s.offset, pos, pos + s.size);
    pos += s.size;
  }
  return out;
}

describe('POSIX ACLs', () => {
  const at = { name: 'f', offset: 0 };
  it.each<[string, number, number]>([
    ['user::rwx,group::rwx,other::r-x,user:bob:rwx,mask::r-x', 0o775, 0o755],
    ['user::rw-\ngroup::r--\nother::r--\n', 0o644, 0o644],
    ['user::rwx,group::---,group:50:rwx:50,mask::rwx,other::---', 0o770, 0o700], // libarchive appends ids
    ['u::rwx,g::r-x,m:r--,o::---', 0o750, 0o740],
    ['# file: x\nuser::rwx\ngroup::rwx #effective:r-x\nmask::r-x\nother::---', 0o750, 0o750],
  ])('text %j on mode %o gives %o', (text, mode, narrowed) => {
    const a = storableAttributes(new Map(), { access: text }, mode, at);
    expect(a.mode).toBe(narrowed);
    expect(a.acl).toBe(true);
  });

  it('refuses a malformed ACL rather than guess', () => {
    expect(() => storableAttributes(new Map(), { access: 'user::rwx,bogus::r' }, 0o755, at)).toThrow(/malformed POSIX ACL on entry 'f'/);
    expect(() => storableAttributes(new Map([['system.posix_acl_access', Buffer.from([1, 0, 0, 0])]]), {}, 0o755, at)).toThrow(/not a version 2/);
  });

  it('keeps what squashfs stores, drops the rest', () => {
    const xattrs = new Map([['user.a', Buffer.from('1')], ['trusted.b', Buffer.from('2')], ['security.c', Buffer.from('3')], ['system.x', Buffer.from('4')], ['com.apple.y', Buffer.from('5')]]);
    const a = storableAttributes(xattrs, {}, 0o644, at);
    expect([...a.xattrs.keys()]).toEqual(['user.a', 'trusted.b', 'security.c']);
    expect(a.dropped).toEqual(['system.x', 'com.apple.y']);
    expect(a.acl).toBe(false);
  });
});

describe('encodeHeader', () => {
  const base: TarEntry = {
    name: 'f', linkname: '', type: 'file', mode: 0o644, uid: 0, gid: 0, uname: '', gname: '',
    size: 3, mtime: 1700000000, devmajor: 0, devminor: 0, xattrs: new Map(),
  };

  it('round-trips long and UTF-8 names, big ids, links and xattrs through the reader and through Python', () => {
    const entries: TarEntry[] = [
      { ...base, name: `${'deep/'.repeat(50)}file`, uid: 9_000_000, gid: 3, xattrs: new Map([['user.a', Buffer.from([0, 1, 2])]]) },
      { ...base, name: Buffer.from('h\u00e9llo', 'utf8').toString('latin1'), size: 0 },
      { ...base, name: 'sym', type: 'symlink', linkname: 'x'.repeat(300), size: 0 },
      { ...base, name: 'dir', type: 'dir', mode: 0o1777, size: 0 },
    ];
    const parts: Buffer[] = [];
    for (const e of entries) {
      parts.push(encodeHeader(e));
      if (e.size) parts.push(Buffer.from('abc'), paddingFor(3));
    }
    parts.push(END_OF_ARCHIVE);
    const archive = Buffer.concat(parts);
    const { entries: back, bodies } = parse(archive, 512 * 3 + 1);
    expect(back.map((e) => e.name)).toEqual(entries.map((e) => e.name.replace(/^dir$/, 'dir/')));
    expect(back[0]).toMatchObject({ uid: 9_000_000, gid: 3 });
    expect(back[0]!.xattrs.get('user.a')).toEqual(Buffer.from([0, 1, 2]));
    expect(bodies[0]!.toString()).toBe('abc');
    expect(back[2]!.linkname).toBe('x'.repeat(300));
    expect(back[3]).toMatchObject({ type: 'dir', mode: 0o1777 });
    const listed = spawnSync(PYTHON, ['-c', `import sys, tarfile
with tarfile.open(fileobj=sys.stdin.buffer, mode='r|') as t:
    for m in t:
        v = m.pax_headers.get('SCHILY.xattr.user.a')
        print(m.name, m.uid, '-' if v is None else v.encode('utf-8', 'surrogateescape').hex())`], { input: archive });
    expect(listed.stdout.toString().split('\n').slice(0, 2)).toEqual([`${'deep/'.repeat(50)}file 9000000 000102`, 'h\u00e9llo 0 -']);
  });
});
