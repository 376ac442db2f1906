// berth pull docker://REF [-o IMAGE.sqsh]; also how convert and run take docker:// references.
import { constants, copyFileSync, renameSync, statSync, unlinkSync } from 'node:fs';
import path from 'node:path';
import { availableParallelism } from 'node:os';
import { DEFAULT_COMPRESSION } from '../convert/tar2sqfs.js';
import { config } from '../config/load.js';
import { BerthError } from '../errors.js';
import { Caches } from '../image/caches.js';
import { hostPlatform, parsePlatform } from '../image/platform.js';
import { pullImage, resolveReference, type PullResult } from '../image/pull.js';
import type { DownloadEvents } from '../image/registry-source.js';
import { clearProgress, convertProgress, formatBytes, progressMode, type ProgressMode } from './progress.js';
import { printable } from './terminal.js';

export interface PullFlags {
  output?: string;
  platform?: string;
  insecure?: boolean;
  parallel?: string;
  force?: boolean;
  quiet?: boolean;
  json?: boolean;
}

/**
 * The caches, with their warnings on stderr. A warning about a cache entry that is not used is
 * printed even in quiet mode (berth run pulls quietly): it says that something in a cache the
 * user relies on could have been planted, which they need to know and act on.
 */
export function openCaches(): Caches {
  return new Caches((line) => process.stderr.write(`${printable(line)}\n`));
}

export function isRegistryReference(text: string): boolean {
  return text.startsWith('docker://');
}

/**
 * Download progress: on a terminal one redrawn bar per layer (bytes, rate); otherwise a line
 * when each layer starts and ends.
 */
function downloadProgress(mode: ProgressMode): DownloadEvents & { total(): number } {
  const layers = new Map<string, { size: number; got: number; done: boolean; started: number }>();
  let drawn = 0;
  let lastDraw = 0;
  let total = 0;
  const draw = (force: boolean) => {
    if (mode !== 'tty' || (!force && Date.now() - lastDraw < 100)) return;
    lastDraw = Date.now();
    const lines = [...layers].map(([digest, l]) => {
      const frac = l.size > 0 ? Math.min(1, l.got / l.size) : 0;
      const rate = l.got / Math.max(0.001, (Date.now() - l.started) / 1000);
      const bar = '#'.repeat(Math.round(frac * 20)).padEnd(20, '-');
      return `${digest.slice(7, 19)} [${bar}] ${formatBytes(l.got)}/${formatBytes(l.size)} ${l.done ? 'done' : `${formatBytes(rate)}/s`}`;
    });
    process.stderr.write(`${drawn ? `\x1b[${drawn}A` : ''}${lines.map((l) => `\r\x1b[K${l}\n`).join('')}`);
    drawn = lines.length;
  };
  return {
    start(digest, size) {
      layers.set(digest, { size, got: 0, done: false, started: Date.now() });
      if (mode === 'plain') process.stderr.write(`berth: downloading ${digest} (${formatBytes(size)})\n`);
      draw(true);
    },
    bytes(digest, n) {
      total += n;
      const l = layers.get(digest);
      if (l) l.got += n;
      draw(false);
    },
    done(digest) {
      const l = layers.get(digest);
      if (l) l.done = true;
      if (mode === 'plain') process.stderr.write(`berth: downloaded ${digest}\n`);
      draw(true);
    },
    total: () => total,
  };
}

/** Pulls into the cache (converting once); reports as convert does. */
export async function pullToCache(reference: string, flags: PullFlags, mode: ProgressMode): Promise<PullResult> {
  const parallel = flags.parallel === undefined ? config().values['pull.parallel'] : Number(flags.parallel);
  if (!Number.isInteger(parallel) || parallel < 1) throw new BerthError('USAGE', `--parallel wants a positive whole number, not '${flags.parallel}'`, 'e.g. --parallel 4');
  const downloads = downloadProgress(mode);
  try {
    const result = await pullImage(reference, flags.platform ? parsePlatform(flags.platform) : hostPlatform(), {
      caches: openCaches(),
      insecure: flags.insecure ?? false,
      parallel,
      events: downloads,
    }, { compression: DEFAULT_COMPRESSION, level: undefined, jobs: availableParallelism() }, convertProgress(mode));
    clearProgress(mode);
    if (mode !== 'quiet') {
      process.stderr.write(result.cached
        ? `berth: ${result.reference} is in the ${result.cache === 'site' ? 'site cache' : 'cache'} (${result.manifestDigest})\n`
        : `berth: pulled ${result.reference} (${formatBytes(downloads.total())} downloaded)\n`);
    }
    return result;
  } catch (e: unknown) {
    clearProgress(mode);
    throw e;
  }
}

/** Copies a cached image to where the user asked, whole or not at all. */
function copyOut(from: string, to: string, force: boolean): string {
  const target = path.resolve(to);
  if (statSync(target, { throwIfNoEntry: false }) && !force) {
    throw new BerthError('OUTPUT_EXISTS', `${target} already exists`, 'pass --force to replace it, or choose another -o');
  }
  const temp = path.join(path.dirname(target), `.${path.basename(target)}.berth-tmp-${process.pid}`);
  try {
    copyFileSync(from, temp, constants.COPYFILE_FICLONE);
    renameSync(temp, target);
  } catch (e: unknown) {
    try {
      unlinkSync(temp);
    } catch {
      // never created
    }
    throw new BerthError('OUTPUT_UNWRITABLE', `cannot write ${target}: ${(e as Error).message}`, 'check the directory and free space');
  }
  return target;
}

export async function pullCommand(reference: string, flags: PullFlags): Promise<string> {
  if (!isRegistryReference(reference)) {
    throw new BerthError('USAGE', `'${reference}' is not a registry reference`, 'write docker://[REGISTRY/]REPO[:TAG|@DIGEST]; for local images use berth convert');
  }
  const result = await pullToCache(reference, flags, progressMode(flags));
  const file = flags.output ? copyOut(result.path, flags.output, flags.force ?? false) : result.path;
  if (flags.json) return JSON.stringify({ ...result, path: file, cachedImage: result.path });
  return flags.quiet ? '' : file;
}

/** berth resolve: the reference pinned to a digest, for every node of a job to run the same image. */
export async function resolveCommand(reference: string, flags: { platform?: string; insecure?: boolean }): Promise<string> {
  return resolveReference(reference, flags.platform ? parsePlatform(flags.platform) : hostPlatform(), {
    caches: openCaches(), insecure: flags.insecure ?? false, parallel: 1,
  });
}
