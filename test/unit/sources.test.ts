// Pure pieces: source references, platforms, path normalization, media types.
import { describe, expect, it } from 'vitest';
import { normalizePath } from '../../src/convert/merge.js';
import { sniffCompression } from '../../src/convert/layer-stream.js';
import { layerCompression } from '../../src/image/oci-layout.js';
import { parsePlatform, platformMatches } from '../../src/image/platform.js';
import { parseSource } from '../../src/image/reference.js';
import { isLoopback, parseDockerReference } from '../../src/image/docker-reference.js';
import { parseChallenge } from '../../src/image/registry.js';

describe('parseSource', () => {
  it.each([
    ['oci:/data/img', 'OCI layout /data/img'],
    ['oci:./rel/img:v1', 'OCI layout ./rel/img'],
    ['oci:/a:b/img:tag', 'OCI layout /a:b/img'],
    ['oci:/data/img@sha256:' + 'a'.repeat(64), 'OCI layout /data/img'],
    ['docker-archive:/x/img.tar', 'docker archive /x/img.tar'],
    ['docker-archive:/x/img.tar:library/busybox:latest', 'docker archive /x/img.tar'],
  ])('%s', (text, describe) => {
    expect(parseSource(text).describe).toBe(describe);
  });

  it('refuses what it cannot read, naming the forms it can', () => {
    expect(() => parseSource('/some/file.sqsh')).toThrow(/does not name an image source[\s\S]*/);
    expect(parseSource('docker://busybox').describe).toBe('docker://docker.io/library/busybox:latest');
  });
});

describe('parseDockerReference (Docker defaults)', () => {
  it.each([
    ['docker://busybox', 'docker.io', 'registry-1.docker.io', 'library/busybox', 'latest', undefined],
    ['docker://user/app:1.2', 'docker.io', 'registry-1.docker.io', 'user/app', '1.2', undefined],
    ['docker://ghcr.io/org/app:v1', 'ghcr.io', 'ghcr.io', 'org/app', 'v1', undefined],
    ['docker://localhost:5000/app', 'localhost:5000', 'localhost:5000', 'app', 'latest', undefined],
    [`docker://nvcr.io/nvidia/pytorch@sha256:${'a'.repeat(64)}`, 'nvcr.io', 'nvcr.io', 'nvidia/pytorch', undefined, `sha256:${'a'.repeat(64)}`],
  ])('%s', (text, registry, apiHost, repository, tag, digest) => {
    expect(parseDockerReference(text)).toEqual({ registry, apiHost, repository, tag, digest });
  });

  it('spells a registry one way: lowercase, https\'s default port dropped (what a policy, the cache and credentials match)', () => {
    expect(parseDockerReference('docker://GHCR.IO:443/org/app:1').registry).toBe('ghcr.io');
    expect(parseDockerReference('docker://LOCALHOST:5000/app').registry).toBe('localhost:5000');
    expect(parseDockerReference('docker://[::1]:5000/app').registry).toBe('[::1]:5000');
  });

  it.each(['docker://evil.example?x.corp.example/lab/app:1', 'docker://evil.example#x/lab/app', 'docker://ghcr.io./org/app', 'docker://a\\b.example/x', 'docker://user@ghcr.io/x'])(
    'refuses %s: not a host[:port] (it would change the URL asked, or the name matched)', (text) => {
      expect(() => parseDockerReference(text)).toThrow(/is not a registry host\[:port\]|invalid image reference/);
    });

  it('refuses malformed references with the form to use', () => {
    expect(() => parseDockerReference('docker://Upper/Case')).toThrow(/not a repository name/);
    expect(() => parseDockerReference('docker://app:bad tag')).toThrow(/invalid image reference/);
  });

  it('allows plain http only on this machine', () => {
    expect(isLoopback('127.0.0.1:5000')).toBe(true);
    expect(isLoopback('localhost')).toBe(true);
    expect(isLoopback('registry.example.org:5000')).toBe(false);
  });
});

describe('WWW-Authenticate challenges', () => {
  it('parses bearer and basic challenges', () => {
    expect(parseChallenge('Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull"')).toEqual({
      scheme: 'bearer', params: { realm: 'https://auth.example/token', service: 'registry.example', scope: 'repository:a/b:pull' },
    });
    expect(parseChallenge('Basic realm="berth-test"')).toEqual({ scheme: 'basic', params: { realm: 'berth-test' } });
  });
});

describe('platforms', () => {
  it('parses and matches OS/ARCH[/VARIANT]', () => {
    expect(parsePlatform('linux/arm64/v8')).toEqual({ os: 'linux', architecture: 'arm64', variant: 'v8' });
    expect(() => parsePlatform('amd64')).toThrow(/invalid platform/);
    expect(platformMatches({ os: 'linux', architecture: 'arm64', variant: 'v8' }, { os: 'linux', architecture: 'arm64' })).toBe(true);
    expect(platformMatches({ os: 'linux', architecture: 'arm', variant: 'v6' }, { os: 'linux', architecture: 'arm', variant: 'v7' })).toBe(false);
    expect(platformMatches({ os: 'windows', architecture: 'amd64' }, { os: 'linux', architecture: 'amd64' })).toBe(false);
  });
});

describe('normalizePath', () => {
  it.each([
    ['/etc/passwd', 'etc/passwd'],
    ['./a//b/./c/', 'a/b/c'],
    ['a/../b', 'b'],
    ['./', ''],
    ['../x', null],
    ['a/../../x', null],
  ])('%s -> %s', (raw, want) => {
    expect(normalizePath(raw)).toBe(want);
  });
});

describe('layer media types and magic', () => {
  it('knows the layer types and their compression', () => {
    expect(layerCompression('application/vnd.oci.image.layer.v1.tar+zstd')).toBe('zstd');
    expect(layerCompression('application/vnd.docker.image.rootfs.diff.tar.gzip')).toBe('gzip');
    expect(layerCompression('application/vnd.oci.image.layer.nondistributable.v1.tar+gzip')).toBe('gzip');
    expect(layerCompression('application/vnd.oci.image.layer.v1.tar')).toBe('none');
    expect(() => layerCompression('application/vnd.oci.image.layer.v1.tar+encrypted')).toThrow(/not a filesystem layer/);
  });

  it('recognizes gzip, zstd, xz and tar by their first bytes', () => {
    expect(sniffCompression(Buffer.from([0x1f, 0x8b, 8, 0, 0, 0]))).toBe('gzip');
    expect(sniffCompression(Buffer.from([0x28, 0xb5, 0x2f, 0xfd, 0, 0]))).toBe('zstd');
    expect(sniffCompression(Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]))).toBe('xz');
    const tar = Buffer.alloc(512);
    tar.write('ustar', 257);
    expect(sniffCompression(tar)).toBe('none');
    expect(sniffCompression(Buffer.from('hello world, not an archive'.padEnd(512)))).toBe('unknown');
  });
});
