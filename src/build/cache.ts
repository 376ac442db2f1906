// berth build's cache, in the user's own berth cache (cache.dir, made and checked by
// src/image/caches.ts: 0700, the user's), under build/:
//   layers/HEX.tar          each step's change (and each base image's tree), by digest
//   steps/KEY.json          a step's result: its layers, config and history, and its image
//   steps/KEY.sqsh          the image after a step that changed files (or a stage's end)
//   tmp/                    overlays and layouts of steps in flight
//   mounts/ID               RUN --mount=type=cache directories (not trimmed: berth prune removes them)
// A step's KEY is the sha256 of its parent's key, the instruction as substituted, the build
// arguments it sees and the digest of the files it copies, so an edit reruns from the changed
// step on. It is bounded (build.cache-gb): after each build the steps used least recently go,
// with the layers no remaining step names, until it fits. `berth prune` removes it all
// (pruneBuildCache).
import { createHash } from 'node:crypto';
import { lstatSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, utimesSync } from 'node:fs';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { onInterrupt } from '../convert/interrupt.js';
import { writeFileAtomic } from '../util/atomic-file.js';
import type { Layer } from './layer.js';

export interface StepResult {
  /** Layer digests, bottom first (the files are layers/HEX.tar). */
  layers: string[];
  /** The image file of this step (steps/KEY.sqsh), when it made one. */
  image: boolean;
}

export function stepKey(parts: { parent: string; instruction: string; args: Record<string, string>; files?: string }): string {
  const args = Object.fromEntries(Object.entries(parts.args).sort(([a], [b]) => (a < b ? -1 : 1)));
  return createHash('sha256').update(JSON.stringify({ v: 1, ...parts, args })).digest('hex');
}

export class BuildCache {
  readonly root: string;

  /** `userCache`: the user's berth cache, made and checked (Caches.writable()). */
  constructor(userCache: string) {
    this.root = path.join(userCache, 'build');
    for (const d of ['', 'layers', 'steps', 'tmp', 'mounts']) mkdirSync(path.join(this.root, d), { recursive: true, mode: 0o700 });
  }

  /** Where RUN --mount=type=cache directories live (mounts.ts's cacheDir). */
  mounts(): string {
    return path.join(this.root, 'mounts');
  }

  layerFile(digest: string): string {
    return path.join(this.root, 'layers', `${digest.slice(7)}.tar`);
  }

  layers(digests: string[]): Layer[] {
    return digests.map((digest) => ({ digest, file: this.layerFile(digest) }));
  }

  imageFile(key: string): string {
    return path.join(this.root, 'steps', `${key}.sqsh`);
  }

  /** A step's result, if it is whole: its record, every layer it names and its image. */
  get(key: string): StepResult | undefined {
    const record = path.join(this.root, 'steps', `${key}.json`);
    let r: StepResult;
    try {
      r = JSON.parse(readFileSync(record, 'utf8')) as StepResult;
    } catch {
      return undefined;
    }
    if (!r.layers.every((d) => statSync(this.layerFile(d), { throwIfNoEntry: false })?.isFile())) return undefined;
    if (r.image && !statSync(this.imageFile(key), { throwIfNoEntry: false })?.isFile()) return undefined;
    this.used.add(key);
    const now = new Date();
    try {
      // Its mtime is when it was last used: trim() keeps the recent. Its layers' too: another
      // build's trim leaves a layer alone for an hour after it was last used, so one in use
      // here is not removed under this build even if that trim drops its record.
      for (const f of [record, ...r.layers.map((d) => this.layerFile(d))]) utimesSync(f, now, now);
    } catch {
      // only the order of trimming suffers
    }
    return r;
  }

  /** Records a step (after its layer and image are in place: the record is what makes it a hit). */
  put(key: string, result: StepResult): void {
    this.used.add(key);
    writeFileAtomic(path.join(this.root, 'steps', `${key}.json`), `${JSON.stringify(result)}\n`);
  }

  /** The steps this build used or made: trim() never removes them. */
  private readonly used = new Set<string>();

  /**
   * Bounds the cache to `maxBytes`: the step records used least recently go first (with their
   * images), then every layer that no remaining record names. The steps of this build stay,
   * even when they alone are over the bound. Returns the bytes freed.
   */
  trim(maxBytes: number): number {
    const steps = path.join(this.root, 'steps');
    const records = readdirSync(steps).filter((n) => n.endsWith('.json')).map((n) => {
      const key = n.slice(0, -5);
      const st = statSync(path.join(steps, n), { throwIfNoEntry: false });
      let layers: string[] = [];
      try {
        layers = (JSON.parse(readFileSync(path.join(steps, n), 'utf8')) as StepResult).layers;
      } catch {
        // a record that cannot be read names no layer
      }
      return { key, used: st?.mtimeMs ?? 0, layers };
    }).sort((a, b) => a.used - b.used);
    const held = () => sizeOf(steps) + sizeOf(path.join(this.root, 'layers')); // tmp/ is builds in flight
    const before = held();
    let total = before;
    const dropped = new Set<string>();
    for (const r of records) {
      if (total <= maxBytes) break;
      if (this.used.has(r.key)) continue;
      total -= sizeOf(path.join(steps, `${r.key}.json`)) + sizeOf(this.imageFile(r.key));
      rmSync(path.join(steps, `${r.key}.json`), { force: true });
      rmSync(this.imageFile(r.key), { force: true });
      dropped.add(r.key);
    }
    if (dropped.size === 0) return 0;
    // A layer no record names goes, unless it is new: another build of the user's may have just
    // written it and not yet recorded its step.
    const named = new Set(records.filter((r) => !dropped.has(r.key)).flatMap((r) => r.layers.map((d) => d.slice(7))));
    const settled = Date.now() - 3600_000;
    for (const n of readdirSync(path.join(this.root, 'layers'))) {
      const file = path.join(this.root, 'layers', n);
      if (n.endsWith('.tar') && !named.has(n.slice(0, -4)) && (statSync(file, { throwIfNoEntry: false })?.mtimeMs ?? 0) < settled) rmSync(file, { force: true });
    }
    return before - held();
  }

  private readonly inFlight = new Map<string, () => void>();

  /** A directory for a step in flight: removed by release(), or by a signal that ends berth first. */
  work(): string {
    // Registered before the directory exists: a signal between the two must not leave it.
    let dir: string | undefined;
    const off = onInterrupt(() => { if (dir) removeWork(dir); });
    dir = mkdtempSync(path.join(this.root, 'tmp', 'step-'));
    this.inFlight.set(dir, off);
    return dir;
  }

  release(dir: string): void {
    this.inFlight.get(dir)?.();
    this.inFlight.delete(dir);
    removeWork(dir);
  }
}

/** Removes a work directory, overlayfs's work/ included (which the kernel leaves mode 000). */
export function removeWork(dir: string): void {
  spawnSync('chmod', ['-R', 'u+rwx', dir], { stdio: 'ignore' });
  rmSync(dir, { recursive: true, force: true });
}

/** Bytes under `p`; what cannot be read (gone meanwhile, or another build's mode-000 work/) counts 0. */
function sizeOf(p: string): number {
  const st = lstatSync(p, { throwIfNoEntry: false });
  if (!st) return 0;
  if (!st.isDirectory()) return st.size;
  let names: string[];
  try {
    names = readdirSync(p);
  } catch {
    return 0;
  }
  return names.reduce((n, e) => n + sizeOf(path.join(p, e)), 0);
}

/** Removes the whole build cache of `userCache`; returns the bytes freed. */
export function pruneBuildCache(userCache: string): number {
  const root = path.join(userCache, 'build');
  if (!lstatSync(root, { throwIfNoEntry: false })?.isDirectory()) return 0;
  spawnSync('chmod', ['-R', 'u+rwx', root], { stdio: 'ignore' }); // overlayfs's work/ dirs of a step cut short are mode 000
  const size = sizeOf(root);
  removeWork(root);
  return size;
}
