// berth build for real, as an ordinary user: Dockerfiles over a busybox image made offline
// (test/fixtures/make-build-images.sh). No image with a C compiler can be made cheaply from
// this machine's files, so the "compile" stage writes a shell script standing in for the
// program; what is tested is the multi-stage copy, not the compiler.
import { chmodSync, existsSync, mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BERTH, ROOT, cleanup, listImage, run, tempDir, umociListing } from '../helpers.js';

let work: string;
let base: string;
const env = () => ({ ...process.env, BERTH_RUNTIME_DIR: path.join(work, 'runtime'), BERTH_IMAGE_LINGER: '0', XDG_CACHE_HOME: path.join(work, 'cache'), BERTH_CACHE_DIR: path.join(work, 'cache', 'berth') });
const b = (...args: string[]) => run(process.execPath, [BERTH, ...args], { env: env(), cwd: work });

/** A layout's image: its config's layers and history agree (a history entry per layer, the OCI rule). */
function layoutImage(dir: string): { layers: number; history: { created_by: string; empty_layer?: boolean }[]; config: Record<string, unknown> } {
  const blob = (d: string) => JSON.parse(readFileSync(path.join(dir, 'blobs', 'sha256', d.slice(7)), 'utf8')) as Record<string, unknown>;
  const index = JSON.parse(readFileSync(path.join(dir, 'index.json'), 'utf8')) as { manifests: { digest: string }[] };
  const manifest = blob(index.manifests[0]!.digest) as { config: { digest: string }; layers: unknown[] };
  const config = blob(manifest.config.digest) as { history: { created_by: string; empty_layer?: boolean }[]; config: Record<string, unknown> };
  expect(config.history.filter((h) => !h.empty_layer)).toHaveLength(manifest.layers.length);
  return { layers: manifest.layers.length, history: config.history, config: config.config };
}

function context(name: string, files: Record<string, string>): string {
  const dir = path.join(work, name);
  for (const [f, text] of Object.entries(files)) {
    mkdirSync(path.dirname(path.join(dir, f)), { recursive: true });
    writeFileSync(path.join(dir, f), text);
  }
  return dir;
}

beforeAll(async () => {
  work = tempDir('build');
  const made = await run(path.join(ROOT, 'test/fixtures/make-build-images.sh'), [work]);
  if (made.code !== 0) throw new Error(made.stderr);
  base = path.join(work, 'busybox.sqsh');
  const r = await run(process.execPath, [BERTH, 'convert', `oci:${work}/oci:busybox`, '-o', base, '--quiet']);
  if (r.code !== 0) throw new Error(r.stderr);
}, 120_000);
afterAll(() => cleanup(work));

describe('berth build', () => {
  // What shows a RUN ran: the marker it prints (a cached step prints nothing).
  const MARK = /compiled-2/g;

  it('a multi-stage build with COPY globs, --chown, --chmod, .dockerignore, ARG and ENV, run with its config', async () => {
    const ctx = context('app', {
      'Dockerfile': `ARG BASE=${base}
FROM \${BASE} AS build
ARG GREETING=hello
ENV OUT=/out
WORKDIR \${OUT}
# the "compiler": writes the program
RUN printf '#!/bin/sh\\necho "%s from the program: $*"\\n' "$GREETING" > prog && chmod 755 prog && echo compiled-$((1+1))
FROM \${BASE}
ARG VERSION
ENV APP_HOME=/opt/app VERSION=\${VERSION:-none} ALT=\${VERSION:+set}
COPY --from=build /out/prog /usr/local/bin/
COPY --chown=app:app --chmod=0640 src/*.txt \${APP_HOME}/
COPY data/ \${APP_HOME}/data/
COPY extra \${APP_HOME}/extra/
COPY data/one /etc
WORKDIR \${APP_HOME}
USER app
LABEL org.example.version=\${VERSION}
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/prog"]
CMD ["default"]
`,
      '.dockerignore': 'src/secret.txt\n**/*.tmp\nextra\n!extra/keep.txt\n',
      'extra/keep.txt': 'kept\n', 'extra/drop.txt': 'dropped\n',
      'src/a.txt': 'A\n', 'src/b.txt': 'B\n', 'src/secret.txt': 'no\n', 'src/c.md': 'not copied\n',
      'data/one': '1\n', 'data/skip.tmp': 'x\n',
    });
    const out = path.join(work, 'app.sqsh');
    const r = await run(process.execPath, [BERTH, 'build', '--build-arg', 'VERSION=1.2', '-o', out, ctx], { env: { ...env() }, cwd: work });
    expect(r.stderr).toContain('STEP 1/');
    expect(r.stderr.match(MARK)).toHaveLength(1);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout.trim()).toBe(out);
    const listing = await listImage(out);
    expect(listing['usr/local/bin/prog']).toMatchObject({ type: 'file' });
    expect(listing['opt/app/a.txt']).toMatchObject({ uid: 1000, gid: 1000, mode: 0o640 });
    expect(listing['opt/app/b.txt']).toBeDefined();
    expect(listing['opt/app/secret.txt']).toBeUndefined();
    expect(listing['opt/app/c.md']).toBeUndefined();
    expect(listing['opt/app/data/one']).toMatchObject({ uid: 0 });
    expect(listing['opt/app/data/skip.tmp']).toBeUndefined();
    // A destination that is a directory in the image takes the file into it, as Docker does.
    expect(listing['etc']).toMatchObject({ type: 'dir' });
    expect(listing['etc/one']).toMatchObject({ type: 'file' });
    // An exception (!) brings back a file of an excluded directory, as Docker's matcher does.
    expect(listing['opt/app/extra/keep.txt']).toBeDefined();
    expect(listing['opt/app/extra/drop.txt']).toBeUndefined();
    const inspect = (JSON.parse((await b('inspect', '--json', out)).stdout) as { image: { config: Record<string, unknown> } }).image;
    expect(inspect.config).toMatchObject({
      Entrypoint: ['/usr/local/bin/prog'], Cmd: ['default'], WorkingDir: '/opt/app', User: 'app',
      Labels: expect.objectContaining({ 'org.example.version': '1.2' }), ExposedPorts: ['8080/tcp'],
    });
    expect(inspect.config.Env).toEqual(expect.arrayContaining(['APP_HOME=/opt/app', 'VERSION=1.2', 'ALT=set']));
    // The image runs its entrypoint with the CMD, in its working directory, with its variables.
    const ran = await b('run', out);
    expect(ran.stdout, ran.stderr).toBe('hello from the program: default\n');
    const sh = await b('run', '--entrypoint', '/bin/sh', out, '-c', 'pwd; echo $VERSION; cat data/one');
    expect(sh.stdout, sh.stderr).toBe('/opt/app\n1.2\n1\n');
  }, 180_000);

  it('a rebuild after an unrelated edit comes from the cache up to the changed step', async () => {
    const ctx = path.join(work, 'app');
    const build = () => run(process.execPath, [BERTH, 'build', '--build-arg', 'VERSION=1.2', '-o', path.join(work, 'app2.sqsh'), '--force', ctx], { env: env(), cwd: work });
    writeFileSync(path.join(ctx, 'src', 'b.txt'), 'B, edited\n');
    const r = await build();
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toMatch(/STEP \d+\/\d+: RUN printf .* \(cached\)/);
    expect(r.stderr).toMatch(/STEP \d+\/\d+: COPY --from=build \/out\/prog \/usr\/local\/bin\/ \(cached\)/);
    expect(r.stderr).not.toMatch(/COPY --chown=app:app .*\(cached\)/);
    expect(r.stderr.match(MARK)).toBeNull();
    expect((await b('exec', path.join(work, 'app2.sqsh'), 'cat', '/opt/app/b.txt')).stdout).toBe('B, edited\n');
    // A changed build argument is a change: the RUN that sees it runs again.
    const again = await run(process.execPath, [BERTH, 'build', '--build-arg', 'GREETING=hi', '-o', path.join(work, 'app3.sqsh'), '--force', ctx], { env: env(), cwd: work });
    expect(again.code, again.stderr).toBe(0);
    expect(again.stderr.match(MARK)).toHaveLength(1);
    expect((await b('run', path.join(work, 'app3.sqsh'))).stdout).toBe('hi from the program: default\n');
  }, 180_000);

  it('a failing RUN names its step, line and status, and leaves no image', async () => {
    const ctx = context('fails', { Dockerfile: `FROM ${base}\nRUN echo before\nRUN echo failing-now; exit 3\nCMD ["x"]\n` });
    const out = path.join(work, 'fails.sqsh');
    const r = await b('build', '-o', out, ctx);
    expect(r.code).toBe(125);
    expect(r.stderr).toContain('failing-now');
    expect(r.stderr).toMatch(/berth: error: step 3\/4 \(.*Dockerfile:3: RUN echo failing-now; exit 3\) failed: the command exited with status 3/);
    expect(existsSync(out)).toBe(false);
    // Nothing of the step is left in flight.
    expect(readdirSync(path.join(work, 'cache', 'berth', 'build', 'tmp'))).toEqual([]);
    // A FROM whose ARG is unset is told before anything runs.
    const unset = await b('build', context('unset', { Dockerfile: 'ARG BASE\nFROM ${BASE}\n' }));
    expect(unset.code).toBe(125);
    expect(unset.stderr).toMatch(/Dockerfile:2: FROM \$\{BASE\}: names no image once substituted/);
  }, 60_000);

  it('-t keeps the image in the cache for berth images and berth run NAME; --json and --quiet print no steps', async () => {
    const ctx = context('tagged', { Dockerfile: `FROM ${base}\nRUN echo tagged > /etc/tagged\nCMD ["cat", "/etc/tagged"]\n` });
    const r = await b('build', '--json', '-t', 'mytool:1.0', ctx);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).not.toContain('STEP');
    const result = JSON.parse(r.stdout) as { image: string; manifestDigest: string; tag: string; steps: { cached: boolean }[] };
    expect(result).toMatchObject({ tag: 'mytool:1.0', steps: [{ cached: true }, { cached: false }, { cached: false }] });
    const images = JSON.parse((await b('images', '--json')).stdout) as { manifestDigest: string; source: string }[];
    expect(images).toEqual(expect.arrayContaining([expect.objectContaining({ manifestDigest: result.manifestDigest, source: 'mytool:1.0' })]));
    expect((await b('run', 'mytool:1.0')).stdout).toBe('tagged\n');
    const quiet = await b('build', '--quiet', '-t', 'mytool:1.0', ctx);
    expect(quiet.stdout).toBe(`${result.manifestDigest}\n`);
    expect(quiet.stderr).toBe('');
  }, 120_000);

  it('--oci-layout exports the image as layers that umoci unpacks to the same tree', async () => {
    const layout = path.join(work, 'layout');
    const out = path.join(work, 'exported.sqsh');
    const r = await b('build', '-o', out, '--oci-layout', layout, path.join(work, 'tagged'));
    expect(r.code, r.stderr).toBe(0);
    // The FROM image's tree, then the RUN's change; CMD in the config.
    expect(layoutImage(layout)).toMatchObject({ layers: 2, config: { Cmd: ['cat', '/etc/tagged'] } });
    const ours = await listImage(out);
    const theirs = await umociListing(layout, 'latest', work);
    // umoci unpacks as the rootless user: ownership is its own; names, types, modes and contents are compared.
    const shape = (l: Record<string, { type: string; mode: number; sha256?: string; link?: string }>) =>
      Object.fromEntries(Object.entries(l).map(([k, v]) => [k, { type: v.type, mode: v.mode, sha256: v.sha256, link: v.link }]));
    delete theirs[''];
    delete ours[''];
    expect(shape(theirs)).toEqual(shape(ours));
    expect(ours['etc/tagged']).toBeDefined();
  }, 120_000);

  it('RUN as a fake root: chown to another uid, setgroups and set*id (su) and mknod succeed; what they did not do is not there', async () => {
    const ctx = context('fakeroot', { Dockerfile: `FROM ${base}
RUN touch /owned && chown 4242:4242 /owned && chown app:app /owned && mknod /devnode c 1 3 && su app -s /bin/sh -c 'echo switched-ok' && echo all-ok
` });
    const out = path.join(work, 'fakeroot.sqsh');
    const r = await b('build', '-o', out, ctx);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toContain('switched-ok');
    expect(r.stderr).toContain('all-ok');
    const listing = await listImage(out);
    // The calls returned 0 and did nothing: the file is root's, and no device was made.
    expect(listing['owned']).toMatchObject({ type: 'file', uid: 0, gid: 0 });
    expect(listing['devnode']).toBeUndefined();
    // berth exec --fakeroot has no such filter: the same chown is refused there.
    const plain = await b('exec', '--fakeroot', base, '/bin/sh', '-c', 'touch /tmp/x && chown 4242 /tmp/x');
    expect(plain.code).not.toBe(0);
  }, 120_000);

  it('FROM scratch with ADD of a local tar, --target, and berth prune removes the build cache', async () => {
    const ctx = context('scratch', { Dockerfile: `FROM ${base} AS first\nRUN echo first-ran\nFROM scratch AS files\nADD bundle.tar /opt/\nCOPY note /\nFROM files\nLABEL late=1\n`, note: 'n\n' });
    const tar = await run('tar', ['-C', ctx, '-cf', path.join(ctx, 'bundle.tar'), 'note']);
    expect(tar.code).toBe(0);
    const out = path.join(work, 'scratch.sqsh');
    const r = await b('build', '--target', 'files', '-o', out, ctx);
    expect(r.code, r.stderr).toBe(0);
    // Only the target and what it needs: the first stage is not built.
    expect(r.stderr).not.toContain('first-ran');
    expect(r.stderr).toContain('STEP 1/3: FROM scratch AS files');
    const listing = await listImage(out);
    delete listing[''];
    expect(Object.keys(listing).sort()).toEqual(['note', 'opt', 'opt/note']);
    expect(listing['opt/note']).toMatchObject({ type: 'file' });
    expect(listing['note']).toMatchObject({ type: 'file', mtime: 0 });
    const pruned = await b('prune');
    expect(pruned.code, pruned.stderr).toBe(0);
    expect(pruned.stdout).toMatch(/of build cache/);
    expect(existsSync(path.join(work, 'cache', 'berth', 'build'))).toBe(false);
    // The image made with -o is the user's, not the cache's.
    expect(existsSync(out)).toBe(true);
  }, 120_000);

  it('WORKDIR that no step made exists in the image; ENTRYPOINT keeps a CMD its stage set before it', async () => {
    const ctx = context('workdir', { Dockerfile: `FROM ${base}\nCMD ["-c", "pwd"]\nENTRYPOINT ["/bin/sh"]\nWORKDIR /new/dir\n` });
    const out = path.join(work, 'workdir.sqsh');
    const r = await b('build', '-o', out, '--oci-layout', path.join(work, 'workdir-oci'), ctx);
    expect(r.code, r.stderr).toBe(0);
    expect((await listImage(out))['new/dir']).toMatchObject({ type: 'dir', mode: 0o755, uid: 0 });
    expect(layoutImage(path.join(work, 'workdir-oci')).layers).toBe(2);
    expect((await b('run', out)).stdout).toBe('/new/dir\n');
  }, 60_000);

  it('COPY into a directory that is a symlink in the image (merged /usr) writes through it, and the link stays', async () => {
    const ctx = context('merged-usr', {
      Dockerfile: `FROM ${base}\nRUN mkdir -p /usr/lib2 && echo lib > /usr/lib2/libc.so && ln -s usr/lib2 /lib2\nCOPY a.txt /lib2/\nCOPY a.txt /lib2/sub/b.txt\n`,
      'a.txt': 'copied\n',
    });
    const out = path.join(work, 'merged-usr.sqsh');
    const r = await b('build', '--quiet', '-o', out, ctx);
    expect(r.code, r.stderr).toBe(0);
    const got = await listImage(out);
    expect(got['lib2']).toMatchObject({ type: 'symlink', link: 'usr/lib2' });
    expect(got['usr/lib2/libc.so']).toMatchObject({ type: 'file' }); // nothing of the directory lost
    expect(got['usr/lib2/a.txt']).toMatchObject({ type: 'file' });
    expect(got['usr/lib2/sub/b.txt']).toMatchObject({ type: 'file' });
  }, 60_000);

  it('COPY --from of a file that is a hard link to one not copied copies the file', async () => {
    const ctx = context('hardlink', {
      Dockerfile: `FROM ${base} AS s\nRUN mkdir /a /b && echo content > /a/f1 && ln /a/f1 /b/f2\nFROM ${base}\nCOPY --from=s /b/f2 /out\n`,
    });
    const out = path.join(work, 'hardlink.sqsh');
    const r = await b('build', '--quiet', '-o', out, ctx);
    expect(r.code, r.stderr).toBe(0);
    expect((await b('exec', out, 'cat', '/out')).stdout).toBe('content\n');
  }, 60_000);

  it('what the cache shares is not what a build names: each -t image is its own source; a stage FROM a stage starts the CMD rule again', async () => {
    const ctx = context('names', {
      Dockerfile: `FROM ${base}\nRUN echo x > /x\n`,
      'one.Dockerfile': `FROM ${base}\nCMD ["a"]\nENTRYPOINT ["/bin/echo"]\n`,
      'two.Dockerfile': `FROM ${base} AS one\nCMD ["a"]\nFROM one\nENTRYPOINT ["/bin/echo"]\n`,
    });
    for (const tag of ['names-foo', 'names-bar:2']) expect((await b('build', '--quiet', '-t', tag, ctx)).code).toBe(0);
    // The same image twice: one cache entry for its digest, named as it was last built.
    expect((await b('inspect', 'names-bar:2')).stdout).toMatch(/^Source: +names-bar:2$/m);
    expect((await b('inspect', 'names-foo')).stdout).toMatch(/^Source: +names-bar:2$/m);
    const out = path.join(work, 'names.sqsh');
    expect((await b('build', '--quiet', '-o', out, ctx)).code).toBe(0);
    expect((await b('inspect', out)).stdout).toMatch(new RegExp(`^Source: +berth build ${ctx}$`, 'm'));
    // One stage keeps the CMD it set before ENTRYPOINT; a stage FROM that stage does not (Docker's rule), cache or not.
    expect((await b('build', '--quiet', '-f', path.join(ctx, 'one.Dockerfile'), '-o', path.join(work, 'one.sqsh'), ctx)).code).toBe(0);
    expect((await b('build', '--quiet', '-f', path.join(ctx, 'two.Dockerfile'), '-o', path.join(work, 'two.sqsh'), ctx)).code).toBe(0);
    expect((await b('inspect', path.join(work, 'one.sqsh'))).stdout).toMatch(/^Cmd: +\["a"\]$/m);
    expect((await b('inspect', path.join(work, 'two.sqsh'))).stdout).toMatch(/^Cmd: +-$/m);
  }, 90_000);

  it.each(['deadbeefcafe', 'app.sqsh', 'tool.sif'])('-t %s is refused before building: run and exec would take it for a digest or a file', async (tag) => {
    const ctx = context(`badtag-${tag}`, { Dockerfile: `FROM ${base}\n` });
    const r = await b('build', '--quiet', '-t', tag, ctx);
    expect(r.code).toBe(125);
    expect(r.stderr).toMatch(/a name berth would take for a file or a digest[\s\S]*hint: choose a name/);
  });

  it('a build stopped by SIGTERM in a RUN ends the step and leaves nothing in flight', async () => {
    // The marker is the command's output, not the STEP line's text.
    const ctx = context('stopped', { Dockerfile: `FROM ${base}\nRUN echo sleeping-$((6*7)); sleep 60\n` });
    const child = spawn(process.execPath, [BERTH, 'build', '-o', path.join(work, 'stopped.sqsh'), ctx], { env: env(), cwd: work, stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    await new Promise<void>((resolve) => child.stderr!.on('data', (d: Buffer) => { stderr += d.toString(); if (stderr.includes('sleeping-42')) resolve(); }));
    child.kill('SIGTERM');
    const [code, signal] = await new Promise<[number | null, string | null]>((resolve) => child.on('close', (c, s) => resolve([c, s])));
    expect(signal ?? code).toBe(signal ? 'SIGTERM' : 143);
    expect(readdirSync(path.join(work, 'cache', 'berth', 'build', 'tmp'))).toEqual([]);
    expect(existsSync(path.join(work, 'stopped.sqsh'))).toBe(false);
    // The step's container went with it.
    const ps = spawnSync('ps', ['-u', String(process.getuid!()), '-o', 'args=']).stdout.toString();
    expect(ps).not.toContain('sleep 60');
  }, 60_000);

  it('heredocs: RUN <<EOF, <<-, several on a line, a #! script; COPY <<EOF, substituted unless quoted', async () => {
    const dockerfile = (body: string) => `FROM ${base}
ARG WHO=world
RUN <<EOF
# a comment the script keeps
echo "one: $WHO" > /one
echo continued \\
  line >> /one
EOF
RUN <<-EOT sh
	echo tabbed > /two
	EOT
RUN cat <<A > /three && cat <<'B' >> /three
a $WHO
A
b $WHO
B
RUN <<SH
#!/bin/sh
echo "${body} $0" > /four
SH
COPY <<EOF /etc/conf
hello \${WHO}
EOF
COPY --chmod=0755 <<one <<"two" /dir/
1 $WHO
one
2 $WHO
two
`;
    const ctx = context('heredoc', { Dockerfile: dockerfile('script at') });
    const out = path.join(work, 'heredoc.sqsh');
    const r = await b('build', '-o', out, ctx);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toContain('STEP 3/8: RUN <<EOF\n');
    const cat = await b('exec', out, 'cat', '/one', '/two', '/three', '/four', '/etc/conf', '/dir/one', '/dir/two');
    expect(cat.stdout, cat.stderr).toBe('one: world\ncontinued line\ntabbed\na world\nb $WHO\nscript at /tmp/.berth-heredoc/SH\nhello world\n1 world\n2 $WHO\n');
    const listing = await listImage(out);
    expect(listing['dir/one']).toMatchObject({ type: 'file', mode: 0o755, uid: 0, mtime: 0 });
    expect(Object.keys(listing).filter((k) => k.includes('berth-heredoc'))).toEqual([]);
    // A rebuild takes every step but ARG (a metadata step, never shown cached) from the cache; an edited body reruns its step.
    const again = await b('build', '-o', out, '--force', ctx);
    expect(again.stderr.match(/\(cached\)/g)).toHaveLength(7);
    writeFileSync(path.join(ctx, 'Dockerfile'), dockerfile('the script is'));
    const edited = await b('build', '-o', out, '--force', ctx);
    expect(edited.code, edited.stderr).toBe(0);
    expect(edited.stderr).toMatch(/STEP 6\/8: RUN <<SH\n/);
    expect((await b('exec', out, 'cat', '/four')).stdout).toBe('the script is /tmp/.berth-heredoc/SH\n');
  }, 180_000);

  it('RUN --mount=type=cache keeps its directory between builds and out of the layer; type=bind binds the context or a stage read-only', async () => {
    const ctx = context('mounts', {
      Dockerfile: `FROM ${base} AS build
RUN mkdir /out && echo from-stage > /out/built
FROM ${base}
RUN --mount=type=cache,target=/cache,id=counter sh -c 'n=$(cat /cache/n 2>/dev/null || echo 0); echo $((n+1)) > /cache/n; echo "count=$(cat /cache/n)"'
RUN --mount=type=bind,source=src,target=/src cat /src/a.txt > /copied && (touch /src/new 2>/dev/null && echo bind-written || echo bind-read-only) && (test -e /src/secret.txt && echo ignored-seen || echo ignored-hidden)
RUN --mount=type=bind,from=build,source=/out,target=/in cat /in/built > /from-stage
`,
      'src/a.txt': 'from the context\n',
      'src/secret.txt': 'not for the build\n',
      '.dockerignore': 'src/secret.txt\n',
    });
    const out = path.join(work, 'mounts.sqsh');
    const r = await b('build', '-o', out, ctx);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toContain('count=1');
    expect(r.stderr).toContain('bind-read-only');
    // What .dockerignore leaves out of the context is not in a bind of it either.
    expect(r.stderr).toContain('ignored-hidden');
    expect(existsSync(path.join(ctx, 'src', 'new'))).toBe(false);
    expect((await b('exec', out, 'cat', '/copied', '/from-stage')).stdout).toBe('from the context\nfrom-stage\n');
    const listing = await listImage(out);
    // Only the mount points are in the image, empty; what the cache holds is not.
    expect(listing['cache']).toMatchObject({ type: 'dir' });
    expect(Object.keys(listing).filter((k) => /^(cache|src|in)\//.test(k))).toEqual([]);
    // The cache outlives the build: the step, run again, counts on.
    const again = await b('build', '--no-cache', '-o', out, '--force', ctx);
    expect(again.code, again.stderr).toBe(0);
    expect(again.stderr).toContain('count=2');
    // A bound file's edit is a change: its step reruns; the cache's step is cached.
    writeFileSync(path.join(ctx, 'src', 'a.txt'), 'edited\n');
    const edited = await b('build', '-o', out, '--force', ctx);
    expect(edited.stderr).toMatch(/RUN --mount=type=cache,target=\/cache,id=counter .* \(cached\)/);
    expect(edited.stderr).not.toMatch(/RUN --mount=type=bind,source=src.*\(cached\)/);
    expect((await b('exec', out, 'cat', '/copied')).stdout).toBe('edited\n');
    // The cache directory is the user's own: one that others could write is refused.
    const mounts = path.join(work, 'cache', 'berth', 'build', 'mounts');
    const [dir] = readdirSync(mounts).filter((n) => !n.endsWith('.lock'));
    expect(statSync(path.join(mounts, dir!)).mode & 0o777).toBe(0o700);
    chmodSync(path.join(mounts, dir!), 0o777);
    const refused = await b('build', '--no-cache', '-o', out, '--force', ctx);
    expect(refused.code).toBe(125);
    expect(refused.stderr).toMatch(/the cache mount counter is .*, which is not a directory of yours with mode 0700 \(owner \d+, mode 777\)/);
    chmodSync(path.join(mounts, dir!), 0o700);
  }, 180_000);

  it.each([
    ['type=secret,id=token', /does not offer type=secret mounts[\s\S]*hint: keep the secret out/],
    ['type=ssh', /does not offer type=ssh mounts[\s\S]*hint: a step has no agent/],
    ['type=bind,source=../outside,target=/x', /outside the build context/],
  ])('RUN --mount=%s is refused with the way out', async (spec, why) => {
    const ctx = context(`mount-refused-${spec.replace(/[^a-z]/g, '')}`, { Dockerfile: `FROM ${base}\nRUN --mount=${spec} true\n` });
    const r = await b('build', ctx);
    expect(r.code).toBe(125);
    expect(r.stderr).toMatch(why);
  });

  it('ADD http(s)://...: downloaded (0600, root\'s, mtime 0); with --checksum a cached step fetches nothing, a wrong one is refused', async () => {
    const body = 'downloaded content\n';
    const digest = `sha256:${createHash('sha256').update(body).digest('hex')}`;
    const requests: string[] = [];
    const server = createServer((req, res) => {
      requests.push(req.url ?? '');
      if (req.url === '/moved') res.writeHead(302, { location: '/files/tool.txt' }).end();
      else if (req.url === '/files/tool.txt') res.end(body);
      else res.writeHead(404).end();
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    try {
      const ctx = context('add-url', {
        Dockerfile: `FROM ${base}\nADD ${url}/moved /opt/\nADD --checksum=${digest} ${url}/files/tool.txt /etc/tool.conf\n`,
        'wrong.Dockerfile': `FROM ${base}\nADD --checksum=sha256:${'0'.repeat(64)} ${url}/files/tool.txt /x\n`,
        'missing.Dockerfile': `FROM ${base}\nADD ${url}/nothing /x\n`,
      });
      const out = path.join(work, 'add-url.sqsh');
      const r = await b('build', '-o', out, ctx);
      expect(r.code, r.stderr).toBe(0);
      const listing = await listImage(out);
      // Named by the URL's path (after the redirect's, Docker names it by the URL asked for).
      expect(listing['opt/moved']).toMatchObject({ type: 'file', mode: 0o600, uid: 0, mtime: 0 });
      expect(listing['etc/tool.conf']).toMatchObject({ type: 'file', mode: 0o600, sha256: digest.slice(7) });
      // A rebuild downloads the unpinned file again (it may have changed), not the pinned one.
      requests.length = 0;
      const again = await b('build', '-o', out, '--force', ctx);
      expect(again.code, again.stderr).toBe(0);
      expect(again.stderr).toMatch(/ADD --checksum=\S+ \S+ \/etc\/tool.conf \(cached\)/);
      expect(requests).toEqual(['/moved', '/files/tool.txt']);
      const wrong = await b('build', '-f', path.join(ctx, 'wrong.Dockerfile'), ctx);
      expect(wrong.code).toBe(125);
      expect(wrong.stderr).toContain(`/files/tool.txt is ${digest}, not the --checksum sha256:${'0'.repeat(64)}`);
      const missing = await b('build', '-f', path.join(ctx, 'missing.Dockerfile'), ctx);
      expect(missing.code).toBe(125);
      expect(missing.stderr).toMatch(/\/nothing answered 404/);
    } finally {
      server.close();
    }
  }, 120_000);

  it('--quiet still shows a failing step\'s output with the error', async () => {
    const r = await b('build', '--quiet', '-o', path.join(work, 'q.sqsh'), path.join(work, 'fails'));
    expect(r.code).toBe(125);
    expect(r.stderr).toContain('failing-now');
    expect(r.stderr).not.toContain('STEP');
    expect(r.stderr).toMatch(/berth: error: step 3\/4/);
  }, 60_000);
});

// The real package manager: a Debian image made from this machine's Debian packages, and
// a package from the mirror this machine uses (~10 MB of indexes), installed by a fake root. The
// image is made once, for the tests of this part that need real accounts and tools too.
let debianImage: Promise<string> | undefined;
const debian = () => (debianImage ??= (async () => {
  const dir = path.join(work, 'debian');
  mkdirSync(dir);
  const made = await run(path.join(ROOT, 'test/fixtures/make-debian-image.sh'), [dir]);
  if (made.code !== 0) throw new Error(made.stderr);
  const image = path.join(work, 'debian.sqsh');
  const converted = await b('convert', `oci:${dir}/oci:debian`, '-o', image, '--quiet');
  if (converted.code !== 0) throw new Error(converted.stderr);
  return image;
})());

/** The owner umoci's rootless unpack recorded (its user.rootlesscontainers xattr, a protobuf of uid = 1, gid = 2; none: root's). */
function umociOwner(entry: { xattrs?: Record<string, string> } | undefined): string {
  const hex = entry?.xattrs?.['user.rootlesscontainers'];
  const ids = [0, 0];
  const bytes = Buffer.from(hex ?? '', 'hex');
  for (let i = 0; i < bytes.length;) {
    const field = bytes[i++]! >> 3;
    let v = 0;
    for (let shift = 0; ; shift += 7) {
      const byte = bytes[i++]!;
      v += (byte & 0x7f) * 2 ** shift;
      if (byte < 0x80) break;
    }
    if (field === 1 || field === 2) ids[field - 1] = v;
  }
  return `${ids[0]}:${ids[1]}`;
}

describe('berth build on a Debian image', () => {
  it('a multi-stage build that installs a C compiler, compiles a program in one stage and copies it into one without the compiler', async () => {
    // Caches of its own (the apt test below counts what is in the default ones).
    const mounts = '--mount=type=cache,id=cc-archives,target=/var/cache/apt,sharing=locked --mount=type=cache,id=cc-lists,target=/var/lib/apt/lists,sharing=locked';
    const ctx = context('cc', {
      'Dockerfile': `FROM ${await debian()} AS build
RUN ${mounts} apt-get update && apt-get install -y --no-install-recommends tcc libc6-dev
COPY hello.c /src/
RUN tcc -o /src/hello /src/hello.c
FROM ${await debian()}
COPY --from=build /src/hello /usr/local/bin/hello
ENTRYPOINT ["hello"]
`,
      'hello.c': '#include <stdio.h>\nint main(int argc, char **argv) { printf("hello from C, %d args\\n", argc - 1); return 0; }\n',
    });
    const out = path.join(work, 'cc.sqsh');
    const r = await b('build', '-o', out, ctx);
    expect(r.code, r.stderr).toBe(0);
    expect((await b('run', out, '--', 'a', 'b')).stdout).toBe('hello from C, 2 args\n');
    const listing = await listImage(out);
    expect(listing['usr/local/bin/hello']).toMatchObject({ type: 'file' });
    expect(Object.keys(listing).filter((k) => /^usr\/(bin\/tcc|include\/stdio\.h)$/.test(k))).toEqual([]); // the compiler stayed in its stage
  }, 300_000);

  it('RUN apt-get update && apt-get install of a real package, used in the built image; apt\'s lists and downloads in cache mounts', async () => {
    const mounts = '--mount=type=cache,target=/var/cache/apt,sharing=locked --mount=type=cache,target=/var/lib/apt/lists,sharing=locked';
    const ctx = context('apt', { Dockerfile: `FROM ${await debian()}\nRUN ${mounts} apt-get update && apt-get install -y --no-install-recommends hello\nCMD ["hello"]\n` });
    const out = path.join(work, 'hello.sqsh');
    const r = await b('build', '-o', out, ctx);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toContain('Setting up hello');
    expect((await b('run', out)).stdout).toBe('Hello, world!\n');
    // apt was told to stay root for the step only: the setting is not in the image.
    const listing = await listImage(out);
    expect(Object.keys(listing).filter((k) => k.includes('berth-build'))).toEqual([]);
    expect(listing['usr/bin/hello']).toMatchObject({ type: 'file', uid: 0 });
    // What apt downloaded is in the caches, not in the image (which has only the base's empty directories there).
    expect(Object.entries(listing).filter(([k, v]) => /^var\/(cache\/apt|lib\/apt\/lists)\/./.test(k) && v.type !== 'dir')).toEqual([]);
    const caches = path.join(work, 'cache', 'berth', 'build', 'mounts');
    // The cache of id /var/cache/apt (a cache mount's id is its target unless it names one).
    const archives = path.join(caches, createHash('sha256').update('/var/cache/apt').digest('hex').slice(0, 32), 'archives');
    const debs = readdirSync(archives, { withFileTypes: true }).map((e) => e.name).filter((n) => n.endsWith('.deb'));
    expect(debs).toEqual([expect.stringMatching(/^hello_.*\.deb$/)]);
    expect(readdirSync(caches).filter((d) => d.endsWith('.lock'))).toEqual([]);
  }, 300_000);

  it('USER before RUN: the step runs as that user (no fake root) and what it makes is that user\'s in the image and the layout', async () => {
    const ctx = context('user', { Dockerfile: `FROM ${await debian()}
RUN useradd --create-home --uid 1234 --user-group app && groupadd --gid 2345 staff2 && mkdir -m 1777 /shared
USER app
RUN (id -u; id -g; echo "$HOME") > /home/app/ids && touch /home/app/x && mkdir /home/app/d && touch /shared/by-app
RUN chown 0 /home/app/x 2>/dev/null && echo chown-faked || echo chown-refused
RUN --mount=type=cache,target=/home/app/.cache touch /home/app/.cache/ok && stat -c 'cache-owner=%u' /home/app/.cache
USER 4321:staff2
RUN id -u > /shared/by-number && id -g >> /shared/by-number && echo "home=$HOME"
USER root
RUN touch /by-root && echo more >> /home/app/x
USER app
` });
    const out = path.join(work, 'user.sqsh');
    const layout = path.join(work, 'user-oci');
    const r = await b('build', '-o', out, '--oci-layout', layout, ctx);
    expect(r.code, r.stderr).toBe(0);
    // No fake root for a USER step: chown to another user is refused as it is for a real one.
    expect(r.stderr).toContain('chown-refused');
    // A cache mount is the step's user's inside.
    expect(r.stderr).toContain('cache-owner=1234');
    expect(r.stderr).toContain('home=/');
    const ids = await b('exec', out, 'cat', '/home/app/ids', '/shared/by-number');
    expect(ids.stdout, ids.stderr).toBe('1234\n1234\n/home/app\n4321\n2345\n');
    const ours = await listImage(out);
    const owner = (k: string) => `${ours[k]?.uid}:${ours[k]?.gid}`;
    expect(owner('home/app/x')).toBe('1234:1234');
    expect(owner('home/app/d')).toBe('1234:1234');
    expect(owner('home/app/ids')).toBe('1234:1234');
    expect(owner('shared/by-app')).toBe('1234:1234');
    expect(owner('shared/by-number')).toBe('4321:2345');
    expect(owner('by-root')).toBe('0:0');
    // What a step only copied up keeps the owner it had: /shared, which app wrote in, stays root's;
    // /home/app/x, which root appended to, stays app's. (/home/app is root's: useradd's chown was faked.)
    expect(owner('shared')).toBe('0:0');
    expect(ours['shared']).toMatchObject({ type: 'dir', mode: 0o1777 });
    expect(owner('home/app')).toBe('0:0');
    // umoci reads the same owners from the exported layers.
    const theirs = await umociListing(layout, 'latest', work);
    for (const k of ['home/app/x', 'home/app/d', 'shared/by-number', 'by-root']) expect(umociOwner(theirs[k]), k).toBe(owner(k));
    // The image's User is the last USER: berth run says so, and --user app runs as it.
    expect((await b('exec', '--user', 'app', out, 'id', '-u')).stdout).toBe('1234\n');
  }, 300_000);

  it('a RUN after USER of an account the image lacks names the user and the step', async () => {
    const ctx = context('nouser', { Dockerfile: `FROM ${await debian()}\nUSER nobody-here\nRUN true\n` });
    const r = await b('build', ctx);
    expect(r.code).toBe(125);
    expect(r.stderr).toMatch(/berth: error: step 3\/3 \(.*Dockerfile:3: RUN true\) runs as USER nobody-here: the image has no such user in \/etc\/passwd/);
    expect(r.stderr).toMatch(/hint: .*USER UID\[:GID\]/);
  }, 300_000);
});
