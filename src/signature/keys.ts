// Keys for cosign's key-based signatures, with Node's own crypto (OpenSSL underneath): public
// keys as cosign (cosign.pub) and openssl (`openssl pkey -pubout`) write them, PEM
// SubjectPublicKeyInfo; private keys as openssl writes them (PKCS#8 `BEGIN PRIVATE KEY`, or
// SEC1 `BEGIN EC PRIVATE KEY`), and cosign's own encrypted key files (cosign-key.ts). ECDSA
// P-256 signs the SHA-256 of the payload, DER-encoded (what `cosign sign --key` and
// `openssl dgst -sha256 -sign` make); Ed25519 signs the payload itself (pure Ed25519, as cosign
// and `openssl pkeyutl -sign -rawin` do). A key is named by its path and its fingerprint, the
// SHA-256 of its DER form (what `openssl pkey -pubin -outform DER | sha256sum` prints), so a
// message says which key even when two files hold the same one.
import { createHash, createPrivateKey, createPublicKey, sign, verify, type KeyObject } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { BerthError, osError } from '../errors.js';
import { decryptCosignKey, isCosignKey } from './cosign-key.js';

export interface PublicKey {
  path: string;
  fingerprint: string;
  key: KeyObject;
}

const KINDS = 'ECDSA P-256 or Ed25519';

function readKeyFile(file: string, what: string): string {
  try {
    return readFileSync(file, 'utf8');
  } catch (e: unknown) {
    throw osError(e, `cannot read the ${what} ${file}`) ?? e;
  }
}

function checkKind(key: KeyObject, file: string): void {
  const ok = key.asymmetricKeyType === 'ed25519' || (key.asymmetricKeyType === 'ec' && key.asymmetricKeyDetails?.namedCurve === 'prime256v1');
  if (!ok) {
    throw new BerthError('SIGNATURE_INVALID', `${file} is a ${key.asymmetricKeyType}${key.asymmetricKeyDetails?.namedCurve ? ` ${key.asymmetricKeyDetails.namedCurve}` : ''} key; berth takes ${KINDS} keys`,
      'make one with `openssl genpkey -algorithm ed25519 -out key.pem` or `openssl ecparam -name prime256v1 -genkey -noout | openssl pkcs8 -topk8 -nocrypt -out key.pem`');
  }
}

export function fingerprintOf(key: KeyObject): string {
  const pub = key.type === 'private' ? createPublicKey(key) : key;
  return `sha256:${createHash('sha256').update(pub.export({ type: 'spki', format: 'der' })).digest('hex')}`;
}

const loaded = new Map<string, PublicKey>();

/** A public key of a rule, read once per process. */
export function loadPublicKey(file: string): PublicKey {
  const known = loaded.get(file);
  if (known) return known;
  let key: KeyObject;
  try {
    key = createPublicKey(readKeyFile(file, 'public key'));
  } catch (e: unknown) {
    if (e instanceof BerthError) throw e;
    throw new BerthError('SIGNATURE_INVALID', `${file} is not a public key in PEM (${(e as Error).message})`,
      'give the public key as cosign or openssl write it (-----BEGIN PUBLIC KEY-----; openssl pkey -in key.pem -pubout -out key.pub)');
  }
  checkKind(key, file);
  const pub = { path: file, fingerprint: fingerprintOf(key), key };
  loaded.set(file, pub);
  return pub;
}

/** Whether `signature` over `payload` was made by `key`. */
export function verifies(key: KeyObject, payload: Buffer, signature: Buffer): boolean {
  try {
    return verify(key.asymmetricKeyType === 'ed25519' ? null : 'sha256', payload, key, signature);
  } catch {
    return false; // not even a well-formed signature
  }
}

/** A private key to sign with: a PEM as openssl writes it, or a cosign key file (its password from COSIGN_PASSWORD). */
export function loadPrivateKey(file: string, env: NodeJS.ProcessEnv): KeyObject {
  const text = readKeyFile(file, 'key');
  let key: KeyObject;
  try {
    key = isCosignKey(text) ? decryptCosignKey(text, file, env) : createPrivateKey(text);
  } catch (e: unknown) {
    if (e instanceof BerthError) throw e;
    throw new BerthError('SIGNATURE_INVALID', `${file} is not a private key berth can read (${(e as Error).message})`,
      `give a PEM private key (${KINDS}) as openssl writes it, unencrypted, or a cosign key file with COSIGN_PASSWORD set`);
  }
  checkKind(key, file);
  return key;
}

export function signBytes(key: KeyObject, payload: Buffer): Buffer {
  return sign(key.asymmetricKeyType === 'ed25519' ? null : 'sha256', payload, key);
}
