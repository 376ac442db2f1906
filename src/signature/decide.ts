// The one decision: may this image run, under these rules, with these signatures? Pure but for
// reading the rules' public keys. The same function judges a pull (the signatures the
// registry holds, discover.ts) and a run (the signatures recorded in the image when it was
// pulled, provenance.ts), so the two cannot disagree: a key the site has since removed, or a
// rule since turned to deny, refuses an image already in the cache too.
//
// The site's rules and the user's are judged apart, and the image must pass both (a user may
// tighten, never loosen). An image that no rule of a policy matches is refused by it: a site
// that writes a policy has said what may run (end it with `- match: "*"` to say what else).
import { BerthError } from '../errors.js';
import { loadPublicKey, verifies, type PublicKey } from './keys.js';
import { payloadProblem } from './payload.js';
import { describeAction, LOCAL, ruleFor, type TrustPolicy, type TrustRule } from './policy.js';

/** A signature as found: the payload and the signature over it, and where it was found. */
export interface Candidate {
  payload: Buffer;
  signature: Buffer;
  /** For messages: `cosign tag sha256-HEX.sig`, `referrer sha256:...`, `recorded in the image`. */
  found: string;
}

/** A signature that verified: by which key, over which payload. What provenance records. */
export interface Signer {
  key: string;
  fingerprint: string;
  found: string;
  payload: string;
  signature: string;
}

export interface Verdict {
  /** REGISTRY/REPOSITORY, or local. */
  name: string;
  digest: string | null;
  signers: Signer[];
  /** The rules that decided, in words, each with its FILE:LINE. */
  rules: string[];
}

/** The image for messages: what it is and where it came from. */
export interface Subject {
  name: string;
  digest: string | null;
  /** `docker://NAME@DIGEST`, or the file for a local image. */
  label: string;
  /**
   * The index the image was pulled through, which lists its manifest: cosign signs what a tag
   * names, so a signature over the index counts for each image it lists.
   */
  index?: string;
}

const LAYERS = [['site', "the site's policy"], ['user', 'your policy']] as const;

function layers(policy: TrustPolicy): { rules: TrustRule[]; whose: string }[] {
  return LAYERS.flatMap(([k, whose]) => (policy[k] ? [{ rules: policy[k]!, whose }] : []));
}

export function hasPolicy(policy: TrustPolicy): boolean {
  return policy.site !== undefined || policy.user !== undefined;
}

/** Whether judging `name` needs signatures (a require rule decides it somewhere): only then are they looked for. */
export function needsSignatures(policy: TrustPolicy, name: string): boolean {
  return layers(policy).some(({ rules }) => ruleFor(rules, name)?.action.kind === 'require');
}

const keyWords = (k: PublicKey) => `${k.path} (${k.fingerprint.slice(0, 19)}…)`;

function refuse(message: string, hint: string): BerthError {
  return new BerthError('IMAGE_UNTRUSTED', message, hint);
}

/** Judges `subject` with `candidates`; returns the verdict, or throws IMAGE_UNTRUSTED naming the key, repository and digest. */
export function decide(policy: TrustPolicy, subject: Subject, candidates: Candidate[], loadKey: (path: string) => PublicKey = loadPublicKey): Verdict {
  const verdict: Verdict = { name: subject.name, digest: subject.digest, signers: [], rules: [] };
  const local = subject.name === LOCAL;
  for (const { rules, whose } of layers(policy)) {
    const rule = ruleFor(rules, subject.name);
    if (!rule) {
      throw refuse(`${subject.label}: no rule of ${whose} (trust: in ${rules[0]?.where.replace(/:\d+$/, '') ?? 'the configuration'}) matches ${subject.name}, so it may not run`,
        local ? 'run an image pulled from a registry the policy allows, or ask the site\'s admins for a `match: local` rule'
          : `pull an image the policy names, or ask the site's admins to add a rule for ${subject.name}`);
    }
    const said = `${rule.where}: match ${rule.match}: ${describeAction(rule.action)}`;
    verdict.rules.push(said);
    const action = rule.action;
    if (action.kind === 'allow') continue;
    if (action.kind === 'deny') {
      throw refuse(`${subject.label} is denied by ${whose} (${said})`, local ? 'run an image pulled from a registry the policy allows' : 'use an image the policy allows; the site\'s admins set it in /etc/berth/config.yaml');
    }
    if (action.kind === 'keyless') {
      throw refuse(`${subject.label}: ${whose} wants a keyless (Fulcio/Rekor) signature (${said}), which berth cannot verify here: it needs Sigstore's trust root and the transparency log; refused rather than trusted`,
        'ask the site\'s admins for a rule with require: [KEY.pub], and sign the image with that key (berth sign --key, cosign sign --key)');
    }
    const keys = action.keys.map(loadKey);
    const reasons: string[] = [];
    let signed = false;
    candidates.forEach((c, i) => {
      const key = keys.find((k) => verifies(k.key, c.payload, c.signature));
      if (!key) {
        reasons.push(`signature ${i + 1} (${c.found}) was not made by ${keys.length === 1 ? 'that key' : 'any of them'}`);
        return;
      }
      const overIndex = subject.index !== undefined && payloadProblem(c.payload, subject.name, subject.index) === undefined;
      const problem = local ? 'it belongs to no registry image' : overIndex ? undefined : payloadProblem(c.payload, subject.name, subject.digest ?? '');
      if (problem) {
        reasons.push(`signature ${i + 1} (${c.found}) is by ${keyWords(key)} but ${problem}`);
        return;
      }
      signed = true;
      if (!verdict.signers.some((s) => s.fingerprint === key.fingerprint && s.signature === c.signature.toString('base64'))) {
        verdict.signers.push({ key: key.path, fingerprint: key.fingerprint, found: c.found, payload: c.payload.toString('base64'), signature: c.signature.toString('base64') });
      }
    });
    if (signed) continue;
    const needed = keys.map(keyWords).join(keys.length > 1 ? ', or ' : '');
    throw refuse(`${subject.label} is not signed by ${needed}, as ${whose} requires (${rule.where}: match ${rule.match}): ${candidates.length === 0 ? (local ? 'a local image carries no signature' : 'no signature was found (cosign\'s .sig tag, OCI referrers)') : reasons.join('; ')}`,
      local ? 'run the image from the registry (docker://...), where its signature is checked and recorded'
        : `sign the image with the private key of ${keys.length > 1 ? 'one of these' : 'that key'}: berth sign --key KEY.pem docker://${subject.name}@${subject.digest ?? 'DIGEST'} (or cosign sign --key), then pull it again`);
  }
  return verdict;
}
