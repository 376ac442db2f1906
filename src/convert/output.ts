// An output file that appears whole or not at all. Where the filesystem supports O_TMPFILE
// (ext4, xfs, btrfs, tmpfs) the image is written into an unnamed inode, so even kill -9 leaves
// nothing behind; it gets its name only when complete, by linkat(2) through /proc (GNU `ln -L`
// does that call; Node's fs.link cannot). Elsewhere (NFS, Lustre, GPFS) a dot-named temp file
// is used, removed on failure and signals, and swept by a later run if its owner died.
import { spawnSync } from 'node:child_process';
import { closeSync, constants, fstatSync, fsyncSync, ftruncateSync, openSync, readdirSync, renameSync, statSync, unlinkSync } from 'node:fs';
import path from 'node:path';
import { BerthError, errnoOf, messageOf } from '../errors.js';

const O_TMPFILE = 0o20000000 | constants.O_DIRECTORY; // Linux x86/arm value, see open(2)

export class AtomicOutput {
  private committed = false;
  private closed = false;

  private constructor(
    readonly target: string,
    readonly fd: number,
    /** The named temp file, or undefined for an O_TMPFILE inode. */
    private readonly tempPath: string | undefined,
  ) {}

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
    sweepStaleTemps(dir, path.basename(abs));
    try {
      return new AtomicOutput(abs, openSync(dir, O_TMPFILE | constants.O_RDWR, 0o644), undefined);
    } catch (e: unknown) {
      if (!['EOPNOTSUPP', 'EISDIR', 'EINVAL', 'ENOTSUP'].includes(errnoOf(e) ?? '')) throw writeError(abs, e);
    }
    const temp = path.join(dir, `.${path.basename(abs)}.berth-tmp-${process.pid}-${Math.random().toString(36).slice(2, 8)}`);
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
    fsyncSync(this.fd);
    if (this.tempPath) {
      renameSync(this.tempPath, this.target);
    } else {
      // linkat() will not replace an existing name: link beside it, then rename over it.
      const staging = path.join(path.dirname(this.target), `.${path.basename(this.target)}.berth-tmp-${process.pid}-link`);
      const r = spawnSync('ln', ['-L', `/proc/${process.pid}/fd/${this.fd}`, staging], { encoding: 'utf8' });
      if (r.status !== 0) {
        throw new BerthError('OUTPUT_UNWRITABLE', `cannot give ${this.target} its name: ${r.stderr?.trim() || messageOf(r.error)}`,
          'check that the directory is writable');
      }
      renameSync(staging, this.target);
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
    closeSync(this.fd);
  }
}

export function writeError(target: string, e: unknown): BerthError {
  if (errnoOf(e) === 'ENOSPC' || errnoOf(e) === 'EDQUOT') {
    return new BerthError('DISK_FULL', `no space left writing ${target}`, 'free some space or quota, or write the image elsewhere with -o; nothing was left behind');
  }
  return new BerthError('OUTPUT_UNWRITABLE', `cannot write ${target}: ${messageOf(e)}`, 'check the directory exists and is writable', { cause: e });
}

/** Removes temp files of this target whose owning process is gone (after a kill -9). */
function sweepStaleTemps(dir: string, base: string): void {
  const prefix = `.${base}.berth-tmp-`;
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch {
    return;
  }
  for (const name of names) {
    if (!name.startsWith(prefix)) continue;
    const pid = Number(name.slice(prefix.length).split('-')[0]);
    if (!Number.isInteger(pid) || pid === process.pid || isAlive(pid)) continue;
    try {
      unlinkSync(path.join(dir, name));
    } catch {
      // another sweeper got there first
    }
  }
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e: unknown) {
    return errnoOf(e) === 'EPERM';
  }
}
