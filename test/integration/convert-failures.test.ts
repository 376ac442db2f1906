// Bad input and bad luck: each failure names what went wrong and where, and leaves neither
// the image nor a temp file behind.
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BERTH, berth, cleanup, compress, makeLayout, run, sha256, tempDir } from '../helpers.js';

let work: string;
beforeAll(() => {
  work = tempDir('failures');
});
afterAll(() => cleanup(work));

/** A small tar with one file, made by GNU tar. */
async function tarOf(name: string, content: Buffer): Promise<Buffer> {
  const dir = path.join(work, `src-${Math.random().toString(36).slice(2)}`);
  mkdirSync(dir);
  writeFileSync(path.join(dir, name), content);
  const r = await run('bash', ['-c', `tar -C ${dir} -cf - ${name} | base64 -w0`]);
  return Buffer.from(r.stdout, 'base64');
}

/** Converts into an empty directory and returns the result and what the directory holds after. */
async function convertInto(source: string): Promise<{ code: number | null; stderr: string; left: string[] }> {
  const outDir = path.join(work, `out-${Math.random().toString(36).slice(2)}`);
  mkdirSync(outDir);
  const r = await berth('convert', source, '-o', path.join(outDir, 'image.sqsh'));
  return { code: r.code, stderr: r.stderr, left: readdirSync(outDir) };
}

describe('refused input', () => {
  it('a layer blob whose bytes do not match its digest (tampered)', async () => {
    const layout = makeLayout(path.join(work, 'tampered'), [await tarOf('f', Buffer.from('original'))], { compression: 'none' });
    const blob = path.join(layout.dir, 'blobs/sha256', layout.layerDigests[0]!.slice(7));
    const bytes = readFileSync(blob);
    bytes[600] = bytes[600]! ^ 0xff; // inside the file's data: still a valid tar
    writeFileSync(blob, bytes);
    const r = await convertInto(`oci:${layout.dir}`);
    expect(r.code).toBe(125);
    expect(r.stderr).toContain(`layer 1/1 (${layout.layerDigests[0]}) does not match its digest: expected ${layout.layerDigests[0]}, got sha256:`);
    expect(r.left).toEqual([]);
  });

  it('a corrupt (truncated) gzip stream', async () => {
    const tar = await tarOf('big', randomBytes(200_000));
    const gz = compress(tar, 'gzip');
    const layout = makeLayout(path.join(work, 'truncated'), [tar], { compression: 'gzip' });
    // Replace the blob with a truncated one under a matching digest, so only gzip can notice.
    const cut = gz.subarray(0, gz.length - 5000);
    rmSync(path.join(layout.dir, 'blobs/sha256', layout.layerDigests[0]!.slice(7)));
    writeFileSync(path.join(layout.dir, 'blobs/sha256', sha256(cut).slice(7)), cut);
    const manifestPath = path.join(layout.dir, 'blobs/sha256', layout.manifestDigest.slice(7));
    const manifest = readFileSync(manifestPath, 'utf8').replace(layout.layerDigests[0]!, sha256(cut)).replace(`"size":${gz.length}`, `"size":${cut.length}`);
    rmSync(manifestPath);
    writeFileSync(path.join(layout.dir, 'blobs/sha256', sha256(Buffer.from(manifest)).slice(7)), manifest);
    writeFileSync(path.join(layout.dir, 'index.json'), readFileSync(path.join(layout.dir, 'index.json'), 'utf8')
      .replace(layout.manifestDigest, sha256(Buffer.from(manifest))).replace(/"size":\d+/, `"size":${manifest.length}`));
    const r = await convertInto(`oci:${layout.dir}`);
    expect(r.code).toBe(125);
    expect(r.stderr).toMatch(/layer 1\/1 \(sha256:[0-9a-f]{64}\) is not a valid gzip stream: unexpected end of file \(the stream is cut short\)/);
    expect(r.left).toEqual([]);
  });

  it('a layer declared gzip whose bytes are zstd', async () => {
    const tar = await tarOf('f', Buffer.from('x'));
    const layout = makeLayout(path.join(work, 'mislabelled'), [tar], { compression: 'zstd' });
    const manifestPath = path.join(layout.dir, 'blobs/sha256', layout.manifestDigest.slice(7));
    const manifest = readFileSync(manifestPath, 'utf8').replace('tar+zstd', 'tar+gzip');
    writeFileSync(path.join(layout.dir, 'blobs/sha256', sha256(Buffer.from(manifest)).slice(7)), manifest);
    writeFileSync(path.join(layout.dir, 'index.json'), readFileSync(path.join(layout.dir, 'index.json'), 'utf8')
      .replace(layout.manifestDigest, sha256(Buffer.from(manifest))));
    const r = await convertInto(`oci:${layout.dir}`);
    expect(r.code).toBe(125);
    expect(r.stderr).toMatch(/declared as gzip \(application\/vnd\.oci\.image\.layer\.v1\.tar\+gzip\) but its bytes are zstd/);
    expect(r.left).toEqual([]);
  });

  it('a Docker schema 1 manifest, with what to do instead', async () => {
    const layout = makeLayout(path.join(work, 'schema1'), [await tarOf('f', Buffer.from('x'))]);
    const schema1 = Buffer.from(JSON.stringify({ schemaVersion: 1, name: 'old/app', tag: 'latest', fsLayers: [], history: [] }));
    writeFileSync(path.join(layout.dir, 'blobs/sha256', sha256(schema1).slice(7)), schema1);
    writeFileSync(path.join(layout.dir, 'index.json'), JSON.stringify({ schemaVersion: 2, manifests: [{
      mediaType: 'application/vnd.docker.distribution.manifest.v1+prettyjws', digest: sha256(schema1), size: schema1.length,
    }] }));
    const r = await convertInto(`oci:${layout.dir}`);
    expect(r.code).toBe(125);
    expect(r.stderr).toMatch(/is a Docker schema 1 manifest, which is deprecated and unsupported[\s\S]*schema 2 or OCI/);
  });

  it('a manifest or index that was tampered with', async () => {
    const layout = makeLayout(path.join(work, 'bad-manifest'), [await tarOf('f', Buffer.from('x'))]);
    const manifestPath = path.join(layout.dir, 'blobs/sha256', layout.manifestDigest.slice(7));
    writeFileSync(manifestPath, readFileSync(manifestPath, 'utf8').replace('"schemaVersion":2', '"schemaVersion":2 '));
    const r = await convertInto(`oci:${layout.dir}`);
    expect(r.code).toBe(125);
    expect(r.stderr).toContain(`blob ${layout.manifestDigest} in OCI layout ${layout.dir} does not match its digest`);
  });

  it.each([
    ['oci:/nonexistent/dir', /\/nonexistent\/dir does not exist/, /skopeo copy/],
    ['docker-archive:/nonexistent.tar', /\/nonexistent\.tar does not exist/, /docker save/],
    ['docker://127.0.0.1:1/nobody/here:1', /cannot reach 127\.0\.0\.1:1/, /check the registry name, the network/],
    ['busybox:latest', /does not name an image source/, /oci:DIR/],
  ])('an unusable source %s', async (source, message, hint) => {
    const r = await convertInto(source);
    expect(r.stderr).toMatch(message);
    expect(r.stderr).toMatch(hint);
    expect(r.code).toBeGreaterThan(0);
    expect(r.left).toEqual([]);
  });

  it('an existing output, unless --force', async () => {
    const layout = makeLayout(path.join(work, 'exists'), [await tarOf('f', Buffer.from('x'))]);
    const out = path.join(work, 'exists.sqsh');
    writeFileSync(out, 'precious');
    const r = await berth('convert', `oci:${layout.dir}`, '-o', out);
    expect(r.code).toBe(125);
    expect(r.stderr).toMatch(/already exists[\s\S]*--force/);
    expect(readFileSync(out, 'utf8')).toBe('precious');
    expect((await berth('convert', `oci:${layout.dir}`, '-o', out, '--force')).code).toBe(0);
    expect(readFileSync(out).readUInt32LE(0)).toBe(0x73717368);
  });

  it('inspect of a file that is not a berth image', async () => {
    const notSquash = path.join(work, 'plain.txt');
    writeFileSync(notSquash, 'hello'.repeat(100));
    const r = await berth('inspect', notSquash);
    expect(r.code).toBe(125);
    expect(r.stderr).toMatch(/is not an image berth can run[\s\S]*berth convert/);
  });
});

describe('interrupted or starved conversions leave nothing', () => {
  it('kill -9 in the middle of a conversion', async () => {
    const layout = makeLayout(path.join(work, 'slow'), [await tarOf('noise', randomBytes(48 << 20))], { compression: 'none' });
    const outDir = path.join(work, 'killed');
    mkdirSync(outDir);
    // xz on incompressible data with one thread: seconds of work, plenty of time to kill it.
    const child = spawn(process.execPath, [BERTH, 'convert', `oci:${layout.dir}`, '-o', path.join(outDir, 'image.sqsh'), '--compression', 'xz', '-j', '1'], { stdio: ['ignore', 'ignore', 'pipe'] });
    await new Promise<void>((resolve) => {
      child.stderr.on('data', (d: Buffer) => {
        if (d.toString().includes('merging layer')) setTimeout(resolve, 300);
      });
    });
    const helper = (await run('pgrep', ['-P', String(child.pid), 'tar2sqfs'])).stdout.trim();
    expect(helper).toMatch(/^\d+$/);
    child.kill('SIGKILL');
    await new Promise((resolve) => child.on('close', resolve));
    expect(readdirSync(outDir)).toEqual([]);
    // tar2sqfs sees its input end and gives up too: nothing of it survives.
    // A zombie counts as gone: PID 1 of some containers never reaps orphans.
    const alive = async () => {
      try {
        return !/^\d+ \(.*\) Z/.test(readFileSync(`/proc/${helper}/stat`, 'utf8'));
      } catch {
        return false;
      }
    };
    for (let i = 0; i < 100 && (await alive()); i++) await new Promise((r) => setTimeout(r, 100));
    expect(await alive()).toBe(false);
    expect(readdirSync(outDir)).toEqual([]);
  });

  it('a full disk', async () => {
    const layout = makeLayout(path.join(work, 'big'), [await tarOf('noise', randomBytes(2 << 20))], { compression: 'none' });
    // A 512 kB tmpfs in a user namespace of our own: no root needed, nothing else touched.
    const r = await run('unshare', ['-Urm', 'sh', '-c',
      `mkdir -p ${work}/small && mount -t tmpfs -o size=512k none ${work}/small && ${process.execPath} ${BERTH} convert oci:${layout.dir} -o ${work}/small/image.sqsh; echo "exit=$?"; ls -A ${work}/small`]);
    expect(r.stdout).toMatch(/^exit=125\n$/);
    expect(r.stderr).toMatch(/no space left writing .*small\/image\.sqsh[\s\S]*free some space/);
  });
});
