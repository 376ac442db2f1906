// berth push IMAGE.sqsh [USER@]HOST:[PATH]
import { statSync } from 'node:fs';
import { BerthError } from '../errors.js';
import { connect } from '../ssh/connect.js';
import { pushImage, type PushEvents, type PushResult } from '../ssh/push.js';
import type { Connection } from '../ssh/connect.js';
import { barLine, clearProgress, formatBytes, progressMode, type ProgressMode } from './progress.js';

export interface PushFlags {
  acceptNewHostKey?: boolean;
  quiet?: boolean;
  json?: boolean;
}

/** HOST:PATH as scp writes it; the first ':' outside [ ] ends the host. */
export function splitRemote(text: string): { host: string; path: string } {
  const m = /^((?:[^@:[\]]+@)?(?:\[[^\]]+\]|[^:]+)):(.*)$/.exec(text);
  if (!m) throw new BerthError('USAGE', `'${text}' is not a remote destination`, 'write it as [USER@]HOST:[PATH], e.g. cluster:images/ (HOST may be a ~/.ssh/config alias)');
  return { host: m[1]!, path: m[2]! };
}

export function uploadProgress(mode: ProgressMode, label: string): PushEvents {
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

export async function pushTo(conn: Connection, image: string, remotePath: string, mode: ProgressMode): Promise<PushResult> {
  const result = await pushImage(conn, image, remotePath, uploadProgress(mode, `pushing to ${conn.target.alias}`)).finally(() => clearProgress(mode));
  if (mode !== 'quiet') {
    process.stderr.write(result.already
      ? `berth: ${conn.target.alias}:${result.remotePath} already holds this image (sha256 ${result.sha256.slice(0, 12)})\n`
      : `berth: pushed to ${conn.target.alias}:${result.remotePath} (${formatBytes(result.sent)} sent${result.resumedAt > 0 ? `, resumed at ${formatBytes(result.resumedAt)}` : ''}, sha256 verified)\n`);
  }
  return result;
}

export async function pushCommand(image: string, destination: string, flags: PushFlags): Promise<string> {
  if (!statSync(image, { throwIfNoEntry: false })?.isFile()) throw new BerthError('SOURCE_NOT_FOUND', `no image file ${image}`, 'name a .sqsh file (berth convert or berth pull -o make one)');
  const { host, path } = splitRemote(destination);
  const conn = await connect(host, { acceptNewHostKey: flags.acceptNewHostKey });
  try {
    const result = await pushTo(conn, image, path, progressMode(flags));
    return flags.json ? JSON.stringify({ host: conn.target.alias, ...result }) : `${conn.target.alias}:${result.remotePath}`;
  } finally {
    conn.close();
  }
}
