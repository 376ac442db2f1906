// Copying an image to a cluster over SFTP: resumable (an interrupted push leaves a hidden
// .NAME.berth-partial that the next push continues), verified (the remote copy's sha256 must
// equal the local one before it is renamed into place, atomically), and skipped when the remote
// side already holds the same image. Nothing half-written ever sits at the destination.
import { createHash } from 'node:crypto';
import { createReadStream, statSync } from 'node:fs';
import path from 'node:path';
import type { SFTPWrapper, Stats } from 'ssh2';
import { BerthError } from '../errors.js';
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

export async function sha256File(file: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(file, { highWaterMark: 1 << 20 })) hash.update(chunk as Buffer);
  return hash.digest('hex');
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

export async function pushImage(conn: Connection, local: string, remote: string, events: PushEvents, localSha?: string): Promise<PushResult> {
  const size = statSync(local).size;
  const sha256 = localSha ?? (await sha256File(local));
  const sftp = await sftpOf(conn);
  try {
    const target = await destination(sftp, local, remote);
    const where = `${conn.target.alias}:${target}`;
    const existing = await statRemote(sftp, target);
    if (existing && existing.size === size && (await remoteSha256(conn, target)) === sha256) {
      return { remotePath: target, sha256, already: true, resumedAt: 0, sent: 0 };
    }
    await mkdirs(sftp, path.posix.dirname(target));
    const partial = path.posix.join(path.posix.dirname(target), `.${path.posix.basename(target)}.berth-partial`);
    const before = await statRemote(sftp, partial);
    const from = before && before.size <= size ? before.size : 0;
    events.start(size, from);
    const written = await conn.guard(new Promise<Error | undefined>((resolve) => {
      const out = sftp.createWriteStream(partial, { flags: from > 0 ? 'r+' : 'w', start: from, mode: 0o644 });
      const input = createReadStream(local, { start: from, highWaterMark: 256 * 1024 });
      input.on('data', (d) => events.bytes(d.length));
      input.on('error', resolve);
      out.on('error', resolve);
      out.on('close', () => resolve(undefined));
      input.pipe(out);
    })).catch((e: Error) => e);
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
