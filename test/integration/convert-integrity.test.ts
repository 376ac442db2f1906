// Blob and JSON integrity (#14): layers whose bytes match their digest but are not the tar the
// config describes (cut short, with garbage after, a wrong diff_id, a tar without its end),
// descriptors that lie about sizes, digests berth cannot verify, and wrongly typed image JSON.
// Each is refused with its reason, and leaves nothing in the output directory or, pulled from
// a real registry, in the cache's images/. Good images still convert to the same tree.
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { createServer as createHttpServer, type Server } from 'node:http';
import { createServer, type AddressInfo } from 'node:net';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BERTH, PYTHON, ROOT, berth, cleanup, compress, listImage, run, sha256, tempDir, type Listing } from '../helpers.js';
import { startRegistry, type Registry } from '../registry.js';

let work: string;
beforeAll(() => {
  work = tempDir('integrity');
});
afterAll(() => cleanup(work));

const MEDIA = {
  gzip: 'application/vnd.oci.image.layer.v1.tar+gzip',
  zstd: 'application/vnd.oci.image.layer.v1.tar+zstd',
  none: 'application/vnd.oci.image.layer.v1.tar',
};

type Json = Record<string, unknown>;

interface LayerSpec {
  blob: Buffer;
  mediaType: string;
  diffId: string;
  /** The descriptor's digest, if not the blob's sha256 (the blob is stored under it). */
  digest?: string;
  size?: number;
}

interface LayoutSpec {
  layers: LayerSpec[];
  config?: (c: Json) => unknown;
  manifest?: (m: Json) => unknown;
  index?: (i: Json) => unknown;
}

let serial = 0;

function writeBlob(dir: string, data: Buffer, digest = sha256(data)): string {
  const [algorithm, hex] = digest.split(':') as [string, string];
  mkdirSync(path.join(dir, 'blobs', algorithm), { recursive: true });
  writeFileSync(path.join(dir, 'blobs', algorithm, hex), data);
  return digest;
}

/** An OCI layout written piece by piece, so that any piece can be made wrong. */
function layout(spec: LayoutSpec): string {
  const dir = path.join(work, `layout-${++serial}`);
  mkdirSync(dir, { recursive: true });
  writeFileSync(path.join(dir, 'oci-layout'), '{"imageLayoutVersion":"1.0.0"}');
  const layers = spec.layers.map((l) => ({ mediaType: l.mediaType, digest: writeBlob(dir, l.blob, l.digest), size: l.size ?? l.blob.length }));
  const baseConfig: Json = {
    architecture: 'amd64', os: 'linux', created: '2026-01-02T03:04:05Z',
    config: { Env: ['PATH=/usr/bin:/bin'], Cmd: ['/bin/sh'] },
    rootfs: { type: 'layers', diff_ids: spec.layers.map((l) => l.diffId) },
  };
  const config = Buffer.from(JSON.stringify(spec.config ? spec.config(baseConfig) : baseConfig));
  const baseManifest: Json = {
    schemaVersion: 2, mediaType: 'application/vnd.oci.image.manifest.v1+json',
    config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: writeBlob(dir, config), size: config.length },
    layers,
  };
  const manifest = Buffer.from(JSON.stringify(spec.manifest ? spec.manifest(baseManifest) : baseManifest));
  const baseIndex: Json = {
    schemaVersion: 2,
    manifests: [{
      mediaType: 'application/vnd.oci.image.manifest.v1+json', digest: writeBlob(dir, manifest), size: manifest.length,
      annotations: { 'org.opencontainers.image.ref.name': 'latest' },
    }],
  };
  writeFileSync(path.join(dir, 'index.json'), JSON.stringify(spec.index ? spec.index(baseIndex) : baseIndex));
  return dir;
}

/** A tar of files made by Python's tarfile (an independent writer), with its end-of-archive. */
async function tarOf(files: Record<string, string | Buffer>): Promise<Buffer> {
  const script = `import io, sys, tarfile, json, base64
files = json.load(sys.stdin)
out = io.BytesIO()
with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as t:
    for name, b64 in files.items():
        data = base64.b64decode(b64)
        info = tarfile.TarInfo(name); info.size = len(data); info.mtime = 1700000000; info.mode = 0o644
        t.addfile(info, io.BytesIO(data))
sys.stdout.write(base64.b64encode(out.getvalue()).decode())`;
  const input = JSON.stringify(Object.fromEntries(Object.entries(files).map(([k, v]) => [k, Buffer.from(v).toString('base64')])));
  const r = await run(PYTHON, ['-c', script], { input });
  if (r.code !== 0) throw new Error(r.stderr);
  return Buffer.from(r.stdout, 'base64');
}

/** Incompressible bytes, seeded: the same on every run. */
function noise(n: number, seed = 'noise'): Buffer {
  const chunks: Buffer[] = [];
  for (let i = 0; chunks.length * 64 < n; i++) chunks.push(createHash('sha512').update(`${seed}${i}`).digest());
  return Buffer.concat(chunks).subarray(0, n);
}

/** A layer from its tar: compressed as asked, its diff_id the tar's. */
function layerOf(tar: Buffer, how: 'gzip' | 'zstd' | 'none'): LayerSpec {
  return { blob: compress(tar, how), mediaType: MEDIA[how], diffId: sha256(tar) };
}

/** Converts into an empty directory; returns the result and what the directory holds after. */
async function convertInto(source: string): Promise<{ code: number | null; stderr: string; left: string[]; out: string }> {
  const outDir = path.join(work, `out-${++serial}`);
  mkdirSync(outDir);
  const out = path.join(outDir, 'image.sqsh');
  const r = await berth('convert', source, '-o', out, '--quiet');
  return { code: r.code, stderr: r.stderr, left: readdirSync(outDir), out };
}

async function expectRefused(source: string, message: RegExp | string): Promise<void> {
  const r = await convertInto(source);
  if (typeof message === 'string') expect(r.stderr).toContain(message);
  else expect(r.stderr).toMatch(message);
  expect(r.stderr).toMatch(/\nberth: hint: /); // what to do, always
  expect(r.stderr).not.toMatch(/internal error|\n {4}at /);
  expect(r.code).toBe(125);
  expect(r.left).toEqual([]);
}

let big: Buffer; // a tar of three files, the middle one large enough to span zstd blocks
beforeAll(async () => {
  big = await tarOf({ 'a.txt': 'first\n', 'b.bin': noise(400_000), 'c.txt': 'last\n' });
});

describe('layers whose blob digest matches but whose content is not the image', () => {
  it('a zstd layer cut short (the registry or layout serves the cut blob under its own digest)', async () => {
    const whole = compress(big, 'zstd');
    const dir = layout({ layers: [{ blob: whole.subarray(0, whole.length - 10_000), mediaType: MEDIA.zstd, diffId: sha256(big) }] });
    await expectRefused(`oci:${dir}`, /layer 1\/1 \(sha256:[0-9a-f]{64}\) is not a valid zstd stream: premature end \(the stream is cut short\)[\s\S]*copy the image again/);
  });

  it('a gzip layer cut short', async () => {
    const whole = compress(big, 'gzip');
    const dir = layout({ layers: [{ blob: whole.subarray(0, whole.length - 10_000), mediaType: MEDIA.gzip, diffId: sha256(big) }] });
    await expectRefused(`oci:${dir}`, /layer 1\/1 \(sha256:[0-9a-f]{64}\) is not a valid gzip stream: unexpected end of file \(the stream is cut short\)/);
  });

  it.each([['zstd'], ['gzip']] as const)('a %s layer with garbage after its stream', async (how) => {
    const blob = Buffer.concat([compress(big, how), Buffer.from('trailing garbage, not a stream')]);
    const dir = layout({ layers: [{ blob, mediaType: MEDIA[how], diffId: sha256(big) }] });
    await expectRefused(`oci:${dir}`, `is not a valid ${how} stream: trailing garbage after the end of the ${how} stream`);
  });

  it('a gzip layer whose CRC-32 does not match its data', async () => {
    const blob = Buffer.from(compress(big, 'gzip'));
    blob[blob.length - 8] ^= 0x01; // the trailer's CRC-32: every block inflates, the sum is wrong
    const dir = layout({ layers: [{ blob, mediaType: MEDIA.gzip, diffId: sha256(big) }] });
    await expectRefused(`oci:${dir}`, 'is not a valid gzip stream: incorrect data check (CRC-32 or length)');
  });

  it('a gzip layer whose length in the trailer is wrong', async () => {
    const blob = Buffer.from(compress(big, 'gzip'));
    blob.writeUInt32LE((big.length + 512) >>> 0, blob.length - 4);
    const dir = layout({ layers: [{ blob, mediaType: MEDIA.gzip, diffId: sha256(big) }] });
    await expectRefused(`oci:${dir}`, 'is not a valid gzip stream: incorrect data check (CRC-32 or length)');
  });

  it.each([['zstd'], ['gzip']] as const)('an empty %s blob', async (how) => {
    const dir = layout({ layers: [{ blob: Buffer.alloc(0), mediaType: MEDIA[how], diffId: sha256(big) }] });
    await expectRefused(`oci:${dir}`, /layer 1\/1 \(sha256:[0-9a-f]{64}\) is empty \(0 bytes\)/);
  });

  it('a zstd frame whose data is damaged', async () => {
    const blob = Buffer.from(compress(big, 'zstd'));
    blob[Math.floor(blob.length / 2)] ^= 0x55;
    const dir = layout({ layers: [{ blob, mediaType: MEDIA.zstd, diffId: sha256(big) }] });
    await expectRefused(`oci:${dir}`, /is not a valid zstd stream: (Data corruption detected|Corrupted block detected|Restored data doesn't match checksum)/);
  });

  it('a whole zstd stream of a tar cut at an entry (its diff_id is the whole tar\'s)', async () => {
    const cut = big.subarray(0, 1024); // a.txt's header and data: then nothing
    const dir = layout({ layers: [{ blob: compress(cut, 'zstd'), mediaType: MEDIA.zstd, diffId: sha256(big) }] });
    await expectRefused(`oci:${dir}`, new RegExp(
      `the uncompressed content of layer 1/1 \\(sha256:[0-9a-f]{64}\\) does not match its diff_id in the image config: expected ${sha256(big)}, got sha256:`));
  });

  it('a tar cut at an entry whose diff_id matches the cut: no end-of-archive', async () => {
    const cut = big.subarray(0, 1024); // a.txt's header and data: then nothing
    const dir = layout({ layers: [layerOf(cut, 'gzip')] });
    await expectRefused(`oci:${dir}`, /layer 1\/1 \(sha256:[0-9a-f]{64}\): the tar stream ends at byte 1024 without its end-of-archive marker/);
  });

  it.each([['gzip'], ['zstd'], ['none']] as const)('a %s layer whose diff_id is another tar\'s', async (how) => {
    const other = await tarOf({ 'other.txt': 'not this one\n' });
    const dir = layout({ layers: [{ ...layerOf(big, how), diffId: sha256(other) }] });
    await expectRefused(`oci:${dir}`, `does not match its diff_id in the image config: expected ${sha256(other)}, got ${sha256(big)}`);
  });

  it('a layer of two whose diff_id is wrong fails the conversion even though the other layer is fine', async () => {
    const base = await tarOf({ 'base.txt': 'base\n' });
    const dir = layout({ layers: [layerOf(base, 'gzip'), { ...layerOf(big, 'gzip'), diffId: sha256(base) }] });
    await expectRefused(`oci:${dir}`, /the uncompressed content of layer 2\/2 \(sha256:[0-9a-f]{64}\) does not match its diff_id/);
  });
});

describe('descriptors and digests', () => {
  it('a layer descriptor whose size disagrees with its blob', async () => {
    const l = layerOf(big, 'gzip');
    const dir = layout({ layers: [{ ...l, size: l.blob.length + 1 }] });
    await expectRefused(`oci:${dir}`, `layer 1/1 (${sha256(l.blob)}) in OCI layout ${dir} is ${l.blob.length} bytes, but its descriptor says ${l.blob.length + 1}`);
  });

  it('a config descriptor whose size disagrees with its blob', async () => {
    const dir = layout({
      layers: [layerOf(big, 'gzip')],
      manifest: (m) => ({ ...m, config: { ...(m['config'] as Json), size: 3 } }),
    });
    await expectRefused(`oci:${dir}`, /blob sha256:[0-9a-f]{64} in OCI layout .* is \d+ bytes, but its descriptor says 3/);
  });

  it('a diff_id count that does not match the layers', async () => {
    const l = layerOf(big, 'gzip');
    const dir = layout({ layers: [l], config: (c) => ({ ...c, rootfs: { type: 'layers', diff_ids: [l.diffId, l.diffId] } }) });
    await expectRefused(`oci:${dir}`, /lists 1 layers but its config has 2 diff_ids/);
  });

  it.each([
    ['md5', `md5:${'0'.repeat(32)}`, /uses the digest algorithm 'md5', which berth cannot verify \(it checks sha256 and sha512\)/],
    ['blake3', `blake3:${'0'.repeat(64)}`, /uses the digest algorithm 'blake3', which berth cannot verify/],
    ['sha256 too short', `sha256:${'0'.repeat(63)}`, /is not a sha256 digest \(64 lowercase hex digits\)/],
    ['sha256 upper case', `sha256:${'A'.repeat(64)}`, /is not a sha256 digest/],
  ])('a layer digest berth cannot verify (%s) is refused, not trusted', async (_name, digest, message) => {
    const l = layerOf(big, 'gzip');
    const dir = layout({ layers: [{ ...l, digest: digest.replace(/[A-Z]/g, 'a') }], manifest: (m) => ({ ...m, layers: [{ ...(m['layers'] as Json[])[0], digest }] }) });
    await expectRefused(`oci:${dir}`, new RegExp(`layers\\[0\\]\\.digest: ${message.source}`));
  });

  it('sha512 digests are verified: a matching layer converts, a tampered one is refused', async () => {
    const l = layerOf(big, 'gzip');
    const sha512 = `sha512:${createHash('sha512').update(l.blob).digest('hex')}`;
    const good = layout({ layers: [{ ...l, digest: sha512 }] });
    const r = await convertInto(`oci:${good}`);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const bad = layout({ layers: [{ ...l, blob: compress(await tarOf({ 'x': 'y' }), 'gzip'), digest: sha512 }] });
    await expectRefused(`oci:${bad}`, `layer 1/1 (${sha512}) does not match its digest: expected ${sha512}, got sha512:`);
  });
});

describe('a good image converts as before', () => {
  it.each([['gzip'], ['zstd'], ['none']] as const)('%s: the listing is the tar\'s own, and converting again gives the same bytes', async (how) => {
    const dir = layout({ layers: [layerOf(big, how)] });
    const first = await convertInto(`oci:${dir}`);
    expect(first.stderr).toBe('');
    expect(first.code).toBe(0);
    const again = await convertInto(`oci:${dir}`);
    expect(readFileSync(again.out).equals(readFileSync(first.out))).toBe(true);
    const lister = await run(PYTHON, [path.join(ROOT, 'test/fixtures/listing.py'), 'tar'], { input: big });
    const expected = JSON.parse(lister.stdout) as Listing;
    const got = await listImage(first.out);
    delete got['']; // the root directory, which the layer does not have
    expect(got).toEqual(expected);
  });

  // What gzip -d and zstd -d read as one stream: members or frames one after another, and
  // (gzip) zero bytes after the last member. Each converts to the whole tar, once.
  it.each([
    ['two gzip members', (t: Buffer) => Buffer.concat([compress(t.subarray(0, 100_000), 'gzip'), compress(t.subarray(100_000), 'gzip')]), MEDIA.gzip],
    ['a gzip stream padded with zero bytes', (t: Buffer) => Buffer.concat([compress(t, 'gzip'), Buffer.alloc(1000)]), MEDIA.gzip],
    ['two zstd frames', (t: Buffer) => Buffer.concat([compress(t.subarray(0, 100_000), 'zstd'), compress(t.subarray(100_000), 'zstd')]), MEDIA.zstd],
  ] as const)('%s', async (_what, make, mediaType) => {
    const dir = layout({ layers: [{ blob: make(big), mediaType, diffId: sha256(big) }] });
    const r = await convertInto(`oci:${dir}`);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const lister = await run(PYTHON, [path.join(ROOT, 'test/fixtures/listing.py'), 'tar'], { input: big });
    const got = await listImage(r.out);
    delete got[''];
    expect(got).toEqual(JSON.parse(lister.stdout) as Listing);
  });

  it('a layer that inflates a thousandfold converts whole (output is taken in steps, not at once)', async () => {
    const zeros = await tarOf({ 'zeros.bin': Buffer.alloc(64 << 20), 'after.txt': 'after\n' });
    for (const how of ['gzip', 'zstd'] as const) {
      const dir = layout({ layers: [layerOf(zeros, how)] });
      const r = await convertInto(`oci:${dir}`);
      expect(r.stderr).toBe('');
      expect(r.code).toBe(0);
      const got = await listImage(r.out);
      expect(got['zeros.bin']).toMatchObject({ size: 64 << 20 });
      expect(got['after.txt']).toBeDefined();
    }
  });

  it('a Docker-style config full of nulls converts, and keeps them as absent', async () => {
    const dir = layout({
      layers: [layerOf(big, 'gzip')],
      config: (c) => ({ ...c, config: { Env: null, Entrypoint: null, Cmd: ['/bin/sh'], Labels: null, Volumes: null, ExposedPorts: null, OnBuild: null, WorkingDir: '', User: '' }, history: [{ created_by: 'x', empty_layer: true }] }),
    });
    const r = await convertInto(`oci:${dir}`);
    expect(r.stderr).toBe('');
    const info = JSON.parse((await berth('inspect', r.out, '--json')).stdout) as { image: { config: Json } };
    expect(info.image.config).toMatchObject({ Env: [], Entrypoint: null, Cmd: ['/bin/sh'], Labels: {}, Volumes: [], ExposedPorts: [], WorkingDir: '' });
  });
});

describe('wrongly typed image JSON is refused at conversion, with the field named', () => {
  const env = (value: unknown) => (c: Json) => ({ ...c, config: { ...(c['config'] as Json), Env: value } });
  const field = (name: string, value: unknown) => (c: Json) => ({ ...c, config: { ...(c['config'] as Json), [name]: value } });
  it.each([
    ['index.json whose manifests are not a list', { index: (i: Json) => ({ ...i, manifests: { a: 1 } }) }, 'index.json is malformed: manifests: must be a list, not an object'],
    ['index.json with a null entry', { index: (i: Json) => ({ ...i, manifests: [null] }) }, 'index.json is malformed: manifests[0]: must be an object, not null'],
    ['a manifest whose layers are a string', { manifest: (m: Json) => ({ ...m, layers: 'x' }) }, "is malformed: layers: must be a list, not a string ('x')"],
    ['a layer size that is a string', { manifest: (m: Json) => ({ ...m, layers: [{ ...(m['layers'] as Json[])[0], size: '12' }] }) }, "layers[0].size: must be a whole number of bytes, not a string ('12')"],
    ['a negative layer size', { manifest: (m: Json) => ({ ...m, layers: [{ ...(m['layers'] as Json[])[0], size: -1 }] }) }, 'layers[0].size: must be a whole number of bytes, not a number (-1)'],
    ['Env that is a string', { config: env('PATH=/bin') }, "config.Env: must be a list, not a string ('PATH=/bin')"],
    ['Env holding null', { config: env(['A=1', 'B=2', null]) }, 'config.Env[2]: must be a string, not null'],
    ['Env holding no NAME=', { config: env(['=x']) }, "config.Env[0]: must be NAME=VALUE, not '=x'"],
    ['a numeric Entrypoint', { config: field('Entrypoint', 5) }, 'config.Entrypoint: must be a list, not a number (5)'],
    ['a numeric WorkingDir', { config: field('WorkingDir', 7) }, 'config.WorkingDir: must be a string, not a number (7)'],
    ['a relative WorkingDir', { config: field('WorkingDir', 'rel/dir') }, "config.WorkingDir: must be an absolute path, not 'rel/dir'"],
    ['a label that is not a string', { config: field('Labels', { 'a b': 1 }) }, 'config.Labels["a b"]: must be a string, not a number (1)'],
    ['a config that is a list', { config: () => [] }, 'is malformed: must be an object, not a list'],
    ['no architecture', { config: (c: Json) => ({ ...c, architecture: undefined }) }, 'is malformed: architecture: is missing'],
    ['a diff_id that is null', { config: (c: Json) => ({ ...c, rootfs: { type: 'layers', diff_ids: [null] } }) }, 'rootfs.diff_ids[0]: must be a string, not null'],
  ])('%s', async (_name, edits, message) => {
    const dir = layout({ layers: [layerOf(big, 'gzip')], ...edits });
    await expectRefused(`oci:${dir}`, message);
  });
});

/** A classic `docker save` archive (manifest.json, config, NAME/layer.tar) made with GNU tar. */
async function dockerArchive(manifest: unknown, config: Json, layers: Record<string, Buffer>): Promise<string> {
  const src = path.join(work, `archive-${++serial}`);
  mkdirSync(src);
  writeFileSync(path.join(src, 'manifest.json'), JSON.stringify(manifest));
  writeFileSync(path.join(src, 'config.json'), JSON.stringify(config));
  for (const [name, tar] of Object.entries(layers)) {
    mkdirSync(path.join(src, path.dirname(name)), { recursive: true });
    writeFileSync(path.join(src, name), tar);
  }
  const file = `${src}.tar`;
  const r = await run('tar', ['-C', src, '-cf', file, 'manifest.json', 'config.json', ...Object.keys(layers)]);
  if (r.code !== 0) throw new Error(r.stderr);
  return file;
}

describe('docker-archive', () => {
  const config = (diffIds: string[]): Json => ({ architecture: 'amd64', os: 'linux', config: {}, rootfs: { type: 'layers', diff_ids: diffIds } });
  const entry = { Config: 'config.json', RepoTags: ['x/y:1'], Layers: ['l1/layer.tar'] };

  it('manifest.json that is an object', async () => {
    const file = await dockerArchive(entry, config([sha256(big)]), { 'l1/layer.tar': big });
    await expectRefused(`docker-archive:${file}`, `${file}: manifest.json is malformed: must be a list, not an object`);
  });

  it('manifest.json whose Layers are null', async () => {
    const file = await dockerArchive([{ ...entry, Layers: null }], config([sha256(big)]), { 'l1/layer.tar': big });
    await expectRefused(`docker-archive:${file}`, 'manifest.json is malformed: [0].Layers: must be a list, not null');
  });

  it('a layer.tar cut short inside a whole archive', async () => {
    const cut = big.subarray(0, 1024);
    const file = await dockerArchive([entry], config([sha256(big)]), { 'l1/layer.tar': cut });
    await expectRefused(`docker-archive:${file}`, `does not match its diff_id in the image config: expected ${sha256(big)}, got ${sha256(cut)}`);
  });

  it('an archive cut short', async () => {
    const whole = await dockerArchive([entry], config([sha256(big)]), { 'l1/layer.tar': big });
    const file = path.join(work, 'cut-archive.tar');
    const bytes = readFileSync(whole);
    writeFileSync(file, bytes.subarray(0, bytes.length - 10240)); // GNU tar's end blocks and then some
    await expectRefused(`docker-archive:${file}`, /cut-archive\.tar is not a readable tar archive: the tar stream ends at byte \d+ without its end-of-archive marker[\s\S]*save it again/);
  });

  it('a good archive still converts', async () => {
    const file = await dockerArchive([entry], config([sha256(big)]), { 'l1/layer.tar': big });
    const r = await convertInto(`docker-archive:${file}`);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
  });
});

/** Puts a layout's image into the registry through the distribution API, blobs exactly as they are. */
async function pushRaw(registry: Registry, dir: string, repo: string, tag: string): Promise<void> {
  const base = `http://${registry.host}/v2/${repo}`;
  for (const hex of readdirSync(path.join(dir, 'blobs/sha256'))) {
    const data = readFileSync(path.join(dir, 'blobs/sha256', hex));
    const started = await fetch(`${base}/blobs/uploads/`, { method: 'POST' });
    const location = new URL(started.headers.get('location')!, base);
    location.searchParams.set('digest', `sha256:${hex}`);
    const put = await fetch(location, { method: 'PUT', body: data, headers: { 'content-type': 'application/octet-stream' } });
    if (put.status !== 201) throw new Error(`blob upload: ${put.status} ${await put.text()}`);
  }
  const index = JSON.parse(readFileSync(path.join(dir, 'index.json'), 'utf8')) as { manifests: { digest: string }[] };
  const manifest = readFileSync(path.join(dir, 'blobs/sha256', index.manifests[0]!.digest.slice(7)));
  const put = await fetch(`${base}/manifests/${tag}`, { method: 'PUT', body: manifest, headers: { 'content-type': 'application/vnd.oci.image.manifest.v1+json' } });
  if (put.status !== 201) throw new Error(`manifest upload: ${put.status} ${await put.text()}`);
}

describe('pulled from a real registry, a corrupt layer never reaches the cache', () => {
  let registry: Registry;
  beforeAll(async () => {
    registry = await startRegistry(path.join(work, 'registry'));
  }, 60_000);
  afterAll(async () => {
    await registry?.stop();
  });

  async function pull(repo: string): Promise<{ code: number | null; stderr: string; images: string[] }> {
    const cache = path.join(work, `cache-${++serial}`);
    const r = await run(process.execPath, [BERTH, 'pull', `docker://${registry.host}/${repo}`], { env: { ...process.env, BERTH_CACHE_DIR: cache } });
    let images: string[] = [];
    try {
      images = readdirSync(path.join(cache, 'images')).filter((n) => !n.endsWith('.lock'));
    } catch {
      // no images/ at all
    }
    return { code: r.code, stderr: r.stderr, images };
  }

  it('a zstd layer cut short under its own digest', async () => {
    const whole = compress(big, 'zstd');
    await pushRaw(registry, layout({ layers: [{ blob: whole.subarray(0, whole.length - 10_000), mediaType: MEDIA.zstd, diffId: sha256(big) }] }), 'lab/cut', '1');
    const r = await pull('lab/cut:1');
    expect(r.stderr).toMatch(/is not a valid zstd stream: premature end \(the stream is cut short\)/);
    expect(r.code).toBe(125);
    expect(r.images).toEqual([]);
  });

  it('a layer whose diff_id is not its content\'s', async () => {
    const other = await tarOf({ 'other.txt': 'not this one\n' });
    await pushRaw(registry, layout({ layers: [{ ...layerOf(big, 'gzip'), diffId: sha256(other) }] }), 'lab/diffid', '1');
    const r = await pull('lab/diffid:1');
    expect(r.stderr).toContain(`does not match its diff_id in the image config: expected ${sha256(other)}`);
    expect(r.code).toBe(125);
    expect(r.images).toEqual([]);
  });

  it('a config with a wrongly typed Env', async () => {
    await pushRaw(registry, layout({ layers: [layerOf(big, 'gzip')], config: (c) => ({ ...c, config: { Env: [null] } }) }), 'lab/env', '1');
    const r = await pull('lab/env:1');
    expect(r.stderr).toMatch(/image config sha256:[0-9a-f]{64} in docker:\/\/.*\/lab\/env:1 is malformed: config\.Env\[0\]: must be a string, not null/);
    expect(r.code).toBe(125);
    expect(r.images).toEqual([]);
  });

  it('a good image pulls', async () => {
    await pushRaw(registry, layout({ layers: [layerOf(big, 'zstd')] }), 'lab/good', '1');
    const r = await pull('lab/good:1');
    expect(r.stderr).toMatch(/pulled/);
    expect(r.code).toBe(0);
    expect(r.images.filter((n) => n.endsWith('.sqsh'))).toHaveLength(1);
  });
});

/**
 * A registry that drops connections: at once (`accept`), or after the headers and part of
 * the body of every manifest (`manifest`) or of every layer blob (`blob`), serving the rest
 * of a layout's image faithfully.
 */
async function droppingRegistry(mode: 'accept' | 'manifest' | 'blob', dir: string): Promise<{ host: string; close(): void }> {
  const index = JSON.parse(readFileSync(path.join(dir, 'index.json'), 'utf8')) as { manifests: { digest: string }[] };
  const manifestDigest = index.manifests[0]!.digest;
  const blob = (digest: string) => readFileSync(path.join(dir, 'blobs/sha256', digest.slice(7)));
  const layers = (JSON.parse(blob(manifestDigest).toString()) as { layers: { digest: string }[] }).layers.map((l) => l.digest);
  const server: Server | ReturnType<typeof createServer> = mode === 'accept'
    ? createServer((socket) => socket.destroy())
    : createHttpServer((req, res) => {
      const url = req.url ?? '';
      const digest = /sha256:[0-9a-f]{64}$/.exec(url)?.[0];
      const isManifest = url.includes('/manifests/');
      const data = isManifest ? blob(manifestDigest) : digest ? blob(digest) : Buffer.from('{}');
      res.writeHead(200, { 'content-length': data.length, 'content-type': isManifest ? 'application/vnd.oci.image.manifest.v1+json' : 'application/octet-stream' });
      const drop = (mode === 'manifest' && isManifest) || (mode === 'blob' && digest !== undefined && layers.includes(digest));
      if (!drop) return void res.end(data);
      res.write(data.subarray(0, data.length >> 1));
      setTimeout(() => res.destroy(), 20);
    });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { host: `127.0.0.1:${(server.address() as AddressInfo).port}`, close: () => server.close() };
}

describe('a registry that drops every connection', () => {
  it.each([
    ['as soon as it is made', 'accept' as const, /cannot reach 127\.0\.0\.1:\d+ for docker:\/\/127\.0\.0\.1:\d+\/lab\/x:1 \(the registry (closed|reset) the connection\)[\s\S]*hint: check the registry name, the network and any proxy/],
    ['in the middle of the manifest', 'manifest' as const, /127\.0\.0\.1:\d+ kept dropping the connection while sending the manifest 1 of docker:\/\/127\.0\.0\.1:\d+\/lab\/x:1 \(the registry closed the connection; berth retried with backoff\)[\s\S]*hint: check the network and any proxy/],
    ['in the middle of every layer', 'blob' as const, /127\.0\.0\.1:\d+ kept dropping the connection while sending layer sha256:[0-9a-f]{64} of docker:\/\/127\.0\.0\.1:\d+\/lab\/x:1 \(the registry (closed|reset) the connection; berth retried with backoff\)[\s\S]*hint: check the network and any proxy/],
  ])('%s: a BerthError naming the registry, and nothing cached', async (_name, mode, message) => {
    const registry = await droppingRegistry(mode, layout({ layers: [layerOf(big, 'gzip')] }));
    try {
      const cache = path.join(work, `cache-${++serial}`);
      const r = await run(process.execPath, [BERTH, 'pull', `docker://${registry.host}/lab/x:1`], { env: { ...process.env, BERTH_CACHE_DIR: cache } });
      expect(r.stderr).toMatch(message);
      expect(r.stderr).not.toMatch(/internal error|\n {4}at /);
      expect(r.code).toBe(125);
      let images: string[] = [];
      try {
        images = readdirSync(path.join(cache, 'images')).filter((n) => n.endsWith('.sqsh'));
      } catch {
        // no images/ at all
      }
      expect(images).toEqual([]);
    } finally {
      registry.close();
    }
  }, 60_000);
});
