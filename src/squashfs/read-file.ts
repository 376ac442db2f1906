// Reads one file out of a squashfs image without mounting it, with squashfs-tools-ng's
// rdsquashfs. (The Node addon planned in native/ will do this in-process.)
import { spawn } from 'node:child_process';
import { BerthError, messageOf } from '../errors.js';

export function readImageFile(image: string, pathInImage: string): Promise<Buffer | undefined> {
  return new Promise((resolve, reject) => {
    const child = spawn('rdsquashfs', ['--cat', `/${pathInImage}`, image], { stdio: ['ignore', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    let err = '';
    child.stdout.on('data', (d: Buffer) => out.push(d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => { err += d; });
    child.on('error', (e) => reject(new BerthError('TOOL_MISSING', `cannot run rdsquashfs: ${messageOf(e)}`,
      'install squashfs-tools-ng (apt-get install squashfs-tools-ng)')));
    child.on('close', (code) => {
      if (code === 0) resolve(Buffer.concat(out));
      else if (/No such file|not found|lookup/i.test(err)) resolve(undefined);
      else reject(new BerthError('NOT_A_BERTH_IMAGE', `cannot read ${image}: ${err.trim() || `rdsquashfs exited with ${code}`}`,
        'the file is damaged or not a squashfs image; convert it again'));
    });
  });
}
