// One error type for everything a user can act on: what happened (message) and what to
// do about it (hint). Anything else reaching main.ts is a bug and is reported as one.

export type ErrorCode =
  | 'USAGE'
  | 'SOURCE_NOT_FOUND'
  | 'SOURCE_INVALID'
  | 'IMAGE_NOT_IN_SOURCE'
  | 'PLATFORM_NOT_FOUND'
  | 'UNSUPPORTED_MEDIA_TYPE'
  | 'DIGEST_MISMATCH'
  | 'LAYER_CORRUPT'
  | 'LAYER_UNSAFE'
  | 'TOOL_MISSING'
  | 'TOOL_FAILED'
  | 'DISK_FULL'
  | 'OUTPUT_EXISTS'
  | 'OUTPUT_UNWRITABLE'
  | 'NOT_A_BERTH_IMAGE'
  | 'INTERRUPTED'
  | 'NO_COMMAND'
  | 'BIND_SOURCE_MISSING'
  | 'WRONG_ARCHITECTURE'
  | 'IMAGE_UNSUPPORTED'
  | 'HELPER_MISSING'
  | 'AUTH_FAILED'
  | 'REGISTRY_UNREACHABLE'
  | 'DOWNLOAD_INTERRUPTED'
  | 'REGISTRY_NOT_ALLOWED'
  | 'CONFIG_INVALID'
  | 'HOST_INCOMPATIBLE'
  | 'HOST_MISSING'
  | 'MPI_ABI_MISMATCH'
  | 'DEVICE_UNKNOWN'
  | 'SSH_UNREACHABLE'
  | 'HOST_KEY_UNKNOWN'
  | 'HOST_KEY_CHANGED'
  | 'REMOTE_FAILED'
  | 'REMOTE_DISK_FULL'
  | 'PATH_UNUSABLE'
  | 'VERSION_MISMATCH'
  | 'LIMITS_UNAVAILABLE'
  // The site's image-signature policy refused an image (src/signature/), or a key or signature is unusable.
  | 'IMAGE_UNTRUSTED'
  | 'SIGNATURE_INVALID'
  | 'BUILD_FAILED';

/**
 * Process exit codes, docker run's contract (README "Exit status"): 125 when berth itself fails
 * (bad flags, an image that cannot be had, a container that cannot be set up, a bug), 126 when
 * the command cannot be invoked, 127 when it is not found, otherwise the command's own status
 * (128+N after signal N). berth-helper gets them through native/contract.h, generated from src/plan/contract.ts.
 */
export const EXIT = { ok: 0, berth: 125, cannotExec: 126, notFound: 127 } as const;

export class BerthError extends Error {
  constructor(
    readonly code: ErrorCode,
    message: string,
    readonly hint?: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = 'BerthError';
  }
}

export function isBerthError(e: unknown): e is BerthError {
  return e instanceof BerthError;
}

/** errno-style code of a Node system error, if it is one. */
export function errnoOf(e: unknown): string | undefined {
  if (typeof e === 'object' && e !== null && 'code' in e) {
    const code = (e as { code: unknown }).code;
    if (typeof code === 'string') return code;
  }
  return undefined;
}

export function messageOf(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

/** What an operating-system error means, and what to do about it, by errno. */
const OS_ERRORS: Record<string, [string, string]> = {
  ENOENT: ['no such file or directory', 'check the path'],
  EACCES: ['permission denied', 'berth runs as you and uses only what you may read: check the permissions of the path and of each directory above it (ls -ld)'],
  EPERM: ['operation not permitted', 'check the permissions of the path (ls -ld)'],
  EISDIR: ['is a directory', 'name a file, not a directory'],
  ENOTDIR: ['a component of the path is not a directory', 'check each part of the path'],
  ELOOP: ['too many levels of symbolic links', 'check the symbolic links on the path (a link pointing at itself?)'],
  ENAMETOOLONG: ['the name is too long', 'use a shorter path'],
  EROFS: ['read-only file system', 'choose a path on a writable file system'],
  ENOSPC: ['no space left on the device', 'free some space, or choose another file system'],
  EDQUOT: ['disk quota exceeded', 'free some space, or choose another file system'],
  EMFILE: ['too many open files', 'raise the limit (ulimit -n)'],
  ENFILE: ['too many open files on this node', 'try again later'],
  EEXIST: ['already exists', 'remove it, or choose another path'],
  EBUSY: ['device or resource busy', 'try again later'],
  EIO: ['input/output error', 'the file system or the device has a problem: check it'],
  ENODEV: ['no such device', 'check the path'],
  ENXIO: ['no such device or address', 'check the path'],
  ETXTBSY: ['text file busy', 'try again when it is no longer being written'],
};

/**
 * An operating-system error (a Node system error with an errno code) as berth's error: what
 * was being done to which path and why it failed, and what to do; undefined for anything else.
 * `subject` names what the path was to the user ("--bind /data"), where the caller knows it.
 */
export function osError(e: unknown, subject?: string): BerthError | undefined {
  const code = errnoOf(e);
  if (!code || !/^E[A-Z0-9]+$/.test(code) || typeof e !== 'object' || e === null) return undefined;
  const { path, dest, syscall } = e as { path?: unknown; dest?: unknown; syscall?: unknown };
  const [what, hint] = OS_ERRORS[code] ?? [messageOf(e).replace(/^[A-Z0-9]+: /, '').replace(/,.*$/, ''), 'check the path'];
  const target = typeof path === 'string' ? ` ${path}${typeof dest === 'string' ? ` -> ${dest}` : ''}` : '';
  const call = typeof syscall === 'string' ? `${syscall}${target}` : target.trim();
  const head = subject ?? (target ? `cannot use${target}` : 'a system call failed');
  return new BerthError('PATH_UNUSABLE', `${head}: ${what} (${code}${call ? `: ${call}` : ''})`, hint, { cause: e });
}
