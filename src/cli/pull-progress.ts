// How a pull shows on stderr, for the commands that pull (pull, run, plan, srun): on a terminal
// a redrawn bar per layer, otherwise a line when each starts and ends, nothing when quiet; then
// one line saying what happened. stdout stays for results. The pulling itself is
// runtime/acquire.ts's.
import type { PullResult } from '../image/pull.js';
import type { DownloadEvents } from '../image/registry-source.js';
import type { AcquireEvents } from '../runtime/acquire.js';
import { bar, clearProgress, convertProgress, formatBytes, rate, type ProgressMode } from './progress.js';
import { printable } from './terminal.js';

/** A cache's warning, escaped: it may quote a path another user chose. */
export function cacheWarning(line: string): void {
  process.stderr.write(`${printable(line)}\n`);
}

/**
 * On a terminal one redrawn bar per layer (bytes, rate), and below them the conversion's own
 * line (`write`), which merges the top layers while the lower ones still download; otherwise a
 * line when each layer starts and ends.
 */
function downloadProgress(mode: ProgressMode): DownloadEvents & { total(): number; write(s: string): void } {
  const layers = new Map<string, { size: number; got: number; done: boolean; started: number }>();
  let drawn = 0;
  let lastDraw = 0;
  let total = 0;
  let status = '';
  const draw = (force: boolean) => {
    if (mode !== 'tty' || (!force && Date.now() - lastDraw < 100)) return;
    lastDraw = Date.now();
    const lines = [...layers].map(([digest, l]) =>
      `${digest.slice(7, 19)} ${bar(l.got, l.size, 20).bar} ${formatBytes(l.got)}/${formatBytes(l.size)} ${l.done ? 'done' : rate(l.got, l.started)}`);
    if (status) lines.push(status);
    process.stderr.write(`${drawn ? `\x1b[${drawn}A` : ''}${lines.map((l) => `\r\x1b[K${l}\n`).join('')}`);
    drawn = lines.length;
  };
  return {
    start(digest, size) {
      layers.set(digest, { size, got: 0, done: false, started: Date.now() });
      if (mode === 'plain') process.stderr.write(`berth: downloading ${digest} (${formatBytes(size)})\n`);
      draw(true);
    },
    bytes(digest, n) {
      total += n;
      const l = layers.get(digest);
      if (l) l.got += n;
      draw(false);
    },
    done(digest) {
      const l = layers.get(digest);
      if (l) l.done = true;
      if (mode === 'plain') process.stderr.write(`berth: downloaded ${digest}\n`);
      draw(true);
    },
    total: () => total,
    // What convertProgress writes: a finished line goes above the bars, the redrawn one below.
    write(s) {
      if (s.endsWith('\n')) {
        process.stderr.write(`${drawn ? `\x1b[${drawn}A\x1b[J` : ''}${s}`);
        drawn = 0;
      } else {
        status = s.replace(/^\r\x1b\[K/, '');
      }
      draw(true);
    },
  };
}

/**
 * A pull as `mode` shows it: its downloads, its conversion (as berth convert shows one), and how
 * it ended. `firstUse`: for the commands that run an image, which say nothing when it is cached.
 */
export function pullDisplay(mode: ProgressMode, firstUse = false): AcquireEvents {
  const download = downloadProgress(mode);
  return {
    download,
    convert: convertProgress(mode, mode === 'tty' ? (s) => download.write(s) : undefined),
    cacheWarning,
    end(result: PullResult | undefined) {
      download.write(''); // the conversion's bar goes; the downloads' stay
      clearProgress(mode);
      if (!result || mode === 'quiet' || (firstUse && result.cached)) return;
      process.stderr.write(result.cached
        ? `berth: ${result.reference} is in the ${result.cache === 'site' ? 'site cache' : 'cache'} (${result.manifestDigest})\n`
        : download.total() ? `berth: pulled ${result.reference} (${formatBytes(download.total())} downloaded)\n` : `berth: converted ${result.reference} into the cache (${result.manifestDigest})\n`);
    },
  };
}
