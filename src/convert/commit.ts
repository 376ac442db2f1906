// berth commit: a container's changes (an --overlay directory's upper layer) saved as a new image
// on top of the one it ran. The result is made the way every berth image is: an OCI layout of
// two layers (the base image's tree, then the changes, with overlayfs's whiteouts turned into
// OCI's) converted by convert.ts, so the merge, the checks and the metadata are conversion's own.
// The layout can be kept (--oci-layout) and pushed with standard tools.
//
//   overlayfs upper                         OCI layer
//   char device 0/0 NAME             ->     .wh.NAME (an empty file)
//   dir with user.overlay.opaque=y   ->     the dir, then dir/.wh..wh..opq
//   user.overlay.* / trusted.overlay.* xattrs: overlayfs's bookkeeping, dropped
//   files of the caller's uid/gid    ->     root's (as --fakeroot saw them), unless keepOwner
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { closeSync, mkdirSync, mkdtempSync, openSync, renameSync, rmSync, statSync, writeFileSync, writeSync } from 'node:fs';
import path from 'node:path';
import { BerthError, messageOf } from '../errors.js';
import { OciDirSource } from '../image/archive.js';
import type { ImageLocation } from '../image/files.js';
import { METADATA_DIR, type ImageMetadata } from '../squashfs/metadata.js';
import { convertImage, type ConvertEvents, type ConvertOptions, type ConvertResult } from './convert.js';
import { normalizePath } from './merge.js';
import { TarParser, type TarEntry } from './tar-reader.js';
import { END_OF_ARCHIVE, encodeHeader, paddingFor } from './tar-writer.js';

export interface CommitOptions extends ConvertOptions {
  /** The overlay directory (its upper/ is the change). */
  overlay: string;
  /** Keep the layout here instead of a temporary one next to the output. */
  ociLayout?: string;
  /** Keep the caller's uid and gid on the changed files instead of making them root's. */
  keepOwner: boolean;
}

const OVERLAY_XATTR = /^(user|trusted)\.overlay\./;
const LAYER_MEDIA = 'application/vnd.oci.image.layer.v1.tar';

/**
 * The tar that `argv` writes on stdout, rewritten entry by entry (`rewrite` returns the entries
 * to write in its place, none to drop it, and whether its body follows them), into `file`.
 * Returns the layer's sha256 digest, which is also its diff_id (it is not compressed).
 */
export interface Rewritten {
  entries: TarEntry[];
  /** The original entry's body follows the last of them (which then has its size). */
  body: boolean;
}

async function writeLayer(argv: [string, ...string[]], file: string, rewrite: (e: TarEntry) => Rewritten): Promise<string> {
  const fd = openSync(file, 'wx', 0o600);
  const hash = createHash('sha256');
  try {
    await rewriteTarOf(argv, rewrite, (b) => {
      hash.update(b);
      writeSync(fd, b);
    }, { hint: 'check that the directory and the image are readable' });
    const end = END_OF_ARCHIVE;
    hash.update(end);
    writeSync(fd, end);
  } finally {
    closeSync(fd);
  }
  return `sha256:${hash.digest('hex')}`;
}

/**
 * The tar that `argv` writes on stdout (sqfs2tar of an image, tar of a directory), each entry
 * rewritten, written through `write` without its end-of-archive: berth commit's layer and
 * berth build's COPY --from and ADD. `notTar` names what a parse failure means (a file that is
 * not a tar berth can read), `hint` what to check when the command itself fails.
 */
export async function rewriteTarOf(argv: [string, ...string[]], rewrite: (e: TarEntry) => Rewritten, write: (b: Buffer) => void,
  explain: { hint: string; notTar?: (e: unknown) => BerthError }): Promise<void> {
  const out = (b: Buffer) => {
    if (b.length > 0) write(b);
  };
  let keep = false;
  let bodySize = 0;
  const parser = new TarParser({
    entry(e) {
      const r = rewrite(e);
      keep = r.body && r.entries.length > 0;
      for (const o of r.entries) out(encodeHeader(o));
      bodySize = e.size;
      return keep;
    },
    data: out,
    entryEnd() {
      if (keep) out(paddingFor(bodySize));
    },
  });
  const [cmd, ...args] = argv;
  await new Promise<void>((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    let failed: unknown;
    child.stderr.on('data', (d: Buffer) => { stderr += d.toString(); });
    child.stdout.on('data', (d: Buffer) => {
      if (failed) return;
      try {
        parser.push(d);
      } catch (e: unknown) {
        failed = e;
        child.kill();
      }
    });
    child.on('error', (e) => reject(new BerthError('TOOL_MISSING', `cannot run ${cmd}: ${e.message}`, 'install it (the README lists what berth needs)')));
    child.on('close', (code) => {
      if (failed) reject(failed instanceof BerthError || !explain.notTar ? failed : explain.notTar(failed));
      else if (code !== 0) reject(new BerthError('TOOL_FAILED', `${cmd} ${args.join(' ')} failed (status ${code}): ${stderr.trim()}`, explain.hint));
      else resolve();
    });
  });
  parser.end();
}

/** An overlayfs upper entry as an OCI layer has it (see the table at the top). */
export function fromUpper(e: TarEntry, owner: { uid: number; gid: number } | undefined): Rewritten {
  const name = normalizePath(e.name);
  if (name === null || name === '') return { entries: [], body: false }; // the root: the base's stays
  const linkname = e.type === 'hardlink' ? normalizePath(e.linkname) ?? e.linkname : e.linkname;
  const xattrs = new Map([...e.xattrs].filter(([k]) => !OVERLAY_XATTR.test(k)));
  const uid = owner && e.uid === owner.uid ? 0 : e.uid;
  const gid = owner && e.gid === owner.gid ? 0 : e.gid;
  const entry: TarEntry = { ...e, name, linkname, xattrs, uid, gid, uname: '', gname: '' };
  const marker = (at: string): TarEntry => ({ ...entry, name: at, linkname: '', type: 'file', size: 0, mode: 0o644, devmajor: 0, devminor: 0, xattrs: new Map() });
  if (e.type === 'char' && e.devmajor === 0 && e.devminor === 0) {
    const dir = path.posix.dirname(name);
    return { entries: [marker(`${dir === '.' ? '' : `${dir}/`}.wh.${path.posix.basename(name)}`)], body: false };
  }
  const opaque = [...e.xattrs].some(([k, v]) => /^(user|trusted)\.overlay\.opaque$/.test(k) && v.toString() === 'y');
  if (e.type === 'dir' && opaque) return { entries: [entry, marker(`${name}/.wh..wh..opq`)], body: false };
  return { entries: [entry], body: true };
}

/** The base image's tree as a tar command: a squashfs file's (sqfs2tar), or a directory's. */
export function baseTar(location: ImageLocation): [string, ...string[]] {
  if (location.format === 'directory') return ['tar', '--sort=name', '--xattrs', '--xattrs-include=*', '--numeric-owner', '--format=pax', '-C', location.path, '-cf', '-', '.'];
  if (location.offset !== 0) {
    throw new BerthError('IMAGE_UNSUPPORTED', `${location.path} keeps its root file system inside the file (a SIF partition), which berth commit cannot read yet`,
      `convert it first (berth convert ${location.path} -o base.sqsh), run the overlay on that, and commit on it`);
  }
  return ['sqfs2tar', location.path];
}

/**
 * Writes the OCI layout of base + the overlay's changes under `dir` (which must be empty or
 * absent), and returns it. The config is the base image's, with the new layer's diff_id and the
 * base's digest as org.opencontainers.image.base.digest: the new image records its parent.
 */
export async function writeCommitLayout(
  dir: string, base: { location: ImageLocation; metadata: ImageMetadata }, overlay: string, owner: { uid: number; gid: number } | undefined,
): Promise<string> {
  mkdirSync(path.join(dir, 'blobs', 'sha256'), { recursive: true, mode: 0o700 });
  const blobs = path.join(dir, 'blobs', 'sha256');
  const place = (tmp: string, digest: string) => renameSync(tmp, path.join(blobs, digest.slice(7)));
  const baseTmp = path.join(blobs, '.base.partial');
  // The base's own berth metadata is not part of its tree: the new image gets its own.
  const baseDigest = await writeLayer(baseTar(base.location), baseTmp, (e) => {
    const name = normalizePath(e.name);
    return name === METADATA_DIR || name?.startsWith(`${METADATA_DIR}/`) ? { entries: [], body: false } : { entries: [e], body: true };
  });
  place(baseTmp, baseDigest);
  const upper = path.join(overlay, 'upper');
  const changeTmp = path.join(blobs, '.change.partial');
  const changeDigest = await writeLayer(['tar', '--sort=name', '--xattrs', '--xattrs-include=*', '--numeric-owner', '--format=pax', '-C', upper, '-cf', '-', '.'],
    changeTmp, (e) => fromUpper(e, owner));
  place(changeTmp, changeDigest);
  const m = base.metadata;
  const parent = m.manifestDigest ?? (m.configDigest || undefined);
  const config = {
    architecture: m.platform.architecture, os: m.platform.os, ...(m.platform.variant ? { variant: m.platform.variant } : {}),
    ...(m.created ? { created: m.created } : {}),
    config: {
      ...(m.config.User ? { User: m.config.User } : {}),
      Env: m.config.Env,
      ...(m.config.Entrypoint ? { Entrypoint: m.config.Entrypoint } : {}),
      ...(m.config.Cmd ? { Cmd: m.config.Cmd } : {}),
      ...(m.config.WorkingDir ? { WorkingDir: m.config.WorkingDir } : {}),
      Labels: { ...m.config.Labels, ...(parent ? { 'org.opencontainers.image.base.digest': parent } : {}), 'org.opencontainers.image.base.name': m.source },
    },
    rootfs: { type: 'layers', diff_ids: [baseDigest, changeDigest] },
    history: [{ created_by: `the tree of ${m.source}` }, { created_by: `berth commit --from-overlay ${overlay}` }],
  };
  const blob = (data: Buffer) => {
    const digest = `sha256:${createHash('sha256').update(data).digest('hex')}`;
    writeFileSync(path.join(blobs, digest.slice(7)), data, { mode: 0o600 });
    return { digest, size: data.length };
  };
  const configBlob = blob(Buffer.from(JSON.stringify(config)));
  const sizes = [baseDigest, changeDigest].map((d) => statSync(path.join(blobs, d.slice(7))).size);
  const manifest = blob(Buffer.from(JSON.stringify({
    schemaVersion: 2, mediaType: 'application/vnd.oci.image.manifest.v1+json',
    config: { mediaType: 'application/vnd.oci.image.config.v1+json', ...configBlob },
    layers: [baseDigest, changeDigest].map((digest, i) => ({ mediaType: LAYER_MEDIA, digest, size: sizes[i] })),
  })));
  writeFileSync(path.join(dir, 'oci-layout'), '{"imageLayoutVersion":"1.0.0"}');
  writeFileSync(path.join(dir, 'index.json'), JSON.stringify({
    schemaVersion: 2,
    manifests: [{ mediaType: 'application/vnd.oci.image.manifest.v1+json', ...manifest, annotations: { 'org.opencontainers.image.ref.name': 'latest' } }],
  }));
  return dir;
}

/** The overlay's changes on the base image, converted to `opts.output` (and the layout kept where asked). */
export async function commitOverlay(
  base: { location: ImageLocation; metadata: ImageMetadata }, opts: CommitOptions, owner: { uid: number; gid: number }, events: ConvertEvents,
): Promise<ConvertResult> {
  const keep = opts.ociLayout !== undefined;
  // A temporary layout beside the output: on the same disk, and in the user's own directory.
  const dir = keep ? path.resolve(opts.ociLayout!) : mkdtempSync(path.join(path.dirname(path.resolve(opts.output)), '.berth-commit-'));
  if (keep) {
    try {
      mkdirSync(dir, { mode: 0o700 });
    } catch (e: unknown) {
      throw new BerthError('OUTPUT_EXISTS', `--oci-layout ${dir}: ${messageOf(e)}`, 'name a directory that does not exist yet: berth never writes into one that does');
    }
  }
  let done = false;
  try {
    await writeCommitLayout(dir, base, opts.overlay, opts.keepOwner ? undefined : owner);
    const result = await convertImage(new OciDirSource(dir, { tag: 'latest' }), opts, events);
    done = true;
    return result;
  } finally {
    // The layout made here goes, unless it was asked for and is whole.
    if (!keep || !done) rmSync(dir, { recursive: true, force: true });
  }
}
