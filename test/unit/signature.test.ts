// The signature policy's pure parts (#16): the trust: section as the loader reads it, pattern
// matching, the simple-signing payload's checks, the decision over site and user rules with
// real keys, and cosign's encrypted key files.
import { createPublicKey, generateKeyPairSync, randomBytes, scryptSync, sign, type KeyObject } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig, siteConfigPath } from '../../src/config/load.js';
import { decide, needsSignatures, type Candidate } from '../../src/signature/decide.js';
import { fingerprintOf, loadPrivateKey, loadPublicKey, verifies, type PublicKey } from '../../src/signature/keys.js';
import { judgeImage, readProvenance } from '../../src/signature/provenance.js';
import type { ImageMetadata } from '../../src/squashfs/metadata.js';
import { makePayload, payloadProblem } from '../../src/signature/payload.js';
import { describePolicy, matches, ruleFor, type TrustAction, type TrustPolicy, type TrustRule } from '../../src/signature/policy.js';
import { cleanup, tempDir } from '../helpers.js';

let dir: string;
beforeAll(() => {
  dir = tempDir('signature-unit');
});
afterAll(() => cleanup(dir));

function configWith(site: string, user = '') {
  writeFileSync(path.join(dir, 'site.yaml'), site);
  writeFileSync(path.join(dir, 'user.yaml'), user);
  return loadConfig({ BERTH_CONFIG: path.join(dir, 'user.yaml') }, path.join(dir, 'site.yaml'));
}

function problems(f: () => unknown): string {
  try {
    f();
  } catch (e: unknown) {
    return `${(e as Error).message}\n${(e as { hint?: string }).hint ?? ''}`;
  }
  return '';
}

describe('the trust: section', () => {
  it('is read into ordered rules, each with its file and line; the site\'s and the user\'s apart', () => {
    const c = configWith('cache:\n  dir: /x\ntrust:\n  - match: ghcr.io/our-lab/*\n    require: [/etc/berth/keys/lab.pub]\n  - match: docker.io/library/*\n    allow: unsigned\n  - match: "*"\n    deny: true\n',
      'trust:\n  - match: local\n    require: /home/me/k.pub\n');
    const site = path.join(dir, 'site.yaml');
    expect(c.trust.site).toEqual([
      { match: 'ghcr.io/our-lab/*', action: { kind: 'require', keys: ['/etc/berth/keys/lab.pub'] }, where: `${site}:4` },
      { match: 'docker.io/library/*', action: { kind: 'allow' }, where: `${site}:6` },
      { match: '*', action: { kind: 'deny' }, where: `${site}:8` },
    ]);
    expect(c.trust.user).toEqual([{ match: 'local', action: { kind: 'require', keys: ['/home/me/k.pub'] }, where: `${path.join(dir, 'user.yaml')}:2` }]);
    expect(c.values['cache.dir']).toBe('/x');
    expect(configWith('').trust).toEqual({});
  });

  it('takes the site\'s file from BERTH_SITE_CONFIG where /etc/berth/config.yaml does not exist', () => {
    writeFileSync(path.join(dir, 'other-site.yaml'), 'trust:\n  - match: "*"\n    deny: true\n');
    writeFileSync(path.join(dir, 'empty.yaml'), '');
    expect(loadConfig({ BERTH_SITE_CONFIG: path.join(dir, 'other-site.yaml'), BERTH_CONFIG: path.join(dir, 'empty.yaml') }).trust.site).toHaveLength(1);
  });

  it('BERTH_SITE_CONFIG cannot replace a site file that exists: a user cannot escape the site\'s policy', () => {
    const site = path.join(dir, 'the-site.yaml');
    const mine = { BERTH_SITE_CONFIG: path.join(dir, 'other-site.yaml') };
    expect(siteConfigPath(mine, site)).toBe(mine.BERTH_SITE_CONFIG);
    writeFileSync(site, 'trust:\n  - match: "*"\n    deny: true\n');
    expect(siteConfigPath(mine, site)).toBe(site);
  });

  it.each([
    ['trust:\n  match: "*"\n', /site\.yaml:2: trust must be a list of rules/],
    ['trust:\n  - "*"\n', /site\.yaml:2: trust\[0\] must be a rule/],
    ['trust:\n  - match: "*"\n    allow: unsigned\n    deny: true\n', /trust\[0\] \(\*\) must have exactly one of require, allow, deny, keyless, not allow and deny/],
    ['trust:\n  - require: [/k.pub]\n', /trust\[0\]\.match must be a registry\/repository pattern/],
    ['trust:\n  - match: x/*\n    require: [keys/lab.pub]\n', /site\.yaml:3: trust\[0\]\.require must be a list of absolute paths/],
    ['trust:\n  - match: x/*\n    allow: yes\n', /trust\[0\]\.allow must be 'unsigned'/],
    ['trust:\n  - match: x/*\n    deny: false\n', /trust\[0\]\.deny must be true/],
    ['trust:\n  - match: x/*\n    keyless: {issuer: https://x}\n', /trust\[0\]\.keyless must have issuer: and subject:/],
    ['trust:\n  - match: x/*\n    deny: true\n    signers: 2\n', /site\.yaml:4: trust\[0\]: unknown key 'signers'/],
  ])('refuses %j, naming file and line', (text, message) => {
    expect(problems(() => configWith(text))).toMatch(message);
  });

  it('matches names with * across slashes; local only by local or *', () => {
    expect(matches('ghcr.io/our-lab/*', 'ghcr.io/our-lab/app')).toBe(true);
    expect(matches('ghcr.io/our-lab/*', 'ghcr.io/our-lab/team/app')).toBe(true);
    expect(matches('ghcr.io/our-lab/*', 'ghcr.io/our-lab-evil/app')).toBe(false);
    expect(matches('ghcr.io/our-lab/app', 'ghcr.io/our-lab/app2')).toBe(false);
    expect(matches('docker.io/library/*', 'docker.io/library/ubuntu')).toBe(true);
    expect(matches('127.0.0.1:5000/x', '127.0.0.1:5000/x')).toBe(true);
    expect(matches('127.0.0.1:5000/x', '127.0.0.1:5000/xy')).toBe(false);
    expect(matches('1.0.0.1:5000/x', '1a0b0c1:5000/x')).toBe(false); // '.' is a dot, not any character
    // In the registry, * stays within the host: another registry's repository named like the host does not match.
    expect(matches('*.corp.example/*', 'ghcr.io/attacker/x.corp.example/app')).toBe(false);
    expect(matches('*.corp.example/*', 'reg.corp.example/team/app')).toBe(true);
    expect(matches('*', 'ghcr.io/a/b')).toBe(true);
    expect(matches('*', 'local')).toBe(true);
    expect(matches('local', 'local')).toBe(true);
    const rules = configWith('trust:\n  - match: a/*\n    deny: true\n  - match: "*"\n    allow: unsigned\n').trust.site!;
    expect(ruleFor(rules, 'a/b')?.action.kind).toBe('deny');
    expect(ruleFor(rules, 'c/d')?.action.kind).toBe('allow');
  });

  it('is said in one line by doctor', () => {
    expect(describePolicy({})).toBe('no trust: section: every image runs, signed or not');
    const c = configWith('trust:\n  - match: a/*\n    require: [/k.pub]\n', 'trust:\n  - match: "*"\n    allow: unsigned\n');
    expect(describePolicy(c.trust)).toBe('site: a/* signed by /k.pub; anything else refused | yours: * allowed unsigned');
  });
});

const DIGEST = `sha256:${'a'.repeat(64)}`;
const OTHER = `sha256:${'b'.repeat(64)}`;

describe('the simple-signing payload', () => {
  it('is cosign\'s, byte for byte', () => {
    expect(makePayload('ghcr.io/lab/app', DIGEST).toString()).toBe(
      `{"critical":{"identity":{"docker-reference":"ghcr.io/lab/app"},"image":{"docker-manifest-digest":"${DIGEST}"},"type":"cosign container image signature"},"optional":null}`);
  });

  it.each([
    ['the image it names', makePayload('ghcr.io/lab/app', DIGEST), undefined],
    ['a docker-reference with a tag', makePayload('ghcr.io/lab/app:1.0', DIGEST), undefined],
    ['another digest', makePayload('ghcr.io/lab/app', OTHER), `it signs the digest ${OTHER}, not ${DIGEST}`],
    ['another repository', makePayload('ghcr.io/lab/other', DIGEST), 'it signs the image in the repository ghcr.io/lab/other, not ghcr.io/lab/app'],
    ['not JSON', Buffer.from('{'), 'its payload is not JSON'],
    ['another type', Buffer.from(JSON.stringify({ critical: { type: 'atomic container signature' } })), 'its payload is of type "atomic container signature", not "cosign container image signature"'],
  ])('%s', (_what, payload, problem) => {
    expect(payloadProblem(payload, 'ghcr.io/lab/app', DIGEST)).toBe(problem);
  });

  it("takes Docker Hub's names as cosign writes them", () => {
    expect(payloadProblem(makePayload('index.docker.io/library/ubuntu', DIGEST), 'docker.io/library/ubuntu', DIGEST)).toBeUndefined();
  });
});

function keyPair(type: 'ed25519' | 'ec'): { privateKey: KeyObject; pub: PublicKey } {
  const { privateKey, publicKey } = type === 'ec' ? generateKeyPairSync('ec', { namedCurve: 'P-256' }) : generateKeyPairSync('ed25519');
  return { privateKey, pub: { path: `/keys/${type}.pub`, fingerprint: fingerprintOf(publicKey), key: publicKey } };
}

describe('decide', () => {
  const ed = keyPair('ed25519');
  const ec = keyPair('ec');
  const keys = (p: string) => [ed.pub, ec.pub].find((k) => k.path === p) ?? (() => { throw new Error(`no key ${p}`); })();
  const signed = (k: KeyObject, name: string, digest: string): Candidate => {
    const payload = makePayload(name, digest);
    return { payload, signature: sign(k.asymmetricKeyType === 'ed25519' ? null : 'sha256', payload, k), found: 'test' };
  };
  const rule = (match: string, action: TrustAction, where = 'site.yaml:1'): TrustRule => ({ match, action, where });
  const subject = { name: 'reg/lab/app', digest: DIGEST, label: `docker://reg/lab/app@${DIGEST}` };
  const site: TrustPolicy = { site: [rule('reg/lab/*', { kind: 'require', keys: ['/keys/ed25519.pub', '/keys/ec.pub'] }), rule('local', { kind: 'allow' }, 'site.yaml:3')] };

  it('accepts a signature by any required key over this digest and repository, and says who signed', () => {
    for (const k of [ed, ec]) {
      const v = decide(site, subject, [signed(k.privateKey, 'reg/lab/app', DIGEST)], keys);
      expect(v.signers).toMatchObject([{ key: k.pub.path, fingerprint: k.pub.fingerprint }]);
      expect(v.rules).toEqual(['site.yaml:1: match reg/lab/*: signed by one of /keys/ed25519.pub, /keys/ec.pub']);
    }
    expect(needsSignatures(site, 'reg/lab/app')).toBe(true);
    expect(needsSignatures(site, 'local')).toBe(false);
  });

  it('refuses, naming the keys, when no signature verifies', () => {
    const stranger = keyPair('ed25519');
    expect(() => decide(site, subject, [], keys)).toThrow(/docker:\/\/reg\/lab\/app@sha256:a+ is not signed by \/keys\/ed25519\.pub \(sha256:[0-9a-f]{12}…\), or \/keys\/ec\.pub .*no signature was found/);
    expect(() => decide(site, subject, [signed(stranger.privateKey, 'reg/lab/app', DIGEST)], keys)).toThrow(/signature 1 \(test\) was not made by any of them/);
    expect(() => decide(site, subject, [signed(ed.privateKey, 'reg/lab/app', OTHER)], keys)).toThrow(/is by \/keys\/ed25519\.pub .* but it signs the digest sha256:b+, not sha256:a+/);
  });

  it('a user policy tightens and never loosens', () => {
    const good = [signed(ed.privateKey, 'reg/lab/app', DIGEST)];
    expect(() => decide({ ...site, user: [rule('*', { kind: 'allow' }, 'user.yaml:2')] }, subject, [], keys)).toThrow(/as the site's policy requires/);
    expect(() => decide({ ...site, user: [rule('reg/lab/app', { kind: 'require', keys: ['/keys/ec.pub'] }, 'user.yaml:2')] }, subject, good, keys))
      .toThrow(/is not signed by \/keys\/ec\.pub .* as your policy requires \(user\.yaml:2/);
    expect(decide({ ...site, user: [rule('*', { kind: 'allow' }, 'user.yaml:2')] }, subject, good, keys).rules).toHaveLength(2);
  });

  it('refuses what no rule matches, a deny, and a keyless rule', () => {
    expect(() => decide(site, { name: 'other/app', digest: DIGEST, label: 'docker://other/app' }, [], keys)).toThrow(/no rule of the site's policy \(trust: in site\.yaml\) matches other\/app/);
    expect(() => decide({ site: [rule('*', { kind: 'deny' })] }, subject, [], keys)).toThrow(/is denied by the site's policy \(site\.yaml:1: match \*: denied\)/);
    expect(() => decide({ site: [rule('*', { kind: 'keyless', issuer: 'https://i', subject: 'me' })] }, subject, [], keys)).toThrow(/keyless .* refused rather than trusted/);
  });

  it('verifies ECDSA signatures as openssl makes them (DER) and Ed25519 as pure Ed25519', () => {
    const payload = Buffer.from('x');
    expect(verifies(ec.pub.key, payload, sign('sha256', payload, ec.privateKey))).toBe(true);
    expect(verifies(ed.pub.key, payload, sign(null, payload, ed.privateKey))).toBe(true);
    expect(verifies(ed.pub.key, payload, Buffer.from('not a signature'))).toBe(false);
  });
});

describe("cosign's encrypted key files", () => {
  /** A key file sealed as sigstore's cryptoutils seal one: scrypt, then a NaCl secretbox around PKCS#8 DER. */
  function cosignKeyFile(key: KeyObject, password: string): string {
    const nacl = createRequire(import.meta.url)('tweetnacl') as typeof import('tweetnacl');
    const salt = randomBytes(32);
    const nonce = randomBytes(24);
    const secret = scryptSync(password, salt, 32, { N: 32768, r: 8, p: 1, maxmem: 64 * 1024 * 1024 });
    const box = nacl.secretbox(new Uint8Array(key.export({ type: 'pkcs8', format: 'der' })), nonce, secret);
    const doc = { kdf: { name: 'scrypt', params: { N: 32768, r: 8, p: 1 }, salt: salt.toString('base64') }, cipher: { name: 'nacl/secretbox', nonce: nonce.toString('base64') }, ciphertext: Buffer.from(box).toString('base64') };
    return `-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----\n${Buffer.from(JSON.stringify(doc)).toString('base64').replace(/.{64}/g, '$&\n')}\n-----END ENCRYPTED SIGSTORE PRIVATE KEY-----\n`;
  }

  it('opens with COSIGN_PASSWORD, and is refused without it or with a wrong one', () => {
    const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const file = path.join(dir, 'cosign.key');
    writeFileSync(file, cosignKeyFile(privateKey, 'hunter2'));
    const opened = loadPrivateKey(file, { COSIGN_PASSWORD: 'hunter2' });
    expect(fingerprintOf(createPublicKey(opened))).toBe(fingerprintOf(publicKey));
    expect(() => loadPrivateKey(file, {})).toThrow(/is an encrypted cosign key and COSIGN_PASSWORD is not set/);
    expect(() => loadPrivateKey(file, { COSIGN_PASSWORD: 'wrong' })).toThrow(/COSIGN_PASSWORD does not open/);
  });

  it('refuses an RSA key: cosign key pairs are ECDSA P-256 or Ed25519', () => {
    const file = path.join(dir, 'rsa.pem');
    writeFileSync(file, generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ type: 'pkcs8', format: 'pem' }));
    expect(() => loadPrivateKey(file, {})).toThrow(/is a rsa key; berth takes ECDSA P-256 or Ed25519 keys/);
  });
});

describe('keys and recorded verdicts as hostile input', () => {
  it('a public key that is missing or not a key is said, with the fix, not as a stack', () => {
    expect(problems(() => loadPublicKey(path.join(dir, 'nope.pub')))).toMatch(/^cannot read the public key .*nope\.pub: no such file or directory \(ENOENT/);
    writeFileSync(path.join(dir, 'junk.pub'), 'hello');
    expect(problems(() => loadPublicKey(path.join(dir, 'junk.pub')))).toMatch(/junk\.pub is not a public key in PEM[\s\S]*BEGIN PUBLIC KEY/);
  });

  it('a malformed or mismatched recorded verdict counts as none: the image is judged as local', () => {
    const base = { manifestDigest: DIGEST } as unknown as ImageMetadata;
    expect(readProvenance({ ...base, provenance: { name: 'x', manifestDigest: DIGEST, verifiedAt: 'now', signers: [{ key: 1 }] } } as unknown as ImageMetadata)).toBeUndefined();
    expect(readProvenance({ ...base, provenance: 'signed, honest' } as unknown as ImageMetadata)).toBeUndefined();
    const policy: TrustPolicy = { site: [{ match: 'reg/*', action: { kind: 'allow' }, where: 's:1' }, { match: 'local', action: { kind: 'deny' }, where: 's:2' }] };
    const forged = { ...base, provenance: { name: 'reg/app', manifestDigest: OTHER, verifiedAt: 'now', rules: [], signers: [] } } as unknown as ImageMetadata;
    const believed = () => undefined;
    expect(() => judgeImage(forged, 'f.sqsh', true, policy, believed)).toThrow(/f\.sqsh \(a local image: its recorded verdict is for another digest; digest sha256:a+\) is denied/);
    const honest = { ...base, provenance: { name: 'reg/app', manifestDigest: DIGEST, verifiedAt: 'now', rules: [], signers: [] } } as unknown as ImageMetadata;
    expect(judgeImage(honest, 'f.sqsh', true, policy, believed)?.name).toBe('reg/app');
    // Named by path (not an entry of berth's caches): never believed, whoever owns it.
    expect(() => judgeImage(honest, 'f.sqsh', false, policy, believed)).toThrow(/a local image: its recorded verdict is not believed: a file named by path/);
    expect(() => judgeImage(honest, 'f.sqsh', true, policy, () => 'f.sqsh belongs to uid 1234')).toThrow(/a local image: its recorded verdict is not believed: f\.sqsh belongs to uid 1234/);
    expect(judgeImage(honest, 'f.sqsh', true, {})).toBeUndefined();
  });
});
