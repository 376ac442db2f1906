// Where credentials come from: the environment, then ~/.docker/config.json (credHelpers and
// credsStore through real docker-credential-* programs, then auths).
import { chmodSync, mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { findCredentials } from '../../src/image/credentials.js';
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

  it('prefers BERTH_REGISTRY_USERNAME and BERTH_REGISTRY_PASSWORD (batch jobs)', () => {
    expect(findCredentials('plain.example:5000', { ...env, BERTH_REGISTRY_USERNAME: 'job', BERTH_REGISTRY_PASSWORD: 'secret' }))
      .toEqual({ username: 'job', password: 'secret' });
  });
});
