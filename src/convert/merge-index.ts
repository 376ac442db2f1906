// The first pass of an indexed merge (merge.ts): one layer's headers applied on their own, to
// learn which of its entries survive the rest of the layer (the last of duplicates wins) and
// which hard links name which entries.
import type { TarEntry, TarSink } from './tar-reader.js';

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

export const WHITEOUT = '.wh.';
export const OPAQUE = '.wh..wh..opq';

export function isWhiteout(path: string): boolean {
  return path.slice(path.lastIndexOf('/') + 1).startsWith(WHITEOUT);
}

/** What the first pass learns about one layer: which entries survive, and who links to whom. */
export interface LayerIndex {
  survivors: Set<number>;
  /** target entry ordinal -> hard links (ordinal, path) in this layer that name it */
  linkNeeds: Map<number, { ordinal: number; path: string }[]>;
  /**
   * Paths where a non-directory was replaced by a directory later in the layer. The
   * non-directory still deleted what lower layers had there (as applying the layer in order
   * would), so the merge treats it as a whiteout.
   */
  replacedByDir: Set<string>;
}

/** Builds a LayerIndex from a layer's headers, in order: the layer applied on its own. */
export class LayerIndexBuilder implements TarSink {
  private ordinal = -1;
  private live = new Map<string, { ordinal: number; dir: boolean }>();
  private lastSeen = new Map<string, number>();
  private linkNeeds = new Map<number, { ordinal: number; path: string }[]>();
  private replacedByDir = new Set<string>();
  /** Every directory an entry so far was under: a non-directory there replaces what is below. */
  private parents = new Set<string>();

  entry(e: TarEntry): boolean {
    this.ordinal++;
    const path = normalizePath(e.name);
    if (path === null || isWhiteout(path)) return false;
    const dir = e.type === 'dir';
    // A non-directory on an ancestor is replaced by the implied directory.
    for (let i = path.indexOf('/'); i !== -1; i = path.indexOf('/', i + 1)) {
      const ancestor = path.slice(0, i);
      const prior = this.live.get(ancestor);
      if (prior && !prior.dir) {
        this.live.delete(ancestor);
        this.replacedByDir.add(ancestor);
      }
    }
    const prior = this.live.get(path);
    if (!dir && (prior?.dir || this.parents.has(path))) this.dropDescendants(path);
    for (let i = path.indexOf('/'); i !== -1; i = path.indexOf('/', i + 1)) this.parents.add(path.slice(0, i));
    if (prior && !prior.dir && dir) this.replacedByDir.add(path);
    this.live.set(path, { ordinal: this.ordinal, dir });
    if (e.type === 'hardlink') this.noteLink(e, path);
    this.lastSeen.set(path, this.ordinal);
    return false;
  }
  data(): void {}
  entryEnd(): void {}

  build(): LayerIndex {
    return { survivors: new Set([...this.live.values()].map((v) => v.ordinal)), linkNeeds: this.linkNeeds, replacedByDir: this.directoriesAtEnd() };
  }

  /** Of the paths once replaced by a directory, those that are directories when the layer ends. */
  private directoriesAtEnd(): Set<string> {
    if (this.replacedByDir.size === 0) return this.replacedByDir;
    const dirs = new Set<string>();
    for (const [path, v] of this.live) {
      if (v.dir) dirs.add(path);
      for (let i = path.indexOf('/'); i !== -1; i = path.indexOf('/', i + 1)) dirs.add(path.slice(0, i));
    }
    return new Set([...this.replacedByDir].filter((p) => dirs.has(p)));
  }

  private noteLink(e: TarEntry, path: string): void {
    const target = normalizePath(e.linkname);
    const targetOrdinal = target === null ? undefined : this.lastSeen.get(target);
    if (targetOrdinal === undefined) return;
    const list = this.linkNeeds.get(targetOrdinal) ?? [];
    list.push({ ordinal: this.ordinal, path });
    this.linkNeeds.set(targetOrdinal, list);
  }

  private dropDescendants(path: string): void {
    const prefix = path === '' ? '' : `${path}/`;
    for (const key of this.live.keys()) if (key.startsWith(prefix) && key !== path) this.live.delete(key);
  }
}
