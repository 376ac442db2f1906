// A real registry for the pull tests: Debian's docker-registry on loopback, optionally with
// htpasswd basic auth, filled by skopeo. Its access log tells which requests berth made.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import path from 'node:path';

export interface Registry {
  host: string;
  storage: string;
  requests(): string[];
  stop(): Promise<void>;
}

function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = createServer().listen(0, '127.0.0.1', () => {
      const { port } = s.address() as { port: number };
      s.close(() => resolve(port));
    });
  });
}

export async function startRegistry(dir: string, auth?: { user: string; password: string }): Promise<Registry> {
  mkdirSync(dir, { recursive: true });
  const port = await freePort();
  const storage = path.join(dir, 'data');
  let authConfig = '';
  if (auth) {
    const htpasswd = spawnSync('htpasswd', ['-Bbn', auth.user, auth.password], { encoding: 'utf8' });
    writeFileSync(path.join(dir, 'htpasswd'), htpasswd.stdout);
    authConfig = `auth: { htpasswd: { realm: berth-test, path: ${path.join(dir, 'htpasswd')} } }\n`;
  }
  writeFileSync(path.join(dir, 'config.yml'), `version: 0.1
log: { level: info, accesslog: { disabled: false } }
storage: { filesystem: { rootdirectory: ${storage} }, delete: { enabled: true } }
http: { addr: "127.0.0.1:${port}" }
${authConfig}`);
  const logFile = path.join(dir, 'log');
  writeFileSync(logFile, '');
  const child: ChildProcess = spawn('docker-registry', ['serve', path.join(dir, 'config.yml')], { stdio: ['ignore', 'pipe', 'pipe'] });
  let log = '';
  child.stdout!.on('data', (d: Buffer) => { log += d.toString(); });
  child.stderr!.on('data', (d: Buffer) => { log += d.toString(); });
  for (let i = 0; i < 100 && !/listening on/.test(log); i++) await new Promise((r) => setTimeout(r, 50));
  if (!/listening on/.test(log)) throw new Error(`docker-registry did not start:\n${log}`);
  return {
    host: `127.0.0.1:${port}`,
    storage,
    // Access-log lines: "GET /v2/REPO/blobs/sha256:... HTTP/1.1" STATUS
    requests: () => [...log.matchAll(/"(GET|HEAD) (\/v2\/[^ ]*) HTTP[^"]*" (\d+)/g)].map((m) => `${m[1]} ${m[2]} ${m[3]}`),
    stop: () => new Promise<void>((resolve) => {
      child.once('close', () => resolve());
      child.kill();
    }),
  };
}

/** skopeo copy of an OCI layout tag into the registry. */
export function push(source: string, registry: Registry, target: string, creds?: { user: string; password: string }, all = false): void {
  const r = spawnSync('skopeo', ['copy', '--quiet', ...(all ? ['--all'] : []), '--dest-tls-verify=false',
    ...(creds ? ['--dest-creds', `${creds.user}:${creds.password}`] : []), source, `docker://${registry.host}/${target}`], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`skopeo copy failed: ${r.stderr}`);
}

/** The path of a blob's data in the registry's storage, to tamper with. */
export function blobData(registry: Registry, digest: string): string {
  const hex = digest.slice(7);
  return path.join(registry.storage, 'docker/registry/v2/blobs/sha256', hex.slice(0, 2), hex, 'data');
}

export function readJson<T>(file: string): T {
  return JSON.parse(readFileSync(file, 'utf8')) as T;
}
