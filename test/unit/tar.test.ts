// The tar reader against archives written by Python's tarfile (an independent writer), and
// the writer read back by the reader and by Python.
import { spawnSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
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
