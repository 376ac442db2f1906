// Pulling from a real registry (Debian's docker-registry on loopback, filled by skopeo with
// images made by umoci): tags, digests, platforms, the verified cache, many pullers at once,
// killed pullers, tampered blobs, basic auth, and what the cache refuses to believe. (Another
// user's files in a cache: test/security/cache.test.ts, which runs as root to be two users.)
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmodSync, copyFileSync, existsSync, lstatSync, mkdirSync, readdirSync, readFileSync, statSync, symlinkSync, unlinkSync, writeFileSync } from 'node:fs';
import { createServer, request as httpRequest } from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BERTH, ROOT, cleanup, listImage, makeLayout, makeMultiPlatformLayout, run, tempDir } from '../helpers.js';
import { blobData, push, startRegistry, startTokenIssuer, throttledProxy, type Registry } from '../registry.js';

let work: string;
let registry: Registry;
let digests: Record<string, string>;
let cacheN = 0;
const freshCache = () => path.join(work, `cache-${++cacheN}`);

function pull(cache: string, ...args: string[]) {
  return run(process.execPath, [BERTH, 'pull', ...args], { env: { ...process.env, BERTH_CACHE_DIR: cache } });
}

const blobGets = (r: Registry) => r.requests().filter((l) => l.startsWith('GET') && l.includes('/blobs/'));
const manifestGets = (r: Registry) => r.requests().filter((l) => l.includes('/manifests/'));

beforeAll(async () => {
  work = tempDir('pull');
  const made = await run(path.join(ROOT, 'test/fixtures/make-run-images.sh'), [work]);
  if (made.code !== 0) throw new Error(made.stderr);
  digests = await makeMultiPlatformLayout(path.join(work, 'multi'), work);
  registry = await startRegistry(path.join(work, 'registry'));
  await push(`oci:${work}/oci:busybox`, registry, 'lab/busybox:1.0');
  await push(`oci:${work}/multi:multi`, registry, 'lab/multi:latest', undefined, true);
}, 180_000);
afterAll(async () => {
  await registry?.stop();
  cleanup(work);
});

describe('berth pull', () => {
  it('pulls by tag into the cache, converted as from the OCI layout, and runs it', async () => {
    const cache = freshCache();
    const r = await pull(cache, `docker://${registry.host}/lab/busybox:1.0`);
    expect(r.stderr).toMatch(/pulled docker:\/\/127\.0\.0\.1:\d+\/lab\/busybox:1\.0/);
    expect(r.code).toBe(0);
    const image = r.stdout.trim();
    expect(image).toMatch(new RegExp(`^${cache}/images/[0-9a-f]{64}\\.sqsh$`));
    const local = path.join(work, 'local.sqsh');
    expect((await run(process.execPath, [BERTH, 'convert', `oci:${work}/oci:busybox`, '-o', local, '-q'])).code).toBe(0);
    expect(await listImage(image)).toEqual(await listImage(local));
    const inside = await run(process.execPath, [BERTH, 'run', `docker://${registry.host}/lab/busybox:1.0`, '--', 'cat', '/etc/motd'],
      { env: { ...process.env, BERTH_CACHE_DIR: cache, BERTH_IMAGE_LINGER: '0' } });
    expect(inside.stdout, inside.stderr).toBe('from the image\n');
  });

  it('an image pulled before costs one manifest request', async () => {
    const cache = freshCache();
    expect((await pull(cache, `docker://${registry.host}/lab/busybox:1.0`)).code).toBe(0);
    const [manifests, blobs] = [manifestGets(registry).length, blobGets(registry).length];
    const again = await pull(cache, `docker://${registry.host}/lab/busybox:1.0`, '--json');
    expect(JSON.parse(again.stdout)).toMatchObject({ cached: true });
    expect(manifestGets(registry).length - manifests).toBe(1);
    expect(blobGets(registry).length - blobs).toBe(0);
  });

  it('inspect docker://REF pulls into the cache when needed, then inspects the cached image (#13)', async () => {
    const cache = freshCache();
    const ref = `docker://${registry.host}/lab/busybox:1.0`;
    const inspect = (...args: string[]) => run(process.execPath, [BERTH, 'inspect', ref, ...args], { env: { ...process.env, BERTH_CACHE_DIR: cache } });
    const first = await inspect('--json');
    expect(first.code, first.stderr).toBe(0);
    expect(JSON.parse(first.stdout)).toMatchObject({ file: expect.stringMatching(new RegExp(`^${cache}/images/[0-9a-f]{64}\\.sqsh$`)), image: { source: ref } });
    const blobs = blobGets(registry).length;
    const again = await inspect();
    expect(again.code, again.stderr).toBe(0);
    expect(again.stdout).toMatch(/^Source:\s+docker:\/\/127\.0\.0\.1:\d+\/lab\/busybox:1\.0$/m);
    expect(blobGets(registry).length - blobs).toBe(0); // the cached image: nothing downloaded again
  });

  it('resolves an index by platform, and pulls by digest', async () => {
    const cache = freshCache();
    const arch = async (...args: string[]) => {
      const r = await pull(cache, ...args, '--json');
      expect(r.stderr).not.toMatch(/error/);
      const info = JSON.parse((await run(process.execPath, [BERTH, 'inspect', JSON.parse(r.stdout).path, '--json'])).stdout) as { image: { platform: { architecture: string } } };
      return info.image.platform.architecture;
    };
    expect(await arch(`docker://${registry.host}/lab/multi`, '--platform', 'linux/arm64')).toBe('arm64');
    expect(await arch(`docker://${registry.host}/lab/multi:latest`)).toBe(process.arch === 'arm64' ? 'arm64' : 'amd64');
    expect(await arch(`docker://${registry.host}/lab/multi@${digests['arm64']}`)).toBe('arm64');
    const none = await pull(cache, `docker://${registry.host}/lab/multi`, '--platform', 'linux/s390x');
    expect(none.stderr).toMatch(/has no image for linux\/s390x[\s\S]*linux\/amd64, linux\/arm64\/v8/);
  });

  it('names the reference it tried when the repository is unknown', async () => {
    const r = await pull(freshCache(), `docker://${registry.host}/lab/nothing:here`);
    expect(r.code).toBe(125);
    expect(r.stderr).toContain(`docker://${registry.host}/lab/nothing:here was not found`);
  });

  it('-o copies the image out; an existing file needs --force', async () => {
    const cache = freshCache();
    const out = path.join(work, 'copied.sqsh');
    expect((await pull(cache, `docker://${registry.host}/lab/busybox:1.0`, '-o', out)).code).toBe(0);
    expect(readFileSync(out).readUInt32LE(0)).toBe(0x73717368);
    const again = await pull(cache, `docker://${registry.host}/lab/busybox:1.0`, '-o', out);
    expect(again.stderr).toMatch(/already exists[\s\S]*--force/);
  });

  it('fifty pullers of one image into one cache download each blob once, and all succeed', async () => {
    const cache = freshCache();
    const before = new Set(blobGets(registry));
    const counted = blobGets(registry).length;
    const results = await Promise.all(Array.from({ length: 50 }, () => pull(cache, `docker://${registry.host}/lab/busybox:1.0`)));
    expect(results.filter((r) => r.code !== 0).map((r) => r.stderr).slice(0, 2)).toEqual([]);
    expect(new Set(results.map((r) => r.stdout)).size).toBe(1);
    const fetched = blobGets(registry).slice(counted).map((l) => l.split(' ')[1]);
    expect(fetched.length).toBe(new Set(fetched).size); // no blob twice
    expect(fetched.length).toBe(2); // the config and the one layer
    expect(before.size).toBeGreaterThan(0);
  }, 120_000);
});

describe('a puller killed mid-download, and a tampered blob', () => {
  let big: string;

  beforeAll(async () => {
    // One 64 MiB incompressible layer: long enough to kill a download in the middle.
    const noise = createHash('sha512');
    const chunks: Buffer[] = [];
    for (let i = 0; i < 1024 * 1024; i++) chunks.push(noise.update(String(i)).copy().digest());
    const body = Buffer.concat(chunks);
    const header = Buffer.alloc(512);
    header.write('noise', 0);
    header.write('0000644\0', 100);
    header.write('0000000\0', 108);
    header.write('0000000\0', 116);
    header.write(`${body.length.toString(8).padStart(11, '0')}\0`, 124);
    header.write('00000000000\0', 136);
    header.write('0', 156);
    header.write('ustar\x0000', 257);
    header.fill(' ', 148, 156);
    let sum = 0;
    for (const byte of header) sum += byte;
    header.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148);
    const tar = Buffer.concat([header, body, Buffer.alloc(1024)]);
    makeLayout(path.join(work, 'big'), [tar], { compression: 'none' });
    await push(`oci:${work}/big:latest`, registry, 'lab/big:1');
    // skopeo compresses the layer on its way into the registry: ask the registry for its digest.
    const manifest = await fetch(`http://${registry.host}/v2/lab/big/manifests/1`, {
      headers: { accept: 'application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json' },
    }).then((r) => r.json()) as { layers: { digest: string }[] };
    big = manifest.layers[0]!.digest;
  }, 120_000);

  it('a puller killed with -9 wedges nobody: the next one resumes and succeeds', async () => {
    const cache = freshCache();
    const partial = path.join(cache, 'blobs/sha256', `${big.slice(7)}.partial`);
    const proxy = await throttledProxy(registry.host, 16 << 20); // slow enough to be caught mid-way
    const child = spawn(process.execPath, [BERTH, 'pull', `docker://${proxy.host}/lab/big:1`], { env: { ...process.env, BERTH_CACHE_DIR: cache }, stdio: 'ignore' });
    const size = (f: string) => (existsSync(f) ? statSync(f).size : 0);
    for (let i = 0; i < 800 && size(partial) < 1 << 20; i++) await new Promise((r) => setTimeout(r, 5));
    expect(size(partial)).toBeGreaterThan(0); // killed in the middle of the download
    child.kill('SIGKILL');
    await new Promise((r) => child.on('close', r));
    proxy.close();
    expect(existsSync(path.join(cache, 'blobs/sha256', big.slice(7)))).toBe(false);
    const r = await pull(cache, `docker://${registry.host}/lab/big:1`);
    expect(r.stderr).not.toMatch(/error/);
    expect(r.code).toBe(0);
    expect(existsSync(path.join(cache, 'blobs/sha256', big.slice(7)))).toBe(true);
    expect(readdirSync(path.join(cache, 'blobs/sha256')).filter((n) => n.endsWith('.partial'))).toEqual([]);
  }, 60_000);

  it('a registry stopped in the middle of a download and started again: the download resumes', async () => {
    const cache = freshCache();
    const partial = path.join(cache, 'blobs/sha256', `${big.slice(7)}.partial`);
    const proxy = await throttledProxy(registry.host, 16 << 20); // 64 MiB take 4 s
    try {
      const seen = registry.requests().length;
      const puller = pull(cache, `docker://${proxy.host}/lab/big:1`);
      const size = () => (existsSync(partial) ? statSync(partial).size : 0);
      for (let i = 0; i < 400 && size() < 4 << 20; i++) await new Promise((r) => setTimeout(r, 10));
      await registry.stop();
      const cut = size();
      expect(cut).toBeGreaterThan(0);
      await new Promise((r) => setTimeout(r, 700));
      await registry.restart();
      const r = await puller;
      expect(r.stderr).not.toMatch(/error/);
      expect(r.code).toBe(0);
      // After the restart the blob came as a 206 Partial Content: from where it had stopped.
      const after = registry.requests().slice(seen).filter((l) => l.includes(`/blobs/${big}`));
      expect(after.at(-1)).toMatch(/ 206$/);
    } finally {
      proxy.close();
    }
  }, 60_000);

  it('a blob tampered with in the registry is refused with both digests, and nothing is cached', async () => {
    const data = blobData(registry, big);
    const bytes = readFileSync(data);
    bytes[4096] = bytes[4096]! ^ 0xff;
    writeFileSync(data, bytes);
    const cache = freshCache();
    const r = await pull(cache, `docker://${registry.host}/lab/big:1`);
    expect(r.code).toBe(125);
    expect(r.stderr).toMatch(new RegExp(`data whose digest is sha256:[0-9a-f]{64}, not ${big}`));
    // The config, verified, may stay; of the tampered layer there is no trace.
    expect(readdirSync(path.join(cache, 'blobs/sha256')).filter((n) => n.startsWith(big.slice(7)) && !n.endsWith('.lock'))).toEqual([]);
    expect(existsSync(path.join(cache, 'images')) ? readdirSync(path.join(cache, 'images')).filter((n) => n.endsWith('.sqsh')) : []).toEqual([]);
  }, 60_000);
});

describe('a registry with basic auth (htpasswd)', () => {
  let secured: Registry;
  const creds = { user: 'alice', password: 's3cret-pw' };

  beforeAll(async () => {
    secured = await startRegistry(path.join(work, 'secured'), { htpasswd: creds });
    await push(`oci:${work}/oci:busybox`, secured, 'private/busybox:1', creds);
  }, 60_000);
  afterAll(() => secured?.stop());

  const pullAs = (env: Record<string, string>) => run(process.execPath, [BERTH, 'pull', `docker://${secured.host}/private/busybox:1`],
    { env: { ...process.env, BERTH_CACHE_DIR: freshCache(), HOME: work, ...env } });

  it('without credentials: says so and how to give them', async () => {
    const r = await pullAs({});
    expect(r.code).toBe(125);
    expect(r.stderr).toMatch(/needs credentials[\s\S]*BERTH_REGISTRY=127\.0\.0\.1:\d+ with BERTH_REGISTRY_USERNAME/);
  });

  it('with wrong credentials: names the user, never the password', async () => {
    const r = await pullAs({ BERTH_REGISTRY: secured.host, BERTH_REGISTRY_USERNAME: 'alice', BERTH_REGISTRY_PASSWORD: 'wrong-pw' });
    expect(r.code).toBe(125);
    expect(r.stderr).toMatch(/refused the credentials of user 'alice'/);
    expect(r.stderr).not.toContain('wrong-pw');
  });

  it('with credentials from the environment, or from ~/.docker/config.json', async () => {
    expect((await pullAs({ BERTH_REGISTRY: secured.host, BERTH_REGISTRY_USERNAME: 'alice', BERTH_REGISTRY_PASSWORD: 's3cret-pw' })).code).toBe(0);
    const dockerDir = path.join(work, 'docker-config');
    await run('mkdir', ['-p', dockerDir]);
    writeFileSync(path.join(dockerDir, 'config.json'), JSON.stringify({ auths: { [secured.host]: { auth: Buffer.from('alice:s3cret-pw').toString('base64') } } }));
    const r = await pullAs({ DOCKER_CONFIG: dockerDir });
    expect(r.stderr).not.toMatch(/error/);
    expect(r.code).toBe(0);
  });

  it('blobs redirected to storage on another origin: followed, and the credentials never go there', async () => {
    // A front for the registry that sends every blob GET to a "storage" server elsewhere (as
    // registries send blobs to object stores), which fetches the blob itself and notes what
    // headers it was sent.
    const basic = `Basic ${Buffer.from('alice:s3cret-pw').toString('base64')}`;
    const seenByStorage: (string | undefined)[] = [];
    const storage = createServer((req, res) => {
      seenByStorage.push(req.headers.authorization);
      const digest = req.url!.split('/').pop()!;
      const upstream = httpRequest(`http://${secured.host}/v2/private/busybox/blobs/${digest}`, { headers: { authorization: basic } }, (up) => {
        res.writeHead(up.statusCode!, { 'content-length': up.headers['content-length'] ?? '' });
        up.pipe(res);
      });
      upstream.end();
    });
    const front = createServer((req, res) => {
      if (/\/blobs\/sha256:/.test(req.url!) && req.method === 'GET') {
        res.writeHead(307, { location: `http://localhost:${(storage.address() as AddressInfo).port}/storage/${req.url!.split('/').pop()}` });
        res.end();
        return;
      }
      const upstream = httpRequest(`http://${secured.host}${req.url}`, { method: req.method, headers: { ...req.headers, host: secured.host } }, (up) => {
        res.writeHead(up.statusCode!, up.headers);
        up.pipe(res);
      });
      req.pipe(upstream);
    });
    await Promise.all([storage, front].map((srv) => new Promise<void>((r) => srv.listen(0, '127.0.0.1', r))));
    try {
      const host = `127.0.0.1:${(front.address() as AddressInfo).port}`;
      const r = await run(process.execPath, [BERTH, 'pull', `docker://${host}/private/busybox:1`],
        { env: { ...process.env, BERTH_CACHE_DIR: freshCache(), HOME: work, BERTH_REGISTRY: host, BERTH_REGISTRY_USERNAME: 'alice', BERTH_REGISTRY_PASSWORD: 's3cret-pw' } });
      expect(r.stderr).not.toMatch(/error/);
      expect(r.code).toBe(0);
      expect(seenByStorage.length).toBeGreaterThan(0); // the blobs did come from there
      expect(seenByStorage.filter((a) => a !== undefined)).toEqual([]);
    } finally {
      storage.close();
      front.close();
    }
  });

  it('environment credentials without BERTH_REGISTRY are refused, naming the fix; for another registry they are not sent', async () => {
    const unscoped = await pullAs({ BERTH_REGISTRY_USERNAME: 'alice', BERTH_REGISTRY_PASSWORD: 's3cret-pw' });
    expect(unscoped.code).toBe(125);
    expect(unscoped.stderr).toContain(`not BERTH_REGISTRY, the registry they are for\nberth: hint: set BERTH_REGISTRY to that registry's host[:port] (e.g. BERTH_REGISTRY=${secured.host}`);
    const elsewhere = await pullAs({ BERTH_REGISTRY: 'ghcr.io', BERTH_REGISTRY_USERNAME: 'alice', BERTH_REGISTRY_PASSWORD: 's3cret-pw' });
    expect(elsewhere.code).toBe(125);
    expect(elsewhere.stderr).toMatch(/needs credentials/); // the registry got none: htpasswd would have let alice in
    const scheme = await pullAs({ BERTH_REGISTRY: `https://${secured.host}/`, BERTH_REGISTRY_USERNAME: 'alice', BERTH_REGISTRY_PASSWORD: 's3cret-pw' });
    expect(scheme.code).toBe(0);
    const repo = await pullAs({ BERTH_REGISTRY: `${secured.host}/private`, BERTH_REGISTRY_USERNAME: 'alice', BERTH_REGISTRY_PASSWORD: 's3cret-pw' });
    expect(repo.stderr).toMatch(/is not a registry host[\s\S]*host\[:port\] alone/);
  });
});

describe('a registry with token auth (the test is the token service, as Docker Hub has one)', () => {
  let tokened: Registry;
  let issuer: Awaited<ReturnType<typeof startTokenIssuer>>;
  const creds = { user: 'bob', password: 'token-pw' };

  beforeAll(async () => {
    issuer = await startTokenIssuer(path.join(work, 'tokens'), creds.user, creds.password);
    tokened = await startRegistry(path.join(work, 'tokened'), { token: issuer });
    await push(`oci:${work}/oci:busybox`, tokened, 'team/busybox:1', creds);
  }, 60_000);
  afterAll(async () => {
    await tokened?.stop();
    issuer?.close();
  });

  it('gets a bearer token with the credentials and pulls; wrong ones are refused', async () => {
    const before = issuer.issued();
    const ok = await run(process.execPath, [BERTH, 'pull', `docker://${tokened.host}/team/busybox:1`],
      { env: { ...process.env, BERTH_CACHE_DIR: freshCache(), BERTH_REGISTRY: tokened.host, BERTH_REGISTRY_USERNAME: 'bob', BERTH_REGISTRY_PASSWORD: 'token-pw' } });
    expect(ok.stderr).not.toMatch(/error/);
    expect(ok.code).toBe(0);
    expect(issuer.issued()).toBeGreaterThan(before);
    const bad = await run(process.execPath, [BERTH, 'pull', `docker://${tokened.host}/team/busybox:1`],
      { env: { ...process.env, BERTH_CACHE_DIR: freshCache(), BERTH_REGISTRY: tokened.host, BERTH_REGISTRY_USERNAME: 'bob', BERTH_REGISTRY_PASSWORD: 'nope' } });
    expect(bad.code).toBe(125);
    expect(bad.stderr).toMatch(/refused the credentials of user 'bob'/);
  });

  it('berth login checks the credentials and saves them for later pulls', async () => {
    const dockerDir = path.join(work, 'login-config');
    const env = { ...process.env, DOCKER_CONFIG: dockerDir, BERTH_CACHE_DIR: freshCache() };
    const wrong = await run(process.execPath, [BERTH, 'login', tokened.host, '-u', 'bob', '--password-stdin'], { env, input: 'nope\n' });
    expect(wrong.code).toBe(125);
    expect(existsSync(path.join(dockerDir, 'config.json'))).toBe(false);
    const right = await run(process.execPath, [BERTH, 'login', tokened.host, '-u', 'bob', '--password-stdin'], { env, input: 'token-pw\n' });
    expect(right.stdout).toMatch(/logged in to 127\.0\.0\.1:\d+ as bob/);
    expect(statSync(path.join(dockerDir, 'config.json')).mode & 0o777).toBe(0o600);
    expect((await run(process.execPath, [BERTH, 'pull', `docker://${tokened.host}/team/busybox:1`], { env })).code).toBe(0);
  });
});

describe('site and user configuration', () => {
  it('cache.dir and pull.registries from the configuration file', async () => {
    const cache = freshCache();
    const file = path.join(work, 'berth.yaml');
    writeFileSync(file, `cache:\n  dir: ${cache}\npull:\n  registries: [ghcr.io]\n`);
    const env = { ...process.env, BERTH_CONFIG: file };
    const refused = await run(process.execPath, [BERTH, 'pull', `docker://${registry.host}/lab/busybox:1.0`], { env });
    expect(refused.code).toBe(125);
    expect(refused.stderr).toContain(`allows pulling only from ghcr.io, not ${registry.host} (${file})`);
    writeFileSync(file, `cache:\n  dir: ${cache}\npull:\n  registries: [ghcr.io, "${registry.host}"]\n`);
    const ok = await run(process.execPath, [BERTH, 'pull', `docker://${registry.host}/lab/busybox:1.0`], { env });
    expect(ok.stdout.startsWith(`${cache}/images/`)).toBe(true);
    const shown = await run(process.execPath, [BERTH, 'config', '--json'], { env });
    expect(JSON.parse(shown.stdout)['cache.dir']).toEqual({ value: cache, source: file });
  });
});

describe('managing the cache', () => {
  it('images lists, rm removes, prune frees the layers', async () => {
    const cache = freshCache();
    const env = { ...process.env, BERTH_CACHE_DIR: cache };
    expect((await pull(cache, `docker://${registry.host}/lab/busybox:1.0`)).code).toBe(0);
    const listed = await run(process.execPath, [BERTH, 'images'], { env });
    expect(listed.stdout).toMatch(new RegExp(`[0-9a-f]{12}  .*docker://${registry.host}/lab/busybox:1\\.0`));
    const pruned = await run(process.execPath, [BERTH, 'prune'], { env });
    expect(pruned.stdout).toMatch(/freed \d/);
    expect(readdirSync(path.join(cache, 'blobs/sha256')).filter((n) => /^[0-9a-f]{64}$/.test(n))).toEqual([]);
    const removed = await run(process.execPath, [BERTH, 'rm', `docker://${registry.host}/lab/busybox:1.0`], { env });
    expect(removed.stdout).toMatch(/^removed sha256:/);
    expect((await run(process.execPath, [BERTH, 'images'], { env })).stdout).toMatch(/^no images/);
  });
});

describe('what the cache believes (one user; test/security/cache.test.ts plays another)', () => {
  const ref = () => `docker://${registry.host}/lab/busybox:1.0`;
  let pinned: string;
  let local: string;

  beforeAll(async () => {
    const r = await run(process.execPath, [BERTH, 'resolve', ref()]);
    pinned = r.stdout.trim();
    local = path.join(work, 'believed-local.sqsh');
    await run(process.execPath, [BERTH, 'convert', `oci:${work}/oci:busybox`, '-o', local, '-q']);
  });

  const pullJson = async (env: Record<string, string>, reference = pinned) => {
    const r = await run(process.execPath, [BERTH, 'pull', reference, '--json'], { env: { ...process.env, ...env } });
    expect(r.code, r.stderr).toBe(0);
    return { ...(JSON.parse(r.stdout) as { path: string; cache: string; cached: boolean }), stderr: r.stderr };
  };
  const imageFile = (cache: string) => path.join(cache, 'images', `${pinned.split('@sha256:')[1]}.sqsh`);

  it('a site cache is read, never written: a pinned image there costs no request', async () => {
    const site = freshCache();
    await pullJson({ BERTH_CACHE_DIR: site });
    const own = freshCache();
    const seen = registry.requests().length;
    const hit = await pullJson({ BERTH_SITE_CACHE: site, BERTH_CACHE_DIR: own });
    expect(hit).toMatchObject({ path: imageFile(site), cache: 'site', cached: true });
    expect(registry.requests().length).toBe(seen);
    expect(existsSync(path.join(own, 'images'))).toBe(false);
    const listed = await run(process.execPath, [BERTH, 'images'], { env: { ...process.env, BERTH_SITE_CACHE: site, BERTH_CACHE_DIR: own } });
    expect(listed.stdout).toMatch(/lab\/busybox@sha256:[0-9a-f]{64} \(site cache\)/);
  });

  it('an image under another image\'s name is not used: the digest it carries decides', async () => {
    const cache = freshCache();
    await pullJson({ BERTH_CACHE_DIR: cache });
    const other = await pullJson({ BERTH_CACHE_DIR: cache }, `docker://${registry.host}/lab/multi@${digests['amd64']}`);
    copyFileSync(other.path, imageFile(cache));
    const again = await pullJson({ BERTH_CACHE_DIR: cache });
    expect(again.stderr).toMatch(new RegExp(`warning: ignoring ${imageFile(cache)} \\(owner [^,]+, mode 0644\\) holds ${digests['amd64']}, not sha256:`));
    expect(again).toMatchObject({ path: imageFile(cache), cached: false });
    expect(await listImage(again.path)).toEqual(await listImage(local));
  });

  it('an image of one\'s own that others could write, or a symlink in its place, is converted again', async () => {
    const cache = freshCache();
    const file = imageFile(cache);
    await pullJson({ BERTH_CACHE_DIR: cache });
    chmodSync(file, 0o666);
    const writable = await pullJson({ BERTH_CACHE_DIR: cache });
    expect(writable.stderr).toMatch(/mode 0666\) can be written by other users/);
    expect(writable.cached).toBe(false);
    expect(statSync(file).mode & 0o022).toBe(0);
    unlinkSync(file);
    symlinkSync(local, file);
    const linked = await pullJson({ BERTH_CACHE_DIR: cache });
    expect(linked.stderr).toMatch(/is a symlink, which berth never follows in a cache/);
    expect(lstatSync(file).isFile()).toBe(true);
  });

  it('a damaged blob is hashed again before use, and downloaded again', async () => {
    const cache = freshCache();
    await pullJson({ BERTH_CACHE_DIR: cache });
    unlinkSync(imageFile(cache));
    const blobs = path.join(cache, 'blobs/sha256');
    const layer = readdirSync(blobs).filter((n) => /^[0-9a-f]{64}$/.test(n)).sort((a, b) => statSync(path.join(blobs, b)).size - statSync(path.join(blobs, a)).size)[0]!;
    const bytes = readFileSync(path.join(blobs, layer));
    bytes[100] = bytes[100]! ^ 0xff;
    writeFileSync(path.join(blobs, layer), bytes);
    const before = blobGets(registry).length;
    const again = await pullJson({ BERTH_CACHE_DIR: cache });
    expect(again.stderr).toMatch(new RegExp(`ignoring ${blobs}/${layer} \\(owner [^)]+\\) has digest sha256:[0-9a-f]{64}: it is damaged; downloading it again`));
    expect(blobGets(registry).slice(before).map((l) => l.split(' ')[1])).toEqual([`/v2/lab/busybox/blobs/sha256:${layer}`]);
    expect(await listImage(again.path)).toEqual(await listImage(local));
  });

  it('a cache.dir that others can write is not used: berth says so and uses the default cache', async () => {
    const shared = freshCache();
    mkdirSync(shared);
    chmodSync(shared, 0o777);
    const xdg = freshCache();
    const env = { BERTH_CACHE_DIR: shared, XDG_CACHE_HOME: xdg };
    const r = await pullJson(env);
    expect(r.stderr).toContain(`warning: ignoring ${shared} (owner `);
    expect(r.stderr).toMatch(/mode 0777\) can be written by other users: chmod go-w .*; using .*\/berth instead/);
    expect(r.path).toBe(imageFile(path.join(xdg, 'berth')));
    expect(readdirSync(shared)).toEqual([]);
    const doctor = await run(process.execPath, [BERTH, 'doctor'], { env: { ...process.env, ...env } });
    expect(doctor.stdout).toMatch(/WARN {2}cache +.*mode 0777\) can be written by other users/);
    expect(statSync(path.join(xdg, 'berth')).mode & 0o777).toBe(0o700);
  });

  it('berth images lists what it would not use apart, with the reason', async () => {
    const cache = freshCache();
    await pullJson({ BERTH_CACHE_DIR: cache });
    chmodSync(imageFile(cache), 0o664);
    const listed = await run(process.execPath, [BERTH, 'images'], { env: { ...process.env, BERTH_CACHE_DIR: cache } });
    expect(listed.stdout).toMatch(/^no images in /);
    expect(listed.stdout).toMatch(/not used, not trusted[^\n]*\n {2}.*\.sqsh \(owner .*, mode 0664\) can be written by other users/);
    const json = JSON.parse((await run(process.execPath, [BERTH, 'images', '--json'], { env: { ...process.env, BERTH_CACHE_DIR: cache } })).stdout) as { trusted: boolean; cache: string }[];
    expect(json).toEqual([expect.objectContaining({ trusted: false, cache: 'user' })]);
  });
});

describe('unfinished downloads: a full disk, and berth prune', () => {
  const fill = `sha256:${'c'.repeat(64)}`; // what is written never gets as far as being checked

  it('a disk that fills up during a download: says so, and leaves no .partial in the cache', async () => {
    // The cache on a 4 MiB tmpfs, in a user and mount namespace of our own (no root needed).
    // There the host's / is nobody's, which the cache's rules rightly refuse: so the download
    // is the cache's own (ensureBlob, as a pull calls it), fed from memory.
    const small = path.join(work, 'small');
    mkdirSync(small);
    const script = `
      import { ensureBlob } from '${ROOT}/dist/image/cache.js';
      import { makeTrust } from '${ROOT}/dist/image/trust.js';
      import { mkdirSync, readdirSync } from 'node:fs';
      import { Readable } from 'node:stream';
      const root = '${small}/cache';
      mkdirSync(root + '/blobs/sha256', { recursive: true });
      const dir = { root, trust: makeTrust(process.getuid()), warn: () => {} };
      const data = new Uint8Array(16 << 20).fill(7);
      try {
        await ensureBlob(dir, '${fill}', async () => ({ status: 200, body: Readable.from([data]) }), 'layer ${fill}');
      } catch (e) {
        console.log(e.message + '\\n' + e.hint);
      }
      console.log('files:', JSON.stringify(readdirSync(root + '/blobs/sha256')));`;
    const r = await run('unshare', ['-Urm', 'sh', '-c', `mount -t tmpfs -o size=4m,mode=0700 none ${small} && exec ${process.execPath} --input-type=module -e "$0"`, script]);
    expect(r.stderr).toBe('');
    expect(r.stdout).toMatch(new RegExp(`^no space left in the cache \\(${small}/cache/blobs/sha256\\) writing layer ${fill}; the partial download was removed\n`));
    expect(r.stdout).toMatch(/\nfree some space or quota/);
    // Neither the blob nor its .partial; its lock may stay, as locks do.
    const files = JSON.parse(/^files: (.*)$/m.exec(r.stdout)![1]!) as string[];
    expect(files.filter((n) => !n.endsWith('.lock'))).toEqual([]);
  }, 60_000);

  it('berth prune removes the .partial files no download holds, and leaves the one being written', async () => {
    const cache = freshCache();
    expect((await pull(cache, `docker://${registry.host}/lab/busybox:1.0`)).code).toBe(0);
    const blobs = path.join(cache, 'blobs/sha256');
    const stale = path.join(blobs, `${'a'.repeat(64)}.partial`); // a puller killed long ago
    const busy = path.join(blobs, `${'b'.repeat(64)}.partial`);
    writeFileSync(stale, Buffer.alloc(3000));
    writeFileSync(busy, Buffer.alloc(5000));
    // A download in flight holds its blob's lock, as ensureBlob does (flock on HEX.lock).
    const holder = spawn('flock', [path.join(blobs, `${'b'.repeat(64)}.lock`), '-c', 'echo locked; exec cat']);
    await new Promise((resolve) => holder.stdout.once('data', resolve));
    try {
      const env = { ...process.env, BERTH_CACHE_DIR: cache };
      const pruned = await run(process.execPath, [BERTH, 'prune'], { env });
      expect(pruned.code).toBe(0);
      expect(pruned.stdout).toMatch(/^freed \d/);
      expect(existsSync(stale)).toBe(false);
      expect(existsSync(busy)).toBe(true);
      expect(readdirSync(blobs).filter((n) => /^[0-9a-f]{64}$/.test(n))).toEqual([]);
      holder.stdin.end(); // the download is over
      await new Promise((resolve) => holder.on('close', resolve));
      expect((await run(process.execPath, [BERTH, 'prune'], { env })).code).toBe(0);
      expect(existsSync(busy)).toBe(false);
    } finally {
      holder.kill();
    }
  });
});

describe('images run where they are: oci:, docker-archive:, a cached digest, and a tag when the registry is gone', () => {
  const exec = (cache: string, ...args: string[]) =>
    run(process.execPath, [BERTH, 'exec', ...args], { env: { ...process.env, BERTH_CACHE_DIR: cache, BERTH_IMAGE_LINGER: '0' } });

  it('oci:DIR runs directly: converted into the cache once, shown the first time, silent and not converted again after', async () => {
    const cache = freshCache();
    const first = await exec(cache, `oci:${work}/oci:busybox`, 'cat', '/etc/motd');
    expect(first.stdout, first.stderr).toBe('from the image\n');
    // Not a batch job's silence: what it converts, as plain lines (stderr is not a terminal here).
    expect(first.stderr).toMatch(/converted oci:.*\/oci:busybox into the cache \(sha256:[0-9a-f]{64}\)/);
    const cached = readdirSync(path.join(cache, 'images')).filter((n) => n.endsWith('.sqsh'));
    expect(cached).toHaveLength(1);
    const before = statSync(path.join(cache, 'images', cached[0]!)).mtimeMs;
    const again = await exec(cache, `oci:${work}/oci:busybox`, 'cat', '/etc/motd');
    expect(again.stdout).toBe('from the image\n');
    expect(again.stderr).toBe('');
    expect(statSync(path.join(cache, 'images', cached[0]!)).mtimeMs).toBe(before);
    // The same manifest pulled from a registry is the same cache entry: nothing is converted.
    const pulled = await pull(cache, `docker://${registry.host}/lab/busybox:1.0`, '--json');
    expect(JSON.parse(pulled.stdout)).toMatchObject({ cached: true, path: path.join(cache, 'images', cached[0]!) });
  });

  it('berth images lists it, and exec takes the digest it shows; a prefix of none says so', async () => {
    const cache = freshCache();
    expect((await exec(cache, `oci:${work}/oci:busybox`, 'true')).code).toBe(0);
    const listed = await run(process.execPath, [BERTH, 'images'], { env: { ...process.env, BERTH_CACHE_DIR: cache } });
    const short = /^([0-9a-f]{12}) .*oci:.*oci:busybox$/m.exec(listed.stdout)?.[1];
    expect(short, listed.stdout).toBeDefined();
    expect((await exec(cache, short!, 'cat', '/etc/motd')).stdout).toBe('from the image\n');
    expect((await exec(cache, `sha256:${short}`, 'cat', '/etc/motd')).stdout).toBe('from the image\n');
    const none = await exec(cache, '000000000000', 'true');
    expect(none.code).not.toBe(0);
    expect(none.stderr).toMatch(/no file is named 000000000000, and no cached image has a digest that starts with it[\s\S]*berth images/);
  });

  it('docker-archive: with an OCI layout inside (as Docker 25 saves) runs; a classic one says to convert it once', async () => {
    const cache = freshCache();
    const modern = path.join(work, 'saved-oci.tar');
    expect((await run('tar', ['-C', path.join(work, 'oci'), '-cf', modern, '.'])).code).toBe(0);
    const r = await exec(cache, `docker-archive:${modern}:busybox`, 'cat', '/etc/motd');
    expect(r.stdout, r.stderr).toBe('from the image\n');
    const classic = path.join(work, 'saved-classic.tar');
    const saved = await run('skopeo', ['copy', '--quiet', `oci:${work}/oci:busybox`, `docker-archive:${classic}:lab/busybox:1.0`]);
    expect(saved.code, saved.stderr).toBe(0);
    const refused = await exec(cache, `docker-archive:${classic}`, 'true');
    expect(refused.code).not.toBe(0);
    expect(refused.stderr).toMatch(/classic `docker save` archive[\s\S]*berth convert docker-archive:.*saved-classic\.tar -o IMAGE\.sqsh/);
  });

  it('a tag whose registry cannot be reached runs the image it named when last resolved here (a tag moved and moved back), with a warning', async () => {
    const cache = freshCache();
    // The tag names ep, then busybox, then ep again (a rollback): the last is the one to run.
    const ref = `docker://${registry.host}/lab/rolled:1`;
    const digestOf = async () => (JSON.parse((await pull(cache, ref, '--json')).stdout) as { manifestDigest: string }).manifestDigest;
    await push(`oci:${work}/oci:ep`, registry, 'lab/rolled:1');
    const ep = await digestOf();
    await push(`oci:${work}/oci:busybox`, registry, 'lab/rolled:1');
    expect(await digestOf()).not.toBe(ep);
    await push(`oci:${work}/oci:ep`, registry, 'lab/rolled:1');
    expect(await digestOf()).toBe(ep);
    const pulled = { manifestDigest: ep };
    await registry.stop();
    try {
      const r = await run(process.execPath, [BERTH, 'run', ref, 'rolled-back'], { env: { ...process.env, BERTH_CACHE_DIR: cache, BERTH_IMAGE_LINGER: '0' } });
      expect(r.stdout, r.stderr).toBe('ep rolled-back\n'); // ep's entrypoint: not busybox, converted more recently
      expect(r.stderr).toContain(`the registry of ${ref} cannot be reached: running the image it named when last resolved here (${pulled.manifestDigest})`);
      // berth pull says what it could not do: it never passes an old image off as a pull.
      const pulledOffline = await pull(cache, ref);
      expect(pulledOffline.code).toBe(125);
      expect(pulledOffline.stderr).toMatch(/cannot reach 127\.0\.0\.1/);
      // Another tag, never pulled, has nothing to fall back on: the registry's error stands.
      const other = await exec(cache, `docker://${registry.host}/lab/busybox:2.0`, 'true');
      expect(other.code).not.toBe(0);
      expect(other.stderr).toMatch(/cannot reach 127\.0\.0\.1/);
    } finally {
      await registry.restart();
    }
  }, 60_000);
});
