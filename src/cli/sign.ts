// berth sign --key KEY docker://REF: the flags and what is printed; the signing is src/signature/sign.ts's.
import { BerthError } from '../errors.js';
import { hostPlatform, parsePlatform } from '../image/platform.js';
import { signImage } from '../signature/sign.js';

export async function signCommand(reference: string, flags: { key?: string; platform?: string; insecure?: boolean; json?: boolean }): Promise<string> {
  if (!flags.key) throw new BerthError('USAGE', 'berth sign needs --key KEY', 'e.g. berth sign --key lab.pem docker://REGISTRY/REPO:TAG (a PEM private key, or a cosign key file with COSIGN_PASSWORD)');
  if (!reference.startsWith('docker://')) {
    throw new BerthError('USAGE', `'${reference}' is not a registry image: berth signs images pushed to a registry`, 'push it first (skopeo copy, docker push), then berth sign --key KEY docker://REGISTRY/REPO:TAG');
  }
  const signed = await signImage(reference, flags.key, flags.platform ? parsePlatform(flags.platform) : hostPlatform(), flags.insecure ?? false);
  if (flags.json) return JSON.stringify(signed);
  return `${signed.reference} signed by ${signed.fingerprint} (tag ${signed.tag})`;
}
