// Every setting berth reads from configuration files, in one table: its YAML key, its type,
// the environment variable that overrides it, and its default. The loader (load.ts) checks
// files and variables against it into a Config typed per setting; `berth config` prints it;
// the command-line flags of run/exec/shell are made from it.

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

export const SETTINGS = {
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
    type: 'strings', default: [], flag: '-B, --bind <spec>',
    describe: 'bind SRC[:DST[:ro|rw]] into the container; repeatable, or comma-separated (configured binds come first)',
  },
  'run.home': {
    type: 'boolean', default: true, flag: '--home',
    describe: 'bind $HOME and the working directory',
  },
  'run.rdma': {
    type: 'boolean', default: undefined, flag: '--rdma',
    describe: "bind the host's InfiniBand/RDMA stack in (default: where /dev/infiniband has devices)",
  },
  'run.gpus': {
    type: 'string', default: undefined, flag: '--gpus <which>',
    describe: "GPUs to bind in with the host's driver: all, none or device numbers (default: what the job was given)",
  },
  'run.mpi': {
    type: 'boolean', default: false, flag: '--mpi',
    describe: "replace the image's MPICH-ABI MPI with the host's (see mpi.library)",
  },
  'run.devices': {
    type: 'strings', default: [], flag: '--device <VENDOR/CLASS=NAME>',
    describe: 'apply a Container Device Interface device from the CDI specs (e.g. nvidia.com/gpu=0); repeatable',
  },
  'host.root': {
    type: 'path', env: 'BERTH_HOST_ROOT', default: '/',
    describe: "where the node's GPU, MPI and RDMA files are looked for (a tree with its own /etc/ld.so.cache; tests and staged driver trees)",
  },
  'gpu.nvidia-libraries': {
    type: 'strings',
    default: ['libcuda.so', 'libcudadebugger.so', 'libnvidia-ml.so', 'libnvidia-ptxjitcompiler.so', 'libnvidia-nvvm.so',
      'libnvidia-opencl.so', 'libnvidia-cfg.so', 'libnvidia-allocator.so', 'libnvidia-gpucomp.so', 'libnvidia-pkcs11.so',
      'libnvidia-pkcs11-openssl3.so', 'libnvcuvid.so', 'libnvidia-encode.so', 'libnvidia-opticalflow.so', 'libnvidia-fbc.so',
      'libnvidia-ngx.so', 'libnvoptix.so', 'libnvidia-rtcore.so', 'libnvidia-glcore.so', 'libnvidia-tls.so', 'libnvidia-glsi.so',
      'libnvidia-glvkspirv.so', 'libnvidia-eglcore.so', 'libGLX_nvidia.so', 'libEGL_nvidia.so', 'libGLESv2_nvidia.so',
      'libGLESv1_CM_nvidia.so', 'libvdpau_nvidia.so'],
    describe: "the NVIDIA driver's user-space libraries (soname prefixes, found through the ld.so cache), as NVIDIA's container toolkit lists them",
  },
  'gpu.nvidia-binaries': {
    type: 'strings', default: ['nvidia-smi', 'nvidia-debugdump', 'nvidia-persistenced', 'nvidia-cuda-mps-control', 'nvidia-cuda-mps-server'],
    describe: 'NVIDIA utilities bound into /usr/bin',
  },
  'gpu.amd-libraries': {
    type: 'strings', default: ['libamdhip64.so', 'libhsa-runtime64.so', 'libamd_comgr.so', 'librocm_smi64.so', 'libhsakmt.so', 'libdrm_amdgpu.so'],
    describe: 'ROCm libraries (soname prefixes, found through the ld.so cache)',
  },
  'gpu.amd-binaries': {
    type: 'strings', default: ['rocm-smi', 'rocminfo'],
    describe: 'ROCm utilities bound into /usr/bin',
  },
  'mpi.library': {
    type: 'path', default: undefined,
    describe: "the host MPI's main library for --mpi (default: libmpi.so.12 or libmpich.so.12 from the ld.so cache)",
  },
  'mpi.allow-older-minor': {
    type: 'boolean', default: false,
    describe: "let --mpi use a host MPI whose ABI minor version is older than the image's",
  },
  'rdma.libraries': {
    type: 'strings', default: [],
    describe: 'fabric libraries bound in with RDMA: sonames (e.g. libucp.so.0, libfabric.so.1) or absolute paths (e.g. their plugin directories)',
  },
  'cdi.dirs': {
    type: 'strings', default: ['/etc/cdi', '/var/run/cdi'],
    describe: 'where Container Device Interface specs are read for --device',
  },
} as const satisfies Record<string, Setting>;

export type SettingKey = keyof typeof SETTINGS;

/** Every setting's value, typed: what code below the configuration's edge reads. */
export type ConfigValues = SettingValues<typeof SETTINGS>;

/** Settings after loading: what each key is and where that came from. */
export interface Config {
  values: ConfigValues;
  sources: { [K in SettingKey]?: string };
}
