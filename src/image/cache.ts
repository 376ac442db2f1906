// The content-addressed cache: blobs/sha256/HEX (each one checked against its digest before it
// gets that name, and again before a cached one is used) and images/HEX.sqsh (converted images,
// by manifest digest; caches.ts finds them and decides which cache may be believed). Many processes
// share it: a blob is downloaded by one holder of its lock while the others wait, and a
// download cut off (network, kill -9) resumes from its .partial file with a Range request. A
// full disk removes the .partial; `berth prune` removes those that no download holds.
//
// Locks are flock(2) locks on a descriptor of berth's own (the addon's tryLock: Node has no
// flock), so the kernel drops a lock when its holder dies, however it dies, and a killed puller
// wedges nobody.
import { createHash, type Hash } from 'node:crypto';
import { createReadStream, fchmodSync, lstatSync, readdirSync, renameSync, rmSync, statSync, unlinkSync, openSync, closeSync, close, constants, fsync, open, writev } from 'node:fs';
import path from 'node:path';
import { Readable, Transform, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { BerthError, errnoOf, messageOf } from '../errors.js';
import { loadAddon } from '../runtime/native.js';
import { openTrusted, type Doubt, type Trust } from './trust.js';

/** The user's own, checked cache (Caches.blobDir): the only place blobs are written. */
export interface BlobDir {
  root: string;
  trust: Trust;
  warn(d: Doubt, instead: string): void;
}

export function hexOf(digest: string): string {
  const m = /^sha256:([0-9a-f]{64})$/.exec(digest);
  if (!m) throw new BerthError('UNSUPPORTED_MEDIA_TYPE', `digest '${digest}' is not sha256`, 'berth caches sha256 content only');
  return m[1]!;
}

/**
 * Runs fn holding an exclusive lock on `file` (created if need be) in a directory made and
 * checked before (Caches.writable): nothing here creates directories.
 */
export async function withLock<T>(file: string, fn: () => Promise<T>): Promise<T> {
  let fd: number | null;
  // The wait polls: a flock() that blocks would hold one of libuv's four threads per waiter,
  // and a process waiting on four locks would then have none left for its own downloads. The
  // holder is downloading or converting, seconds at least, so up to a second's lag is little
  // beside it; the cap and the jitter keep the many nodes of a job, waiting on a lock in a
  // cache on NFS, from polling its server in step (each try is an open, a lock and a close).
  for (let wait = 5; (fd = tryLock(file)) === null; wait = Math.min(wait * 2, 1000)) {
    await new Promise((r) => setTimeout(r, wait * (0.75 + Math.random() / 2)));
  }
  try {
    return await fn();
  } finally {
    closeSync(fd);
  }
}

function tryLock(file: string): number | null {
  try {
    return loadAddon().tryLock(file);
  } catch (e: unknown) {
    const fix = errnoOf(e) === 'ENOLCK'
      ? 'the file system of the cache cannot lock (an NFS mount without locking): point BERTH_CACHE_DIR (cache.dir) at one that can'
      : errnoOf(e) === 'ELOCKFILE'
        ? `remove ${file} (in a sticky directory only its owner or root can) and make the directory yours alone (chmod 0700): berth makes its locks itself`
        : 'check that the cache directory is writable (BERTH_CACHE_DIR)';
    throw new BerthError('OUTPUT_UNWRITABLE', `cannot lock ${file}: ${messageOf(e)}`, fix, { cause: e });
  }
}

const STALL_MS = 60_000;

export interface BlobFetch {
  /** Starts the download at byte `start`; a registry that ignores Range answers 200 (206 where it honours it). */
  (start: number): Promise<{ status: number; body: Readable }>;
}

/**
 * Makes sure blob `digest` is in the cache, downloading it with `fetch` if not. Returns its path.
 * `progress` hears of every byte that arrives.
 */
export async function ensureBlob(dir: BlobDir, digest: string, fetchFrom: BlobFetch, what: string, progress: (n: number) => void = () => {}): Promise<string> {
  const final = path.join(dir.root, 'blobs', 'sha256', hexOf(digest));
  if (await cachedBlob(dir, final, digest, false)) return final;
  return withLock(`${final}.lock`, async () => {
    if (await cachedBlob(dir, final, digest, true)) return final; // another process fetched it meanwhile
    const partial = `${final}.partial`;
    let actual: string;
    for (let attempt = 0; ; attempt++) {
      const have = statSync(partial, { throwIfNoEntry: false })?.size ?? 0;
      try {
        actual = await download(partial, have, fetchFrom, progress, what);
        break;
      } catch (e: unknown) {
        if (!(e instanceof BerthError && e.code === 'DOWNLOAD_INTERRUPTED') || attempt >= 4) throw e;
        await new Promise((r) => setTimeout(r, 500 * 2 ** attempt)); // a dropped connection: resume
      }
    }
    if (actual !== digest) {
      unlinkSync(partial);
      throw new BerthError('DIGEST_MISMATCH', `${what}: the registry sent data whose digest is ${actual}, not ${digest}`,
        'the registry or something between is corrupting or tampering with the image; nothing was cached. Report it to the registry\'s admins.');
    }
    const fd = openSync(partial, 'r');
    try {
      fchmodSync(fd, 0o644); // a .partial from an older berth under umask 002 was group-writable
      // Where the file system reserves space late (NFS, quotas), this is where it runs out. On
      // the thread pool: the layers above this one are being merged meanwhile.
      await new Promise<void>((resolve, reject) => fsync(fd, (e) => (e ? reject(e) : resolve())));
    } catch (e: unknown) {
      throw diskFull(e, partial, what) ?? e;
    } finally {
      closeSync(fd);
    }
    renameSync(partial, final);
    return final;
  });
}

/**
 * Whether the cached blob at `file` is one to use: believed by trust.ts's rules and, hashed again
 * through the descriptor that was checked, still `digest` (a disk error, or a file put there by
 * hand). One that is not is, under the blob's lock (`repair`), removed with a warning, to be
 * downloaded again; without the lock it is left alone, as another process may be replacing it.
 */
async function cachedBlob(dir: BlobDir, file: string, digest: string, repair: boolean): Promise<boolean> {
  const opened = openTrusted(file, dir.trust);
  if (!opened) return false;
  let doubt: Doubt;
  if ('doubt' in opened) {
    doubt = opened.doubt;
  } else {
    const actual = await hashFile(file, opened.fd);
    if (actual === digest) return true;
    doubt = { path: file, owner: opened.st.uid, mode: opened.st.mode, why: `has digest ${actual}`, fix: 'it is damaged' };
  }
  if (!repair) return false;
  dir.warn(doubt, 'downloading it again');
  unlinkSync(file); // the directory is the user's own (BlobDir), so this removes nothing of anyone else's
  return false;
}

/**
 * A file written in writevs of a MiB or more: a download arrives in chunks of 16 KiB (TLS
 * records), and an fs.write for each cost Node's main thread, which merges the layers above,
 * about 40 µs apiece (0.3 s of a 125 MB pull).
 */
class BatchedFileWriter extends Writable {
  private fd = -1;
  private held: Buffer[] = [];
  private bytes = 0;

  constructor(private readonly file: string, private readonly flags: 'a' | 'w') {
    super({ highWaterMark: 1 << 20 });
  }

  override _construct(cb: (e?: Error | null) => void): void {
    // Not through a link: the cache is the user's own, and what is written is only ever a file.
    const { O_WRONLY, O_CREAT, O_APPEND, O_TRUNC, O_NOFOLLOW } = constants; // Node adds O_CLOEXEC
    const flags = O_WRONLY | O_CREAT | O_NOFOLLOW | (this.flags === 'a' ? O_APPEND : O_TRUNC);
    open(this.file, flags, 0o644, (e, fd) => {
      this.fd = fd;
      cb(e);
    });
  }

  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (e?: Error | null) => void): void {
    this.held.push(chunk);
    this.bytes += chunk.length;
    if (this.bytes < 1 << 20) cb();
    else this.flushHeld(cb);
  }

  override _final(cb: (e?: Error | null) => void): void {
    this.flushHeld(cb);
  }

  override _destroy(err: Error | null, cb: (e?: Error | null) => void): void {
    if (this.fd < 0) cb(err);
    else close(this.fd, (e) => cb(err ?? e));
  }

  /** All that is held, in writevs (each may write less than asked: the rest follows). */
  private flushHeld(cb: (e?: Error | null) => void): void {
    const chunks = this.held;
    this.held = [];
    this.bytes = 0;
    const next = (list: Buffer[]): void => {
      if (list.length === 0) return cb();
      writev(this.fd, list.slice(0, 1024), (e, written) => {
        if (e) return cb(e);
        let rest = written;
        const left: Buffer[] = [];
        for (const b of list) {
          if (rest >= b.length) rest -= b.length;
          else {
            left.push(rest > 0 ? b.subarray(rest) : b);
            rest = 0;
          }
        }
        next(left);
      });
    };
    next(chunks);
  }
}

/** A download cut short (a dropped connection, a stall, no body): the one failure ensureBlob retries, resuming. */
function interrupted(e: unknown, what: string): BerthError {
  return new BerthError('DOWNLOAD_INTERRUPTED', `${what}: the download was interrupted: ${messageOf(e)}`,
    'check the connection to the registry and pull again; berth resumes from what it has', { cause: e });
}

/**
 * Downloads into `partial` (appending to its `have` bytes where the registry honours Range) and
 * returns the digest of the whole file, hashed as the bytes arrive: no second read of the blob.
 */
async function download(partial: string, have: number, fetchFrom: BlobFetch, progress: (n: number) => void, what: string): Promise<string> {
  const res = await fetchFrom(have).catch((e: unknown) => {
    throw e instanceof BerthError ? e : interrupted(e, what);
  });
  const resumed = have > 0 && res.status === 206;
  if (have > 0 && !resumed) progress(-have); // the registry ignored Range: start over
  if (!res.body) throw interrupted('the registry sent an empty response', what);
  const hash = createHash('sha256');
  if (resumed) await hashInto(hash, partial, have); // what an earlier attempt wrote
  // A connection that stays open but sends nothing would hang the pull: after STALL_MS of
  // silence the download is cut, and then resumed like any dropped one.
  let stall: NodeJS.Timeout | undefined;
  const counter = new Transform({
    transform(chunk: Buffer, _enc, cb) {
      stall?.refresh();
      progress(chunk.length);
      hash.update(chunk);
      cb(null, chunk);
    },
    flush(cb) {
      clearTimeout(stall);
      cb();
    },
  });
  stall = setTimeout(() => counter.destroy(new Error(`no data for ${STALL_MS / 1000} s`)), STALL_MS);
  try {
    await pipeline(res.body, counter, new BatchedFileWriter(partial, resumed ? 'a' : 'w'));
  } catch (e: unknown) {
    clearTimeout(stall);
    throw diskFull(e, partial, what) ?? interrupted(e, what);
  }
  return `sha256:${hash.digest('hex')}`;
}

/** Hashes the first `bytes` of `file` into `hash`. */
async function hashInto(hash: Hash, file: string, bytes: number): Promise<void> {
  await pipeline(createReadStream(file, { start: 0, end: bytes - 1, highWaterMark: 1 << 20 }), async (source: AsyncIterable<Buffer>) => {
    for await (const chunk of source) hash.update(chunk);
  });
}

/**
 * A full disk (or quota) while a blob is written: its .partial is removed, not kept to resume
 * from as after a dropped connection, so that nothing half-written is left in the cache, which
 * a full disk needs least of all. (The caller holds the blob's lock.)
 */
function diskFull(e: unknown, partial: string, what: string): BerthError | undefined {
  const code = errnoOf(e);
  if (code !== 'ENOSPC' && code !== 'EDQUOT') return undefined;
  rmSync(partial, { force: true });
  return new BerthError('DISK_FULL', `${code === 'EDQUOT' ? 'disk quota exceeded' : 'no space left'} in the cache (${path.dirname(partial)}) writing ${what}; the partial download was removed`,
    'free some space or quota, or point BERTH_CACHE_DIR (cache.dir) at a file system with room', { cause: e });
}

/** The sha256 of a file, read from `fd` (closed after) when one is given. */
async function hashFile(file: string, fd?: number): Promise<string> {
  const hash = createHash('sha256');
  await pipeline(createReadStream(file, { highWaterMark: 1 << 20, ...(fd === undefined ? {} : { fd }) }), async (source: AsyncIterable<Buffer>) => {
    for await (const chunk of source) hash.update(chunk);
  });
  return `sha256:${hash.digest('hex')}`;
}

export function imagePath(root: string, manifestDigest: string): string {
  return path.join(root, 'images', `${hexOf(manifestDigest)}.sqsh`);
}

/**
 * Removes every complete blob (converted images stay), and every unfinished download that no
 * one is writing: a .partial whose blob lock is free, left by a puller that was killed or gave
 * up (one being written is under its lock: ensureBlob). Returns bytes freed.
 */
export function pruneBlobs(root: string): number {
  const dir = path.join(root, 'blobs', 'sha256');
  let freed = 0;
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch {
    return 0;
  }
  for (const n of names) {
    const p = path.join(dir, n);
    const size = lstatSync(p, { throwIfNoEntry: false })?.size ?? 0; // a blob a pull renames meanwhile is gone
    if (/^[0-9a-f]{64}$/.test(n)) {
      rmSync(p, { force: true });
      freed += size;
    } else if (/^[0-9a-f]{64}\.partial$/.test(n) && removeUnlocked(p, path.join(dir, `${n.slice(0, 64)}.lock`))) {
      freed += size;
    }
  }
  return freed;
}

/**
 * Removes `file` holding `lock`, if the lock is free now; whether it did. The lock file itself
 * stays, since removing a lock others may have opened would let two holders in.
 */
function removeUnlocked(file: string, lock: string): boolean {
  let fd: number | null;
  try {
    fd = loadAddon().tryLock(lock);
  } catch {
    return false; // a lock that cannot be taken guards its file as surely as a held one
  }
  if (fd === null) return false;
  try {
    rmSync(file, { force: true });
    return true;
  } finally {
    closeSync(fd);
  }
}
