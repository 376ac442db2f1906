// berth push IMAGE.sqsh [USER@]HOST:[PATH]
import { statSync } from 'node:fs';
import { BerthError } from '../errors.js';
import { connect } from '../ssh/connect.js';
import { progressMode } from './progress.js';
import { pushTo } from './push-progress.js';

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
