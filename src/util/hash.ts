// The sha256 of a file's bytes, streamed (images are gigabytes): the one place berth hashes a
// file, for pushes (compared with the remote side's sha256sum) and for cached blobs.
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';

/** Hex digest of `file`, read from `fd` when one is given (and closed after). */
export async function sha256File(file: string, fd?: number): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(file, { highWaterMark: 1 << 20, ...(fd === undefined ? {} : { fd }) })) hash.update(chunk as Buffer);
  return hash.digest('hex');
}
