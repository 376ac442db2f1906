// What this node allows, checked for real: berth doctor. Namespace checks run in berth-helper
// (--probe), never in Node; the rest reads /proc and the filesystem. Each check says what it
// found and, when it is not fine, what an admin or the user can do.
import { spawnSync } from 'node:child_process';
import { accessSync, constants, mkdirSync, readFileSync, statSync } from 'node:fs';
import { release } from 'node:os';
import path from 'node:path';
import { config } from '../config/load.js';
import { Caches } from '../image/caches.js';
import { checkDirPath, describeDoubt, ownerName } from '../image/trust.js';
import { helperPath } from '../runtime/helper.js';
import { loadAddon } from '../runtime/native.js';
import { isBerthError, messageOf } from '../errors.js';
import { ALL_BINDINGS, bindingSettings, type DoctorLine } from './bindings.js';
import { findPasta } from './network.js';
import { limitsTarget } from '../plan/limits.js';
import { cgroupFacts } from './cgroup.js';
import { runtimeDir } from './user.js';
import { loadPublicKey } from '../signature/keys.js';
import { describePolicy } from '../signature/policy.js';

export type Check = DoctorLine;

function sysctl(path: string): number | undefined {
  try {
    return Number(readFileSync(path, 'utf8').trim());
  } catch {
    return undefined;
  }
}

function onPath(tool: string): boolean {
  return (process.env.PATH ?? '').split(':').some((dir) => {
    try {
      accessSync(path.join(dir || '.', tool), constants.X_OK);
      return true;
    } catch {
      return false;
    }
  });
}

function kernelCheck(): { check: Check; overlayNative: boolean } {
  const [major = 0, minor = 0] = release().split(/[.-]/).map(Number);
  const at = (M: number, m: number) => major > M || (major === M && minor >= m);
  if (!at(4, 18)) {
    return { overlayNative: false, check: { name: 'kernel', verdict: 'fail', detail: `Linux ${release()}: FUSE in a user namespace needs 4.18`, fix: 'run on a newer kernel' } };
  }
  return {
    overlayNative: at(5, 11),
    check: { name: 'kernel', verdict: 'ok', detail: `Linux ${release()}${at(5, 11) ? '' : ' (overlayfs for users needs 5.11: fuse-overlayfs stands in)'}` },
  };
}

function userNamespaceSysctls(): Check {
  const max = sysctl('/proc/sys/user/max_user_namespaces');
  if (max === 0) return { name: 'user namespaces', verdict: 'fail', detail: 'user.max_user_namespaces = 0', fix: 'sysctl -w user.max_user_namespaces=15000 (and in /etc/sysctl.d)' };
  if (sysctl('/proc/sys/kernel/unprivileged_userns_clone') === 0) {
    return { name: 'user namespaces', verdict: 'fail', detail: 'kernel.unprivileged_userns_clone = 0', fix: 'sysctl -w kernel.unprivileged_userns_clone=1' };
  }
  if (sysctl('/proc/sys/kernel/apparmor_restrict_unprivileged_userns') === 1) {
    return { name: 'user namespaces', verdict: 'fail', detail: 'AppArmor restricts unprivileged user namespaces', fix: 'sysctl -w kernel.apparmor_restrict_unprivileged_userns=0' };
  }
  return { name: 'user namespaces', verdict: 'ok', detail: `allowed (user.max_user_namespaces = ${max ?? '?'})` };
}

const PROBE_FIX: Record<string, string> = {
  fuse: 'an admin loads the fuse module (modprobe fuse) and makes /dev/fuse mode 0666',
  userns: 'see the user namespaces line above',
  idmap: 'an unprivileged user namespace must let you map your own uid (kernel or LSM policy)',
  mountns: 'mount namespaces inside user namespaces are refused: check the LSM (SELinux, AppArmor) policy',
};

function probeChecks(helper: string, overlayNative: boolean): Check[] {
  const r = spawnSync(helper, ['--probe'], { encoding: 'utf8', timeout: 10_000 });
  const found = new Map<string, string>();
  for (const line of r.stdout.split('\n')) {
    const [name, verdict, ...why] = line.split(' ');
    if (name && verdict) found.set(name, verdict === 'ok' ? 'ok' : why.join(' '));
  }
  const checks: Check[] = [];
  const names: [string, string][] = [['fuse', '/dev/fuse'], ['userns', 'creating a user namespace'], ['idmap', 'mapping your uid and gid'], ['mountns', 'mounting in it']];
  for (const [key, label] of names) {
    const result = found.get(key);
    if (result === undefined) continue;
    checks.push(result === 'ok'
      ? { name: label, verdict: 'ok', detail: 'works' }
      : { name: label, verdict: 'fail', detail: result, fix: PROBE_FIX[key]! });
  }
  const overlay = found.get('overlay');
  if (overlay !== undefined) {
    if (overlay === 'ok') checks.push({ name: 'overlayfs in a user namespace', verdict: 'ok', detail: 'works (root overlays, --writable-tmpfs)' });
    else if (onPath('fuse-overlayfs')) checks.push({ name: 'overlayfs in a user namespace', verdict: 'warn', detail: `refused (${overlay}); fuse-overlayfs will stand in, a little slower` });
    else {
      checks.push({ name: 'overlayfs in a user namespace', verdict: 'fail', detail: `refused (${overlay})${overlayNative ? '' : ': this kernel predates 5.11'}`,
        fix: 'install fuse-overlayfs (apt-get install fuse-overlayfs / dnf install fuse-overlayfs)' });
    }
  }
  return checks;
}

function helperCheck(): { check: Check; path?: string } {
  let helper: string;
  try {
    helper = helperPath();
  } catch (e: unknown) {
    return { check: { name: 'berth-helper', verdict: 'fail', detail: (e as Error).message, fix: 'build it: make -C native' } };
  }
  const mode = statSync(helper).mode;
  if (mode & 0o6000) {
    return { path: helper, check: { name: 'berth-helper', verdict: 'fail', detail: `${helper} is setuid or setgid`, fix: `chmod u-s,g-s ${helper}: berth needs no privilege and must not have any` } };
  }
  return { path: helper, check: { name: 'berth-helper', verdict: 'ok', detail: `${helper} (not setuid)` } };
}

function toolsCheck(): Check {
  const needed = { tar2sqfs: 'squashfs-tools-ng', rdsquashfs: 'squashfs-tools-ng', zstd: 'zstd' };
  const missing = Object.entries(needed).filter(([tool]) => !onPath(tool));
  if (missing.length === 0) return { name: 'tools', verdict: 'ok', detail: Object.keys(needed).join(', ') };
  return { name: 'tools', verdict: 'fail', detail: `missing: ${missing.map(([t]) => t).join(', ')}`, fix: `install ${[...new Set(missing.map(([, p]) => p))].join(', ')}` };
}

function dirCheck(name: string, dir: string, mustBePrivate: boolean): Check {
  try {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    accessSync(dir, constants.W_OK);
    const st = statSync(dir);
    if (mustBePrivate && (st.uid !== process.getuid!() || (st.mode & 0o077))) {
      return { name, verdict: 'fail', detail: `${dir} is not yours alone (mode ${(st.mode & 0o777).toString(8)})`, fix: `remove it, or set ${name === 'runtime directory' ? 'runtime.dir / BERTH_RUNTIME_DIR' : 'cache.dir'}` };
    }
    return { name, verdict: 'ok', detail: dir };
  } catch (e: unknown) {
    return { name, verdict: 'fail', detail: `${dir}: ${(e as Error).message}`, fix: 'point the setting elsewhere (berth config shows it)' };
  }
}

/**
 * The caches, by the rules berth applies when it uses them (src/image/trust.ts): the user's own
 * must be writable by no one else (else berth falls back to the default one, or refuses), and the
 * site cache by its owner alone (else berth ignores it). Either kind of problem is named here.
 */
function cacheChecks(): Check[] {
  const told: string[] = [];
  let caches: Caches;
  try {
    caches = new Caches((line) => told.push(line.replace(/^berth: warning: /, '')));
  } catch (e: unknown) {
    return [{ name: 'cache', verdict: 'fail', detail: (e as Error).message, fix: (e as { hint?: string }).hint ?? 'see the message' }];
  }
  const user = guarded('cache', () => {
    const root = caches.writable();
    if (told.length === 0) return { name: 'cache', verdict: 'ok', detail: `${root} (yours alone)` };
    return { name: 'cache', verdict: 'warn', detail: told.join('; '), fix: 'set cache.dir (BERTH_CACHE_DIR) to a directory that only you can write' };
  });
  if (!caches.site) return [user];
  const site = caches.site;
  const problem = [site, `${site}/images`].map((dir) => checkDirPath(dir, caches.trust)).find((c) => c.doubt || c.missing);
  if (problem?.doubt) {
    return [user, { name: 'site cache', verdict: 'fail', detail: `${describeDoubt(problem.doubt)}: berth ignores it`,
      fix: `an admin makes it belong to root or cache.site-owner, writable by that owner only (chmod go-w)` }];
  }
  if (problem?.missing) return [user, { name: 'site cache', verdict: 'warn', detail: `${site}/images does not exist`, fix: 'its owner fills it: BERTH_CACHE_DIR=SITE berth pull docker://...' }];
  return [user, { name: 'site cache', verdict: 'ok', detail: `${site} (owner ${ownerName(statSync(site).uid)}, read only for others)` }];
}

function addonCheck(): Check {
  try {
    loadAddon();
    return { name: 'berth.node', verdict: 'ok', detail: 'loaded (reads images without mounting them, for --mpi)' };
  } catch (e: unknown) {
    return { name: 'berth.node', verdict: 'fail', detail: (e as Error).message, fix: 'build it: make -C native (needs g++ and node_api.h: libnode-dev)' };
  }
}

/** A check that reports its own failure instead of ending doctor. */
function guarded(name: string, check: () => Check): Check {
  return guardedLines(name, () => [check()])[0]!;
}

function guardedLines(name: string, check: () => Check[]): Check[] {
  try {
    return check();
  } catch (e: unknown) {
    return [{ name, verdict: 'fail', detail: messageOf(e), fix: isBerthError(e) && e.hint ? e.hint : 'see the message' }];
  }
}

/** Whether --network user and -p can work here: the same check `berth run` makes (host/network.ts). */
function networkCheck(): Check {
  try {
    return { name: 'user-mode networking', verdict: 'ok', detail: `--network user and -p through ${findPasta()}; --network none needs nothing` };
  } catch (e: unknown) {
    if (!isBerthError(e)) throw e;
    return { name: 'user-mode networking', verdict: 'warn', detail: `${e.message.replace(/^--network user: /, '')}; --network none still works`, fix: e.hint ?? '' };
  }
}

/** Whether --memory, --cpus and --pids-limit can be applied here, from the facts berth run decides with. */
function limitsCheck(): Check {
  const facts = cgroupFacts(config().values['host.root'], process.getuid!(), process.env);
  try {
    const t = limitsTarget({ memory: 1, cpus: 1, pids: 1 }, facts);
    const enabled = t.enable.length > 0 ? `; berth enables ${t.enable.join(', ')} in its cgroup.subtree_control` : '';
    return { name: 'resource limits', verdict: 'ok', detail: `--memory, --cpus, --pids-limit apply: cgroups are made in your delegated cgroup ${t.parent}${enabled}` };
  } catch (e: unknown) {
    if (!isBerthError(e)) throw e;
    // Not being able to limit is no fault of the node's for containers that ask for none.
    return { name: 'resource limits', verdict: 'warn', detail: e.message.replace(/^--memory, --cpus, --pids-limit cannot be applied: /, 'cannot be applied here: '), fix: e.hint?.replace(/; or add --limits best-effort.*$/, '') ?? '' };
  }
}

/** What each host binding would do on this node: from the same facts as `berth run` plans with. */
function bindingChecks(): Check[] {
  const values = config().values;
  return ALL_BINDINGS.flatMap((b) => guardedLines(b.name, () => b.doctor(b.facts(values['host.root'], bindingSettings(b, values).settings))));
}

/** The signature policy in force, in words, and whether every key it names can be read. */
function trustCheck(): Check {
  const policy = config().trust;
  const detail = describePolicy(policy);
  const keys = [...new Set([...(policy.site ?? []), ...(policy.user ?? [])].flatMap((r) => (r.action.kind === 'require' ? r.action.keys : [])))];
  for (const key of keys) {
    try {
      loadPublicKey(key);
    } catch (e: unknown) {
      if (!isBerthError(e)) throw e;
      return { name: 'image trust', verdict: 'fail', detail: `${detail}; ${e.message}`, fix: e.hint ?? '' };
    }
  }
  return { name: 'image trust', verdict: 'ok', detail };
}

export function diagnose(): Check[] {
  const { check: kernel, overlayNative } = kernelCheck();
  const helper = helperCheck();
  return [
    kernel,
    userNamespaceSysctls(),
    helper.check,
    ...(helper.path ? probeChecks(helper.path, overlayNative) : []),
    toolsCheck(),
    addonCheck(),
    networkCheck(),
    ...bindingChecks(),
    guarded('resource limits', limitsCheck),
    trustCheck(),
    dirCheck('runtime directory', runtimeDir(process.getuid!(), process.env), true),
    ...cacheChecks(),
  ];
}
