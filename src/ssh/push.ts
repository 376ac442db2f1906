// Copying an image to a cluster over SFTP: resumable (an interrupted push leaves a hidden
// .NAME.berth-partial that the next push continues), verified (the remote copy's sha256 must
// equal the local one before it is renamed into place, atomically), and skipped when the remote
// side already holds the same image. Nothing half-written ever sits at the destination.
import { closeSync, openSync, readSync, statSync } from 'node:fs';
import path from 'node:path';
import type { SFTPWrapper, Stats } from 'ssh2';
import { BerthError } from '../errors.js';
import { sha256File } from '../util/hash.js';
import { exec, shellQuote, type Connection } from './connect.js';

export interface PushEvents {
  start(total: number, from: number): void;
  bytes(n: number): void;
}

export interface PushResult {
  remotePath: string;
  sha256: string;
  /** already: the remote side had it; resumed: continued at this many bytes; else 0. */
  already: boolean;
  resumedAt: number;
  sent: number;
}

const sftpOf = (conn: Connection): Promise<SFTPWrapper> =>
  new Promise((resolve, reject) => conn.client.sftp((err, sftp) => (err ? reject(new BerthError('REMOTE_FAILED', `no SFTP on ${conn.target.alias}: ${err.message}`, 'the server must allow the sftp subsystem')) : resolve(sftp))));

const statRemote = (sftp: SFTPWrapper, p: string): Promise<Stats | undefined> =>
  new Promise((resolve) => sftp.stat(p, (err, st) => resolve(err ? undefined : st)));

const call = (f: (cb: (err?: Error | null) => void) => void): Promise<void> =>
  new Promise((resolve, reject) => f((err) => (err ? reject(err) : resolve())));

async function remoteSha256(conn: Connection, p: string): Promise<string | undefined> {
  const r = await conn.guard(exec(conn.client, `sha256sum -- ${shellQuote(p)}`));
  return r.code === 0 ? r.stdout.split(/\s/)[0] : undefined;
}

/** Where the image goes: PATH as given, PATH/NAME for a directory (or a trailing /), ~/berth-images/NAME by default. */
async function destination(sftp: SFTPWrapper, local: string, given: string): Promise<string> {
  const name = path.basename(local);
  if (!given) return `berth-images/${name}`;
  if (given.endsWith('/')) return `${given}${name}`;
  const st = await statRemote(sftp, given);
  return st?.isDirectory() ? `${given}/${name}` : given;
}

async function mkdirs(sftp: SFTPWrapper, dir: string): Promise<void> {
  if (!dir || dir === '.' || dir === '/' || (await statRemote(sftp, dir))) return;
  await mkdirs(sftp, path.posix.dirname(dir));
  await call((cb) => sftp.mkdir(dir, cb)).catch(() => undefined);
}

/** Chunks of an upload, and how many are in flight: one at a time, each write would wait a round trip. */
const CHUNK = 64 * 1024;
const IN_FLIGHT = 16;

/**
 * Writes local[from..size) into the open remote file, IN_FLIGHT writes at a time. Writes can
 * land out of order, so after a cut only the data before the last IN_FLIGHT chunks of the
 * file's size is sure to be there: resumeOffset() rewinds by that much.
 */
async function upload(sftp: SFTPWrapper, local: string, partial: string, from: number, size: number, onBytes: (n: number) => void): Promise<Error | undefined> {
  const handle = await new Promise<Buffer>((resolve, reject) => sftp.open(partial, from > 0 ? 'r+' : 'w', { mode: 0o644 }, (e, h) => (e ? reject(e) : resolve(h))));
  const fd = openSync(local, 'r');
  let offset = from;
  let active = 0;
  let error: Error | undefined;
  await new Promise<void>((resolve) => {
    const pump = () => {
      while (!error && active < IN_FLIGHT && offset < size) {
        const len = Math.min(CHUNK, size - offset);
        const buf = Buffer.allocUnsafe(len);
        readSync(fd, buf, 0, len, offset);
        active++;
        sftp.write(handle, buf, 0, len, offset, (e) => {
          active--;
          if (e) error ??= e;
          else onBytes(len);
          if (active === 0 && (error || offset >= size)) resolve();
          else pump();
        });
        offset += len;
      }
      if (active === 0) resolve();
    };
    pump();
  });
  closeSync(fd);
  await call((cb) => sftp.close(handle, cb)).catch((e: Error) => { error ??= e; });
  return error;
}

const resumeOffset = (partialSize: number, size: number) => (partialSize > size ? 0 : Math.max(0, partialSize - IN_FLIGHT * CHUNK));

export async function pushImage(conn: Connection, local: string, remote: string, events: PushEvents, localSha?: string): Promise<PushResult> {
  const size = statSync(local).size;
  // Hashed while the upload runs (the other core), unless the remote side may hold it already.
  const hashing = localSha ? Promise.resolve(localSha) : sha256File(local);
  hashing.catch(() => undefined);
  const sftp = await sftpOf(conn);
  try {
    const target = await destination(sftp, local, remote);
    const where = `${conn.target.alias}:${target}`;
    const existing = await statRemote(sftp, target);
    if (existing && existing.size === size && (await remoteSha256(conn, target)) === (await hashing)) {
      return { remotePath: target, sha256: await hashing, already: true, resumedAt: 0, sent: 0 };
    }
    await mkdirs(sftp, path.posix.dirname(target));
    const partial = path.posix.join(path.posix.dirname(target), `.${path.posix.basename(target)}.berth-partial`);
    const before = await statRemote(sftp, partial);
    const from = before ? resumeOffset(before.size, size) : 0;
    events.start(size, from);
    const written = await conn.guard(upload(sftp, local, partial, from, size, events.bytes)).catch((e: Error) => e);
    // A write the server refused does not always surface as a stream error: the size says.
    const landed = written ? undefined : (await conn.guard(statRemote(sftp, partial)))?.size;
    if (written || landed !== size) {
      // SFTP (version 3) has no "disk full" status: ask the remote side how much room is left.
      const df = written instanceof BerthError ? undefined : await exec(conn.client, `df -Pk -- ${shellQuote(path.posix.dirname(partial))} | tail -1`).catch(() => undefined);
      const free = Number(df?.stdout.trim().split(/\s+/)[3]) * 1024;
      if (Number.isFinite(free) && free < size - Math.min(from, landed ?? from)) {
        await call((cb) => sftp.unlink(partial, cb)).catch(() => undefined);
        throw new BerthError('REMOTE_DISK_FULL', `${where}: the remote disk is full (${free} bytes free, ${size} needed); the partial copy was removed`,
          'free space there (or push to another directory, e.g. a scratch file system), then push again');
      }
      throw new BerthError('REMOTE_FAILED', `the upload to ${where} stopped at a connection or write error: ${written?.message ?? `${landed ?? 0} of ${size} bytes arrived`}`,
        'push again: it continues where it stopped');
    }
    const sha256 = await hashing;
    const got = await remoteSha256(conn, partial);
    if (got !== sha256) {
      await call((cb) => sftp.unlink(partial, cb)).catch(() => undefined);
      throw new BerthError('DIGEST_MISMATCH', `${where}: the copy there has sha256 ${got ?? '(unreadable)'}, not ${sha256}; it was removed`,
        'push again (an earlier interrupted push of a different file with the same name can cause this)');
    }
    // posix-rename replaces atomically; plain SFTP rename refuses to replace.
    await call((cb) => sftp.ext_openssh_rename(partial, target, cb)).catch(() => call((cb) => sftp.rename(partial, target, cb)));
    return { remotePath: target, sha256, already: false, resumedAt: from, sent: size - from };
  } finally {
    sftp.end();
  }
}
