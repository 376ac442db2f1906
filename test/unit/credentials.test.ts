// Where credentials come from: the environment (for the registry BERTH_REGISTRY names only),
// then ~/.docker/config.json (credHelpers and credsStore through real docker-credential-*
// programs, then auths); and where they may be sent (registry.ts's rule). The requests
// themselves, to real and hostile servers: test/integration/pull.test.ts and
// test/security/credentials.test.ts.
import { chmodSync, mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { findCredentials, registryKey } from '../../src/image/credentials.js';
import { mayCarryCredentials } from '../../src/image/registry.js';
import { cleanup, tempDir } from '../helpers.js';

let dir: string;
let env: NodeJS.ProcessEnv;

beforeAll(() => {
  dir = tempDir('creds');
  mkdirSync(path.join(dir, 'bin'));
  // A credential helper as Docker's protocol has them: the server on stdin, JSON on stdout.
  const helper = path.join(dir, 'bin', 'docker-credential-berthtest');
  writeFileSync(helper, '#!/bin/sh\nread server\n[ "$1" = get ] && printf \'{"ServerURL":"%s","Username":"helped","Secret":"from-helper"}\' "$server"\n');
  chmodSync(helper, 0o755);
  writeFileSync(path.join(dir, 'config.json'), JSON.stringify({
    auths: { 'plain.example:5000': { auth: Buffer.from('alice:pw:with:colons').toString('base64') }, 'https://index.docker.io/v1/': { auth: Buffer.from('hub:hubpw').toString('base64') } },
    credHelpers: { 'helped.example': 'berthtest' },
  }));
  env = { PATH: `${path.join(dir, 'bin')}:${process.env.PATH}`, DOCKER_CONFIG: dir };
});
afterAll(() => cleanup(dir));

describe('findCredentials', () => {
  it('reads auths, Docker Hub under its legacy key, and credHelpers programs', () => {
    expect(findCredentials('plain.example:5000', env)).toEqual({ username: 'alice', password: 'pw:with:colons' });
    expect(findCredentials('docker.io', env)).toEqual({ username: 'hub', password: 'hubpw' });
    expect(findCredentials('helped.example', env)).toEqual({ username: 'helped', password: 'from-helper' });
    expect(findCredentials('other.example', env)).toBeUndefined();
  });

  it('prefers BERTH_REGISTRY_USERNAME and BERTH_REGISTRY_PASSWORD (batch jobs), for the registry BERTH_REGISTRY names', () => {
    const job = { ...env, BERTH_REGISTRY: 'plain.example:5000', BERTH_REGISTRY_USERNAME: 'job', BERTH_REGISTRY_PASSWORD: 'secret' };
    expect(findCredentials('plain.example:5000', job)).toEqual({ username: 'job', password: 'secret' });
    // Another registry gets its own (config.json's), or none: never the job's.
    expect(findCredentials('docker.io', job)).toEqual({ username: 'hub', password: 'hubpw' });
    expect(findCredentials('other.example', job)).toBeUndefined();
    expect(findCredentials('docker.io', { ...job, BERTH_REGISTRY: 'https://index.docker.io/v1/' })).toEqual({ username: 'job', password: 'secret' });
  });

  it('refuses them without BERTH_REGISTRY, or with a repository in it, naming the fix', () => {
    const unscoped = { ...env, BERTH_REGISTRY_USERNAME: 'job', BERTH_REGISTRY_PASSWORD: 'secret' };
    expect(() => findCredentials('ghcr.io', unscoped)).toThrow(expect.objectContaining({
      code: 'CONFIG_INVALID', message: expect.stringMatching(/not BERTH_REGISTRY/), hint: expect.stringMatching(/BERTH_REGISTRY=ghcr\.io/),
    }));
    expect(() => findCredentials('ghcr.io', { ...unscoped, BERTH_REGISTRY: 'ghcr.io/org' })).toThrow(/is not a registry host/);
    // A username alone (berth login asks for the password) is not environment credentials.
    expect(findCredentials('plain.example:5000', { ...env, BERTH_REGISTRY_USERNAME: 'job' })).toEqual({ username: 'alice', password: 'pw:with:colons' });
  });

  it('names a registry one way: schemes, slashes, case and Docker Hub\'s aliases', () => {
    expect(['docker.io', 'index.docker.io', 'registry-1.docker.io', 'https://index.docker.io/v1/'].map(registryKey)).toEqual(Array(4).fill('docker.io'));
    expect(registryKey('HTTPS://GHCR.io/')).toBe('ghcr.io');
    expect(registryKey('127.0.0.1:5000')).toBe('127.0.0.1:5000');
  });
});

describe('where credentials may go', () => {
  const cases: [string, string, boolean][] = [
    ['https://ghcr.io/v2/x/manifests/1', 'ghcr.io', true],
    ['https://auth.docker.io/token', 'registry-1.docker.io', true], // another host's realm, over https (as Docker)
    ['http://registry.example/v2/x', 'registry.example', false], // --insecure: plain http off this machine
    ['http://auth.example/token', 'registry.example', false],
    ['http://192.0.2.2:5000/token', '127.0.0.1:5000', false], // a loopback registry naming a realm elsewhere
    ['http://127.0.0.1:5001/token', '127.0.0.1:5000', true],
    ['http://127.7.7.7/token', 'localhost:5000', true],
    ['http://[::1]:5001/token', '[::1]:5000', true],
    ['http://localhost:5001/token', '127.0.0.1:5000', true],
    ['http://127.0.0.1:5001/token', 'registry.example', false], // a remote registry pointing at a local port another user may hold
    ['ftp://127.0.0.1/token', '127.0.0.1:5000', false],
  ];
  it.each(cases)('%s for %s: %s', (url, apiHost, allowed) => {
    expect(mayCarryCredentials(new URL(url), apiHost)).toBe(allowed);
  });
});
