// berth convert SOURCE -o IMAGE.sqsh: SOURCE a registry, OCI layout or docker archive (converted
// layer by layer), or an image that is a file system already (a SIF, squashfs or directory: repacked).
import { availableParallelism } from 'node:os';
import path from 'node:path';
import { convertImage, type ConvertEvents, type ConvertOptions } from '../convert/convert.js';
import { isLocalImage, repackImage } from '../convert/repack.js';
import { writeError } from '../convert/output.js';
import { COMPRESSIONS, DEFAULT_COMPRESSION, type SquashCompression } from '../convert/tar2sqfs.js';
import { BerthError, errnoOf } from '../errors.js';
import { hostPlatform, parsePlatform } from '../image/platform.js';
import { parseSource } from '../image/reference.js';
import { clearProgress, convertProgress, formatBytes, progressMode } from './progress.js';

export interface ConvertFlags {
  output: string;
  compression?: string;
  level?: string;
  jobs?: string;
  platform?: string;
  force?: boolean;
  quiet?: boolean;
  json?: boolean;
}

export async function convertCommand(source: string, flags: ConvertFlags): Promise<string> {
  if (source.startsWith('docker://')) {
    // From a registry: pulled into the cache (converted once), then copied to -o.
    return (await import('./pull.js')).pullCommand(source, flags).catch((e: unknown) => {
      throw diskFull(e, 'the cached image');
    });
  }
  const compression = (flags.compression ?? DEFAULT_COMPRESSION) as SquashCompression;
  if (!COMPRESSIONS.includes(compression)) {
    throw new BerthError('USAGE', `unknown compression '${flags.compression}'`, `choose one of ${COMPRESSIONS.join(', ')}`);
  }
  const mode = progressMode(flags);
  const started = performance.now();
  // Signals: while there is something to clean, convert/interrupt.ts cleans and dies of them.
  try {
    const convert = isLocalImage(source) ? (_: string, o: ConvertOptions, e: ConvertEvents) => repackImage(source, o, e)
      : (s: string, o: ConvertOptions, e: ConvertEvents) => convertImage(parseSource(s), o, e);
    const result = await convert(source, {
      output: flags.output,
      force: flags.force ?? false,
      compression,
      level: positive(flags.level, '--level'),
      jobs: positive(flags.jobs, '--jobs') ?? availableParallelism(),
      platform: flags.platform ? parsePlatform(flags.platform) : hostPlatform(),
    }, convertProgress(mode));
    clearProgress(mode);
    const seconds = (performance.now() - started) / 1000;
    const written = result.compression ?? compression;
    if (flags.json) {
      return JSON.stringify({
        output: result.output, size: result.size, compression: written, seconds: Number(seconds.toFixed(3)),
        source: result.metadata.source, manifestDigest: result.metadata.manifestDigest, configDigest: result.metadata.configDigest,
      });
    }
    if (flags.quiet) return '';
    process.stderr.write(`berth: wrote ${result.output} (${formatBytes(result.size)}, ${written}) in ${seconds.toFixed(1)} s\n`);
    return result.output;
  } catch (e: unknown) {
    clearProgress(mode);
    throw diskFull(e, path.resolve(flags.output));
  }
}

/** A full disk is the user's to fix, wherever the write that met it was (the trailer is written directly). */
function diskFull(e: unknown, target: string): unknown {
  return !(e instanceof BerthError) && (errnoOf(e) === 'ENOSPC' || errnoOf(e) === 'EDQUOT') ? writeError(target, e) : e;
}

function positive(text: string | undefined, flag: string): number | undefined {
  if (text === undefined) return undefined;
  const n = Number(text);
  if (!Number.isInteger(n) || n < 1) throw new BerthError('USAGE', `${flag} wants a positive whole number, not '${text}'`, `e.g. ${flag} 4`);
  return n;
}
