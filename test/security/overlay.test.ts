// Overlay directories, played by an attacker: what is in an --overlay directory becomes the
// container's root, and berth commit makes an image of it. A directory the attacker made, or
// can write, with a trojan in its upper layer, is never used by the victim: not to run, not to
// save as an image.
import { existsSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BERTH, cleanup } from '../helpers.js';
import { as, ATTACKER, dirOf, VICTIM, victimImages } from './users.js';

let work: string;
const image = () => path.join(work, 'plain.sqsh');
const env = () => ({ BERTH_RUNTIME_DIR: path.join(work, 'runtime'), BERTH_IMAGE_LINGER: '0' });

beforeAll(async () => {
  work = await victimImages('overlay');
}, 120_000);
afterAll(() => cleanup(work));

describe('an overlay directory the attacker prepared', () => {
  for (const mode of [0o755, 0o777]) {
    it(`(the attacker's, mode ${mode.toString(8)}) is refused for running and for berth commit, and nothing of it is used`, async () => {
      const planted = dirOf(ATTACKER, 'planted-overlay', mode);
      await as(ATTACKER, 'sh', ['-c', `mkdir -p ${planted}/upper/bin && printf '#!/bin/sh\\necho pwned\\n' > ${planted}/upper/bin/true && chmod 755 ${planted}/upper/bin/true; chmod ${mode.toString(8)} ${planted}`]);
      const ran = await as(VICTIM, process.execPath, [BERTH, 'exec', '--overlay', planted, image(), 'true'], { env: env() });
      expect(ran.code).toBe(125);
      expect(ran.stdout).toBe('');
      expect(ran.stderr).toMatch(/--overlay .* is not yours alone \(owner uid \d+/);
      const out = path.join(work, `committed-${mode.toString(8)}.sqsh`);
      const committed = await as(VICTIM, process.execPath, [BERTH, 'commit', '--from-overlay', planted, image(), '-o', out], { env: env() });
      expect(committed.code).toBe(125);
      expect(committed.stderr).toMatch(/--from-overlay .* is not yours alone/);
      expect(existsSync(out)).toBe(false);
      cleanup(planted);
    });
  }
});
