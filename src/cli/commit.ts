// berth commit --from-overlay DIR [IMAGE] -o NEW.sqsh: what containers run with --overlay DIR
// changed, saved as a new image over IMAGE (by default the image the overlay was first used
// with, which berth noted in DIR). The work is convert/commit.ts's.
import { availableParallelism } from 'node:os';
import path from 'node:path';
import { commitOverlay } from '../convert/commit.js';
import { DEFAULT_COMPRESSION } from '../convert/tar2sqfs.js';
import { BerthError } from '../errors.js';
import { hostPlatform } from '../image/platform.js';
import { checkOverlayDir, overlayBase } from '../plan/prepare.js';
import { openImage } from '../runtime/image.js';
import { clearProgress, convertProgress, formatBytes, progressMode } from './progress.js';

export interface CommitFlags {
  fromOverlay?: string;
  output: string;
  ociLayout?: string;
  keepOwner?: boolean;
  force?: boolean;
  quiet?: boolean;
  json?: boolean;
}

export async function commitCommand(image: string | undefined, flags: CommitFlags): Promise<string> {
  if (!flags.fromOverlay) {
    throw new BerthError('USAGE', 'berth commit needs --from-overlay DIR: the directory a container ran with as --overlay DIR',
      'e.g. berth exec --overlay ~/ov IMAGE.sqsh apt-get install -y x; berth commit --from-overlay ~/ov -o NEW.sqsh');
  }
  // What is in it becomes the new image: only a directory no one else could have written.
  const overlay = checkOverlayDir(flags.fromOverlay, '--from-overlay');
  const base = image ?? overlayBase(overlay);
  if (!base) {
    throw new BerthError('USAGE', `${overlay} does not say which image it was used with`, 'name the image: berth commit --from-overlay DIR IMAGE -o NEW.sqsh');
  }
  const opened = openImage(base);
  const mode = progressMode(flags);
  try {
    const result = await commitOverlay({ location: opened.location, metadata: opened.metadata }, {
      overlay, ociLayout: flags.ociLayout, keepOwner: flags.keepOwner ?? false,
      output: flags.output, force: flags.force ?? false, compression: DEFAULT_COMPRESSION, level: undefined,
      jobs: availableParallelism(), platform: hostPlatform(),
    }, { uid: process.getuid!(), gid: process.getgid!() }, convertProgress(mode));
    clearProgress(mode);
    if (flags.json) return JSON.stringify({ output: result.output, size: result.size, base: opened.location.path, ociLayout: flags.ociLayout ? path.resolve(flags.ociLayout) : null });
    if (flags.quiet) return '';
    process.stderr.write(`berth: wrote ${result.output} (${formatBytes(result.size)}): ${base} and the changes in ${overlay}/upper\n`);
    return result.output;
  } catch (e: unknown) {
    clearProgress(mode);
    throw e;
  }
}
