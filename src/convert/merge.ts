// The layer merge: OCI changesets applied in one pass, top layer first, into one tar stream.
//
// Walking the layers from the top down lets every entry be decided the moment it is read:
// whatever an upper layer already placed, whited out or made opaque wins, so a lower entry is
// either emitted or dropped, and nothing is ever extracted or buffered. merge-tree.ts holds the
// rule that decides each path (overlay2's) and remembers which layer decided it.
//
// Two things need to know what comes later in the same layer: a duplicate entry (the last one
// wins) and a hard link to a file that an upper layer replaced (the link keeps the old data).
// Both are rare, so the fast path assumes neither and throws NeedsLayerIndex when it meets one;
// the caller then runs again with a LayerIndex of every layer (headers read in a first pass).
import { BerthError } from '../errors.js';
import { checkEntry, checkPath } from './linux-limits.js';
import { normalizePath, OPAQUE, WHITEOUT, type LayerIndex } from './merge-index.js';
import { ANOMALY, HIDDEN, Tree, VISIBLE, type Kind, type PendingLink } from './merge-tree.js';
import { shownName } from './tar-fields.js';
import type { TarEntry, TarSink } from './tar-reader.js';
import { encodeHeader, paddingFor } from './tar-writer.js';

export { LayerIndexBuilder, normalizePath, type LayerIndex } from './merge-index.js';

export class NeedsLayerIndex extends Error {}

/** One conversion's merge: the tree of decided paths and where the merged stream goes. */
export class Merger {
  private readonly tree = new Tree();

  constructor(private readonly out: (chunk: Buffer) => void) {}

  /** Reserves a directory no layer may touch (berth's own metadata lives there). */
  reserve(path: string): void {
    this.tree.reserve(path);
  }

  layer(layerNumber: number, describe: string, index?: LayerIndex): LayerMerger {
    this.tree.checkPending(layerNumber); // a link whose target the layer above removed
    return new LayerMerger(this, this.tree, layerNumber, describe, index);
  }

  /** Call after the last layer: every hard link must have found its target. */
  finish(): void {
    this.tree.checkPending(undefined);
    for (const dir of this.tree.markerOnlyDirs()) {
      this.out(encodeHeader({
        name: dir, linkname: '', type: 'dir', mode: 0o755, uid: 0, gid: 0, uname: '', gname: '',
        size: 0, mtime: 0, devmajor: 0, devminor: 0, xattrs: new Map(),
      }));
    }
  }

  emit(chunk: Buffer): void {
    this.out(chunk);
  }
}

/** The TarSink for one layer: decides each entry against the tree and emits the visible ones. */
export class LayerMerger implements TarSink {
  private ordinal = -1;
  /** This layer's entries so far: path -> where its data went (null: nowhere). */
  private local = new Map<string, string | null>();
  private localDirs = new Set<string>();
  /** Every directory this layer's entries so far were under (implied ones too). */
  private parents = new Set<string>();
  private bodySize = 0;
  private emitting = false;
  private afterBody: (() => void) | undefined;

  constructor(
    private readonly merger: Merger,
    private readonly tree: Tree,
    private readonly layerNumber: number,
    private readonly describe: string,
    private readonly index: LayerIndex | undefined,
  ) {}

  entry(e: TarEntry): boolean {
    this.ordinal++;
    this.afterBody = undefined;
    const path = this.normalize(e.name, e.name);
    const base = path.slice(path.lastIndexOf('/') + 1);
    if (base.startsWith(WHITEOUT)) return this.whiteout(path, base, e.name);
    checkPath(path, this.describe, e.name);
    checkEntry(e, this.describe);
    if (path === '' && e.type !== 'dir') {
      throw new BerthError('LAYER_CORRUPT', `${this.describe}: entry '${shownName(e.name)}' names the image root but is not a directory`,
        'the image is broken; rebuild it or report it to its maintainer');
    }
    // A non-directory over what this layer already put under that path: only the indexed pass
    // knows which survives (an upper directory there would hide the conflict from the tree).
    if (!this.index && e.type !== 'dir' && this.parents.has(path)) return this.anomaly(`'${path}' replaces a directory of its own layer`);
    // Deepest first: where a parent is there, so are all of its own (most entries share theirs).
    for (let i = path.lastIndexOf('/'); i > 0; i = path.lastIndexOf('/', i - 1)) {
      const parent = path.slice(0, i);
      if (this.parents.has(parent)) break;
      this.parents.add(parent);
    }
    const survives = this.index ? this.index.survivors.has(this.ordinal) : true;
    if (!survives && e.type !== 'dir' && this.index!.replacedByDir.has(path)) {
      // Replaced by a directory later in this layer, it still deleted what lower layers had.
      this.tree.whiteout(path, this.layerNumber, false);
    }
    if (e.type === 'dir') this.localDirs.add(path);
    else this.localDirs.delete(path);
    if (e.type === 'hardlink') return this.hardlink(e, path, survives);
    return this.place(e, path, survives);
  }

  private place(e: TarEntry, path: string, survives: boolean): boolean {
    const kind: Kind = e.type === 'dir' ? 'dir' : 'other';
    const placement = survives ? this.tree.place(path, kind, this.layerNumber) : HIDDEN;
    if (placement === ANOMALY) return this.anomaly(`'${path}' appears twice or under a non-directory`);
    if (survives && kind !== 'dir') this.tree.replaced(path, this.layerNumber);
    const visible = placement === VISIBLE;

    // Hard links from upper layers waiting for this path (only the surviving version counts).
    const waiting = survives ? this.tree.takePending(path) : undefined;
    if (waiting && e.type === 'dir') this.linkToDirectory(waiting[0]!.path, waiting[0]!.layer, path);
    const sameLayerLinks = e.type === 'dir' ? undefined : this.index?.linkNeeds.get(this.ordinal)
      ?.filter((l) => this.index!.survivors.has(l.ordinal) && this.tree.place(l.path, 'other', this.layerNumber, true) === VISIBLE)
      .map((l) => l.path);

    let emittedAs: string | null = null;
    if (visible) emittedAs = path;
    else if (waiting) emittedAs = waiting[0]!.path;
    else if (sameLayerLinks?.length) emittedAs = sameLayerLinks[0]!;
    this.local.set(path, emittedAs);

    if (emittedAs === null) return false;
    this.merger.emit(encodeHeader({ ...e, name: emittedAs === '' ? '.' : emittedAs }));
    if (waiting) {
      const links = visible ? waiting : waiting.slice(1);
      this.afterBody = () => {
        for (const l of links) this.merger.emit(encodeHeader(linkEntry(l.entry, l.path, emittedAs!)));
      };
    }
    if (e.type === 'file') {
      this.bodySize = e.size;
      this.emitting = true;
      return true; // entryEnd follows the body, even an empty one
    }
    this.afterBody?.();
    return false;
  }

  data(chunk: Buffer): void {
    if (this.emitting) this.merger.emit(chunk);
  }

  entryEnd(): void {
    if (!this.emitting) return;
    this.emitting = false;
    this.merger.emit(paddingFor(this.bodySize));
    this.afterBody?.();
    this.afterBody = undefined;
  }

  /** ".wh.NAME" hides NAME below; ".wh..wh..opq" makes its directory opaque. */
  private whiteout(path: string, base: string, entryName: string): boolean {
    const dir = path.slice(0, Math.max(0, path.lastIndexOf('/')));
    if (base === OPAQUE) {
      checkPath(dir, this.describe, entryName, 'its directory');
      this.tree.whiteout(dir, this.layerNumber, true);
    } else if (!base.startsWith(`${WHITEOUT}${WHITEOUT}`)) {
      const target = dir === '' ? base.slice(4) : `${dir}/${base.slice(4)}`;
      checkPath(target, this.describe, entryName, 'the name it whites out');
      this.tree.whiteout(target, this.layerNumber, false);
    } // other ".wh..wh." names are aufs bookkeeping, not content
    return false;
  }

  private hardlink(e: TarEntry, path: string, survives: boolean): boolean {
    const target = this.normalize(e.linkname, e.name);
    checkPath(target, this.describe, e.name, 'its target');
    if (target === '' || this.localDirs.has(target)) this.linkToDirectory(path, this.layerNumber, target === '' ? '/' : target);
    const placement = survives ? this.tree.place(path, 'other', this.layerNumber) : HIDDEN;
    if (placement === ANOMALY) return this.anomaly(`'${path}' appears twice or under a non-directory`);
    if (survives) this.tree.replaced(path, this.layerNumber);
    const earlier = this.local.get(target); // undefined: not in this layer; null: not emitted
    if (placement === HIDDEN) {
      this.local.set(path, null);
      return false;
    }
    if (earlier === undefined) {
      // The target lies in a lower layer; its entry there decides where the data goes.
      this.tree.addPending(target, { path, layer: this.layerNumber, entry: e } satisfies PendingLink);
      this.local.set(path, path);
      return false;
    }
    if (earlier === null) {
      if (!this.index) return this.anomaly(`hard link '${path}' names '${target}', which an upper layer replaced`);
      throw new BerthError('LAYER_CORRUPT', `hard link '${shownName(path)}' in ${this.describe} points to '${shownName(target)}', which is not a regular file`,
        'the image is broken; rebuild it or report it to its maintainer');
    }
    this.local.set(path, earlier);
    if (earlier !== path) this.merger.emit(encodeHeader(linkEntry(e, path, earlier)));
    return false;
  }

  /** Linux has no hard links to directories (link(2): EPERM), so no Linux system wrote this. */
  private linkToDirectory(link: string, linkLayer: number, dir: string): never {
    throw new BerthError('LAYER_UNSAFE',
      `hard link '${shownName(link)}' in layer ${linkLayer + 1} points to '${shownName(dir)}', a directory in ${this.describe}, and Linux cannot hard-link directories`,
      'the layer was written on a system that allows such links (or made to confuse its readers); rebuild the image with a symlink or a copy in place of the link');
  }

  private normalize(name: string, entryName: string): string {
    const path = normalizePath(name);
    if (path === null) {
      throw new BerthError('LAYER_UNSAFE', `${this.describe} has an entry that climbs out of the image root: '${shownName(entryName)}'`,
        'berth refuses layers with such names, as Docker does; rebuild the image with a well-behaved tool');
    }
    return path;
  }

  private anomaly(what: string): never {
    if (this.index) throw new Error(`internal: ${what} in ${this.describe} despite the layer index`);
    throw new NeedsLayerIndex(what);
  }
}

/** A hard link entry for the merged stream; a sparse map belongs to the data, not the link. */
function linkEntry(e: TarEntry, path: string, target: string): TarEntry {
  return { ...e, type: 'hardlink', name: path, linkname: target, size: 0, sparse: undefined };
}
