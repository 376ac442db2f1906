// Every setting berth reads from configuration files, in one table: its YAML key, its type,
// the environment variable that overrides it, and its default. berth's own are here; each host
// binding defines its own beside its code (src/host/rdma.ts ...) and they are joined here. The
// loader (load.ts) checks files and variables against the table into a Config typed per
// setting; `berth config` prints it; the command-line flags of run/exec/shell are made from it.
import { BINDINGS } from '../host/bindings.js';
import type { TrustPolicy } from '../signature/policy.js';

export type SettingType = 'path' | 'seconds' | 'count' | 'strings' | 'string' | 'boolean';

export interface Setting {
  type: SettingType;
  /** Environment variable that wins over the files. */
  env?: string;
  default: string | number | boolean | readonly string[] | undefined;
  describe: string;
  /**
   * The command-line flag of run/exec/shell that sets it for one container (a boolean gets
   * --NAME and --no-NAME; a list is repeatable and adds to the configured one).
   */
  flag?: string;
}

export type SettingTable = Record<string, Setting>;

/** What a setting of each type holds once loaded and checked. */
interface ValueOfType {
  path: string;
  seconds: number;
  count: number;
  strings: string[];
  string: string;
  boolean: boolean;
}

/** A setting's value: of its type, or undefined where it has no default. */
export type SettingValueOf<S extends Setting> = ValueOfType[S['type']] | (undefined extends S['default'] ? undefined : never);

/** The values of a table of settings, each typed by its setting. */
export type SettingValues<T extends SettingTable> = { -readonly [K in keyof T]: SettingValueOf<T[K]> };

/** berth's own settings; each host binding brings its own (src/host/bindings.ts). */
const BERTH_SETTINGS = {
  'cache.dir': {
    type: 'path', env: 'BERTH_CACHE_DIR', default: undefined,
    describe: 'your own cache of pulled blobs and converted images, which only you may write (default: ~/.cache/berth)',
  },
  'cache.site': {
    type: 'path', env: 'BERTH_SITE_CACHE', default: undefined,
    describe: "a site's shared cache of converted images: read, never written, by everyone but its owner (cache.site-owner), who fills it with berth pull",
  },
  'cache.site-owner': {
    type: 'string', default: undefined,
    describe: 'the account (name or uid) that writes cache.site; its files are trusted like root\'s (default: root alone)',
  },
  'runtime.dir': {
    type: 'path', env: 'BERTH_RUNTIME_DIR', default: undefined,
    describe: "the image servers' sockets and locks, per user (default: in a Slurm job whose servers berth's plugin keeps (it has an extern or batch step), the plugin's runtime_dir; else $XDG_RUNTIME_DIR/berth, else /tmp/berth-UID)",
  },
  'images.linger': {
    type: 'seconds', env: 'BERTH_IMAGE_LINGER', default: 10,
    describe: 'seconds an idle image server waits for the next container',
  },
  'images.job-linger': {
    type: 'seconds', env: 'BERTH_IMAGE_JOB_LINGER', default: 600,
    describe: "in a Slurm job: seconds an idle image server waits for the job's next step or container on the node (the job's end stops it, where the SPANK plugin is installed)",
  },
  'build.cache-gb': {
    type: 'count', env: 'BERTH_BUILD_CACHE_GB', default: 20,
    describe: "GB that berth build's cache may hold: after a build, the steps used least recently go first (0: no bound; berth prune empties it)",
  },
  'pull.parallel': {
    type: 'count', default: 3,
    describe: 'layers downloaded at once (--parallel)',
  },
  'pull.registries': {
    type: 'strings', default: undefined,
    describe: 'if set, the only registries images may be pulled from (host[:port]; docker.io for Docker Hub)',
  },
  'run.binds': {
    type: 'strings', default: [], flag: '-B, --bind <spec>',
    describe: 'bind SRC[:DST[:ro|rw|noexec|nosuid|nodev]] into the container; repeatable, or comma-separated (configured binds and APPTAINER_BIND come first)',
  },
  'run.home': {
    type: 'boolean', default: true, flag: '--mount-home',
    describe: "bind $HOME and the working directory (--no-home leaves them out; --mount-home is pyxis's --container-mount-home)",
  },
  'host.root': {
    type: 'path', env: 'BERTH_HOST_ROOT', default: '/',
    describe: "where the node's GPU, MPI and RDMA files are looked for (a tree with its own /etc/ld.so.cache; tests and staged driver trees)",
  },
} as const satisfies SettingTable;

/** The settings tables of a list of bindings, as one type. */
type Joined<B> = B extends readonly [{ settings: infer S }, ...infer Rest] ? S & Joined<Rest> : unknown;

/**
 * Every setting: berth's own, then each binding's, in the order of BINDINGS (the order in which
 * `berth config` and the commands' help list them). No two may share a key (a unit test checks).
 */
export const SETTINGS = Object.assign({}, BERTH_SETTINGS, ...BINDINGS.map((b) => b.settings)) as typeof BERTH_SETTINGS & Joined<typeof BINDINGS>;

export type SettingKey = keyof typeof SETTINGS;

/** A flag's long name: '--bind' of '-B, --bind <spec>'. */
export function longFlag(flag: string): string {
  return /--[\w-]+/.exec(flag)![0];
}

/** Where commander keeps a flag's value in a command's options: its long name in camel case ('--writable-tmpfs': writableTmpfs). */
export function flagAttribute(flag: string): string {
  return longFlag(flag).slice(2).replace(/-(\w)/g, (_, c: string) => c.toUpperCase());
}

/** Every setting's value, typed: what code below the configuration's edge reads. */
export type ConfigValues = SettingValues<typeof SETTINGS>;

/** Settings after loading: what each key is and where that came from. */
export interface Config {
  values: ConfigValues;
  sources: { [K in SettingKey]?: string };
  /** The `trust:` sections of the site's file and the user's (src/signature/policy.ts). */
  trust: TrustPolicy;
}
