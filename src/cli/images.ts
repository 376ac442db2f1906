// berth images | rm | prune: the converted images and downloaded blobs in the cache.
import { closeSync, openSync, unlinkSync } from 'node:fs';
import { BerthError } from '../errors.js';
import { cacheRoot, listImages, pruneBlobs } from '../image/cache.js';
import { parseMetadata, readMetadataTrailer } from '../squashfs/metadata.js';
import { formatBytes } from './progress.js';

function withSources() {
  return listImages(cacheRoot()).map((img) => {
    const fd = openSync(img.path, 'r');
    try {
      const text = readMetadataTrailer(fd, img.size);
      return { ...img, source: text ? parseMetadata(text, img.path).source : '?' };
    } finally {
      closeSync(fd);
    }
  });
}

export async function imagesCommand(flags: { json?: boolean }): Promise<string> {
  const images = withSources();
  if (flags.json) return JSON.stringify(images.map(({ path, manifestDigest, size, source, mtime }) => ({ path, manifestDigest, size, source, converted: mtime })), null, 2);
  if (images.length === 0) return `no images in ${cacheRoot()}`;
  return ['DIGEST        SIZE      SOURCE', ...images.map((i) =>
    `${i.manifestDigest.slice(7, 19)}  ${formatBytes(i.size).padEnd(8)}  ${i.source}`)].join('\n');
}

export async function rmCommand(names: string[]): Promise<string> {
  const images = withSources();
  const removed: string[] = [];
  for (const name of names) {
    const hex = name.replace(/^sha256:/, '');
    const matches = images.filter((i) => i.source === name || (/^[0-9a-f]{12,64}$/.test(hex) && i.manifestDigest.slice(7).startsWith(hex)));
    if (matches.length === 0) throw new BerthError('IMAGE_NOT_IN_SOURCE', `no cached image matches '${name}'`, 'see `berth images`');
    for (const m of matches) {
      unlinkSync(m.path);
      removed.push(`removed ${m.manifestDigest} (${m.source})`);
    }
  }
  return removed.join('\n');
}

export async function pruneCommand(): Promise<string> {
  return `freed ${formatBytes(pruneBlobs(cacheRoot()))} of downloaded layers`;
}
