// The C unit tests (native/tests/*.c, #18): `make -C native test` builds each one with the code
// it tests (trusted.c, plantext.c, plan.c) and runs it, one line per check. They are run here so
// that the README's one test command runs them, as the ordinary user the suite runs as; the
// binaries go to a temporary directory, since native/build may be root's from the build.
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { cleanup, ROOT, tempDir } from '../helpers.js';

const native = path.join(ROOT, 'native');
let dir: string;
beforeAll(() => {
  dir = tempDir('native');
});
afterAll(() => cleanup(dir));

it('the C unit tests of trusted.c, plantext.c and plan.c pass', () => {
  const r = spawnSync('make', ['-s', '-C', native, 'test', `TEST_BUILD=${dir}`], { encoding: 'utf8', timeout: 120_000 });
  const output = `${r.stdout}${r.stderr}`;
  expect(r.status, output).toBe(0);
  for (const suite of ['trusted', 'plantext', 'plan'])
    expect(output, output).toMatch(new RegExp(`^${suite}: [1-9]\\d* checks, 0 failed$`, 'm'));
  expect(output, output).not.toMatch(/^FAIL /m);
});
