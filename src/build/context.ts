// The build context: the directory whose files COPY and ADD take, less what .dockerignore
// excludes (matched by @balena/dockerignore, Docker's own rules ported), and which of its
// paths an instruction's sources name, with Go's filepath.Match globs as Docker has them.
// The content hash of what a step copies is part of the step's cache key (src/build/cache.ts).
import { createRequire } from 'node:module';
import type { Ignore } from '@balena/dockerignore';
import { createHash } from 'node:crypto';
import { closeSync, constants, fstatSync, lstatSync, openSync, readdirSync, readFileSync, readlinkSync, readSync, realpathSync, statSync, type Stats } from 'node:fs';
import path from 'node:path';
import { BerthError, messageOf, osError } from '../errors.js';

// A CommonJS module whose types say `export default`: the function is the module itself.
/** @balena/dockerignore, loaded by berth build alone. */
function dockerignore(): Ignore {
  const m = createRequire(import.meta.url)('@balena/dockerignore') as { default?: unknown };
  return ((m.default ?? m) as (o?: { ignorecase?: boolean }) => Ignore)();
}

export interface ContextFile {
  /** Relative to the context, '/'-separated, no leading slash. */
  rel: string;
  host: string;
  stat: Stats;
  /** The context's real path when it was listed: every file read must still lie under it. */
  root: string;
  /** A symlink's target, read when it was listed: what is hashed is what is copied. */
  link?: string;
}

/**
 * Opens a regular file of the context as it was listed: not through a symlink, the very file
 * (device, inode, size and change time as listed, which no one can set back), and still inside
 * the context by the descriptor's own path. Someone else who can write the context cannot swap
 * a file for a link to the builder's own files, or change it between its hash (the cache key)
 * and its copy (the layer): the build stops instead. done() checks it again after reading.
 */
export function openListed(file: ContextFile): { fd: number; done(): void } {
  const changed = (why: string) => new BerthError('SOURCE_INVALID', `${file.host} changed while berth build read it (${why})`,
    'build again when nothing else writes the build context; a context others can write is not one to build from');
  let fd: number;
  try {
    fd = openSync(file.host, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  } catch (e: unknown) {
    throw changed((e as { code?: string }).code === 'ELOOP' ? 'it became a symlink' : messageOf(e));
  }
  const same = () => {
    const st = fstatSync(fd);
    if (!st.isFile()) return 'it is no longer a regular file';
    if (st.dev !== file.stat.dev || st.ino !== file.stat.ino) return 'it was replaced';
    if (st.size !== file.stat.size || st.ctimeMs !== file.stat.ctimeMs) return 'it was written to';
    return undefined;
  };
  const at = realpathSync(`/proc/self/fd/${fd}`);
  const why = same() ?? (at === file.root || at.startsWith(`${file.root}/`) ? undefined : `it is now ${at}, outside the context`);
  if (why) {
    closeSync(fd);
    throw changed(why);
  }
  return {
    fd,
    done() {
      const after = same();
      closeSync(fd);
      if (after) throw changed(after);
    },
  };
}

export class BuildContext {
  private readonly ignore: Ignore;
  private all: ContextFile[] | undefined;
  /** A `!` exception can bring back a path under an excluded directory (Docker walks into it then). */
  private readonly exceptions: boolean;

  constructor(readonly root: string) {
    const st = statSync(root, { throwIfNoEntry: false }); // the context named may be a symlink; nothing in it is followed
    if (!st?.isDirectory()) throw new BerthError('SOURCE_NOT_FOUND', `the build context ${root} is not a directory`, 'name the directory COPY takes its files from, e.g. berth build .');
    let patterns = '';
    try {
      patterns = readFileSync(path.join(root, '.dockerignore'), 'utf8');
    } catch (e: unknown) {
      if ((e as { code?: string }).code !== 'ENOENT') throw osError(e, `${root}/.dockerignore`) ?? e;
    }
    const lines = patterns.split('\n').map((l) => l.trim()).filter((l) => l && !l.startsWith('#'));
    this.ignore = dockerignore().add(lines);
    this.exceptions = lines.some((l) => l.startsWith('!'));
  }

  /** The paths .dockerignore excluded (listed by files()): a directory's, not those under it unless an exception made berth look. */
  private readonly excluded: string[] = [];

  /** Whether .dockerignore excludes `rel` or anything under it (a bind mount of it must not show those). */
  excludesUnder(rel: string): boolean {
    this.files();
    return this.excluded.some((e) => rel === '' || e === rel || e.startsWith(`${rel}/`) || rel.startsWith(`${e}/`));
  }

  /** Every path of the context that .dockerignore keeps, sorted. */
  files(): ContextFile[] {
    if (this.all) return this.all;
    const out: ContextFile[] = [];
    const root = realpathSync(this.root);
    const walk = (rel: string) => {
      const dir = rel ? path.join(this.root, rel) : this.root;
      let names: string[];
      try {
        names = readdirSync(dir).sort();
      } catch (e: unknown) {
        throw osError(e, `the build context's ${dir}`) ?? e;
      }
      for (const n of names) {
        const r = rel ? `${rel}/${n}` : n;
        const host = path.join(this.root, r);
        const ignored = this.ignore.ignores(r);
        if (ignored) this.excluded.push(r);
        if (ignored && !this.exceptions) continue;
        const stat = lstatSync(host);
        if (!ignored) out.push({ rel: r, host, stat, root, ...(stat.isSymbolicLink() ? { link: readLinkListed(host) } : {}) });
        if (stat.isDirectory()) walk(r);
      }
    };
    walk('');
    return (this.all = out);
  }
}

/** Go's filepath.Match as a RegExp: * and ? never cross '/', [...] classes, \ escapes. */
export function globRegExp(pattern: string): RegExp {
  let re = '';
  for (let i = 0; i < pattern.length; i++) {
    const c = pattern[i]!;
    if (c === '*') re += '[^/]*';
    else if (c === '?') re += '[^/]';
    else if (c === '[') {
      const end = pattern.indexOf(']', i + 2);
      if (end < 0) throw new BerthError('USAGE', `bad pattern ${pattern}: [ without ]`, 'close the character class, or escape [ with \\');
      let cls = pattern.slice(i + 1, end);
      if (cls.startsWith('^')) cls = `!${cls.slice(1)}`;
      re += `[${cls.startsWith('!') ? `^${cls.slice(1)}` : cls}]`;
      i = end;
    } else if (c === '\\' && i + 1 < pattern.length) re += `\\${pattern[++i]}`;
    else re += c.replace(/[.+^${}()|\]\\]/g, '\\$&');
  }
  return new RegExp(`^${re}$`);
}

export const hasGlob = (p: string) => /[*?[]/.test(p);

/** A source as the paths it is matched against: relative, normalized, inside the context. */
export function normalizeSource(source: string, what: string): string {
  const n = path.posix.normalize(`/${source}`).slice(1).replace(/\/$/, '');
  if (source.split('/').includes('..') && path.posix.normalize(source).startsWith('..')) {
    throw new BerthError('USAGE', `${what}: ${source} is outside the build context`, 'COPY and ADD take files from the context only: move them into it');
  }
  return n;
}

/**
 * Where a path of the source tree lands: `name` under the source that matched it is `dest` (a
 * directory source's contents go into dest; a file goes to dest, or into it when dest ends in
 * '/' or several sources are copied, as Docker has it). undefined: no source names it.
 */
export function mapName(name: string, isDir: boolean, sources: string[], dest: string): { target: string; source: number } | undefined {
  const many = sources.length > 1 || sources.some(hasGlob) || dest.endsWith('/');
  const destDir = dest.replace(/^\/+/, '').replace(/\/+$/, '');
  for (const [index, s] of sources.entries()) {
    const parts = s === '' ? 0 : s.split('/').length;
    const nameParts = name === '' ? [] : name.split('/');
    if (nameParts.length < parts) continue;
    const root = nameParts.slice(0, parts).join('/');
    if (!(hasGlob(s) ? globRegExp(s).test(root) : root === s)) continue;
    const rest = nameParts.slice(parts).join('/');
    if (rest !== '') return { target: path.posix.join(destDir, rest), source: index };
    return { target: isDir || !many ? destDir : path.posix.join(destDir, path.posix.basename(name)), source: index };
  }
  return undefined;
}

/** The context's files that `sources` name, each with where it lands, in order. */
export function selectFiles(ctx: BuildContext, sources: string[], dest: string, what: string): { file: ContextFile; target: string }[] {
  const norm = sources.map((s) => normalizeSource(s, what));
  const out: { file: ContextFile; target: string }[] = [];
  const found = new Set<number>();
  for (const file of ctx.files()) {
    const m = mapName(file.rel, file.stat.isDirectory(), norm, dest);
    if (!m) continue;
    out.push({ file, target: m.target });
    found.add(m.source);
  }
  for (const [i, s] of norm.entries()) {
    // The context's root itself (COPY . /app) is there even when it holds nothing.
    if (s === '' || found.has(i)) continue;
    throw new BerthError('SOURCE_NOT_FOUND', `${what}: ${s} is not in the build context ${ctx.root}${hasGlob(s) ? ' (the pattern matches nothing)' : ''}`,
      'check the name, and that .dockerignore does not exclude it');
  }
  return out;
}

/** A symlink's target as listed; one that stopped being a link meanwhile is a context that changed. */
function readLinkListed(host: string): string {
  try {
    return readlinkSync(host);
  } catch (e: unknown) {
    throw new BerthError('SOURCE_INVALID', `${host} changed while berth build read it (${messageOf(e)})`,
      'build again when nothing else writes the build context; a context others can write is not one to build from');
  }
}

/** The sha256 of a listed file, read through openListed (the bytes the layer will copy). */
function hashListed(file: ContextFile): string {
  const opened = openListed(file);
  const hash = createHash('sha256');
  const buf = Buffer.alloc(1 << 20);
  try {
    for (let n; (n = readSync(opened.fd, buf, 0, buf.length, null)) > 0;) hash.update(buf.subarray(0, n));
  } catch (e: unknown) {
    closeSync(opened.fd);
    throw osError(e, file.host) ?? e;
  }
  opened.done();
  return hash.digest('hex');
}

/** What the selected files are, as a digest: their places, types, modes and contents. */
export async function contentDigest(files: { file: ContextFile; target: string }[]): Promise<string> {
  const h = createHash('sha256');
  for (const { file, target } of files) {
    const s = file.stat;
    const kind = s.isDirectory() ? 'dir' : s.isSymbolicLink() ? `link:${file.link}` : s.isFile() ? `file:${hashListed(file)}` : 'other';
    h.update(`${target}\0${file.rel}\0${kind}\0${(s.mode & 0o7777).toString(8)}\n`);
  }
  return `sha256:${h.digest('hex')}`;
}
