// A real registry for the pull tests: Debian's docker-registry on loopback, optionally with
// htpasswd basic auth, filled by skopeo. Its access log tells which requests berth made.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createSign, X509Certificate } from 'node:crypto';
import { createServer as createHttpServer } from 'node:http';
import { connect, createServer, type Socket } from 'node:net';
import path from 'node:path';
import { freePort, run } from './helpers.js';

export interface Registry {
  host: string;
  storage: string;
  requests(): string[];
  stop(): Promise<void>;
  /** Starts it again after stop(), on the same port and storage. */
  restart(): Promise<void>;
}

export interface RegistryAuth {
  htpasswd?: { user: string; password: string };
  token?: { realm: string; service: string; issuer: string; certificate: string };
}


export async function startRegistry(dir: string, auth: RegistryAuth = {}): Promise<Registry> {
  mkdirSync(dir, { recursive: true });
  const port = await freePort();
  const storage = path.join(dir, 'data');
  let authConfig = '';
  if (auth.htpasswd) {
    const htpasswd = spawnSync('htpasswd', ['-Bbn', auth.htpasswd.user, auth.htpasswd.password], { encoding: 'utf8' });
    writeFileSync(path.join(dir, 'htpasswd'), htpasswd.stdout);
    authConfig = `auth: { htpasswd: { realm: berth-test, path: ${path.join(dir, 'htpasswd')} } }\n`;
  } else if (auth.token) {
    const t = auth.token;
    authConfig = `auth: { token: { realm: "${t.realm}", service: ${t.service}, issuer: ${t.issuer}, rootcertbundle: ${t.certificate} } }\n`;
  }
  writeFileSync(path.join(dir, 'config.yml'), `version: 0.1
log: { level: info, accesslog: { disabled: false } }
storage: { filesystem: { rootdirectory: ${storage} }, delete: { enabled: true } }
http: { addr: "127.0.0.1:${port}" }
${authConfig}`);
  let log = '';
  let child: ChildProcess;
  const start = async () => {
    const before = log.length;
    child = spawn('docker-registry', ['serve', path.join(dir, 'config.yml')], { stdio: ['ignore', 'pipe', 'pipe'] });
    child.stdout!.on('data', (d: Buffer) => { log += d.toString(); });
    child.stderr!.on('data', (d: Buffer) => { log += d.toString(); });
    for (let i = 0; i < 100 && !/listening on/.test(log.slice(before)); i++) await new Promise((r) => setTimeout(r, 50));
    if (!/listening on/.test(log.slice(before))) throw new Error(`docker-registry did not start:\n${log}`);
  };
  await start();
  return {
    host: `127.0.0.1:${port}`,
    storage,
    // Access-log lines: "GET /v2/REPO/blobs/sha256:... HTTP/1.1" STATUS
    requests: () => [...log.matchAll(/"(GET|HEAD) (\/v2\/[^ ]*) HTTP[^"]*" (\d+)/g)].map((m) => `${m[1]} ${m[2]} ${m[3]}`),
    stop: () => new Promise<void>((resolve) => {
      child.once('close', () => resolve());
      child.kill();
    }),
    restart: start,
  };
}

/**
 * A TCP proxy in front of a registry (or an sshd) that lets through `bytesPerSecond` each way,
 * so that a download or an upload lasts long enough to be cut in the middle: cut() drops every
 * connection, as a network failure would.
 */
export async function throttledProxy(target: string, bytesPerSecond: number): Promise<{ host: string; close(): void; cut(): void }> {
  const [targetHost, targetPort] = target.split(':') as [string, string];
  const live = new Set<Socket>();
  const throttle = (from: Socket, to: Socket) => from.on('data', (chunk: Buffer) => {
    from.pause();
    to.write(chunk);
    setTimeout(() => from.resume(), (chunk.length / bytesPerSecond) * 1000);
  });
  const server = createServer((client) => {
    const upstream = connect(Number(targetPort), targetHost);
    live.add(client).add(upstream);
    throttle(client, upstream);
    throttle(upstream, client);
    const end = () => {
      client.destroy();
      upstream.destroy();
      live.delete(client);
      live.delete(upstream);
    };
    upstream.on('close', end).on('error', end);
    client.on('close', end).on('error', end);
  });
  const port = await new Promise<number>((resolve) => server.listen(0, '127.0.0.1', () => resolve((server.address() as { port: number }).port)));
  return {
    host: `127.0.0.1:${port}`,
    close: () => server.close(),
    cut: () => {
      server.close();
      for (const s of live) s.destroy();
    },
  };
}

/**
 * A token service as Docker Hub's auth service is one: it checks basic credentials and signs a
 * JWT (RS256, the certificate in x5c) that grants pull and push on any repository.
 */
export async function startTokenIssuer(dir: string, user: string, password: string, ttlSeconds = 300):
  Promise<{ realm: string; service: string; issuer: string; certificate: string; issued(): number; close(): void }> {
  mkdirSync(dir, { recursive: true });
  const key = path.join(dir, 'token.key');
  const certificate = path.join(dir, 'token.crt');
  const r = spawnSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '2', '-subj', '/CN=berth-test-issuer',
    '-keyout', key, '-out', certificate], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`openssl failed: ${r.stderr}`);
  const der = new X509Certificate(readFileSync(certificate)).raw.toString('base64');
  const privateKey = readFileSync(key);
  const service = 'berth-test-registry';
  const issuer = 'berth-test-issuer';
  const b64url = (data: string | Buffer) => Buffer.from(data).toString('base64url');
  let issued = 0;
  const server = createHttpServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://x');
    const given = Buffer.from((req.headers.authorization ?? '').replace(/^Basic /, ''), 'base64').toString();
    if (given !== `${user}:${password}`) {
      res.writeHead(401).end('{"details":"bad credentials"}');
      return;
    }
    const [, name, actions] = (url.searchParams.get('scope') ?? '').split(':');
    const now = Math.floor(Date.now() / 1000);
    const header = b64url(JSON.stringify({ alg: 'RS256', typ: 'JWT', x5c: [der] }));
    const claims = b64url(JSON.stringify({
      iss: issuer, sub: user, aud: service, exp: now + ttlSeconds, nbf: now - 10, iat: now, jti: String(Math.random()),
      access: name ? [{ type: 'repository', name, actions: (actions ?? 'pull').split(',') }] : [],
    }));
    const signature = createSign('RSA-SHA256').update(`${header}.${claims}`).sign(privateKey).toString('base64url');
    issued++;
    res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ token: `${header}.${claims}.${signature}`, expires_in: ttlSeconds }));
  });
  const port = await new Promise<number>((resolve) => server.listen(0, '127.0.0.1', () => resolve((server.address() as { port: number }).port)));
  return { realm: `http://127.0.0.1:${port}/token`, service, issuer, certificate, issued: () => issued, close: () => server.close() };
}

/** skopeo copy of an OCI layout tag into the registry (asynchronous: a token service in this process must answer it). */
export async function push(source: string, registry: Registry, target: string, creds?: { user: string; password: string }, all = false): Promise<void> {
  const r = await run('skopeo', ['copy', '--quiet', ...(all ? ['--all'] : []), '--dest-tls-verify=false',
    ...(creds ? ['--dest-creds', `${creds.user}:${creds.password}`] : []), source, `docker://${registry.host}/${target}`]);
  if (r.code !== 0) throw new Error(`skopeo copy failed: ${r.stderr}`);
}

/** The path of a blob's data in the registry's storage, to tamper with. */
export function blobData(registry: Registry, digest: string): string {
  const hex = digest.slice(7);
  return path.join(registry.storage, 'docker/registry/v2/blobs/sha256', hex.slice(0, 2), hex, 'data');
}

export function readJson<T>(file: string): T {
  return JSON.parse(readFileSync(file, 'utf8')) as T;
}
