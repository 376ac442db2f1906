// Image JSON at the edge (src/image/schema.ts) and the digests berth can verify
// (src/image/digest.ts): one table of wrongly typed documents, each refused with its path.
import { describe, expect, it } from 'vitest';
import { digestProblem, verifyBytes } from '../../src/image/digest.js';
import { readArchiveManifest, readImageConfig, readIndex, readManifestOrIndex } from '../../src/image/schema.js';

const D = `sha256:${'a'.repeat(64)}`;
const desc = { mediaType: 'application/vnd.oci.image.manifest.v1+json', digest: D, size: 10 };
const layer = { mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: D, size: 10 };
const manifest = { schemaVersion: 2, mediaType: 'application/vnd.oci.image.manifest.v1+json', config: { ...desc, mediaType: 'application/vnd.oci.image.config.v1+json' }, layers: [layer] };
const config = { architecture: 'amd64', os: 'linux', config: { Env: ['A=1'] }, rootfs: { type: 'layers', diff_ids: [D] } };

function problem(f: () => unknown): string {
  try {
    f();
  } catch (e: unknown) {
    return (e as Error).message;
  }
  return 'accepted';
}

describe('digests', () => {
  it.each([
    [D, undefined],
    [`sha512:${'0'.repeat(128)}`, undefined],
    ['sha256:abc', "is not a sha256 digest (64 lowercase hex digits): 'sha256:abc'"],
    [`sha512:${'0'.repeat(64)}`, 'is not a sha512 digest (128 lowercase hex digits)'],
    [`md5:${'0'.repeat(32)}`, "uses the digest algorithm 'md5', which berth cannot verify (it checks sha256 and sha512)"],
    [`constructor:${'0'.repeat(64)}`, "uses the digest algorithm 'constructor'"],
    ['nodigest', "must be a digest ALGORITHM:HEX, not 'nodigest'"],
    ['', "must be a digest ALGORITHM:HEX, not ''"],
  ])('%s', (digest, expected) => {
    if (expected === undefined) expect(digestProblem(digest)).toBeUndefined();
    else expect(digestProblem(digest)).toContain(expected);
  });

  it('verifies sha512 as well as sha256, with both digests in the message', () => {
    const data = Buffer.from('hello');
    const good = 'sha512:9b71d224bd62f3785d96d46ad3ea3d73319bfbc2890caadae2dff72519673ca72323c3d99ba5c11d7c7acc6e14b8c5da0c4663475c2e5c3adef46f73bcdec043';
    expect(() => verifyBytes(data, good, 'x', 'h')).not.toThrow();
    expect(problem(() => verifyBytes(Buffer.from('hellO'), good, 'blob x', 'h'))).toMatch(/^blob x does not match its digest: expected sha512:9b71.*, got sha512:[0-9a-f]{128}$/);
    expect(problem(() => verifyBytes(data, `md5:${'0'.repeat(32)}`, 'blob x', 'h'))).toContain("blob x: the digest uses the digest algorithm 'md5'");
  });
});

describe('image JSON refused with the field named', () => {
  const with_ = <T extends object>(base: T, patch: object): unknown => ({ ...base, ...patch });
  const runConfig = (patch: object) => with_(config, { config: { ...config.config, ...patch } });
  it.each([
    ['index: manifests not a list', () => readIndex({ schemaVersion: 2, manifests: {} }, 'I'), 'I is malformed: manifests: must be a list, not an object'],
    ['index: manifests missing', () => readIndex({ schemaVersion: 2 }, 'I'), 'manifests: is missing'],
    ['index: a null entry', () => readIndex({ schemaVersion: 2, manifests: [desc, null] }, 'I'), 'manifests[1]: must be an object, not null'],
    ['index: schemaVersion 3', () => readIndex({ schemaVersion: 3, manifests: [] }, 'I'), 'schemaVersion: must be 2, not a number (3)'],
    ['index: a list', () => readIndex([], 'I'), 'I is malformed: must be an object, not a list'],
    ['index: a platform without os', () => readIndex({ schemaVersion: 2, manifests: [{ ...desc, platform: { architecture: 'amd64' } }] }, 'I'), 'manifests[0].platform.os: is missing'],
    ['index: annotations holding a number', () => readIndex({ schemaVersion: 2, manifests: [{ ...desc, annotations: { a: 1 } }] }, 'I'), 'manifests[0].annotations.a: must be a string, not a number (1)'],
    ['descriptor: fractional size', () => readIndex({ schemaVersion: 2, manifests: [{ ...desc, size: 1.5 }] }, 'I'), 'manifests[0].size: must be a whole number of bytes, not a number (1.5)'],
    ['descriptor: not a media type', () => readIndex({ schemaVersion: 2, manifests: [{ ...desc, mediaType: 'gzip' }] }, 'I'), "manifests[0].mediaType: must be a media type (type/subtype), not 'gzip'"],
    ['descriptor: a digest berth cannot verify', () => readIndex({ schemaVersion: 2, manifests: [{ ...desc, digest: 'crc32:0000' }] }, 'I'), "manifests[0].digest: uses the digest algorithm 'crc32'"],
    ['manifest: layers an object', () => readManifestOrIndex(with_(manifest, { layers: {} }), 'M'), 'M is malformed: layers: must be a list, not an object'],
    ['manifest: a null layer', () => readManifestOrIndex(with_(manifest, { layers: [null] }), 'M'), 'layers[0]: must be an object, not null'],
    ['manifest: config a string', () => readManifestOrIndex(with_(manifest, { config: 'x' }), 'M'), "config: must be an object, not a string ('x')"],
    ['manifest: schema 1', () => readManifestOrIndex({ schemaVersion: 1, fsLayers: [] }, 'M'), 'M is a Docker schema 1 manifest'],
    ['manifest: an artifact', () => readManifestOrIndex(with_(manifest, { mediaType: 'application/vnd.example+json' }), 'M'), "M has media type 'application/vnd.example+json', not an image manifest"],
    ['config: Env a string', () => readImageConfig(runConfig({ Env: 'A=1' }), 'C'), "C is malformed: config.Env: must be a list, not a string ('A=1')"],
    ['config: Env holding null', () => readImageConfig(runConfig({ Env: ['A=1', 'B=2', null] }), 'C'), 'config.Env[2]: must be a string, not null'],
    ['config: Env entry without =', () => readImageConfig(runConfig({ Env: ['FOO'] }), 'C'), "config.Env[0]: must be NAME=VALUE, not 'FOO'"],
    ['config: Entrypoint a number', () => readImageConfig(runConfig({ Entrypoint: 3 }), 'C'), 'config.Entrypoint: must be a list, not a number (3)'],
    ['config: Cmd holding a number', () => readImageConfig(runConfig({ Cmd: ['sh', 1] }), 'C'), 'config.Cmd[1]: must be a string, not a number (1)'],
    ['config: WorkingDir a number', () => readImageConfig(runConfig({ WorkingDir: 1 }), 'C'), 'config.WorkingDir: must be a string, not a number (1)'],
    ['config: WorkingDir relative', () => readImageConfig(runConfig({ WorkingDir: 'rel/dir' }), 'C'), "config.WorkingDir: must be an absolute path, not 'rel/dir'"],
    ['config: User a number', () => readImageConfig(runConfig({ User: 0 }), 'C'), 'config.User: must be a string, not a number (0)'],
    ['config: Labels a list', () => readImageConfig(runConfig({ Labels: [] }), 'C'), 'config.Labels: must be an object, not a list'],
    ['config: Volumes a list', () => readImageConfig(runConfig({ Volumes: ['/data'] }), 'C'), 'config.Volumes: must be an object, not a list'],
    ['config: StopSignal a number', () => readImageConfig(runConfig({ StopSignal: 15 }), 'C'), 'config.StopSignal: must be a string, not a number (15)'],
    ['config: config a string', () => readImageConfig(with_(config, { config: 'x' }), 'C'), "config: must be an object, not a string ('x')"],
    ['config: os missing', () => readImageConfig(with_(config, { os: undefined }), 'C'), 'os: is missing'],
    ['config: rootfs missing', () => readImageConfig(with_(config, { rootfs: undefined }), 'C'), 'rootfs: is missing'],
    ['config: rootfs of another type', () => readImageConfig(with_(config, { rootfs: { type: 'zfs', diff_ids: [] } }), 'C'), 'rootfs.type: must be "layers", not \'zfs\''],
    ['config: diff_ids holding a bad digest', () => readImageConfig(with_(config, { rootfs: { type: 'layers', diff_ids: ['x'] } }), 'C'), "rootfs.diff_ids[0]: must be a digest ALGORITHM:HEX, not 'x'"],
    ['docker save: an object', () => readArchiveManifest({ Config: 'c.json', Layers: [] }, 'A'), 'A is malformed: must be a list, not an object'],
    ['docker save: Layers null', () => readArchiveManifest([{ Config: 'c.json', Layers: null }], 'A'), '[0].Layers: must be a list, not null'],
    ['docker save: RepoTags holding a number', () => readArchiveManifest([{ Config: 'c.json', Layers: [], RepoTags: [1] }], 'A'), '[0].RepoTags[0]: must be a string, not a number (1)'],
  ])('%s', (_name, f, expected) => {
    expect(problem(f)).toContain(expected);
  });

  it('lists several problems at once, the first five', () => {
    const message = problem(() => readImageConfig({ config: { Env: [1, 2, 3, 4, 5, 6] } }, 'C'));
    expect(message).toBe('C is malformed: architecture: is missing; os: is missing; config.Env[0]: must be a string, not a number (1); '
      + 'config.Env[1]: must be a string, not a number (2); config.Env[2]: must be a string, not a number (3); and 4 more');
  });

  it('takes null for an optional field as absent (Go writes nil as null), and ignores unknown fields', () => {
    const docker = { ...config, config: { Env: null, Entrypoint: null, Cmd: null, Labels: null, Volumes: null, OnBuild: null, Healthcheck: { Test: 1 } }, history: 'unread', variant: null };
    expect(readImageConfig(docker, 'C')).toEqual({ architecture: 'amd64', os: 'linux', rootfs: config.rootfs, config: {
      User: undefined, Env: undefined, Entrypoint: undefined, Cmd: undefined, WorkingDir: undefined, Labels: undefined,
      Volumes: undefined, ExposedPorts: undefined, StopSignal: undefined,
    } });
    expect(readArchiveManifest([{ Config: 'c.json', Layers: ['l/layer.tar'], RepoTags: null }], 'A')).toEqual([{ Config: 'c.json', Layers: ['l/layer.tar'], RepoTags: [] }]);
  });

  it('keeps a label named __proto__ as a label', () => {
    const parsed = readImageConfig(JSON.parse('{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]},"config":{"Labels":{"__proto__":"x"}}}'), 'C');
    expect(Object.keys(parsed.config.Labels!)).toEqual(['__proto__']);
  });

  it('tells an index from a manifest as the spec does', () => {
    expect(readManifestOrIndex({ schemaVersion: 2, manifests: [desc] }, 'M').kind).toBe('index');
    expect(readManifestOrIndex({ ...manifest, mediaType: undefined }, 'M').kind).toBe('manifest');
    expect(readManifestOrIndex({ schemaVersion: 2, manifests: [] }, 'M', 'application/vnd.docker.distribution.manifest.list.v2+json').kind).toBe('index');
  });
});
