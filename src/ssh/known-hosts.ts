// known_hosts as OpenSSH writes it: "HOSTS KEYTYPE BASE64", HOSTS being names or [name]:port
// (comma-separated, with * and ? patterns) or hashed as |1|SALT|HMAC-SHA1(name); @revoked
// lines name keys never to trust. A host is trusted when one of its lines holds the key it
// shows; a host with lines but none holding that key has changed its key.
import { createHash, createHmac } from 'node:crypto';
import { appendFileSync, mkdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { sshPattern } from './glob.js';

export type HostKeyVerdict = 'trusted' | 'unknown' | 'changed' | 'revoked';

/** The name a host has in known_hosts: host, or [host]:port off port 22. */
export const knownHostsName = (host: string, port: number) => (port === 22 ? host : `[${host}]:${port}`);

/** OpenSSH's fingerprint of a public key blob: SHA256:base64 without padding. */
export function fingerprint(blob: Buffer): string {
  return `SHA256:${createHash('sha256').update(blob).digest('base64').replace(/=+$/, '')}`;
}

function nameMatches(field: string, name: string): boolean {
  if (field.startsWith('|1|')) {
    const [, , salt, hash] = field.split('|');
    return createHmac('sha1', Buffer.from(salt!, 'base64')).update(name).digest('base64') === hash;
  }
  let matched = false;
  for (const p of field.split(',')) {
    const negated = p.startsWith('!');
    if (sshPattern(negated ? p.slice(1) : p).test(name)) {
      if (negated) return false;
      matched = true;
    }
  }
  return matched;
}

export function checkHostKey(files: string[], host: string, port: number, blob: Buffer): HostKeyVerdict {
  const name = knownHostsName(host, port);
  const key = blob.toString('base64');
  let seen = false;
  for (const file of files) {
    let text: string;
    try {
      text = readFileSync(file, 'utf8');
    } catch {
      continue;
    }
    for (const line of text.split('\n')) {
      const fields = line.trim().split(/\s+/);
      if (!fields[0] || fields[0].startsWith('#')) continue;
      const marker = fields[0].startsWith('@') ? fields.shift() : undefined;
      const [hosts, , b64] = fields;
      if (!hosts || !b64 || !nameMatches(hosts, name)) continue;
      if (marker === '@revoked' && b64 === key) return 'revoked';
      if (marker === '@cert-authority') continue;
      seen = true;
      if (b64 === key) return 'trusted';
    }
  }
  return seen ? 'changed' : 'unknown';
}

/** Records a host's key (trust on first use, --accept-new-host-key), as OpenSSH does. */
export function addHostKey(file: string, host: string, port: number, keyType: string, blob: Buffer): void {
  mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
  appendFileSync(file, `${knownHostsName(host, port)} ${keyType} ${blob.toString('base64')}\n`, { mode: 0o600 });
}

/** The key type named inside an SSH public key blob (its first string). */
export function keyType(blob: Buffer): string {
  return blob.toString('latin1', 4, 4 + blob.readUInt32BE(0));
}
