// Containers started for real by an ordinary user (test/run drops root): user namespaces,
// squashfuse, overlay, binds, pivot_root. Images are made offline by
// test/fixtures/make-run-images.sh and converted by berth.
import { spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { availableParallelism, homedir, userInfo } from 'node:os';
import path from 'node:path';
import { gunzipSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildPlan } from '../../src/plan/build.js';
import { serializePlan } from '../../src/plan/serialize.js';
import { BERTH, PYTHON, ROOT, berth, cleanup, makeLayout, run, tempDir } from '../helpers.js';

let work: string;
const img = (name: string) => path.join(work, `${name}.sqsh`);
const runtimeBase = () => path.join(work, 'runtime');
// Every container of this file uses its own runtime directory, so leftovers can be counted, and
// image servers that leave as soon as their last container has ended (one test keeps them).
const env = () => ({ ...process.env, BERTH_RUNTIME_DIR: runtimeBase(), BERTH_IMAGE_LINGER: '0' });

/**
 * berth processes of this file still running: zombies do not count (some PID 1s never reap),
 * nor do those of other test files running meanwhile (told apart by their BERTH_RUNTIME_DIR).
 */
function liveHelpers(): string[] {
  // Image and step servers are not dumpable (their environ is root's to read): count their directories.
  const servers = (existsSync(runtimeBase()) ? readdirSync(runtimeBase()) : []).filter((n) => /^img-[^.]+$/.test(n)).map((n) => `server ${n}`);
  const ps = spawnSync('ps', ['-u', String(userInfo().uid), '-o', 'pid=,stat=,comm=']).stdout.toString();
  return ps.split('\n').filter((l) => l.includes('berth-helper') && !/^\s*\d+\s+Z/.test(l)).filter((l) => {
    try {
      return readFileSync(`/proc/${l.trim().split(/\s+/)[0]}/environ`, 'latin1').split('\0').includes(`BERTH_RUNTIME_DIR=${runtimeBase()}`);
    } catch {
      return false; // gone meanwhile, or a server
    }
  }).concat(servers);
}

async function until(check: () => boolean, ms: number): Promise<boolean> {
  for (const end = Date.now() + ms; Date.now() < end; await new Promise((r) => setTimeout(r, 50))) if (check()) return true;
  return check();
}
// berth as users start it: the file itself, whose first lines exec berth-helper --launch, which
// runs Node and then becomes the container (exec in place). `node dist/berth.cjs` is the other
// way in (Node starts the helper and waits); STARTS has both, for the tests of what a job sees.
const b = (...args: string[]) => run(BERTH, args, { env: env(), cwd: work });
const STARTS = [['the berth command', []], ['node dist/berth.cjs', [process.execPath]]] as const;
const start = (via: readonly string[], args: string[], opts: { stdio?: 'ignore' } = {}) =>
  spawn(via[0] ?? BERTH, via[0] ? [BERTH, ...args] : args, { env: env(), ...opts });

beforeAll(async () => {
  work = tempDir('run');
  const made = await run(path.join(ROOT, 'test/fixtures/make-run-images.sh'), [work]);
  if (made.code !== 0) throw new Error(made.stderr);
  for (const tag of ['busybox', 'ep', 'python', 'rdma']) {
    const r = await berth('convert', `oci:${work}/oci:${tag}`, '-o', img(tag), '--quiet');
    if (r.code !== 0) throw new Error(r.stderr);
  }
}, 180_000);
afterAll(() => cleanup(work));

describe('commands and exit status', () => {
  it('run follows ENTRYPOINT/CMD; arguments after -- replace CMD', async () => {
    expect((await b('run', img('ep'))).stdout).toBe('ep default\n');
    expect((await b('run', img('ep'), '--', 'a', 'b')).stdout).toBe('ep a b\n');
  });

  it("passes the container's exit status through, 128+N after signal N", async () => {
    expect((await b('exec', img('busybox'), 'sh', '-c', 'exit 42')).code).toBe(42);
    // The berth command is the container: the caller sees the signal itself (a shell's $? is
    // 128+N); through Node, berth exits 128+N.
    expect((await b('exec', img('busybox'), 'sh', '-c', 'kill -9 $$')).signal).toBe('SIGKILL');
    expect((await run('sh', ['-c', `${BERTH} exec ${img('busybox')} sh -c 'kill -9 $$'; echo $?`], { env: env() })).stdout).toBe('137\n');
    expect((await run(process.execPath, [BERTH, 'exec', img('busybox'), 'sh', '-c', 'kill -9 $$'], { env: env() })).code).toBe(137);
    expect((await b('exec', img('busybox'), 'true')).code).toBe(0);
  });

  it('the berth command becomes the container: the caller\'s own child, its signal the caller\'s to see, no Node left', async () => {
    // $$ is the process the caller started, $PPID the caller (this test): nothing in between.
    const ids = await run(BERTH, ['exec', img('busybox'), 'sh', '-c', 'echo $$ $PPID'], { env: env() });
    expect(ids.stdout.trim().split(' ').map(Number)[1]).toBe(process.pid);
    const child = start([], ['exec', img('busybox'), 'sh', '-c', 'echo ready; exec sleep 30']);
    try {
      await new Promise((resolve) => child.stdout!.once('data', resolve));
      // The very process: once the shell has exec'd, the caller's child is the sleep.
      expect(await until(() => readFileSync(`/proc/${child.pid}/cmdline`, 'latin1') === 'sleep\x0030\x00', 3000)).toBe(true);
      // Node has exited: no process of this user still runs berth's JavaScript for it.
      const nodes = spawnSync('pgrep', ['-u', String(userInfo().uid), '-f', `node -- ${BERTH} exec`]).stdout.toString().trim();
      expect(nodes).toBe('');
    } finally {
      child.kill('SIGTERM');
    }
    const [code, signal] = await new Promise<[number | null, NodeJS.Signals | null]>((resolve) => child.on('close', (c, s) => resolve([c, s])));
    expect([code, signal]).toEqual([null, 'SIGTERM']);
    // The caller's ignored signals stay ignored in the container (nohup's SIGHUP).
    const nohup = await run('sh', ['-c', `trap '' HUP; ${BERTH} exec ${img('busybox')} grep SigIgn /proc/self/status`], { env: env() });
    expect(BigInt(`0x${nohup.stdout.trim().split(/\s+/)[1]}`) & 1n, nohup.stdout).toBe(1n);
    // BERTH_HELPER still names the helper that runs the container (here one that says so first).
    const wrapper = path.join(work, 'wrapped-helper');
    writeFileSync(wrapper, `#!/bin/sh\necho wrapped "$@" >&2\nexec ${path.join(ROOT, 'native/build/berth-helper')} "$@"\n`, { mode: 0o755 });
    const wrapped = await run(BERTH, ['exec', img('busybox'), 'echo', 'hi'], { env: { ...env(), BERTH_HELPER: wrapper } });
    expect([wrapped.code, wrapped.stdout, wrapped.stderr]).toEqual([0, 'hi\n', 'wrapped\n']);
    // Through the launcher, berth's own failures and the command's statuses are as before.
    expect((await b('exec', img('busybox'), 'sh', '-c', 'exit 42')).code).toBe(42);
    const missing = await b('exec', path.join(work, 'none.sqsh'), 'true');
    expect([missing.code, missing.stderr]).toEqual([125, expect.stringMatching(/^berth: error: .*none\.sqsh does not exist/)]);
  });

  it('runs Debian python3 from the image', async () => {
    const r = await b('exec', img('python'), 'python3', '-c', 'import sys, json, sqlite3; print(sys.version_info[:2], json.dumps([1]))');
    expect(r.stderr).toBe('');
    expect(r.stdout).toBe('(3, 11) [1]\n');
  });

  it('a command that is not in the image: 127 and a message naming it', async () => {
    const r = await b('exec', img('busybox'), 'no-such-tool', '--version');
    expect(r.code).toBe(127);
    expect(r.stderr).toMatch(/'no-such-tool' is not in the image \(searched \/bin\)/);
  });

  it('shell opens the image shell', async () => {
    const r = await run(process.execPath, [BERTH, 'shell', img('busybox')], { env: env(), input: 'echo in-shell $0; exit 3\n' });
    expect(r.stdout).toContain('in-shell');
    expect(r.code).toBe(3);
  });
});

describe('what jobs depend on', () => {
  it.each(STARTS)('SIGTERM, SIGINT, SIGHUP, SIGUSR1 and SIGUSR2 reach the job (%s)', async (_name, via) => {
    for (const [signal, n] of [['SIGTERM', 15], ['SIGINT', 2], ['SIGHUP', 1], ['SIGUSR1', 10], ['SIGUSR2', 12]] as const) {
      const child = start(via, ['exec', img('busybox'), 'sh', '-c',
        `trap 'echo got ${signal}; exit ${n}' ${signal.slice(3)}; echo ready; while :; do sleep 0.05; done`]);
      let out = '';
      await new Promise<void>((resolve) => child.stdout!.on('data', (d: Buffer) => {
        out += d.toString();
        if (out.includes('ready')) resolve();
      }));
      child.kill(signal);
      const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
      expect(out).toContain(`got ${signal}`);
      expect(code).toBe(n);
    }
  });

  it.each(STARTS)('a berth killed with SIGKILL takes its container with it (with or without --pid, or limits): no orphan, nothing left (%s)', async (_name, via) => {
    // With limits, Node waits for the container, through the launcher too.
    for (const flags of [[], ['--pid'], ['--memory', '1g', '--limits', 'best-effort']]) {
      const marker = `sleep ${4000 + flags.length + 10 * via.length}`; // a command line no other process has
      const child = start(via, ['exec', ...flags, img('busybox'), 'sh', '-c', `echo ready; exec ${marker}`]);
      await new Promise<void>((resolve) => child.stdout!.on('data', (d: Buffer) => { if (d.toString().includes('ready')) resolve(); }));
      child.kill('SIGKILL');
      await new Promise((resolve) => child.on('close', resolve));
      const alive = () => spawnSync('pgrep', ['-xf', marker]).status === 0;
      expect(await until(() => !alive(), 3000), `${flags.join(' ')}: the container outlived berth`).toBe(true);
    }
    expect(await until(() => liveHelpers().length === 0, 15_000)).toBe(true);
  });

  it('a berth killed with SIGKILL at any moment of its start leaves no container, no server and no runtime files', async () => {
    // Moments spread over the whole start: Node loading, the plan, the helper's user namespace,
    // the image server mounting, the container's init, the command running. Fixed, so that a
    // failure names its moment and repeats.
    // Both ways in, with and without --pid, at each of the moments in turn.
    for (const [i, delay] of [0, 15, 30, 50, 70, 90, 120, 150, 200, 260, 330, 420, 10, 40, 80, 110, 170, 230, 300, 380].entries()) {
      const marker = `sleep ${5000 + i}`;
      const flags = i % 2 ? ['--pid'] : [];
      const child = start(STARTS[(i >> 1) % 2][1], ['exec', ...flags, img('busybox'), 'sh', '-c', `exec ${marker}`], { stdio: 'ignore' });
      await new Promise((r) => setTimeout(r, delay));
      child.kill('SIGKILL');
      await new Promise((resolve) => child.on('close', resolve));
      const alive = () => spawnSync('pgrep', ['-xf', marker]).status === 0;
      expect(await until(() => !alive(), 3000), `killed after ${delay} ms (${STARTS[(i >> 1) % 2][0]}): the container outlived berth`).toBe(true);
    }
    expect(await until(() => liveHelpers().length === 0 && readdirSync(runtimeBase()).length === 0, 15_000),
      `left: ${liveHelpers().join(', ')} ${readdirSync(runtimeBase()).join(', ')}`).toBe(true);
    expect(readFileSync('/proc/self/mountinfo', 'utf8')).not.toMatch(/berth|squashfuse/);
  });

  it('a berth told to stop (SIGTERM) at any moment of its start leaves no container running', async () => {
    // Also in the instant between Node handing the plan over and the launcher starting it.
    for (const [i, delay] of [0, 30, 60, 90, 120, 160, 200, 260].entries()) {
      const marker = `sleep ${6000 + i}`;
      const child = start([], ['exec', img('busybox'), 'sh', '-c', `exec ${marker}`], { stdio: 'ignore' });
      await new Promise((r) => setTimeout(r, delay));
      child.kill('SIGTERM');
      const [code, signal] = await new Promise<[number | null, NodeJS.Signals | null]>((resolve) => child.on('close', (c, s) => resolve([c, s])));
      expect(code === 143 || signal === 'SIGTERM', `after ${delay} ms: ${code} ${signal}`).toBe(true);
      expect(await until(() => spawnSync('pgrep', ['-xf', marker]).status !== 0, 3000), `after ${delay} ms: the container runs on`).toBe(true);
    }
    expect(await until(() => liveHelpers().length === 0 && readdirSync(runtimeBase()).length === 0, 15_000)).toBe(true);
  });

  it('a berth started under nohup (SIGHUP ignored) lives through a SIGHUP at any moment, Node\'s planning included', async () => {
    for (const delay of [0, 40, 100, 600]) {
      const child = spawn('sh', ['-c', `trap '' HUP; exec ${BERTH} exec ${img('busybox')} sh -c 'sleep 1; echo alive'`], { env: env() });
      let out = '';
      child.stdout.on('data', (d: Buffer) => { out += d.toString(); });
      // From the moment the shell has ignored SIGHUP and exec'd the launcher.
      await until(() => { try { return readFileSync(`/proc/${child.pid}/cmdline`, 'latin1').includes('--launch'); } catch { return false; } }, 3000);
      await new Promise((r) => setTimeout(r, delay));
      child.kill('SIGHUP');
      const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
      expect([code, out], `SIGHUP after ${delay} ms`).toEqual([0, 'alive\n']);
    }
  });

  it('stdin and stdout pass through, and a terminal is a terminal', async () => {
    expect((await run(process.execPath, [BERTH, 'exec', img('busybox'), 'tr', 'a-z', 'A-Z'], { env: env(), input: 'hello\n' })).stdout).toBe('HELLO\n');
    for (const via of [`${process.execPath} ${BERTH}`, BERTH]) {
      const tty = await run('script', ['-qec', `${via} exec ${img('busybox')} tty`, '/dev/null'], { env: env() });
      expect(tty.stdout, via).toMatch(/^\/dev\/pts\/\d+/);
    }
  });

  it('leaves nothing behind: no helper, no FUSE server, no runtime files', async () => {
    expect((await b('exec', img('busybox'), 'true')).code).toBe(0);
    expect(await until(() => liveHelpers().length === 0 && readdirSync(runtimeBase()).length === 0, 5000)).toBe(true);
    // The mounts lived in the containers' own namespaces: the host never saw them.
    expect(readFileSync('/proc/self/mountinfo', 'utf8')).not.toMatch(/berth|squashfuse/);
  });

  it('keeps the image served between containers for BERTH_IMAGE_LINGER seconds, then nothing is left', async () => {
    const lingering = { ...env(), BERTH_IMAGE_LINGER: '2' };
    expect((await run(process.execPath, [BERTH, 'exec', img('busybox'), 'true'], { env: lingering })).code).toBe(0);
    expect(liveHelpers()).toHaveLength(1); // the image server, waiting for the next container
    expect((await run(process.execPath, [BERTH, 'exec', img('busybox'), 'true'], { env: lingering })).code).toBe(0);
    expect(liveHelpers()).toHaveLength(1); // the same one served it
    expect(await until(() => liveHelpers().length === 0 && readdirSync(runtimeBase()).length === 0, 6000)).toBe(true);
  });

  it('two hundred containers of one image started at once all succeed', async () => {
    // The helper alone, with a prepared plan: the path every Slurm task takes.
    const { metadata, location } = await import('../../src/runtime/image.js').then((m) => m.openImage(img('busybox')));
    const { hostFacts } = await import('../../src/host/user.js');
    const plan = buildPlan(location, metadata, { ...hostFacts(env()), cwd: work }, {
      binds: [], home: true, containall: false, writableTmpfs: false, fakeroot: false, pid: false, cleanenv: false, env: [], pwd: undefined, bindings: [],
    }, { mode: 'exec', args: ['sh', '-c', 'cat /etc/motd > /dev/null && echo ok'] });
    const planFile = path.join(work, 'plan.txt');
    writeFileSync(planFile, serializePlan(plan));
    const helper = path.join(ROOT, 'native/build/berth-helper');
    const results = await Promise.all(Array.from({ length: 200 }, () => run(helper, [planFile], { env: env() })));
    const failed = results.filter((r) => r.code !== 0 || r.stdout !== 'ok\n');
    expect(failed.map((r) => r.stderr).slice(0, 3)).toEqual([]);
    expect(await until(() => liveHelpers().length === 0 && readdirSync(runtimeBase()).length === 0, 5000)).toBe(true);
  }, 120_000);
});

describe('one image server, many readers at once', () => {
  it('eight containers reading every file of the image at once, from one server with several serving threads, all read the same bytes', async () => {
    // What a node's ranks starting together do: every read is served by one of the server's
    // threads (fuse.c), each with its own opened image. A checksum of the whole tree, alone
    // first, then eight at once in one server (it lingers, so they share it).
    const sums = 'find /usr/lib/python3.11 -type f -print0 | sort -z | xargs -0 md5sum | md5sum';
    const shared = { ...env(), BERTH_IMAGE_LINGER: '5' };
    const alone = await run(BERTH, ['exec', img('python'), 'sh', '-c', sums], { env: env() });
    expect(alone.code, alone.stderr).toBe(0);
    const together = await Promise.all(Array.from({ length: 8 }, () => run(BERTH, ['exec', img('python'), 'sh', '-c', sums], { env: shared })));
    expect(together.map((r) => [r.code, r.stderr])).toEqual(Array(8).fill([0, '']));
    expect(new Set(together.map((r) => r.stdout))).toEqual(new Set([alone.stdout]));
    // The server: its main thread and one serving thread per CPU, up to four.
    const dir = readdirSync(runtimeBase()).find((n) => /^img-[^.]+$/.test(n))!;
    const server = readFileSync(path.join(runtimeBase(), dir, 'pid'), 'utf8').trim();
    expect(readdirSync(`/proc/${server}/task`).length).toBe(1 + Math.min(4, availableParallelism()));
    expect(await until(() => liveHelpers().length === 0 && readdirSync(runtimeBase()).length === 0, 10_000)).toBe(true);
  }, 120_000);
});

describe('the image through the kernel\'s caches', () => {
  // The server asks the kernel to keep directory listings and symlinks, opens nothing, and
  // says once that an image without xattrs has none (fuse.c): what a container sees must not
  // change. A directory of 3000 entries takes some 40 replies to list.
  const names = Array.from({ length: 3000 }, (_, i) => `entry-${String(i).padStart(5, '0')}-${'x'.repeat(i % 40)}`);
  const layerScript = `
import io, sys, tarfile
out = io.BytesIO()
with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as t:
    def add(name, kind=tarfile.REGTYPE, data=b"", pax=None, link=""):
        i = tarfile.TarInfo(name); i.type = kind; i.size = len(data); i.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
        i.linkname = link; i.mtime = 1700000000
        if pax: i.pax_headers = pax
        t.addfile(i, io.BytesIO(data))
    add("big", tarfile.DIRTYPE)
    for n in sys.stdin.read().split():
        add("big/" + n, data=n.encode())
    add("attr", data=b"a", pax={"SCHILY.xattr.user.berth": "kept"})
    add("link-to-big", tarfile.SYMTYPE, link="big")
sys.stdout.buffer.write(out.getvalue())
`;
  const list = `import hashlib, os, sys
for d in sys.argv[1:]:
    found = os.listdir(d)
    print(len(found), hashlib.sha256("\\n".join(sorted(found)).encode()).hexdigest(), flush=True)
try:
    print(os.getxattr("/attr", "user.berth").decode(), os.listxattr("/attr"))
except OSError as e:
    print("xattrs:", os.strerror(e.errno))`;

  /** The python image's layers, then one more made here: a big directory, an xattr, a symlink. */
  function pythonLayers(): Buffer[] {
    const layout = path.join(work, 'oci');
    const blob = (d: string) => readFileSync(path.join(layout, 'blobs', 'sha256', d.slice(7)));
    const index = JSON.parse(readFileSync(path.join(layout, 'index.json'), 'utf8')) as { manifests: { digest: string; annotations?: Record<string, string> }[] };
    const ref = index.manifests.find((m) => m.annotations?.['org.opencontainers.image.ref.name'] === 'python')!;
    const manifest = JSON.parse(blob(ref.digest).toString()) as { layers: { digest: string }[] };
    const layers = manifest.layers.map((l) => gunzipSync(blob(l.digest)));
    const extra = spawnSync(PYTHON, ['-c', layerScript], { input: names.join('\n'), maxBuffer: 1 << 28 });
    if (extra.status !== 0) throw new Error(extra.stderr.toString());
    return [...layers, extra.stdout];
  }

  it('lists a large directory whole, again from the cache and from two containers at once, and shows the image\'s xattrs', async () => {
    const made = makeLayout(path.join(work, 'oci-cached'), pythonLayers(), { config: { Env: ['PATH=/usr/bin:/bin'], Cmd: ['python3'] } });
    const r = await berth('convert', `oci:${made.dir}`, '-o', img('cached'), '--quiet');
    expect(r.code, r.stderr).toBe(0);
    const shared = { ...env(), BERTH_IMAGE_LINGER: '5' };
    const sum = createHash('sha256').update([...names].sort().join('\n')).digest('hex');
    const seen = `3000 ${sum}\n3000 ${sum}\nkept ['user.berth']\n`;
    // The first container fills the kernel's cache, listing once by name and once through the
    // symlink; the next ones read it from there (the same server lingers).
    const first = await run(BERTH, ['exec', img('cached'), 'python3', '-c', list, '/big', '/link-to-big'], { env: shared });
    expect([first.code, first.stderr, first.stdout]).toEqual([0, '', seen]);
    const both = await Promise.all([0, 1].map(() => run(BERTH, ['exec', img('cached'), 'python3', '-c', list, '/big', '/link-to-big'], { env: shared })));
    expect(both.map((x) => [x.code, x.stderr, x.stdout])).toEqual([[0, '', seen], [0, '', seen]]);
    // The plain python image holds no xattr at all: its filesystem says it has none (a file the
    // overlay above it has not copied, as /etc is for the passwd entry).
    const none = 'import os, sys\ntry:\n os.listxattr(os.path.realpath(sys.executable))\nexcept OSError as e:\n print(os.strerror(e.errno))';
    const plain = await run(BERTH, ['exec', img('python'), 'python3', '-c', none], { env: env() });
    expect([plain.code, plain.stdout]).toEqual([0, 'Operation not supported\n']);
    expect(await until(() => liveHelpers().length === 0 && readdirSync(runtimeBase()).length === 0, 10_000)).toBe(true);
  }, 120_000);
});

describe('environment and identity', () => {
  it("the image's Env, the host's minus the deny-list, --env, --env-file, --cleanenv", async () => {
    const show = 'echo "$FOO|$SHARED|$MYVAR|$LD_PRELOAD|$PATH|$FROMFILE"';
    const envFile = path.join(work, 'vars.env');
    writeFileSync(envFile, '# comment\nFROMFILE=file\n');
    // The file itself, as users run it: `node FILE --env-file X` would have Node 20 load X into
    // berth's own environment, and the variable would pass as the host's (#13).
    const r = await run(BERTH, ['exec', '--env', 'SHARED=flag', '--env-file', envFile, img('busybox'), 'sh', '-c', show],
      { env: { ...env(), MYVAR: 'host', LD_PRELOAD: '/host/lib.so', PATH: '/host/bin:/usr/bin:/bin' } });
    expect(r.stdout).toBe('image|flag|host||/bin|file\n');
    const clean = await run(process.execPath, [BERTH, 'exec', '--cleanenv', img('busybox'), 'sh', '-c', show], { env: { ...env(), MYVAR: 'host' } });
    expect(clean.stdout).toBe('image|image|||/bin|\n');
  });

  it("the user's own passwd and group entries, and the host's /etc/hosts", async () => {
    const me = userInfo();
    const r = await b('exec', img('busybox'), 'sh', '-c', 'id -un; id -u; grep "^$(id -un):" /etc/passwd | cut -d: -f6; cat /etc/hosts');
    const [name, uid, home, ...hosts] = r.stdout.split('\n');
    expect([name, uid, home]).toEqual([me.username, String(me.uid), homedir()]);
    expect(hosts.join('\n')).toBe(readFileSync('/etc/hosts', 'utf8'));
  });

  it('--fakeroot makes the user root inside, with no more privilege than before', async () => {
    const r = await b('exec', '--fakeroot', img('busybox'), 'sh', '-c', 'id -u; cat /proc/self/status | grep CapEff');
    expect(r.stdout.split('\n')[0]).toBe('0');
  });

  it('a setuid-root binary in the image gives no privilege', async () => {
    const r = await b('exec', img('busybox'), 'sh', '-c', '/suid/busybox id; grep NoNewPrivs /proc/self/status; grep " / " /proc/self/mountinfo');
    expect(r.stdout).toContain(`uid=${userInfo().uid}(`);
    expect(r.stdout).not.toMatch(/euid=0|uid=0\(/);
    expect(r.stdout).toMatch(/NoNewPrivs:\s+1/);
    expect(r.stdout).toMatch(/ \/ .*\bnosuid\b/);
  });
});

describe('binds and writable tmpfs', () => {
  it('binds $HOME and the working directory by default; --no-home does not', async () => {
    const marker = path.join(homedir(), `.berth-test-${process.pid}`);
    const here = path.join(work, 'cwd');
    mkdirSync(here, { recursive: true });
    const r = await run(process.execPath, [BERTH, 'exec', img('busybox'), 'sh', '-c', `pwd; echo in > ${marker}; echo x > made-inside`], { env: env(), cwd: here });
    expect(r.stdout).toBe(`${here}\n`);
    expect(readFileSync(marker, 'utf8')).toBe('in\n');
    expect(readFileSync(path.join(here, 'made-inside'), 'utf8')).toBe('x\n');
    const noHome = await run(process.execPath, [BERTH, 'exec', '--no-home', img('busybox'), 'sh', '-c', `pwd; cat ${marker}`], { env: env(), cwd: here });
    expect(noHome.stdout).toBe('/work\n'); // not bound: the image's WorkingDir
    expect((await run(process.execPath, [BERTH, 'run', img('busybox'), '--', 'sh', '-c', 'pwd'], { env: env(), cwd: here })).stdout).toBe('/work\n');
    expect(noHome.code).not.toBe(0);
    spawnSync('rm', ['-f', marker]);
  });

  it('--bind SRC:DST[:ro], repeated and comma-separated', async () => {
    const a = path.join(work, 'bind-a');
    const c = path.join(work, 'bind-c');
    mkdirSync(a, { recursive: true });
    mkdirSync(c, { recursive: true });
    writeFileSync(path.join(a, 'f'), 'A');
    writeFileSync(path.join(c, 'f'), 'C');
    const r = await b('exec', '--bind', `${a}:/data/a:ro,${c}:/data/c`, '-B', `${a}:/also`, img('busybox'), 'sh', '-c',
      'cat /data/a/f /data/c/f /also/f; echo w > /data/c/new; echo w > /data/a/new 2>/dev/null || echo read-only');
    expect(r.stdout).toBe('ACAread-only\n');
    expect(readFileSync(path.join(c, 'new'), 'utf8')).toBe('w\n');
    expect(existsSync(path.join(a, 'new'))).toBe(false);
  });

  it('a bind whose source does not exist is refused before anything starts', async () => {
    const r = await b('exec', '--bind', '/no/such/dir:/data', img('busybox'), 'true');
    expect(r.code).toBe(125);
    expect(r.stderr).toMatch(/--bind \/no\/such\/dir: no such file or directory[\s\S]*hint/);
  });

  it('the root is read-only, or writable in memory with --writable-tmpfs', async () => {
    const ro = await b('exec', img('busybox'), 'sh', '-c', 'echo x > /etc/motd');
    expect(ro.code).not.toBe(0);
    expect(ro.stderr).toMatch(/Read-only file system/);
    const rw = await b('exec', '--writable-tmpfs', img('busybox'), 'sh', '-c', 'echo changed > /etc/motd; mkdir -p /opt/new; cat /etc/motd');
    expect(rw.stdout).toBe('changed\n');
    expect((await b('exec', img('busybox'), 'cat', '/etc/motd')).stdout).toBe('from the image\n');
  });

  it('falls back to fuse-overlayfs where the kernel refuses overlayfs (forced here), and stops it with the container', async () => {
    const forced = { ...env(), BERTH_FORCE_FUSE_OVERLAYFS: '1' };
    const rw = await run(process.execPath, [BERTH, 'exec', '--writable-tmpfs', img('busybox'), 'sh', '-c',
      'echo changed > /etc/motd; cat /etc/motd; grep " / / " /proc/self/mountinfo'], { env: forced });
    expect(rw.stderr).toBe('');
    expect(rw.stdout).toMatch(/^changed\n.* - fuse\.fuse-overlayfs /);
    const ro = await run(process.execPath, [BERTH, 'exec', img('busybox'), 'sh', '-c', 'cat /etc/motd; touch /x'], { env: forced });
    expect(ro.stdout).toBe('from the image\n');
    expect(ro.stderr).toMatch(/Read-only file system/);
    const overlays = () => spawnSync('ps', ['-u', String(userInfo().uid), '-o', 'stat=,comm=']).stdout.toString()
      .split('\n').filter((l) => l.includes('fuse-overlayfs') && !l.trim().startsWith('Z'));
    expect(await until(() => overlays().length === 0 && liveHelpers().length === 0, 5000)).toBe(true);
  });

  it("hides the image server's own mounts when its runtime directory is under a bound /tmp", async () => {
    const r = await run(process.execPath, [BERTH, 'exec', img('busybox'), 'sh', '-c', 'cut -d" " -f5 /proc/self/mountinfo'],
      { env: { ...env(), BERTH_RUNTIME_DIR: path.join('/tmp', `berth-rt-${process.pid}`) } });
    expect(r.code).toBe(0);
    expect(r.stdout.split('\n')).not.toContainEqual(expect.stringContaining(`berth-rt-${process.pid}`));
    spawnSync('rm', ['-rf', path.join('/tmp', `berth-rt-${process.pid}`)]);
  });

  it('--containall gives a private /tmp', async () => {
    const file = path.join('/tmp', `berth-contain-${process.pid}`);
    writeFileSync(file, 'host');
    expect((await b('exec', img('busybox'), 'cat', file)).stdout).toBe('host');
    expect((await b('exec', '--containall', img('busybox'), 'cat', file)).code).not.toBe(0);
    spawnSync('rm', ['-f', file]);
  });
});

describe('errors a user can act on', () => {
  it('a file that is not a squashfs image', async () => {
    const f = path.join(work, 'not-an-image.sqsh');
    writeFileSync(f, 'x'.repeat(4096));
    const r = await b('exec', f, 'true');
    expect(r.code).toBe(125);
    expect(r.stderr).toMatch(/is not an image berth can run[\s\S]*berth convert/);
  });

  it('a node without /dev/fuse', async () => {
    // An empty /dev, in a user namespace of the test's own: the node as a machine without FUSE.
    const r = await run('unshare', ['-Urm', 'sh', '-c', `mount -t tmpfs none /dev && exec ${process.execPath} ${BERTH} exec ${img('busybox')} true`], { env: env() });
    expect(r.code).toBe(125);
    expect(r.stderr).toMatch(/\/dev\/fuse does not exist on this node; an administrator must load the fuse module/);
  });

  it('an image made for another architecture', async () => {
    const other = await run('bash', ['-c', `cd ${work} && umoci config --image oci:busybox --tag arm --architecture arm64 >/dev/null`]);
    expect(other.code).toBe(0);
    expect((await berth('convert', `oci:${work}/oci:arm`, '-o', img('arm'), '--quiet')).code).toBe(0);
    const r = await b('exec', img('arm'), 'true');
    expect(r.code).toBe(125);
    expect(r.stderr).toMatch(/was made for linux\/arm64; this node is linux\/amd64[\s\S]*--platform linux\/amd64/);
  });
});

describe('RDMA binding', () => {
  it("--rdma brings the host's libibverbs into an image that has none, and ibv_devinfo runs on it", async () => {
    const without = await b('exec', '--no-rdma', img('rdma'), 'ibv_devinfo');
    expect(without.code).toBe(127);
    expect(without.stderr).toMatch(/libibverbs\.so\.1: cannot open shared object file/);
    const r = await b('exec', '--rdma', '--env', 'LD_DEBUG=libs', img('rdma'), 'ibv_devinfo');
    // This machine has no RDMA in its kernel: the host's own ibv_devinfo says the same.
    expect(r.stderr).toContain('Failed to get IB devices list: Function not implemented');
    expect(r.stderr).toMatch(/calling init: \/lib\/x86_64-linux-gnu\/libibverbs\.so\.1\n/);
    expect(r.stderr).toMatch(/calling init: \/lib\/x86_64-linux-gnu\/libnl-route-3\.so\.200\n/);
  });
});

describe('berth doctor', () => {
  it('finds everything in order here, and says so', async () => {
    const r = await run(process.execPath, [BERTH, 'doctor', '--json'], { env: env() });
    const checks = JSON.parse(r.stdout) as { name: string; verdict: string }[];
    expect(checks.filter((c) => c.verdict === 'fail')).toEqual([]);
    expect(checks.map((c) => c.name)).toEqual(expect.arrayContaining(['/dev/fuse', 'creating a user namespace', 'overlayfs in a user namespace', 'berth-helper']));
    // pasta is installed and /dev/net/tun usable here (test/run makes it so), as --network user needs.
    expect(checks.find((c) => c.name === 'user-mode networking')).toMatchObject({ verdict: 'ok' });
    expect(r.code).toBe(0);
  });

  it('names a missing /dev/fuse and its fix, and exits 1', async () => {
    const r = await run('unshare', ['-Urm', 'sh', '-c', `mount -t tmpfs none /dev && exec ${process.execPath} ${BERTH} doctor`], { env: env() });
    expect(r.stdout).toMatch(/FAIL\s+\/dev\/fuse\s+No such file or directory\n\s+fix: an admin loads the fuse module/);
    expect(r.stdout).toMatch(/ok\s+creating a user namespace/);
    expect(r.code).toBe(1);
  });
});
