// The merged tree's memory of decided paths, shared by all layers of one conversion (merge.ts
// walks the layers top first). One rule decides every path, Docker's overlay2 storage's
// (overlayfs, Documentation/filesystems/overlayfs.rst): looking down from the top layer, the
// first layer with an entry at a path decides what it is. A non-directory or a whiteout there
// ends the lookup: nothing of that path, or under it, shows from the layers below. A directory
// merges with the directories below it down to the first layer where the path is not a
// directory (a whiteout, a symlink, a file) or where it is opaque. So an upper directory hides
// a lower symlink, and with it everything the symlink had replaced: deleted content never comes
// back. Paths are resolved lexically, never through symlinks, so nothing lands outside the root.
import { BerthError } from '../errors.js';
import { shownName } from './tar-fields.js';
import type { TarEntry } from './tar-reader.js';

export type Kind = 'dir' | 'other' | 'whiteout';

interface Node {
  kind: Kind;
  /** The layer that decided this path; lower layers cannot change it. */
  layer: number;
  /** A directory that exists only because something at or below it was recorded. */
  implicit: boolean;
  /** Children from layers below this one are hidden (opaque, deleted or replaced there). */
  opaqueAbove: number;
  /** This path's own entries from layers below this one are hidden (deleted or replaced there). */
  hiddenBelow: number;
  /** An entry at this path was emitted (tar2sqfs then has it, and its parents). */
  emitted: boolean;
  children?: Map<string, Node>;
}

export const HIDDEN = 0, VISIBLE = 1, ANOMALY = 2;
export type Placement = typeof HIDDEN | typeof VISIBLE | typeof ANOMALY;

export interface PendingLink {
  path: string;
  layer: number;
  entry: TarEntry;
  /** The layer that removed the target from under the link, if one did. */
  deadAt?: number;
}

function fresh(kind: Kind, layer: number, implicit: boolean): Node {
  return { kind, layer, implicit, opaqueAbove: -1, hiddenBelow: -1, emitted: false };
}

export class Tree {
  private root: Node = { ...fresh('dir', Infinity, true), emitted: true };
  /** Directories made only by whiteouts and opaque markers: overlay2 shows them, even empty. */
  private markerDirs: { path: string; node: Node }[] = [];
  /** Hard links whose target lies in a lower layer: target path -> links waiting for it. */
  private pending = new Map<string, PendingLink[]>();
  /** Every proper ancestor of a pending target, so most removals need not scan `pending`. */
  private pendingDirs = new Map<string, number>();

  reserve(path: string): void {
    const node = this.child(this.root, path, { ...fresh('dir', Infinity, false), opaqueAbove: Infinity, hiddenBelow: Infinity, emitted: true });
    node.opaqueAbove = node.hiddenBelow = Infinity;
  }

  /**
   * Decides whether an entry of `layer` at `path` is visible and records it. With dryRun the
   * tree is left as it was. ANOMALY: something this layer already said conflicts (a duplicate,
   * or a path under a non-directory of the same layer), which only the indexed pass can settle.
   */
  place(path: string, kind: Kind, layer: number, dryRun = false): Placement {
    if (path === '') return this.placeRoot(kind, layer, dryRun);
    const parts = path.split('/');
    let node = this.root;
    for (let i = 0; i < parts.length; i++) {
      if (node.opaqueAbove > layer) return HIDDEN;
      const last = i === parts.length - 1;
      const child = node.children?.get(parts[i]!);
      if (!child) {
        if (dryRun) return VISIBLE;
        node = this.child(node, parts[i]!, last ? fresh(kind, layer, false) : fresh('dir', layer, true));
        node.emitted = true; // from here on the entry is emitted, and tar2sqfs makes these parents
        continue;
      }
      if (child.layer > layer) {
        if (!last && child.kind === 'dir') {
          node = child;
          continue;
        }
        return this.underUpper(child, kind, path, layer, dryRun);
      }
      const same = this.sameLayer(child, kind, last, layer, dryRun);
      if (same !== undefined) return same;
      node = child;
    }
    return VISIBLE;
  }

  private placeRoot(kind: Kind, layer: number, dryRun: boolean): Placement {
    if (kind !== 'dir') return HIDDEN; // refused before (merge.ts): only a directory can be the root
    if (!this.root.implicit) return this.root.layer === layer ? ANOMALY : HIDDEN;
    if (!dryRun) Object.assign(this.root, { implicit: false, layer });
    return VISIBLE;
  }

  /** The last component, decided by an upper layer. */
  private underUpper(child: Node, kind: Kind, path: string, layer: number, dryRun: boolean): Placement {
    if (child.kind !== 'dir') return HIDDEN;
    if (kind !== 'dir') {
      // A lower non-directory under an upper directory: the merge stops here, so nothing this
      // layer's entry replaced below it shows through (overlayfs: a non-directory ends a lookup).
      if (!dryRun) this.hideBelow(child, path, layer);
      return HIDDEN;
    }
    if (!child.implicit || child.hiddenBelow > layer) return HIDDEN;
    if (!dryRun) Object.assign(child, { implicit: false, emitted: true }); // a directory's own entry gives its metadata
    return VISIBLE;
  }

  /** A component decided earlier in this same layer; undefined: walk on into it. */
  private sameLayer(child: Node, kind: Kind, last: boolean, layer: number, dryRun: boolean): Placement | undefined {
    if (child.kind === 'whiteout') {
      // ".wh.x" then "x" in one layer: x is new, and nothing of x below shows through.
      if (!dryRun) Object.assign(child, last ? { kind, implicit: false } : { kind: 'dir', implicit: true }, { opaqueAbove: layer, hiddenBelow: layer, emitted: true });
      return last ? VISIBLE : undefined;
    }
    if (child.kind !== 'dir') return ANOMALY;
    if (!last) return undefined;
    if (kind === 'dir' && child.implicit) {
      if (!dryRun) Object.assign(child, { implicit: false, emitted: true });
      return VISIBLE;
    }
    return ANOMALY;
  }

  private hideBelow(node: Node, path: string, layer: number): void {
    node.opaqueAbove = Math.max(node.opaqueAbove, layer);
    node.hiddenBelow = Math.max(node.hiddenBelow, layer);
    this.removeTargets(path, layer, true); // a link to the entry itself takes it (merge.ts)
  }

  /**
   * Records ".wh.NAME" (path = dir/NAME) or an opaque marker (path = dir, opaque): what lower
   * layers have there is hidden; this layer's own entries stay visible.
   */
  whiteout(path: string, layer: number, opaque: boolean): void {
    this.removeTargets(path, layer, opaque);
    const parts = path === '' ? [] : path.split('/');
    let node = this.root;
    for (let i = 0; i < parts.length; i++) {
      if (node.opaqueAbove > layer) return;
      const last = i === parts.length - 1;
      let child = node.children?.get(parts[i]!);
      if (!child) {
        child = this.child(node, parts[i]!, fresh(last && !opaque ? 'whiteout' : 'dir', layer, true));
        if (child.kind === 'dir') this.markerDirs.push({ path: parts.slice(0, i + 1).join('/'), node: child });
      } else if (child.kind !== 'dir' && (child.layer > layer || !last)) {
        return; // an upper layer, or this one, put a non-directory here
      }
      node = child;
    }
    node.opaqueAbove = Math.max(node.opaqueAbove, layer);
    if (!opaque) node.hiddenBelow = Math.max(node.hiddenBelow, layer);
  }

  /** A non-directory at `path` in `layer`: what lower layers had under it is gone. */
  replaced(path: string, layer: number): void {
    this.removeTargets(path, layer, true);
  }

  /**
   * After the last layer: the directories that only whiteouts or opaque markers made and that
   * nothing else made appear (as overlay2 shows them: there, and empty), parents first.
   */
  markerOnlyDirs(): string[] {
    const out: string[] = [];
    const shown = new Map<Node, boolean>();
    for (const { path, node } of this.markerDirs) {
      if (node.kind === 'dir' && node.implicit && !materialized(node, shown)) {
        out.push(path);
        node.emitted = true;
        shown.set(node, true);
      }
    }
    return out;
  }

  addPending(target: string, link: PendingLink): void {
    const list = this.pending.get(target) ?? [];
    list.push(link);
    this.pending.set(target, list);
    for (let i = target.indexOf('/'); i !== -1; i = target.indexOf('/', i + 1)) {
      const dir = target.slice(0, i);
      this.pendingDirs.set(dir, (this.pendingDirs.get(dir) ?? 0) + 1);
    }
  }

  takePending(target: string): PendingLink[] | undefined {
    const links = this.pending.get(target);
    if (!links) return undefined;
    this.pending.delete(target);
    for (let i = target.indexOf('/'); i !== -1; i = target.indexOf('/', i + 1)) {
      const dir = target.slice(0, i);
      const n = this.pendingDirs.get(dir)! - links.length;
      if (n > 0) this.pendingDirs.set(dir, n);
      else this.pendingDirs.delete(dir);
    }
    return links;
  }

  /**
   * `layer` removed `path` (or, with under, only what is below it) from the view of the layers
   * above: a hard link of an upper layer that waits for a file there has lost its target,
   * unless this same layer makes that file again.
   */
  private removeTargets(path: string, layer: number, under: boolean): void {
    if (this.pending.size === 0) return;
    if (!(path === '' || this.pendingDirs.has(path) || (!under && this.pending.has(path)))) return;
    const prefix = path === '' ? '' : `${path}/`;
    for (const [target, links] of this.pending) {
      if (!(target.startsWith(prefix) || (!under && target === path))) continue;
      for (const l of links) if (l.layer > layer && l.deadAt === undefined) l.deadAt = layer;
    }
  }

  /** Before a new layer and after the last: links whose target is gone, or never came. */
  checkPending(nextLayer: number | undefined): void {
    for (const [target, links] of this.pending) {
      for (const l of links) {
        if (l.deadAt === undefined && nextLayer !== undefined) continue;
        throw new BerthError('LAYER_CORRUPT',
          `hard link '${shownName(l.path)}' in layer ${l.layer + 1} points to '${shownName(target)}', which ${l.deadAt === undefined ? 'no layer below it contains' : `layer ${l.deadAt + 1} removed`}`,
          'a hard link can only name a file of the layers below it; the image is broken: rebuild it or report it to its maintainer');
      }
    }
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

function materialized(node: Node, memo: Map<Node, boolean>): boolean {
  const known = memo.get(node);
  if (known !== undefined) return known;
  let yes = node.emitted;
  for (const c of node.children?.values() ?? []) if (!yes && c.kind !== 'whiteout') yes = materialized(c, memo);
  memo.set(node, yes);
  return yes;
}
