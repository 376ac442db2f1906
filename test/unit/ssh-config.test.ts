// ~/.ssh/config and known_hosts as OpenSSH reads them: checked against ssh's own resolution
// (`ssh -G`) and against files that ssh-keygen writes and hashes.
import { spawnSync } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseDestination, resolveTarget } from '../../src/ssh/config.js';
import { addHostKey, checkHostKey, fingerprint } from '../../src/ssh/known-hosts.js';
import { cleanup, tempDir } from '../helpers.js';

let home: string;
let config: string;
beforeAll(() => {
  home = tempDir('ssh-config');
  mkdirSync(path.join(home, '.ssh/config.d'), { recursive: true });
  config = path.join(home, '.ssh/config');
  writeFileSync(config, [
    'Include config.d/*.conf',
    'Host cluster login?',
    '  HostName login.example.org',
    '  User alice',
    '  IdentityFile ~/.ssh/id_cluster',
    '  ProxyJump bastion',
    'Host *.example.org !secret.example.org',
    '  Port 2222',
    'Host *',
    '  User fallback',
    '  IdentityFile ~/.ssh/id_other',
    '',
  ].join('\n'));
  writeFileSync(path.join(home, '.ssh/config.d/10-bastion.conf'), 'Host bastion\n  HostName gw.example.org\n  Port 22022\n  HostKeyAlias gateway\n');
});
afterAll(() => cleanup(home));

/** What OpenSSH itself resolves for a host (ssh -G prints the final options). */
function sshG(host: string): Record<string, string> {
  const r = spawnSync('ssh', ['-G', '-F', config, host], { encoding: 'utf8', env: { ...process.env, HOME: home } });
  return Object.fromEntries(r.stdout.split('\n').filter(Boolean).map((l) => [l.slice(0, l.indexOf(' ')), l.slice(l.indexOf(' ') + 1)]));
}

describe('resolveTarget', () => {
  it('resolves as ssh -G does: first value wins, patterns, negation, Include', () => {
    for (const host of ['cluster', 'login1', 'node.example.org', 'secret.example.org', 'bastion', 'elsewhere']) {
      const mine = resolveTarget(host, config, { HOME: home, USER: 'me' });
      const theirs = sshG(host);
      expect({ host, hostname: mine.host, user: mine.user, port: String(mine.port) }).toEqual({ host, hostname: theirs.hostname, user: theirs.user, port: theirs.port });
    }
  });

  it('keeps every IdentityFile in order, expands ~, and reads ProxyJump and HostKeyAlias', () => {
    const t = resolveTarget('cluster', config, { HOME: home });
    expect(t.identityFiles).toEqual([path.join(home, '.ssh/id_cluster'), path.join(home, '.ssh/id_other')]);
    expect(t.proxyJump).toEqual(['bastion']);
    expect(resolveTarget('bastion', config, { HOME: home }).hostKeyAlias).toBe('gateway');
  });

  it('reads USER@HOST:PORT destinations, and the command line wins over the file', () => {
    expect(parseDestination('bob@[::1]:2200')).toEqual({ user: 'bob', host: '::1', port: 2200 });
    expect(parseDestination('ssh://h.org')).toEqual({ user: undefined, host: 'h.org', port: undefined });
    const t = resolveTarget('bob@cluster:2200', config, { HOME: home });
    expect([t.user, t.port, t.host]).toEqual(['bob', 2200, 'login.example.org']);
  });
});

describe('known_hosts', () => {
  const key = (dir: string, name: string) => {
    spawnSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', path.join(dir, name)]);
    const [type, b64] = readFileSync(path.join(dir, `${name}.pub`), 'utf8').split(' ');
    return { type: type!, blob: Buffer.from(b64!, 'base64') };
  };

  it('trusts, refuses changed and unknown keys, in plain and hashed (ssh-keygen -H) files', () => {
    const dir = tempDir('known-hosts');
    const a = key(dir, 'a');
    const b = key(dir, 'b');
    const file = path.join(dir, 'known_hosts');
    addHostKey(file, 'login.example.org', 22, a.type, a.blob);
    addHostKey(file, '10.0.0.5', 2222, a.type, a.blob);
    for (const hashed of [false, true]) {
      if (hashed) expect(spawnSync('ssh-keygen', ['-H', '-f', file]).status).toBe(0);
      expect(readFileSync(file, 'utf8').includes('|1|')).toBe(hashed);
      expect(checkHostKey([file], 'login.example.org', 22, a.blob)).toBe('trusted');
      expect(checkHostKey([file], 'login.example.org', 22, b.blob)).toBe('changed');
      expect(checkHostKey([file], '10.0.0.5', 2222, a.blob)).toBe('trusted');
      expect(checkHostKey([file], '10.0.0.5', 22, a.blob)).toBe('unknown');
      expect(checkHostKey([file], 'other.example.org', 22, a.blob)).toBe('unknown');
    }
    // OpenSSH's own fingerprint of the key.
    expect(fingerprint(a.blob)).toBe(spawnSync('ssh-keygen', ['-l', '-f', path.join(dir, 'a.pub')], { encoding: 'utf8' }).stdout.split(' ')[1]);
    writeFileSync(file, `@revoked * ${b.type} ${b.blob.toString('base64')}\n`, { flag: 'a' });
    expect(checkHostKey([file], 'anything', 22, b.blob)).toBe('revoked');
    cleanup(dir);
  });
});
