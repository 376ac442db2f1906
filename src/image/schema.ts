// Image JSON checked at the edge, once, at conversion: the OCI image index, manifest and config
// (opencontainers/image-spec: image-index.md, manifest.md, config.md, descriptor.md), Docker's
// schema 2 manifest and manifest list (the same shapes under Docker media types), and the
// manifest.json of `docker save`. JSON.parse gives `unknown`; these functions give typed
// documents, or one BerthError that lists the problems by path ("config.Env[2]: must be a
// string, not null"). So what berth keeps in an image's metadata is known good, and run and
// inspect never meet a wrongly typed field.
//
// What is checked: every field berth reads, for its type and for what the spec requires of it
// (a digest berth can verify, a size that is a whole number, NAME=VALUE in Env, an absolute
// WorkingDir, rootfs.type "layers"). Unknown fields are ignored, as the spec says readers MUST,
// and so are known ones berth never reads (history, author, Healthcheck). An optional field
// that is null counts as absent, since Go writes a nil slice or map as null and Docker's
// configs are full of them; null inside a list or a map is an error.
import { BerthError } from '../errors.js';
import { digestProblem } from './digest.js';
import type { Platform } from './platform.js';
import type { ImageConfig } from './source.js';

export const MEDIA = {
  ociIndex: 'application/vnd.oci.image.index.v1+json',
  ociManifest: 'application/vnd.oci.image.manifest.v1+json',
  dockerList: 'application/vnd.docker.distribution.manifest.list.v2+json',
  dockerManifest: 'application/vnd.docker.distribution.manifest.v2+json',
  dockerSchema1: 'application/vnd.docker.distribution.manifest.v1+json',
  dockerSchema1Signed: 'application/vnd.docker.distribution.manifest.v1+prettyjws',
} as const;

const INDEX_TYPES = new Set<string>([MEDIA.ociIndex, MEDIA.dockerList]);
const MANIFEST_TYPES = new Set<string>([MEDIA.ociManifest, MEDIA.dockerManifest]);

export interface Descriptor {
  mediaType: string;
  digest: string;
  /** Bytes of the blob; -1 only for descriptors berth makes itself and whose size it does not know. */
  size: number;
  annotations?: Record<string, string>;
  platform?: Platform;
}

export interface IndexDoc {
  kind: 'index';
  manifests: Descriptor[];
}

export interface ManifestDoc {
  kind: 'manifest';
  config: Descriptor;
  layers: Descriptor[];
}

/** One image of a classic `docker save` archive's manifest.json. */
export interface ArchiveEntry {
  Config: string;
  RepoTags: string[];
  Layers: string[];
}

const HINT = 'the image is malformed (written by a broken tool, or damaged); rebuild it, or report it to whoever publishes it';

/** Problems found so far, each "path: what is wrong". */
class Reading {
  readonly problems: string[] = [];

  note(path: string, message: string): undefined {
    this.problems.push(path ? `${path}: ${message}` : message);
    return undefined;
  }

  bad(path: string, want: string, value: unknown): undefined {
    return this.note(path, `must be ${want}, not ${kindOf(value)}`);
  }

  /** The value, or a BerthError listing the problems (the first five: one is usually enough). */
  result<T>(value: T | undefined, what: string): T {
    const n = this.problems.length;
    if (n === 0 && value !== undefined) return value;
    const shown = this.problems.slice(0, 5).join('; ') + (n > 5 ? `; and ${n - 5} more` : '');
    throw new BerthError('SOURCE_INVALID', `${what} is malformed: ${shown}`, HINT);
  }
}

type Reader<T> = (r: Reading, value: unknown, path: string) => T | undefined;
type Fields = Record<string, unknown>;

function kindOf(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'a list';
  if (typeof v === 'number') return `a number (${v})`;
  if (typeof v === 'boolean') return String(v);
  if (typeof v === 'string') return `a string ('${v.length > 40 ? `${v.slice(0, 40)}…` : v}')`;
  return typeof v === 'object' ? 'an object' : typeof v;
}

function at(path: string, key: string): string {
  if (/^[A-Za-z_][\w.]*$/.test(key)) return path ? `${path}.${key}` : key;
  return `${path}[${JSON.stringify(key)}]`;
}

/** A field that must be there: absent is a problem, and null is a wrong type like any other. */
function need<T>(r: Reading, o: Fields, key: string, path: string, read: Reader<T>): T | undefined {
  const v = Object.hasOwn(o, key) ? o[key] : undefined;
  return v === undefined ? r.note(at(path, key), 'is missing') : read(r, v, at(path, key));
}

/** A field that may be absent, or null. */
function may<T>(r: Reading, o: Fields, key: string, path: string, read: Reader<T>): T | undefined {
  const v = Object.hasOwn(o, key) ? o[key] : undefined;
  return v === undefined || v === null ? undefined : read(r, v, at(path, key));
}

const object: Reader<Fields> = (r, v, path) =>
  typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as Fields) : r.bad(path, 'an object', v);

const string: Reader<string> = (r, v, path) => (typeof v === 'string' ? v : r.bad(path, 'a string', v));

function listOf<T>(item: Reader<T>): Reader<T[]> {
  return (r, v, path) => {
    if (!Array.isArray(v)) return r.bad(path, 'a list', v);
    const out: T[] = [];
    v.forEach((x: unknown, i) => {
      const got = item(r, x, `${path}[${i}]`);
      if (got !== undefined) out.push(got);
    });
    return out;
  };
}

function mapOf<T>(item: Reader<T>): Reader<Record<string, T>> {
  return (r, v, path) => {
    const o = object(r, v, path);
    if (!o) return undefined;
    const entries: [string, T][] = [];
    for (const [k, x] of Object.entries(o)) {
      const got = item(r, x, at(path, k));
      if (got !== undefined) entries.push([k, got]);
    }
    return Object.fromEntries(entries); // own data properties: a key "__proto__" stays a key
  };
}

/** Volumes and ExposedPorts: berth keeps only the keys; the values are ({}) by the spec. */
const anything: Reader<unknown> = () => ({});

const size: Reader<number> = (r, v, path) =>
  typeof v === 'number' && Number.isSafeInteger(v) && v >= 0 ? v : r.bad(path, 'a whole number of bytes', v);

const digest: Reader<string> = (r, v, path) => {
  const s = string(r, v, path);
  const problem = s === undefined ? undefined : digestProblem(s);
  return problem ? r.note(path, problem) : s;
};

/** RFC 6838 type/subtype, as descriptor.md asks. */
const mediaType: Reader<string> = (r, v, path) => {
  const s = string(r, v, path);
  if (s === undefined || /^[A-Za-z0-9][\w!#$&^.+-]{0,126}\/[A-Za-z0-9][\w!#$&^.+-]{0,126}$/.test(s)) return s;
  return r.note(path, `must be a media type (type/subtype), not '${s.slice(0, 80)}'`);
};

const platform: Reader<Platform> = (r, v, path) => {
  const o = object(r, v, path);
  if (!o) return undefined;
  const os = need(r, o, 'os', path, string);
  const architecture = need(r, o, 'architecture', path, string);
  const variant = may(r, o, 'variant', path, string);
  if (os === undefined || architecture === undefined) return undefined;
  return variant ? { os, architecture, variant } : { os, architecture };
};

const descriptor: Reader<Descriptor> = (r, v, path) => {
  const o = object(r, v, path);
  if (!o) return undefined;
  const d = {
    mediaType: need(r, o, 'mediaType', path, mediaType),
    digest: need(r, o, 'digest', path, digest),
    size: need(r, o, 'size', path, size),
  };
  const annotations = may(r, o, 'annotations', path, mapOf(string));
  const plat = may(r, o, 'platform', path, platform);
  if (d.mediaType === undefined || d.digest === undefined || d.size === undefined) return undefined;
  return { mediaType: d.mediaType, digest: d.digest, size: d.size, ...(annotations ? { annotations } : {}), ...(plat ? { platform: plat } : {}) };
};

function schemaVersion2(r: Reading, o: Fields): void {
  if (o['schemaVersion'] !== 2) r.note('schemaVersion', `must be 2, not ${o['schemaVersion'] === undefined ? 'missing' : kindOf(o['schemaVersion'])}`);
}

function indexFields(r: Reading, o: Fields): IndexDoc | undefined {
  schemaVersion2(r, o);
  may(r, o, 'mediaType', '', mediaType);
  const manifests = need(r, o, 'manifests', '', listOf(descriptor));
  return manifests && { kind: 'index', manifests };
}

/** A layout's index.json (or a nested index whose kind is known). */
export function readIndex(raw: unknown, what: string): IndexDoc {
  const r = new Reading();
  const o = object(r, raw, '');
  return r.result(o && indexFields(r, o), what);
}

/**
 * A manifest or an index, told apart as the spec does (its mediaType, else the one its
 * descriptor or the registry declared, else its fields); schema 1 and artifacts are refused.
 */
export function readManifestOrIndex(raw: unknown, what: string, declared?: string): IndexDoc | ManifestDoc {
  const r = new Reading();
  const o = r.result(object(r, raw, ''), what);
  const own = typeof o['mediaType'] === 'string' ? o['mediaType'] : undefined;
  const type = own ?? declared ?? (o['manifests'] !== undefined ? MEDIA.ociIndex : MEDIA.ociManifest);
  if (type === MEDIA.dockerSchema1 || type === MEDIA.dockerSchema1Signed || o['schemaVersion'] === 1) {
    throw new BerthError('UNSUPPORTED_MEDIA_TYPE', `${what} is a Docker schema 1 manifest, which is deprecated and unsupported`,
      'push the image again with a current Docker or skopeo, which write schema 2 or OCI manifests');
  }
  if (INDEX_TYPES.has(type) || (o['manifests'] !== undefined && o['layers'] === undefined)) return r.result(indexFields(r, o), what);
  if (!MANIFEST_TYPES.has(type) || o['config'] === undefined || o['layers'] === undefined) {
    throw new BerthError('UNSUPPORTED_MEDIA_TYPE', `${what} has media type '${type.slice(0, 100)}', not an image manifest`,
      'name an image, not an artifact or attestation');
  }
  schemaVersion2(r, o);
  may(r, o, 'mediaType', '', mediaType);
  const config = need(r, o, 'config', '', descriptor);
  const layers = need(r, o, 'layers', '', listOf(descriptor));
  return r.result(config && layers && { kind: 'manifest', config, layers }, what);
}

/** NAME=VALUE with a name, as config.md says and as a process environment needs. */
const envEntry: Reader<string> = (r, v, path) => {
  const s = string(r, v, path);
  return s === undefined || s.indexOf('=') > 0 ? s : r.note(path, `must be NAME=VALUE, not '${s.slice(0, 80)}'`);
};

/** Docker refuses a relative WorkingDir at build and at run ("needs to be an absolute path"). */
const workingDir: Reader<string> = (r, v, path) => {
  const s = string(r, v, path);
  return s === undefined || s === '' || s.startsWith('/') ? s : r.note(path, `must be an absolute path, not '${s.slice(0, 80)}'`);
};

const strings = listOf(string);

function runConfig(r: Reading, v: unknown, path: string): ImageConfig['config'] | undefined {
  const o = object(r, v, path);
  if (!o) return undefined;
  const c: ImageConfig['config'] = {
    User: may(r, o, 'User', path, string),
    Env: may(r, o, 'Env', path, listOf(envEntry)),
    Entrypoint: may(r, o, 'Entrypoint', path, strings),
    Cmd: may(r, o, 'Cmd', path, strings),
    WorkingDir: may(r, o, 'WorkingDir', path, workingDir),
    Labels: may(r, o, 'Labels', path, mapOf(string)),
    Volumes: may(r, o, 'Volumes', path, mapOf(anything)),
    ExposedPorts: may(r, o, 'ExposedPorts', path, mapOf(anything)),
    StopSignal: may(r, o, 'StopSignal', path, string),
  };
  return c;
}

const rootfs: Reader<NonNullable<ImageConfig['rootfs']>> = (r, v, path) => {
  const o = object(r, v, path);
  if (!o) return undefined;
  const type = need(r, o, 'type', path, string);
  if (type !== undefined && type !== 'layers') r.note(at(path, 'type'), `must be "layers", not '${type.slice(0, 40)}'`);
  const diffIds = need(r, o, 'diff_ids', path, listOf(digest));
  return type !== undefined && diffIds ? { type, diff_ids: diffIds } : undefined;
};

/** An image config (config.md; Docker's image JSON has the same fields). */
export function readImageConfig(raw: unknown, what: string): ImageConfig {
  const r = new Reading();
  const o = r.result(object(r, raw, ''), what);
  const architecture = need(r, o, 'architecture', '', string);
  const os = need(r, o, 'os', '', string);
  const variant = may(r, o, 'variant', '', string);
  const created = may(r, o, 'created', '', string);
  const config = may(r, o, 'config', '', runConfig);
  const fs = need(r, o, 'rootfs', '', rootfs);
  const ok = architecture !== undefined && os !== undefined && fs !== undefined;
  return r.result(ok ? {
    architecture, os, rootfs: fs, config: config ?? {},
    ...(variant ? { variant } : {}), ...(created !== undefined ? { created } : {}),
  } : undefined, what);
}

const archiveEntry: Reader<ArchiveEntry> = (r, v, path) => {
  const o = object(r, v, path);
  if (!o) return undefined;
  const config = need(r, o, 'Config', path, string);
  const repoTags = may(r, o, 'RepoTags', path, strings);
  const layers = need(r, o, 'Layers', path, strings);
  return config !== undefined && layers ? { Config: config, RepoTags: repoTags ?? [], Layers: layers } : undefined;
};

/** manifest.json of a classic `docker save` archive: a list, one entry per image. */
export function readArchiveManifest(raw: unknown, what: string): ArchiveEntry[] {
  const r = new Reading();
  return r.result(listOf(archiveEntry)(r, raw, ''), what);
}

/** JSON.parse for image documents: broken JSON is the image's fault, not berth's. */
export function parseJson(data: Buffer, what: string): unknown {
  try {
    return JSON.parse(data.toString('utf8')) as unknown;
  } catch (e: unknown) {
    throw new BerthError('SOURCE_INVALID', `${what} is not valid JSON`, 'the image is corrupt; copy or save it again', { cause: e });
  }
}
