// Runs squashfs-tools-ng's tar2sqfs, which turns the merged tar on its stdin into the image.
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, statfsSync } from 'node:fs';
import { Socket } from 'node:net';
import path from 'node:path';
import type { Writable } from 'node:stream';
import { BerthError, messageOf } from '../errors.js';
import { loadAddon } from '../runtime/native.js';
import { onInterrupt } from './interrupt.js';
import { AtomicOutput } from './output.js';

export const COMPRESSIONS = ['zstd', 'gzip', 'xz', 'lz4', 'none'] as const;
export type SquashCompression = (typeof COMPRESSIONS)[number];

/**
 * zstd at level 3: in bench/convert it compressed this machine's python/numpy image about as
 * fast as lz4 with a file ~25% smaller, and decompresses at ~1 GB/s a core, so reads in jobs
 * stay fast. tar2sqfs's own default (level 15) is 5-8x slower to convert for ~8% smaller files.
 */
export const DEFAULT_COMPRESSION: SquashCompression = 'zstd';
const DEFAULT_LEVEL: Partial<Record<SquashCompression, number>> = { zstd: 3, gzip: 6 };

export interface SquashOptions {
  compression: SquashCompression;
  level: number | undefined;
  jobs: number;
}

export function tar2sqfsArgs(opts: SquashOptions): string[] {
  if (opts.compression === 'none') {
    throw new BerthError('USAGE', 'tar2sqfs cannot write an uncompressed squashfs',
      'use --compression lz4, which decompresses fastest, or zstd (the default)');
  }
  const level = opts.level ?? DEFAULT_LEVEL[opts.compression];
  return [
    '--quiet', '--force', '--no-skip',
    '--compressor', opts.compression,
    ...(level !== undefined ? ['--comp-extra', `level=${level}`] : []),
    '--num-jobs', String(opts.jobs),
    // Directories that only exist implicitly get fixed metadata, for reproducible output.
    '--defaults', 'uid=0,gid=0,mode=0755,mtime=0',
    AtomicOutput.childPath,
  ];
}

/**
 * tar2sqfs's stdin: a pipe of a MiB (native/addon/pipe.cc), a whole batch of the merged tar,
 * rather than libuv's socketpair: in bench/convert it saved both processes the wake-ups and
 * socket buffers of each ~200 KiB.
 */
const PIPE_BYTES = 1 << 20;

export class Tar2sqfs {
  private readonly child: ChildProcess;
  private readonly input: Socket;
  private stderr = '';
  private readonly exited: Promise<number | null>;
  private spawnError: Error | undefined;

  constructor(opts: SquashOptions, output: AtomicOutput) {
    const [readEnd, writeEnd] = loadAddon().pipe(PIPE_BYTES);
    try {
      this.child = spawn('tar2sqfs', tar2sqfsArgs(opts), { stdio: [readEnd, 'pipe', 'pipe', output.fd] });
    } catch (e: unknown) {
      closeSync(writeEnd);
      throw e;
    } finally {
      closeSync(readEnd); // tar2sqfs has it now: the pipe ends when both it and we are done
    }
    this.input = new Socket({ fd: writeEnd, readable: false, writable: true });
    this.child.stderr!.setEncoding('utf8').on('data', (d: string) => {
      this.stderr = (this.stderr + d).slice(-8192);
    });
    this.child.stdout!.resume();
    // EPIPE when tar2sqfs dies early: its exit status tells the story, reported by wait().
    this.input.on('error', () => {});
    // A signal to berth stops tar2sqfs too, rather than leave it to notice its input end.
    const forget = onInterrupt(() => this.child.kill('SIGKILL'));
    this.exited = new Promise((resolve) => {
      this.child.on('error', (e) => {
        this.spawnError = e;
        this.input.destroy();
        forget();
        resolve(null);
      });
      this.child.on('close', (code) => {
        this.input.destroy(); // written to the end by now, or what is left cannot be read
        forget();
        resolve(code);
      });
    });
  }

  get stdin(): Writable {
    return this.input;
  }

  /** Waits for tar2sqfs to finish writing; throws with its own words if it failed. */
  async wait(target: string): Promise<void> {
    const code = await this.exited;
    if (this.spawnError) {
      throw new BerthError('TOOL_MISSING', `cannot run tar2sqfs: ${messageOf(this.spawnError)}`,
        'install squashfs-tools-ng (apt-get install squashfs-tools-ng)');
    }
    if (code === 0) return;
    const said = this.stderr.trim().split('\n').slice(-3).join('; ');
    // tar2sqfs reports ENOSPC as a plain "I/O error": ask the filesystem (our fd still holds
    // the partial image, so its space still counts as used).
    if (/No space left|Disk quota/i.test(said) || (/I\/O error/.test(said) && nearlyFull(path.dirname(target)))) {
      throw new BerthError('DISK_FULL', `no space left writing ${target}`, 'free some space or quota, or write the image elsewhere with -o; nothing was left behind');
    }
    throw new BerthError('TOOL_FAILED', `tar2sqfs failed writing ${target}: ${said || `exit status ${code}`}`,
      'this is likely a berth bug; please report it with the image that triggers it');
  }

  kill(): Promise<unknown> {
    this.child.kill('SIGKILL');
    return this.exited;
  }
}

function nearlyFull(dir: string): boolean {
  try {
    const st = statfsSync(dir);
    return st.bavail * st.bsize < 4 * 1024 * 1024;
  } catch {
    return false;
  }
}
