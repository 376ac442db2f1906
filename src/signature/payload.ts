// cosign's signed payload: Red Hat's "simple signing" JSON, as `cosign sign` writes it
// (sigstore/cosign pkg/cosign/payload; containers/image docs/containers-signature.5.md):
//   {"critical":{"identity":{"docker-reference":"REGISTRY/REPO"},
//    "image":{"docker-manifest-digest":"sha256:..."},"type":"cosign container image signature"},
//    "optional":null}
// A signature says only what its payload says, so a good signature is believed only for the
// manifest digest and the repository its payload names: the image being pulled, in the
// repository it is pulled from (a signature copied beside the same image in another
// repository, or made for another digest, proves nothing about this one).
import { imageName } from './policy.js';

export const PAYLOAD_TYPE = 'cosign container image signature';
/** The annotation of a signature layer that holds the base64 signature over the layer's bytes. */
export const SIGNATURE_ANNOTATION = 'dev.cosignproject.cosign/signature';
export const PAYLOAD_MEDIA_TYPE = 'application/vnd.dev.cosign.simplesigning.v1+json';

/** The payload for `name` (REGISTRY/REPOSITORY) at `digest`, byte for byte as cosign makes it. */
export function makePayload(name: string, digest: string): Buffer {
  return Buffer.from(JSON.stringify({
    critical: { identity: { 'docker-reference': name }, image: { 'docker-manifest-digest': digest }, type: PAYLOAD_TYPE },
    optional: null,
  }));
}

/** A docker-reference as cosign writes it (index.docker.io/..., a tag or digest after it) as policies name images. */
function referenceName(reference: string): string {
  const noDigest = reference.split('@')[0]!;
  const slash = noDigest.indexOf('/');
  const colon = noDigest.lastIndexOf(':');
  const repo = colon > slash ? noDigest.slice(0, colon) : noDigest;
  const first = repo.slice(0, repo.indexOf('/'));
  return first ? imageName(first, repo.slice(first.length + 1)) : repo;
}

/** Why `payload` is not a signature of `name` at `digest`, or undefined when it is. */
export function payloadProblem(payload: Buffer, name: string, digest: string): string | undefined {
  let doc: unknown;
  try {
    doc = JSON.parse(payload.toString('utf8'));
  } catch {
    return 'its payload is not JSON';
  }
  const critical = (doc as { critical?: Record<string, unknown> } | null)?.critical;
  if (typeof critical !== 'object' || critical === null) return 'its payload has no "critical" section';
  if (critical['type'] !== PAYLOAD_TYPE) return `its payload is of type ${JSON.stringify(critical['type'])}, not "${PAYLOAD_TYPE}"`;
  const signed = (critical['image'] as Record<string, unknown> | undefined)?.['docker-manifest-digest'];
  if (signed !== digest) return `it signs the digest ${typeof signed === 'string' ? signed : '(none)'}, not ${digest}`;
  const reference = (critical['identity'] as Record<string, unknown> | undefined)?.['docker-reference'];
  if (typeof reference !== 'string' || referenceName(reference) !== name) {
    return `it signs the image in the repository ${typeof reference === 'string' ? reference : '(none)'}, not ${name}`;
  }
  return undefined;
}
