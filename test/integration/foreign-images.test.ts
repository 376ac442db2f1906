// The images people already have, run as their own tools run them: SIF files and squashfs
// images with Apptainer's /.singularity.d, enroot's /etc/rc and /etc/environment, plain
// mksquashfs images, root directories (an Apptainer sandbox, a Charliecloud image). Made by
// test/fixtures/make-foreign-images.sh with the real tools (siftool, mksquashfs).
import { existsSync, readdirSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BERTH, ROOT, cleanup, run, tempDir } from '../helpers.js';

let work: string;
const at = (name: string) => path.join(work, name);
const env = () => ({ ...process.env, BERTH_RUNTIME_DIR: at('runtime'), BERTH_IMAGE_LINGER: '0' });
const b = (...args: string[]) => run(process.execPath, [BERTH, ...args], { env: env(), cwd: work });
/** What a container says about its environment and where it is. */
const PROBE = 'echo "FROM_ENV=$FROM_ENV STAGE=$STAGE PATH=$PATH"';

beforeAll(async () => {
  work = tempDir('foreign');
  const made = await run(path.join(ROOT, 'test/fixtures/make-foreign-images.sh'), [work]);
  if (made.code !== 0) throw new Error(made.stderr);
}, 120_000);
afterAll(() => cleanup(work));

describe('Apptainer images: SIF, squashfs and sandbox directory', () => {
  // Apptainer sources /.singularity.d/env/*.sh in order (90 sees what 10 exported), runs the
  // runscript for `run`, and keeps labels in labels.json.
  for (const image of ['app.sif', 'app.sqsh', 'sandbox']) {
    it(`${image}: run runs the runscript, exec sources the environment scripts in order`, async () => {
      const ran = await b('run', at(image), 'a', 'b');
      expect(ran.stderr).toBe('');
      expect(ran.stdout).toBe('runscript: a b (ten-ninety)\n');
      expect(ran.code).toBe(0);
      const exec = await b('exec', at(image), 'sh', '-c', `${PROBE}; echo "$APPTAINER_CONTAINER"`);
      expect(exec.stdout).toBe(`FROM_ENV=apptainer STAGE=ten-ninety PATH=/bin:/usr/bin\n${at(image)}\n`);
      // A command is found on the PATH the scripts set, and its status is the container's.
      expect((await b('exec', at(image), 'sh', '-c', 'exit 7')).code).toBe(7);
      expect((await b('exec', at(image), 'no-such-command')).code).toBe(127);
    });

    it(`${image}: inspect shows the labels and whose conventions start it`, async () => {
      const r = await b('inspect', at(image), '--json');
      expect(r.code).toBe(0);
      const info = JSON.parse(r.stdout) as { format: string; offset: number; image: { startup: string; config: { Labels: Record<string, string>; Entrypoint: string[] } } };
      expect(info.format).toBe(image.endsWith('.sif') ? 'sif' : image === 'sandbox' ? 'directory' : 'squashfs');
      if (image.endsWith('.sif')) expect(info.offset).toBeGreaterThan(0); // served in place, at its partition
      expect(info.image.startup).toBe('apptainer');
      expect(info.image.config.Labels).toEqual({ 'org.label-schema.schema-version': '1.0', maintainer: 'lab' });
      expect((await b('inspect', at(image))).stdout).toMatch(/Format: +.*Apptainer's/);
    });
  }

  it('a SIF is converted into a berth image that runs the same, without recompressing it', async () => {
    const out = at('from-sif.sqsh');
    const c = await b('convert', at('app.sif'), '-o', out, '--json');
    expect(c.code).toBe(0);
    expect(JSON.parse(c.stdout)).toMatchObject({ compression: 'gzip' });
    expect((await b('run', out, 'x')).stdout).toBe('runscript: x (ten-ninety)\n');
    expect(JSON.parse((await b('inspect', out, '--json')).stdout)).toMatchObject({ format: 'berth', image: { startup: 'apptainer' } });
  });

  it('a signed SIF runs, and inspect says its signature is not verified', async () => {
    expect((await b('run', at('signed.sif'))).stdout).toBe('runscript:  (ten-ninety)\n');
    expect((await b('inspect', at('signed.sif'))).stdout).toMatch(/Notes: +it carries 1 signature, which berth does not verify/);
  });
});

describe('enroot and plain squashfs images, Charliecloud and plain directories', () => {
  it('an enroot image: /etc/rc is the entrypoint, /etc/environment the environment, its fstab tmpfs mounted', async () => {
    for (const image of ['enroot.sqsh', 'enroot']) {
      const ran = await b('run', at(image), 'hello');
      expect(ran.stdout).toBe('ep hello\n'); // the rc execs the entrypoint with the arguments
      expect((await b('run', at(image))).stdout).toBe('ep default\n');
      // The fstab's host path is left out, with a warning that says so; its tmpfs is there.
      expect(ran.stderr).toMatch(/asks to mount \/etc\/shadow at \/stolen .*leaves it out \(use --bind\)/);
      const exec = await b('exec', at(image), 'sh', '-c', `${PROBE}; echo "$QUOTED"; test -e /stolen || echo no-stolen; touch /scratch/f && echo scratch-writable`);
      expect(exec.stdout).toBe('FROM_ENV=enroot STAGE= PATH=/bin:/usr/bin\nwith space\nno-stolen\nscratch-writable\n');
    }
  });

  it('a plain squashfs and a plain directory run with the defaults: PATH, /bin/sh for run', async () => {
    for (const image of ['plain.sqsh', 'plain']) {
      expect((await b('exec', at(image), 'sh', '-c', PROBE)).stdout).toBe('FROM_ENV= STAGE= PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n');
      const ran = await run(process.execPath, [BERTH, 'run', at(image)], { env: env(), cwd: work, input: 'echo from-the-default-shell\n' });
      expect(ran.stdout).toBe('from-the-default-shell\n');
    }
  });

  it('a Charliecloud image directory: its metadata.json environment and working directory', async () => {
    const r = await run(process.execPath, [BERTH, 'run', at('ch')], { env: env(), cwd: work, input: `${PROBE}; pwd\n` });
    expect(r.stdout).toBe('FROM_ENV=charliecloud STAGE= PATH=/bin\n/work\n');
  });

  it('a directory image is read-only and nosuid, and nothing of it is left mounted afterwards', async () => {
    const r = await b('exec', at('sandbox'), 'sh', '-c', 'touch /new 2>&1; grep " / " /proc/self/mounts | grep -c nosuid');
    expect(r.stdout).toMatch(/Read-only file system\n[1-9]/);
    for (let i = 0; i < 60 && existsSync(at('runtime')) && readdirSync(at('runtime')).length > 0; i++) await new Promise((s) => setTimeout(s, 100));
    expect(readdirSync(at('runtime'))).toEqual([]);
  });

  it('a directory is converted into a squashfs that runs the same', async () => {
    const out = at('from-dir.sqsh');
    expect((await b('convert', at('enroot'), '-o', out, '--quiet')).code).toBe(0);
    expect((await b('run', out, 'x')).stdout).toBe('ep x\n');
  });
});

describe('what berth cannot run faithfully, refused with the reason', () => {
  const cases: [string, RegExp][] = [
    ['bad-magic.sif', /is not an image berth can run \(a squashfs or SIF file, or a root directory\)/],
    ['short-table.sif', /is not a valid SIF image: its descriptors lie past its end/],
    ['past-end.sif', /is not a valid SIF image: descriptor 1 .* points past the end of the file/],
    ['no-root.sif', /has no system partition: it holds no root file system to run/],
    ['overlay.sif', /carries an overlay partition .*cannot apply without root[\s\S]*siftool del 3/],
  ];
  for (const [image, message] of cases) {
    it(image, async () => {
      for (const command of [['exec', at(image), 'true'], ['inspect', at(image)], ['convert', at(image), '-o', at(`${image}.out`)]]) {
        const r = await b(...command);
        expect(r.stderr).toMatch(message);
        expect(r.stderr).toMatch(/berth: hint: /);
        expect(r.stderr).not.toMatch(/\n\s+at /); // no stack trace
        expect(r.code).not.toBe(0);
      }
      expect(existsSync(at(`${image}.out`))).toBe(false);
    });
  }
});
