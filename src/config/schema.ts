// Every setting berth reads from configuration files, in one table: its YAML key, its type,
// the environment variable that overrides it, and its default. The loader validates files
// against it and `berth config` prints it; command-line flags name these settings too.

export type SettingType = 'path' | 'seconds' | 'count' | 'strings';

export interface Setting {
  type: SettingType;
  /** Environment variable that wins over the files. */
  env?: string;
  default: string | number | string[] | undefined;
  describe: string;
}

export const SETTINGS = {
  'cache.dir': {
    type: 'path', env: 'BERTH_CACHE_DIR', default: undefined,
    describe: 'where pulled blobs and converted images are kept; a shared directory serves a whole site (default: ~/.cache/berth)',
  },
  'runtime.dir': {
    type: 'path', env: 'BERTH_RUNTIME_DIR', default: undefined,
    describe: "the image servers' sockets and locks, per user (default: $XDG_RUNTIME_DIR/berth, else /tmp/berth-UID)",
  },
  'images.linger': {
    type: 'seconds', env: 'BERTH_IMAGE_LINGER', default: 10,
    describe: 'seconds an idle image server waits for the next container',
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
    type: 'strings', default: [],
    describe: 'binds every container gets, as --bind takes them (SRC[:DST[:ro|rw]])',
  },
} as const satisfies Record<string, Setting>;

export type SettingKey = keyof typeof SETTINGS;

/** Settings after loading: what each key is and where that came from. */
export interface Config {
  values: { [K in SettingKey]?: string | number | string[] };
  sources: { [K in SettingKey]?: string };
}
