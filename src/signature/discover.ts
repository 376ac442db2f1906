// Finding an image's cosign signatures in its registry, both ways registries hold them:
// - cosign's tag: the manifest tagged `sha256-HEX.sig` in the image's repository, whose layers
//   are payloads, each with its signature in the `dev.cosignproject.cosign/signature`
//   annotation (sigstore/cosign specs/SIGNATURE_SPEC.md);
// - OCI 1.1 referrers: manifests whose `subject` is the image, listed by the referrers API
//   (GET /v2/REPO/referrers/DIGEST) or, where a registry lacks it (Debian 12's docker-registry,
//   distribution 2.8, answers 404), by the index tagged `sha256-HEX` (the spec's referrers tag
//   schema); cosign's have the artifact type below and the same layers. Notation's signatures
//   (application/vnd.cncf.notary.signature) are listed there too; berth does not verify them
//   and says so.
// Every blob is checked against its digest; a registry that holds nothing answers 404, and any
// other failure stops the pull (no signature found is never "unsigned, so allowed").
import { BerthError, isBerthError } from '../errors.js';
import { findCredentials } from '../image/credentials.js';
import { verifyBytes } from '../image/digest.js';
import type { DockerReference } from '../image/docker-reference.js';
import { RegistryClient } from '../image/registry.js';
import type { Candidate } from './decide.js';
import { SIGNATURE_ANNOTATION } from './payload.js';

export const COSIGN_ARTIFACT_TYPE = 'application/vnd.dev.cosign.artifact.sig.v1+json';
export const NOTATION_ARTIFACT_TYPE = 'application/vnd.cncf.notary.signature';
const OCI_INDEX = 'application/vnd.oci.image.index.v1+json';
/** A payload is a few hundred bytes; a larger "signature" is refused unread. */
const MAX_PAYLOAD = 1024 * 1024;
/** The distribution spec's limit for a manifest, which a referrers list is. */
const MAX_INDEX = 4 * 1024 * 1024;

export interface Found {
  candidates: Candidate[];
  /** What was there but is not verified (Notation signatures), for the refusal's words. */
  unverified: string[];
}

export function signatureClient(ref: DockerReference, insecure: boolean): RegistryClient {
  return new RegistryClient(ref, { insecure, credentials: () => findCredentials(ref.registry), timeoutMs: 30_000, retries: 2 });
}

/** cosign's tag for the signatures of `digest`: sha256-HEX.sig. */
export function signatureTag(digest: string): string {
  return `${digest.replace(':', '-')}.sig`;
}

const missing = (e: unknown) => isBerthError(e) && e.code === 'IMAGE_NOT_IN_SOURCE';

/** A response's body, or a refusal once it passes `max` bytes: a registry does not make berth hold what it likes. */
async function bounded(res: Response, max: number, what: string): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let length = 0;
  const tooLarge = () => new BerthError('SOURCE_INVALID', `${what} is larger than ${max} bytes`, 'the registry is corrupt or hostile; nothing was verified');
  if (Number(res.headers.get('content-length') ?? 0) > max) {
    await res.body?.cancel();
    throw tooLarge();
  }
  for await (const chunk of res.body ?? []) {
    length += (chunk as Uint8Array).length;
    if (length > max) throw tooLarge();
    chunks.push(Buffer.from(chunk as Uint8Array));
  }
  return Buffer.concat(chunks);
}

async function json(res: Response, what: string): Promise<Record<string, unknown>> {
  const bytes = await bounded(res, MAX_INDEX, what);
  try {
    return JSON.parse(bytes.toString('utf8')) as Record<string, unknown>;
  } catch {
    throw new BerthError('SOURCE_INVALID', `${what} is not JSON`, 'the registry is corrupt or hostile; nothing was verified');
  }
}

async function manifestDoc(client: RegistryClient, id: string): Promise<Record<string, unknown> | undefined> {
  try {
    const m = await client.manifest(id);
    if (id.startsWith('sha256:')) verifyBytes(m.bytes, id, `the signature manifest ${id}`, 'the registry is corrupt or tampering');
    return JSON.parse(m.bytes.toString('utf8')) as Record<string, unknown>;
  } catch (e: unknown) {
    if (missing(e)) return undefined;
    if (e instanceof SyntaxError) throw new BerthError('SOURCE_INVALID', `the signature manifest ${id} is not JSON`, 'the registry is corrupt or hostile; nothing was verified');
    throw e;
  }
}

/** The payloads and signatures of one signature manifest's layers. */
async function layersOf(client: RegistryClient, doc: Record<string, unknown>, found: string): Promise<Candidate[]> {
  const layers = Array.isArray(doc['layers']) ? (doc['layers'] as Record<string, unknown>[]) : [];
  const out: Candidate[] = [];
  for (const layer of layers) {
    const signature = (layer['annotations'] as Record<string, unknown> | undefined)?.[SIGNATURE_ANNOTATION];
    const digest = layer['digest'];
    if (typeof signature !== 'string' || typeof digest !== 'string' || !/^sha256:[0-9a-f]{64}$/.test(digest)) continue;
    if (typeof layer['size'] === 'number' && layer['size'] > MAX_PAYLOAD) continue;
    const payload = await bounded(await client.get('blobs', digest), MAX_PAYLOAD, `the signature payload ${digest}`);
    verifyBytes(payload, digest, `the signature payload ${digest}`, 'the registry is corrupt or tampering');
    out.push({ payload, signature: Buffer.from(signature, 'base64'), found });
  }
  return out;
}

/** The referrers of `digest`: from the API, else from the referrers tag schema's index. */
async function referrers(client: RegistryClient, digest: string): Promise<Record<string, unknown>[]> {
  let index: Record<string, unknown> | undefined;
  try {
    index = await json(await client.get('referrers', digest, { accept: OCI_INDEX }), `the referrers of ${digest}`);
  } catch (e: unknown) {
    // No referrers API (404, or a registry that answers something else for an unknown path): the tag schema.
    if (!isBerthError(e) || !['IMAGE_NOT_IN_SOURCE', 'SOURCE_INVALID'].includes(e.code)) throw e;
    index = await manifestDoc(client, digest.replace(':', '-'));
  }
  return Array.isArray(index?.['manifests']) ? (index['manifests'] as Record<string, unknown>[]) : [];
}

/** Every cosign signature the registry holds for the image `digest` of `client`'s repository. */
export async function findSignatures(client: RegistryClient, digest: string): Promise<Found> {
  const found: Found = { candidates: [], unverified: [] };
  const tag = signatureTag(digest);
  const sig = await manifestDoc(client, tag);
  if (sig) found.candidates.push(...(await layersOf(client, sig, `cosign tag ${tag}`)));
  for (const r of await referrers(client, digest)) {
    const type = r['artifactType'];
    const id = r['digest'];
    if (typeof id !== 'string') continue;
    if (type === NOTATION_ARTIFACT_TYPE) found.unverified.push(`a Notation signature (${id}), which berth does not verify`);
    if (type !== COSIGN_ARTIFACT_TYPE) continue;
    const doc = await manifestDoc(client, id);
    if (doc) found.candidates.push(...(await layersOf(client, doc, `referrer ${id.slice(0, 19)}…`)));
  }
  return found;
}
