// berth pull docker://REF [-o IMAGE.sqsh] and berth resolve docker://REF; convert takes docker://
// references through pullCommand. pull takes oci:DIR and docker-archive:FILE too, converted into
// the cache as running them does (the SPANK plugin stages them so). The pulling is runtime/acquire.ts's; this file is the flags,
// the copy to -o and what is printed.
import { BerthError } from '../errors.js';
import { parsePlatform } from '../image/platform.js';
import { acquireImage, copyImage, imageSource, isBuildName, isLayoutReference, isRegistryReference, pinReference, type AcquireOptions } from '../runtime/acquire.js';
import { progressMode } from './progress.js';
import { cacheWarning, pullDisplay } from './pull-progress.js';

export interface PullFlags {
  output?: string;
  platform?: string;
  insecure?: boolean;
  parallel?: string;
  force?: boolean;
  quiet?: boolean;
  json?: boolean;
  /** One line, the path: the contract with the Slurm plugin (slurm-plugins/submit.c), which stages that file. */
  printPath?: boolean;
}

function acquireOptions(flags: Pick<PullFlags, 'platform' | 'insecure' | 'parallel'>): AcquireOptions {
  const parallel = flags.parallel === undefined ? undefined : Number(flags.parallel);
  if (parallel !== undefined && (!Number.isInteger(parallel) || parallel < 1)) {
    throw new BerthError('USAGE', `--parallel wants a positive whole number, not '${flags.parallel}'`, 'e.g. --parallel 4');
  }
  return { platform: flags.platform ? parsePlatform(flags.platform) : undefined, insecure: flags.insecure, parallel };
}

export async function pullCommand(reference: string, flags: PullFlags, extra: string[] = []): Promise<string> {
  if (extra.length > 0) {
    // Apptainer's order: apptainer pull OUT.sif SOURCE.
    const source = extra.find((e) => isRegistryReference(e) || isLayoutReference(e));
    throw new BerthError('USAGE', `berth pull takes one image reference, not '${[reference, ...extra].join(' ')}'`,
      source && !isRegistryReference(reference) && !isLayoutReference(reference)
        ? `the file to write is -o in berth (Apptainer's pull OUT SOURCE): berth pull ${source} -o ${reference}`
        : 'write berth pull docker://REF [-o IMAGE.sqsh]');
  }
  if (!isRegistryReference(reference) && !isLayoutReference(reference)) {
    // A `berth build -t` name is in the cache already: its file (the Slurm plugin stages it so).
    const built = isBuildName(reference) ? await imageSource(reference, pullDisplay(progressMode({ quiet: true }))) : undefined;
    if (built?.cached) return pulled(built.path, flags);
    throw new BerthError('USAGE', `'${reference}' is not an image to pull`, 'write docker://[REGISTRY/]REPO[:TAG|@DIGEST], oci:DIR[:TAG] or docker-archive:FILE, or a name berth build -t gave; an image file runs as it is');
  }
  const result = await acquireImage(reference, acquireOptions(flags), pullDisplay(progressMode({ ...flags, quiet: flags.quiet || flags.printPath })));
  return pulled(result.path, flags, result);
}

/** What pull prints for the cached file `path` (copied to -o first). */
function pulled(path: string, flags: PullFlags, result: object = {}): string {
  const file = flags.output ? copyImage(path, flags.output, flags.force ?? false) : path;
  if (flags.printPath) return `${file}\n`;
  if (flags.json) return JSON.stringify({ ...result, path: file, cachedImage: path });
  return flags.quiet ? '' : file;
}

/** berth resolve: the reference pinned to a digest, for every node of a job to run the same image. */
export async function resolveCommand(reference: string, flags: { platform?: string; insecure?: boolean }): Promise<string> {
  return pinReference(reference, acquireOptions(flags), { cacheWarning });
}
