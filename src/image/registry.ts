// A client for the OCI distribution API: manifests and blobs, with the bearer-token flow of
// the WWW-Authenticate challenge (anonymous or with credentials) and basic auth, retries with
// backoff on 5xx, 429 (honouring Retry-After) and dropped connections, and timeouts that name
// the host. Tokens are fetched again when one expires during a long pull.
//
// Where credentials go (SECURITY.md, "Registries"): the credentials found for registry R are
// sent only to R's own API host and to the token realm that R names in its WWW-Authenticate
// challenge, and to either only over https, or over plain http where both R and that host are
// this machine's loopback (127.0.0.0/8, ::1, localhost: a test or a port-forward). A realm on
// another host gets them over https, as Docker sends them (Docker Hub's realm is auth.docker.io,
// not registry-1.docker.io); over plain http never, nor does R itself over http (--insecure)
// unless it is on loopback: anyone on the path would read them. A bearer token obtained with
// credentials counts as the credentials. The Authorization header is dropped when a redirect
// leaves the origin (the Fetch standard; fetch() does so for manifests and tokens, blob() for
// blobs), so a blob redirected to a CDN or downgraded to http never carries it.
import { get as httpGet, type IncomingMessage } from 'node:http';
import { get as httpsGet } from 'node:https';
import type { Readable } from 'node:stream';
import { BerthError, messageOf } from '../errors.js';
import type { Credentials } from './credentials.js';
import { formatDockerReference, isLoopback, type DockerReference } from './docker-reference.js';

export const MANIFEST_ACCEPT = [
  'application/vnd.oci.image.index.v1+json',
  'application/vnd.docker.distribution.manifest.list.v2+json',
  'application/vnd.oci.image.manifest.v1+json',
  'application/vnd.docker.distribution.manifest.v2+json',
].join(', ');

/** The distribution spec lets registries refuse manifests over 4 MiB; berth reads no more. */
const MAX_MANIFEST = 4 * 1024 * 1024;

export interface RegistryOptions {
  insecure: boolean;
  /** The credentials for this registry, or how to find them when it asks for them. */
  credentials: Credentials | undefined | (() => Credentials | undefined);
  /** Milliseconds without an answer before a request is given up (and retried). */
  timeoutMs: number;
  retries: number;
}

interface Challenge {
  scheme: string;
  params: Record<string, string>;
}

export function parseChallenge(header: string): Challenge {
  const space = header.indexOf(' ');
  const scheme = (space === -1 ? header : header.slice(0, space)).toLowerCase();
  const params: Record<string, string> = {};
  for (const m of header.slice(space + 1).matchAll(/(\w+)="([^"]*)"/g)) params[m[1]!.toLowerCase()] = m[2]!;
  return { scheme, params };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** The rule above: may a request to `url` carry registry `apiHost`'s credentials? */
export function mayCarryCredentials(url: URL, apiHost: string): boolean {
  if (url.protocol === 'https:') return true;
  return url.protocol === 'http:' && isLoopback(url.host) && isLoopback(apiHost);
}

export class RegistryClient {
  private base: string;
  /** Loopback and --insecure registries may speak plain http: tried if https fails. */
  private httpAllowed: boolean;
  private authorization: string | undefined;
  /** The authorization came from the user's credentials (not an anonymous token). */
  private authorizationIsSecret = false;
  private found: { credentials: Credentials | undefined } | undefined;
  readonly describe: string;

  constructor(readonly ref: DockerReference, private readonly opts: RegistryOptions) {
    this.httpAllowed = opts.insecure || isLoopback(ref.apiHost);
    this.base = `https://${ref.apiHost}/v2/${ref.repository}`;
    this.describe = formatDockerReference(ref);
  }

  /** GET with auth and retries; the caller reads (or cancels) the body. */
  get(what: 'manifests' | 'blobs' | 'referrers', id: string, headers: Record<string, string> = {}): Promise<Response> {
    return this.request('GET', `${what}/${id}`, undefined, headers, what, id);
  }

  /**
   * GET of a blob's bytes from byte `start`, its body a Node stream: node:http(s) rather than
   * fetch, whose web streams cost twice the CPU for a large layer (0.67 against 0.32 core-s for
   * 95 MB here), CPU the conversion running beside it needs. The same auth, retries and errors
   * as request(); redirects (registries send blobs to storage elsewhere) are followed here as
   * fetch follows them: the Authorization header goes only to the origin it was meant for, and
   * credentials never over plain http to a host that is not loopback.
   */
  async blob(digest: string, start: number): Promise<BlobResponse> {
    let authTried = false;
    for (let attempt = 0; ; attempt++) {
      const url = new URL(`${this.base}/blobs/${digest}`);
      if (this.authorizationIsSecret && !mayCarryCredentials(url, this.ref.apiHost)) throw this.plainHttp(url);
      let res: IncomingMessage;
      try {
        res = await getFollowing(url, { ...(start > 0 ? { range: `bytes=${start}-` } : {}) }, this.authorization, this.opts.timeoutMs);
      } catch (e: unknown) {
        if (e instanceof BerthError) throw e;
        if (await this.noAnswer(e, attempt, true)) attempt--;
        continue;
      }
      const status = res.statusCode ?? 0;
      const header = (name: string) => {
        const v = res.headers[name];
        return Array.isArray(v) ? v[0] : v;
      };
      if (status === 401 && !authTried) {
        authTried = true;
        res.resume();
        await this.authenticate(header('www-authenticate') ?? '');
        continue;
      }
      if ((status === 429 || status >= 500) && attempt < this.opts.retries) {
        res.resume();
        await sleep(retryAfter(header('retry-after') ?? null) ?? backoff(attempt));
        continue;
      }
      if (status === 200 || status === 206) {
        const length = Number(header('content-length') ?? NaN);
        return { status, length: Number.isFinite(length) ? length : undefined, body: res, cancel: () => res.destroy() };
      }
      res.resume();
      throw this.failure(status, 'blobs', digest);
    }
  }

  /**
   * A request that writes (berth sign pushes a signature): POST or PUT of `target`, a path in the
   * repository (`blobs/uploads/`) or the URL an upload's Location named; with auth and retries.
   */
  send(method: 'POST' | 'PUT', target: string, body: Buffer | undefined, headers: Record<string, string> = {}): Promise<Response> {
    return this.request(method, target, body, headers, target.includes('manifests') ? 'manifests' : 'blobs', target);
  }

  private async request(method: string, target: string, body: Buffer | undefined, headers: Record<string, string>, what: string, id: string): Promise<Response> {
    let authTried = false;
    for (let attempt = 0; ; attempt++) {
      // A Location from the registry may be absolute, or a path on its host.
      const url = /^https?:\/\//.test(target) ? target : target.startsWith('/') ? `${new URL(this.base).origin}${target}` : `${this.base}/${target}`;
      if (this.authorizationIsSecret && !mayCarryCredentials(new URL(url), this.ref.apiHost)) throw this.plainHttp(new URL(url));
      let res: Response;
      // The timeout covers the wait for an answer, not the body: a big layer may take minutes
      // (its reader watches for stalls instead).
      const controller = new AbortController();
      const timer = setTimeout(() => controller.abort(new DOMException('timed out', 'TimeoutError')), this.opts.timeoutMs);
      try {
        res = await fetch(url, {
          method,
          ...(body ? { body: new Uint8Array(body) } : {}),
          headers: { ...headers, ...(this.authorization ? { authorization: this.authorization } : {}) },
          signal: controller.signal,
        });
      } catch (e: unknown) {
        clearTimeout(timer);
        if (await this.noAnswer(e, attempt, !/^https?:\/\//.test(target))) attempt--;
        continue;
      }
      clearTimeout(timer);
      if (res.status === 401 && !authTried) {
        authTried = true;
        await res.body?.cancel();
        await this.authenticate(res.headers.get('www-authenticate') ?? '');
        continue;
      }
      if ((res.status === 429 || res.status >= 500) && attempt < this.opts.retries) {
        await res.body?.cancel();
        await sleep(retryAfter(res.headers.get('retry-after')) ?? backoff(attempt));
        continue;
      }
      if (res.ok) return res;
      await res.body?.cancel();
      throw this.failure(res.status, what, id, method);
    }
  }

  /**
   * A manifest or index, its bytes and digest (from the registry, checked by the caller). A
   * connection dropped while the body arrives is retried like one dropped before the answer.
   */
  async manifest(id: string): Promise<{ bytes: Buffer; mediaType: string; digest: string | undefined }> {
    for (let attempt = 0; ; attempt++) {
      const res = await this.get('manifests', id, { accept: MANIFEST_ACCEPT });
      try {
        const bytes = await readBody(res, MAX_MANIFEST, () => this.tooLarge());
        return { bytes, mediaType: res.headers.get('content-type') ?? '', digest: res.headers.get('docker-content-digest') ?? undefined };
      } catch (e: unknown) {
        if (e instanceof BerthError) throw e;
        if (attempt >= this.opts.retries) throw this.dropped(`the manifest ${id}`, e);
        await sleep(backoff(attempt));
      }
    }
  }

  /**
   * A request that got no answer: over plain http where this registry may speak it and the
   * request is to its own API (`fallback`; true then, to try again as the same attempt), else
   * retried after a backoff (false), else unreachable.
   */
  private async noAnswer(e: unknown, attempt: number, fallback: boolean): Promise<boolean> {
    if (fallback && this.httpAllowed && this.base.startsWith('https:')) {
      // No TLS there (or none we can check): the plain http that such registries speak.
      this.base = this.base.replace(/^https:/, 'http:');
      return true;
    }
    if (attempt < this.opts.retries) {
      await sleep(backoff(attempt));
      return false;
    }
    throw unreachable(this.ref.apiHost, this.describe, e);
  }

  /** The registry kept closing connections in the middle of an answer, retries included. */
  dropped(what: string, e: unknown): BerthError {
    return new BerthError('REGISTRY_UNREACHABLE',
      `${this.ref.apiHost} kept dropping the connection while sending ${what} of ${this.describe} (${reasonOf(e)}; berth retried with backoff)`,
      'check the network and any proxy between here and the registry (HTTPS_PROXY), and whether the registry is healthy; a later pull resumes the layers that had arrived',
      { cause: e });
  }

  private tooLarge(): BerthError {
    return new BerthError('SOURCE_INVALID', `${this.describe}: the manifest is larger than ${MAX_MANIFEST / 1024 / 1024} MiB`, 'check the reference');
  }

  /** The credentials, looked up once, when the registry first asks. */
  private credentials(): Credentials | undefined {
    const given = this.opts.credentials;
    this.found ??= { credentials: typeof given === 'function' ? given() : given };
    return this.found.credentials;
  }

  private async authenticate(header: string): Promise<void> {
    const challenge = parseChallenge(header);
    const creds = this.credentials();
    if (challenge.scheme === 'basic') {
      if (!creds) throw this.needCredentials();
      if (!mayCarryCredentials(new URL(this.base), this.ref.apiHost)) throw this.plainHttp(new URL(this.base));
      this.authorization = `Basic ${Buffer.from(`${creds.username}:${creds.password}`).toString('base64')}`;
      this.authorizationIsSecret = true;
      return;
    }
    if (challenge.scheme !== 'bearer' || !challenge.params['realm']) {
      throw new BerthError('AUTH_FAILED', `${this.ref.apiHost} asks for an authentication scheme berth does not know ('${header.split(' ')[0]}')`,
        'report the registry software to berth');
    }
    const url = this.realmUrl(challenge);
    // Without credentials the token is anonymous and may be fetched over anything.
    if (creds && !mayCarryCredentials(url, this.ref.apiHost)) throw this.plainHttp(url);
    const token = await this.fetchToken(url, creds);
    this.authorization = `Bearer ${token}`;
    this.authorizationIsSecret = creds !== undefined;
  }

  private realmUrl(challenge: Challenge): URL {
    let url: URL;
    try {
      url = new URL(challenge.params['realm']!);
    } catch {
      throw new BerthError('AUTH_FAILED', `${this.ref.apiHost} names a token service that is not a URL`, 'report it to the registry\'s admins');
    }
    if (url.protocol !== 'https:' && url.protocol !== 'http:') {
      throw new BerthError('AUTH_FAILED', `${this.ref.apiHost} names a token service over ${url.protocol}, not http(s)`, 'report it to the registry\'s admins');
    }
    if (challenge.params['service']) url.searchParams.set('service', challenge.params['service']);
    url.searchParams.set('scope', challenge.params['scope'] ?? `repository:${this.ref.repository}:pull`);
    return url;
  }

  private async fetchToken(url: URL, creds: Credentials | undefined): Promise<string> {
    let res: Response;
    try {
      res = await fetch(url, {
        headers: creds ? { authorization: `Basic ${Buffer.from(`${creds.username}:${creds.password}`).toString('base64')}` } : {},
        signal: AbortSignal.timeout(this.opts.timeoutMs),
      });
    } catch (e: unknown) {
      throw unreachable(url.host, this.describe, e);
    }
    if (res.status === 401 || res.status === 403) {
      await res.body?.cancel();
      throw creds ? this.wrongCredentials() : this.needCredentials();
    }
    if (!res.ok) {
      await res.body?.cancel();
      throw new BerthError('AUTH_FAILED', `the token service ${url.host} answered ${res.status} for ${this.describe}`, 'try again later');
    }
    let body: unknown;
    try {
      body = JSON.parse((await readBody(res, MAX_MANIFEST, () => undefined)).toString('utf8'));
    } catch (e: unknown) {
      throw new BerthError('AUTH_FAILED', `the token service ${url.host} sent no readable answer for ${this.describe} (${reasonOf(e)})`, 'try again later', { cause: e });
    }
    const fields = typeof body === 'object' && body !== null ? (body as Record<string, unknown>) : {};
    const token = typeof fields['token'] === 'string' ? fields['token'] : fields['access_token'];
    if (typeof token !== 'string' || token === '') throw new BerthError('AUTH_FAILED', `the token service ${url.host} sent no token`, 'try again later');
    return token;
  }

  /** Credentials would go over plain http to a host that is not loopback: refused before any is sent. */
  private plainHttp(url: URL): BerthError {
    const realm = url.host !== this.ref.apiHost;
    return new BerthError('AUTH_FAILED',
      `${this.describe}: refusing to send your credentials for ${this.ref.registry} over plain http to ${url.host}${realm ? ' (the token service the registry names)' : ''}`,
      realm ? 'the registry\'s token service must use https; report it to the registry\'s admins, or pull anonymously (without credentials for it)'
        : 'use the registry over https (without --insecure), or pull a public image from it without credentials');
  }

  private needCredentials(): BerthError {
    return new BerthError('AUTH_FAILED', `${this.describe} needs credentials`,
      `log in with \`berth login ${this.ref.registry}\`, or set BERTH_REGISTRY=${this.ref.registry} with BERTH_REGISTRY_USERNAME and BERTH_REGISTRY_PASSWORD`);
  }

  private wrongCredentials(): BerthError {
    return new BerthError('AUTH_FAILED', `${this.ref.registry} refused the credentials of user '${this.credentials()!.username}' for ${this.describe}`,
      `check them, then \`berth login ${this.ref.registry}\` again (or fix BERTH_REGISTRY_USERNAME/PASSWORD)`);
  }

  private failure(status: number, what: string, id: string, method = 'GET'): BerthError {
    if (method !== 'GET' && (status === 401 || status === 403)) {
      return new BerthError('AUTH_FAILED', `${this.ref.registry} does not let you push to ${this.describe} (${status})`, `log in with an account that may push there: berth login ${this.ref.registry}`);
    }
    if (method !== 'GET') {
      return new BerthError('SOURCE_INVALID', `${this.ref.apiHost} answered ${status} to ${method} ${what} for ${this.describe}`, 'check that the registry takes pushes (OCI distribution), and try again later');
    }
    if (status === 401) return this.credentials() ? this.wrongCredentials() : this.needCredentials();
    if (status === 403) return new BerthError('AUTH_FAILED', `${this.ref.registry} denies access to ${this.describe}`, 'check that your account may pull it');
    if (status === 404) {
      return new BerthError('IMAGE_NOT_IN_SOURCE', `${this.describe} was not found (${what === 'manifests' ? 'no such repository, tag or digest' : `blob ${id} is missing`})`,
        'check the name and tag (e.g. with skopeo inspect), and that you are logged in if it is private');
    }
    return new BerthError('SOURCE_INVALID', `${this.ref.apiHost} answered ${status} for ${this.describe} (${what} ${id})`, 'try again later');
  }
}

/** A blob's answer, its body a Node stream. */
export interface BlobResponse {
  status: number;
  /** Content-Length, where the registry sent one. */
  length: number | undefined;
  body: Readable;
  cancel(): void;
}

const REDIRECTS = new Set([301, 302, 303, 307, 308]);

/**
 * GET `url`, following up to 10 redirects. `authorization` is sent to `url`'s own origin only,
 * never after a redirect leaves it (the Fetch standard's rule, which fetch() applied before).
 * The timeout covers the wait for each answer's headers, not the body: a big layer may take
 * minutes (its reader watches for stalls instead). berth build's `ADD URL` downloads with it too.
 */
export async function getFollowing(url: URL, headers: Record<string, string>, authorization: string | undefined, timeoutMs: number): Promise<IncomingMessage> {
  const origin = url.origin;
  for (let hops = 0; ; hops++) {
    const res = await getOnce(url, { ...headers, ...(authorization && url.origin === origin ? { authorization } : {}) }, timeoutMs);
    const location = res.headers.location;
    if (!REDIRECTS.has(res.statusCode ?? 0) || !location) return res;
    res.resume();
    if (hops >= 10) throw new BerthError('SOURCE_INVALID', `${origin} redirected a blob more than 10 times`, 'report it to the registry\'s admins');
    const next = new URL(location, url);
    if (next.protocol !== 'https:' && next.protocol !== 'http:') {
      throw new BerthError('SOURCE_INVALID', `${origin} redirected a blob to ${next.protocol}, not http(s)`, 'report it to the registry\'s admins');
    }
    url = next;
  }
}

function getOnce(url: URL, headers: Record<string, string>, timeoutMs: number): Promise<IncomingMessage> {
  return new Promise((resolve, reject) => {
    const req = (url.protocol === 'https:' ? httpsGet : httpGet)(url, { headers }, (res) => {
      clearTimeout(timer);
      resolve(res);
    });
    // Shaped as fetch's failures are (the network's error as the cause), for reasonOf and unreachable.
    req.on('error', (e) => {
      clearTimeout(timer);
      reject(e.name === 'TimeoutError' ? e : new TypeError('fetch failed', { cause: e }));
    });
    const timer = setTimeout(() => req.destroy(Object.assign(new Error('timed out'), { name: 'TimeoutError' })), timeoutMs);
  });
}

function backoff(attempt: number): number {
  return Math.min(8000, 250 * 2 ** attempt) * (0.75 + Math.random() / 2);
}

function retryAfter(header: string | null): number | undefined {
  if (!header) return undefined;
  const seconds = Number(header);
  if (Number.isFinite(seconds)) return Math.min(60, seconds) * 1000;
  const date = Date.parse(header);
  return Number.isNaN(date) ? undefined : Math.min(60_000, Math.max(0, date - Date.now()));
}

/** What the network said, in words: undici's own codes (UND_ERR_SOCKET) tell a user nothing. */
function reasonOf(e: unknown): string {
  const cause = (e as { cause?: { code?: unknown } } | null)?.cause;
  // fetch's errors carry the network's code in their cause; a Node stream's (a blob's body) on themselves.
  const own = (e as { code?: unknown } | null)?.code;
  const code = typeof cause?.code === 'string' ? cause.code : typeof own === 'string' ? own : undefined;
  const words: Record<string, string> = {
    ECONNREFUSED: 'connection refused: nothing listens there',
    ECONNRESET: 'the registry reset the connection',
    UND_ERR_SOCKET: 'the registry closed the connection',
    UND_ERR_CLOSED: 'the registry closed the connection',
    ENOTFOUND: 'no such host',
    EAI_AGAIN: 'the host name could not be looked up',
    UND_ERR_CONNECT_TIMEOUT: 'connecting timed out',
    EHOSTUNREACH: 'no route to the host',
    ENETUNREACH: 'the network is unreachable',
  };
  if (code && Object.hasOwn(words, code)) return words[code]!;
  if (code && /CERT|SELF_SIGNED|TLS/.test(code)) return `its TLS certificate is not trusted: ${code}`;
  // undici ends a body the peer cut off with TypeError('terminated'); the cache passes on its text.
  if (!code && /(^|: )terminated$/.test(messageOf(e))) return 'the registry closed the connection';
  return code ?? messageOf(e);
}

function unreachable(host: string, describe: string, e: unknown): BerthError {
  const timeout = e instanceof Error && (e.name === 'TimeoutError' || e.name === 'AbortError');
  return new BerthError('REGISTRY_UNREACHABLE', timeout ? `${host} did not answer in time (for ${describe})` : `cannot reach ${host} for ${describe} (${reasonOf(e)})`,
    'check the registry name, the network and any proxy; berth retried with backoff before giving up', { cause: e });
}

/** A response body whole, up to `max` bytes; past that `tooLarge` (or a plain error) is thrown. */
async function readBody(res: Response, max: number, tooLarge: () => BerthError | undefined): Promise<Buffer> {
  const refuse = () => tooLarge() ?? new Error(`more than ${max} bytes`);
  if (Number(res.headers.get('content-length') ?? 0) > max) {
    await res.body?.cancel();
    throw refuse();
  }
  const chunks: Buffer[] = [];
  let length = 0;
  const reader = res.body?.getReader();
  for (;;) {
    const next = await reader?.read();
    if (!next || next.done) return Buffer.concat(chunks);
    length += next.value.length;
    if (length > max) {
      await reader!.cancel();
      throw refuse();
    }
    chunks.push(Buffer.from(next.value));
  }
}
