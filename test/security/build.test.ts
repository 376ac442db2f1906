// berth build, played by an attacker: a name `berth build -t` gave, and a build context in a
// directory the attacker can write. The victim's tagged image is the one a run by that name
// gets, whatever file of that name the attacker leaves in a shared working directory; and what
// the attacker links into a context the victim builds is copied as a link, never as the file
// it points to (SECURITY.md, "Building images").
import { chmodSync, mkdtempSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BERTH, cleanup, listImage } from '../helpers.js';
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { as, ATTACKER, dirOf, trailer, VICTIM, victimImages } from './users.js';

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

  it('a symlink the attacker puts in a context the victim builds is never what RUN --mount=type=bind binds', async () => {
    const secret = dirOf(VICTIM, 'build-secret-bind', 0o700);
    await as(VICTIM, 'sh', ['-c', `echo victim-secret > ${secret}/key && chmod 600 ${secret}/key`]);
    const ctx = path.join(shared, 'bind-ctx');
    await as(ATTACKER, 'sh', ['-c', `mkdir -m 0777 ${ctx} && ln -s ${secret} ${ctx}/src && printf 'FROM ${work}/plain.sqsh\\nRUN --mount=type=bind,source=src,target=/src cat /src/key > /stolen\\n' > ${ctx}/Dockerfile`]);
    const out = path.join(work, 'from-bind.sqsh');
    const r = await victim(['build', '--quiet', '-o', out, ctx]);
    expect(r.code).toBe(125);
    expect(r.stderr).toMatch(/the mount's source src is .*, outside the build context/);
    expect(r.stderr).not.toContain('victim-secret');
    cleanup(secret);
  }, 120_000);

  it('a file the attacker keeps swapping for a link to the victim\'s secret while the victim builds is never the secret in the image', async () => {
    const secret = dirOf(VICTIM, 'build-secret2', 0o700);
    await as(VICTIM, 'sh', ['-c', `head -c 200000 /dev/zero | tr '\\0' S > ${secret}/key && chmod 600 ${secret}/key`]);
    const ctx = path.join(shared, 'swapped');
    await as(ATTACKER, 'sh', ['-c', `mkdir -m 0777 ${ctx} && head -c 200000 /dev/zero | tr '\\0' G > ${ctx}/good && cp ${ctx}/good ${ctx}/data.txt && chmod 0644 ${ctx}/good ${ctx}/data.txt
      printf 'FROM ${work}/plain.sqsh\\nCOPY data.txt /data\\n' > ${ctx}/Dockerfile`]);
    // The attacker swaps data.txt between the good file and a link to the victim's key, without end.
    const swapper = spawn('runuser', ['-u', ATTACKER, '--', 'sh', '-c',
      `cd ${ctx} && while :; do ln -sfn ${secret}/key .l && mv -T .l data.txt; cp good .g && mv -T .g data.txt; done`], { stdio: 'ignore', detached: true });
    try {
      for (let i = 0; i < 8; i++) {
        const out = path.join(work, `swapped-${i}.sqsh`);
        const r = await victim(['build', '--quiet', '--no-cache', '-o', out, ctx]);
        if (r.code === 0) {
          // What is there is the link as listed, or the good file whole: never the key's bytes.
          const data = (await listImage(out))['data'];
          if (data?.type === 'symlink') expect(data).toMatchObject({ link: `${secret}/key` });
          else expect(data).toMatchObject({ type: 'file', sha256: createHash('sha256').update(Buffer.alloc(200000, 'G')).digest('hex') });
        } else {
          expect(r.stderr).toMatch(/changed while berth build read it|is not in the build context|no such file/);
          expect(r.stderr).not.toMatch(/internal error/);
        }
      }
    } finally {
      process.kill(-swapper.pid!, 'SIGKILL'); // runuser and the loop it runs: its own process group
      cleanup(secret);
    }
  }, 180_000);

  it("an image file that claims another image's digest does not become the cached base of builds from the real one", async () => {
    // The attacker's trojan, made under the victim's plain image's own metadata (digest and all).
    const actx = path.join(shared, 'trojan-ctx');
    await as(ATTACKER, 'sh', ['-c', `mkdir ${actx} && printf 'FROM ${work}/plain.sqsh\\nRUN echo trojan > /etc/trojan\\n' > ${actx}/Dockerfile`]);
    const trojan = path.join(shared, 'trojan.sqsh');
    const made = await as(ATTACKER, process.execPath, [BERTH, 'build', '--quiet', '-o', trojan, actx],
      { env: { XDG_CACHE_HOME: path.join(shared, 'attacker-cache2'), BERTH_RUNTIME_DIR: path.join(shared, 'attacker-runtime2') } });
    expect(made.code, made.stderr).toBe(0);
    // The victim's real image (a berth image, with its manifest digest), and a lookalike of it.
    const rctx = dirOf(VICTIM, 'build-real', 0o755);
    await as(VICTIM, 'sh', ['-c', `printf 'FROM ${work}/plain.sqsh\\nRUN echo real > /etc/real\\n' > ${rctx}/Dockerfile`]);
    const real = path.join(work, 'real.sqsh');
    expect((await victim(['build', '--quiet', '-o', real, rctx])).code).toBe(0);
    const forged = path.join(shared, 'real-lookalike.sqsh');
    trailer(trojan).write(path.join(work, 'lookalike.tmp'), trailer(real).metadata);
    expect((await as(ATTACKER, 'cp', [path.join(work, 'lookalike.tmp'), forged])).code).toBe(0);
    await as(ATTACKER, 'chmod', ['0644', forged]);
    // The victim builds from the lookalike once (their choice), then from the real image.
    const vctx = dirOf(VICTIM, 'build-ctx2', 0o755);
    await as(VICTIM, 'sh', ['-c', `printf 'FROM ${forged}\\nLABEL from=lookalike\\n' > ${vctx}/A && printf 'FROM ${real}\\nRUN true\\n' > ${vctx}/B`]);
    expect((await victim(['build', '--quiet', '-f', `${vctx}/A`, '-o', path.join(work, 'a.sqsh'), vctx])).code).toBe(0);
    const b = await victim(['build', '-f', `${vctx}/B`, '-o', path.join(work, 'b.sqsh'), vctx]);
    expect(b.code, b.stderr).toBe(0);
    expect(b.stdout + b.stderr).not.toMatch(/STEP 1\/\d+: FROM .* \(cached\)/);
    const got = await listImage(path.join(work, 'b.sqsh'));
    expect(got['etc/trojan']).toBeUndefined();
    expect(got['etc/real']).toBeDefined();
    cleanup(vctx);
    cleanup(rctx);
  }, 180_000);
});

