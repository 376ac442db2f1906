// berth images | rm | prune: the converted images in the caches (the user's own and the site's)
// and the downloaded blobs in the user's. An image that the caches' rules do not believe is
// listed apart, with the reason, never among the images berth would use.
import { pruneBuildCache } from '../build/cache.js';
import { BerthError } from '../errors.js';
import { pruneBlobs } from '../image/cache.js';
import { Caches, type CachedImage } from '../image/caches.js';
import { describeDoubt } from '../image/trust.js';
import { formatBytes } from './progress.js';
import { cacheWarning } from './pull-progress.js';
import { printable } from './terminal.js';

function caches(): Caches {
  return new Caches(cacheWarning);
}

export async function imagesCommand(flags: { json?: boolean }): Promise<string> {
  const c = caches();
  const { images, doubts } = await c.listImages();
  if (flags.json) {
    return JSON.stringify(images.map(({ path, cache, manifestDigest, size, source, mtime, doubt }) => ({
      path, cache, manifestDigest, size, source: source ?? null, converted: mtime, trusted: !doubt, ...(doubt ? { problem: describeDoubt(doubt) } : {}),
    })), null, 2);
  }
  const good = images.filter((i) => !i.doubt);
  const bad = [...doubts, ...images.flatMap((i) => (i.doubt ? [i.doubt] : []))];
  // Each line escaped on its own: a source is the image's text, and a newline in it must not start a line.
  const lines = good.length === 0 ? [`no images in ${[c.site, userRootOrNone(c)].filter(Boolean).join(' or ')}`]
    : ['DIGEST        SIZE      SOURCE', ...good.map((i) => `${i.manifestDigest.slice(7, 19)}  ${formatBytes(i.size).padEnd(8)}  ${i.source ?? '?'}${i.cache === 'site' ? ' (site cache)' : ''}`)];
  if (bad.length) lines.push('', 'not used, not trusted (see berth doctor):', ...bad.map((d) => `  ${describeDoubt(d)}: ${d.fix}`));
  return lines.map(printable).join('\n');
}

function userRootOrNone(c: Caches): string | undefined {
  try {
    return c.userRoot();
  } catch {
    return undefined;
  }
}

export async function rmCommand(names: string[]): Promise<string> {
  const c = caches();
  const images = (await c.listImages()).images.filter((i) => i.cache === 'user');
  const removed: string[] = [];
  for (const name of names) {
    const hex = name.replace(/^sha256:/, '');
    const matches = images.filter((i: CachedImage) => (i.source !== undefined && i.source === name) || (/^[0-9a-f]{12,64}$/.test(hex) && i.manifestDigest.slice(7).startsWith(hex)));
    if (matches.length === 0) throw new BerthError('IMAGE_NOT_IN_SOURCE', `no cached image of yours matches '${name}'`, 'see `berth images` (the site cache is its owner\'s to change)');
    for (const m of matches) {
      c.remove(m);
      removed.push(printable(`removed ${m.manifestDigest} (${m.source ?? '?'})`));
    }
  }
  return removed.join('\n');
}

export async function pruneCommand(): Promise<string> {
  const root = caches().userRoot();
  const blobs = pruneBlobs(root);
  const build = pruneBuildCache(root);
  return `freed ${formatBytes(blobs)} of downloaded layers and ${formatBytes(build)} of build cache`;
}
