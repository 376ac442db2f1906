// ADD https://...: the file downloaded for the step, with the registry client's plain GET
// (src/image/registry.ts: redirects followed, a timeout for each answer), into the step's work
// directory, and its sha256 taken as it comes. With --checksum=sha256:HEX the download must be
// that file; the step's cache key is then the checksum, so a cached step downloads nothing.
import { createHash } from 'node:crypto';
import { closeSync, openSync, writeSync } from 'node:fs';
import { BerthError } from '../errors.js';
import { getFollowing } from '../image/registry.js';

/** The largest download ADD takes: a layer's file, not a data set (fetch those in a RUN). */
const MAX_BYTES = 16 * 2 ** 30;

/** --checksum's value as a digest, checked. */
export function parseChecksum(value: string, what: string): string {
  if (!/^sha256:[0-9a-f]{64}$/.test(value)) throw new BerthError('USAGE', `${what}: --checksum=${value}: berth takes sha256:HEX (64 hex digits)`, 'e.g. --checksum=sha256:$(sha256sum FILE)');
  return value;
}

/** The file name a URL's path ends in (Docker's name for `ADD URL DIR/`). */
export function urlFileName(url: string): string {
  const name = decodeURIComponent(new URL(url).pathname.split('/').filter(Boolean).at(-1) ?? '');
  return /^[^/\0]+$/.test(name) && name !== '.' && name !== '..' ? name : 'download';
}

/** Downloads `url` to `file` (new); returns its sha256 digest, checked against `checksum` when given. */
export async function download(url: string, file: string, what: string, checksum?: string): Promise<string> {
  let res;
  try {
    res = await getFollowing(new URL(url), {}, undefined, 30_000);
  } catch (e: unknown) {
    const cause = (e as { cause?: { code?: string; message?: string } }).cause;
    throw new BerthError('SOURCE_NOT_FOUND', `${what}: cannot download ${url}: ${cause?.code ?? cause?.message ?? (e as Error).message}`, 'check the URL and that this node reaches it (a RUN step has the same network)');
  }
  if (res.statusCode !== 200) {
    res.resume();
    throw new BerthError('SOURCE_NOT_FOUND', `${what}: ${url} answered ${res.statusCode} ${res.statusMessage ?? ''}`.trim(), 'check the URL; ADD takes a file that a plain GET returns');
  }
  const hash = createHash('sha256');
  const fd = openSync(file, 'wx', 0o600);
  let size = 0;
  try {
    for await (const chunk of res as AsyncIterable<Buffer>) {
      size += chunk.length;
      if (size > MAX_BYTES) throw new BerthError('SOURCE_INVALID', `${what}: ${url} is larger than ${MAX_BYTES / 2 ** 30} GiB`, 'download it in a RUN step (curl or wget), or into the context');
      hash.update(chunk);
      writeSync(fd, chunk);
    }
  } catch (e: unknown) {
    if (e instanceof BerthError) throw e;
    throw new BerthError('DOWNLOAD_INTERRUPTED', `${what}: the download of ${url} broke off: ${(e as Error).message}`, 'build again');
  } finally {
    closeSync(fd);
  }
  const digest = `sha256:${hash.digest('hex')}`;
  if (checksum !== undefined && digest !== checksum) {
    throw new BerthError('DIGEST_MISMATCH', `${what}: ${url} is ${digest}, not the --checksum ${checksum}`, 'the file changed or the checksum is wrong: check both before you change the Dockerfile');
  }
  return digest;
}
