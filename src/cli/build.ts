// berth build [-f Dockerfile] [-t NAME] [--build-arg K=V] [--target STAGE] [-o IMAGE.sqsh]
// [--oci-layout DIR] CONTEXT: the work is src/build/'s; this file shows the steps and puts the
// image where it was asked: -o a file, -t the user's image cache (berth images lists it, and
// `berth exec NAME` runs it), --oci-layout an OCI layout with one layer per step.
import { closeSync, fstatSync, mkdirSync, openSync, rmSync } from 'node:fs';
import { metadataBytes, parseMetadata, readMetadataTrailer, writeMetadataTrailer } from '../squashfs/metadata.js';
import path from 'node:path';
import { BerthError, messageOf } from '../errors.js';
import { Builder } from '../build/build.js';
import { writeLayout } from '../build/layer.js';
import { imagePath } from '../image/cache.js';
import { Caches } from '../image/caches.js';
import { builtTagReference, copyImage, isBuildName } from '../runtime/acquire.js';
import type { CommandResult } from './options.js';
import { printableLines } from './terminal.js';

export interface BuildFlags {
  file?: string;
  tag?: string;
  buildArg?: string[];
  target?: string;
  output?: string;
  ociLayout?: string;
  force?: boolean;
  /** commander's --no-cache: cache false. */
  cache?: boolean;
  quiet?: boolean;
  json?: boolean;
}

/** -t NAME: a name as Docker takes one, that cannot be mistaken for a file or another source. */
const TAG = /^[a-z0-9]+(?:[._-][a-z0-9]+)*(?:\/[a-z0-9]+(?:[._-][a-z0-9]+)*)*(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?$/;

function buildArgs(list: string[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (const a of list) {
    const eq = a.indexOf('=');
    const name = eq < 0 ? a : a.slice(0, eq);
    if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(name)) throw new BerthError('USAGE', `--build-arg ${a}: not NAME=value`, 'e.g. --build-arg VERSION=1.2');
    // --build-arg NAME alone takes this shell's value, as docker build does.
    const value = eq < 0 ? process.env[name] : a.slice(eq + 1);
    if (value !== undefined) out[name] = value;
  }
  return out;
}

export async function buildCommand(context: string, flags: BuildFlags): Promise<CommandResult> {
  if (flags.tag !== undefined && !isBuildName(flags.tag)) {
    throw new BerthError('USAGE', `-t ${flags.tag}: a name berth would take for a file or a digest, so run and exec could never find the image by it`,
      'choose a name that is not hex digits alone and does not end in .sqsh, .squashfs, .sif or .img, e.g. -t myapp:1.0');
  }
  if (flags.tag !== undefined && !TAG.test(flags.tag)) {
    throw new BerthError('USAGE', `-t ${flags.tag}: not an image name (lower-case NAME[/NAME...][:TAG])`, 'e.g. -t myapp:1.0; to write a file, use -o myapp.sqsh');
  }
  const dockerfile = path.resolve(flags.file ?? path.join(context, 'Dockerfile'));
  const warn = (line: string) => process.stderr.write(`${printableLines(line)}\n`);
  const caches = new Caches(warn);
  const quiet = flags.quiet || flags.json;
  // Quiet: a failing step's last output is still told, with the error.
  let tail = Buffer.alloc(0);
  const TAIL = 4096;
  const builder = new Builder({
    context, dockerfile, buildArgs: buildArgs(flags.buildArg ?? []), ...(flags.target !== undefined ? { target: flags.target } : {}),
    userCache: () => caches.writable(), noCache: flags.cache === false,
  }, {
    step: (n, total, text, cached) => { if (!quiet) process.stderr.write(`STEP ${n}/${total}: ${printableLines(text)}${cached ? ' (cached)' : ''}\n`); },
    output: (chunk) => {
      if (!quiet) process.stderr.write(chunk);
      else tail = Buffer.concat([tail, chunk]).subarray(-TAIL);
    },
    warn,
  });
  if (flags.ociLayout !== undefined) {
    // Checked before the build: a layout is never written into a directory that exists.
    try {
      mkdirSync(path.resolve(flags.ociLayout), { mode: 0o700 });
    } catch (e: unknown) {
      throw new BerthError('OUTPUT_EXISTS', `--oci-layout ${path.resolve(flags.ociLayout)}: ${messageOf(e)}`, 'name a directory that does not exist yet: berth never writes into one that does');
    }
  }
  const result = await builder.build().catch((e: unknown) => {
    if (quiet && e instanceof BerthError && e.code === 'BUILD_FAILED' && tail.length > 0) process.stderr.write(tail);
    if (flags.ociLayout !== undefined) rmSync(path.resolve(flags.ociLayout), { recursive: true, force: true }); // made above, still empty
    throw e;
  });
  const digest = result.metadata.manifestDigest!;
  let output = result.image;
  const source = flags.tag ?? `berth build ${path.resolve(context)}`;
  if (flags.output !== undefined) {
    output = copyImage(result.image, flags.output, flags.force ?? false);
    stampSource(output, source);
  }
  if (flags.tag !== undefined) {
    const cached = imagePath(caches.writable(), digest);
    copyImage(result.image, cached, true);
    stampSource(cached, source);
    caches.noteResolved(builtTagReference(flags.tag), digest);
    if (flags.output === undefined) output = cached;
  }
  if (flags.ociLayout !== undefined) writeLayout(path.resolve(flags.ociLayout), result.layers, result.config, false);
  if (flags.json) {
    return JSON.stringify({ image: output, manifestDigest: digest, tag: flags.tag ?? null, ociLayout: flags.ociLayout ? path.resolve(flags.ociLayout) : null, steps: result.steps });
  }
  if (flags.quiet) return digest;
  process.stderr.write(`berth: built ${flags.tag ? `${flags.tag} (${digest})` : digest}\n`);
  return output;
}

/**
 * The image written out names the build it came from (its -t name, else the context), as a
 * newer metadata trailer: the cached step image it was copied from is every such build's.
 */
function stampSource(file: string, source: string): void {
  const fd = openSync(file, 'r+');
  try {
    const size = fstatSync(fd).size;
    const text = readMetadataTrailer(fd, size);
    if (text === undefined) return;
    writeMetadataTrailer(fd, size, metadataBytes({ ...parseMetadata(text, file), source }));
  } finally {
    closeSync(fd);
  }
}
