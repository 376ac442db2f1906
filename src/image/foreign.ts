// Images berth did not make: what they say about themselves, read as their own tools read it,
// so that each runs as it ran there. Three conventions are recognized by what the root holds:
//   Apptainer/Singularity  /.singularity.d: environment scripts (sourced in order when the
//                          container starts; build.ts), runscript, labels.json
//   enroot                 /etc/rc (enroot start's entrypoint) with /etc/environment, and
//                          /etc/fstab (mounts it asks for; the safe ones are kept)
//   Charliecloud           /ch/metadata.json (environment, working directory, labels)
// and anything else is a plain root: PATH's default, /bin/sh for run. Everything read here is
// the image author's text, checked for shape and bounded; nothing is executed on the host.
import { BerthError } from '../errors.js';
import { readElf } from '../host/elf.js';
import { METADATA_VERSION, type ImageMetadata } from '../squashfs/metadata.js';
import type { ImageFiles } from './files.js';

export type Startup = NonNullable<ImageMetadata['startup']>;

/** Where Apptainer keeps what an image says about itself. */
export const APPTAINER_DIR = '/.singularity.d';
export const APPTAINER_RUNSCRIPT = `${APPTAINER_DIR}/runscript`;

/** A mount an enroot image asks for in its /etc/fstab, as berth will honour it. */
export type FstabEntry = NonNullable<ImageMetadata['mounts']>[number];

const ELF_ARCH: Record<string, string> = { x86_64: 'amd64', aarch64: 'arm64', ppc64: 'ppc64le' };

function blankMetadata(source: string, architecture: string): ImageMetadata {
  return {
    berthImage: METADATA_VERSION,
    source,
    manifestDigest: null,
    configDigest: '',
    platform: { os: 'linux', architecture },
    created: null,
    config: { Env: [], Entrypoint: null, Cmd: null, WorkingDir: '', User: '', Labels: {}, Volumes: [], ExposedPorts: [], StopSignal: null },
    layers: [],
  };
}

/** The image's architecture from its shell's ELF header, when the format does not say. */
export function architectureOf(files: ImageFiles, fallback: string): string {
  for (const program of ['/bin/sh', '/usr/bin/env', '/bin/busybox']) {
    const data = files.read(program);
    if (!data) continue;
    try {
      return ELF_ARCH[readElf(data, program).machine] ?? fallback;
    } catch {
      // a script, or not ELF: try the next
    }
  }
  return fallback;
}

/** Text of a small file in the image, or undefined; a file over `limit` bytes is refused. */
function text(files: ImageFiles, p: string, limit = 1 << 20): string | undefined {
  const data = files.read(p);
  if (data && data.length > limit) {
    throw new BerthError('SOURCE_INVALID', `${files.image}: ${p} is ${data.length} bytes, too large to be what it claims`, 'check the image');
  }
  return data?.toString('utf8');
}

/** A JSON object of strings (labels), or {} when absent; anything else is the image's error. */
function stringRecord(value: unknown, where: string): Record<string, string> {
  if (value === undefined || value === null) return {};
  if (typeof value !== 'object' || Array.isArray(value)) {
    throw new BerthError('SOURCE_INVALID', `${where} is not a JSON object`, 'fix or remove it in the image');
  }
  return Object.fromEntries(Object.entries(value as Record<string, unknown>).map(([k, v]) => [k, typeof v === 'string' ? v : JSON.stringify(v)]));
}

function parseJson(data: string, where: string): unknown {
  try {
    return JSON.parse(data);
  } catch {
    throw new BerthError('SOURCE_INVALID', `${where} is not valid JSON`, 'fix or remove it in the image');
  }
}

/**
 * KEY=VALUE lines of enroot's /etc/environment (written from the OCI config's Env by `enroot
 * import`): blank lines and comments skipped, an `export ` and one level of quotes removed.
 */
export function parseEnvironmentFile(data: string): string[] {
  return data.split('\n').map((l) => l.trim()).filter((l) => l && !l.startsWith('#'))
    .map((l) => (l.startsWith('export ') ? l.slice(7).trim() : l))
    .filter((l) => /^[A-Za-z_][A-Za-z0-9_]*=/.test(l))
    .map((l) => l.replace(/^([^=]+)=(["'])(.*)\2$/, '$1=$3'));
}

/**
 * The mounts of an enroot image's /etc/fstab that berth keeps: a tmpfs at a path inside. The
 * rest is refused with a warning: a bind of the image's own directory onto itself (what
 * `enroot import` writes for a Volume) changes nothing in a read-only root, and an image does
 * not choose which of the host's files a container sees, nor any other file system.
 */
export function parseFstab(data: string, warn: (line: string) => void): FstabEntry[] {
  const out: FstabEntry[] = [];
  for (const raw of data.split('\n')) {
    const line = raw.trim();
    if (!line || line.startsWith('#')) continue;
    const [source, target, type, options = 'defaults'] = line.split(/\s+/);
    if (!target?.startsWith('/') || target.split('/').includes('..')) {
      warn(`its /etc/fstab line '${line}' has no absolute target; ignored`);
    } else if (type === 'tmpfs') {
      const kept = options.split(',').filter((o) => /^(mode=[0-7]{3,4}|size=[0-9]+[kmg%]?|ro)$/.test(o));
      out.push({ kind: 'tmpfs', target, options: kept });
    } else if (source?.startsWith('${ENROOT_ROOTFS}')) {
      // The image's own directory bound onto itself: nothing to do.
    } else {
      warn(`its /etc/fstab asks to mount ${source} at ${target} (${type}); an image does not choose what of the host a container sees, so berth leaves it out (use --bind)`);
    }
  }
  return out;
}

/** Which tool's conventions the image follows, by what its root holds. */
export function startupOf(files: ImageFiles): Startup | 'charliecloud' {
  if (files.realpath(APPTAINER_DIR)) return 'apptainer';
  if (files.read('/etc/rc') !== undefined && files.realpath('/etc/environment')) return 'enroot';
  if (files.read('/ch/metadata.json') !== undefined) return 'charliecloud';
  return 'plain';
}

/**
 * The metadata of an image berth did not make, as berth's own images carry it. `architecture`
 * is what the format says (a SIF's partition), else the image's shell tells.
 */
export function foreignMetadata(files: ImageFiles, source: string, architecture: string | undefined, fallbackArch: string, warn: (line: string) => void): ImageMetadata {
  const meta = blankMetadata(source, architecture ?? architectureOf(files, fallbackArch));
  const c = meta.config;
  const shell = files.realpath('/bin/sh') ? ['/bin/sh'] : null;
  const kind = startupOf(files);
  if (kind === 'apptainer') {
    meta.startup = 'apptainer';
    const labels = text(files, `${APPTAINER_DIR}/labels.json`);
    if (labels !== undefined) c.Labels = stringRecord(parseJson(labels, `${APPTAINER_DIR}/labels.json`), `${APPTAINER_DIR}/labels.json`);
    // `run` runs the runscript; an image without one has nothing to run (as Apptainer says).
    if (files.read(APPTAINER_RUNSCRIPT) !== undefined) c.Entrypoint = [APPTAINER_RUNSCRIPT];
  } else if (kind === 'enroot') {
    meta.startup = 'enroot';
    c.Entrypoint = ['/bin/sh', '/etc/rc']; // as enroot start runs it: `$SHELL /etc/rc [COMMAND...]`
    c.Env = parseEnvironmentFile(text(files, '/etc/environment') ?? '');
    meta.mounts = parseFstab(text(files, '/etc/fstab') ?? '', warn);
  } else if (kind === 'charliecloud') {
    meta.startup = 'plain';
    const where = '/ch/metadata.json';
    const doc = parseJson(text(files, where)!, where) as { env?: unknown; cwd?: unknown; labels?: unknown } | null;
    c.Env = Object.entries(stringRecord(doc?.env, `${where} env`)).map(([k, v]) => `${k}=${v}`);
    c.WorkingDir = typeof doc?.cwd === 'string' ? doc.cwd : '';
    c.Labels = stringRecord(doc?.labels, `${where} labels`);
    c.Cmd = shell;
  } else {
    meta.startup = 'plain';
    c.Cmd = shell;
  }
  return meta;
}
