// Opening an image to run it: is it a berth squashfs, and one this node can execute?
import path from 'node:path';
import { BerthError } from '../errors.js';
import { formatPlatform, hostPlatform } from '../image/platform.js';
import { readImageInfo } from '../squashfs/image-info.js';
import type { ImageMetadata } from '../squashfs/metadata.js';

export async function openImage(file: string): Promise<{ path: string; metadata: ImageMetadata }> {
  const abs = path.resolve(file);
  const { image } = await readImageInfo(abs);
  const host = hostPlatform();
  if (image.platform.architecture !== host.architecture) {
    throw new BerthError('WRONG_ARCHITECTURE', `${abs} was made for ${formatPlatform(image.platform)}; this node is ${formatPlatform(host)}`,
      `convert the image again for this node: berth convert --platform ${formatPlatform(host)} ...`);
  }
  return { path: abs, metadata: image };
}
