// Hostile and unusual layers (issue #14), made by test/fixtures/hostile_tars.py: malformed
// numbers and records are refused naming the entry, and quickly (a negative PAX size used to
// spin forever); what Linux cannot hold is refused at conversion; ACLs, sparse files and other
// valid layers convert to the right tree; layers merged through symlinks follow overlay2's rule,
// so deleted content never comes back; a signal ends berth within a second, leaving nothing;
// a disk that fills exactly at the metadata trailer gets the disk-full message.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, openSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  BERTH, PYTHON, ROOT, berth, cleanup, listImage, makeLayout, readLayers, run, sha256, tempDir, umociListing, type Listing,
} from '../helpers.js';

let work: string;
let corpus: string;
beforeAll(() => {
  work = tempDir('hostile');
  corpus = path.join(work, 'corpus');
  const r = spawnSync(PYTHON, [path.join(ROOT, 'test/fixtures/hostile_tars.py'), corpus], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`hostile_tars.py failed: ${r.stderr}`);
});
afterAll(() => cleanup(work));

let serial = 0;
/** Converts a case into a directory of its own; `left` is what that directory holds after. */
async function convertCase(name: string) {
  const n = ++serial;
  const layout = makeLayout(path.join(work, `${name}-${n}-oci`), readLayers(path.join(corpus, name)), { compression: 'none' });
  const outDir = path.join(work, `${name}-${n}-out`);
  mkdirSync(outDir);
  const started = Date.now();
  const r = await berth('convert', `oci:${layout.dir}`, '-o', path.join(outDir, 'image.sqsh'));
  return { r, seconds: (Date.now() - started) / 1000, out: path.join(outDir, 'image.sqsh'), left: readdirSync(outDir), layoutDir: layout.dir };
}

async function converted(name: string): Promise<{ listing: Listing; stderr: string; layoutDir: string }> {
  const { r, out, layoutDir } = await convertCase(name);
  expect(r.stderr).not.toMatch(/error/);
  expect(r.code).toBe(0);
  return { listing: await listImage(out), stderr: r.stderr, layoutDir };
}

/** What umoci can express rootless: type, permission bits, content, links, user xattrs. */
function comparable(listing: Listing): Record<string, object> {
  return Object.fromEntries(Object.entries(listing).filter(([p]) => p !== '').map(([p, e]) => [p, {
    type: e.type, mode: e.mode, size: e.size, sha256: e.sha256, link: e.link,
    xattrs: Object.fromEntries(Object.entries(e.xattrs ?? {}).filter(([k]) => k.startsWith('user.') && k !== 'user.rootlesscontainers')),
  }]));
}

const CORRUPT = /hint: the layer is corrupt; copy the image again/;
const NOT_LINUX = /hint: no Linux file system can hold this entry/;
const DIR_LINK = /hint: the layer was written on a system that allows such links .* rebuild the image with a symlink or a copy/;
const LOST_TARGET = /hint: a hard link can only name a file of the layers below it/;
const L1 = String.raw`layer 1/1 \(sha256:[0-9a-f]{64}\): `;

describe('refused, naming the entry, at once, with nothing written', () => {
  it.each<[string, RegExp, RegExp]>([
    ['pax-size-negative', new RegExp(`${L1}PAX size='-1' of entry 'f' \\(at byte 1024\\) is not a decimal number`), CORRUPT],
    ['pax-size-junk', /PAX size='12abc' of entry 'f' \(at byte 1024\) is not a decimal number/, CORRUPT],
    ['pax-size-hex', /PAX size='0x10' of entry 'f' \(at byte 1024\) is not a decimal number/, CORRUPT],
    ['pax-size-huge', /PAX size=99999999999999999999 of entry 'f' \(at byte 1024\) is out of range/, CORRUPT],
    ['pax-uid-negative', /PAX uid='-1' of entry 'f' \(at byte 1024\) is not a decimal number/, CORRUPT],
    ['pax-uid-huge', new RegExp(`${L1}entry 'f' has uid 4294967295; Linux allows at most 4294967294`), NOT_LINUX],
    ['pax-gid-exponent', /PAX gid='1e3' of entry 'f' \(at byte 1024\) is not a decimal number/, CORRUPT],
    ['pax-mtime-junk', /PAX mtime='yesterday' of entry 'f' \(at byte 1024\) is not a decimal number/, CORRUPT],
    ['pax-path-empty', /PAX path of the entry at byte 1024 is empty/, CORRUPT],
    ['pax-path-nul', /PAX path of the entry at byte 1024 contains a NUL byte/, CORRUPT],
    ['pax-linkpath-empty', /PAX linkpath of entry 'l' \(at byte 1024\) is empty/, CORRUPT],
    ['pax-record-too-long', /malformed PAX record at offset 0 of the extended header at byte 0 \(its length is wrong/, CORRUPT],
    ['pax-record-too-short', /malformed PAX record at offset 0 of the extended header at byte 0 \(its length is wrong/, CORRUPT],
    ['pax-record-no-key', /malformed PAX record at offset 0 of the extended header at byte 0 \(no key=value\)/, CORRUPT],
    ['pax-record-garbage', /malformed PAX record at offset 9 of the extended header at byte 0/, CORRUPT],
    ['libarchive-bad-escape', /malformed LIBARCHIVE\.xattr name 'user\.%zz' on entry 'f' \(at byte 1024\): bad %-escape/, CORRUPT],
    ['libarchive-bad-base64', /malformed LIBARCHIVE\.xattr\.user\.x on entry 'f' \(at byte 1024\): the value is not base64/, CORRUPT],
    ['ustar-size-spaces', /the size field of the entry at byte 0 is not an octal number: '12 34'/, CORRUPT],
    ['ustar-size-base256-negative', /the size field of the entry at byte 0 is negative/, CORRUPT],
    ['ustar-uid-base256-huge', /entry 'f' has uid 4294967296; Linux allows at most 4294967294/, NOT_LINUX],
    ['ustar-mode-junk', /the mode field of entry 'f' \(at byte 0\) is not an octal number: 'rwxr-x'/, CORRUPT],
    ['lone-zero-block', /a lone zero block at byte 1024 is followed by more entries: the layer is corrupt/, CORRUPT],
    ['name-max', new RegExp(`${L1}entry 'd/n{98}…n{40}' has a name component of 256 bytes \\(its name\\); Linux allows at most 255 \\(NAME_MAX\\)`), NOT_LINUX],
    ['path-max', /entry 'p{100}…q{40}' is 4116 bytes long as a path \(its name\); Linux paths are at most 4095 bytes \(PATH_MAX\)/, NOT_LINUX],
    ['symlink-max', /entry 'l' is a symlink to a target of 4096 bytes; Linux symlinks hold at most 4095 \(PATH_MAX\)/, NOT_LINUX],
    ['symlink-empty', /entry 'l' \(at byte 0\) is a link with an empty target/, CORRUPT],
    ['device-major', /entry 'dev\/big' has device major 4096; Linux allows at most 4095/, NOT_LINUX],
    ['xattr-name-long', /entry 'f' has an extended attribute name of 305 bytes; Linux allows at most 255/, NOT_LINUX],
    ['file-with-slash', /entry 'x\/' \(at byte 0\) is not a directory but its name ends in '\/'/, CORRUPT],
    ['root-as-file', /entry '\.' names the image root but is not a directory/, /the image is broken/],
    ['hardlink-to-dir', /hard link 'h' in layer 1 points to 'd', a directory in layer 1\/1 \(sha256:[0-9a-f]{64}\), and Linux cannot hard-link directories/, DIR_LINK],
    ['hardlink-to-dir-below', /hard link 'h' in layer 2 points to 'd', a directory in layer 1\/2 \(sha256:[0-9a-f]{64}\), and Linux cannot hard-link directories/, DIR_LINK],
    ['hardlink-to-root', /hard link 'h' in layer 1 points to '\/', a directory in layer 1\/1/, DIR_LINK],
    ['sparse-overlap', /the sparse map of entry 's' \(at byte 1024\) is invalid: segments overlap, are out of order or pass its size of 100 bytes/, CORRUPT],
    ['sparse-past-end', /the sparse map of entry 's' \(at byte 1024\) is invalid/, CORRUPT],
    ['sparse-sum', /the sparse map of entry 's' \(at byte 1024\) describes 10 bytes of data but 20 are stored/, CORRUPT],
    ['sparse-version', /entry 's' \(at byte 1024\) is a GNU sparse file of unknown format 2\.0/, CORRUPT],
    // Valid, but more than tar2sqfs takes: refused with that reason rather than "likely a berth bug".
    ['sparse-too-many', /entry 's' is a sparse file of 65537 segments; squashfs-tools-ng's tar2sqfs takes at most 65536/, /store the file without --sparse/],
    ['xattrs-too-big', /entry 'fat' has 71692 bytes of extended attributes \(names and values\); squashfs-tools-ng's tar2sqfs takes at most 64 KiB/, /remove some extended attributes/],
    // Deleted content does not come back through a hard link either.
    ['link-to-whited-out', /hard link 'h' in layer 3 points to 'f', which layer 2 removed/, LOST_TARGET],
    ['link-through-symlink', /hard link 'h' in layer 3 points to 'z\/a', which layer 2 removed/, LOST_TARGET],
  ])('%s', async (name, message, hint) => {
    const { r, seconds, left } = await convertCase(name);
    expect(r.stderr).toMatch(message);
    expect(r.stderr).toMatch(hint);
    expect(r.stderr).not.toMatch(/internal error|likely a berth bug|\n\s+at /);
    expect(r.code).toBe(125);
    expect(left).toEqual([]);
    expect(seconds).toBeLessThan(10);
  });
});

describe('valid layers that were refused or misread, converted faithfully', () => {
  it.each(['0.0', '0.1', '1.0', 'old'])('a GNU sparse file (format %s), its holes kept out of the stream', async (version) => {
    const [sha, size] = readFileSync(path.join(corpus, 'sparse.sha256'), 'utf8').trim().split(' ');
    const { listing, layoutDir } = await converted(`sparse-${version}`);
    expect(listing['sparse']).toMatchObject({ type: 'file', size: Number(size), sha256: sha, mode: 0o644 });
    // umoci refuses the old GNU type 'S' ("unknown typeflag"); it reads the PAX formats.
    if (version !== 'old') expect(comparable(listing)).toEqual(comparable(await umociListing(layoutDir, 'latest', work)));
  });

  it('POSIX ACLs (text, as GNU tar and libarchive write them): dropped, group bits cut to group:: AND mask', async () => {
    const { listing, stderr } = await converted('acl-text');
    expect(listing['shared']).toMatchObject({ type: 'file', mode: 0o755 }); // rwxrwxr-x with group::rwx, mask::r-x
    expect(listing['dir']).toMatchObject({ type: 'dir', mode: 0o750 });
    expect(stderr).toMatch(/warning: layer 1\/1 \(sha256:[0-9a-f]{64}\): 2 entries carry POSIX ACLs \(first: 'shared'\), which a squashfs image cannot store: dropped, with group permission bits reduced/);
  });

  it.each<[string, string, number]>([['acl-binary', 'bin', 0o640], ['acl-libarchive', 'la', 0o705]])(
    'POSIX ACLs as system.posix_acl_access xattrs (%s): no system.* xattr left, nobody gains access',
    async (name, file, mode) => {
      const { listing, stderr } = await converted(name);
      expect(listing[file]!.mode).toBe(mode);
      expect(Object.keys(listing[file]!.xattrs ?? {}).filter((k) => k.startsWith('system.'))).toEqual([]);
      expect(stderr).toMatch(/1 entry carries a POSIX ACL/);
      if (name === 'acl-binary') expect(listing[file]!.xattrs).toEqual({ 'user.keep': Buffer.from('yes').toString('hex') });
    },
  );

  it('extended attributes squashfs cannot store (another OS\'s, system.*): dropped with a warning, user.* kept', async () => {
    const { listing, stderr } = await converted('xattrs-elsewhere');
    expect(listing['mac']!.xattrs).toEqual({ 'user.stays': Buffer.from('1').toString('hex') });
    expect(stderr).toMatch(/dropped 1 extended attribute that a squashfs image cannot store .*first: com\.apple\.quarantine on 'mac'/);
  });

  it('LIBARCHIVE.xattr with a %-encoded name and unpadded base64', async () => {
    const { listing } = await converted('libarchive-xattr');
    expect(listing['x']!.xattrs).toEqual({ 'user.caf\u00e9': Buffer.from('\x00\x01value', 'latin1').toString('hex') });
  });

  it('a pre-POSIX directory (type NUL, name ending in /), as Go and Python read it', async () => {
    const { listing, layoutDir } = await converted('v7-directory');
    expect(listing['old']).toMatchObject({ type: 'dir', mode: 0o700 });
    expect(comparable(listing)).toEqual(comparable(await umociListing(layoutDir, 'latest', work)));
  });

  it('a symlink with a size has no body (as for Docker and umoci): the next block is an entry', async () => {
    const { listing, layoutDir } = await converted('sized-symlink');
    expect(Object.keys(listing).sort()).toEqual(['after', 'l', 'smuggled']);
    expect(comparable(listing)).toEqual(comparable(await umociListing(layoutDir, 'latest', work)));
  });

  it('names, paths and symlink targets at Linux\'s limits (255, 4095 with its slash, 4095)', async () => {
    const { listing } = await converted('linux-limits-ok');
    expect(listing[`d/${'n'.repeat(255)}`]!.size).toBe(3);
    expect(listing[`${`${'p'.repeat(200)}/`.repeat(20)}${'q'.repeat(74)}`]!.size).toBe(4);
    expect(listing['l']!.link).toBe('t'.repeat(4095));
  });

  it('fractional PAX times, global headers, and an empty value that deletes a global one', async () => {
    const { listing } = await converted('pax-fraction-and-globals');
    expect(listing['f']!.mtime).toBe(1234567890);
    expect(listing['g']!.mtime).toBe(1700000000);
  });
});

describe('layers merged through symlinks: overlay2\'s rule, and deleted content never comes back', () => {
  // The rule (src/convert/merge-tree.ts): looking down from the top, the first layer with an entry
  // at a path decides it; a directory merges with lower directories only down to the first layer
  // where the path is not one. umoci instead writes through the symlink; it never shows z/a either.
  it.each<[string, Record<string, string>, boolean]>([
    ['through-symlink', { elsewhere: 'dir', z: 'dir', 'z/x': 'file' }, true],
    ['through-symlink-deep', { z: 'dir', 'z/sub': 'dir', 'z/sub/x': 'file' }, true],
    ['through-symlink-explicit', { z: 'dir', 'z/x': 'file' }, true],
    ['through-file', { z: 'dir', 'z/x': 'file' }, false], // umoci: "mkdir parent: not a directory"
    ['through-whiteout', { z: 'dir', 'z/x': 'file' }, true],
    ['in-layer-symlink', { z: 'dir', 'z/x': 'file' }, true],
    ['in-layer-symlink-after', { z: 'dir', 'z/x': 'file' }, true],
  ])('%s: the upper directory holds only what the upper layer wrote', async (name, tree, umociUnpacks) => {
    const { listing, layoutDir } = await converted(name);
    expect(Object.fromEntries(Object.entries(listing).filter(([p]) => p !== '').map(([p, e]) => [p, e.type]))).toEqual(tree);
    if (!umociUnpacks) return;
    const theirs = await umociListing(layoutDir, 'latest', work);
    expect(Object.keys(theirs).filter((p) => /^z\/(a|b|foo|sub\/a)$/.test(p))).toEqual([]);
  });

  it('an explicit upper directory keeps its own metadata', async () => {
    expect((await converted('through-symlink-explicit')).listing['z']!.mode).toBe(0o750);
  });

  it('a whiteout under a lower symlink makes a directory there (the layer\'s own), which hides the symlink', async () => {
    const { listing } = await converted('whiteout-under-symlink');
    expect(listing['link']).toMatchObject({ type: 'dir', mode: 0o755 });
    expect(Object.keys(listing).filter((p) => p.startsWith('link/'))).toEqual([]);
    expect(listing['real/f']!.type).toBe('file');
  });

  it('an opaque marker alone leaves its directory, empty, as umoci does', async () => {
    const { listing, layoutDir } = await converted('opaque-only');
    expect(listing['o']).toMatchObject({ type: 'dir', mode: 0o700 });
    expect(listing['o/x']).toBeUndefined();
    expect(comparable(listing)).toEqual(comparable(await umociListing(layoutDir, 'latest', work)));
  });

  it('a whiteout in a directory no layer has: an empty directory, as overlay2 shows it (umoci makes none)', async () => {
    const { listing } = await converted('whiteout-nowhere');
    expect(listing['ghost']).toMatchObject({ type: 'dir', mode: 0o755 });
    expect(listing['keep']!.type).toBe('file');
  });
});

function closed(child: ChildProcess): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
  return new Promise((resolve) => child.on('close', (code, signal) => resolve({ code, signal })));
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function gone(pid: string): boolean {
  try {
    return /^\d+ \(.*\) Z/.test(readFileSync(`/proc/${pid}/stat`, 'utf8')); // a zombie counts as gone
  } catch {
    return true;
  }
}

describe('signals: answered within a second, nothing left behind', () => {
  /** An OCI layout whose index.json is a FIFO: berth blocks reading it. */
  function stuckLayout(name: string): string {
    const dir = path.join(work, name);
    mkdirSync(dir);
    writeFileSync(path.join(dir, 'oci-layout'), '{"imageLayoutVersion":"1.0.0"}');
    expect(spawnSync('mkfifo', [path.join(dir, 'index.json')]).status).toBe(0);
    return dir;
  }

  it.each<[NodeJS.Signals, boolean]>([['SIGTERM', false], ['SIGINT', false], ['SIGTERM', true]])(
    '%s to berth stuck on a FIFO (a writer that never sends: %s)', async (signal, writer) => {
      const dir = stuckLayout(`fifo-${signal}-${writer}`);
      const holder = writer ? openSync(path.join(dir, 'index.json'), 'r+') : undefined; // open, silent
      const outDir = path.join(work, `fifo-out-${signal}-${writer}`);
      mkdirSync(outDir);
      try {
        const child = spawn(process.execPath, [BERTH, 'convert', `oci:${dir}`, '-o', path.join(outDir, 'image.sqsh')], { stdio: 'ignore' });
        const done = closed(child);
        await sleep(800);
        expect(child.exitCode).toBeNull(); // stuck, as promised
        const t0 = Date.now();
        child.kill(signal);
        const end = await done;
        expect(Date.now() - t0).toBeLessThan(1000);
        expect(end.signal).toBe(signal); // what a shell reports as 128+N
        expect(readdirSync(outDir)).toEqual([]);
      } finally {
        if (holder !== undefined) closeSync(holder);
      }
    });

  it.each<NodeJS.Signals>(['SIGTERM', 'SIGINT'])('%s in the middle of a conversion: tar2sqfs stopped, no output, no temp file', async (signal) => {
    const noise = path.join(work, `noise-${signal}`);
    mkdirSync(noise);
    spawnSync('sh', ['-c', `head -c ${48 << 20} /dev/urandom > ${noise}/noise && tar -C ${noise} -cf ${noise}.tar noise`]);
    const layout = makeLayout(path.join(work, `slow-${signal}`), [readFileSync(`${noise}.tar`)], { compression: 'none' });
    const outDir = path.join(work, `slow-out-${signal}`);
    mkdirSync(outDir);
    // xz on incompressible data with one thread: seconds of work, plenty of time to interrupt it.
    const child = spawn(process.execPath, [BERTH, 'convert', `oci:${layout.dir}`, '-o', path.join(outDir, 'image.sqsh'), '--compression', 'xz', '-j', '1'], { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    const done = closed(child);
    await new Promise<void>((resolve) => {
      child.stderr!.on('data', (d: Buffer) => {
        stderr += d.toString();
        if (stderr.includes('merging layer')) setTimeout(resolve, 300);
      });
    });
    const helper = (await run('pgrep', ['-P', String(child.pid), 'tar2sqfs'])).stdout.trim();
    expect(helper).toMatch(/^\d+$/);
    const t0 = Date.now();
    child.kill(signal);
    const end = await done;
    expect(Date.now() - t0).toBeLessThan(1000);
    expect(end.signal).toBe(signal);
    expect(stderr).toContain(`berth: stopped by ${signal}; nothing was written`);
    for (let i = 0; i < 10 && !gone(helper); i++) await sleep(100);
    expect(gone(helper)).toBe(true);
    expect(readdirSync(outDir)).toEqual([]);
  });
});

/**
 * A registry on loopback (plain http) serving one image whose layer stops halfway: the bytes
 * stop coming but the connection stays open. `stalled` resolves once half the layer is out.
 */
async function stallingRegistry(): Promise<{ host: string; stalled: Promise<void>; close(): void }> {
  const layer = readFileSync(path.join(corpus, 'v7-directory', 'layer1.tar'));
  const config = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', config: {}, rootfs: { type: 'layers', diff_ids: [sha256(layer)] } }));
  const manifest = Buffer.from(JSON.stringify({
    schemaVersion: 2, mediaType: 'application/vnd.oci.image.manifest.v1+json',
    config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: sha256(config), size: config.length },
    layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar', digest: sha256(layer), size: layer.length }],
  }));
  let stalledNow = () => {};
  const stalled = new Promise<void>((resolve) => { stalledNow = resolve; });
  const server: Server = createServer((req, res) => {
    const url = req.url ?? '';
    if (url.includes('/manifests/')) {
      res.writeHead(200, { 'content-type': 'application/vnd.oci.image.manifest.v1+json', 'docker-content-digest': sha256(manifest) });
      res.end(manifest);
    } else if (url.endsWith(sha256(config))) {
      res.writeHead(200, { 'content-length': config.length }).end(config);
    } else if (url.endsWith(sha256(layer))) {
      res.writeHead(200, { 'content-length': layer.length });
      res.write(layer.subarray(0, layer.length / 2), () => stalledNow()); // and nothing more
    } else res.writeHead(url === '/v2/' ? 200 : 404).end();
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { host: `127.0.0.1:${(server.address() as AddressInfo).port}`, stalled, close: () => server.closeAllConnections() };
}

describe('signals during a pull', () => {
  it('SIGTERM to a pull whose registry stalls mid-layer: answered within a second, no image in the cache', async () => {
    const registry = await stallingRegistry();
    const cache = path.join(work, 'pull-cache');
    try {
      const child = spawn(process.execPath, [BERTH, 'pull', `docker://${registry.host}/stuck:latest`, '-q'], {
        stdio: 'ignore', env: { ...process.env, BERTH_CACHE_DIR: cache },
      });
      const done = closed(child);
      await registry.stalled;
      await sleep(500);
      expect(child.exitCode).toBeNull();
      const t0 = Date.now();
      child.kill('SIGTERM');
      const end = await done;
      expect(Date.now() - t0).toBeLessThan(1000);
      expect(end.signal).toBe('SIGTERM');
      const images = path.join(cache, 'images');
      expect(existsSync(images) ? readdirSync(images).filter((n) => !n.endsWith('.lock')) : []).toEqual([]);
    } finally {
      registry.close();
    }
  });
});

describe('a disk that fills exactly at the metadata trailer', () => {
  it('gets the disk-full message and exit 125, not an internal error, and leaves nothing', async () => {
    const layout = makeLayout(path.join(work, 'trailer'), readLayers(path.join(corpus, 'v7-directory')), { compression: 'none' });
    const probe = path.join(work, 'trailer-probe.sqsh');
    expect((await berth('convert', `oci:${layout.dir}`, '-o', probe, '-q')).code).toBe(0);
    const image = readFileSync(probe);
    const squashfs = image.length - Number(image.readBigUInt64LE(image.length - 16)) - 16; // without the trailer
    expect(squashfs % 4096).toBe(0);
    // A tmpfs exactly that big, in a user and mount namespace of our own: tar2sqfs fits, the trailer does not.
    const small = path.join(work, 'trailer-small');
    mkdirSync(small);
    const r = await run('unshare', ['-Urm', 'sh', '-c',
      `mount -t tmpfs -o size=${squashfs} none ${small} && ${process.execPath} ${BERTH} convert oci:${layout.dir} -o ${small}/image.sqsh -q; echo "exit=$?"; ls -A ${small}`]);
    expect(r.stdout).toBe('exit=125\n');
    expect(r.stderr).toMatch(/^berth: error: no space left writing .*trailer-small\/image\.sqsh\nberth: hint: free some space/);
    expect(statSync(probe).size).toBe(image.length);
  });
});
