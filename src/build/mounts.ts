// RUN --mount, as BuildKit's Dockerfile frontend takes it: type=cache, a directory of the user's
// build cache that outlives the step (pip's, apt's, a compiler's downloads), and type=bind, a
// file or directory of the context, of an earlier stage or of an image, read-only. Both become
// binds of the step's plan (run-step.ts adds them as the plan's bind ops, after the root is
// built), so what they hold is never in the step's layer. A cache directory is the user's own:
// build/mounts/ID in their cache (0700), checked before it is bound (STYLE.md section 10).
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { closeSync, lstatSync, mkdirSync, openSync, readFileSync, readSync, realpathSync, rmSync, symlinkSync, writeFileSync, writeSync } from 'node:fs';
import path from 'node:path';
import { baseTar } from '../convert/commit.js';
import { BerthError } from '../errors.js';
import { ImageFiles } from '../image/files.js';
import { openImage } from '../runtime/image.js';
import { normalizeSource, openListed, type ContextFile, type selectFiles } from './context.js';

export type MountSpec =
  | { type: 'cache'; target: string; id: string; sharing: 'shared' | 'locked' | 'private'; readOnly: boolean }
  | { type: 'bind'; target: string; source: string; from?: string };

/** A bind the step's plan gets: a host path at `target`, read-only unless it is a cache's. */
export interface StepBind {
  source: string;
  target: string;
  readOnly: boolean;
  origin: string;
}

const KEYS: Record<MountSpec['type'], readonly string[]> = {
  cache: ['type', 'target', 'dst', 'destination', 'id', 'sharing', 'ro', 'readonly', 'uid', 'gid', 'mode'],
  bind: ['type', 'target', 'dst', 'destination', 'source', 'src', 'from', 'ro', 'readonly'],
};

/** Why berth has no such mount, and what to do instead. */
const REFUSED: Record<string, string> = {
  secret: 'keep the secret out of the Dockerfile: a step runs as you, so fetch what needs it before the build (into the context) and COPY the result, or bind the file with --mount=type=bind,source=FILE (it is not kept in the layer, but it is hashed into the step\'s cache key)',
  ssh: 'a step has no agent of yours: clone or fetch what needs the key before the build, into the context, and COPY it or bind it with --mount=type=bind,source=DIR',
  tmpfs: 'leave it out: a RUN\'s /tmp is a tmpfs of its own already, never in the layer (write there, or bind a cache with --mount=type=cache,target=DIR)',
};

/**
 * One --mount flag (substituted), as BuildKit's comma-separated key=value list. `workdir`
 * resolves a relative target. Options berth cannot honour but that change nothing a build
 * depends on (a cache's uid, gid, mode: the directory is the step's user's inside) are warned.
 */
export function parseMount(value: string, workdir: string, what: string, warn: (line: string) => void): MountSpec {
  const fields = new Map<string, string>();
  for (const part of value.split(',').filter(Boolean)) {
    const eq = part.indexOf('=');
    fields.set((eq < 0 ? part : part.slice(0, eq)).toLowerCase(), eq < 0 ? 'true' : part.slice(eq + 1));
  }
  const type = fields.get('type') ?? 'bind';
  const bad = (why: string, hint: string) => new BerthError('USAGE', `${what}: --mount=${value}: ${why}`, hint);
  if (type !== 'cache' && type !== 'bind') {
    throw bad(`berth build does not offer type=${type} mounts`, REFUSED[type] ?? 'berth build\'s RUN takes --mount=type=cache,target=DIR and --mount=type=bind,source=PATH,target=DIR');
  }
  for (const k of fields.keys()) {
    if (k === 'rw' || k === 'readwrite') throw bad('berth binds it read-only', 'a write would reach the bound files themselves (BuildKit throws such writes away): copy what the step changes to a directory of the image');
    if (!KEYS[type].includes(k)) throw bad(`a ${type} mount takes no ${k}`, `its keys: ${KEYS[type].filter((n) => n !== 'type').join(', ')}`);
  }
  const rawTarget = fields.get('target') ?? fields.get('dst') ?? fields.get('destination');
  if (!rawTarget) throw bad('it names no target', 'add target=DIR, where the step sees it');
  const target = path.posix.resolve(workdir, rawTarget);
  if (target === '/') throw bad('its target is the root', 'mount it at a directory of its own');
  const flag = (k: string) => {
    const v = fields.get(k);
    if (v !== undefined && v !== 'true' && v !== 'false') throw bad(`${k}=${v}: true or false`, `write ${k} or ${k}=false`);
    return v === 'true';
  };
  if (type === 'cache') {
    for (const k of ['uid', 'gid', 'mode']) if (fields.has(k)) warn(`berth: warning: ${what}: the cache mount's ${k} is not applied: the directory is yours, and the step's user (root, or USER's) owns it inside`);
    const sharing = fields.get('sharing') ?? 'shared';
    if (sharing !== 'shared' && sharing !== 'locked' && sharing !== 'private') throw bad(`sharing=${sharing}: shared, locked or private`, 'e.g. sharing=locked for apt, which takes its own lock');
    return { type, target, id: fields.get('id') ?? target, sharing, readOnly: flag('ro') || flag('readonly') };
  }
  const source = fields.get('source') ?? fields.get('src') ?? '/';
  return { type, target, source, ...(fields.has('from') ? { from: fields.get('from')! } : {}) };
}

/**
 * The cache directory of `id` in the build cache's `mounts` directory (the user's, 0700), made
 * if missing. One that is not a real directory of the user's, mode 0700, is refused: what a
 * step writes there is read by every later step that mounts it.
 */
export function cacheDir(mounts: string, id: string, what: string): string {
  const dir = path.join(mounts, createHash('sha256').update(id).digest('hex').slice(0, 32));
  try {
    mkdirSync(dir, { mode: 0o700 });
  } catch (e: unknown) {
    if ((e as { code?: string }).code !== 'EEXIST') throw e;
  }
  const st = lstatSync(dir);
  const uid = process.getuid!();
  if (!st.isDirectory() || st.uid !== uid || (st.mode & 0o7777) !== 0o700) {
    throw new BerthError('PATH_UNUSABLE', `${what}: the cache mount ${id} is ${dir}, which is not a directory of yours with mode 0700 (${st.isSymbolicLink() ? 'a symlink' : `owner ${st.uid}, mode ${(st.mode & 0o7777).toString(8)}`})`,
      'berth binds only a directory no one else can write: remove it (berth prune empties the build cache) and build again');
  }
  return dir;
}

/**
 * sharing=locked: one step at a time has the directory (`wait`: until the other is done);
 * sharing=private takes it when no step has it (`wait` false: undefined when one has, and the
 * step gets an empty directory of its own instead, as BuildKit makes another instance). The
 * lock is a directory made beside it, holding the pid of the build that has it; one whose build
 * is gone is taken over. Returns its release.
 */
export async function lockCache(dir: string, wait: boolean, note: () => void): Promise<(() => void) | undefined> {
  const lock = `${dir}.lock`;
  for (let noted = false; ; await new Promise((r) => setTimeout(r, 200))) {
    try {
      mkdirSync(lock, { mode: 0o700 });
      writeFileSync(path.join(lock, 'pid'), `${process.pid}\n`);
      return () => rmSync(lock, { recursive: true, force: true });
    } catch (e: unknown) {
      if ((e as { code?: string }).code !== 'EEXIST') throw e;
    }
    let pid = 0;
    try {
      pid = Number(readFileSync(path.join(lock, 'pid'), 'utf8').trim());
    } catch {
      // being made, or being removed: look again
    }
    if (pid > 0 && !alive(pid)) rmSync(lock, { recursive: true, force: true });
    else if (!wait && pid > 0) return undefined;
    else if (!noted) {
      noted = true;
      note();
    }
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e: unknown) {
    return (e as { code?: string }).code === 'EPERM';
  }
}

/** A bind source of the context: inside it once every symlink is resolved (the path bound is that real path). */
export function contextSource(root: string, source: string, what: string): string {
  normalizeSource(source, what);
  const real = realpathSync(root);
  let resolved: string;
  try {
    resolved = realpathSync(path.join(root, source));
  } catch {
    throw new BerthError('SOURCE_NOT_FOUND', `${what}: ${source} is not in the build context ${root}`, 'check the source= of the mount');
  }
  if (resolved !== real && !resolved.startsWith(`${real}/`)) {
    throw new BerthError('USAGE', `${what}: the mount's source ${source} is ${resolved}, outside the build context`, 'bind only what is in the context: move it there');
  }
  return resolved;
}

/**
 * A bind from a stage or an image: `source` of its tree, unpacked into `dir` (new) for the step,
 * since only the step's own image is mounted. A directory image's path is bound as it is.
 */
export async function unpackFrom(image: string, source: string, dir: string, what: string): Promise<string> {
  const location = openImage(image).location;
  const files = new ImageFiles(location);
  let real: string | undefined;
  let data: Buffer | undefined;
  try {
    real = files.realpath(path.posix.resolve('/', source));
    if (real !== undefined && files.list(real) === undefined) data = files.read(real);
  } finally {
    files.close();
  }
  if (real === undefined) throw new BerthError('SOURCE_NOT_FOUND', `${what}: ${source} is not in ${image}`, 'check the source= of the mount');
  if (location.format === 'directory') return path.join(location.path, real);
  if (data !== undefined) {
    writeFileSync(dir, data, { mode: 0o644, flag: 'wx' });
    return dir;
  }
  mkdirSync(dir, { mode: 0o700 });
  const [tool, ...rest] = baseTar(location);
  const from = spawn(tool, rest, { stdio: ['ignore', 'pipe', 'pipe'] });
  // The subtree by tar's own member selection (sqfs2tar 1.2's --subdir fails on any path).
  const parts = real.split('/').filter(Boolean);
  const select = parts.length > 0 ? [`--strip-components=${parts.length}`, '--', parts.join('/')] : [];
  const into = spawn('tar', ['-x', '--no-same-owner', '-C', dir, '-f', '-', ...select], { stdio: ['pipe', 'ignore', 'pipe'] });
  from.stdout!.pipe(into.stdin!);
  into.stdin!.on('error', () => {});
  let errors = '';
  for (const c of [from, into]) c.stderr!.on('data', (d: Buffer) => { errors += d.toString(); });
  const done = (c: ReturnType<typeof spawn>) => new Promise<number>((resolve) => { c.on('error', () => resolve(-1)); c.on('close', (code) => resolve(code ?? -1)); });
  const [a, b] = await Promise.all([done(from), done(into)]);
  if (a !== 0 || b !== 0) throw new BerthError('TOOL_FAILED', `${what}: cannot unpack ${source} of ${image} for the mount: ${errors.trim() || `status ${a}, ${b}`}`, 'check that the image is whole (berth inspect it), and that sqfs2tar and tar are installed');
  return dir;
}

/**
 * The context's selected files (as selectFiles lists them, `target` under /mount) copied to `dir`
 * (new): each regular file opened as it was listed (openListed), links as listed. Returns `dir`,
 * or the file itself when the source is one file.
 */
export function copyListed(selected: ReturnType<typeof selectFiles>, dir: string): string {
  const at = (target: string) => path.join(dir, target.replace(/^mount\/?/, ''));
  if (selected.length === 1 && selected[0]!.target === 'mount' && !selected[0]!.file.stat.isDirectory()) return copyOne(selected[0]!.file, dir);
  mkdirSync(dir, { mode: 0o700 });
  for (const { file, target } of selected) {
    const to = at(target);
    if (to === dir) continue;
    if (file.stat.isDirectory()) mkdirSync(to, { recursive: true, mode: 0o755 });
    else copyOne(file, to);
  }
  return dir;
}

function copyOne(file: ContextFile, to: string): string {
  mkdirSync(path.dirname(to), { recursive: true, mode: 0o755 });
  if (file.stat.isSymbolicLink()) symlinkSync(file.link ?? '', to);
  else if (file.stat.isFile()) {
    const listed = openListed(file);
    const out = openSync(to, 'wx', file.stat.mode & 0o777);
    try {
      const buf = Buffer.alloc(1 << 20);
      for (let n; (n = readSync(listed.fd, buf, 0, buf.length, null)) > 0;) writeSync(out, buf.subarray(0, n));
    } catch (e: unknown) {
      closeSync(listed.fd);
      throw e;
    } finally {
      closeSync(out);
    }
    listed.done();
  }
  return to;
}
