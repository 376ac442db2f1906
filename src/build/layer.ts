// A build step's change to the file system as one uncompressed OCI layer (a tar file in the
// build cache), and a chain of layers as a berth image. Each layer is written the one way:
// entries through encodeHeader, bodies from the context's files or from another tar stream
// (sqfs2tar of a stage's image, tar of a RUN's overlay upper, an ADDed archive), rewritten
// entry by entry. Entries made from the context get mtime 0, so that a layer depends only on what it holds
// (the "reproducible where the steps are").
import { createHash } from 'node:crypto';
import { closeSync, linkSync, copyFileSync, mkdirSync, openSync, readSync, renameSync, rmSync, statSync, writeFileSync, writeSync } from 'node:fs';
import path from 'node:path';
import { fromUpper, rewriteTarOf, type Rewritten } from '../convert/commit.js';
import { convertImage, type ConvertEvents, type ConvertOptions, type ConvertResult } from '../convert/convert.js';
import { normalizePath } from '../convert/merge.js';
import type { TarEntry } from '../convert/tar-reader.js';
import { END_OF_ARCHIVE, encodeHeader, paddingFor } from '../convert/tar-writer.js';
import { BerthError } from '../errors.js';
import { OciDirSource } from '../image/archive.js';
import { openListed, type ContextFile } from './context.js';

export interface Layer {
  /** The tar file. */
  file: string;
  /** sha256 of the file: digest and diff_id both (it is not compressed). */
  digest: string;
}

export const LAYER_MEDIA = 'application/vnd.oci.image.layer.v1.tar';

export function entryOf(name: string, type: TarEntry['type'], fields: Partial<TarEntry> = {}): TarEntry {
  return { name, linkname: '', type, mode: type === 'dir' ? 0o755 : 0o644, uid: 0, gid: 0, uname: '', gname: '', size: 0, mtime: 0, devmajor: 0, devminor: 0, xattrs: new Map(), ...fields };
}

/** One layer being written: entries in order, each name once. */
export class LayerWriter {
  private readonly fd: number;
  private readonly hash = createHash('sha256');
  private readonly names = new Set<string>();

  constructor(private readonly partial: string) {
    this.fd = openSync(partial, 'wx', 0o600);
  }

  private write(b: Buffer): void {
    if (b.length === 0) return;
    this.hash.update(b);
    writeSync(this.fd, b);
  }

  has(name: string): boolean {
    return this.names.has(name);
  }

  /** An entry without a body (a directory, a link) or with `body` (bytes, a host file's path, or a context file as listed). */
  entry(e: TarEntry, body?: Buffer | string | ContextFile): void {
    this.names.add(e.name);
    this.write(encodeHeader(e));
    if (body === undefined) return;
    if (Buffer.isBuffer(body)) {
      this.write(body);
    } else {
      // A host file, in chunks: what a COPY takes may be large. A context file is opened as it
      // was listed and hashed (openListed), so the layer holds the bytes the cache key names.
      const listed = typeof body === 'string' ? undefined : openListed(body);
      const fd = listed ? listed.fd : openSync(body as string, 'r');
      const name = typeof body === 'string' ? body : body.host;
      try {
        const buf = Buffer.alloc(1 << 20);
        let left = e.size;
        while (left > 0) {
          const n = readSync(fd, buf, 0, Math.min(buf.length, left), null);
          if (n === 0) throw new BerthError('SOURCE_INVALID', `${name} shrank while it was copied`, 'build again when nothing is writing the context');
          this.write(buf.subarray(0, n));
          left -= n;
        }
      } catch (err: unknown) {
        closeSync(fd);
        throw err;
      }
      if (listed) listed.done();
      else closeSync(fd);
    }
    this.write(paddingFor(e.size));
  }

  /** The tar that `argv` writes on stdout, each entry rewritten (commit.ts's Rewritten). */
  async fromCommand(argv: [string, ...string[]], rewrite: (e: TarEntry) => Rewritten): Promise<void> {
    const named = (e: TarEntry): Rewritten => {
      const r = rewrite(e);
      for (const o of r.entries) this.names.add(o.name);
      return r;
    };
    await rewriteTarOf(argv, named, (b) => this.write(b), {
      hint: 'check that the file is readable and whole',
      notTar: (e) => new BerthError('SOURCE_INVALID', `${argv[argv.length - 1]}: not a tar archive berth can read (${String(e)})`, 'check the file'),
    });
  }

  /**
   * A RUN step's change: the overlay's `upper` directory. Everything there is the `caller`'s on
   * disk. What the step made is `as`'s in the layer (root's, or USER's); what it only copied up
   * (a directory it wrote in, a file it changed: `stage`, the tree before the step, has that
   * path with that type, and the step did not replace the directory whole) keeps the stage's
   * owner, so a USER step's /tmp stays root's and a root step's edit of app's file stays app's.
   */
  async fromUpper(upper: string, stage: Map<string, Owned>, caller: { uid: number; gid: number }, as: { uid: number; gid: number }): Promise<void> {
    await this.fromCommand(['tar', '--sort=name', '--xattrs', '--xattrs-include=*', '--numeric-owner', '--format=pax', '-C', upper, '-cf', '-', '.'], (e) => {
      const r = fromUpper(e, undefined);
      return {
        ...r, entries: r.entries.map((o) => {
          const was = o.name.includes('.wh.') ? undefined : stage.get(o.name);
          const copiedUp = was !== undefined && was.type === TAR_TYPE[o.type] && !r.entries.some((w) => w.name === `${o.name}/.wh..wh..opq`);
          const owner = copiedUp ? was : as;
          return { ...o, uid: o.uid === caller.uid ? owner.uid : o.uid, gid: o.gid === caller.gid ? owner.gid : o.gid };
        }),
      };
    });
  }

  /** Ends the tar and names it by its digest in `dir`. */
  finish(dir: string): Layer {
    this.write(END_OF_ARCHIVE);
    closeSync(this.fd);
    const digest = `sha256:${this.hash.digest('hex')}`;
    const file = path.join(dir, `${digest.slice(7)}.tar`);
    renameSync(this.partial, file);
    return { file, digest };
  }

  abort(): void {
    try {
      closeSync(this.fd);
    } catch {
      // closed by finish
    }
    rmSync(this.partial, { force: true });
  }
}

/** The tar type flag each entry type has in berth's layers (encodeHeader's). */
export const TAR_TYPE: Record<TarEntry['type'], string> = { file: '0', hardlink: '1', symlink: '2', char: '3', block: '4', dir: '5', fifo: '6' };

export interface Owned {
  /** Its tar type flag (TAR_TYPE). */
  type: string;
  uid: number;
  gid: number;
}

/**
 * Who owns each path of the tree a chain of berth's own layers makes (LayerWriter's, in the
 * build cache), and its tar type: read from their headers alone, each body skipped, later layers
 * over earlier ones, whiteouts applied. A RUN step's overlay shows every file as the caller's,
 * so this is what tells an entry it copied up (which keeps its owner) from one it made.
 */
export function layerOwners(files: string[]): Map<string, Owned> {
  const tree = new Map<string, Owned>();
  const header = Buffer.alloc(512);
  const num = (b: Buffer) => {
    const t = b.toString('latin1').replace(/[\0 ]+$/, '').trim();
    return t === '' ? 0 : parseInt(t, 8);
  };
  const drop = (prefix: string) => {
    for (const k of tree.keys()) if (k.startsWith(prefix)) tree.delete(k);
  };
  for (const file of files) {
    const fd = openSync(file, 'r');
    try {
      let pax = new Map<string, string>();
      for (let at = 0; readSync(fd, header, 0, 512, at) === 512 && header.some((c) => c !== 0);) {
        const type = String.fromCharCode(header[156]!);
        const size = Number(pax.get('size') ?? num(header.subarray(124, 136)));
        const body = at + 512;
        at = body + Math.ceil(size / 512) * 512;
        if (type === 'x' || type === 'g') {
          const data = Buffer.alloc(size);
          readSync(fd, data, 0, size, body);
          // "LEN key=value\n" records (POSIX pax); only a local one says what the next entry is.
          if (type === 'x') pax = new Map(data.toString('latin1').split('\n').filter(Boolean).map((r) => r.slice(r.indexOf(' ') + 1)).map((r) => [r.slice(0, r.indexOf('=')), r.slice(r.indexOf('=') + 1)]));
          continue;
        }
        const name = layerName(pax.get('path') ?? header.subarray(0, 100).toString('latin1').replace(/\0.*$/s, ''));
        const uid = Number(pax.get('uid') ?? num(header.subarray(108, 116)));
        const gid = Number(pax.get('gid') ?? num(header.subarray(116, 124)));
        pax = new Map();
        if (name === undefined) continue;
        const base = path.posix.basename(name);
        const dir = path.posix.dirname(name);
        const under = dir === '.' ? '' : `${dir}/`;
        if (base === '.wh..wh..opq') drop(under);
        else if (base.startsWith('.wh.')) {
          tree.delete(`${under}${base.slice(4)}`);
          drop(`${under}${base.slice(4)}/`);
        } else tree.set(name, { type, uid, gid });
      }
    } finally {
      closeSync(fd);
    }
  }
  return tree;
}

/** A name as a layer's entry has it (no leading '/', no '.'), or undefined for the root. */
export function layerName(name: string): string | undefined {
  const n = normalizePath(name);
  return n === null || n === '' ? undefined : n;
}

/** The OCI image config a build has made so far (docker's `config` object and what surrounds it). */
export interface OciConfig {
  architecture: string;
  os: string;
  variant?: string;
  config: {
    User?: string; Env: string[]; Entrypoint?: string[]; Cmd?: string[]; WorkingDir?: string;
    Labels: Record<string, string>; ExposedPorts?: Record<string, object>; Volumes?: Record<string, object>; StopSignal?: string;
  };
  history: { created_by: string; empty_layer?: boolean }[];
}

/**
 * Writes an OCI layout of `layers` and `config` at `dir` (new, or empty). The blobs are hard
 * links to the cached layers for a layout berth converts and removes (`link`); a layout that is
 * the user's gets copies, so that nothing done to it reaches the cache. Returns the manifest digest.
 */
export function writeLayout(dir: string, layers: Layer[], config: OciConfig, link: boolean): string {
  const blobs = path.join(dir, 'blobs', 'sha256');
  mkdirSync(blobs, { recursive: true, mode: 0o700 });
  for (const l of layers) {
    const to = path.join(blobs, l.digest.slice(7));
    if (statSync(to, { throwIfNoEntry: false })) continue;
    try {
      if (!link) throw new Error('copy');
      linkSync(l.file, to);
    } catch {
      copyFileSync(l.file, to);
    }
  }
  const blob = (data: Buffer) => {
    const digest = `sha256:${createHash('sha256').update(data).digest('hex')}`;
    writeFileSync(path.join(blobs, digest.slice(7)), data, { mode: 0o600 });
    return { digest, size: data.length };
  };
  const cfg = blob(Buffer.from(JSON.stringify({ ...config, rootfs: { type: 'layers', diff_ids: layers.map((l) => l.digest) } })));
  const manifest = blob(Buffer.from(JSON.stringify({
    schemaVersion: 2, mediaType: 'application/vnd.oci.image.manifest.v1+json',
    config: { mediaType: 'application/vnd.oci.image.config.v1+json', ...cfg },
    layers: layers.map((l) => ({ mediaType: LAYER_MEDIA, digest: l.digest, size: statSync(l.file).size })),
  })));
  writeFileSync(path.join(dir, 'oci-layout'), '{"imageLayoutVersion":"1.0.0"}');
  writeFileSync(path.join(dir, 'index.json'), JSON.stringify({
    schemaVersion: 2,
    manifests: [{ mediaType: 'application/vnd.oci.image.manifest.v1+json', ...manifest, annotations: { 'org.opencontainers.image.ref.name': 'latest' } }],
  }));
  return manifest.digest;
}

/** The chain of layers as a berth image at `opts.output`, by conversion (its checks and metadata), named `reference`. */
export async function squashLayers(work: string, layers: Layer[], config: OciConfig, reference: string, opts: ConvertOptions, events: ConvertEvents): Promise<ConvertResult> {
  if (layers.length === 0) throw new BerthError('USAGE', 'the image has no files: FROM scratch and nothing copied', 'COPY or ADD something into a FROM scratch stage');
  const dir = path.join(work, 'layout');
  writeLayout(dir, layers, config, true);
  try {
    const inner = new OciDirSource(dir, { tag: 'latest' });
    // The image names what it was built as, not the temporary layout it was converted from.
    return await convertImage({ describe: reference, resolve: async (p) => ({ ...(await inner.resolve(p)), reference }) }, opts, events);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
