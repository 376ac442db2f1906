// berth sign --key KEY docker://REF: signs the image manifest that `berth pull` of REF on this
// platform judges (a tag resolved to its digest; an index to this platform's manifest), in
// cosign's format, so that cosign verifies it too: the simple-signing payload (payload.ts) as a
// blob, and the manifest tagged sha256-HEX.sig holding it as a layer, the signature in the
// layer's annotation. A signature manifest there already keeps its layers and gets this one
// added (as cosign does), once.
import { createHash } from 'node:crypto';
import { BerthError } from '../errors.js';
import { Caches } from '../image/caches.js';
import type { Platform } from '../image/platform.js';
import type { RegistryClient } from '../image/registry.js';
import { RegistrySource } from '../image/registry-source.js';
import { signatureClient, signatureTag } from './discover.js';
import { fingerprintOf, loadPrivateKey, signBytes } from './keys.js';
import { makePayload, PAYLOAD_MEDIA_TYPE, SIGNATURE_ANNOTATION } from './payload.js';
import { imageName } from './policy.js';

const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';
const OCI_CONFIG = 'application/vnd.oci.image.config.v1+json';

export interface Signed {
  reference: string;
  digest: string;
  tag: string;
  fingerprint: string;
}

const sha256 = (b: Buffer) => `sha256:${createHash('sha256').update(b).digest('hex')}`;

/** Uploads a blob unless the registry has it (a monolithic upload: POST, then PUT with the digest). */
async function pushBlob(client: RegistryClient, bytes: Buffer): Promise<string> {
  const digest = sha256(bytes);
  const started = await client.send('POST', 'blobs/uploads/', undefined, { 'content-length': '0' });
  await started.body?.cancel();
  const location = started.headers.get('location');
  if (!location) throw new BerthError('SOURCE_INVALID', `${client.describe}: the registry started an upload but named no Location`, 'report the registry software');
  const at = new URL(location, 'http://placeholder');
  at.searchParams.set('digest', digest);
  const target = /^https?:\/\//.test(location) ? at.toString() : `${at.pathname}${at.search}`;
  const done = await client.send('PUT', target, bytes, { 'content-type': 'application/octet-stream', 'content-length': String(bytes.length) });
  await done.body?.cancel();
  return digest;
}

/** The signature manifest's layers there already (none if there is no such tag). */
async function existingLayers(client: RegistryClient, tag: string): Promise<Record<string, unknown>[]> {
  try {
    const m = await client.manifest(tag);
    const doc = JSON.parse(m.bytes.toString('utf8')) as { layers?: unknown };
    return Array.isArray(doc.layers) ? (doc.layers as Record<string, unknown>[]) : [];
  } catch (e: unknown) {
    if ((e as { code?: unknown }).code === 'IMAGE_NOT_IN_SOURCE') return [];
    throw e;
  }
}

export async function signImage(reference: string, keyFile: string, platform: Platform, insecure: boolean, env: NodeJS.ProcessEnv = process.env): Promise<Signed> {
  const key = loadPrivateKey(keyFile, env);
  const source = new RegistrySource(reference, { caches: new Caches(() => {}), insecure, parallel: 1 });
  const digest = await source.manifestDigest(platform);
  const name = imageName(source.ref.registry, source.ref.repository);
  const payload = makePayload(name, digest);
  const signature = signBytes(key, payload).toString('base64');
  const client = signatureClient(source.ref, insecure);
  const tag = signatureTag(digest);
  const payloadDigest = await pushBlob(client, payload);
  const layers = (await existingLayers(client, tag)).filter((l) => (l['annotations'] as Record<string, unknown> | undefined)?.[SIGNATURE_ANNOTATION] !== signature);
  layers.push({ mediaType: PAYLOAD_MEDIA_TYPE, size: payload.length, digest: payloadDigest, annotations: { [SIGNATURE_ANNOTATION]: signature } });
  const config = Buffer.from(JSON.stringify({ architecture: '', os: '', config: {}, rootfs: { type: 'layers', diff_ids: layers.map((l) => l['digest']) } }));
  const configDigest = await pushBlob(client, config);
  const manifest = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: OCI_MANIFEST, config: { mediaType: OCI_CONFIG, size: config.length, digest: configDigest }, layers }));
  const put = await client.send('PUT', `manifests/${tag}`, manifest, { 'content-type': OCI_MANIFEST });
  await put.body?.cancel();
  return { reference: `docker://${name}@${digest}`, digest, tag, fingerprint: fingerprintOf(key) };
}
