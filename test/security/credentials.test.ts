// Registry credentials against a hostile registry (SECURITY.md, "Registries"; issue 11, item 7).
// The hostile side is a small HTTP server in this test, since what is tested is what berth
// sends: it records every request and its Authorization header. The victim pulls with a password
// in BERTH_REGISTRY_PASSWORD, and the tests assert where that password arrives and where not:
//   - a token realm on another host over plain http never receives it (an anonymous request
//     does arrive there, so the server was reachable; a realm on loopback, like the loopback
//     registry itself, does receive it, so the server would have seen it);
//   - a registry off loopback over plain http (--insecure) never receives it;
//   - credentials named for another registry (BERTH_REGISTRY), or for none, are never sent.
import { createServer, type Server } from 'node:http';
import { networkInterfaces } from 'node:os';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BERTH } from '../helpers.js';
import { as, dirOf, VICTIM } from './users.js';
import { cleanup } from '../helpers.js';

interface Seen { url: string; authorization: string | undefined }

interface Hostile { host: string; seen: Seen[]; close(): Promise<void> }

/** An HTTP server on `address` that records requests and answers them with `answer`. */
async function hostile(address: string, answer: (url: string) => { status: number; headers?: Record<string, string>; body?: string }): Promise<Hostile> {
  const seen: Seen[] = [];
  const server: Server = createServer((req, res) => {
    seen.push({ url: req.url ?? '', authorization: req.headers.authorization });
    const a = answer(req.url ?? '');
    res.writeHead(a.status, { 'content-type': 'application/json', ...a.headers }).end(a.body ?? '{}');
  });
  const port = await new Promise<number>((resolve) => server.listen(0, address, () => resolve((server.address() as { port: number }).port)));
  const host = address.includes(':') ? `[${address}]:${port}` : `${address}:${port}`;
  return { host, seen, close: () => new Promise((r) => server.close(() => r())) };
}

/** An address of this machine that is not loopback, to stand for "another host". */
const external = Object.values(networkInterfaces()).flat().find((i) => i && i.family === 'IPv4' && !i.internal)?.address;

const SECRET = `s3cret-${process.pid}-never-to-be-seen`;
const servers: Hostile[] = [];
let home: string;

async function start(address: string, answer: Parameters<typeof hostile>[1]): Promise<Hostile> {
  const s = await hostile(address, answer);
  servers.push(s);
  return s;
}

/** A registry that asks for a bearer token from `realm` for every request. */
const bearer = (realm: () => string) => () => ({ status: 401, headers: { 'www-authenticate': `Bearer realm="${realm()}",service="evil",scope="repository:lab/app:pull"` } });
const tokenService = () => ({ status: 200, body: '{"token":"issued"}' });

function pullAs(registryHost: string, env: Record<string, string>, ...flags: string[]) {
  return as(VICTIM, process.execPath, [BERTH, 'pull', `docker://${registryHost}/lab/app:1`, ...flags],
    { env: { BERTH_CACHE_DIR: `${home}/cache`, ...env } });
}

const withSecret = (registry: string) => ({ BERTH_REGISTRY: registry, BERTH_REGISTRY_USERNAME: 'victim', BERTH_REGISTRY_PASSWORD: SECRET });
const carried = (s: Hostile) => s.seen.filter((r) => r.authorization?.startsWith('Basic') && Buffer.from(r.authorization.slice(6), 'base64').toString().includes(SECRET));

beforeAll(() => {
  home = dirOf(VICTIM, 'creds');
});
afterAll(async () => {
  await Promise.all(servers.map((s) => s.close()));
  cleanup(home);
});

describe.skipIf(!external)(`a hostile registry, with ${external ?? '(no non-loopback address on this machine)'} as another host`, () => {
  it('a token realm on another host over plain http never receives the password', async () => {
    const realm = await start(external!, tokenService);
    const registry = await start('127.0.0.1', bearer(() => `http://${realm.host}/token`));
    const r = await pullAs(registry.host, withSecret(registry.host));
    expect(r.code).toBe(125);
    expect(r.stderr).toContain(`refusing to send your credentials for ${registry.host} over plain http to ${realm.host} (the token service the registry names)`);
    expect(r.stderr).not.toContain(SECRET);
    expect(realm.seen).toEqual([]);
    expect(carried(registry)).toEqual([]);
    // Without credentials the token is anonymous and may be fetched: the realm was reachable.
    await pullAs(registry.host, {});
    expect(realm.seen.length).toBeGreaterThan(0);
    expect(realm.seen.every((s) => s.authorization === undefined)).toBe(true);
  });

  it('a realm on loopback, for a loopback registry, does receive it (the server would have seen it)', async () => {
    const realm = await start('127.0.0.2', tokenService);
    const registry = await start('127.0.0.1', bearer(() => `http://${realm.host}/token`));
    await pullAs(registry.host, withSecret(registry.host));
    expect(carried(realm).length).toBeGreaterThan(0);
  });

  it('a registry off loopback over plain http (--insecure) never receives it, by basic auth or through a realm', async () => {
    const basic = await start(external!, () => ({ status: 401, headers: { 'www-authenticate': 'Basic realm="evil"' } }));
    const r = await pullAs(basic.host, withSecret(basic.host), '--insecure');
    expect(r.code).toBe(125);
    expect(r.stderr).toContain(`refusing to send your credentials for ${basic.host} over plain http to ${basic.host}`);
    expect(r.stderr).toMatch(/hint: use the registry over https/);
    expect(basic.seen.length).toBeGreaterThan(0);
    expect(basic.seen.filter((s) => s.authorization)).toEqual([]);
    const realm = await start(external!, tokenService);
    const tokened = await start(external!, bearer(() => `http://${realm.host}/token`));
    const t = await pullAs(tokened.host, withSecret(tokened.host), '--insecure');
    expect(t.stderr).toMatch(/refusing to send your credentials/);
    expect([...realm.seen, ...tokened.seen].filter((s) => s.authorization)).toEqual([]);
  });
});

describe('credentials scoped to a registry', () => {
  it('BERTH_REGISTRY naming another registry: the password is not sent to this one', async () => {
    const registry = await start('127.0.0.1', () => ({ status: 401, headers: { 'www-authenticate': 'Basic realm="evil"' } }));
    const r = await pullAs(registry.host, withSecret('ghcr.io'));
    expect(r.code).toBe(125);
    expect(r.stderr).toMatch(/needs credentials/);
    expect(registry.seen.filter((s) => s.authorization)).toEqual([]);
  });

  it('no BERTH_REGISTRY: refused with the fix named, and nothing sent', async () => {
    const registry = await start('127.0.0.1', () => ({ status: 401, headers: { 'www-authenticate': 'Basic realm="evil"' } }));
    const { BERTH_REGISTRY: _, ...unscoped } = withSecret(registry.host);
    const r = await pullAs(registry.host, unscoped);
    expect(r.code).toBe(125);
    expect(r.stderr).toContain(`berth: hint: set BERTH_REGISTRY to that registry's host[:port] (e.g. BERTH_REGISTRY=${registry.host}`);
    expect(registry.seen.filter((s) => s.authorization)).toEqual([]);
  });

  it('the loopback registry named in BERTH_REGISTRY gets it (so the tests above would have seen it)', async () => {
    const registry = await start('127.0.0.1', () => ({ status: 401, headers: { 'www-authenticate': 'Basic realm="evil"' } }));
    await pullAs(registry.host, withSecret(registry.host));
    expect(carried(registry).length).toBeGreaterThan(0);
  });
});
