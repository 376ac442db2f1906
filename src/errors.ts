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
  | 'REMOTE_DISK_FULL';

/** Process exit codes. setup/cannotExec/notFound are berth-helper's, from native/exit_codes.h. */
export const EXIT = { ok: 0, failure: 1, usage: 2, internal: 70, setup: 125, cannotExec: 126, notFound: 127, interrupted: 130 } as const;

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
