// The host bindings, in one list. A binding brings one part of this node into containers (the
// RDMA stack, a GPU driver, CDI devices, the host MPI) and is one unit: its settings (which
// are also its configuration keys, variables and run/exec/shell flags), the facts it reads from
// the node, what it adds to a container, and what `berth doctor` says of it. `berth run`
// (plan/prepare.ts) and `berth doctor` (doctor.ts) both go through this list, from the same
// facts, so they cannot disagree. A new binding is a file beside these and one line in BINDINGS
// (ARCHITECTURE.md says what the Slurm plugin needs besides).
import type { ConfigValues, SettingTable, SettingValueOf, SettingValues } from '../config/schema.js';
import type { ImageFiles } from '../image/files.js';
import type { HostBinding } from '../plan/types.js';
import { cdi } from './cdi.js';
import { gpu } from './gpu.js';
import { mpi } from './mpi.js';
import { rdma } from './rdma.js';

/** One line of `berth doctor`: what was found and, when it is not fine, what to do. */
export interface DoctorLine {
  name: string;
  verdict: 'ok' | 'warn' | 'fail';
  detail: string;
  fix?: string;
}

/** The image a container runs, for bindings that replace what it has (MPI). */
export interface ImageView {
  path: string;
  architecture: string;
  /** Its files, read without mounting it; opened when first asked for. */
  files(): ImageFiles;
}

/** What one container asks of a binding. */
export interface BindingRequest<S extends SettingTable = SettingTable> {
  /** The binding's settings for this container: a flag wins over the configured value, and a list flag adds to it. */
  settings: SettingValues<S>;
  /** The settings the command line gave, so that a refusal can name the flag. */
  given: ReadonlySet<keyof S>;
  /** The environment berth runs in (the GPUs Slurm gave the job, PMIx's directories). */
  env: Record<string, string | undefined>;
  image: ImageView;
}

/**
 * A binding. `facts` reads only what deciding needs (device nodes); what costs more or can fail
 * (the ld.so cache, ELF headers, CDI specs) is read by the functions it returns, when `plan` or
 * `doctor` asks, so that a container that wants none of it pays nothing. `root` stands in for
 * / (host.root), so that fixtures can play a GPU or InfiniBand node.
 */
export interface Binding<S extends SettingTable = SettingTable, F = unknown> {
  /** As doctor prints it: RDMA, GPU, CDI, MPI. */
  readonly name: string;
  /** Its settings, joined to berth's own in config/schema.ts; those with a `flag` are run/exec/shell's flags. */
  readonly settings: S;
  facts(root: string, settings: SettingValues<S>): F;
  /** What it adds to a container: nothing, or what it binds; throws where the container cannot have what was asked. */
  plan(facts: F, request: BindingRequest<S>): HostBinding[];
  doctor(facts: F): DoctorLine[];
}

/** Every binding, in the order their binds enter a plan. */
export const BINDINGS = [rdma, gpu, cdi, mpi] as const;

/** The bindings as their common interface, for code that treats them all alike. */
export const ALL_BINDINGS: readonly Binding[] = BINDINGS;

type AnyValue = SettingValueOf<SettingTable[string]>;

/**
 * A binding's settings for one container: the configured values, with the command line's
 * (`flags`, by setting) winning, or for a list added after the configured entries.
 */
export function bindingSettings(binding: Binding, configured: ConfigValues, flags: Partial<Record<string, AnyValue>> = {}): Pick<BindingRequest, 'settings' | 'given'> {
  const values: Record<string, AnyValue> = configured;
  const settings: Record<string, AnyValue> = {};
  const given = new Set<string>();
  for (const key of Object.keys(binding.settings)) {
    const flag = flags[key];
    const value = values[key];
    if (flag !== undefined && !(Array.isArray(flag) && flag.length === 0)) given.add(key);
    settings[key] = Array.isArray(value) && Array.isArray(flag) ? [...value, ...flag] : flag ?? value;
  }
  return { settings, given };
}
