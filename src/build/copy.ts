// COPY and ADD as one layer: the context's files (as selected by context.ts), a stage's or an
// image's files (its tree through sqfs2tar, each entry renamed to where it lands), or a local
// archive that ADD unpacks. Copied entries are root's unless --chown says, with the context
// file's mode unless --chmod says, and mtime 0 (layer.ts). Directories the destination needs
// and the image lacks are made root's, 0755, as Docker makes them; one the image has is left
// as it is.
import { baseTar } from '../convert/commit.js';
import { BerthError } from '../errors.js';
import { ImageFiles } from '../image/files.js';
import { parseUser } from '../plan/prepare.js';
import { openImage } from '../runtime/image.js';
import { METADATA_DIR } from '../squashfs/metadata.js';
import { globRegExp, hasGlob, mapName, normalizeSource, type selectFiles } from './context.js';
import { entryOf, layerName, type LayerWriter } from './layer.js';

export type CopySource = { kind: 'context'; files: ReturnType<typeof selectFiles> } | { kind: 'image'; image: string; from: string };

export interface CopyRequest {
  kind: 'COPY' | 'ADD';
  /** The instruction and where it is, for messages. */
  what: string;
  /** As substituted. */
  sources: string[];
  /** Absolute; a trailing '/' kept. */
  dest: string;
  chmod?: string;
  chown?: { uid: number; gid: number };
  source: CopySource;
  /** The stage's image so far, for what already exists (none for FROM scratch). */
  image?: string;
}

/** ADD unpacks these local archives (by name, as Docker does by content), through their tools. */
const ARCHIVE: [RegExp, string[]][] = [
  [/\.(tar\.gz|tgz)$/, ['gzip', '-dc']], [/\.(tar\.xz|txz)$/, ['xz', '-dc']], [/\.(tar\.bz2|tbz2?)$/, ['bzip2', '-dc']],
  [/\.(tar\.zst|tzst)$/, ['zstd', '-dc']], [/\.tar$/, ['cat']],
];

const skipped = { entries: [], body: false };
const isMetadata = (n: string) => n === METADATA_DIR || n.startsWith(`${METADATA_DIR}/`);

/** --chown=USER[:GROUP]: numbers, or names in the image's /etc/passwd and /etc/group. */
export function chownOf(spec: string, image: string | undefined, architecture: string, what: string): { uid: number; gid: number } {
  if (!image && !/^\d+(:\d+)?$/.test(spec)) {
    throw new BerthError('USAGE', `${what}: --chown=${spec}: a FROM scratch stage has no /etc/passwd to look names up in`, 'give numbers: --chown=UID:GID');
  }
  const location = image ? openImage(image).location : { path: '/', format: 'directory' as const, offset: 0 };
  const u = parseUser(spec, { location, architecture }, `${what}: --chown=`)!;
  return { uid: u.uid, gid: u.gid };
}

export async function writeCopyLayer(writer: LayerWriter, req: CopyRequest): Promise<void> {
  const files = req.image ? new ImageFiles(openImage(req.image).location) : undefined;
  try {
    const exists = (name: string) => writer.has(name) || files?.realpath(`/${name}`) !== undefined;
    const parents = (target: string) => {
      const parts = target.split('/');
      for (let i = 1; i < parts.length; i++) {
        const dir = parts.slice(0, i).join('/');
        if (!exists(dir)) writer.entry(entryOf(dir, 'dir'));
      }
    };
    const mode = (m: number) => (req.chmod !== undefined ? parseInt(req.chmod, 8) : m & 0o7777);
    const norm = req.sources.map((src) => normalizeSource(src, req.what));
    if (req.source.kind === 'context') await fromContext(writer, req, req.source.files, norm, mode, parents);
    else await fromImage(writer, req, req.source, norm, mode, parents);
  } finally {
    files?.close();
  }
}

async function fromContext(writer: LayerWriter, req: CopyRequest, selected: ReturnType<typeof selectFiles>, norm: string[],
  mode: (m: number) => number, parents: (t: string) => void): Promise<void> {
  const owner = req.chown ?? { uid: 0, gid: 0 };
  // ADD unpacks an archive that a source names itself (not one inside a copied directory).
  const direct = (rel: string) => norm.some((src) => src === rel || (hasGlob(src) && globRegExp(src).test(rel)));
  for (const { file, target } of selected) {
    if (target === '') continue; // the root itself: the image's stays
    const st = file.stat;
    const archive = req.kind === 'ADD' && st.isFile() && direct(file.rel) ? ARCHIVE.find(([re]) => re.test(file.rel)) : undefined;
    if (archive) {
      await extract(writer, [archive[1][0]!, ...archive[1].slice(1), file.host] as [string, ...string[]], req.dest, req.chown, parents);
      continue;
    }
    parents(target);
    const fields = { mode: mode(st.mode), uid: owner.uid, gid: owner.gid };
    if (st.isDirectory()) writer.entry(entryOf(target, 'dir', fields));
    else if (st.isSymbolicLink()) writer.entry(entryOf(target, 'symlink', { ...fields, mode: 0o777, linkname: file.link ?? '' }));
    else if (st.isFile()) writer.entry(entryOf(target, 'file', { ...fields, size: st.size }), file);
    // Sockets, FIFOs and devices in a context are not copied (Docker refuses most of them).
  }
}

/** COPY --from: the entries of the stage's or image's tree that the sources name, renamed. */
async function fromImage(writer: LayerWriter, req: CopyRequest, source: { image: string; from: string }, norm: string[],
  mode: (m: number) => number, parents: (t: string) => void): Promise<void> {
  const found = new Set<number>();
  // Hard links come as whole files: a link whose first name is not among what is copied would
  // otherwise have nothing to link to (Docker copies the file).
  const base = baseTar(openImage(source.image).location);
  const argv: [string, ...string[]] = base[0] === 'sqfs2tar' ? ['sqfs2tar', '--no-hard-links', ...base.slice(1)] : [...base.slice(0, 1), '--hard-dereference', ...base.slice(1)] as [string, ...string[]];
  await writer.fromCommand(argv, (e) => {
    const n = layerName(e.name);
    if (n === undefined || isMetadata(n)) return skipped;
    const m = mapName(n, e.type === 'dir', norm, req.dest);
    if (!m || m.target === '') return skipped;
    found.add(m.source);
    parents(m.target);
    const linkname = e.type === 'hardlink' ? mapName(layerName(e.linkname) ?? '', false, norm, req.dest)?.target : e.linkname;
    if (linkname === undefined) return skipped; // (none come: --no-hard-links)
    return { entries: [{ ...e, name: m.target, linkname, mode: e.type === 'symlink' ? e.mode : mode(e.mode), ...(req.chown ?? {}) }], body: true };
  });
  for (const [i, src] of norm.entries()) {
    if (!found.has(i) && src !== '') {
      throw new BerthError('SOURCE_NOT_FOUND', `${req.what}: ${src} is not in ${source.from}${hasGlob(src) ? ' (the pattern matches nothing)' : ''}`, 'check the path in that stage or image');
    }
  }
}

/** ADD of a local archive: its entries under `dest`, with their own owners unless --chown says. */
async function extract(writer: LayerWriter, argv: [string, ...string[]], dest: string, chown: { uid: number; gid: number } | undefined,
  parents: (t: string) => void): Promise<void> {
  const destDir = dest.replace(/^\/+/, '').replace(/\/+$/, '');
  if (destDir) parents(`${destDir}/x`); // dest itself, when the image lacks it
  await writer.fromCommand(argv, (e) => {
    const n = layerName(e.name);
    if (n === undefined) return skipped;
    const at = (name: string) => (destDir ? `${destDir}/${name}` : name);
    const linkname = e.type === 'hardlink' ? at(layerName(e.linkname) ?? '') : e.linkname;
    return { entries: [{ ...e, name: at(n), linkname, ...(chown ?? {}) }], body: true };
  });
}
