// SSH connections as users already have them set up: ~/.ssh/config (aliases, HostName, User,
// Port, IdentityFile, ProxyJump through login or bastion hosts), ssh-agent, key files with
// passphrases (asked on a terminal), and known_hosts: an unknown or changed host key is
// refused with its fingerprint, unless --accept-new-host-key trusts an unknown one.
import { readFileSync } from 'node:fs';
import { Client, utils, type AuthenticationType, type AuthMethod, type ConnectConfig } from 'ssh2';
import type { Duplex } from 'node:stream';
import { BerthError } from '../errors.js';
import { resolveTarget, sshConfigPath, type SshTarget } from './config.js';
import { addHostKey, checkHostKey, fingerprint, keyType, knownHostsName } from './known-hosts.js';

export interface ConnectOptions {
  acceptNewHostKey?: boolean;
  configFile?: string;
  /** Asks for a key's passphrase; the default asks on the terminal, or gives up without one. */
  askPassphrase?: (file: string) => Promise<string | undefined>;
}

export interface Connection {
  client: Client;
  target: SshTarget;
  close(): void;
  /** Settles like `work`, or fails when the connection drops first (ssh2 then leaves requests unanswered). */
  guard<T>(work: Promise<T>): Promise<T>;
}

/** Reads a line without echo from the terminal; undefined when there is none to ask on. */
async function askOnTerminal(file: string): Promise<string | undefined> {
  if (!process.stdin.isTTY) return undefined;
  process.stderr.write(`Enter passphrase for key '${file}': `);
  process.stdin.setRawMode(true);
  process.stdin.resume();
  return new Promise((resolve) => {
    let answer = '';
    const onData = (d: Buffer) => {
      for (const c of d.toString('utf8')) {
        if (c === '\r' || c === '\n' || c === '\u0004') {
          process.stdin.off('data', onData);
          process.stdin.setRawMode(false);
          process.stdin.pause();
          process.stderr.write('\n');
          resolve(answer);
          return;
        }
        if (c === '\u0003') process.kill(process.pid, 'SIGINT');
        answer = c === '\u007f' ? answer.slice(0, -1) : answer + c;
      }
    };
    process.stdin.on('data', onData);
  });
}

/** The ways to log in, in OpenSSH's order: the agent's keys, then the identity files. */
async function authMethods(target: SshTarget, ask: (file: string) => Promise<string | undefined>): Promise<{ methods: { method: AuthMethod; label: string }[]; notes: string[] }> {
  const methods: { method: AuthMethod; label: string }[] = [];
  const notes: string[] = [];
  if (process.env.SSH_AUTH_SOCK) methods.push({ method: { type: 'agent', username: target.user, agent: process.env.SSH_AUTH_SOCK } as AuthMethod, label: 'ssh-agent' });
  for (const file of target.identityFiles) {
    let data: Buffer;
    try {
      data = readFileSync(file);
    } catch {
      continue;
    }
    let key = utils.parseKey(data);
    if (key instanceof Error && /passphrase/i.test(key.message)) {
      const passphrase = await ask(file);
      if (passphrase === undefined) {
        notes.push(`${file} needs its passphrase (no terminal to ask on: load it into ssh-agent with ssh-add)`);
        continue;
      }
      key = utils.parseKey(data, passphrase);
      if (key instanceof Error) {
        notes.push(`${file}: wrong passphrase`);
        continue;
      }
    }
    if (key instanceof Error) {
      notes.push(`${file}: ${key.message}`);
      continue;
    }
    methods.push({ method: { type: 'publickey', username: target.user, key: Array.isArray(key) ? key[0]! : key } as AuthMethod, label: file });
  }
  return { methods, notes };
}

function connectOne(target: SshTarget, opts: ConnectOptions, sock: Duplex | undefined, via: string): Promise<Client> {
  return new Promise((resolve, reject) => {
    void authMethods(target, opts.askPassphrase ?? askOnTerminal).then(({ methods, notes }) => {
      const client = new Client();
      // HostKeyAlias files the key under another name, without a port (as OpenSSH does).
      const keyHost = target.hostKeyAlias ?? target.host;
      const keyPort = target.hostKeyAlias ? 22 : target.port;
      const name = knownHostsName(keyHost, keyPort);
      let hostKeyError: BerthError | undefined;
      const tried: string[] = [];
      const queue = [...methods];
      const config: ConnectConfig = {
        host: target.host,
        port: target.port,
        username: target.user,
        sock: sock as ConnectConfig['sock'],
        readyTimeout: 20_000,
        keepaliveInterval: 15_000,
        hostVerifier: (key: Buffer) => {
          const verdict = checkHostKey(target.knownHostsFiles, keyHost, keyPort, key);
          if (verdict === 'trusted') return true;
          const shown = `${keyType(key)} ${fingerprint(key)}`;
          if (verdict === 'unknown' && opts.acceptNewHostKey) {
            addHostKey(target.knownHostsFiles[0]!, keyHost, keyPort, keyType(key), key);
            process.stderr.write(`berth: trusting ${name}'s host key ${shown} from now on (added to ${target.knownHostsFiles[0]})\n`);
            return true;
          }
          hostKeyError = verdict === 'unknown'
            ? new BerthError('HOST_KEY_UNKNOWN', `${name}${via} is not a known host: it shows the key ${shown}`,
              "compare that fingerprint with the one your cluster publishes, then run again with --accept-new-host-key (or log in with ssh once)")
            : new BerthError('HOST_KEY_CHANGED', `${name}${via} shows the key ${shown}, which is NOT the key ${target.knownHostsFiles[0]} holds for it: someone may be intercepting the connection, or the host was reinstalled`,
              `ask the cluster's admins; only if the change is expected, remove the old key with: ssh-keygen -R '${name}'`);
          return false;
        },
        authHandler: (_left: AuthenticationType[], _partial: boolean, next: (m: never) => void) => {
          const m = queue.shift();
          if (m) tried.push(m.label);
          next((m?.method ?? false) as never);
        },
      };
      client.on('ready', () => resolve(client));
      client.on('error', (e: Error & { level?: string; code?: string }) => {
        if (hostKeyError) return reject(hostKeyError);
        if (e.level === 'client-authentication') {
          return reject(new BerthError('AUTH_FAILED', `${target.user}@${name}${via} refused every way berth tried to log in (${tried.length > 0 ? tried.join(', ') : 'no agent and no key file'})${notes.length > 0 ? `; ${notes.join('; ')}` : ''}`,
            'load your key into ssh-agent (ssh-add), name it with IdentityFile in ~/.ssh/config, or have your public key added to ~/.ssh/authorized_keys there'));
        }
        if (e.level === 'client-timeout' || ['ECONNREFUSED', 'ENOTFOUND', 'EHOSTUNREACH', 'ETIMEDOUT', 'ENETUNREACH', 'EAI_AGAIN'].includes(e.code ?? '')) {
          return reject(new BerthError('SSH_UNREACHABLE', `cannot reach ${target.host}:${target.port}${via}: ${e.code ?? e.message}`,
            'check the host name and port (berth reads ~/.ssh/config), and that the network lets you through (VPN, or ProxyJump via a login host)'));
        }
        reject(new BerthError('SSH_UNREACHABLE', `ssh to ${name}${via} failed: ${e.message}`, 'try `ssh` to the same host to see whether it works there'));
      });
      client.connect(config);
    }, reject);
  });
}

/** Connects to a destination as ssh would ([user@]host[:port] or a ~/.ssh/config alias), through its ProxyJump hops. */
export async function connect(destination: string, opts: ConnectOptions = {}): Promise<Connection> {
  const configFile = opts.configFile ?? sshConfigPath();
  const target = resolveTarget(destination, configFile);
  const hops = target.proxyJump.map((j) => resolveTarget(j, configFile));
  const clients: Client[] = [];
  const close = () => clients.reverse().forEach((c) => c.end());
  try {
    let sock: Duplex | undefined;
    let via = '';
    for (const hop of [...hops, target]) {
      const client = await connectOne(hop, opts, sock, via);
      clients.push(client);
      if (hop === target) break;
      const next = hops[hops.indexOf(hop) + 1] ?? target;
      sock = await new Promise<Duplex>((resolve, reject) => client.forwardOut('127.0.0.1', 0, next.host, next.port, (err, stream) => (err
        ? reject(new BerthError('SSH_UNREACHABLE', `the jump host ${hop.alias} cannot reach ${next.host}:${next.port}: ${err.message}`, 'check ProxyJump and the host name in ~/.ssh/config'))
        : resolve(stream))));
      via = ` (via ${[...hops.slice(0, hops.indexOf(hop) + 1)].map((h) => h.alias).join(', ')})`;
    }
    const client = clients.at(-1)!;
    const lost = new Promise<never>((_, reject) => client.on('close', () => reject(new BerthError('SSH_UNREACHABLE',
      `the connection to ${target.alias} dropped`, 'run the command again (a push continues where it stopped)'))));
    lost.catch(() => undefined);
    return { client, target, close, guard: (work) => Promise.race([work, lost]) };
  } catch (e) {
    close();
    throw e;
  }
}

export interface ExecResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs a command on the remote side (through a login shell, where module systems and PATH are set up). */
export function exec(client: Client, command: string, onStdout?: (d: Buffer) => void, input?: string): Promise<ExecResult> {
  return new Promise((resolve, reject) => {
    client.exec(`exec "\${SHELL:-/bin/sh}" -lc ${shellQuote(command)}`, (err, stream) => {
      if (err) return reject(new BerthError('REMOTE_FAILED', `cannot run a command over ssh: ${err.message}`, 'check that the account has a login shell'));
      let stdout = '';
      let stderr = '';
      stream.on('data', (d: Buffer) => (onStdout ? onStdout(d) : (stdout += d.toString())));
      stream.stderr.on('data', (d: Buffer) => { stderr += d.toString(); });
      stream.on('close', (code: number | null) => resolve({ code: code ?? 255, stdout, stderr }));
      stream.end(input);
    });
  });
}

/** One word for a POSIX shell. */
export function shellQuote(s: string): string {
  return /^[\w@%+=:,./-]+$/.test(s) ? s : `'${s.replace(/'/g, "'\\''")}'`;
}
