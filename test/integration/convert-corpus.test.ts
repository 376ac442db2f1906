// The layer rules, one hand-made case each (test/fixtures/layers.py), converted by the real CLI
// and listed from the squashfs. Where umoci defines the answer, the listing must equal what
// `umoci unpack --rootless` makes of the same image; ownership, which a rootless unpack cannot
// keep, and the rules where berth deliberately differs are asserted directly.
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  berth, cleanup, makeCorpus, makeLayout, readLayers, listImage, tempDir, umociListing,
  type LayerCompression, type Listing,
} from '../helpers.js';

let work: string;
let corpus: string;

beforeAll(() => {
  work = tempDir('corpus');
  corpus = makeCorpus(work);
});
afterAll(() => cleanup(work));

let serial = 0;
async function convertCase(name: string, compression: LayerCompression = 'gzip') {
  const n = ++serial;
  const layout = makeLayout(path.join(work, `${name}-${compression}-${n}-oci`), readLayers(path.join(corpus, name)), { compression });
  const out = path.join(work, `${name}-${compression}-${n}.sqsh`);
  const r = await berth('convert', `oci:${layout.dir}:latest`, '-o', out, '--quiet');
  return { r, out, layout };
}

async function converted(name: string, compression: LayerCompression = 'gzip'): Promise<{ listing: Listing; layoutDir: string; stderr: string }> {
  const { r, out, layout } = await convertCase(name, compression);
  expect(r.stderr).not.toMatch(/error/);
  expect(r.code).toBe(0);
  return { listing: await listImage(out), layoutDir: layout.dir, stderr: r.stderr };
}

/** Everything umoci can express rootless: type, permission bits, content, links, user xattrs. */
function comparable(listing: Listing, devices: Set<string>): Record<string, object> {
  const out: Record<string, object> = {};
  for (const [p, e] of Object.entries(listing)) {
    if (p === '' || devices.has(p)) continue; // rootless umoci cannot mknod: it leaves empty files
    // Rootless umoci can set only user.* xattrs, and drops empty values.
    const xattrs = Object.fromEntries(Object.entries(e.xattrs ?? {})
      .filter(([k, v]) => k.startsWith('user.') && k !== 'user.rootlesscontainers' && v !== ''));
    out[p] = { type: e.type, mode: e.mode, size: e.size, sha256: e.sha256, link: e.link, group: e.group, xattrs };
  }
  return out;
}

async function expectSameAsUmoci(name: string, listing: Listing, layoutDir: string): Promise<void> {
  const theirs = await umociListing(layoutDir, 'latest', work);
  const devices = new Set(Object.keys(listing).filter((p) => ['char', 'block'].includes(listing[p]!.type)));
  expect(comparable(listing, devices), `${name}: berth vs umoci unpack --rootless`).toEqual(comparable(theirs, devices));
}

describe.each(['whiteout', 'opaque', 'type-change', 'hardlinks', 'cross-layer-link', 'duplicates', 'names', 'paths', 'whiteout-recreate', 'xattrs', 'special-files'])(
  'layer semantics agree with umoci: %s',
  (name) => {
    it('matches umoci unpack --rootless', async () => {
      const { listing, layoutDir } = await converted(name);
      await expectSameAsUmoci(name, listing, layoutDir);
    });
  },
);

describe('layer semantics, asserted directly', () => {
  it('whiteouts remove files and whole directories of lower layers', async () => {
    const { listing } = await converted('whiteout');
    expect(Object.keys(listing).sort()).toEqual(['a', 'a/keep']);
  });

  it('an opaque directory hides everything below it, and takes the upper metadata', async () => {
    const { listing } = await converted('opaque');
    expect(Object.keys(listing).filter((p) => p.startsWith('d')).sort()).toEqual(['d', 'd/new']);
    expect(listing['d']!.mode).toBe(0o750);
    expect(Object.keys(listing).filter((p) => p.startsWith('e/')).sort()).toEqual(['e/added', 'e/kept']);
  });

  it('a path whose type changes across layers takes the top layer\'s type, and nothing of the old one', async () => {
    const { listing } = await converted('type-change');
    expect(listing['p']).toMatchObject({ type: 'symlink', link: 'q' });
    expect(listing['p/inner']).toBeUndefined();
    expect(listing['q']).toMatchObject({ type: 'file', size: 6 });
    expect(listing['q/child']).toBeUndefined();
    expect(listing['r']).toMatchObject({ type: 'symlink', link: 'p' });
    expect(listing['s']).toMatchObject({ type: 'file', size: 6 });
    expect(listing['t']).toMatchObject({ type: 'dir', mode: 0o700 });
    expect(listing['t/u']).toMatchObject({ type: 'file' });
  });

  it('hard links keep their data when a later layer replaces or removes the target', async () => {
    const { listing, stderr } = await converted('hardlinks');
    expect(listing['f1']!.sha256).toBe(hashOf('data-C'));
    expect(listing['h1']!.sha256).toBe(hashOf('data-A'));
    expect(listing['f2']).toBeUndefined();
    expect(listing['h2']!.sha256).toBe(hashOf('data-B'));
    expect(listing['base']!.sha256).toBe(hashOf('data-E'));
    expect(listing['xl']!.sha256).toBe(hashOf('data-D'));
    expect(listing['same-link']!.group).toEqual(['same', 'same-link']);
    expect(stderr).toBe(''); // --quiet: the indexed second pass is silent
  });

  it('hard links into a lower layer share the inode of their target', async () => {
    const { listing } = await converted('cross-layer-link');
    expect(listing['bin/alias']!.group).toEqual(['bin/alias', 'bin/alias2', 'lib.so.1.2']);
  });

  it('duplicate entries in one layer: the last one wins', async () => {
    const { listing } = await converted('duplicates');
    expect(listing['dup']!.sha256).toBe(hashOf('second'));
    expect(listing['dd']!.mode).toBe(0o750);
    expect(listing['z']!.type).toBe('dir');
    expect(listing['z/in']!.type).toBe('file');
    expect(listing['y']!.type).toBe('file');
    expect(listing['y/gone']).toBeUndefined();
  });

  it('keeps owners, setuid, setgid, sticky bits and mtimes as recorded (no root needed)', async () => {
    const { listing } = await converted('ownership');
    expect(listing['suid']).toMatchObject({ mode: 0o4755, uid: 0, gid: 0 });
    expect(listing['sgid']).toMatchObject({ mode: 0o2755, gid: 50 });
    expect(listing['tmp']).toMatchObject({ type: 'dir', mode: 0o1777 });
    expect(listing['owned']).toMatchObject({ uid: 1000, gid: 1000 });
    expect(listing['big-ids']).toMatchObject({ uid: 4000000, gid: 3000000 });
    expect(listing['old']!.mtime).toBe(1234567890);
    expect(listing['secret']!.mode).toBe(0o600);
    expect(listing['noperm']!.mode).toBe(0);
  });

  it('keeps xattrs of every namespace, binary values included', async () => {
    const { listing } = await converted('xattrs');
    expect(listing['user-attr']!.xattrs).toEqual({ 'user.foo': Buffer.from('bar').toString('hex'), 'user.empty': '' });
    expect(listing['cap']!.xattrs!['security.capability']).toBe(Buffer.from('\x01\x00\x00\x02\x00\x20\x00\x00' + '\x00'.repeat(12), 'latin1').toString('hex'));
  });

  it('keeps long, UTF-8 and spaced names, long link targets and device numbers', async () => {
    const names = (await converted('names')).listing;
    const long = `${'l'.repeat(60)}/${'m'.repeat(60)}/${'n'.repeat(90)}`;
    expect(names[long]!.sha256).toBe(hashOf('long'));
    expect(names['h\u00e9llo-\u4e16\u754c.txt']!.sha256).toBe(hashOf('utf8'));
    expect(names['longlink']!.link).toBe('t'.repeat(150));
    expect(names[`${'l'.repeat(60)}/${'m'.repeat(60)}/hardlink-with-a-long-name-${'x'.repeat(80)}`]!.group).toHaveLength(2);
    expect(names['with space']!.type).toBe('file');
    const special = (await converted('special-files')).listing;
    expect(special['dev/null']).toMatchObject({ type: 'char', dev: [1, 3], mode: 0o666 });
    expect(special['dev/sda']).toMatchObject({ type: 'block', dev: [8, 0] });
    expect(special['pipe']!.type).toBe('fifo');
  });

  it('absolute names and ./ and inner .. are taken relative to the image root', async () => {
    const { listing } = await converted('paths');
    expect(listing['abs/file']!.sha256).toBe(hashOf('abs'));
    expect(listing['dot/file']!.sha256).toBe(hashOf('dot'));
    expect(listing['b']!.sha256).toBe(hashOf('b'));
    expect(listing['x/y']!.sha256).toBe(hashOf('xy'));
  });

  it('refuses a layer whose entry climbs out of the root, and writes nothing', async () => {
    const { r, out } = await convertCase('escape');
    expect(r.code).toBe(125);
    expect(r.stderr).toMatch(/climbs out of the image root: '\.\.\/evil'/);
    expect(r.stderr).toMatch(/layer 1\/1/);
    expect(existsSync(out)).toBe(false);
  });

  it('never follows a symlink of a lower layer: the upper directory replaces it (overlay2\'s view)', async () => {
    const { listing } = await converted('symlink-parent');
    expect(listing['link']!.type).toBe('dir');
    expect(listing['link/file']!.sha256).toBe(hashOf('through'));
    expect(listing['real/orig']!.sha256).toBe(hashOf('o'));
    expect(listing['real/file']).toBeUndefined();
    expect(listing['abs']!.type).toBe('dir');
    expect(listing['abs/passwd']!.sha256).toBe(hashOf('not-the-host'));
    expect(listing['etc/passwd']).toBeUndefined();
  });

  it('a whiteout and a new directory of the same name in one layer make an opaque directory', async () => {
    const { listing } = await converted('whiteout-recreate');
    expect(Object.keys(listing).filter((p) => p.startsWith('w')).sort()).toEqual(['w', 'w/new']);
  });

  it.each<LayerCompression>(['none', 'zstd'])('reads %s layers as it reads gzip ones', async (how) => {
    const gzip = (await converted('type-change', 'gzip')).listing;
    expect((await converted('type-change', how)).listing).toEqual(gzip);
  });
});

function hashOf(s: string): string {
  return createHash('sha256').update(s).digest('hex');
}
