// An output file that appears whole or not at all. Where the filesystem supports O_TMPFILE
// (ext4, xfs, btrfs, tmpfs) the image is written into an unnamed inode, so even kill -9 leaves
// nothing behind; it gets its name only when complete, by linkat(2) through /proc (the addon's
// linkFd; Node's fs.link cannot). Elsewhere (NFS, Lustre, GPFS) a dot-named temp file
// is used, removed on failure and signals (interrupt.ts), and swept by the next conversion into
// the same directory once its owner is gone (sweepStaleTemps).
import { closeSync, constants, fstatSync, fsyncSync, ftruncateSync, lstatSync, openSync, readdirSync, readFileSync, renameSync, statSync, unlinkSync } from 'node:fs';
import { hostname } from 'node:os';
import path from 'node:path';
import { BerthError, errnoOf, messageOf } from '../errors.js';
import { loadAddon } from '../runtime/native.js';
import { onInterrupt } from './interrupt.js';

const O_TMPFILE = 0o20000000 | constants.O_DIRECTORY; // Linux x86/arm value, see open(2)

export class AtomicOutput {
  private committed = false;
  private closed = false;
  private readonly forget: () => void;

  private constructor(
    readonly target: string,
    readonly fd: number,
    /** The named temp file, or undefined for an O_TMPFILE inode. */
    private readonly tempPath: string | undefined,
  ) {
    this.forget = onInterrupt(() => this.abort());
  }

  static create(target: string, force: boolean): AtomicOutput {
    const abs = path.resolve(target);
    const dir = path.dirname(abs);
    const dirStat = statSync(dir, { throwIfNoEntry: false });
    if (!dirStat?.isDirectory()) {
      throw new BerthError('OUTPUT_UNWRITABLE', `cannot write ${abs}: ${dir} is not a directory`, 'create the directory first');
    }
    const existing = statSync(abs, { throwIfNoEntry: false });
    if (existing && !force) {
      throw new BerthError('OUTPUT_EXISTS', `${abs} already exists`, 'pass --force to replace it, or choose another -o');
    }
    if (existing?.isDirectory()) throw new BerthError('OUTPUT_EXISTS', `${abs} is a directory`, 'name a file with -o');
    sweepStaleTemps(dir);
    try {
      return new AtomicOutput(abs, openSync(dir, O_TMPFILE | constants.O_RDWR, 0o644), undefined);
    } catch (e: unknown) {
      if (!['EOPNOTSUPP', 'EISDIR', 'EINVAL', 'ENOTSUP'].includes(errnoOf(e) ?? '')) throw writeError(abs, e);
    }
    const temp = tempName(abs, Math.random().toString(36).slice(2, 8));
    try {
      return new AtomicOutput(abs, openSync(temp, 'wx+', 0o644), temp);
    } catch (e: unknown) {
      throw writeError(abs, e);
    }
  }

  /** The path another process opens to write here (tar2sqfs gets the fd as its fd 3). */
  static readonly childPath = '/dev/fd/3';

  /** Starts over (the conversion is being redone). */
  truncate(): void {
    ftruncateSync(this.fd, 0);
  }

  get size(): number {
    return fstatSync(this.fd).size;
  }

  commit(): void {
    try {
      fsyncSync(this.fd); // NFS reports a full disk or quota here, if not before
      if (this.tempPath) renameSync(this.tempPath, this.target);
      else this.linkInto();
    } catch (e: unknown) {
      throw e instanceof BerthError ? e : writeError(this.target, e);
    }
    this.committed = true;
    const dirFd = openSync(path.dirname(this.target), 'r');
    try {
      fsyncSync(dirFd);
    } finally {
      closeSync(dirFd);
    }
    this.close();
  }

  /** linkat() will not replace an existing name: link beside it, then rename over it. */
  private linkInto(): void {
    const staging = tempName(this.target, 'link');
    try {
      loadAddon().linkFd(this.fd, staging);
    } catch (e: unknown) {
      if (errnoOf(e) === 'ENOSPC' || errnoOf(e) === 'EDQUOT') throw writeError(this.target, e);
      throw new BerthError('OUTPUT_UNWRITABLE', `cannot give ${this.target} its name: ${messageOf(e)}`,
        'check that the directory is writable');
    }
    try {
      renameSync(staging, this.target);
    } catch (e: unknown) {
      unlinkQuietly(staging);
      throw e;
    }
  }

  /** Drops everything written; safe to call more than once, and after commit. */
  abort(): void {
    if (!this.committed && this.tempPath) {
      try {
        unlinkSync(this.tempPath);
      } catch {
        // already gone
      }
    }
    this.close();
  }

  private close(): void {
    if (this.closed) return;
    this.closed = true;
    this.forget();
    closeSync(this.fd);
  }
}

/**
 * berth's temp names: `.NAME.berth-tmp-PID-TAG@HOST`. The host says whose PID it is: on a
 * filesystem shared by many nodes (where the named temp files are used), another node's PID
 * means nothing here.
 */
function tempName(target: string, tag: string): string {
  return path.join(path.dirname(target), `.${path.basename(target)}.berth-tmp-${process.pid}-${tag}@${thisHost()}`);
}

function thisHost(): string {
  return hostname().replace(/[^A-Za-z0-9.-]/g, '_');
}

function unlinkQuietly(file: string): void {
  try {
    unlinkSync(file);
  } catch {
    // already gone
  }
}

export function writeError(target: string, e: unknown): BerthError {
  if (errnoOf(e) === 'ENOSPC' || errnoOf(e) === 'EDQUOT') {
    return new BerthError('DISK_FULL', `no space left writing ${target}`, 'free some space or quota, or write the image elsewhere with -o; nothing was left behind');
  }
  return new BerthError('OUTPUT_UNWRITABLE', `cannot write ${target}: ${messageOf(e)}`, 'check the directory exists and is writable', { cause: e });
}

/**
 * Our temp files in `dir` (of any target, ours and older berths' names) whose converter is
 * gone: killed by -9, or on a node that crashed. Only the user's own regular files are looked
 * at. Made on this host: swept when its PID is dead, or alive but started after the file was
 * last written (a reused PID). Made elsewhere, or by a berth that did not record the host: swept
 * once nothing has written it for an hour, as a live converter writes its file as it goes.
 */
export function sweepStaleTemps(dir: string, now = Date.now()): string[] {
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch {
    return [];
  }
  const swept: string[] = [];
  for (const name of names) {
    const m = /\.berth-tmp-(\d+)(?:-[0-9A-Za-z]+)?(?:@([A-Za-z0-9._-]+))?$/.exec(name);
    if (!m) continue;
    const file = path.join(dir, name);
    const st = lstatSync(file, { throwIfNoEntry: false });
    if (!st?.isFile() || st.uid !== process.getuid!()) continue;
    const pid = Number(m[1]);
    const stale = m[2] === thisHost()
      ? pid !== process.pid && !ownerMayLive(pid, st.mtimeMs)
      : now - st.mtimeMs > 60 * 60 * 1000;
    if (!stale) continue;
    unlinkQuietly(file);
    swept.push(name);
  }
  return swept;
}

/** Whether process `pid` is alive and old enough to have written a file last modified at mtimeMs. */
function ownerMayLive(pid: number, mtimeMs: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (e: unknown) {
    if (errnoOf(e) !== 'EPERM') return false;
  }
  const started = startTimeMs(pid);
  return started === undefined || started <= mtimeMs + 1000;
}

/** A process's start time from /proc (field 22 of stat, in USER_HZ ticks since boot; USER_HZ is 100 on Linux). */
function startTimeMs(pid: number): number | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const ticks = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19]);
    const btime = Number(/^btime (\d+)$/m.exec(readFileSync('/proc/stat', 'utf8'))?.[1]);
    return Number.isFinite(ticks) && Number.isFinite(btime) ? btime * 1000 + ticks * 10 : undefined;
  } catch {
    return undefined;
  }
}
