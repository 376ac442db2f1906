// berth build, played by an attacker: a name `berth build -t` gave, and a build context in a
// directory the attacker can write. The victim's tagged image is the one a run by that name
// gets, whatever file of that name the attacker leaves in a shared working directory; and what
// the attacker links into a context the victim builds is copied as a link, never as the file
// it points to (SECURITY.md, "Building images").
import { chmodSync, mkdtempSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BERTH, cleanup, listImage } from '../helpers.js';
import { as, ATTACKER, dirOf, VICTIM, victimImages } from './users.js';

let work: string;
let shared: string;
const env = () => ({ BERTH_RUNTIME_DIR: path.join(work, 'runtime'), BERTH_IMAGE_LINGER: '0', XDG_CACHE_HOME: path.join(work, 'cache') });
const victim = (args: string[], cwd?: string) => as(VICTIM, process.execPath, [BERTH, ...args], { env: env(), ...(cwd ? { cwd } : {}) });

beforeAll(async () => {
  work = await victimImages('build');
  // A shared, sticky directory, as /tmp or a project's scratch is.
  shared = mkdtempSync(path.join('/tmp', 'berth-sec-build-shared-'));
  chmodSync(shared, 0o1777);
}, 120_000);
afterAll(() => {
  cleanup(work);
  cleanup(shared);
});

describe('berth build against another user', () => {
  it("a file named like the victim's -t name in a shared working directory is not what `berth run NAME` runs", async () => {
    const ctx = dirOf(VICTIM, 'build-ctx', 0o755);
    await as(VICTIM, 'sh', ['-c', `printf 'FROM ${work}/plain.sqsh\\nRUN echo built > /etc/who\\nCMD ["cat", "/etc/who"]\\n' > ${ctx}/Dockerfile`]);
    const built = await victim(['build', '--quiet', '-t', 'mytool:1.0', ctx]);
    expect(built.code, built.stderr).toBe(0);
    // The attacker's image of that name, in the directory the victim works in.
    await as(ATTACKER, 'sh', ['-c', `mkdir ${shared}/c && printf 'FROM ${work}/plain.sqsh\\nRUN echo pwned > /etc/who\\nCMD ["cat", "/etc/who"]\\n' > ${shared}/c/Dockerfile`]);
    const planted = await as(ATTACKER, process.execPath, [BERTH, 'build', '--quiet', '-o', `${shared}/mytool:1.0`, `${shared}/c`],
      { env: { XDG_CACHE_HOME: path.join(shared, 'attacker-cache'), BERTH_RUNTIME_DIR: path.join(shared, 'attacker-runtime') } });
    expect(planted.code, planted.stderr).toBe(0);
    const ran = await victim(['run', 'mytool:1.0'], shared);
    expect(ran.stdout, ran.stderr).toBe('built\n');
    // The planted file is a runnable image: ./NAME, the user's own explicit choice, runs it.
    await as(ATTACKER, 'chmod', ['0644', `${shared}/mytool:1.0`]);
    expect((await victim(['run', './mytool:1.0'], shared)).stdout).toBe('pwned\n');
    cleanup(ctx);
  }, 120_000);

  it('a symlink the attacker puts in a context the victim builds is copied as the link, not the victim\'s file it names', async () => {
    const secret = dirOf(VICTIM, 'build-secret', 0o700);
    await as(VICTIM, 'sh', ['-c', `echo victim-secret > ${secret}/key && chmod 600 ${secret}/key`]);
    const ctx = path.join(shared, 'ctx');
    await as(ATTACKER, 'sh', ['-c', `mkdir -m 0777 ${ctx} && ln -s ${secret}/key ${ctx}/key && printf 'FROM ${work}/plain.sqsh\\nCOPY . /ctx/\\n' > ${ctx}/Dockerfile`]);
    const out = path.join(work, 'from-shared.sqsh');
    const r = await victim(['build', '--quiet', '-o', out, ctx]);
    expect(r.code, r.stderr).toBe(0);
    const listing = await listImage(out);
    expect(listing['ctx/key']).toMatchObject({ type: 'symlink', link: `${secret}/key` });
    cleanup(secret);
  }, 120_000);
});
