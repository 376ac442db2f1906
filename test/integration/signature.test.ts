// Image signatures by site policy (#16), against a real registry (Debian's docker-registry) that
// holds signed, unsigned, wrongly signed and re-tagged images. Signatures are made two ways: by
// `berth sign`, and independently by openssl over a payload the test writes itself, pushed with
// plain HTTP PUTs (as cosign's .sig tag, and as an OCI 1.1 referrer through the referrers tag
// schema), so that berth is not only checked against itself. Each policy outcome goes through
// pull and run, with the site's file given by BERTH_SITE_CONFIG (read only where
// /etc/berth/config.yaml does not exist, as on the test machines).
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BERTH, ROOT, cleanup, makeMultiPlatformLayout, run, tempDir } from '../helpers.js';
import { push, startRegistry, type Registry } from '../registry.js';

let work: string;
let registry: Registry;
let cacheN = 0;
const digests: Record<string, string> = {};
const freshCache = () => path.join(work, `cache-${++cacheN}`);
const sha = (b: Buffer | string) => `sha256:${createHash('sha256').update(b).digest('hex')}`;
const key = (name: string) => path.join(work, 'keys', name);

async function sh(cmd: string, args: string[], input?: string | Buffer): Promise<string> {
  const r = await run(cmd, args, { input });
  if (r.code !== 0) throw new Error(`${cmd} ${args.join(' ')}: ${r.stderr}`);
  return r.stdout;
}

/** berth with the given site policy (a file of work's), user file and cache. */
function berthWith(site: string | undefined, cache: string, args: string[], user = path.join(work, 'user-empty.yaml')) {
  return run(process.execPath, [BERTH, ...args], {
    env: { ...process.env, BERTH_CACHE_DIR: cache, BERTH_CONFIG: user, BERTH_IMAGE_LINGER: '0', ...(site ? { BERTH_SITE_CONFIG: path.join(work, site) } : {}) },
  });
}

const ref = (repo: string) => `docker://${registry.host}/${repo}`;
const nameOf = (repo: string) => `${registry.host}/${repo.replace(/[:@].*$/, '')}`;
const v2 = (repo: string, rest: string) => `http://${registry.host}/v2/${repo}/${rest}`;

/** The payload as cosign writes it, spelled out here rather than taken from berth. */
const payloadFor = (name: string, digest: string) =>
  `{"critical":{"identity":{"docker-reference":"${name}"},"image":{"docker-manifest-digest":"${digest}"},"type":"cosign container image signature"},"optional":null}`;

async function putBlob(repo: string, bytes: Buffer): Promise<string> {
  const digest = sha(bytes);
  const start = await fetch(v2(repo, 'blobs/uploads/'), { method: 'POST' });
  const location = new URL(start.headers.get('location')!, `http://${registry.host}`);
  location.searchParams.set('digest', digest);
  const put = await fetch(location, { method: 'PUT', body: new Uint8Array(bytes), headers: { 'content-type': 'application/octet-stream' } });
  if (put.status !== 201) throw new Error(`blob PUT: ${put.status} ${await put.text()}`);
  return digest;
}

async function putManifest(repo: string, tag: string, doc: object, mediaType: string): Promise<string> {
  const bytes = Buffer.from(JSON.stringify(doc));
  const res = await fetch(v2(repo, `manifests/${tag}`), { method: 'PUT', body: new Uint8Array(bytes), headers: { 'content-type': mediaType } });
  if (res.status !== 201) throw new Error(`manifest PUT ${tag}: ${res.status} ${await res.text()}`);
  return sha(bytes);
}

async function manifestDigest(repo: string, tag: string): Promise<string> {
  const res = await fetch(v2(repo, `manifests/${tag}`), { headers: { accept: 'application/vnd.oci.image.manifest.v1+json' } });
  return sha(Buffer.from(await res.arrayBuffer()));
}

/** A signature layer in a manifest of cosign's shape; `subject` makes it an OCI 1.1 referrer. */
async function signatureManifest(repo: string, payload: Buffer, signature: string, subject?: { digest: string; size: number }): Promise<object> {
  const layer = await putBlob(repo, payload);
  const config = Buffer.from('{}');
  const configDigest = await putBlob(repo, config);
  return {
    schemaVersion: 2, mediaType: 'application/vnd.oci.image.manifest.v1+json',
    ...(subject ? { artifactType: 'application/vnd.dev.cosign.artifact.sig.v1+json', subject: { mediaType: 'application/vnd.oci.image.manifest.v1+json', ...subject } } : {}),
    config: { mediaType: 'application/vnd.oci.image.config.v1+json', size: config.length, digest: configDigest },
    layers: [{ mediaType: 'application/vnd.dev.cosign.simplesigning.v1+json', size: payload.length, digest: layer, annotations: { 'dev.cosignproject.cosign/signature': signature } }],
  };
}

/** openssl's signature over `payload`: ECDSA P-256 over its SHA-256, or pure Ed25519; base64. */
async function opensslSign(keyFile: string, payload: Buffer, ed25519: boolean): Promise<string> {
  const file = path.join(work, `payload-${Math.random().toString(36).slice(2)}`);
  writeFileSync(file, payload);
  const sig = `${file}.sig`;
  if (ed25519) await sh('openssl', ['pkeyutl', '-sign', '-inkey', keyFile, '-rawin', '-in', file, '-out', sig]);
  else await sh('openssl', ['dgst', '-sha256', '-sign', keyFile, '-out', sig, file]);
  return readFileSync(sig).toString('base64');
}

/** cosign's .sig tag for `digest` in `repo`, holding `signature` over `payload`. */
async function pushSigTag(repo: string, digest: string, payload: Buffer, signature: string): Promise<void> {
  await putManifest(repo, `${digest.replace(':', '-')}.sig`, await signatureManifest(repo, payload, signature), 'application/vnd.oci.image.manifest.v1+json');
}

const images = (cache: string) => (existsSync(path.join(cache, 'images')) ? readdirSync(path.join(cache, 'images')).filter((f) => f.endsWith('.sqsh')) : []);

beforeAll(async () => {
  work = tempDir('signature');
  mkdirSync(path.join(work, 'keys'));
  // Two images with different digests: the same root, two configs.
  await sh('bash', ['-c', `set -e; source ${ROOT}/test/fixtures/busybox-root.sh; cd ${work}; umoci init --layout oci >/dev/null
    umoci new --image oci:bb; umoci unpack --rootless --image oci:bb bb >/dev/null; busybox_root bb/rootfs; echo 'from the image' > bb/rootfs/etc/motd
    umoci repack --refresh-bundle --image oci:bb bb >/dev/null; umoci config --image oci:bb --config.env PATH=/bin --config.cmd /bin/sh >/dev/null
    umoci config --image oci:bb --tag other --config.env OTHER=1 >/dev/null`]);
  for (const k of ['lab', 'stranger']) {
    await sh('openssl', ['genpkey', '-algorithm', 'ed25519', '-out', key(`${k}.pem`)]);
    await sh('openssl', ['pkey', '-in', key(`${k}.pem`), '-pubout', '-out', key(`${k}.pub`)]);
  }
  await sh('openssl', ['genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256', '-out', key('ec.pem')]);
  await sh('openssl', ['pkey', '-in', key('ec.pem'), '-pubout', '-out', key('ec.pub')]);
  registry = await startRegistry(path.join(work, 'registry'));
  for (const repo of ['signed', 'ossl', 'referrer', 'unsigned', 'stranger', 'tampered', 'otherdigest', 'copied', 'denied', 'keyless']) {
    await push(`oci:${work}/oci:bb`, registry, `lab/${repo}:1`);
  }
  await push(`oci:${work}/oci:other`, registry, 'lab/signed:other');
  digests.bb = await manifestDigest('lab/signed', '1');
  digests.other = await manifestDigest('lab/signed', 'other');

  // berth sign, with an Ed25519 PEM as openssl writes it.
  const signed = await run(process.execPath, [BERTH, 'sign', '--key', key('lab.pem'), ref('lab/signed:1'), '--json']);
  if (signed.code !== 0) throw new Error(signed.stderr);
  // openssl, ECDSA P-256, as cosign's .sig tag.
  const ossl = Buffer.from(payloadFor(nameOf('lab/ossl'), digests.bb));
  await pushSigTag('lab/ossl', digests.bb, ossl, await opensslSign(key('ec.pem'), ossl, false));
  // openssl, Ed25519, as an OCI 1.1 referrer listed by the referrers tag schema (sha256-HEX, an index).
  const refPayload = Buffer.from(payloadFor(nameOf('lab/referrer'), digests.bb));
  const referrer = await signatureManifest('lab/referrer', refPayload, await opensslSign(key('lab.pem'), refPayload, true), { digest: digests.bb, size: 0 });
  const referrerDigest = await putManifest('lab/referrer', `referrer-${Date.now()}`, referrer, 'application/vnd.oci.image.manifest.v1+json');
  const referrerSize = Buffer.byteLength(JSON.stringify(referrer));
  await putManifest('lab/referrer', digests.bb.replace(':', '-'), {
    schemaVersion: 2, mediaType: 'application/vnd.oci.image.index.v1+json',
    manifests: [{ mediaType: 'application/vnd.oci.image.manifest.v1+json', digest: referrerDigest, size: referrerSize, artifactType: 'application/vnd.dev.cosign.artifact.sig.v1+json' }],
  }, 'application/vnd.oci.image.index.v1+json');
  // Signed by a key no rule names.
  const stranger = Buffer.from(payloadFor(nameOf('lab/stranger'), digests.bb));
  await pushSigTag('lab/stranger', digests.bb, stranger, await opensslSign(key('stranger.pem'), stranger, true));
  // The lab's key, but a byte of the signature changed.
  const tampered = Buffer.from(payloadFor(nameOf('lab/tampered'), digests.bb));
  const good = Buffer.from(await opensslSign(key('lab.pem'), tampered, true), 'base64');
  good[10] ^= 1;
  await pushSigTag('lab/tampered', digests.bb, tampered, good.toString('base64'));
  // The lab's key over the other image's digest, put beside this one.
  const otherPayload = Buffer.from(payloadFor(nameOf('lab/otherdigest'), digests.other));
  await pushSigTag('lab/otherdigest', digests.bb, otherPayload, await opensslSign(key('lab.pem'), otherPayload, true));
  // lab/signed's own signature (naming lab/signed) copied beside the same image in lab/copied.
  const copied = Buffer.from(payloadFor(nameOf('lab/signed'), digests.bb));
  await pushSigTag('lab/copied', digests.bb, copied, await opensslSign(key('lab.pem'), copied, true));
  // A multi-platform index signed as cosign signs a tag: over the index's digest only.
  const multi = await makeMultiPlatformLayout(path.join(work, 'multi'), work);
  await push(`oci:${work}/multi:multi`, registry, 'lab/multi:latest', undefined, true);
  const indexRes = await fetch(v2('lab/multi', 'manifests/latest'), { headers: { accept: 'application/vnd.oci.image.index.v1+json' } });
  digests.index = sha(Buffer.from(await indexRes.arrayBuffer()));
  digests.amd64 = multi.amd64!;
  digests.arm64 = multi.arm64!;
  const indexPayload = Buffer.from(payloadFor(nameOf('lab/multi'), digests.index));
  await pushSigTag('lab/multi', digests.index, indexPayload, await opensslSign(key('ec.pem'), indexPayload, false));
  // lab/signed re-tagged: the same manifest under another tag.
  await sh('skopeo', ['copy', '--quiet', '--src-tls-verify=false', '--dest-tls-verify=false', ref('lab/signed:1'), ref('lab/signed:retagged')]);

  writeFileSync(path.join(work, 'user-empty.yaml'), '');
  const host = registry.host;
  writeFileSync(path.join(work, 'site.yaml'), `trust:
  - match: ${host}/lab/unsigned
    allow: unsigned
  - match: ${host}/lab/denied
    deny: true
  - match: ${host}/lab/keyless
    keyless: { issuer: https://token.actions.githubusercontent.com, subject: https://github.com/our-lab/app }
  - match: ${host}/lab/*
    require: [${key('lab.pub')}, ${key('ec.pub')}]
  - match: local
    deny: true
`);
  writeFileSync(path.join(work, 'site-ec-only.yaml'), `trust:\n  - match: ${host}/lab/*\n    require: [${key('ec.pub')}]\n  - match: local\n    allow: unsigned\n`);
  writeFileSync(path.join(work, 'site-local-ok.yaml'), `trust:\n  - match: local\n    allow: unsigned\n  - match: "*"\n    require: [${key('lab.pub')}]\n`);
}, 180_000);
afterAll(async () => {
  await registry?.stop();
  cleanup(work);
});

describe('pull and run under a site policy', () => {
  it('an image signed with berth sign pulls, records who signed it, and runs', async () => {
    const cache = freshCache();
    const pulled = await berthWith('site.yaml', cache, ['pull', ref('lab/signed:1')]);
    expect(pulled.code, pulled.stderr).toBe(0);
    const inspect = await berthWith('site.yaml', cache, ['inspect', pulled.stdout.trim()]);
    expect(inspect.stdout).toMatch(new RegExp(`^Signature:\\s+signed by ${key('lab.pub')} \\(sha256:[0-9a-f]{64}, cosign tag sha256-[0-9a-f]{64}\\.sig\\); docker://${nameOf('lab/signed')}@${digests.bb}; verified \\d{4}-`, 'm'));
    const json = JSON.parse((await berthWith('site.yaml', cache, ['inspect', '--json', pulled.stdout.trim()])).stdout);
    expect(json.image.provenance).toMatchObject({ name: nameOf('lab/signed'), manifestDigest: digests.bb, signers: [{ key: key('lab.pub') }] });
    const ran = await berthWith('site.yaml', cache, ['run', ref('lab/signed:1'), '--', 'cat', '/etc/motd']);
    expect(ran.stdout, ran.stderr).toBe('from the image\n');
  });

  it("berth sign's signature is cosign's shape, and openssl verifies it over the payload as the test spells it", async () => {
    const res = await fetch(v2('lab/signed', `manifests/${digests.bb.replace(':', '-')}.sig`), { headers: { accept: 'application/vnd.oci.image.manifest.v1+json' } });
    const manifest = await res.json() as { layers: { mediaType: string; digest: string; annotations: Record<string, string> }[] };
    expect(manifest.layers).toHaveLength(1);
    const layer = manifest.layers[0]!;
    expect(layer.mediaType).toBe('application/vnd.dev.cosign.simplesigning.v1+json');
    const payload = Buffer.from(await (await fetch(v2('lab/signed', `blobs/${layer.digest}`))).arrayBuffer());
    expect(payload.toString()).toBe(payloadFor(nameOf('lab/signed'), digests.bb));
    writeFileSync(path.join(work, 'berth-payload'), payload);
    writeFileSync(path.join(work, 'berth-payload.sig'), Buffer.from(layer.annotations['dev.cosignproject.cosign/signature']!, 'base64'));
    const verified = await run('openssl', ['pkeyutl', '-verify', '-pubin', '-inkey', key('lab.pub'), '-rawin', '-in', path.join(work, 'berth-payload'), '-sigfile', path.join(work, 'berth-payload.sig')]);
    expect(verified.stdout, verified.stderr).toMatch(/Signature Verified Successfully/);
    // Signing again adds nothing: the same signature is there already.
    expect((await run(process.execPath, [BERTH, 'sign', '--key', key('lab.pem'), ref('lab/signed:1')])).code).toBe(0);
    const again = await (await fetch(v2('lab/signed', `manifests/${digests.bb.replace(':', '-')}.sig`), { headers: { accept: 'application/vnd.oci.image.manifest.v1+json' } })).json() as { layers: unknown[] };
    expect(again.layers).toHaveLength(1);
  });

  it('signatures made by openssl: ECDSA in the .sig tag, Ed25519 as an OCI referrer (the referrers tag schema)', async () => {
    const cache = freshCache();
    const ossl = await berthWith('site.yaml', cache, ['pull', ref('lab/ossl:1')]);
    expect(ossl.code, ossl.stderr).toBe(0);
    const before = registry.requests().length;
    const referrer = await berthWith('site.yaml', cache, ['pull', ref('lab/referrer:1')]);
    expect(referrer.code, referrer.stderr).toBe(0);
    const asked = registry.requests().slice(before);
    // Debian 12's registry has no referrers API: berth asked, then read the tag schema's index.
    expect(asked).toContainEqual(expect.stringMatching(new RegExp(`GET /v2/lab/referrer/referrers/${digests.bb} 404`)));
    expect(asked).toContainEqual(expect.stringMatching(new RegExp(`GET /v2/lab/referrer/manifests/${digests.bb.replace(':', '-')} 200`)));
    const json = JSON.parse((await berthWith('site.yaml', cache, ['inspect', '--json', ref('lab/referrer:1')])).stdout);
    expect(json.image.provenance.signers).toMatchObject([{ key: key('lab.pub'), found: expect.stringMatching(/^referrer sha256:/) }]);
  });

  it('a signature over the index a tag names counts for the platform image it lists, on pull and on run', async () => {
    const cache = freshCache();
    const pulled = await berthWith('site.yaml', cache, ['pull', ref('lab/multi:latest'), '--platform', 'linux/arm64', '--json']);
    expect(pulled.code, pulled.stderr).toBe(0);
    const file = JSON.parse(pulled.stdout).path as string;
    const json = JSON.parse((await berthWith('site.yaml', cache, ['inspect', '--json', file])).stdout);
    expect(json.image.provenance).toMatchObject({ manifestDigest: digests.arm64, index: { digest: digests.index }, signers: [{ key: key('ec.pub') }] });
    // Judged again from the record (the index's bytes list the image): the pinned digest runs with no new verdict.
    expect((await berthWith('site.yaml', cache, ['pull', ref(`lab/multi@${digests.arm64}`), '--json'])).code).toBe(0);
    // Pinned to the platform's digest in a cache that does not hold it, nothing says it is in the signed index.
    const pinned = await berthWith('site.yaml', freshCache(), ['pull', ref(`lab/multi@${digests.amd64}`)]);
    expect(pinned.code).toBe(125);
    expect(pinned.stderr).toMatch(/lab\/multi@sha256:[0-9a-f]{64} is not signed by .*no signature was found/);
  });

  it('a re-tagged image is the same digest, and its signature holds', async () => {
    const r = await berthWith('site.yaml', freshCache(), ['pull', ref('lab/signed:retagged')]);
    expect(r.code, r.stderr).toBe(0);
  });

  it.each([
    ['unsigned', 'lab/signed:other', /is not signed by .*lab\.pub \(sha256:[0-9a-f]{12}…\), or .*ec\.pub .*no signature was found/],
    ['signed by an unknown key', 'lab/stranger:1', /signature 1 \(cosign tag sha256-[0-9a-f]{64}\.sig\) was not made by any of them/],
    ['a tampered signature', 'lab/tampered:1', /signature 1 .* was not made by any of them/],
    ['a signature for another digest', 'lab/otherdigest:1', /is by .*lab\.pub .* but it signs the digest sha256:[0-9a-f]{64}, not sha256:/],
    ['a signature for another repository', 'lab/copied:1', /but it signs the image in the repository [^ ]*\/lab\/signed, not [^ ]*\/lab\/copied/],
    ['a denied repository', 'lab/denied:1', /is denied by the site's policy \(.*site\.yaml:4: match .*\/lab\/denied: denied\)/],
    ['a keyless rule, which berth cannot verify offline', 'lab/keyless:1', /wants a keyless \(Fulcio\/Rekor\) signature .* refused rather than trusted/],
  ])('%s is refused on pull and on run, naming key, repository and digest, and nothing is converted', async (_what, repo, message) => {
    const cache = freshCache();
    const pulled = await berthWith('site.yaml', cache, ['pull', ref(repo)]);
    expect(pulled.code).toBe(125);
    expect(pulled.stderr).toMatch(message);
    const digest = repo.endsWith(':other') ? digests.other : digests.bb;
    expect(pulled.stderr).toContain(`docker://${nameOf(repo)}@${digest}`);
    expect(pulled.stderr).toMatch(/berth: hint: /);
    if (repo === 'lab/otherdigest:1') expect(pulled.stderr).toContain(`signs the digest ${digests.other}, not ${digests.bb}`);
    expect(images(cache)).toEqual([]);
    const ran = await berthWith('site.yaml', cache, ['run', ref(repo), '--', 'true']);
    expect(ran.code).toBe(125);
    expect(ran.stderr).toMatch(message);
  });

  it('an image the site allows unsigned pulls and runs', async () => {
    const cache = freshCache();
    const ran = await berthWith('site.yaml', cache, ['run', ref('lab/unsigned:1'), '--', 'cat', '/etc/motd']);
    expect(ran.stdout, ran.stderr).toBe('from the image\n');
    const inspect = await berthWith('site.yaml', cache, ['inspect', ref('lab/unsigned:1')]);
    expect(inspect.stdout).toMatch(/^Signature:\s+allowed unsigned; .* by .*site\.yaml:2: match .*\/lab\/unsigned: allowed unsigned$/m);
  });

  it('a user configuration cannot loosen the site\'s policy, and can tighten it', async () => {
    const loosen = path.join(work, 'user-loosen.yaml');
    writeFileSync(loosen, 'trust:\n  - match: "*"\n    allow: unsigned\n');
    const refused = await berthWith('site.yaml', freshCache(), ['pull', ref('lab/signed:other')], loosen);
    expect(refused.code).toBe(125);
    expect(refused.stderr).toMatch(/as the site's policy requires/);
    const tighten = path.join(work, 'user-tighten.yaml');
    writeFileSync(tighten, `trust:\n  - match: ${registry.host}/lab/signed\n    deny: true\n  - match: "*"\n    allow: unsigned\n`);
    const denied = await berthWith('site.yaml', freshCache(), ['pull', ref('lab/signed:1')], tighten);
    expect(denied.code).toBe(125);
    expect(denied.stderr).toMatch(/is denied by your policy \(.*user-tighten\.yaml:2/);
  });

  it('run judges the recorded verdict again against the policy of the day', async () => {
    const cache = freshCache();
    const copy = path.join(work, 'signed-copy.sqsh');
    const pulled = await berthWith('site.yaml', cache, ['pull', ref('lab/signed:1'), '-o', copy]);
    expect(pulled.code, pulled.stderr).toBe(0);
    // From the cache, by its reference: judged as lab/signed by the verdict recorded there.
    const cached = await berthWith('site.yaml', cache, ['run', ref('lab/signed:1'), '--', 'cat', '/etc/motd']);
    expect(cached.stdout, cached.stderr).toBe('from the image\n');
    // The -o copy is a file named by path: only berth's caches vouch for a verdict, so it is a
    // local image (which site.yaml denies), however true what it records.
    const fromFile = await berthWith('site.yaml', cache, ['run', copy, '--', 'true']);
    expect(fromFile.code).toBe(125);
    expect(fromFile.stderr).toMatch(/signed-copy\.sqsh \(a local image: its recorded verdict is not believed: a file named by path/);
    // The site now trusts only the ECDSA key: the recorded Ed25519 signature no longer does.
    const rotated = await berthWith('site-ec-only.yaml', cache, ['run', ref('lab/signed:1'), '--', 'true']);
    expect(rotated.code).toBe(125);
    expect(rotated.stderr).toMatch(new RegExp(`docker://${nameOf('lab/signed')}@${digests.bb}\\)? is not signed by .*ec\\.pub`));
    // Without a policy, it runs as before.
    expect((await berthWith(undefined, cache, ['run', copy, '--', 'true'])).code).toBe(0);
  });

  it('a local image is judged by the rule for local images', async () => {
    const local = path.join(work, 'local.sqsh');
    expect((await run(process.execPath, [BERTH, 'convert', `oci:${work}/oci:bb`, '-o', local, '-q'])).code).toBe(0);
    const denied = await berthWith('site.yaml', freshCache(), ['run', local, '--', 'true']);
    expect(denied.code).toBe(125);
    expect(denied.stderr).toMatch(/local\.sqsh \(a local image: not pulled from a registry under a policy; digest sha256:[0-9a-f]{64}\) is denied by the site's policy \(.*site\.yaml:\d+: match local: denied\)/);
    const layout = await berthWith('site.yaml', freshCache(), ['run', `oci:${work}/oci:bb`, '--', 'true']);
    expect(layout.code).toBe(125);
    expect(layout.stderr).toMatch(/a local image.*is denied/);
    const allowed = await berthWith('site-local-ok.yaml', freshCache(), ['run', local, '--', 'cat', '/etc/motd']);
    expect(allowed.stdout, allowed.stderr).toBe('from the image\n');
  });

  it('joining a running instance is judged by the policy of the day, as starting it was', async () => {
    const local = path.join(work, 'instance-local.sqsh');
    expect((await run(process.execPath, [BERTH, 'convert', `oci:${work}/oci:bb`, '-o', local, '-q'])).code).toBe(0);
    const runtime = tempDir('signature-runtime');
    const inRuntime = (site: string, args: string[]) => run(process.execPath, [BERTH, ...args], {
      env: { ...process.env, BERTH_CACHE_DIR: freshCache(), BERTH_CONFIG: path.join(work, 'user-empty.yaml'), BERTH_IMAGE_LINGER: '0', BERTH_RUNTIME_DIR: runtime, BERTH_SITE_CONFIG: path.join(work, site) },
    });
    try {
      const started = await inRuntime('site-local-ok.yaml', ['instance', 'start', local, 'judged', 'sleep', '60']);
      expect(started.code, started.stderr).toBe(0);
      expect((await inRuntime('site-local-ok.yaml', ['exec', 'instance://judged', 'cat', '/etc/motd'])).stdout).toBe('from the image\n');
      // The site now denies local images: the running instance takes no new command.
      const denied = await inRuntime('site.yaml', ['exec', 'instance://judged', 'true']);
      expect(denied.code).toBe(125);
      expect(denied.stderr).toMatch(/instance-local\.sqsh \(a local image[^\n]*is denied by the site's policy/);
    } finally {
      await inRuntime('site-local-ok.yaml', ['instance', 'stop', 'judged', '--force']);
      cleanup(runtime);
    }
  });

  it('an image cached before the policy is judged again when pulled, and the verdict recorded', async () => {
    const cache = freshCache();
    const before = await berthWith(undefined, cache, ['pull', ref(`lab/signed@${digests.bb}`), '--json']);
    expect(before.code, before.stderr).toBe(0);
    const file = JSON.parse(before.stdout).path as string;
    const unjudged = await berthWith('site.yaml', cache, ['run', file, '--', 'true']);
    expect(unjudged.stderr).toMatch(/a local image: not pulled from a registry under a policy/);
    const again = await berthWith('site.yaml', cache, ['run', ref(`lab/signed@${digests.bb}`), '--', 'cat', '/etc/motd']);
    expect(again.stdout, again.stderr).toBe('from the image\n');
    expect(images(cache)).toHaveLength(1); // recorded in the cached image, not converted again
    expect((await berthWith('site.yaml', cache, ['run', file, '--', 'true'])).code).toBe(0);
  });

  it('the same digest cached from an allowed repository does not let a denied one run', async () => {
    const cache = freshCache();
    expect((await berthWith('site.yaml', cache, ['pull', ref(`lab/signed@${digests.bb}`)])).code).toBe(0);
    const denied = await berthWith('site.yaml', cache, ['run', ref(`lab/denied@${digests.bb}`), '--', 'true']);
    expect(denied.code).toBe(125);
    expect(denied.stderr).toMatch(/lab\/denied@sha256:[0-9a-f]{64} is denied by the site's policy/);
  });

  it.each([
    [['sign', 'docker://x/y:1'], /berth sign needs --key KEY/],
    [['sign', '--key', '/nope.pem', 'img.sqsh'], /'img\.sqsh' is not a registry image: berth signs images pushed to a registry/],
    [['sign', '--key', '/nope.pem', 'docker://x/y:1'], /cannot read the key \/nope\.pem: no such file or directory/],
  ])('berth %j is refused with the fix', async (args, message) => {
    const r = await run(process.execPath, [BERTH, ...args]);
    expect(r.code).toBe(125);
    expect(r.stderr).toMatch(message);
    expect(r.stderr).toMatch(/berth: hint: /);
    expect(r.stderr).not.toMatch(/at .*\.js:\d+/);
  });

  it('berth doctor and berth config say what the policy is', async () => {
    const r = await berthWith('site.yaml', freshCache(), ['doctor', '--json']);
    const line = (JSON.parse(r.stdout) as { name: string; verdict: string; detail: string }[]).find((c) => c.name === 'image trust');
    expect(line).toMatchObject({ verdict: 'ok', detail: expect.stringMatching(/^site: .*\/lab\/unsigned allowed unsigned; .*\/lab\/denied denied; .*\/lab\/\* signed by one of .*lab\.pub, .*ec\.pub; local denied; anything else refused$/) });
    const shown = JSON.parse((await berthWith('site.yaml', freshCache(), ['config', '--json'])).stdout);
    expect(shown.trust.site[0]).toEqual({ match: `${registry.host}/lab/unsigned`, action: { kind: 'allow' }, where: `${path.join(work, 'site.yaml')}:2` });
    expect((await berthWith('site.yaml', freshCache(), ['config'])).stdout).toMatch(/^trust +site: .*\/lab\/unsigned allowed unsigned;/m);
    const none = await berthWith(undefined, freshCache(), ['doctor', '--json']);
    expect((JSON.parse(none.stdout) as { name: string; detail: string }[]).find((c) => c.name === 'image trust')?.detail).toBe('no trust: section: every image runs, signed or not');
  });
});
