// Where converted images and blobs are looked for and kept: the site cache (cache.site), which
// its owner fills and everyone else only reads, and the user's own cache (cache.dir, default
// ~/.cache/berth), the only place berth writes. Whatever either holds is checked by the rules of
// trust.ts before use, and an image also by the manifest digest in its own metadata, since a
// file is trusted for what it is, not for where it is (STYLE.md section 10). What fails is
// skipped with a one-line warning and pulled again into the user's own cache: never used.
import { createHash } from 'node:crypto';
import { closeSync, lstatSync, readdirSync, readSync, realpathSync, statSync, unlinkSync } from 'node:fs';
import { homedir } from 'node:os';
import path from 'node:path';
import { config } from '../config/load.js';
import { BerthError, messageOf } from '../errors.js';
import { METADATA_PATH, parseMetadata, readMetadataTrailer, type ImageMetadata } from '../squashfs/metadata.js';
import { readImageFile } from '../squashfs/read-file.js';
import { writeFileAtomic } from '../util/atomic-file.js';
import { imagePath, type BlobDir } from './cache.js';
import { checkDirPath, describeDoubt, makeTrust, openTrusted, uidOf, type Doubt, type Trust } from './trust.js';

export type CacheKind = 'site' | 'user';
export type Warn = (line: string) => void;

export interface CachedImage {
  path: string;
  cache: CacheKind;
  manifestDigest: string;
  size: number;
  mtime: Date;
  /** From the image's metadata; undefined when it cannot be read. */
  source: string | undefined;
  /** From the image's metadata too. */
  platform?: ImageMetadata['platform'];
  /** Why it is not used; undefined for an image that is. */
  doubt?: Doubt;
}

/** $XDG_CACHE_HOME/berth, else ~/.cache/berth. */
export function defaultCacheDir(env: NodeJS.ProcessEnv = process.env): string {
  return path.join(env.XDG_CACHE_HOME || path.join(env.HOME || homedir(), '.cache'), 'berth');
}

const SUBDIRS = ['images', 'blobs', 'blobs/sha256', 'tags'];
const DIGEST = /^sha256:[0-9a-f]{64}$/;

export class Caches {
  readonly trust: Trust;
  readonly site: string | undefined;
  /** cache.dir, then the default where cache.dir is not safe to use. */
  private readonly candidates: string[];
  private chosen: string | undefined;
  private readonly told = new Set<string>();

  constructor(private readonly warn: Warn, env: NodeJS.ProcessEnv = process.env) {
    const values = config(env).values;
    const owner = values['cache.site-owner'];
    this.trust = makeTrust(process.getuid!(), typeof owner === 'string' ? uidOf(owner, 'cache.site-owner') : undefined);
    const site = values['cache.site'];
    this.site = typeof site === 'string' ? path.resolve(site) : undefined;
    const fallback = path.resolve(defaultCacheDir(env));
    const configured = typeof values['cache.dir'] === 'string' ? path.resolve(values['cache.dir']) : fallback;
    this.candidates = configured === fallback ? [fallback] : [configured, fallback];
  }

  /** Says once per path why it is not used, and what happens instead. */
  private tell(d: Doubt, instead: string): void {
    if (this.told.has(d.path)) return;
    this.told.add(d.path);
    this.warn(`berth: warning: ignoring ${describeDoubt(d)}: ${d.fix}; ${instead}`);
  }

  /** Why the user's cache at `root` is not safe to write, creating what is missing when asked. */
  private userCacheDoubt(root: string, create: boolean): Doubt | undefined {
    const top = checkDirPath(root, this.trust, create ? 0o700 : undefined);
    if (top.doubt || top.missing) return top.doubt;
    // A cache dir of one's own that one made readable (a site cache's owner filling it) keeps
    // its subdirectories readable too; one under a shared root (a sticky /scratch) stays 0700.
    const st = statSync(root); // through a symlink, if it is one: the walk above checked where it leads
    const mode = st.uid === this.trust.self ? 0o700 | (st.mode & 0o055) : 0o700;
    for (const sub of SUBDIRS) {
      const c = checkDirPath(path.join(root, sub), this.trust, create ? mode : undefined);
      if (c.doubt) return c.doubt;
    }
    return undefined;
  }

  /** The user's own cache: cache.dir unless someone else could write it, else the default. Creates nothing. */
  userRoot(): string {
    if (this.chosen) return this.chosen;
    for (const [i, root] of this.candidates.entries()) {
      const d = this.userCacheDoubt(root, false);
      if (!d) return (this.chosen = root);
      const next = this.candidates[i + 1];
      this.tell(d, next ? `using ${next} instead` : 'no cache of yours is safe to use');
    }
    throw new BerthError('OUTPUT_UNWRITABLE', `berth has no cache directory that only you can write (tried ${this.candidates.join(', ')})`,
      'set cache.dir (BERTH_CACHE_DIR) to a directory of yours that other users cannot write, e.g. mkdir -m 0700 ~/berth-cache');
  }

  /** The user's cache, its directories made (0700, checked after): where pulls write. */
  writable(): string {
    const root = this.userRoot();
    const d = this.userCacheDoubt(root, true);
    if (d) throw new BerthError('OUTPUT_UNWRITABLE', `cannot use the cache ${root}: ${describeDoubt(d)}`, d.fix);
    return root;
  }

  blobDir(): BlobDir {
    return { root: this.writable(), trust: this.trust, warn: (d, instead) => this.tell(d, instead) };
  }

  /** Where images are read from: the site cache, then the user's own (when there is one safe to use). */
  private readRoots(): [CacheKind, string][] {
    const roots: [CacheKind, string][] = this.site ? [['site', this.site]] : [];
    try {
      const user = this.userRoot();
      if (user !== this.site) roots.push(['user', user]);
    } catch (e: unknown) {
      if (!(e instanceof BerthError)) throw e; // writable() reports it when a pull needs to write
    }
    return roots;
  }

  /** Whether `file` is the entry of a cache for manifest `digest` (the file berth wrote there), by its real path. */
  holds(file: string, digest: string | null | undefined): boolean {
    if (!digest) return false;
    const real = (p: string) => {
      try {
        return realpathSync(p);
      } catch {
        return undefined;
      }
    };
    const mine = real(file);
    return mine !== undefined && this.readRoots().some(([, root]) => real(imagePath(root, digest)) === mine);
  }

  /** The converted image of manifest `digest` in a cache, if one is there that can be believed. */
  async findImage(digest: string): Promise<{ path: string; cache: CacheKind } | undefined> {
    for (const [cache, root] of this.readRoots()) {
      const found = await this.trustedImage(imagePath(root, digest), digest, cache);
      if (found) return found;
    }
    return undefined;
  }

  /** The image at `file` if it can be believed to be manifest `digest`; a doubt is told. */
  async trustedImage(file: string, digest: string, cache: CacheKind): Promise<{ path: string; cache: CacheKind } | undefined> {
    const dir = checkDirPath(path.dirname(file), this.trust);
    if (dir.missing && !dir.doubt) return undefined;
    const d = dir.doubt ?? (await this.imageDoubt(file, digest));
    if (d === 'missing') return undefined;
    if (d) {
      this.tell(d, 'pulling into your own cache instead');
      return undefined;
    }
    return { path: file, cache };
  }

  /** Why the image file is not to be used as manifest `digest`; 'missing' if there is none. */
  private async imageDoubt(file: string, digest: string): Promise<Doubt | 'missing' | undefined> {
    const read = await this.readImage(file);
    if (read === undefined) return 'missing';
    return 'doubt' in read ? read.doubt : digestDoubt(file, read, digest);
  }

  /** A cache image's metadata, read through the descriptor that was checked. */
  private async readImage(file: string): Promise<{ metadata: ImageMetadata; owner: number; mode: number } | { doubt: Doubt } | undefined> {
    const opened = openTrusted(file, this.trust);
    if (!opened || 'doubt' in opened) return opened;
    const { fd, st } = opened;
    try {
      // Images made before the trailer existed: read through rdsquashfs, by the path just checked.
      const text = readMetadataTrailer(fd, st.size) ?? (await readImageFile(file, METADATA_PATH))?.toString('utf8');
      if (!text) throw new Error('it carries no berth metadata');
      return { metadata: parseMetadata(text, file), owner: st.uid, mode: st.mode };
    } catch (e: unknown) {
      return { doubt: { path: file, owner: st.uid, mode: st.mode, why: `is not a berth image (${messageOf(e)})`, fix: 'remove it' } };
    } finally {
      closeSync(fd);
    }
  }

  /** Every image in both caches, each with its doubt if it is not used. */
  async listImages(): Promise<{ images: CachedImage[]; doubts: Doubt[] }> {
    const images: CachedImage[] = [];
    const doubts: Doubt[] = [];
    for (const [cache, root] of this.readRoots()) {
      const dir = path.join(root, 'images');
      const c = checkDirPath(dir, this.trust);
      if (c.doubt) doubts.push(c.doubt);
      if (c.doubt || c.missing) continue;
      let names: string[];
      try {
        names = readdirSync(dir);
      } catch (e: unknown) {
        doubts.push({ path: dir, owner: undefined, mode: undefined, why: `cannot be listed (${messageOf(e)})`, fix: 'check its permissions' });
        continue;
      }
      for (const name of names.filter((n) => /^[0-9a-f]{64}\.sqsh$/.test(n)).sort()) {
        const listed = await this.listed(path.join(dir, name), cache);
        if (listed) images.push(listed);
      }
    }
    return { images, doubts };
  }

  private async listed(file: string, cache: CacheKind): Promise<CachedImage | undefined> {
    const manifestDigest = `sha256:${path.basename(file, '.sqsh')}`;
    const st = lstatSync(file, { throwIfNoEntry: false });
    if (!st) return undefined; // removed since the listing
    const base = { path: file, cache, manifestDigest, size: st.size, mtime: st.mtime };
    const read = await this.readImage(file);
    if (!read) return { ...base, source: undefined };
    if ('doubt' in read) return { ...base, source: undefined, doubt: read.doubt };
    const d = digestDoubt(file, read, manifestDigest);
    return { ...base, source: read.metadata.source, platform: read.metadata.platform, ...(d ? { doubt: d } : {}) };
  }

  /**
   * Notes which manifest `reference` (a tag) named when it was resolved: what a run falls back
   * to when the registry cannot be reached, and nothing else (STYLE.md section 10).
   */
  noteResolved(reference: string, digest: string): void {
    try {
      writeFileAtomic(this.tagFile(this.writable(), reference), `${JSON.stringify({ reference, digest })}\n`);
    } catch {
      // Not noted: a later run without the registry then fails as it would have.
    }
  }

  /** The manifest digest `reference` named when last resolved here, if a note of the user's own says. */
  lastResolved(reference: string): string | undefined {
    let root: string;
    try {
      root = this.userRoot();
    } catch {
      return undefined;
    }
    const opened = openTrusted(this.tagFile(root, reference), { self: this.trust.self, owners: new Set([this.trust.self]) });
    if (!opened || 'doubt' in opened) return undefined;
    try {
      const buf = Buffer.alloc(Math.min(opened.st.size, 4096));
      readSync(opened.fd, buf, 0, buf.length, 0);
      const note = JSON.parse(buf.toString('utf8')) as { reference?: unknown; digest?: unknown };
      return note.reference === reference && typeof note.digest === 'string' && DIGEST.test(note.digest) ? note.digest : undefined;
    } catch {
      return undefined;
    } finally {
      closeSync(opened.fd);
    }
  }

  private tagFile(root: string, reference: string): string {
    return path.join(root, 'tags', createHash('sha256').update(reference).digest('hex'));
  }

  /** Removes a file of the user's own cache (the site cache is its owner's). */
  remove(image: CachedImage): void {
    if (image.cache !== 'user') {
      throw new BerthError('OUTPUT_UNWRITABLE', `${image.path} is in the site cache, which only its owner changes`, 'ask the site\'s admins to remove it');
    }
    unlinkSync(image.path);
  }
}

/** An image whose metadata names another manifest than its file name: not the image asked for. */
function digestDoubt(file: string, read: { metadata: ImageMetadata; owner: number; mode: number }, digest: string): Doubt | undefined {
  const held = read.metadata.manifestDigest;
  if (held === digest) return undefined;
  return { path: file, owner: read.owner, mode: read.mode, why: `holds ${held && DIGEST.test(held) ? held : 'another image'}, not ${digest}`,
    fix: 'remove it: it is not the image its name says' };
}
