// Parses the SOURCE argument: oci:DIR[:TAG|@DIGEST], docker-archive:FILE[:NAME[:TAG]], docker://REF.
import { BerthError } from '../errors.js';
import { DockerArchiveSource, OciDirSource } from './archive.js';
import { printable } from '../cli/terminal.js';
import { Caches } from './caches.js';
import { RegistrySource } from './registry-source.js';
import type { ImageSource } from './source.js';

const DIGEST = /@([a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]{32,})$/;

export function parseSource(text: string): ImageSource {
  const colon = text.indexOf(':');
  const transport = colon === -1 ? '' : text.slice(0, colon);
  const rest = text.slice(colon + 1);
  switch (transport) {
    case 'oci': {
      const digest = DIGEST.exec(rest);
      if (digest) return new OciDirSource(rest.slice(0, digest.index), { digest: digest[1]! });
      // A tag follows the last ':' that comes after the last '/': oci:./a:b/c has none.
      const tagAt = rest.lastIndexOf(':');
      if (tagAt > rest.lastIndexOf('/')) return new OciDirSource(rest.slice(0, tagAt), { tag: rest.slice(tagAt + 1) });
      return new OciDirSource(rest, {});
    }
    case 'docker-archive': {
      // NAME (which has ':' and '/' of its own) follows the first ':' after a '.tar' suffix.
      const named = /^(.*?\.tar):(.+)$/.exec(rest);
      return named ? new DockerArchiveSource(named[1]!, named[2]!) : new DockerArchiveSource(rest, undefined);
    }
    case 'docker':
      // berth pull/convert/run go through pullImage, which adds the converted-image cache.
      return new RegistrySource(text, { caches: new Caches((line) => process.stderr.write(`${printable(line)}\n`)), insecure: false, parallel: 3 });
    default:
      throw new BerthError('USAGE', `'${text}' does not name an image source`,
        'use oci:DIR[:TAG|@DIGEST], docker-archive:FILE.tar[:NAME:TAG] or docker://[REGISTRY/]REPO[:TAG|@DIGEST]');
  }
}
