// berth build: a Dockerfile's stages, step by step, into a berth image. Each instruction has a
// cache key (its parent's, the instruction as substituted, the build arguments it sees, the
// digest of what it copies: src/build/cache.ts). Metadata instructions (ENV, CMD, LABEL...) only
// change the config that is carried along; a step that changes files (RUN, COPY, ADD) writes one
// layer and the image after it (layer.ts), and the stage's end writes an image only when the
// config changed after its last such step. The image of the FROM line is any berth runs.
import { availableParallelism } from 'node:os';
import { createHash } from 'node:crypto';
import { lstatSync, mkdirSync, readdirSync, readFileSync, readlinkSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { config } from '../config/load.js';
import { baseTar } from '../convert/commit.js';
import type { ConvertEvents, ConvertOptions } from '../convert/convert.js';
import { DEFAULT_COMPRESSION } from '../convert/tar2sqfs.js';
import { BerthError, messageOf, osError } from '../errors.js';
import { sha256File } from '../util/hash.js';
import { ImageFiles } from '../image/files.js';
import { hostPlatform } from '../image/platform.js';
import { imageSource, vouchedFor } from '../runtime/acquire.js';
import { openImage } from '../runtime/image.js';
import { parseUser } from '../plan/prepare.js';
import { METADATA_DIR, type ImageMetadata } from '../squashfs/metadata.js';
import { BuildCache, stepKey } from './cache.js';
import { BuildContext, contentDigest, normalizeSource, selectFiles } from './context.js';
import { applyMetadata, commandArgv } from './config.js';
import { parseDockerfile, SCRIPT_DIR, type Heredoc, type Stage, type Step } from './dockerfile.js';
import { entryOf, layerName, layerOwners, LayerWriter, squashLayers, type Layer, type OciConfig } from './layer.js';
import { prepareOverlay, runStep } from './run-step.js';
import { cacheDir, contextSource, copyListed, lockCache, parseMount, unpackFrom, type MountSpec, type StepBind } from './mounts.js';
import { chownOf, writeCopyLayer, type CopySource } from './copy.js';
import { download, parseChecksum, urlFileName } from './download.js';
import { envLookup, expandText, expandWord, type Lookup } from './words.js';

export interface BuildOptions {
  context: string;
  /** The Dockerfile (default CONTEXT/Dockerfile). */
  dockerfile: string;
  buildArgs: Record<string, string>;
  target?: string;
  /** The user's berth cache (made and checked when called). */
  userCache: () => string;
  /** --no-cache: every RUN, COPY and ADD runs again (and is cached anew). */
  noCache?: boolean;
}

export interface BuildEvents {
  step(n: number, total: number, text: string, cached: boolean): void;
  /** A RUN step's output. */
  output(chunk: Buffer): void;
  warn(line: string): void;
}

export interface BuildResult {
  /** The image in the build cache. */
  image: string;
  metadata: ImageMetadata;
  layers: Layer[];
  config: OciConfig;
  steps: { n: number; instruction: string; cached: boolean }[];
}

/** A stage as far as it is built. */
interface Point {
  key: string;
  layers: string[];
  config: OciConfig;
  shell: string[];
  /** The file system so far as an image file (its config may be older than `config`). */
  image?: string;
  /** Whether `image` also has `config` (the last step wrote it). */
  current: boolean;
  /** This stage set CMD (an ENTRYPOINT after it keeps it: Docker's rule). */
  cmdSet?: boolean;
}

const DEFAULT_SHELL = ['/bin/sh', '-c'];

const isUrl = (src: string) => /^https?:\/\//.test(src);

const quietConvert = (warn: (l: string) => void): ConvertEvents => ({ resolved() {}, layerStart() {}, bytes() {}, finishing() {}, warn });

export class Builder {
  private readonly cache: BuildCache;
  private readonly ctx: BuildContext;
  private readonly file: string;
  private readonly built = new Map<number, Point>();
  private stages: Stage[] = [];
  private readonly usedArgs = new Set<string>();
  private readonly steps: BuildResult['steps'] = [];
  private n = 0;
  private total = 0;
  private readonly owner = { uid: process.getuid!(), gid: process.getgid!() };

  constructor(private readonly opts: BuildOptions, private readonly events: BuildEvents) {
    // The context is checked before anything is made in the cache.
    this.ctx = new BuildContext(path.resolve(opts.context));
    this.cache = new BuildCache(opts.userCache());
    // Named in messages as the user would: relative to here when it is under here.
    const rel = path.relative(process.cwd(), opts.dockerfile);
    this.file = rel && !rel.startsWith('..') ? rel : opts.dockerfile;
  }

  async build(): Promise<BuildResult> {
    let text: string;
    try {
      text = readFileSync(this.opts.dockerfile, 'utf8');
    } catch (e: unknown) {
      throw osError(e, `the Dockerfile ${this.opts.dockerfile}`) ?? e;
    }
    const df = parseDockerfile(text, this.file);
    this.stages = df.stages;
    for (const line of df.ignored) this.events.warn(`berth: warning: ${line}`);
    const global = new Map<string, string>();
    for (const a of df.globalArgs) {
      const v = this.opts.buildArgs[a.name] ?? (a.value !== undefined ? expandWord(a.value, (k) => global.get(k)) : undefined);
      if (a.name in this.opts.buildArgs) this.usedArgs.add(a.name);
      if (v !== undefined) global.set(a.name, v);
    }
    const targetIndex = this.opts.target === undefined ? df.stages.length - 1 : df.stages.findIndex((s) => s.name === this.opts.target!.toLowerCase());
    if (targetIndex < 0) {
      throw new BerthError('USAGE', `--target ${this.opts.target}: ${this.file} has no stage of that name`, `its stages: ${df.stages.map((s, i) => s.name ?? String(i)).join(', ')}`);
    }
    const froms = df.stages.map((s) => {
      const from = expandWord(s.from, (k) => global.get(k));
      if (!from) throw new BerthError('USAGE', `${this.where(s)}: names no image once substituted`, 'give the ARG it uses a default before the first FROM, or pass --build-arg');
      return from;
    });
    const needed = this.neededStages(df.stages, froms, targetIndex);
    this.total = needed.reduce((n, i) => n + 1 + df.stages[i]!.steps.length, 0);
    for (const i of needed) this.built.set(i, await this.buildStage(df.stages, i, froms[i]!, global));
    for (const name of Object.keys(this.opts.buildArgs)) {
      if (!this.usedArgs.has(name)) this.events.warn(`berth: warning: --build-arg ${name} was not used: no ARG ${name} in the stages built`);
    }
    const result = await this.finish(this.built.get(targetIndex)!);
    const bound = config().values['build.cache-gb'];
    try {
      if (bound > 0) this.cache.trim(bound * 1e9);
    } catch (e: unknown) {
      // The image is made: a cache that could not be trimmed is a warning, not a failed build.
      this.events.warn(`berth: warning: the build cache could not be trimmed to build.cache-gb (${messageOf(e)}); berth prune empties it`);
    }
    return result;
  }

  /** The stages the target needs (FROM a stage, COPY --from a stage, RUN --mount=...,from=a stage), in Dockerfile order. */
  private neededStages(stages: Stage[], froms: string[], target: number): number[] {
    const need = new Set<number>();
    const visit = (i: number) => {
      if (need.has(i)) return;
      need.add(i);
      const base = this.stageIndex(stages, froms[i]!, i);
      if (base !== undefined) visit(base);
      for (const s of stages[i]!.steps) {
        const froms = s.kind === 'COPY' && s.flags.from !== undefined ? [s.flags.from] : s.kind === 'RUN' ? s.mounts.flatMap((m) => /(?:^|,)from=([^,]+)/.exec(m)?.[1] ?? []) : [];
        for (const name of froms) {
          const from = this.stageIndex(stages, name, i);
          if (from !== undefined) visit(from);
        }
      }
    };
    visit(target);
    return [...need].sort((a, b) => a - b);
  }

  /** The earlier stage `name` (a name or a number) names, if it names one. */
  private stageIndex(stages: Stage[], name: string, before: number): number | undefined {
    const lower = name.toLowerCase();
    const i = /^\d+$/.test(name) ? Number(name) : stages.findIndex((s) => s.name === lower);
    return i >= 0 && i < before ? i : undefined;
  }

  private announce(text: string, cached: boolean): void {
    this.n++;
    this.steps.push({ n: this.n, instruction: text, cached });
    this.events.step(this.n, this.total, text, cached);
  }

  private async buildStage(stages: Stage[], index: number, from: string, global: Map<string, string>): Promise<Point> {
    const stage = stages[index]!;
    const baseStage = this.stageIndex(stages, from, index);
    let point: Point;
    if (baseStage !== undefined) {
      // A stage FROM a stage starts Docker's CMD rule again (cmdSet), so it keys on from there.
      const base = this.built.get(baseStage)!;
      point = { ...base, key: stepKey({ parent: base.key, instruction: 'FROM (a stage)', args: {} }), current: false };
      this.announce(stage.text, false);
    } else if (from === 'scratch') {
      const p = hostPlatform();
      point = { key: stepKey({ parent: '', instruction: 'FROM scratch', args: {} }), layers: [], shell: DEFAULT_SHELL, current: false,
        config: { architecture: p.architecture, os: p.os, ...(p.variant ? { variant: p.variant } : {}), config: { Env: [], Labels: {} }, history: [] } };
      this.announce(stage.text, false);
    } else {
      point = await this.fromImage(stage, from);
    }
    const args = new Map<string, string>();
    point = { ...point, cmdSet: false };
    for (const s of stage.steps) point = await this.apply(s, point, args, global);
    return point;
  }

  /** FROM IMAGE: the image as berth runs it, and its tree as the stage's first layer (cached). */
  private async fromImage(stage: Stage, from: string): Promise<Point> {
    const events = { convert: quietConvert(this.events.warn), cacheWarning: this.events.warn };
    const source = await imageSource(from, events);
    const file = source.path;
    const opened = openImage(file);
    const m = opened.metadata;
    const identity = await imageIdentity(source, opened.location.path, m.manifestDigest, events);
    // The name as written is in the key too: the config records it (base.name).
    const key = stepKey({ parent: '', instruction: `FROM ${identity} as ${from}`, args: {} });
    let hit = this.cache.get(key);
    this.announce(stage.text, hit !== undefined);
    if (!hit) {
      const work = this.cache.work();
      const writer = new LayerWriter(path.join(work, 'layer.partial'));
      try {
        // Its tree without its berth metadata, which the new image gets its own of.
        // A root directory's files are the caller's: root's in the image, as --fakeroot sees them (and commit keeps them).
        const dir = opened.location.format === 'directory';
        await writer.fromCommand(baseTar(opened.location), (e) => {
          const n = layerName(e.name);
          if (n === undefined || n === METADATA_DIR || n.startsWith(`${METADATA_DIR}/`)) return { entries: [], body: false };
          const owner = dir ? { uid: e.uid === this.owner.uid ? 0 : e.uid, gid: e.gid === this.owner.gid ? 0 : e.gid } : {};
          return { entries: [{ ...e, name: n, ...owner }], body: true };
        });
        const layer = writer.finish(path.join(this.cache.root, 'layers'));
        hit = { layers: [layer.digest], image: false };
        this.cache.put(key, hit);
      } catch (e: unknown) {
        writer.abort();
        throw e;
      } finally {
        this.cache.release(work);
      }
    }
    const c = m.config;
    const platform = m.platform;
    const config: OciConfig = {
      architecture: platform.architecture, os: platform.os, ...(platform.variant ? { variant: platform.variant } : {}),
      config: {
        // The image records its parent, as berth commit's do (the OCI annotations' names).
        Env: c.Env, Labels: { ...c.Labels, 'org.opencontainers.image.base.name': from, ...(m.manifestDigest && identity === m.manifestDigest ? { 'org.opencontainers.image.base.digest': m.manifestDigest } : {}) }, ...(c.User ? { User: c.User } : {}), ...(c.Entrypoint ? { Entrypoint: c.Entrypoint } : {}),
        ...(c.Cmd ? { Cmd: c.Cmd } : {}), ...(c.WorkingDir ? { WorkingDir: c.WorkingDir } : {}), ...(c.StopSignal ? { StopSignal: c.StopSignal } : {}),
        ...(c.ExposedPorts.length ? { ExposedPorts: Object.fromEntries(c.ExposedPorts.map((p) => [p, {}])) } : {}),
        ...(c.Volumes.length ? { Volumes: Object.fromEntries(c.Volumes.map((v) => [v, {}])) } : {}),
      },
      history: [{ created_by: `the tree of ${m.source}` }],
    };
    return { key, layers: hit.layers, config, shell: DEFAULT_SHELL, image: opened.location.path, current: false };
  }

  private where(s: { line: number; text: string }): string {
    return `${this.file}:${s.line}: ${s.text}`;
  }

  /** One instruction on `p`: the next point. */
  private async apply(s: Step, p: Point, args: Map<string, string>, global: Map<string, string>): Promise<Point> {
    // Substitution sees the stage's ARGs, and its ENV over them (Docker's order).
    const lookup: Lookup = (name) => envLookup(p.config.config.Env)(name) ?? args.get(name);
    const x = (w: string) => expandWord(w, lookup);
    const argsSeen = Object.fromEntries(args);
    const meta = (instruction: string, change: (c: OciConfig['config']) => OciConfig['config'], shell = p.shell): Point => {
      this.announce(s.text, false);
      const config = { ...p.config, config: change({ ...p.config.config }), history: [...p.config.history, { created_by: s.text, empty_layer: true }] };
      return { ...p, key: stepKey({ parent: p.key, instruction, args: argsSeen }), config, shell, current: false };
    };
    switch (s.kind) {
      case 'ARG': {
        if (s.name in this.opts.buildArgs) this.usedArgs.add(s.name);
        const v = this.opts.buildArgs[s.name] ?? (s.value !== undefined ? x(s.value) : global.get(s.name));
        if (v !== undefined) args.set(s.name, v);
        return meta(`ARG ${s.name}=${v ?? ''}`, (c) => c);
      }
      case 'RUN':
        return this.run(s, p, args, argsSeen, x);
      case 'COPY':
      case 'ADD':
        return this.copy(s, p, x, argsSeen, lookup);
      default: {
        const next = applyMetadata(s, { config: p.config.config, shell: p.shell, cmdSet: p.cmdSet ?? false }, x);
        return { ...meta(next.instruction, () => next.state.config, next.state.shell), cmdSet: next.state.cmdSet };
      }
    }
  }

  /** The squash of a step's layers into its image in the cache, and its record. */
  private async commitStep(key: string, work: string, layers: string[], config: OciConfig): Promise<void> {
    // A cached step's image is shared by every build that reaches it: it names no build (the
    // command stamps the one it writes out with its -t name or context).
    await squashLayers(work, this.cache.layers(layers), config, 'berth build', this.convertOptions(this.cache.imageFile(key)), quietConvert(this.events.warn));
    this.cache.put(key, { layers, image: true });
  }

  private convertOptions(output: string): ConvertOptions {
    return { output, force: true, compression: DEFAULT_COMPRESSION, level: undefined, jobs: availableParallelism(), platform: hostPlatform() };
  }

  private stepPoint(p: Point, s: Step, key: string, layers: string[]): Point {
    return { ...p, key, layers, image: this.cache.imageFile(key), current: true, config: { ...p.config, history: [...p.config.history, { created_by: s.text }] } };
  }

  private async run(s: Step & { kind: 'RUN' }, p: Point, args: Map<string, string>, argsSeen: Record<string, string>, x: (w: string) => string): Promise<Point> {
    const what = this.where(s);
    const argv = commandArgv(s.command, p.shell);
    const workdir = p.config.config.WorkingDir || '/';
    const mounts = s.mounts.map((m) => parseMount(x(m), workdir, what, this.events.warn));
    // A bind's content is in the key (the context's files, the stage's key, the image's
    // identity); a cache's is not: it is only a cache. A #! heredoc's script is.
    const bound = await Promise.all(mounts.map((m) => this.mountIdentity(m, what)));
    const extra = mounts.length > 0 || s.script ? ` ${JSON.stringify({ mounts, bound, script: s.script?.data })}` : '';
    const key = stepKey({ parent: p.key, instruction: `RUN ${JSON.stringify(argv)}${extra}`, args: argsSeen });
    const next = (layers: string[]) => this.stepPoint(p, s, key, layers);
    const hit = this.opts.noCache ? undefined : this.cache.get(key);
    this.announce(s.text, hit !== undefined);
    if (hit) return next(hit.layers);
    if (!p.image) throw new BerthError('USAGE', `${what}: nothing to run: the stage is FROM scratch`, 'COPY a shell and its libraries in first, or start FROM an image that has them');
    const work = this.cache.work();
    const releases: (() => void)[] = [];
    try {
      const overlay = path.join(work, 'overlay');
      mkdirSync(overlay, { mode: 0o700 });
      const user = this.stepUser(s, p);
      const overlayDone = prepareOverlay(p.image, overlay, workdir, user === undefined);
      const binds = await this.stepBinds(mounts, what, work, releases);
      if (s.script) {
        const file = path.join(work, 'script');
        writeFileSync(file, s.script.data, { mode: 0o755, flag: 'wx' });
        binds.push({ source: file, target: `${SCRIPT_DIR}/${s.script.name}`, readOnly: true, origin: `${what}: the heredoc ${s.script.name}` });
      }
      // The build arguments are the command's variables too, under what ENV set (Docker's); a
      // USER's HOME is its passwd entry's, else / (Docker's), unless ENV set one.
      const home = user && !p.config.config.Env.some((e) => e.startsWith('HOME=')) ? [`HOME=${user.home ?? '/'}`] : [];
      const env = [...home, ...[...args].map(([k, v]) => `${k}=${v}`).filter((kv) => !p.config.config.Env.some((e) => e.startsWith(kv.slice(0, kv.indexOf('=') + 1)))), ...p.config.config.Env];
      const status = await runStep({ image: p.image, argv, env, workdir, overlay, binds, ...(user ? { user } : {}) }, this.events.output, this.events.warn);
      if (status !== 0) {
        throw new BerthError('BUILD_FAILED', `step ${this.n}/${this.total} (${what}) failed: the command exited with status ${status}`,
          'see its output above; fix the Dockerfile and build again (the steps before it are cached)');
      }
      overlayDone();
      const writer = new LayerWriter(path.join(work, 'layer.partial'));
      let layer: Layer;
      try {
        await writer.fromUpper(path.join(overlay, 'upper'), layerOwners(this.cache.layers(p.layers).map((l) => l.file)), this.owner, user ?? { uid: 0, gid: 0 });
        layer = writer.finish(path.join(this.cache.root, 'layers'));
      } catch (e: unknown) {
        writer.abort();
        throw e;
      }
      const layers = [...p.layers, layer.digest];
      const point = next(layers);
      await this.commitStep(key, work, layers, point.config);
      return point;
    } finally {
      for (const r of releases.reverse()) r();
      this.cache.release(work);
    }
  }

  /** What a mount binds, for the step's key: the context's files, a stage's key, an image's identity; nothing for a cache. */
  private async mountIdentity(m: MountSpec, what: string): Promise<string | undefined> {
    if (m.type === 'cache') return undefined;
    if (m.from !== undefined) return `${(await this.fromSource(m.from, what)).files}:${m.source}`;
    contextSource(this.ctx.root, m.source, what);
    return contentDigest(selectFiles(this.ctx, [m.source], '/mount', what));
  }

  /** The host side of each mount: a cache's directory (locked if asked), the context's path, or a stage's or image's files unpacked into `work`. */
  private async stepBinds(mounts: MountSpec[], what: string, work: string, releases: (() => void)[]): Promise<StepBind[]> {
    const binds: StepBind[] = [];
    for (const [i, m] of mounts.entries()) {
      const origin = `${what}: --mount=type=${m.type},target=${m.target}`;
      if (m.type === 'cache') {
        let dir = cacheDir(this.cache.mounts(), m.id, what);
        if (m.sharing !== 'shared') {
          const release = await lockCache(dir, m.sharing === 'locked', () => this.events.warn(`berth: note: ${what}: waiting for the cache mount ${m.id}, which another build has (sharing=locked)`));
          if (release) releases.push(release);
          else mkdirSync((dir = path.join(work, `cache-${i}`)), { mode: 0o700 }); // private, and in use: an empty one for this step
        }
        binds.push({ source: dir, target: m.target, readOnly: m.readOnly, origin });
      } else if (m.from === undefined) {
        const real = contextSource(this.ctx.root, m.source, what);
        const rel = normalizeSource(m.source, what);
        // What .dockerignore leaves out is not in the context, so not in what the step sees: a
        // source with such paths under it is bound as a copy of what is kept.
        const source = this.ctx.excludesUnder(rel) ? copyListed(selectFiles(this.ctx, [m.source], '/mount', what), path.join(work, `bind-${i}`)) : real;
        binds.push({ source, target: m.target, readOnly: true, origin });
      } else {
        binds.push({ source: await unpackFrom((await this.fromSource(m.from, what)).image, m.source, path.join(work, `bind-${i}`), what), target: m.target, readOnly: true, origin });
      }
    }
    return binds;
  }

  /**
   * Who a RUN runs as: the config's User (USER, or the FROM image's), resolved in the stage's
   * image as Docker does (names in its /etc/passwd and /etc/group). undefined: root, faked.
   */
  private stepUser(s: Step, p: Point): { uid: number; gid: number; home?: string } | undefined {
    const spec = p.config.config.User;
    if (!spec || !p.image) return undefined;
    let u: { uid: number; gid: number; home?: string };
    try {
      u = parseUser(spec, { location: openImage(p.image).location, architecture: p.config.architecture }, 'USER')!;
    } catch (e: unknown) {
      if (!(e instanceof BerthError)) throw e;
      throw new BerthError(e.code, `step ${this.n}/${this.total} (${this.where(s)}) runs as ${e.message}`, e.hint);
    }
    // uid 0 is the fake root, whatever group USER names: the step's namespace maps one uid.
    return u.uid === 0 ? undefined : u;
  }

  private async copy(s: Step & { kind: 'COPY' | 'ADD' }, p: Point, x: (w: string) => string, argsSeen: Record<string, string>, lookup: Lookup): Promise<Point> {
    const what = this.where(s);
    const sources = s.sources.map(x);
    const rawDest = x(s.dest);
    const resolved = this.resolveDest(p.image, path.posix.resolve(p.config.config.WorkingDir || '/', rawDest));
    // A destination that is a directory in the image takes the files into it, slash or not (Docker's rule).
    const dest = resolved + (rawDest.endsWith('/') || (resolved !== '/' && this.isDirectory(p.image, resolved)) ? '/' : '');
    const chmod = s.flags.chmod !== undefined ? x(s.flags.chmod) : undefined;
    if (chmod !== undefined && !/^[0-7]{3,4}$/.test(chmod)) throw new BerthError('USAGE', `${what}: --chmod=${chmod}: berth takes octal modes`, 'e.g. --chmod=0755');
    const chown = s.flags.chown !== undefined ? x(s.flags.chown) : undefined;
    const owner = chown === undefined ? { uid: 0, gid: 0 } : chownOf(chown, p.image, p.config.architecture, what);
    if (s.kind === 'ADD') {
      const remote = sources.find((src) => /^ftp:\/\/|^git@|\.git$|^(https?:\/\/)?(github\.com|gitlab\.com)\/[^/]+\/[^/]+\/?$/.test(src));
      if (remote) throw new BerthError('USAGE', `${what}: ADD of ${remote} is not supported: berth downloads files over http(s), not repositories or ftp`, 'clone or fetch it into the build context and COPY it, or git clone in a RUN step');
    }
    if (s.flags.checksum !== undefined && (s.kind !== 'ADD' || sources.filter(isUrl).length !== 1 || sources.length !== 1)) {
      throw new BerthError('USAGE', `${what}: --checksum is for ADD of one URL`, 'write one ADD --checksum=sha256:HEX URL DEST per file');
    }
    const work = this.cache.work();
    try {
      return await this.copyIn(s, p, x, argsSeen, { what, sources, dest, chmod, chown, owner, work, lookup });
    } finally {
      this.cache.release(work);
    }
  }

  /**
   * What --from=NAME (COPY's, a bind mount's) names: an earlier stage's image, or any image berth
   * runs; and what it is known by in cache keys (`files`).
   */
  private async fromSource(fromName: string, what: string): Promise<{ image: string; files: string }> {
    const pt = this.stagePoint(fromName);
    if (!pt && this.stageIndex(this.stages, fromName, this.stages.length) !== undefined) {
      // A stage's name always means the stage, never a file of that name in the working directory.
      throw new BerthError('USAGE', `${what}: --from=${fromName} names a stage that is not built before this step (a later stage, or this one)`,
        'copy from an earlier stage: stages are built in order');
    }
    if (pt) {
      if (!pt.image) throw new BerthError('USAGE', `${what}: the stage ${fromName} has no files`, 'copy from a stage that has some');
      return { image: pt.image, files: `stage:${pt.key}` };
    }
    const events = { convert: quietConvert(this.events.warn), cacheWarning: this.events.warn };
    const from = await imageSource(fromName, events);
    return { image: from.path, files: `image:${await imageIdentity(from, from.path, openImage(from.path).metadata.manifestDigest, events)}` };
  }

  /** The files a COPY or ADD heredoc makes, in `work`, as the context's files are listed. */
  private heredocFiles(docs: Heredoc[], x: Lookup, dest: string, what: string, work: string): ReturnType<typeof selectFiles> {
    if (docs.length === 0) return [];
    const dir = path.join(work, 'heredocs');
    mkdirSync(dir, { mode: 0o700 });
    for (const d of docs) writeFileSync(path.join(dir, d.name), d.expand ? expandText(d.data, x) : d.data, { mode: 0o644, flag: 'wx' });
    return selectFiles(new BuildContext(dir), docs.map((d) => d.name), dest, what);
  }

  private async copyIn(s: Step & { kind: 'COPY' | 'ADD' }, p: Point, x: (w: string) => string, argsSeen: Record<string, string>,
    c: { what: string; sources: string[]; dest: string; chmod: string | undefined; chown: string | undefined; owner: { uid: number; gid: number }; work: string; lookup: Lookup }): Promise<Point> {
    const { what, sources, dest, chmod, chown, owner, work } = c;
    let files: string;
    let source: CopySource;
    let pending: (() => Promise<CopySource>) | undefined;
    if (s.kind === 'COPY' && s.flags.from !== undefined) {
      const fromName = x(s.flags.from);
      const from = await this.fromSource(fromName, what);
      files = from.files;
      source = { kind: 'image', image: from.image, from: fromName };
    } else {
      // Heredocs and ADD's downloads are files of the step's own (in its work directory), copied
      // as the context's are. A download pinned by --checksum is known by it: fetched on a miss only.
      const many = sources.length + s.heredocs.length > 1 && !dest.endsWith('/') ? `${dest}/` : dest;
      const urls = s.kind === 'ADD' ? sources.filter(isUrl) : [];
      const local = sources.filter((src) => !urls.includes(src));
      const checksum = s.flags.checksum !== undefined ? parseChecksum(x(s.flags.checksum), what) : undefined;
      const selected = [...(local.length > 0 ? selectFiles(this.ctx, local, many, what) : []), ...this.heredocFiles(s.heredocs, c.lookup, many, what, work)];
      const downloads = path.join(work, 'downloads');
      const fetchAll = async () => {
        mkdirSync(downloads, { mode: 0o700 });
        for (const u of urls) await download(u, path.join(downloads, urlFileName(u)), what, checksum);
        return selectFiles(new BuildContext(downloads), urls.map(urlFileName), many, what);
      };
      if (checksum !== undefined) {
        files = `${await contentDigest(selected)} ${urls[0]} ${urlFileName(urls[0]!)} ${checksum}`;
        source = { kind: 'context', files: selected };
        pending = async () => ({ kind: 'context', files: [...selected, ...(await fetchAll())] });
      } else {
        const all = [...selected, ...(urls.length > 0 ? await fetchAll() : [])];
        files = await contentDigest(all);
        source = { kind: 'context', files: all };
      }
    }
    const key = stepKey({ parent: p.key, instruction: `${s.kind} ${JSON.stringify({ sources, dest, chmod, owner, from: s.flags.from })}`, args: argsSeen, files });
    const hit = this.opts.noCache ? undefined : this.cache.get(key);
    this.announce(s.text, hit !== undefined);
    if (hit) return this.stepPoint(p, s, key, hit.layers);
    if (pending) source = await pending();
    const writer = new LayerWriter(path.join(work, 'layer.partial'));
    try {
      await writeCopyLayer(writer, { kind: s.kind, what, sources: [...sources, ...s.heredocs.map((d) => d.name)], dest, ...(chmod !== undefined ? { chmod } : {}), ...(chown !== undefined ? { chown: owner } : {}),
        source, ...(p.image ? { image: p.image } : {}) });
      const layer = writer.finish(path.join(this.cache.root, 'layers'));
      const layers = [...p.layers, layer.digest];
      const point = this.stepPoint(p, s, key, layers);
      await this.commitStep(key, work, layers, point.config);
      return point;
    } catch (e: unknown) {
      writer.abort();
      throw e;
    }
  }

  /**
   * Where a destination lands in the image: its directories' symlinks resolved inside the image,
   * as Docker follows them (COPY x /bin/ in a merged-/usr image writes /usr/bin/x, and /bin stays
   * the link it is). The last component is followed only when it is a directory; one that does
   * not exist yet is kept as written, under its resolved parent.
   */
  private resolveDest(image: string | undefined, dest: string): string {
    if (!image) return dest;
    const files = new ImageFiles(openImage(image).location);
    try {
      const parts = dest.split('/').filter(Boolean);
      for (let i = parts.length; i > 0; i--) {
        const prefix = `/${parts.slice(0, i).join('/')}`;
        const real = files.realpath(prefix);
        if (real === undefined) continue;
        if (i === parts.length && files.list(prefix) === undefined) {
          // An existing file or link to one: replaced where it is, under its parent resolved.
          const parent = parts.length > 1 ? files.realpath(`/${parts.slice(0, -1).join('/')}`) ?? `/${parts.slice(0, -1).join('/')}` : '/';
          return path.posix.join(parent, parts.at(-1)!);
        }
        return path.posix.join(real, ...parts.slice(i));
      }
      return dest;
    } finally {
      files.close();
    }
  }

  private isDirectory(image: string | undefined, dir: string): boolean {
    if (!image) return false;
    const files = new ImageFiles(openImage(image).location);
    try {
      return files.list(dir) !== undefined;
    } finally {
      files.close();
    }
  }

  /** The stage `name` names (by name or number), as built so far; undefined: it is an image. */
  private stagePoint(name: string): Point | undefined {
    const i = this.stageIndex(this.stages, name, this.stages.length);
    return i === undefined ? undefined : this.built.get(i);
  }

  /** The WORKDIR the image lacks (no RUN or COPY made it), as one more layer: Docker makes it too. */
  private workdirLayer(p: Point, work: string): string[] {
    const dir = p.config.config.WorkingDir;
    if (!dir || dir === '/') return [];
    const files = p.image ? new ImageFiles(openImage(p.image).location) : undefined;
    try {
      if (files?.realpath(dir) !== undefined) return [];
      const writer = new LayerWriter(path.join(work, 'workdir.partial'));
      try {
        const parts = dir.split('/').filter(Boolean);
        for (let i = 1; i <= parts.length; i++) {
          const d = parts.slice(0, i).join('/');
          if (files?.realpath(`/${d}`) === undefined) writer.entry(entryOf(d, 'dir'));
        }
        return [writer.finish(path.join(this.cache.root, 'layers')).digest];
      } catch (e: unknown) {
        writer.abort();
        throw e;
      }
    } finally {
      files?.close();
    }
  }

  /** The target's image: the last step's, or one with the config the later steps made. */
  private async finish(p: Point): Promise<BuildResult> {
    let image = p.current ? p.image! : this.cache.imageFile(p.key);
    // A layer for WORKDIR has its history entry, as every layer has (the OCI config's rule).
    const finalConfig = (layers: string[]): OciConfig => (layers.length > p.layers.length
      ? { ...p.config, history: [...p.config.history, { created_by: `WORKDIR ${p.config.config.WorkingDir ?? ''} (made at the stage's end)` }] } : p.config);
    const hit = p.current ? undefined : this.cache.get(p.key);
    let layers = hit?.layers ?? p.layers;
    if (!p.current && !hit?.image) {
      const work = this.cache.work();
      try {
        layers = [...p.layers, ...this.workdirLayer(p, work)];
        await this.commitStep(p.key, work, layers, finalConfig(layers));
      } finally {
        this.cache.release(work);
      }
      image = this.cache.imageFile(p.key);
    }
    const final = p.current ? p.layers : layers;
    return { image, metadata: openImage(image).metadata, layers: this.cache.layers(final), config: finalConfig(final), steps: this.steps };
  }
}

/**
 * What a FROM or COPY --from image is known by in the cache's keys. The manifest digest an
 * image's metadata claims is believed only where berth's caches vouch for the file (as for a
 * signature verdict): a file named by path may be anyone's tree under a real image's digest,
 * and would then be the cached base of every later build from the real one. Such a file is
 * known by the sha256 of its bytes, a directory by every entry's place, type, size, inode and
 * change time (which no one can set back), so that an edit inside it is a new base.
 */
async function imageIdentity(source: { path: string; cached: boolean }, file: string, manifestDigest: string | null | undefined, events: { cacheWarning: (line: string) => void }): Promise<string> {
  if (manifestDigest && vouchedFor(source, manifestDigest, events)) return manifestDigest;
  const st = statSync(file);
  if (!st.isDirectory()) return `file:sha256:${await sha256File(file)}`;
  const h = createHash('sha256');
  const walk = (dir: string, rel: string) => {
    for (const name of readdirSync(dir).sort()) {
      const p = path.join(dir, name);
      const e = lstatSync(p);
      h.update(`${rel}/${name}\0${e.mode}\0${e.size}\0${e.ino}\0${e.ctimeMs}\0${e.isSymbolicLink() ? readlinkSync(p) : ''}\n`);
      if (e.isDirectory()) walk(p, `${rel}/${name}`);
    }
  };
  walk(file, '');
  return `tree:sha256:${h.digest('hex')}`;
}
