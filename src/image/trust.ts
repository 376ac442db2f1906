// Whether a cache's directories and files can be believed, by who could have written them
// (STYLE.md section 10; the rules are listed in SECURITY.md under "Caches"):
//   - trusted owners are the user berth runs as, root, and the site cache's owner (cache.site-owner);
//   - a directory is believed when it is a real directory owned by a trusted owner that no one
//     else can write (group or other write), or that is sticky (others may add names there but
//     not rename or remove the owner's), and so is every directory above it;
//   - a file is believed when it is a regular file (opened with O_NOFOLLOW: never through a
//     symlink) owned by a trusted owner and writable by no one else, in a believed directory.
// Once every directory of a path is believed, only trusted owners can change what the path
// names, so later opens by name (the helper mounting the image) see the file that was checked.
import { spawnSync } from 'node:child_process';
import { closeSync, constants, fstatSync, lstatSync, mkdirSync, openSync, readFileSync, readlinkSync, statfsSync, type Stats } from 'node:fs';
import path from 'node:path';
import { BerthError, errnoOf } from '../errors.js';

export interface Trust {
  /** The user berth runs as. */
  self: number;
  /** Whose files are believed: self, root and the site cache's owner. */
  owners: ReadonlySet<number>;
}

/** Why a path is not believed: what it is, whose, its mode (when it could be seen), why, and what to do. */
export interface Doubt {
  path: string;
  owner: number | undefined;
  mode: number | undefined;
  why: string;
  fix: string;
}

const OTHERS_WRITE = 0o022;
const STICKY = 0o1000; // S_ISVTX: in such a directory only an entry's owner may rename or remove it
const MAX_SYMLINKS = 40; // as the kernel's ELOOP limit

export function makeTrust(self: number, siteOwner?: number): Trust {
  return { self, owners: new Set([self, 0, ...(siteOwner === undefined ? [] : [siteOwner])]) };
}

const names = new Map<number, string>();

/** A uid's name through NSS (getent: LDAP and sssd users too), else the number. */
export function ownerName(uid: number): string {
  if (!names.has(uid)) {
    const r = spawnSync('getent', ['passwd', String(uid)], { encoding: 'utf8', timeout: 5000 });
    const name = r.status === 0 ? r.stdout.split(':')[0] : undefined;
    names.set(uid, name ? name : `uid ${uid}`);
  }
  return names.get(uid)!;
}

/** The uid of cache.site-owner, a user name or a number. */
export function uidOf(user: string, setting: string): number {
  if (/^\d+$/.test(user)) return Number(user);
  const r = spawnSync('getent', ['passwd', user], { encoding: 'utf8', timeout: 5000 });
  const uid = r.status === 0 ? Number(r.stdout.split(':')[2]) : NaN;
  if (!Number.isInteger(uid)) {
    throw new BerthError('CONFIG_INVALID', `${setting} names the user '${user}', who does not exist on this node`,
      'set it to the account that writes the site cache (a user name or uid), or remove it to trust root alone');
  }
  return uid;
}

export function modeText(mode: number): string {
  return (mode & 0o7777).toString(8).padStart(4, '0');
}

/** One line: the path, its owner and mode, why it is not used. */
export function describeDoubt(d: Doubt): string {
  const seen = d.owner === undefined || d.mode === undefined ? '' : ` (owner ${ownerName(d.owner)}, mode ${modeText(d.mode)})`;
  return `${d.path}${seen} ${d.why}`;
}

function doubt(p: string, st: Stats, why: string, fix: string): Doubt {
  return { path: p, owner: st.uid, mode: st.mode, why, fix };
}

const ASK_OWNER = 'only what you, root or the site cache\'s owner (cache.site-owner) own is used: remove it, or ask its owner or an admin to';

/** A path that could not even be looked at (EACCES in a directory one may not search). */
function unseen(p: string, e: unknown): Doubt {
  return { path: p, owner: undefined, mode: undefined, why: `cannot be looked at (${errnoOf(e) ?? (e as Error).message})`, fix: 'check the permissions of the directories above it' };
}

/** lstat, with ENOENT as undefined and any other failure as a doubt. */
function look(p: string): Stats | undefined | Doubt {
  try {
    return lstatSync(p, { throwIfNoEntry: false });
  } catch (e: unknown) {
    return unseen(p, e);
  }
}

const isDoubt = (x: Stats | Doubt | undefined): x is Doubt => x !== undefined && 'why' in x;

const FUSE_SUPER_MAGIC = 0x65735546;

/**
 * On a FUSE mount, owners and modes are whatever its server says: believed only when a trusted
 * owner made the mount (its user_id= in mountinfo). fusermount3 is setuid, so any user can mount
 * one, and with user_allow_other in /etc/fuse.conf others see it.
 */
function fuseDoubt(p: string, st: Stats, trust: Trust): Doubt | undefined {
  let type: number;
  try {
    type = statfsSync(p).type;
  } catch {
    return undefined; // gone meanwhile: the caller's open says so
  }
  if (type !== FUSE_SUPER_MAGIC) return undefined;
  const dev = BigInt(st.dev);
  const major = Number(((dev >> 8n) & 0xfffn) | ((dev >> 32n) & ~0xfffn));
  const minor = Number((dev & 0xffn) | ((dev >> 12n) & ~0xffn));
  const line = readFileSync('/proc/self/mountinfo', 'utf8').split('\n').find((l) => l.split(' ')[2] === `${major}:${minor}`);
  const owner = /[ ,]user_id=(\d+)/.exec(line?.slice(line.indexOf(' - ')) ?? '')?.[1];
  if (owner !== undefined && trust.owners.has(Number(owner))) return undefined;
  return doubt(p, st, `is on a FUSE file system that ${owner === undefined ? 'an unknown user' : `uid ${owner}`} mounted, whose owners and modes are that user's to invent`, ASK_OWNER);
}

export function dirDoubt(p: string, st: Stats, trust: Trust): Doubt | undefined {
  if (!st.isDirectory()) return doubt(p, st, 'is not a directory', 'remove it, or set cache.dir elsewhere');
  if (!trust.owners.has(st.uid)) return doubt(p, st, 'belongs to another user', ASK_OWNER);
  const fuse = fuseDoubt(p, st, trust);
  if (fuse) return fuse;
  if (st.mode & OTHERS_WRITE && !(st.mode & STICKY)) {
    return doubt(p, st, 'can be written by other users', `${st.uid === trust.self ? `chmod go-w ${p}` : 'ask its owner to chmod go-w it'}, or set cache.dir to a directory only you can write`);
  }
  return undefined;
}

export function fileDoubt(p: string, st: Stats, trust: Trust): Doubt | undefined {
  if (st.isSymbolicLink()) return doubt(p, st, 'is a symlink, which berth never follows in a cache', 'remove it');
  if (!st.isFile()) return doubt(p, st, 'is not a regular file', 'remove it');
  if (!trust.owners.has(st.uid)) return doubt(p, st, 'belongs to another user', ASK_OWNER);
  if (st.mode & OTHERS_WRITE) return doubt(p, st, 'can be written by other users', st.uid === trust.self ? `remove it (berth pulls it again)` : ASK_OWNER);
  // A second name could be another user's hard link to some other file of a trusted owner's.
  if (st.nlink !== 1) return doubt(p, st, `has ${st.nlink} names (hard links), one of which someone else may have made`, st.uid === trust.self ? 'remove it (berth pulls it again)' : ASK_OWNER);
  return fuseDoubt(p, st, trust);
}

export interface PathCheck {
  /** Set when a directory on the way is not believed. */
  doubt?: Doubt;
  /** The walk stopped at a directory that does not exist (and was not to be created). */
  missing: boolean;
}

/**
 * Checks every directory from / down to `dir` by lstat, following symlinks as the kernel would,
 * but only those a trusted owner made (in a sticky directory anyone may add one). `create` makes missing directories with that mode (umask permitting) and
 * accepts one only if it then belongs to this user: never an existing one that another made.
 */
export function checkDirPath(dir: string, trust: Trust, create?: number): PathCheck {
  const pending = path.resolve(dir).split('/').filter(Boolean);
  let here = '/';
  const top = dirDoubt('/', lstatSync('/'), trust);
  if (top) return { doubt: top, missing: false };
  for (let hops = 0; pending.length > 0;) {
    const name = pending.shift()!;
    if (name === '.') continue;
    // `here` holds no symlinks and every directory above it was checked on the way down.
    if (name === '..') {
      here = path.dirname(here);
      continue;
    }
    const next = path.join(here, name);
    const seen = look(next);
    if (isDoubt(seen)) return { doubt: seen, missing: false };
    let st = seen;
    if (!st) {
      if (create === undefined) return { missing: true };
      st = makeDir(next, create);
      if (st.uid !== trust.self) return { doubt: doubt(next, st, 'was made by another user just now', ASK_OWNER), missing: false };
    }
    if (st.isSymbolicLink()) {
      // In a sticky directory anyone may add a name: a link is as good as whoever made it.
      if (!trust.owners.has(st.uid)) return { doubt: doubt(next, st, 'is a symlink made by another user, who could point it anywhere', 'remove it, or name the directory it should lead to'), missing: false };
      if (++hops > MAX_SYMLINKS) return { doubt: doubt(next, st, 'is one of too many symlinks in a row', 'fix the path'), missing: false };
      const target = readlinkSync(next);
      if (target.startsWith('/')) here = '/';
      pending.unshift(...target.split('/').filter(Boolean));
      continue;
    }
    const d = dirDoubt(next, st, trust);
    if (d) return { doubt: d, missing: false };
    here = next;
  }
  return { missing: false };
}

function makeDir(p: string, mode: number): Stats {
  try {
    mkdirSync(p, { mode });
  } catch (e: unknown) {
    if (errnoOf(e) !== 'EEXIST') {
      throw new BerthError('OUTPUT_UNWRITABLE', `cannot create the cache directory ${p}: ${(e as Error).message}`,
        'set cache.dir (BERTH_CACHE_DIR) to a directory you can write');
    }
  }
  return lstatSync(p);
}

/**
 * Opens a cache file for reading if it is believed: O_NOFOLLOW (a symlink fails with ELOOP and
 * is reported as one), O_NONBLOCK (a FIFO planted there cannot hang the open), then fstat of
 * what was opened. Returns undefined when there is no such file.
 */
export function openTrusted(file: string, trust: Trust): { fd: number; st: Stats } | { doubt: Doubt } | undefined {
  let fd: number;
  try {
    fd = openSync(file, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  } catch (e: unknown) {
    if (errnoOf(e) === 'ENOENT') return undefined;
    const st = look(file);
    if (isDoubt(st)) return { doubt: st };
    if (!st) return undefined;
    return { doubt: fileDoubt(file, st, trust) ?? doubt(file, st, `cannot be read (${errnoOf(e) ?? 'error'})`, 'check its permissions') };
  }
  const st = fstatSync(fd);
  const d = fileDoubt(file, st, trust);
  if (d) {
    closeSync(fd);
    return { doubt: d };
  }
  return { fd, st };
}
