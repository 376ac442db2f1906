// Finds berth's native parts (native/build/): the helper and the Node addon.
import { accessSync, constants as fsConstants } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { BerthError } from '../errors.js';
import type { DigestAlgorithm } from '../image/digest.js';

/** native/build/NAME of the checkout or package this code runs from (src/, dist/ or the bundle). */
export function nativeFile(name: string, mode = fsConstants.R_OK): string | undefined {
  let dir = path.dirname(fileURLToPath(import.meta.url));
  for (let up = 0; up < 3; up++, dir = path.dirname(dir)) {
    const candidate = path.join(dir, 'native/build', name);
    try {
      accessSync(candidate, mode);
      return candidate;
    } catch {
      // keep looking upwards
    }
  }
  return undefined;
}

export interface SquashfsEntry {
  type: 'file' | 'dir' | 'symlink' | 'char' | 'block' | 'fifo' | 'socket';
  mode: number;
  size: number;
  target?: string;
}

export interface SquashfsImageHandle {
  /** The entry at an absolute path, symlinks not followed; null when there is none. */
  lstat(p: string): SquashfsEntry | null;
  read(p: string): Buffer;
  /** The names in the directory at p; null when there is none. */
  list(p: string): string[] | null;
  close(): void;
}

/** One layer's gzip or zstd stream (native/addon/decompress.cc): step() decompresses on the thread pool. */
export interface NativeDecompressor {
  /** more: output is pending, call again with null; otherwise the input was used up. */
  step(input: Buffer | null, last: boolean, cb: (err: Error | null, out: Buffer | null, more: boolean) => void): void;
  /** Once the last step is done: the hex digests of the input and the output, where asked for. */
  digests(): [string | null, string | null];
}

interface Addon {
  Decompressor: new (kind: 'gzip' | 'zstd', inputAlgorithm: DigestAlgorithm | null, outputAlgorithm: DigestAlgorithm | null) => NativeDecompressor;
  /** A pipe(7) grown to `bytes` where the kernel lets it (native/addon/pipe.cc): [readFd, writeFd, size], close-on-exec. */
  pipe(bytes: number): [number, number, number];
  /** Names the unnamed (O_TMPFILE) file open at fd (native/addon/files.cc); throws with the errno's name as code. */
  linkFd(fd: number, path: string): void;
  /** An exclusive flock(2) on path, created 0600 where missing, never through a symlink, only a regular file of the caller's: its fd (close-on-exec), or null while another holds it. */
  tryLock(path: string): number | null;
  /** `offset`: where the squashfs starts in the file (a SIF's partition). */
  SquashfsImage: new (image: string, offset?: number) => SquashfsImageHandle;
}

let addon: Addon | undefined;

/** berth.node (native/addon): it only observes, never changes the Node process's namespaces. */
export function loadAddon(): Addon {
  if (addon) return addon;
  const file = nativeFile('berth.node');
  if (!file) throw new BerthError('HELPER_MISSING', 'the native addon berth.node is not built', 'build it: make -C native (the README setup does)');
  addon = createRequire(import.meta.url)(file) as Addon;
  return addon;
}
