// How `berth convert` reports progress on stderr: a redrawn bar on a terminal, a few plain
// lines otherwise (batch logs), nothing with --quiet. stdout stays for results.
import type { ConvertEvents } from '../convert/convert.js';

export type ProgressMode = 'tty' | 'plain' | 'quiet';

export function progressMode(opts: { quiet?: boolean; json?: boolean }): ProgressMode {
  if (opts.quiet) return 'quiet';
  return process.stderr.isTTY && !opts.json ? 'tty' : 'plain';
}

export function formatBytes(n: number): string {
  const units = ['B', 'kB', 'MB', 'GB', 'TB'];
  let i = 0;
  while (n >= 1000 && i < units.length - 1) {
    n /= 1000;
    i++;
  }
  return `${n.toFixed(i === 0 ? 0 : 1)} ${units[i]}`;
}

/** The one progress bar: `done` of `total` as `[####----]`, `width` wide; and the rate since `started`. */
export function bar(done: number, total: number, width: number): { bar: string; frac: number } {
  const frac = total > 0 ? Math.min(1, done / total) : 0;
  const filled = Math.round(frac * width);
  return { bar: `[${'#'.repeat(filled)}${'-'.repeat(width - filled)}]`, frac };
}

export function rate(done: number, started: number): string {
  return `${formatBytes(done / Math.max(0.001, (Date.now() - started) / 1000))}/s`;
}

/** One redrawn progress line: label, bar, percent, bytes, rate. */
export function barLine(label: string, done: number, total: number, started: number): string {
  const b = bar(done, total, 24);
  return `\r\x1b[K${label} ${b.bar} ${Math.round(b.frac * 100)}% ${formatBytes(done)}/${formatBytes(total)} ${rate(done, started)}`;
}

export function convertProgress(mode: ProgressMode, write: (s: string) => void = (s) => process.stderr.write(s)): ConvertEvents {
  const started = Date.now();
  let total = 0;
  let done = 0;
  let label = '';
  let lastDraw = 0;
  const draw = (force = false) => {
    if (mode !== 'tty') return;
    const now = Date.now();
    if (!force && now - lastDraw < 100) return;
    lastDraw = now;
    write(barLine(label, done, total, started));
  };
  const line = (s: string) => {
    if (mode === 'quiet') return;
    write(mode === 'tty' ? `\r\x1b[K${s}\n` : `${s}\n`);
  };
  return {
    resolved(image) {
      total = image.layers.reduce((sum, l) => sum + l.size, 0);
      line(`berth: converting ${image.reference} (${image.layers.length} layer${image.layers.length === 1 ? '' : 's'}, ${formatBytes(total)}, top layer first)`);
    },
    layerStart(n, of, layer, pass) {
      if (pass === 'index') total += layer.size;
      label = `${pass === 'index' ? 'indexing' : 'merging'} layer ${n}/${of}`;
      if (mode === 'plain') line(`berth: ${label} ${layer.digest} (${formatBytes(layer.size)})`);
      draw(true);
    },
    bytes(n) {
      done += n;
      draw();
    },
    finishing() {
      label = 'writing squashfs';
      draw(true);
      if (mode === 'plain') line('berth: writing squashfs tables');
    },
    warn(message) {
      if (mode !== 'quiet') line(`berth: warning: ${message}`);
    },
  };
}

/** Clears a drawn bar before the final result or an error is printed. */
export function clearProgress(mode: ProgressMode): void {
  if (mode === 'tty') process.stderr.write('\r\x1b[K');
}
