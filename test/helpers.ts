// Shared by the tests: running berth and real tools, building OCI layouts from hand-made
// layers, and listing trees with the independent Python lister.
import { spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { createServer } from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { gzipSync } from 'node:zlib';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
export const BERTH = path.join(ROOT, 'dist', 'berth.cjs');
export const PYTHON = '/usr/bin/python3';

export interface Ran {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

export function run(cmd: string, args: string[], opts: { input?: string | Buffer; cwd?: string; env?: NodeJS.ProcessEnv } = {}): Promise<Ran> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { cwd: opts.cwd, env: opts.env ?? process.env, stdio: ['pipe', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (d: Buffer) => out.push(d));
    child.stderr.on('data', (d: Buffer) => err.push(d));
    child.on('error', reject);
    child.on('close', (code, signal) => resolve({
      code, signal, stdout: Buffer.concat(out).toString('utf8'), stderr: Buffer.concat(err).toString('utf8'),
    }));
    child.stdin.end(opts.input);
  });
}

/** berth as users start it: the file itself, whose launcher keeps Node from reading berth's options (#13). */
export function berth(...args: string[]): Promise<Ran> {
  return run(BERTH, args);
}

/** A TCP port on 127.0.0.1 that nobody listens on now (for a server a test starts). */
export function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = createServer().listen(0, '127.0.0.1', () => {
      const { port } = s.address() as { port: number };
      s.close(() => resolve(port));
    });
  });
}

export function tempDir(prefix: string): string {
  return mkdtempSync(path.join(tmpdir(), `berth-test-${prefix}-`));
}

export function cleanup(dir: string): void {
  rmSync(dir, { recursive: true, force: true });
}

export function sha256(data: Buffer): string {
  return `sha256:${createHash('sha256').update(data).digest('hex')}`;
}

/** The corpus of hand-made layers, written once per test file. */
export function makeCorpus(dir: string): string {
  const out = path.join(dir, 'corpus');
  const r = spawnSync(PYTHON, [path.join(ROOT, 'test/fixtures/layers.py'), out], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`layers.py failed: ${r.stderr}`);
  return out;
}

export type LayerCompression = 'gzip' | 'zstd' | 'none';

export function compress(tar: Buffer, how: LayerCompression): Buffer {
  if (how === 'gzip') return gzipSync(tar);
  if (how === 'zstd') {
    const r = spawnSync('zstd', ['-cq'], { input: tar, maxBuffer: 1 << 30 });
    if (r.status !== 0) throw new Error('zstd failed');
    return r.stdout;
  }
  return tar;
}

const LAYER_MEDIA: Record<LayerCompression, string> = {
  gzip: 'application/vnd.oci.image.layer.v1.tar+gzip',
  zstd: 'application/vnd.oci.image.layer.v1.tar+zstd',
  none: 'application/vnd.oci.image.layer.v1.tar',
};

export interface Layout {
  dir: string;
  manifestDigest: string;
  configDigest: string;
  layerDigests: string[];
}

function writeBlob(dir: string, data: Buffer): string {
  const digest = sha256(data);
  mkdirSync(path.join(dir, 'blobs', 'sha256'), { recursive: true });
  writeFileSync(path.join(dir, 'blobs', 'sha256', digest.slice(7)), data);
  return digest;
}

/** Writes an OCI layout holding one image made of these tar layers (base first). */
export function makeLayout(
  dir: string,
  layers: Buffer[],
  opts: { compression?: LayerCompression; tag?: string; config?: object; architecture?: string; extraManifests?: object[] } = {},
): Layout {
  const how = opts.compression ?? 'gzip';
  mkdirSync(dir, { recursive: true });
  writeFileSync(path.join(dir, 'oci-layout'), '{"imageLayoutVersion":"1.0.0"}');
  const descriptors = layers.map((tar) => {
    const blob = compress(tar, how);
    return { mediaType: LAYER_MEDIA[how], digest: writeBlob(dir, blob), size: blob.length, diffId: sha256(tar) };
  });
  const config = Buffer.from(JSON.stringify({
    architecture: opts.architecture ?? 'amd64', os: 'linux', created: '2026-01-02T03:04:05Z',
    config: opts.config ?? { Env: ['PATH=/usr/bin:/bin'], Cmd: ['/bin/sh'] },
    rootfs: { type: 'layers', diff_ids: descriptors.map((d) => d.diffId) },
  }));
  const configDigest = writeBlob(dir, config);
  const manifest = Buffer.from(JSON.stringify({
    schemaVersion: 2, mediaType: 'application/vnd.oci.image.manifest.v1+json',
    config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: configDigest, size: config.length },
    layers: descriptors.map(({ mediaType, digest, size }) => ({ mediaType, digest, size })),
  }));
  const manifestDigest = writeBlob(dir, manifest);
  writeFileSync(path.join(dir, 'index.json'), JSON.stringify({
    schemaVersion: 2,
    manifests: [
      {
        mediaType: 'application/vnd.oci.image.manifest.v1+json', digest: manifestDigest, size: manifest.length,
        annotations: { 'org.opencontainers.image.ref.name': opts.tag ?? 'latest' },
        platform: { os: 'linux', architecture: opts.architecture ?? 'amd64' },
      },
      ...(opts.extraManifests ?? []),
    ],
  }));
  return { dir, manifestDigest, configDigest, layerDigests: descriptors.map((d) => d.digest) };
}

export function readLayers(caseDir: string): Buffer[] {
  const layers: Buffer[] = [];
  for (let i = 1; ; i++) {
    try {
      layers.push(readFileSync(path.join(caseDir, `layer${i}.tar`)));
    } catch {
      return layers;
    }
  }
}

export interface ListEntry {
  type: string;
  mode: number;
  uid: number;
  gid: number;
  mtime: number;
  size?: number;
  sha256?: string;
  link?: string;
  dev?: [number, number];
  xattrs?: Record<string, string>;
  group?: string[];
}
export type Listing = Record<string, ListEntry>;

/** Lists a squashfs image through sqfs2tar and the Python lister (berth's /.berth left out). */
export async function listImage(image: string): Promise<Listing> {
  const tar = spawnSync('sqfs2tar', [image], { maxBuffer: 1 << 30 });
  if (tar.status !== 0) throw new Error(`sqfs2tar failed: ${tar.stderr.toString()}`);
  const listing = await run(PYTHON, [path.join(ROOT, 'test/fixtures/listing.py'), 'tar'], { input: tar.stdout });
  if (listing.code !== 0) throw new Error(`listing.py failed: ${listing.stderr}`);
  const all = JSON.parse(listing.stdout) as Listing;
  for (const key of Object.keys(all)) if (key === '.berth' || key.startsWith('.berth/')) delete all[key];
  return all;
}

export async function listDir(root: string): Promise<Listing> {
  const r = await run(PYTHON, [path.join(ROOT, 'test/fixtures/listing.py'), 'dir', root]);
  if (r.code !== 0) throw new Error(`listing.py failed: ${r.stderr}`);
  return JSON.parse(r.stdout) as Listing;
}

/** umoci's answer for the same image: `umoci unpack --rootless`, listed. */
export async function umociListing(layoutDir: string, tag: string, work: string): Promise<Listing> {
  const bundle = path.join(work, `bundle-${Math.random().toString(36).slice(2)}`);
  const r = await run('umoci', ['unpack', '--rootless', '--image', `${layoutDir}:${tag}`, bundle]);
  if (r.code !== 0) throw new Error(`umoci unpack failed: ${r.stderr}`);
  try {
    return await listDir(path.join(bundle, 'rootfs'));
  } finally {
    spawnSync('chmod', ['-R', 'u+rwX', bundle]);
    cleanup(bundle);
  }
}

/** A layer with one file, arch.txt, holding the architecture's name (made by GNU tar). */
export function archLayer(arch: string, work: string): Buffer {
  const src = path.join(work, `src-${arch}`);
  mkdirSync(src, { recursive: true });
  writeFileSync(path.join(src, 'arch.txt'), arch);
  return spawnSync('tar', ['-C', src, '-cf', '-', 'arch.txt'], { maxBuffer: 1 << 20 }).stdout;
}

/**
 * An OCI layout with tag "multi" on an index over linux/amd64 and linux/arm64/v8 images (each
 * with arch.txt), and tag "armonly" on the arm64 manifest. Returns the manifests' digests.
 */
export async function makeMultiPlatformLayout(dir: string, work: string): Promise<Record<string, string>> {
  const amd = makeLayout(dir, [archLayer('amd64', work)], { architecture: 'amd64' });
  const arm = makeLayout(path.join(work, 'arm-only'), [archLayer('arm64', work)], { architecture: 'arm64' });
  spawnSync('sh', ['-c', `cp -n ${arm.dir}/blobs/sha256/* ${dir}/blobs/sha256/`]);
  const descriptor = (digest: string, extra: object) => ({
    mediaType: 'application/vnd.oci.image.manifest.v1+json', digest,
    size: readFileSync(path.join(dir, 'blobs/sha256', digest.slice(7))).length, ...extra,
  });
  const inner = Buffer.from(JSON.stringify({
    schemaVersion: 2, mediaType: 'application/vnd.oci.image.index.v1+json',
    manifests: [
      descriptor(amd.manifestDigest, { platform: { os: 'linux', architecture: 'amd64' } }),
      descriptor(arm.manifestDigest, { platform: { os: 'linux', architecture: 'arm64', variant: 'v8' } }),
    ],
  }));
  const innerDigest = sha256(inner);
  writeFileSync(path.join(dir, 'blobs/sha256', innerDigest.slice(7)), inner);
  writeFileSync(path.join(dir, 'index.json'), JSON.stringify({
    schemaVersion: 2,
    manifests: [
      { mediaType: 'application/vnd.oci.image.index.v1+json', digest: innerDigest, size: inner.length, annotations: { 'org.opencontainers.image.ref.name': 'multi' } },
      descriptor(arm.manifestDigest, { annotations: { 'org.opencontainers.image.ref.name': 'armonly' } }),
    ],
  }));
  return { amd64: amd.manifestDigest, arm64: arm.manifestDigest, index: innerDigest };
}
