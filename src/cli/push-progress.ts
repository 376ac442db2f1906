// How a push shows on stderr, for the commands that push (push, submit): on a terminal a
// redrawn bar, otherwise a line when it starts, nothing when quiet; then one line saying what
// happened. The upload itself is ssh/push.ts's.
import type { Connection } from '../ssh/connect.js';
import { pushImage, type PushEvents, type PushResult } from '../ssh/push.js';
import { barLine, clearProgress, formatBytes, type ProgressMode } from './progress.js';

function uploadProgress(mode: ProgressMode, label: string): PushEvents {
  let total = 0;
  let done = 0;
  let last = 0;
  const started = Date.now();
  return {
    start(size, from) {
      total = size;
      done = from;
      if (mode === 'plain') process.stderr.write(`berth: ${label}: ${from > 0 ? `resuming at ${formatBytes(from)} of` : 'uploading'} ${formatBytes(size)}\n`);
    },
    bytes(n) {
      done += n;
      if (mode === 'tty' && Date.now() - last > 100) {
        last = Date.now();
        process.stderr.write(barLine(label, done, total, started));
      }
    },
  };
}

/** Pushes `image` over `conn` (ssh/push.ts), shown as `mode` shows it. */
export async function pushTo(conn: Connection, image: string, remotePath: string, mode: ProgressMode): Promise<PushResult> {
  const result = await pushImage(conn, image, remotePath, uploadProgress(mode, `pushing to ${conn.target.alias}`)).finally(() => clearProgress(mode));
  if (mode !== 'quiet') {
    process.stderr.write(result.already
      ? `berth: ${conn.target.alias}:${result.remotePath} already holds this image (sha256 ${result.sha256.slice(0, 12)})\n`
      : `berth: pushed to ${conn.target.alias}:${result.remotePath} (${formatBytes(result.sent)} sent${result.resumedAt > 0 ? `, resumed at ${formatBytes(result.resumedAt)}` : ''}, sha256 verified)\n`);
  }
  return result;
}
