// cosign's own private key files (`cosign generate-key-pair`): PEM `ENCRYPTED SIGSTORE PRIVATE
// KEY` (older cosigns: `ENCRYPTED COSIGN PRIVATE KEY`) around JSON that says how the key is
// sealed: scrypt (N, r, p, salt) turns COSIGN_PASSWORD into a 32-byte key that opens a NaCl
// secretbox (XSalsa20-Poly1305) holding the PKCS#8 DER private key (sigstore's
// pkg/cryptoutils/encrypted.go). scrypt is Node's; secretbox is not in OpenSSL, so it is
// tweetnacl's (loaded only here, as the README's dependencies section says).
import { createPrivateKey, scryptSync, type KeyObject } from 'node:crypto';
import { createRequire } from 'node:module';
import { BerthError } from '../errors.js';

const PEM = /-----BEGIN ENCRYPTED (?:SIGSTORE|COSIGN) PRIVATE KEY-----([\s\S]*?)-----END ENCRYPTED (?:SIGSTORE|COSIGN) PRIVATE KEY-----/;

export function isCosignKey(text: string): boolean {
  return PEM.test(text);
}

interface Sealed {
  kdf: { name: string; params: { N: number; r: number; p: number }; salt: string };
  cipher: { name: string; nonce: string };
  ciphertext: string;
}

function sealedOf(text: string, file: string): Sealed {
  const bad = (why: string) => new BerthError('SIGNATURE_INVALID', `${file} is not a cosign key file berth can read: ${why}`, 'make a new pair with cosign generate-key-pair, or give a PEM key as openssl writes it');
  let doc: Sealed;
  try {
    doc = JSON.parse(Buffer.from(PEM.exec(text)![1]!.replace(/\s/g, ''), 'base64').toString('utf8')) as Sealed;
  } catch {
    throw bad('its content is not JSON');
  }
  if (doc?.kdf?.name !== 'scrypt' || doc.cipher?.name !== 'nacl/secretbox' || typeof doc.ciphertext !== 'string') {
    throw bad(`it is sealed with ${String(doc?.kdf?.name)} and ${String(doc?.cipher?.name)}, not scrypt and nacl/secretbox`);
  }
  const { N, r, p } = doc.kdf.params ?? {};
  if (![N, r, p].every((v) => Number.isSafeInteger(v) && v! > 0) || N! > 2 ** 20) throw bad('its scrypt parameters are out of range');
  return doc;
}

export function decryptCosignKey(text: string, file: string, env: NodeJS.ProcessEnv): KeyObject {
  const sealed = sealedOf(text, file);
  const password = env.COSIGN_PASSWORD;
  if (password === undefined) {
    throw new BerthError('SIGNATURE_INVALID', `${file} is an encrypted cosign key and COSIGN_PASSWORD is not set`, 'set COSIGN_PASSWORD to its password (empty for a key made without one)');
  }
  const { N, r, p } = sealed.kdf.params;
  const key = scryptSync(password, Buffer.from(sealed.kdf.salt, 'base64'), 32, { N, r, p, maxmem: 256 * N * r + 1024 * 1024 });
  const nacl = createRequire(import.meta.url)('tweetnacl') as typeof import('tweetnacl');
  const opened = nacl.secretbox.open(Buffer.from(sealed.ciphertext, 'base64'), Buffer.from(sealed.cipher.nonce, 'base64'), key);
  if (!opened) throw new BerthError('SIGNATURE_INVALID', `COSIGN_PASSWORD does not open ${file}`, 'check the password (COSIGN_PASSWORD)');
  return createPrivateKey({ key: Buffer.from(opened), format: 'der', type: 'pkcs8' });
}
