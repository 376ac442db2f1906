// Images made by real tools (umoci, skopeo) through every source berth reads, and the promises
// around them: the metadata travels in the image, the output is reproducible, indexes resolve
// by tag, digest and platform.
import { createHash } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { berth, cleanup, listImage, makeMultiPlatformLayout, run, tempDir, umociListing, type Listing } from '../helpers.js';

let work: string;
let layout: string;

async function sh(script: string): Promise<string> {
  const r = await run('bash', ['-euo', 'pipefail', '-c', script]);
  if (r.code !== 0) throw new Error(`${script}\n${r.stderr}`);
  return r.stdout;
}

/** A three-layer image built with umoci: files, then deletions and changes, then config. */
async function makeUmociImage(dir: string): Promise<void> {
  await sh(`
    cd ${dir}
    umoci init --layout oci && umoci new --image oci:app
    umoci unpack --rootless --image oci:app b
    mkdir -p b/rootfs/bin b/rootfs/etc b/rootfs/opt/tool/lib b/rootfs/data
    cp /bin/busybox b/rootfs/bin/busybox && ln -s busybox b/rootfs/bin/sh
    printf 'v1\\n' > b/rootfs/etc/version; printf 'old\\n' > b/rootfs/opt/tool/lib/old.so
    head -c 300000 /dev/urandom > b/rootfs/data/blob; ln b/rootfs/data/blob b/rootfs/data/blob.link
    umoci repack --refresh-bundle --image oci:app b
    rm -rf b/rootfs/opt/tool/lib b/rootfs/data/blob; printf 'v2\\n' > b/rootfs/etc/version
    mkdir -p b/rootfs/opt/tool/lib && printf 'new\\n' > b/rootfs/opt/tool/lib/new.so; chmod 4755 b/rootfs/bin/busybox
    umoci repack --refresh-bundle --image oci:app b
    umoci config --image oci:app --config.env PATH=/bin --config.env LANG=C.UTF-8 --config.entrypoint /bin/sh \\
      --config.cmd -c --config.cmd 'echo hi' --config.workingdir /data --config.user 1000:1000 \\
      --config.label org.opencontainers.image.title=app --config.volume /data
  `);
}

beforeAll(async () => {
  work = tempDir('sources');
  await makeUmociImage(work);
  layout = path.join(work, 'oci');
});
afterAll(() => cleanup(work));

async function convert(source: string, name: string, ...flags: string[]): Promise<{ out: string; listing: Listing; stderr: string }> {
  const out = path.join(work, `${name}.sqsh`);
  const r = await berth('convert', source, '-o', out, ...flags);
  expect(r.stderr, r.stderr).not.toMatch(/error/);
  expect(r.code).toBe(0);
  return { out, listing: await listImage(out), stderr: r.stderr };
}

function strip(listing: Listing): Record<string, object> {
  return Object.fromEntries(Object.entries(listing).filter(([p]) => p !== '').map(([p, e]) => [p, { type: e.type, mode: e.mode, sha256: e.sha256, link: e.link, group: e.group }]));
}

describe('an umoci-built multi-layer image', () => {
  it('converts to what umoci unpack --rootless gives', async () => {
    const { listing } = await convert(`oci:${layout}:app`, 'umoci');
    expect(strip(listing)).toEqual(strip(await umociListing(layout, 'app', work)));
    expect(listing['data/blob']).toBeUndefined();
    expect(listing['data/blob.link']!.size).toBe(300000);
    expect(listing['opt/tool/lib/old.so']).toBeUndefined();
    expect(listing['bin/busybox']!.mode).toBe(0o4755);
  });

  it('carries config, digests and source inside the image, shown by inspect', async () => {
    const { out } = await convert(`oci:${layout}:app`, 'meta');
    const index = JSON.parse(readFileSync(path.join(layout, 'index.json'), 'utf8')) as { manifests: { digest: string }[] };
    const r = await berth('inspect', out, '--json');
    expect(r.code).toBe(0);
    const info = JSON.parse(r.stdout) as { squashfs: { compression: string }; size: number; image: Record<string, unknown> & { config: Record<string, unknown> } };
    expect(info.squashfs.compression).toBe('zstd');
    expect(info.image.layers).toHaveLength(2);
    expect(info.image.manifestDigest).toBe(index.manifests[0]!.digest);
    expect(info.image.source).toBe(`oci:${layout}:app`);
    expect(info.image.config).toMatchObject({
      Env: ['PATH=/bin', 'LANG=C.UTF-8'], Entrypoint: ['/bin/sh'], Cmd: ['-c', 'echo hi'], WorkingDir: '/data', User: '1000:1000',
      Labels: { 'org.opencontainers.image.title': 'app' }, Volumes: ['/data'],
    });
    const text = await berth('inspect', out);
    expect(text.stdout).toMatch(/^Entrypoint:\s+\["\/bin\/sh"\]$/m);
    expect(text.stdout).toMatch(/^Manifest digest:\s+sha256:[0-9a-f]{64}$/m);
  });

  it('is byte-for-byte reproducible, with several compressor threads', async () => {
    const a = await convert(`oci:${layout}:app`, 'repro-a', '-j', '2');
    const b = await convert(`oci:${layout}:app`, 'repro-b', '-j', '2');
    const hash = (f: string) => createHash('sha256').update(readFileSync(f)).digest('hex');
    expect(hash(a.out)).toBe(hash(b.out));
  });

  it.each(['gzip', 'xz', 'lz4'])('writes %s squashfs images on request', async (compression) => {
    const { out, listing } = await convert(`oci:${layout}:app`, `comp-${compression}`, '--compression', compression);
    const info = JSON.parse((await berth('inspect', out, '--json')).stdout) as { squashfs: { compression: string } };
    expect(info.squashfs.compression).toBe(compression);
    expect(listing['etc/version']!.size).toBe(3);
  });
});

describe('docker-archive', () => {
  it('reads the classic docker save form (skopeo writes it) to the same tree', async () => {
    const tar = path.join(work, 'classic.tar');
    await sh(`skopeo copy --quiet oci:${layout}:app docker-archive:${tar}:example/app:v1`);
    const fromOci = await convert(`oci:${layout}:app`, 'classic-ref');
    const fromTar = await convert(`docker-archive:${tar}`, 'classic');
    expect(strip(fromTar.listing)).toEqual(strip(fromOci.listing));
    const named = await convert(`docker-archive:${tar}:example/app:v1`, 'classic-named');
    expect(strip(named.listing)).toEqual(strip(fromOci.listing));
    const info = JSON.parse((await berth('inspect', fromTar.out, '--json')).stdout) as { image: { manifestDigest: unknown; config: { Cmd: string[] } } };
    expect(info.image.manifestDigest).toBeNull();
    expect(info.image.config.Cmd).toEqual(['-c', 'echo hi']);
    const missing = await berth('convert', `docker-archive:${tar}:nope:v9`, '-o', path.join(work, 'nope.sqsh'));
    expect(missing.code).toBe(125);
    expect(missing.stderr).toMatch(/holds no image named 'nope:v9'[\s\S]*example\/app:v1/);
  });

  it('reads the OCI-layout form that Docker 25+ writes', async () => {
    const tar = path.join(work, 'ociform.tar');
    const index = JSON.parse(readFileSync(path.join(layout, 'index.json'), 'utf8')) as { manifests: { digest: string }[] };
    const staged = path.join(work, 'ociform');
    await sh(`cp -r ${layout} ${staged}`);
    writeFileSync(path.join(staged, 'manifest.json'), JSON.stringify([{ Config: 'blobs/sha256/x', RepoTags: ['app:latest'], Layers: [] }]));
    await sh(`tar -C ${staged} -cf ${tar} oci-layout index.json manifest.json blobs`);
    const fromTar = await convert(`docker-archive:${tar}`, 'ociform');
    const fromOci = await convert(`oci:${layout}:app`, 'ociform-ref');
    expect(strip(fromTar.listing)).toEqual(strip(fromOci.listing));
    const info = JSON.parse((await berth('inspect', fromTar.out, '--json')).stdout) as { image: { manifestDigest: string } };
    expect(info.image.manifestDigest).toBe(index.manifests[0]!.digest);
  });
});

describe('choosing an image from an index', () => {
  let multi: string;
  let digests: Record<string, string>;

  beforeAll(async () => {
    multi = path.join(work, 'multi');
    digests = await makeMultiPlatformLayout(multi, work);
  });

  async function archOf(source: string, ...flags: string[]): Promise<string> {
    const { listing, out } = await convert(source, `multi-${Math.random().toString(36).slice(2)}`, ...flags);
    const info = JSON.parse((await berth('inspect', out, '--json')).stdout) as { image: { platform: { architecture: string } } };
    expect(listing['arch.txt']!.sha256).toBe(createHash('sha256').update(info.image.platform.architecture).digest('hex'));
    return info.image.platform.architecture;
  }

  it('picks the host platform from a tagged index, or the one --platform names', async () => {
    expect(await archOf(`oci:${multi}:multi`)).toBe(process.arch === 'arm64' ? 'arm64' : 'amd64');
    expect(await archOf(`oci:${multi}:multi`, '--platform', 'linux/amd64')).toBe('amd64');
    expect(await archOf(`oci:${multi}:multi`, '--platform', 'linux/arm64')).toBe('arm64');
    expect(await archOf(`oci:${multi}:armonly`)).toBe('arm64');
  });

  it('picks by digest', async () => {
    expect(await archOf(`oci:${multi}@${digests['arm64']}`)).toBe('arm64');
  });

  it('explains a missing platform or tag with what there is', async () => {
    const noPlatform = await berth('convert', `oci:${multi}:multi`, '--platform', 'linux/s390x', '-o', path.join(work, 'x.sqsh'));
    expect(noPlatform.code).toBe(125);
    expect(noPlatform.stderr).toMatch(/no image for linux\/s390x[\s\S]*linux\/amd64, linux\/arm64\/v8/);
    const noTag = await berth('convert', `oci:${multi}`, '-o', path.join(work, 'x.sqsh'));
    expect(noTag.code).toBe(125);
    expect(noTag.stderr).toMatch(/no image tagged 'latest'[\s\S]*multi, armonly/);
  });
});
