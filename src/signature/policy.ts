// The site's image-signature policy: the `trust:` section of a configuration file, an ordered
// list of rules of which the first that matches an image decides (as sudoers and
// containers-policy.json take theirs). This module parses a section into typed rules (every
// problem named by file and line), matches an image's name against them and says in words
// what a policy is; deciding about signatures is decide.ts's, finding them discover.ts's.
//
// An image's name is `REGISTRY/REPOSITORY` (`docker.io/library/ubuntu`, as
// docker-reference.ts normalizes it), or `local` for an image that did not come from a
// registry under a policy: a file, an OCI layout or archive, or one converted before the
// policy existed. In a pattern `*` stands for any characters, `/` included, so
// `ghcr.io/our-lab/*` covers every repository below our-lab, and `"*"` every image, local ones
// too (a site that ends its list with `- match: "*"` `deny: true` and wants files to run says
// so first with `- match: local`).
import type { Node, YAMLMap } from 'yaml';

/** What a rule does with the images it matches. */
export type TrustAction =
  | { kind: 'require'; keys: string[] }
  | { kind: 'allow' }
  | { kind: 'deny' }
  /**
   * Sigstore's keyless signatures: a certificate from Fulcio for this OIDC issuer and subject,
   * logged in Rekor. Checking one needs Sigstore's trust root and, for the log, the network;
   * berth does not yet, so a keyless rule refuses every image it matches (never trusts it).
   */
  | { kind: 'keyless'; issuer: string; subject: string };

export interface TrustRule {
  match: string;
  action: TrustAction;
  /** Where it was written, FILE:LINE: quoted by every verdict it gives. */
  where: string;
}

/**
 * The rules in force. The site's (only /etc/berth/config.yaml) and the user's are judged
 * apart and an image must pass both: a user's rules can tighten the site's, never loosen them.
 * Absent where that file has no `trust:` section; with neither, every image runs (as before
 * berth had a policy).
 */
export interface TrustPolicy {
  site?: TrustRule[];
  user?: TrustRule[];
}

export const LOCAL = 'local';

export interface TrustProblem {
  where: string;
  message: string;
  hint: string;
}

const EXAMPLE = 'e.g.\ntrust:\n  - match: ghcr.io/our-lab/*\n    require: [/etc/berth/keys/lab.pub]\n  - match: "*"\n    allow: unsigned';

/**
 * A `trust:` section as rules, or the problems with it. `at` gives a node's FILE:LINE. Keys
 * must be absolute paths: a relative one would mean something else in every working directory.
 */
export function parseTrustSection(value: Node | null, at: (node: Node | null | undefined) => string, isMap: (n: unknown) => n is YAMLMap, scalar: (n: unknown) => unknown): { rules: TrustRule[]; problems: TrustProblem[] } {
  const rules: TrustRule[] = [];
  const problems: TrustProblem[] = [];
  const problem = (where: string, message: string, hint: string) => problems.push({ where, message: `${where}: ${message}`, hint });
  const items = (value as { items?: unknown[] } | null)?.items;
  if (!value || !Array.isArray(items) || isMap(value)) {
    problem(at(value), 'trust must be a list of rules', EXAMPLE);
    return { rules, problems };
  }
  items.forEach((item, i) => {
    const path = `trust[${i}]`;
    const where = at(item as Node);
    if (!isMap(item)) {
      problem(where, `${path} must be a rule (match: and one of require, allow, deny, keyless)`, EXAMPLE);
      return;
    }
    const fields = new Map<string, Node | null>();
    for (const pair of item.items) {
      const key = String(scalar(pair.key) ?? '?');
      if (!['match', 'require', 'allow', 'deny', 'keyless'].includes(key)) {
        problem(at(pair.key as Node), `${path}: unknown key '${key}'`, 'a rule has match: and one of require, allow, deny, keyless');
        continue;
      }
      fields.set(key, pair.value as Node | null);
    }
    const match = scalar(fields.get('match'));
    if (typeof match !== 'string' || match === '') {
      problem(where, `${path}.match must be a registry/repository pattern`, 'e.g. match: ghcr.io/our-lab/*, match: local or match: "*"');
      return;
    }
    const actions = ['require', 'allow', 'deny', 'keyless'].filter((k) => fields.has(k));
    if (actions.length !== 1) {
      problem(where, `${path} (${match}) must have exactly one of require, allow, deny, keyless${actions.length ? `, not ${actions.join(' and ')}` : ''}`,
        'require: [/etc/berth/keys/KEY.pub], allow: unsigned, deny: true, or keyless: {issuer: URL, subject: WHO}');
      return;
    }
    const action = readAction(actions[0]!, fields.get(actions[0]!) ?? null, `${path}.${actions[0]}`, isMap, scalar);
    if (typeof action === 'string') problem(fields.get(actions[0]!) ? at(fields.get(actions[0]!)) : where, action, actionHint(actions[0]!));
    else rules.push({ match, action, where });
  });
  return { rules, problems };
}

function actionHint(kind: string): string {
  switch (kind) {
    case 'require':
      return 'require: [/etc/berth/keys/lab.pub] (public keys as cosign or openssl write them: PEM)';
    case 'allow':
      return 'allow: unsigned';
    case 'deny':
      return 'deny: true';
    default:
      return 'keyless: {issuer: https://token.actions.githubusercontent.com, subject: https://github.com/our-lab/app/.github/workflows/build.yml@refs/heads/main}';
  }
}

/** The action, or what is wrong with it. */
function readAction(kind: string, node: Node | null, path: string, isMap: (n: unknown) => n is YAMLMap, scalar: (n: unknown) => unknown): TrustAction | string {
  const value = scalar(node);
  switch (kind) {
    case 'require': {
      const items = (node as { items?: unknown[] } | null)?.items;
      const keys = typeof value === 'string' ? [value] : Array.isArray(items) && !isMap(node) ? items.map(scalar) : [];
      if (keys.length === 0 || !keys.every((k): k is string => typeof k === 'string' && k.startsWith('/'))) {
        return `${path} must be a list of absolute paths of public keys`;
      }
      return { kind: 'require', keys };
    }
    case 'allow':
      return value === 'unsigned' ? { kind: 'allow' } : `${path} must be 'unsigned'`;
    case 'deny':
      return value === true ? { kind: 'deny' } : `${path} must be true`;
    default: {
      if (!isMap(node)) return `${path} must have issuer: and subject:`;
      const get = (k: string) => scalar(node.items.find((p) => scalar(p.key) === k)?.value);
      const issuer = get('issuer');
      const subject = get('subject');
      if (typeof issuer !== 'string' || typeof subject !== 'string' || !issuer || !subject) return `${path} must have issuer: and subject:`;
      return { kind: 'keyless', issuer, subject };
    }
  }
}

/**
 * Whether `name` (REGISTRY/REPOSITORY, or local) is one that `pattern` matches. A `*` in the
 * repository is any characters, `/` included; in the registry (before the first `/`) it stays
 * within the host and port, so `*.corp.example/*` cannot match `ghcr.io/x.corp.example/app`. A
 * pattern that is `*` alone matches every name.
 */
export function matches(pattern: string, name: string): boolean {
  if (pattern === '*') return true;
  const glob = (p: string, any: string) => p.split('*').map((s) => s.replace(/[.+?^${}()|[\]\\]/g, '\\$&')).join(any);
  const cut = pattern.indexOf('/');
  const re = cut === -1 ? `^${glob(pattern, '[^/]*')}$` : `^${glob(pattern.slice(0, cut), '[^/]*')}/${glob(pattern.slice(cut + 1), '.*')}$`;
  return new RegExp(re).test(name);
}

/** The rule that decides about `name`: the first that matches, or undefined. */
export function ruleFor(rules: readonly TrustRule[], name: string): TrustRule | undefined {
  return rules.find((r) => matches(r.match, name));
}

/** An image's name as policies match it: REGISTRY/REPOSITORY, Docker Hub's as docker.io. */
export function imageName(registry: string, repository: string): string {
  return `${registry === 'index.docker.io' || registry === 'registry-1.docker.io' ? 'docker.io' : registry}/${repository}`;
}

export function describeAction(a: TrustAction): string {
  switch (a.kind) {
    case 'require':
      return `signed by ${a.keys.length === 1 ? a.keys[0] : `one of ${a.keys.join(', ')}`}`;
    case 'allow':
      return 'allowed unsigned';
    case 'deny':
      return 'denied';
    default:
      return `keyless (${a.issuer}, ${a.subject}): refused, not verified by berth`;
  }
}

/** The policy in words, for berth doctor: one line, the rules in order. */
export function describePolicy(policy: TrustPolicy): string {
  if (!policy.site && !policy.user) return 'no trust: section: every image runs, signed or not';
  const layer = (rules: TrustRule[]) => `${rules.map((r) => `${r.match} ${describeAction(r.action)}`).join('; ')}${rules.some((r) => r.match === '*') ? '' : '; anything else refused'}`;
  return [policy.site ? `site: ${layer(policy.site)}` : 'site: none', ...(policy.user ? [`yours: ${layer(policy.user)}`] : [])].join(' | ');
}
