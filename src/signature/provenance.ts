// The verdict, kept with the image: when a pull under a policy is judged (decide.ts), what was
// decided (the image's repository and digest, the signatures that verified and by which key,
// when, by which rules) goes into the berth image's metadata as `provenance`, and is judged
// again, against the policy of the day, every time the image is run, exec'd, made a Slurm
// step's plan or an instance (src/plan/prepare.ts). Run and pull share decide(): the recorded
// signatures are verified again with the rules' keys, so a verdict cannot be edited into an
// image without the key, and a key the site has since dropped refuses the image. An image
// with no verdict (a local file, an OCI layout, one converted before the policy) is judged as
// `local`.
//
// What the verdict does not prove: that the file's squashfs is what the manifest digest names.
// That is believed as berth believes any image file (SECURITY.md: the user's own files, and
// cache files by owner and digest); a user who sets out to forge an image file can. The policy
// guards what comes from registries, not against the user (see SECURITY.md).
//
// The verdict is added to an image already cached as one more metadata trailer after the first
// (the last one is read; squashfs readers ignore what follows the file system): appending
// leaves the old trailer whole until the new one's last byte, and a file cut short in between
// has no trailer magic at its end, so it is read from /.berth/image.json, without a verdict.
import { createHash } from 'node:crypto';
import { closeSync, fstatSync, lstatSync, openSync } from 'node:fs';
import path from 'node:path';
import { config } from '../config/load.js';
import { BerthError, isBerthError, osError } from '../errors.js';
import type { DockerReference } from '../image/docker-reference.js';
import { checkDirPath, describeDoubt, fileDoubt, makeTrust, uidOf } from '../image/trust.js';
import { metadataBytes, readMetadataTrailer, parseMetadata, writeMetadataTrailer, type ImageMetadata } from '../squashfs/metadata.js';
import { decide, hasPolicy, needsSignatures, type Candidate, type Signer, type Verdict } from './decide.js';
import { findSignatures, signatureClient } from './discover.js';
import { payloadProblem } from './payload.js';
import { imageName, LOCAL, type TrustPolicy } from './policy.js';

export interface Provenance {
  /** REGISTRY/REPOSITORY the image was pulled from. */
  name: string;
  manifestDigest: string;
  /** When the pull judged it (ISO 8601). */
  verifiedAt: string;
  /** The rules that decided, FILE:LINE first. */
  rules: string[];
  /** The signatures that verified (none where the policy allows the image unsigned). */
  signers: Signer[];
  /** The index it was pulled through, when a signature is over that: its digest and bytes (base64), which list manifestDigest. */
  index?: { digest: string; manifest: string };
}

const isString = (v: unknown): v is string => typeof v === 'string';

/** An image's recorded verdict, if it is well formed: the metadata is the image's own text, not trusted. */
export function readProvenance(metadata: ImageMetadata): Provenance | undefined {
  const p = (metadata as { provenance?: unknown }).provenance as Record<string, unknown> | undefined;
  if (typeof p !== 'object' || p === null) return undefined;
  const signers = Array.isArray(p['signers']) ? (p['signers'] as Record<string, unknown>[]) : undefined;
  const signerOk = (s: Record<string, unknown>) => typeof s === 'object' && s !== null && ['key', 'fingerprint', 'found', 'payload', 'signature'].every((k) => isString(s[k]));
  if (!isString(p['name']) || !isString(p['manifestDigest']) || !isString(p['verifiedAt']) || !signers?.every(signerOk)) return undefined;
  const rules = Array.isArray(p['rules']) ? p['rules'].filter(isString) : [];
  const index = p['index'] as Record<string, unknown> | undefined;
  const indexOk = typeof index === 'object' && index !== null && isString(index['digest']) && isString(index['manifest']);
  return { name: p['name'], manifestDigest: p['manifestDigest'], verifiedAt: p['verifiedAt'], rules, signers: signers as unknown as Signer[],
    ...(indexOk ? { index: { digest: index['digest'] as string, manifest: index['manifest'] as string } } : {}) };
}

/** The recorded index's digest, if its bytes hash to it and it lists `digest`: only then does a signature over it count. */
function listingIndex(index: Provenance['index'], digest: string): string | undefined {
  if (!index) return undefined;
  const bytes = Buffer.from(index.manifest, 'base64');
  if (`sha256:${createHash('sha256').update(bytes).digest('hex')}` !== index.digest) return undefined;
  return indexLists(bytes, digest) ? index.digest : undefined;
}

/** Whether the index manifest `bytes` lists the manifest `digest`. */
function indexLists(bytes: Buffer, digest: string): boolean {
  try {
    const doc = JSON.parse(bytes.toString('utf8')) as { manifests?: { digest?: unknown }[] };
    return Array.isArray(doc.manifests) && doc.manifests.some((m) => m?.digest === digest);
  } catch {
    return false;
  }
}

/** The policy in force: the site's file and the user's. */
export function currentPolicy(): TrustPolicy {
  return config().trust;
}

/** A pull's verdict for `ref` at `digest`: undefined without a policy; throws IMAGE_UNTRUSTED when refused. */
export async function verifyPull(ref: DockerReference, digest: string, insecure: boolean, through?: { digest: string; bytes: Buffer }, policy = currentPolicy()): Promise<Provenance | undefined> {
  if (!hasPolicy(policy)) return undefined;
  const name = imageName(ref.registry, ref.repository);
  const label = `docker://${name}@${digest}`;
  const index = through && indexLists(through.bytes, digest) ? through : undefined;
  const candidates: Candidate[] = [];
  const unverified: string[] = [];
  if (needsSignatures(policy, name)) {
    const client = signatureClient(ref, insecure);
    for (const d of [digest, ...(index ? [index.digest] : [])]) {
      const found = await findSignatures(client, d);
      candidates.push(...found.candidates);
      unverified.push(...found.unverified);
    }
  }
  let verdict: Verdict;
  try {
    verdict = decide(policy, { name, digest, label, ...(index ? { index: index.digest } : {}) }, candidates);
  } catch (e: unknown) {
    if (isBerthError(e) && unverified.length > 0) throw new BerthError(e.code, `${e.message}; the registry also holds ${unverified.join(', ')}`, e.hint);
    throw e;
  }
  const overIndex = index !== undefined && verdict.signers.some((sg) => payloadProblem(Buffer.from(sg.payload, 'base64'), name, index.digest) === undefined);
  return { name, manifestDigest: digest, verifiedAt: new Date().toISOString(), rules: verdict.rules, signers: verdict.signers,
    ...(overIndex ? { index: { digest: index.digest, manifest: index.bytes.toString('base64') } } : {}) };
}

/**
 * Why the verdict recorded in `file` is not to be believed, or undefined when it is: the file
 * is a regular file of the user's, root's or the site cache owner's, which no one else can
 * write, in directories no one else can change (the cache rules, src/image/trust.ts). Anyone
 * can copy a real verdict, signatures and all, into an image of their own making; so another
 * user's file is judged as the local image it is, whatever it says.
 */
export function verdictDoubt(file: string): string | undefined {
  const owner = config().values['cache.site-owner'];
  const trust = makeTrust(process.getuid!(), typeof owner === 'string' ? uidOf(owner, 'cache.site-owner') : undefined);
  const st = lstatSync(file, { throwIfNoEntry: false });
  if (!st) return `${file} is gone`;
  const doubt = fileDoubt(file, st, trust) ?? checkDirPath(path.dirname(file), trust).doubt;
  return doubt ? describeDoubt(doubt) : undefined;
}

/**
 * Judges an image about to run by its recorded verdict (or as local); undefined without a
 * policy. `vouched`: the file is an entry of berth's caches, or the Slurm plugin's staged copy of
 * one (a registry image): only berth's own writing vouches for a verdict. Any file named by path
 * may be a copy of someone else's making with a real verdict pasted in (cp, berth convert of
 * it, a staged copy of it), so it is judged as the local image it is.
 */
export function judgeImage(metadata: ImageMetadata, file: string, vouched: boolean | (() => boolean), policy = currentPolicy(), doubtOf: (file: string) => string | undefined = verdictDoubt): Verdict | undefined {
  if (!hasPolicy(policy)) return undefined;
  const p = readProvenance(metadata);
  // `vouched` may be a question (a look into the caches): asked only where a verdict is to be judged.
  const doubt = p ? ((typeof vouched === 'function' ? vouched() : vouched) ? doubtOf(file) : 'a file named by path, not an image of berth\'s caches (run it by its docker:// reference or its digest)') : undefined;
  if (p && !doubt && p.manifestDigest === metadata.manifestDigest) {
    const candidates = p.signers.map((s) => ({ payload: Buffer.from(s.payload, 'base64'), signature: Buffer.from(s.signature, 'base64'), found: `recorded ${p.verifiedAt}, ${s.found}` }));
    const index = listingIndex(p.index, p.manifestDigest);
    return decide(policy, { name: p.name, digest: p.manifestDigest, label: `${file} (docker://${p.name}@${p.manifestDigest})`, ...(index ? { index } : {}) }, candidates);
  }
  const why = !p ? 'not pulled from a registry under a policy' : doubt ? `its recorded verdict is not believed: ${doubt}` : 'its recorded verdict is for another digest';
  return decide(policy, { name: LOCAL, digest: metadata.manifestDigest, label: `${file} (a local image: ${why}${metadata.manifestDigest ? `; digest ${metadata.manifestDigest}` : ''})` }, []);
}

/** Whether the image's recorded verdict passes the policy of the day (no policy: yes). */
export function recordedVerdictHolds(metadata: ImageMetadata, file: string, policy = currentPolicy()): boolean {
  try {
    judgeImage(metadata, file, true, policy);
    return true;
  } catch (e: unknown) {
    if (isBerthError(e) && e.code === 'IMAGE_UNTRUSTED') return false;
    throw e;
  }
}

/** The image's metadata as its trailer has it now. */
export function readTrailerMetadata(file: string): ImageMetadata | undefined {
  let fd: number;
  try {
    fd = openSync(file, 'r');
  } catch (e: unknown) {
    throw osError(e, `cannot read the image ${file}`) ?? e;
  }
  try {
    const text = readMetadataTrailer(fd, fstatSync(fd).size);
    return text === undefined ? undefined : parseMetadata(text, file);
  } finally {
    closeSync(fd);
  }
}

/** Adds `provenance` to the berth image `file` (the user's own), as a newer metadata trailer. */
export function recordProvenance(file: string, provenance: Provenance): void {
  let fd: number;
  try {
    fd = openSync(file, 'r+');
  } catch (e: unknown) {
    throw osError(e, `cannot record the signature verdict in ${file}`) ?? e;
  }
  try {
    const size = fstatSync(fd).size;
    const text = readMetadataTrailer(fd, size);
    if (text === undefined) {
      throw new BerthError('NOT_A_BERTH_IMAGE', `${file} has no metadata trailer to record the signature verdict in`, `remove it (berth rm ${provenance.manifestDigest}) and pull again`);
    }
    const metadata: ImageMetadata = { ...parseMetadata(text, file), provenance };
    writeMetadataTrailer(fd, size, metadataBytes(metadata));
  } catch (e: unknown) {
    throw osError(e, `cannot record the signature verdict in ${file}`) ?? e;
  } finally {
    closeSync(fd);
  }
}

/** The verdict in one line, for a job's log and berth inspect: what ran, who signed it. */
export function describeVerdict(v: Verdict, verifiedAt?: string): string {
  const what = v.name === LOCAL ? `local image${v.digest ? ` ${v.digest}` : ''}` : `docker://${v.name}@${v.digest}`;
  const who = v.signers.length > 0
    ? `signed by ${v.signers.map((s) => `${s.key} (${s.fingerprint})`).join(', ')}`
    : 'allowed unsigned';
  return `${what}: ${who}${verifiedAt ? `, verified ${verifiedAt}` : ''} (${v.rules.join('; ')})`;
}
