// The shared cache, played by an attacker (SECURITY.md, "Caches"; issue 11, item 3). The
// attacker plants, in a cache directory the victim also uses, a trojan image of their own making
// (its /etc/motd says "pwned", its metadata forged to claim the real image's manifest digest)
// under the name of a real image from the registry, blobs under real blobs' names, symlinks,
// and the directories themselves. The victim pulls and runs the real image by digest: each test
// asserts that the victim got the registry's image, was told what was ignored, and wrote nothing
// where the attacker could reach it. A root-owned site cache, by contrast, is used as it is.
import { spawn, spawnSync } from 'node:child_process';
import { chmodSync, chownSync, copyFileSync, existsSync, lstatSync, mkdirSync, mkdtempSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BERTH, cleanup, makeLayout, run, sha256 } from '../helpers.js';
import { push, startRegistry, type Registry } from '../registry.js';
import { account, as, ATTACKER, dirOf, VICTIM } from './users.js';

let work: string;
let registry: Registry;
let ref: string; // docker://HOST/lab/app@sha256:HEX, the real image
let hex: string;
let blobs: string[]; // the real image's config and layer digests
let trojan: string; // the attacker's image, its metadata forged to claim the real digest
let honestTrojan: string; // the same image with its own, true, metadata
const cleanups: string[] = [];

/** A directory owned by root with this mode (a site's, or a careless site's shared one). */
function rootDir(prefix: string, mode: number): string {
  const dir = mkdtempSync(path.join('/tmp', `berth-sec-${prefix}-`));
  chmodSync(dir, mode);
  cleanups.push(dir);
  return dir;
}

function userDir(user: string, prefix: string, mode = 0o700): string {
  const dir = dirOf(user, prefix, mode);
  cleanups.push(dir);
  return dir;
}

/** A layer with busybox (cat, sh) and an /etc/motd saying `motd`. */
function layer(motd: string): Buffer {
  const src = mkdtempSync(path.join(work, 'layer-'));
  mkdirSync(path.join(src, 'bin'));
  mkdirSync(path.join(src, 'etc'));
  copyFileSync('/bin/busybox', path.join(src, 'bin/busybox'));
  chmodSync(path.join(src, 'bin/busybox'), 0o755);
  for (const applet of ['cat', 'sh']) symlinkSync('busybox', path.join(src, 'bin', applet));
  writeFileSync(path.join(src, 'etc/motd'), `${motd}\n`);
  return spawnSync('tar', ['-C', src, '-cf', '-', 'bin', 'etc'], { maxBuffer: 1 << 28 }).stdout;
}

/** Rewrites the metadata trailer of a berth image to claim manifest `digest` (what a forger would do). */
function forgeDigest(file: string, digest: string): void {
  const bytes = readFileSync(file);
  const len = Number(bytes.readBigUInt64LE(bytes.length - 16));
  const start = bytes.length - 16 - len;
  const metadata = JSON.parse(bytes.subarray(start, start + len).toString('utf8')) as { manifestDigest: string };
  metadata.manifestDigest = digest;
  const json = Buffer.from(JSON.stringify(metadata));
  const tail = Buffer.alloc(8);
  tail.writeBigUInt64LE(BigInt(json.length));
  writeFileSync(file, Buffer.concat([bytes.subarray(0, start), json, tail, Buffer.from('BERTHMD1')]));
}

const motdOf = (image: string) => spawnSync('rdsquashfs', ['--cat', '/etc/motd', image], { encoding: 'utf8' }).stdout;

async function victimPull(env: Record<string, string>, reference = ref) {
  const r = await as(VICTIM, process.execPath, [BERTH, 'pull', reference, '--json'], { env });
  expect(r.code, r.stderr).toBe(0);
  return { ...(JSON.parse(r.stdout) as { path: string; cache: string; cached: boolean }), stderr: r.stderr };
}

/** Files under `dir` that the victim owns: berth wrote there on the victim's behalf. */
function victimFilesIn(dir: string): string[] {
  return spawnSync('find', [dir, '-user', VICTIM], { encoding: 'utf8' }).stdout.split('\n').filter(Boolean);
}

/** As the attacker: mkdir -p with a mode, then a copy of the trojan at `to`. */
async function plant(dirs: string[], mode: string, files: [string, string][] = []): Promise<void> {
  for (const d of dirs) expect((await as(ATTACKER, 'mkdir', ['-p', '-m', mode, d])).code).toBe(0);
  for (const [from, to] of files) expect((await as(ATTACKER, 'cp', [from, to])).code).toBe(0);
}

beforeAll(async () => {
  work = mkdtempSync('/tmp/berth-sec-cache-work-');
  chmodSync(work, 0o755);
  registry = await startRegistry(path.join(work, 'registry'));
  const real = makeLayout(path.join(work, 'real'), [layer('from the registry')]);
  await push(`oci:${real.dir}:latest`, registry, 'lab/app:1');
  const resolved = await run(process.execPath, [BERTH, 'resolve', `docker://${registry.host}/lab/app:1`]);
  ref = resolved.stdout.trim();
  hex = ref.split('@sha256:')[1]!;
  const manifest = await fetch(`http://${registry.host}/v2/lab/app/manifests/${ref.split('@')[1]}`, {
    headers: { accept: 'application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json' },
  }).then((r) => r.json()) as { config: { digest: string }; layers: { digest: string }[] };
  blobs = [manifest.config.digest, ...manifest.layers.map((l) => l.digest)];
  // The attacker builds and converts the trojan as themselves.
  const lab = userDir(ATTACKER, 'attacker-lab', 0o755);
  const layout = makeLayout(path.join(lab, 'trojan'), [layer('pwned')]);
  spawnSync('chown', ['-R', `${ATTACKER}:`, layout.dir]);
  honestTrojan = path.join(lab, 'honest.sqsh');
  const made = await as(ATTACKER, process.execPath, [BERTH, 'convert', `oci:${layout.dir}`, '-o', honestTrojan, '-q']);
  expect(made.code, made.stderr).toBe(0);
  trojan = path.join(lab, 'trojan.sqsh');
  copyFileSync(honestTrojan, trojan);
  forgeDigest(trojan, `sha256:${hex}`);
  const { uid, gid } = account(ATTACKER);
  chownSync(trojan, uid, gid);
  expect(motdOf(trojan)).toBe('pwned\n');
}, 180_000);

afterAll(async () => {
  await registry?.stop();
  for (const dir of cleanups) cleanup(dir);
  if (work) cleanup(work);
});

describe('a cache directory both users can write', () => {
  it('0777: the planted image, lock symlink and all, is never used; the victim pulls into their own cache and runs the real image', async () => {
    const shared = rootDir('shared', 0o777);
    const own = userDir(VICTIM, 'own');
    const images = path.join(shared, 'images');
    await plant([images], '0777', [[trojan, path.join(images, `${hex}.sqsh`)]]);
    const bait = path.join(account(VICTIM).home, `berth-sec-bait-${process.pid}`);
    expect((await as(ATTACKER, 'ln', ['-s', bait, path.join(images, `${hex}.sqsh.lock`)])).code).toBe(0);
    const env = { BERTH_CACHE_DIR: shared, XDG_CACHE_HOME: own };
    const pulled = await victimPull(env);
    expect(pulled.path).toBe(path.join(own, 'berth/images', `${hex}.sqsh`));
    expect(motdOf(pulled.path)).toBe('from the registry\n');
    expect(pulled.stderr).toContain(`berth: warning: ignoring ${shared} (owner root, mode 0777) can be written by other users`);
    expect(pulled.stderr).toContain(`using ${own}/berth instead`);
    expect(victimFilesIn(shared)).toEqual([]);
    expect(existsSync(bait)).toBe(false);
    expect(lstatSync(path.join(images, `${hex}.sqsh`)).uid).toBe(account(ATTACKER).uid);
    const ran = await as(VICTIM, process.execPath, [BERTH, 'run', ref, '--', 'cat', '/etc/motd'], { env: { ...env, BERTH_IMAGE_LINGER: '0' } });
    expect(ran.stdout, ran.stderr).toBe('from the registry\n');
  });

  it('1777: images/ and blobs/ made first by the attacker, with a trojan, planted blobs and a .partial symlink, are not used', async () => {
    const shared = rootDir('sticky', 0o1777);
    const own = userDir(VICTIM, 'own');
    const sha = path.join(shared, 'blobs/sha256');
    const trojanBytes = readFileSync(honestTrojan);
    await plant([path.join(shared, 'images'), sha], '0755', [[trojan, path.join(shared, 'images', `${hex}.sqsh`)]]);
    for (const digest of blobs) {
      const planted = path.join(work, `planted-${digest.slice(7, 19)}`);
      writeFileSync(planted, trojanBytes);
      await plant([], '0755', [[planted, path.join(sha, digest.slice(7))]]);
    }
    const bait = path.join(account(VICTIM).home, `berth-sec-partial-${process.pid}`);
    await as(ATTACKER, 'ln', ['-s', bait, path.join(sha, `${blobs[1]!.slice(7)}.partial`)]);
    const pulled = await victimPull({ BERTH_CACHE_DIR: shared, XDG_CACHE_HOME: own });
    expect(pulled.path).toBe(path.join(own, 'berth/images', `${hex}.sqsh`));
    expect(motdOf(pulled.path)).toBe('from the registry\n');
    expect(pulled.stderr).toMatch(new RegExp(`warning: ignoring ${shared}/images \\(owner ${ATTACKER}, mode 0755\\) belongs to another user`));
    expect(victimFilesIn(shared)).toEqual([]);
    expect(existsSync(bait)).toBe(false);
    // The blobs the victim uses are the registry's: each hashes to its name.
    for (const digest of blobs) expect(sha256(readFileSync(path.join(own, 'berth/blobs/sha256', digest.slice(7))))).toBe(digest);
  });

  it('a blob in the victim\'s own cache that belongs to another user (a restore, an admin\'s cp -a) is not used, but downloaded again', async () => {
    const own = userDir(VICTIM, 'own');
    const cache = path.join(own, 'cache');
    await victimPull({ BERTH_CACHE_DIR: cache });
    spawnSync('rm', [path.join(cache, 'images', `${hex}.sqsh`)]);
    const layerBlob = path.join(cache, 'blobs/sha256', blobs[1]!.slice(7));
    writeFileSync(layerBlob, readFileSync(honestTrojan));
    const { uid, gid } = account(ATTACKER);
    chownSync(layerBlob, uid, gid);
    const pulled = await victimPull({ BERTH_CACHE_DIR: cache });
    expect(pulled.stderr).toContain(`warning: ignoring ${layerBlob} (owner ${ATTACKER}, mode 0644) belongs to another user`);
    expect(motdOf(pulled.path)).toBe('from the registry\n');
    expect(lstatSync(layerBlob).uid).toBe(account(VICTIM).uid);
  });

  it('a lock file another user made in the victim\'s cache (images/ left sticky and open to all) and holds is refused with its path, not waited on for ever', async () => {
    const own = userDir(VICTIM, 'own', 0o755);
    const cache = path.join(own, 'cache');
    await victimPull({ BERTH_CACHE_DIR: cache });
    spawnSync('rm', [path.join(cache, 'images', `${hex}.sqsh`), path.join(cache, 'images', `${hex}.sqsh.lock`)]);
    chmodSync(cache, 0o755);
    chmodSync(path.join(cache, 'images'), 0o1777);
    const lock = path.join(cache, 'images', `${hex}.sqsh.lock`);
    const holder = spawn('runuser', ['-u', ATTACKER, '--', 'flock', lock, '-c', 'echo locked; exec sleep 60'], { detached: true });
    try {
      await new Promise((r) => holder.stdout.once('data', r));
      expect(lstatSync(lock).uid).toBe(account(ATTACKER).uid);
      const started = Date.now();
      const r = await as(VICTIM, process.execPath, [BERTH, 'pull', ref], { env: { BERTH_CACHE_DIR: cache } });
      expect(Date.now() - started).toBeLessThan(15_000);
      expect(r.code).not.toBe(0);
      expect(r.stderr).toContain(`cannot lock ${lock}: owned by uid ${account(ATTACKER).uid}, not by you`);
      expect(r.stderr).toContain(`remove ${lock}`);
      expect(existsSync(path.join(cache, 'images', `${hex}.sqsh`))).toBe(false);
    } finally {
      process.kill(-holder.pid!, 'SIGKILL'); // runuser, flock and the sleep that holds the lock
    }
  });

  it('the victim\'s own cache directory, made first by the attacker in a sticky scratch, is never accepted', async () => {
    const scratch = rootDir('scratch', 0o1777);
    const own = userDir(VICTIM, 'own');
    const mine = path.join(scratch, `${VICTIM}-cache`);
    await plant([path.join(mine, 'images')], '0777', [[trojan, path.join(mine, 'images', `${hex}.sqsh`)]]);
    expect((await as(ATTACKER, 'chmod', ['0755', mine])).code).toBe(0);
    const pulled = await victimPull({ BERTH_CACHE_DIR: mine, XDG_CACHE_HOME: own });
    expect(pulled.stderr).toContain(`ignoring ${mine} (owner ${ATTACKER}, mode 0755) belongs to another user`);
    expect(pulled.path.startsWith(`${own}/berth/`)).toBe(true);
    expect(motdOf(pulled.path)).toBe('from the registry\n');
    expect(victimFilesIn(scratch)).toEqual([]);
  });
});

describe('the site cache', () => {
  let site: string;

  beforeAll(async () => {
    // Root fills it as its owner would: berth pull with the site cache as its own cache.
    site = rootDir('site', 0o755);
    const r = await run(process.execPath, [BERTH, 'pull', ref], { env: { ...process.env, BERTH_CACHE_DIR: site, BERTH_SITE_CACHE: '' } });
    expect(r.code, r.stderr).toBe(0);
    expect(lstatSync(path.join(site, 'images')).mode & 0o777).toBe(0o755);
  });

  it('root-owned and only read by the victim: used as it is, with no request and nothing written', async () => {
    const own = userDir(VICTIM, 'own');
    const seen = registry.requests().length;
    const env = { BERTH_SITE_CACHE: site, BERTH_CACHE_DIR: path.join(own, 'cache') };
    const pulled = await victimPull(env);
    expect(pulled).toMatchObject({ path: path.join(site, 'images', `${hex}.sqsh`), cache: 'site', cached: true });
    expect(pulled.stderr).not.toMatch(/warning/);
    expect(registry.requests().length).toBe(seen);
    expect(existsSync(path.join(own, 'cache/images'))).toBe(false);
    const byTag = await victimPull(env, `docker://${registry.host}/lab/app:1`);
    expect(byTag.cache).toBe('site');
    expect(registry.requests().slice(seen).filter((l) => l.includes('/blobs/'))).toEqual([]);
    const listed = await as(VICTIM, process.execPath, [BERTH, 'images'], { env });
    expect(listed.stdout).toContain('(site cache)');
    const doctor = await as(VICTIM, process.execPath, [BERTH, 'doctor'], { env });
    expect(doctor.stdout).toMatch(new RegExp(`ok {4}site cache +${site} \\(owner root, read only for others\\)`));
  });

  it('a symlink, another user\'s file, or an image whose digest is not its name: ignored, and the real image pulled', async () => {
    const plantedSite = rootDir('site-planted', 0o755);
    const images = path.join(plantedSite, 'images');
    mkdirSync(images, { mode: 0o755 });
    const file = path.join(images, `${hex}.sqsh`);
    const tries: [string, () => void, RegExp][] = [
      ['symlink', () => symlinkSync(trojan, file), /\) is a symlink, which berth never follows in a cache/],
      // An admin's `cp -a` from a user's directory keeps that user as the owner.
      ['owned by the attacker', () => spawnSync('cp', ['-a', trojan, file]), new RegExp(`\\(owner ${ATTACKER}, mode 0644\\) belongs to another user`)],
      ['root-owned, but another image', () => copyFileSync(honestTrojan, file), new RegExp(`\\(owner root, mode 0644\\) holds sha256:[0-9a-f]{64}, not sha256:${hex}`)],
    ];
    for (const [what, planting, warning] of tries) {
      spawnSync('rm', ['-f', file]);
      planting();
      const own = userDir(VICTIM, 'own');
      const pulled = await victimPull({ BERTH_SITE_CACHE: plantedSite, BERTH_CACHE_DIR: path.join(own, 'cache') });
      expect(pulled.path, what).toBe(path.join(own, 'cache/images', `${hex}.sqsh`));
      expect(motdOf(pulled.path), what).toBe('from the registry\n');
      expect(pulled.stderr, what).toMatch(warning);
      expect(pulled.stderr, what).toContain(`warning: ignoring ${file} (owner`);
    }
  });

  it('berth images and berth doctor name what others could write, and list none of it as good', async () => {
    const theirs = userDir(ATTACKER, 'their-site', 0o755);
    await plant([path.join(theirs, 'images')], '0755', [[trojan, path.join(theirs, 'images', `${hex}.sqsh`)]]);
    const shared = rootDir('shared-doc', 0o777);
    const own = userDir(VICTIM, 'own');
    const env = { BERTH_SITE_CACHE: theirs, BERTH_CACHE_DIR: shared, XDG_CACHE_HOME: own };
    const doctor = await as(VICTIM, process.execPath, [BERTH, 'doctor'], { env });
    expect(doctor.stdout).toMatch(new RegExp(`WARN {2}cache +ignoring ${shared} \\(owner root, mode 0777\\) can be written by other users`));
    expect(doctor.stdout).toMatch(new RegExp(`FAIL {2}site cache +${theirs} \\(owner ${ATTACKER}, mode 0755\\) belongs to another user: berth ignores it`));
    const listed = await as(VICTIM, process.execPath, [BERTH, 'images'], { env });
    expect(listed.stdout).toMatch(/^no images in /);
    expect(listed.stdout).toContain(`not used, not trusted (see berth doctor):\n  ${theirs} (owner ${ATTACKER}, mode 0755) belongs to another user`);
  });
});

describe('a digest typed where the attacker can plant files', () => {
  it('names the victim\'s cached image, not the attacker\'s file of that name in a shared working directory', async () => {
    const own = userDir(VICTIM, 'digest-cache');
    const env = { XDG_CACHE_HOME: own, BERTH_IMAGE_LINGER: '0' };
    await victimPull(env); // the real image, in the victim's cache: `berth images` shows its digest
    const shared = rootDir('digest-cwd', 0o1777);
    const short = hex.slice(0, 12);
    await plant([], '', [[honestTrojan, path.join(shared, short)]]);
    const ran = await as(VICTIM, process.execPath, [BERTH, 'exec', short, 'cat', '/etc/motd'], { env, cwd: shared });
    expect(ran.stdout, ran.stderr).toBe('from the registry\n');
    // A digest no cached image has: the attacker's file of that name is refused, not run.
    const other = '0123456789ab';
    await plant([], '', [[honestTrojan, path.join(shared, other)]]);
    const refused = await as(VICTIM, process.execPath, [BERTH, 'exec', other, 'cat', '/etc/motd'], { env, cwd: shared });
    expect(refused.code).toBe(125);
    expect(refused.stdout).toBe('');
    expect(refused.stderr).toMatch(/looks like a cached image's digest, but no cached image has it, and the file of that name is uid \d+'s, not yours[\s\S]*name it \.\/0123456789ab/);
  });
});
