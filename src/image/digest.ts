// Digests berth can check itself: sha256 and sha512, the two algorithms the OCI image spec
// registers (descriptor.md, "Registered algorithms"), both from node:crypto. A digest in any
// other algorithm names bytes that berth cannot verify, so it is refused, never trusted.
import { createHash } from 'node:crypto';
import { BerthError } from '../errors.js';

export type DigestAlgorithm = 'sha256' | 'sha512';

/** Hex digits of each algorithm's encoded part; a Map, so that 'constructor' is no algorithm. */
const HEX_LENGTH = new Map<string, number>([['sha256', 64], ['sha512', 128]]);

/** The grammar of descriptor.md: algorithm ":" encoded. */
const GRAMMAR = /^([a-z0-9]+(?:[+._-][a-z0-9]+)*):([a-zA-Z0-9=_-]+)$/;

/** Why `text` is not a digest berth can verify, or undefined when it is one. */
export function digestProblem(text: string): string | undefined {
  const m = GRAMMAR.exec(text);
  if (!m) return `must be a digest ALGORITHM:HEX, not '${clip(text)}'`;
  const length = HEX_LENGTH.get(m[1]!);
  if (length === undefined) return `uses the digest algorithm '${clip(m[1]!)}', which berth cannot verify (it checks sha256 and sha512)`;
  if (m[2]!.length !== length || !/^[0-9a-f]+$/.test(m[2]!)) return `is not a ${m[1]} digest (${length} lowercase hex digits): '${clip(text)}'`;
  return undefined;
}

/** The digest's algorithm and hex, or a BerthError naming `what` when berth cannot verify it. */
export function parseDigest(text: string, what: string): { algorithm: DigestAlgorithm; hex: string } {
  const problem = digestProblem(text);
  if (problem) {
    throw new BerthError('UNSUPPORTED_MEDIA_TYPE', `${what}: the digest ${problem}`,
      'berth accepts only content it can verify; copy or push the image again with sha256 digests (what every image tool writes)');
  }
  const [algorithm, hex] = text.split(':') as [DigestAlgorithm, string];
  return { algorithm, hex };
}

/** The digest of `data` in `algorithm`. */
export function digestOf(data: Buffer, algorithm: DigestAlgorithm): string {
  return `${algorithm}:${createHash(algorithm).update(data).digest('hex')}`;
}

/** Checks `data` against `digest`; a mismatch is a BerthError with both digests. */
export function verifyBytes(data: Buffer, digest: string, what: string, hint: string): void {
  const actual = digestOf(data, parseDigest(digest, what).algorithm);
  if (actual !== digest) {
    throw new BerthError('DIGEST_MISMATCH', `${what} does not match its digest: expected ${digest}, got ${actual}`, hint);
  }
}

/** Long or hostile text in a message: the first 80 characters. */
function clip(text: string): string {
  return text.length > 80 ? `${text.slice(0, 80)}…` : text;
}
