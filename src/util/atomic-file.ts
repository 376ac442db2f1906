// Writing a file whole or not at all: into a temporary file beside it, then rename(2) over it,
// so a reader never sees half a file and a crash leaves the old one. The temporary name carries
// the pid and random bytes and is created with O_EXCL: two berths writing the same file at
// once (two logins, two plans) each write their own, and the last rename wins whole. The name
// keeps the target's as its prefix, so that the Slurm epilog's `plan-JOB-*` sweep also takes a
// killed `berth plan`'s temporary file.
import { randomBytes } from 'node:crypto';
import { constants, copyFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { errnoOf } from '../errors.js';

function temporaryBeside(target: string): string {
  return `${target}.berth-tmp-${process.pid}-${randomBytes(6).toString('hex')}`;
}

/** Runs `write` on a fresh temporary name, then renames it to `target`; the temporary file never outlives a failure. */
function replaceWith(target: string, write: (temp: string) => void): void {
  const temp = temporaryBeside(target);
  try {
    write(temp);
    renameSync(temp, target);
  } catch (e: unknown) {
    // EEXIST: the name is someone else's file, not ours to remove (O_EXCL refused it).
    if (errnoOf(e) !== 'EEXIST') rmSync(temp, { force: true });
    throw e;
  }
}

/** Writes `data` as `target` (mode 0600 unless told). */
export function writeFileAtomic(target: string, data: string | Buffer, mode = 0o600): void {
  replaceWith(target, (temp) => writeFileSync(temp, data, { mode, flag: 'wx' }));
}

/** Copies `from` to `target` (a reflink where the filesystem has them). */
export function copyFileAtomic(from: string, target: string): void {
  replaceWith(target, (temp) => copyFileSync(from, temp, constants.COPYFILE_FICLONE | constants.COPYFILE_EXCL));
}
