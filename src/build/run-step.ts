// A RUN step: the command in berth's own container over the stage's image so far, as root
// (--fakeroot: the caller mapped to uid 0) or, after a USER that is not root, as that uid and
// gid (--user: the caller mapped to them, no fake root), with its changes kept on disk in an
// overlay directory under the build cache (not in memory), which the builder turns into a layer.
// The container is any `berth exec`'s (plan/prepare.ts makes the plan; the helper carries it
// out), with a clean environment of the build's own and no host home, /tmp or working directory
// (--contain), so that what a step sees is what the Dockerfile says.
import { spawn } from 'node:child_process';
import { existsSync, lstatSync, mkdirSync, readFileSync, rmdirSync, rmSync, writeFileSync } from 'node:fs';
import { constants } from 'node:os';
import path from 'node:path';
import type { Duplex } from 'node:stream';
import { BerthError } from '../errors.js';
import { ImageFiles } from '../image/files.js';
import { HOME_NOT_BOUND } from '../plan/build.js';
import type { MountOp } from '../plan/types.js';
import type { StepBind } from './mounts.js';
import { preparePlan } from '../plan/prepare.js';
import { serializePlan } from '../plan/serialize.js';
import { helperPath } from '../runtime/helper.js';
import { openImage } from '../runtime/image.js';

export interface RunStep {
  /** The image the command runs over (the stage's file system so far). */
  image: string;
  argv: string[];
  env: string[];
  workdir: string;
  /** The overlay directory (made 0700 by the builder). */
  overlay: string;
  /**
   * USER (not root): the command runs as this uid and gid, which the step's user namespace maps
   * to the caller, with no fake root (Docker's non-root RUN). Absent: the fake root.
   */
  user?: { uid: number; gid: number };
  /** RUN --mount's binds and a #! heredoc's script: the plan's bind ops, over the step's root, never in its layer. */
  binds?: StepBind[];
}

const SIGNALS = ['SIGINT', 'SIGTERM', 'SIGHUP'] as const;

/**
 * Waits (blocking: a signal listener cannot wait otherwise) until `pid`, a child not yet reaped,
 * has exited: a zombie, or gone. The helper's container lives in its PID namespace, which ends
 * with it.
 */
function waitGone(pid: number, ms: number): void {
  const nap = new Int32Array(new SharedArrayBuffer(4));
  for (const end = Date.now() + ms; Date.now() < end; Atomics.wait(nap, 0, 0, 20)) {
    let stat: string;
    try {
      stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    } catch {
      return;
    }
    if (/^\d+ \(.*\) [ZX]/s.test(stat)) return;
  }
}

/** Runs the step; its output goes to `output` (stdout and stderr both). Returns the exit status. */
export async function runStep(step: RunStep, output: (chunk: Buffer) => void, warn: (line: string) => void): Promise<number> {
  const who = step.user ? { user: `${step.user.uid}:${step.user.gid}`, pid: true } : { fakeroot: true };
  const prepared = await preparePlan('exec', step.image, step.argv, {
    ...who, overlay: step.overlay, cleanenv: true, contain: true, home: false, env: step.env, pwd: step.workdir,
  }, { convert: { resolved() {}, layerStart() {}, bytes() {}, finishing() {}, warn }, cacheWarning: warn });
  // A non-root step's HOME is its passwd entry's (the builder sets it): the caller's own home
  // directory, which the plan would make inside, would otherwise land in the layer.
  const binds: MountOp[] = (step.binds ?? []).map((b) => ({ kind: 'bind', source: b.source, target: b.target, options: ['rbind', 'nosuid', 'nodev', ...(b.readOnly ? ['ro'] : [])], ifMissing: 'create', origin: b.origin }));
  const plan = { ...prepared.plan, ops: [...prepared.plan.ops.filter((o) => o.origin !== HOME_NOT_BOUND), ...binds] };
  const helper = helperPath();
  return new Promise((resolve, reject) => {
    const child = spawn(helper, [], { stdio: ['ignore', 'pipe', 'pipe', 'pipe'] });
    const planPipe = child.stdio[3] as Duplex;
    planPipe.on('error', () => {});
    // Root emulation for package managers (native/helper/seccomp.c): only for a build step's fake root.
    planPipe.end(serializePlan(step.user ? plan : { ...plan, fakeSyscalls: true }));
    child.stdout!.on('data', output);
    child.stderr!.on('data', output);
    // A signal that ends berth ends the step first: passed on, and waited for, before the build
    // cache's cleanup (convert/interrupt.ts, whose listeners come after) removes its overlay.
    const forward = (signal: NodeJS.Signals) => {
      child.kill(signal);
      if (child.pid !== undefined) waitGone(child.pid, 10_000);
    };
    for (const sig of SIGNALS) process.prependListener(sig, forward);
    child.on('error', (e) => reject(new BerthError('HELPER_MISSING', `cannot start ${helper}: ${e.message}`, 'rebuild it: make -C native')));
    child.on('close', (code, signal) => {
      for (const sig of SIGNALS) process.removeListener(sig, forward);
      resolve(code ?? 128 + (signal ? constants.signals[signal] : 0));
    });
  });
}

/**
 * The overlay's upper directory before the step: WORKDIR's directory when the image lacks it
 * (the helper enters it), and apt's setting for a fake root. apt runs its downloads as _apt and
 * checks that it became _apt, which a fake root cannot (setresuid is faked, native/helper/seccomp.c),
 * so for the step only apt is told to stay root, as Charliecloud's --force=fakeroot does (its
 * /etc/apt/apt.conf.d/no-sandbox). The returned function takes the setting out again before the
 * layer is made, with the directories made for it that stayed empty. A USER step is no root:
 * apt's own checks stand.
 */
export function prepareOverlay(image: string, overlay: string, workdir: string, fakeRoot: boolean): () => void {
  const upper = path.join(overlay, 'upper');
  const files = new ImageFiles(openImage(image).location);
  let apt: boolean;
  try {
    if (files.realpath(workdir) === undefined) mkdirSync(path.join(upper, workdir), { recursive: true, mode: 0o755 });
    apt = files.realpath('/etc/apt/apt.conf.d') === '/etc/apt/apt.conf.d';
  } finally {
    files.close();
  }
  if (!apt || !fakeRoot) return () => {};
  mkdirSync(upper, { recursive: true, mode: 0o755 });
  const made: string[] = [];
  for (const d of ['etc', 'etc/apt', 'etc/apt/apt.conf.d']) {
    const full = path.join(upper, d);
    if (existsSync(full)) continue;
    mkdirSync(full, { mode: 0o755 });
    made.push(full);
  }
  const file = path.join(upper, 'etc/apt/apt.conf.d/00berth-build-no-sandbox');
  writeFileSync(file, '// berth build: the step\'s root cannot become _apt\nAPT::Sandbox::User "root";\n', { mode: 0o644 });
  return () => {
    // The step may have replaced any of these with a symlink (to anywhere on the host): only
    // real directories are gone through, and only the file berth wrote is removed.
    const real = (d: string) => lstatSync(path.join(upper, d), { throwIfNoEntry: false })?.isDirectory() === true;
    if (!['etc', 'etc/apt', 'etc/apt/apt.conf.d'].every(real)) return;
    if (lstatSync(file, { throwIfNoEntry: false })?.isFile()) rmSync(file, { force: true });
    for (const d of made.reverse()) {
      try {
        rmdirSync(d);
      } catch {
        // The step wrote there too: the directory is part of its change.
      }
    }
  };
}
