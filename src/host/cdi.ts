// Container Device Interface: vendors (nvidia-ctk cdi generate, AMD's and Intel's tools) describe
// their devices as JSON or YAML specs in /etc/cdi and /var/run/cdi; `--device VENDOR/CLASS=NAME`
// applies one, so a vendor's own description can replace berth's built-in lists. See the CDI
// specification (github.com/cncf-tags/container-device-interface, SPEC.md). Of the hooks,
// berth does what nvidia-ctk's do (symlinks, library directories); it runs no host program.
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import type { SettingTable } from '../config/schema.js';
import { yaml } from '../config/yaml.js';
import { BerthError } from '../errors.js';
import { emptyBinding, type HostBinding } from '../plan/types.js';
import type { Binding } from './bindings.js';
import { onHost } from './libraries.js';

export const CDI_SETTINGS = {
  'run.devices': {
    type: 'strings', default: [], flag: '--device <VENDOR/CLASS=NAME>',
    describe: 'apply a Container Device Interface device from the CDI specs (e.g. nvidia.com/gpu=0); repeatable',
  },
  'cdi.dirs': {
    type: 'strings', default: ['/etc/cdi', '/var/run/cdi'],
    describe: 'where Container Device Interface specs are read for --device',
  },
} as const satisfies SettingTable;

interface ContainerEdits {
  env?: string[];
  deviceNodes?: { path: string; hostPath?: string }[];
  mounts?: { hostPath: string; containerPath: string; options?: string[] }[];
  hooks?: { hookName: string; path: string; args?: string[] }[];
}

interface CdiSpec {
  cdiVersion: string;
  kind: string;
  devices: { name: string; containerEdits?: ContainerEdits }[];
  containerEdits?: ContainerEdits;
  file: string;
}

function readSpec(file: string): CdiSpec {
  const text = readFileSync(file, 'utf8');
  let spec: unknown;
  try {
    spec = file.endsWith('.json') ? JSON.parse(text) : yaml().parse(text);
  } catch (e: unknown) {
    throw new BerthError('SOURCE_INVALID', `CDI spec ${file} is not valid ${file.endsWith('.json') ? 'JSON' : 'YAML'}: ${(e as Error).message}`, 'regenerate it (e.g. nvidia-ctk cdi generate) or remove it');
  }
  const s = spec as Partial<CdiSpec>;
  if (typeof s?.kind !== 'string' || !/^[a-z0-9.-]+\/[a-zA-Z0-9._-]+$/.test(s.kind) || !Array.isArray(s.devices)) {
    throw new BerthError('SOURCE_INVALID', `CDI spec ${file} has no valid kind (VENDOR/CLASS) and devices list`, 'regenerate it (e.g. nvidia-ctk cdi generate) or remove it');
  }
  return { ...(s as CdiSpec), file };
}

/** Every spec in the CDI directories (later directories win for the same kind and device). */
export function loadCdiSpecs(root: string, dirs: readonly string[]): CdiSpec[] {
  return dirs.flatMap((dir) => {
    let names: string[];
    try {
      names = readdirSync(onHost(root, dir)).sort();
    } catch {
      return [];
    }
    return names.filter((n) => /\.(json|ya?ml)$/.test(n)).map((n) => readSpec(path.join(onHost(root, dir), n)));
  }).reverse();
}

function apply(b: HostBinding, root: string, edits: ContainerEdits | undefined, origin: string): void {
  if (!edits) return;
  b.env.push(...(edits.env ?? []));
  for (const d of edits.deviceNodes ?? []) b.devices.push({ source: onHost(root, d.hostPath ?? d.path), target: d.path });
  for (const m of edits.mounts ?? []) b.binds.push({ source: onHost(root, m.hostPath), target: m.containerPath, origin });
  for (const h of edits.hooks ?? []) {
    const args = h.args ?? [];
    if (args.includes('create-symlinks')) {
      args.forEach((a, i) => {
        const value = a === '--link' ? args[i + 1] : a.startsWith('--link=') ? a.slice(7) : undefined;
        const [target, link] = value?.split('::') ?? [];
        if (target && link) b.symlinks.push({ link, target, origin: `${origin} (create-symlinks hook)` });
      });
    } else if (args.includes('update-ldcache')) {
      args.forEach((a, i) => {
        const folder = a === '--folder' ? args[i + 1] : a.startsWith('--folder=') ? a.slice(9) : undefined;
        if (folder && !b.libraryPath.includes(folder)) b.libraryPath.push(folder);
      });
    }
  }
}

/** The edits of the named devices (VENDOR/CLASS=NAME), merged into one binding. */
export function cdiBinding(root: string, dirs: readonly string[], names: readonly string[]): HostBinding {
  return applyDevices(root, loadCdiSpecs(root, dirs), dirs, names);
}

function applyDevices(root: string, specs: CdiSpec[], dirs: readonly string[], names: readonly string[]): HostBinding {
  const b = emptyBinding();
  const appliedSpecs = new Set<CdiSpec>();
  for (const name of names) {
    const m = /^([^=]+)=(.+)$/.exec(name);
    if (!m) throw new BerthError('USAGE', `--device ${name}: expected VENDOR/CLASS=NAME`, 'e.g. --device nvidia.com/gpu=0 (see the specs in /etc/cdi)');
    const [, kind, device] = m as unknown as [string, string, string];
    const ofKind = specs.filter((s) => s.kind === kind);
    const spec = ofKind.find((s) => s.devices.some((d) => d.name === device));
    if (!spec) {
      const known = ofKind.flatMap((s) => s.devices.map((d) => `${kind}=${d.name}`));
      throw new BerthError('DEVICE_UNKNOWN', `--device ${name}: no CDI spec in ${dirs.join(', ')} describes it`,
        known.length > 0 ? `this node has: ${known.join(', ')}` : ofKind.length === 0 && specs.length > 0 ? `the kinds described here are: ${[...new Set(specs.map((s) => s.kind))].join(', ')}` : 'generate the specs (e.g. nvidia-ctk cdi generate --output=/etc/cdi/nvidia.yaml)');
    }
    if (!appliedSpecs.has(spec)) {
      apply(b, root, spec.containerEdits, `cdi: ${kind} (${spec.file})`);
      appliedSpecs.add(spec);
    }
    apply(b, root, spec.devices.find((d) => d.name === device)!.containerEdits, `cdi: ${name}`);
  }
  return b;
}

export interface CdiFacts {
  root: string;
  dirs: readonly string[];
  /** Every spec in the CDI directories, read (and parsed, which may fail) when asked for. */
  specs(): CdiSpec[];
}

export const cdi = {
  name: 'CDI',
  settings: CDI_SETTINGS,
  facts: (root, settings) => ({ root, dirs: settings['cdi.dirs'], specs: () => loadCdiSpecs(root, settings['cdi.dirs']) }),
  plan(facts, { settings }) {
    const names = settings['run.devices'];
    return names.length === 0 ? [] : [applyDevices(facts.root, facts.specs(), facts.dirs, names)];
  },
  doctor(facts) {
    const specs = facts.specs();
    const described = specs.flatMap((s) => s.devices.map((d) => `${s.kind}=${d.name}`));
    return [{ name: 'CDI', verdict: 'ok', detail: specs.length === 0 ? `no specs in ${facts.dirs.join(', ')}` : `--device can use ${described.join(', ')}` }];
  },
} satisfies Binding<typeof CDI_SETTINGS, CdiFacts>;
