// The layer merge: OCI changesets applied in one pass, top layer first, into one tar stream.
//
// Walking the layers from the top down lets every entry be decided the moment it is read:
// whatever an upper layer already placed, whited out or made opaque wins, so a lower entry is
// either emitted or dropped, and nothing is ever extracted or buffered. `Tree` remembers, per
// path, which layer decided it. Paths are resolved lexically and never through symlinks, so no
// entry can land outside the image root; where a lower layer has a symlink and an upper layer a
// directory of the same name, the directory wins, as Docker's overlay2 storage shows it.
//
// Two things need to know what comes later in the same layer: a duplicate entry (the last one
// wins) and a hard link to a file that an upper layer replaced (the link keeps the old data).
// Both are rare, so the fast path assumes neither and throws NeedsLayerIndex when it meets one;
// the caller then runs again with a LayerIndex of every layer (headers read in a first pass).
import { BerthError } from '../errors.js';
import type { TarEntry, TarSink } from './tar-reader.js';
import { encodeHeader, paddingFor } from './tar-writer.js';

export class NeedsLayerIndex extends Error {}

type Kind = 'dir' | 'other' | 'whiteout';

interface Node {
  kind: Kind;
  /** The layer that decided this path; lower layers cannot change it. */
  layer: number;
  /** A directory that exists only because something below it was emitted. */
  implicit: boolean;
  /** Children from layers below this one are hidden (.wh..wh..opq). */
  opaqueAbove: number;
  children?: Map<string, Node>;
}

const HIDDEN = 0, VISIBLE = 1, ANOMALY = 2;
type Placement = typeof HIDDEN | typeof VISIBLE | typeof ANOMALY;

/**
 * Normalizes an entry name to a relative path ('' is the root). Leading '/' and './' go, as tar,
 * Docker and umoci all do; '..' is resolved lexically and a name that climbs above the root is
 * refused (Docker's "breakout" rule). Returns null for such a name.
 */
export function normalizePath(raw: string): string | null {
  const parts: string[] = [];
  for (const c of raw.split('/')) {
    if (c === '' || c === '.') continue;
    if (c === '..') {
      if (parts.length === 0) return null;
      parts.pop();
    } else parts.push(c);
  }
  return parts.join('/');
}

const WHITEOUT = '.wh.';
const OPAQUE = '.wh..wh..opq';

/** What the first pass learns about one layer: which entries survive, and who links to whom. */
export interface LayerIndex {
  survivors: Set<number>;
  /** target entry ordinal -> hard links (ordinal, path) in this layer that name it */
  linkNeeds: Map<number, { ordinal: number; path: string }[]>;
}

/** Builds a LayerIndex from a layer's headers, in order: the layer applied on its own. */
export class LayerIndexBuilder implements TarSink {
  private ordinal = -1;
  private live = new Map<string, { ordinal: number; dir: boolean }>();
  private lastSeen = new Map<string, number>();
  private linkNeeds = new Map<number, { ordinal: number; path: string }[]>();

  entry(e: TarEntry): boolean {
    this.ordinal++;
    const path = normalizePath(e.name);
    if (path === null || isWhiteout(path)) return false;
    const dir = e.type === 'dir';
    // A non-directory on an ancestor is replaced by the implied directory.
    for (let i = path.indexOf('/'); i !== -1; i = path.indexOf('/', i + 1)) {
      const prior = this.live.get(path.slice(0, i));
      if (prior && !prior.dir) this.live.delete(path.slice(0, i));
    }
    const prior = this.live.get(path);
    if (prior && !(prior.dir && dir)) {
      if (prior.dir) this.dropDescendants(path);
    }
    this.live.set(path, { ordinal: this.ordinal, dir });
    if (e.type === 'hardlink') {
      const target = normalizePath(e.linkname);
      const targetOrdinal = target === null ? undefined : this.lastSeen.get(target);
      if (targetOrdinal !== undefined) {
        const list = this.linkNeeds.get(targetOrdinal) ?? [];
        list.push({ ordinal: this.ordinal, path });
        this.linkNeeds.set(targetOrdinal, list);
      }
    }
    this.lastSeen.set(path, this.ordinal);
    return false;
  }
  data(): void {}
  entryEnd(): void {}

  build(): LayerIndex {
    return { survivors: new Set([...this.live.values()].map((v) => v.ordinal)), linkNeeds: this.linkNeeds };
  }

  private dropDescendants(path: string): void {
    const prefix = path === '' ? '' : `${path}/`;
    for (const key of this.live.keys()) if (key.startsWith(prefix) && key !== path) this.live.delete(key);
  }
}

function isWhiteout(path: string): boolean {
  const base = path.slice(path.lastIndexOf('/') + 1);
  return base.startsWith(WHITEOUT);
}

interface PendingLink {
  path: string;
  layer: number;
  entry: TarEntry;
}

/** The merged tree's memory of decided paths, shared by all layers of one conversion. */
export class Merger {
  private root: Node = { kind: 'dir', layer: Infinity, implicit: true, opaqueAbove: -1 };
  /** Hard links whose target lies in a lower layer: target path -> links waiting for it. */
  private pending = new Map<string, PendingLink[]>();

  constructor(private readonly out: (chunk: Buffer) => void) {}

  /** Reserves a directory no layer may touch (berth's own metadata lives there). */
  reserve(path: string): void {
    const node = this.child(this.root, path, { kind: 'dir', layer: Infinity, implicit: false, opaqueAbove: Infinity });
    node.opaqueAbove = Infinity;
  }

  layer(layerNumber: number, describe: string, index?: LayerIndex): LayerMerger {
    return new LayerMerger(this, layerNumber, describe, index);
  }

  /** Call after the last layer: every hard link must have found its target. */
  finish(): void {
    for (const [target, links] of this.pending) {
      const l = links[0]!;
      throw new BerthError(
        'LAYER_CORRUPT',
        `hard link '${l.path}' in layer ${l.layer + 1} points to '${target}', which no layer below it contains`,
        'the image is broken; rebuild it or report it to its maintainer',
      );
    }
  }

  emit(chunk: Buffer): void {
    this.out(chunk);
  }

  takePending(path: string): PendingLink[] | undefined {
    const links = this.pending.get(path);
    if (links) this.pending.delete(path);
    return links;
  }

  addPending(target: string, link: PendingLink): void {
    const list = this.pending.get(target) ?? [];
    list.push(link);
    this.pending.set(target, list);
  }

  /**
   * Decides whether an entry of `layer` at `path` is visible and records it. With dryRun the
   * tree is left as it was.
   */
  place(path: string, kind: Kind, layer: number, dryRun = false): Placement {
    if (path === '') {
      if (!this.root.implicit) return this.root.layer === layer ? ANOMALY : HIDDEN;
      if (!dryRun) Object.assign(this.root, { implicit: false, layer });
      return VISIBLE;
    }
    const parts = path.split('/');
    let node = this.root;
    for (let i = 0; i < parts.length; i++) {
      if (node.opaqueAbove > layer) return HIDDEN;
      const last = i === parts.length - 1;
      const child = node.children?.get(parts[i]!);
      if (!child) {
        if (dryRun) return VISIBLE;
        node = this.child(node, parts[i]!, last
          ? { kind, layer, implicit: false, opaqueAbove: -1 }
          : { kind: 'dir', layer, implicit: true, opaqueAbove: -1 });
        continue;
      }
      if (child.layer > layer) {
        // Decided by an upper layer.
        if (child.kind !== 'dir') return HIDDEN;
        if (!last) {
          node = child;
          continue;
        }
        if (kind !== 'dir' || !child.implicit || child.opaqueAbove > layer) return HIDDEN;
        if (!dryRun) child.implicit = false; // a directory's own entry gives its metadata
        return VISIBLE;
      }
      // Decided earlier in this same layer.
      if (child.kind === 'whiteout') {
        // ".wh.x" then "x" in one layer: x is new, and nothing of x below shows through.
        if (!dryRun) Object.assign(child, last ? { kind, implicit: false } : { kind: 'dir', implicit: true }, { opaqueAbove: layer });
        if (last) return VISIBLE;
        node = child;
        continue;
      }
      if (child.kind !== 'dir') return ANOMALY;
      if (!last) {
        node = child;
        continue;
      }
      if (kind === 'dir' && child.implicit) {
        if (!dryRun) child.implicit = false;
        return VISIBLE;
      }
      return ANOMALY;
    }
    return VISIBLE;
  }

  /** Records ".wh.NAME" (path = dir/NAME) or an opaque marker (path = dir, opaque). */
  whiteout(path: string, layer: number, opaque: boolean): void {
    const parts = path === '' ? [] : path.split('/');
    let node = this.root;
    for (let i = 0; i < parts.length; i++) {
      if (node.opaqueAbove > layer) return;
      const last = i === parts.length - 1;
      let child = node.children?.get(parts[i]!);
      if (!child) {
        child = this.child(node, parts[i]!, last && !opaque
          ? { kind: 'whiteout', layer, implicit: false, opaqueAbove: -1 }
          : { kind: 'dir', layer, implicit: true, opaqueAbove: -1 });
      } else if (child.layer > layer && child.kind !== 'dir') {
        return; // an upper layer replaced it already
      } else if (child.kind !== 'dir' && !last) {
        return;
      }
      node = child;
    }
    // A whiteout or opaque marker hides lower layers only (opaqueAbove > entry layer), so this
    // layer's own entries stay visible.
    if (opaque || node.kind === 'dir') node.opaqueAbove = Math.max(node.opaqueAbove, layer);
  }

  private child(parent: Node, name: string, init: Node): Node {
    parent.children ??= new Map();
    let node = parent.children.get(name);
    if (!node) {
      node = { ...init };
      parent.children.set(name, node);
    }
    return node;
  }
}

/** The TarSink for one layer: decides each entry against the Merger and emits the visible ones. */
export class LayerMerger implements TarSink {
  private ordinal = -1;
  /** This layer's entries so far: path -> where its data went (null: nowhere). */
  private local = new Map<string, string | null>();
  private bodySize = 0;
  private emitting = false;
  private afterBody: (() => void) | undefined;

  constructor(
    private readonly merger: Merger,
    private readonly layerNumber: number,
    private readonly describe: string,
    private readonly index: LayerIndex | undefined,
  ) {}

  entry(e: TarEntry): boolean {
    this.ordinal++;
    this.afterBody = undefined;
    const path = this.normalize(e.name, e.name);
    const base = path.slice(path.lastIndexOf('/') + 1);
    if (base.startsWith(WHITEOUT)) {
      const dir = path.slice(0, Math.max(0, path.lastIndexOf('/')));
      if (base === OPAQUE) this.merger.whiteout(dir, this.layerNumber, true);
      else if (!base.startsWith(`${WHITEOUT}${WHITEOUT}`)) {
        this.merger.whiteout(dir === '' ? base.slice(4) : `${dir}/${base.slice(4)}`, this.layerNumber, false);
      } // other ".wh..wh." names are aufs bookkeeping, not content
      return false;
    }
    if (e.type === 'hardlink') return this.hardlink(e, path);

    const survives = this.index ? this.index.survivors.has(this.ordinal) : true;
    const kind: Kind = e.type === 'dir' ? 'dir' : 'other';
    const placement = survives ? this.merger.place(path, kind, this.layerNumber) : HIDDEN;
    if (placement === ANOMALY) return this.anomaly(`'${path}' appears twice or under a non-directory`);
    const visible = placement === VISIBLE;

    // Hard links from upper layers waiting for this path (only the surviving version counts).
    const waiting = survives ? this.merger.takePending(path) : undefined;
    if (waiting && e.type === 'dir') {
      throw new BerthError('LAYER_CORRUPT', `hard link '${waiting[0]!.path}' points to directory '${path}' in ${this.describe}`,
        'the image is broken; rebuild it or report it to its maintainer');
    }
    const sameLayerLinks = e.type === 'dir' ? undefined : this.index?.linkNeeds.get(this.ordinal)
      ?.filter((l) => this.index!.survivors.has(l.ordinal) && this.merger.place(l.path, 'other', this.layerNumber, true) === VISIBLE)
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

  private hardlink(e: TarEntry, path: string): boolean {
    const target = this.normalize(e.linkname, e.name);
    const survives = this.index ? this.index.survivors.has(this.ordinal) : true;
    const placement = survives ? this.merger.place(path, 'other', this.layerNumber) : HIDDEN;
    if (placement === ANOMALY) return this.anomaly(`'${path}' appears twice or under a non-directory`);
    const earlier = this.local.get(target); // undefined: not in this layer; null: not emitted
    if (placement === HIDDEN) {
      this.local.set(path, null);
      return false;
    }
    if (earlier === undefined) {
      // The target lies in a lower layer; its entry there decides where the data goes.
      this.merger.addPending(target, { path, layer: this.layerNumber, entry: e });
      this.local.set(path, path);
      return false;
    }
    if (earlier === null) {
      if (!this.index) return this.anomaly(`hard link '${path}' names '${target}', which an upper layer replaced`);
      throw new BerthError('LAYER_CORRUPT', `hard link '${path}' in ${this.describe} points to '${target}', which is not a regular file`,
        'the image is broken; rebuild it or report it to its maintainer');
    }
    this.local.set(path, earlier);
    if (earlier !== path) this.merger.emit(encodeHeader(linkEntry(e, path, earlier)));
    return false;
  }

  private normalize(name: string, entryName: string): string {
    const path = normalizePath(name);
    if (path === null) {
      throw new BerthError('LAYER_UNSAFE', `${this.describe} has an entry that climbs out of the image root: '${entryName}'`,
        'berth refuses layers with such names, as Docker does; rebuild the image with a well-behaved tool');
    }
    return path;
  }

  private anomaly(what: string): never {
    if (this.index) throw new Error(`internal: ${what} in ${this.describe} despite the layer index`);
    throw new NeedsLayerIndex(what);
  }
}

function linkEntry(e: TarEntry, path: string, target: string): TarEntry {
  return { ...e, type: 'hardlink', name: path, linkname: target, size: 0 };
}
