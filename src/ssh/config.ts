// ~/.ssh/config as OpenSSH reads it, for the options berth uses: Host blocks (patterns with *
// and ?, negation with !), Include (relative to ~/.ssh, with globs), HostName, User, Port,
// IdentityFile, ProxyJump, UserKnownHostsFile and HostKeyAlias. As in OpenSSH, the first value
// found for an option wins, and %h, %u, %p, %r, ~ expand. Match blocks are skipped (berth does
// not evaluate their conditions).
import { readdirSync, readFileSync } from 'node:fs';
import { homedir, userInfo } from 'node:os';
import path from 'node:path';
import { sshPattern } from './glob.js';

export interface SshTarget {
  /** What the user wrote: an alias or a host name. */
  alias: string;
  host: string;
  port: number;
  user: string;
  identityFiles: string[];
  /** Hops to go through first, in order ([user@]host[:port] each, themselves looked up). */
  proxyJump: string[];
  knownHostsFiles: string[];
  /** The name the host's key is filed under in known_hosts, when not its own (HostKeyAlias). */
  hostKeyAlias?: string;
}

/** [USER@]HOST[:PORT] or ssh://[USER@]HOST[:PORT]. */
export function parseDestination(text: string): { user?: string; host: string; port?: number } {
  const t = text.replace(/^ssh:\/\//, '');
  const at = t.lastIndexOf('@');
  const user = at === -1 ? undefined : t.slice(0, at);
  let host = at === -1 ? t : t.slice(at + 1);
  let port: number | undefined;
  const m = /^\[(.+)\](?::(\d+))?$/.exec(host) ?? /^([^:]+)(?::(\d+))?$/.exec(host);
  if (m) {
    host = m[1]!;
    port = m[2] ? Number(m[2]) : undefined;
  }
  return { user, host, port };
}

const globMatch = (pattern: string, text: string): boolean => sshPattern(pattern).test(text);

/** OpenSSH's Host line: any positive pattern matches and no negated one does. */
function hostMatches(patterns: string[], alias: string): boolean {
  let matched = false;
  for (const p of patterns) {
    if (p.startsWith('!')) {
      if (globMatch(p.slice(1), alias)) return false;
    } else if (globMatch(p, alias)) {
      matched = true;
    }
  }
  return matched;
}

/** Include's files: relative to ~/.ssh, with * and ? in the last component, in name order. */
function includedFiles(pattern: string, home: string): string[] {
  const full = pattern.startsWith('/') ? pattern : pattern.startsWith('~/') ? path.join(home, pattern.slice(2)) : path.join(home, '.ssh', pattern);
  const dir = path.dirname(full);
  const base = path.basename(full);
  if (!/[*?]/.test(base)) return [full];
  try {
    return readdirSync(dir).filter((n) => globMatch(base, n)).sort().map((n) => path.join(dir, n));
  } catch {
    return [];
  }
}

function readText(file: string): string {
  try {
    return readFileSync(file, 'utf8');
  } catch {
    return '';
  }
}

/** key -> values (lowercase keys), first occurrence first, for the blocks that match `alias`. */
function collect(text: string, alias: string, home: string, out = new Map<string, string[]>(), depth = 0): Map<string, string[]> {
  let active = true; // before any Host line, options apply to every host
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (!line || line.startsWith('#')) continue;
    const m = /^(\S+?)(?:\s*=\s*|\s+)(.*)$/.exec(line);
    if (!m) continue;
    const key = m[1]!.toLowerCase();
    const value = m[2]!.trim().replace(/^"(.*)"$/, '$1');
    if (key === 'host') {
      active = hostMatches(value.split(/\s+/), alias);
      continue;
    }
    if (key === 'match') {
      active = false;
      continue;
    }
    if (!active) continue;
    if (key === 'include') {
      // Included files are read in place, under the Host block that includes them.
      if (depth < 8) for (const f of value.split(/\s+/).flatMap((p) => includedFiles(p, home))) collect(readText(f), alias, home, out, depth + 1);
      continue;
    }
    if (key === 'identityfile') out.set(key, [...(out.get(key) ?? []), value]);
    else if (!out.has(key)) out.set(key, [value]);
  }
  return out;
}

export function sshConfigPath(env: NodeJS.ProcessEnv = process.env): string {
  return path.join(env.HOME || homedir(), '.ssh', 'config');
}

export function resolveTarget(destination: string, configFile = sshConfigPath(), env: NodeJS.ProcessEnv = process.env): SshTarget {
  const d = parseDestination(destination);
  const home = env.HOME || homedir();
  const opts = collect(readText(configFile), d.host, home);
  const first = (k: string) => opts.get(k)?.[0];
  const host = first('hostname')?.replace(/%h/g, d.host) ?? d.host;
  const user = d.user ?? first('user') ?? env.USER ?? userInfo().username;
  const port = d.port ?? Number(first('port') ?? 22);
  const expand = (p: string) => p.replace(/^~(?=\/|$)/, home).replace(/%d/g, home).replace(/%u/g, userInfo().username)
    .replace(/%r/g, user).replace(/%h/g, host).replace(/%p/g, String(port));
  const jump = first('proxyjump');
  return {
    alias: d.host,
    host,
    port,
    user,
    identityFiles: (opts.get('identityfile') ?? ['~/.ssh/id_ed25519', '~/.ssh/id_ecdsa', '~/.ssh/id_rsa']).map(expand),
    proxyJump: !jump || jump.toLowerCase() === 'none' ? [] : jump.split(',').map((j) => j.trim()),
    knownHostsFiles: (first('userknownhostsfile') ?? '~/.ssh/known_hosts ~/.ssh/known_hosts2').split(/\s+/).map(expand),
    ...(first('hostkeyalias') ? { hostKeyAlias: first('hostkeyalias') } : {}),
  };
}
