// A launch plan: everything berth-helper does to start one container, as data. It is computed
// in TypeScript (build.ts, pure) and carried out by the C helper (native/helper), which reads
// it in the text form of serialize.ts. GPU, MPI and RDMA binding and the Slurm plugin add to
// or reuse plans; they never need the helper to make decisions.

import type { Limits } from './limits.js';

export type OpKind = 'bind' | 'tmpfs' | 'proc' | 'symlink' | 'mkdir' | 'line' | 'verify';

/** What the helper does when the target (or a bind's source) does not exist. */
export type IfMissing = 'fail' | 'skip' | 'create';

export interface MountOp {
  kind: OpKind;
  /** bind: host path; symlink: link target; line: the line to append; verify: the image's loader; otherwise ''. */
  source: string;
  /** Absolute path inside the container. */
  target: string;
  /** bind/tmpfs: ro, nosuid, nodev, noexec, rbind, mode=, size=; line: the key to look for. */
  options: string[];
  ifMissing: IfMissing;
  /** Why the op exists, quoted in errors: "home: $HOME", "--bind /data". */
  origin: string;
}

/** --net none: a loopback only; --net user: pasta at `pasta`, with `publish` (HOST_PORT:CONTAINER_PORT) ports. */
export type Network = { mode: 'none' } | { mode: 'user'; pasta: string; publish: string[] };

export interface LaunchPlan {
  image: string;
  /** A squashfs file (served through FUSE), or an unpacked root directory (bound read-only). */
  imageFormat: 'squashfs' | 'directory';
  /** Where the squashfs starts in the file: 0, but for a SIF's root partition. */
  imageOffset: number;
  /**
   * Containers of one image share an image server (one FUSE mount, one warm page cache) only
   * within a scope: slurm-JOB in a Slurm job (its steps share them), or '' outside Slurm.
   */
  scope: string;
  /** Seconds an idle image server waits for the next container before it unmounts and exits. */
  linger: number;
  /**
   * In a Slurm job: seconds it waits instead, while the job lives on the node (the helper
   * follows the job's batch or extern step there), for the job's next step.
   */
  jobLinger?: number;
  /** Base directory for the helper's private per-run directory. */
  runtimeDir: string;
  /** 'self' maps the caller to itself; 'root' (--fakeroot) maps the caller to uid 0. */
  userns: 'self' | 'root';
  /**
   * berth build's RUN steps: chown to other ids, the set*id calls, setgroups and mknod of a
   * device return 0 and do nothing (a seccomp filter, native/helper/seccomp.c), as package
   * managers run as root expect. Never set for a container of `berth run`.
   */
  fakeSyscalls?: boolean;
  /**
   * --user: the container's process is this uid and gid, in a user namespace of its own nested
   * in the image server's that maps them to the caller (so its files are the caller's outside).
   */
  user?: { uid: number; gid: number };
  /** --writable-tmpfs: the root stays writable (changes go to a tmpfs and vanish). */
  writable: boolean;
  /** --overlay DIR: the writable root's changes go to DIR/upper and outlive the container. */
  overlay?: string;
  /**
   * A PID namespace of its own, with its own /proc and a small init (--pid, and what --fakeroot
   * and --containall imply): the container sees no process of the host, so none of their
   * roots through /proc/PID/root either.
   */
  pidns: boolean;
  /** An IPC namespace of its own (--ipc; --containall implies it). */
  ipcns?: boolean;
  /** A UTS namespace of its own with this hostname (--uts, --hostname). */
  hostname?: string;
  /** The host's network (absent), a loopback only (none), or pasta's user-mode network (user). */
  net?: Network;
  cwd: string;
  /** Where the helper looks for argv[0]: the container's PATH. */
  path: string;
  env: string[];
  argv: string[];
  ops: MountOp[];
  /**
   * A Slurm step's plan (see stepPlan): each task keeps its own environment (rank, PMI, GPUs),
   * so `env` holds only what changes and these host variables are removed.
   */
  unset?: string[];
  /** A step's container: seconds it waits for the next task after the last has ended. */
  stepLinger?: number;
  /** A step's plan: the Slurm variables it was made from (STEP_PLAN_INPUTS, src/plan/contract.ts), which the plugin keys its cached plans by. */
  inputs?: string[];
  /**
   * A step's container: run once when it starts, before any task joins (the image's
   * Entrypoint with `true` as its command, for --container-entrypoint, as pyxis runs it).
   */
  init?: string[];
  /**
   * berth instance start: the instance's name (the helper keeps its state in
   * RUNTIME/instances/NAME); exec instance://NAME: the instance to join (plan/instance.ts).
   */
  instance?: string;
  /**
   * --memory, --cpus, --pids-limit (plan/limits.ts): what the container may use. Data only: at
   * run time berth makes the cgroup (runtime/cgroup.ts) and names it in `cgroup`.
   */
  limits?: Limits;
  /** --limits best-effort: a limit that cannot be applied is a warning, not an error. */
  limitsBestEffort?: boolean;
  /** The container's cgroup (a host path), which the helper moves the container into before exec. */
  cgroup?: string;
}

/**
 * What binding one part of the host (the RDMA stack, a GPU vendor's driver, MPI, a CDI device)
 * adds to a container. Computed from the node (src/host) before anything is mounted; buildPlan
 * turns it into ops. Sources are host paths (under a host root in tests), targets are inside.
 */
export interface HostBinding {
  /** Device nodes, bound without nodev. */
  devices: { source: string; target: string }[];
  /** Files and directories, bound read-only unless writable. */
  binds: { source: string; target: string; origin: string; writable?: boolean }[];
  /** Libraries bound into HOST_LIB_DIR under `name`; that directory leads LD_LIBRARY_PATH. */
  libraries: { source: string; name: string; origin: string }[];
  /** Container directories put before the image's LD_LIBRARY_PATH (libraries bound in place). */
  libraryPath: string[];
  /** Symbolic links made inside: link -> target. */
  symlinks: { link: string; target: string; origin: string }[];
  env: string[];
  /** Injected libraries (container paths) that must resolve inside, checked before the command starts. */
  verify: string[];
}

/** Where injected host libraries appear in every container (a tmpfs, so the image is untouched). */
export const HOST_LIB_DIR = '/.berth/host/lib';

export function emptyBinding(): HostBinding {
  return { devices: [], binds: [], libraries: [], libraryPath: [], symlinks: [], env: [], verify: [] };
}
