// A container never gains more than its flags allow (#11.4): --fakeroot's root, with every
// capability in its user namespace, cannot turn a read-only bind writable or unmount what
// covers, and neither it nor --containall can reach the user's other processes (and so their
// roots, the home --no-home left out) through /proc; --pid's init passes signals and the exit
// status on and reaps what is orphaned. IPC, UTS and network namespaces on request: checked
// from inside, and a published port reached from the host. --overlay DIR keeps a writable
// root's changes for the next container, in a directory that must be the user's alone, and
// berth commit saves them as a new image.
import { spawn, spawnSync } from 'node:child_process';
import { chmodSync, mkdirSync, readdirSync, readlinkSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { createServer, connect, type AddressInfo } from 'node:net';
import { homedir, hostname } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isBerthError } from '../../src/errors.js';
import { cgroupFacts } from '../../src/host/cgroup.js';
import { bestEffortWarning, limitsTarget, type Limits } from '../../src/plan/limits.js';
import { BERTH, ROOT, berth, cleanup, freePort, listImage, run, tempDir, umociListing, type Listing } from '../helpers.js';

let work: string;
const img = () => path.join(work, 'busybox.sqsh');
const env = () => ({ ...process.env, BERTH_RUNTIME_DIR: path.join(work, 'runtime'), BERTH_IMAGE_LINGER: '0' });
const b = (...args: string[]) => run(process.execPath, [BERTH, ...args], { env: env(), cwd: work });

beforeAll(async () => {
  work = tempDir('isolation');
  const made = await run(path.join(ROOT, 'test/fixtures/make-run-images.sh'), [work]);
  if (made.code !== 0) throw new Error(made.stderr);
  const r = await berth('convert', `oci:${work}/oci:busybox`, '-o', img(), '--quiet');
  if (r.code !== 0) throw new Error(r.stderr);
}, 180_000);
// overlayfs leaves its work directory mode 0: opened up so the files can go.
afterAll(() => {
  spawnSync('chmod', ['-R', 'u+rwX', work]);
  cleanup(work);
});

describe('--fakeroot', () => {
  it('cannot remount a read-only bind writable, nor unmount it to write beneath (#11.4)', async () => {
    const data = path.join(work, 'data');
    mkdirSync(data);
    const r = await b('exec', '--fakeroot', '--bind', `${data}:/data:ro`, img(), 'sh', '-c',
      'id -u; mount -o remount,bind,rw /data; echo x > /data/remounted; umount /data; echo x > /data/beneath; mount -o remount,rw /; echo x > /rootfs-rw');
    expect(r.stdout).toBe('0\n');
    expect(r.stderr).toMatch(/\/data\/remounted: Read-only file system/);
    expect(readdirSync(data)).toEqual([]);
  });

  it("sees only its own processes, so no other process's root: not the home --no-home left out (#11.4)", async () => {
    // This test's own process, the user's, is the one whose root would show the home.
    const r = await b('exec', '--fakeroot', '--no-home', img(), 'sh', '-c',
      `ls /proc | grep -E '^[0-9]+$' | sort -n | tr '\\n' ' '; echo; ls /proc/${process.pid}/root${homedir()} 2>&1; cat /proc/1/environ 2>&1 | head -c 0`);
    const [pids, ...rest] = r.stdout.trim().split('\n');
    expect(pids!.trim().split(' ').map(Number).every((p) => p < 10)).toBe(true);
    expect(rest.join('\n')).toMatch(/No such file or directory/);
  });
});

describe('--containall and --pid', () => {
  it('--containall leaves the host\'s processes out', async () => {
    const r = await b('exec', '--containall', img(), 'sh', '-c', 'echo $$; ls /proc | grep -cE "^[0-9]+$"');
    expect(r.stdout).toMatch(/^2\n[0-9]\n$/); // the command is PID 2, after berth's init
  });

  it('--pid passes the exit status on, and 128+N for a command killed by signal N', async () => {
    expect((await b('exec', '--pid', img(), 'sh', '-c', 'exit 42')).code).toBe(42);
    expect((await b('exec', '--pid', img(), 'sh', '-c', 'kill -9 $$')).code).toBe(137);
  });

  it('--pid forwards SIGTERM to the command, and reaps what it orphans', async () => {
    const child = spawn(process.execPath, [BERTH, 'exec', '--pid', img(), 'sh', '-c',
      "(sleep 0.1 &) ; sleep 0.3; ps -o stat= | grep -c Z; trap 'echo got TERM; exit 15' TERM; echo ready; while :; do sleep 0.05; done"], { env: env() });
    let out = '';
    await new Promise<void>((resolve) => child.stdout.on('data', (d: Buffer) => {
      out += d.toString();
      if (out.includes('ready')) resolve();
    }));
    child.kill('SIGTERM');
    const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
    expect(out).toBe('0\nready\ngot TERM\n');
    expect(code).toBe(15);
  });
});

describe('the default', () => {
  it('shares the node\'s PID namespace (MPI ranks and tools see each other)', async () => {
    writeFileSync(path.join(work, 'marker'), '');
    const r = await b('exec', img(), 'sh', '-c', `test -d /proc/${process.pid} && echo shared`);
    expect(r.stdout).toBe('shared\n');
  });
});

/** A TCP server on this host that answers "host" to whoever connects; its port. */
async function hostServer(): Promise<{ port: number; close(): void }> {
  const server = createServer((s) => s.end('host\n'));
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { port: (server.address() as AddressInfo).port, close: () => server.close() };
}

/** A port nobody listens on now (for -p: pasta binds it on the host). */

describe('IPC, UTS and network namespaces on request', () => {
  const ns = (kind: string) => readlinkSync(`/proc/self/ns/${kind}`);

  it('--ipc (and --containall) give an IPC namespace of its own; by default it is the host\'s', async () => {
    for (const flags of [['--ipc'], ['--containall']]) {
      const r = await b('exec', ...flags, img(), 'readlink', '/proc/self/ns/ipc');
      expect(r.stdout.trim(), r.stderr).toMatch(/^ipc:\[\d+\]$/);
      expect(r.stdout.trim()).not.toBe(ns('ipc'));
    }
    expect((await b('exec', img(), 'readlink', '/proc/self/ns/ipc')).stdout.trim()).toBe(ns('ipc'));
  });

  it('--hostname names the container alone; --uts starts from the host\'s name; a bad name is refused', async () => {
    const r = await b('exec', '--hostname', 'box-1.lab', img(), 'sh', '-c', 'hostname; readlink /proc/self/ns/uts');
    const [name, uts] = r.stdout.trim().split('\n');
    expect(name, r.stderr).toBe('box-1.lab');
    expect(uts).not.toBe(ns('uts'));
    expect(hostname()).not.toBe('box-1.lab');
    // Its own UTS namespace, with the host's name to start from.
    const own = await b('exec', '--uts', img(), 'sh', '-c', 'hostname; readlink /proc/self/ns/uts');
    const [ownName, ownUts] = own.stdout.trim().split('\n');
    expect(ownName, own.stderr).toBe(hostname());
    expect(ownUts).toMatch(/^uts:\[\d+\]$/);
    expect(own.stdout).not.toContain(ns('uts'));
    const bad = await b('exec', '--hostname', 'no_underscores', img(), 'true');
    expect(bad.code).not.toBe(0);
    expect(bad.stderr).toMatch(/--hostname 'no_underscores' is not a hostname[\s\S]*berth: hint: /);
  });

  it('--network none: a loopback of its own and nothing else; the default reaches the host', async () => {
    const host = await hostServer();
    try {
      const connect = `nc -w 2 127.0.0.1 ${host.port} </dev/null || echo unreachable`;
      const none = await b('exec', '--network', 'none', img(), 'sh', '-c', `grep -o '^ *[a-z0-9]*:' /proc/net/dev | tr -d ' '; ${connect}`);
      expect(none.stdout, none.stderr).toBe('lo:\nunreachable\n');
      // The loopback is up: a service inside reaches itself.
      const self = await b('exec', '--network', 'none', img(), 'sh', '-c', '(echo inside | nc -l -p 80 &) ; sleep 0.3; nc -w 2 127.0.0.1 80 </dev/null');
      expect(self.stdout, self.stderr).toBe('inside\n');
      expect((await b('exec', img(), 'sh', '-c', connect)).stdout).toBe('host\n');
    } finally {
      host.close();
    }
  });

  it('-p HOST:CONTAINER publishes a service inside on the host (user-mode networking), and frees the port after', async () => {
    const port = await freePort();
    const service = spawn(process.execPath, [BERTH, 'exec', '-p', `${port}:80`, img(), 'sh', '-c', 'echo from-the-container | nc -l -p 80'],
      { env: env(), cwd: work, stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    service.stderr.on('data', (d: Buffer) => { stderr += d.toString(); });
    const exited = new Promise<number | null>((r) => service.on('exit', r));
    let got = '';
    for (let i = 0; i < 50 && !got; i++) {
      await new Promise((r) => setTimeout(r, 100));
      got = await new Promise<string>((resolve) => {
        const s = connect(port, '127.0.0.1');
        let data = '';
        s.on('data', (d: Buffer) => { data += d.toString(); });
        s.on('close', () => resolve(data));
        s.on('error', () => resolve(''));
      });
    }
    expect(got, stderr).toBe('from-the-container\n');
    expect(await exited).toBe(0);
    // pasta ended with the container: the port can be bound again.
    let free = false;
    for (let i = 0; i < 30 && !free; i++) {
      await new Promise((r) => setTimeout(r, 100));
      free = await new Promise<boolean>((resolve) => {
        const s = createServer().once('error', () => resolve(false));
        s.listen(port, () => s.close(() => resolve(true)));
      });
    }
    expect(free).toBe(true);
  });

  it("refuses what it cannot do, with the way to do it: Apptainer's -p, an unknown network, -p with --network none", async () => {
    const cases: [string[], RegExp][] = [
      [['-p', img(), 'sh', '-c', 'true'], /'.*busybox\.sqsh' is not HOST_PORT:CONTAINER_PORT[\s\S]*Apptainer's -p is --pid here/],
      [['--network', 'bridge', img(), 'true'], /--network bridge: berth knows none .*, user .* and host/],
      [['--network', 'none', '-p', '8080:80', img(), 'true'], /-p\/--publish needs --network user, not --network none/],
    ];
    for (const [args, message] of cases) {
      const r = await b('exec', ...args);
      expect(r.stderr).toMatch(message);
      expect(r.code).not.toBe(0);
    }
  });
});

describe('--overlay DIR: a writable root whose changes stay', () => {
  it('keeps what one container wrote and deleted for the next, and leaves the image and other containers alone', async () => {
    const dir = path.join(work, 'overlay');
    const first = await b('exec', '--overlay', dir, img(), 'sh', '-c', 'echo kept > /etc/added; rm /etc/motd; mkdir -p /opt/tool; echo done');
    expect(first.stdout, first.stderr).toBe('done\n');
    expect(statSync(dir).mode & 0o777).toBe(0o700); // made for the user alone
    const second = await b('exec', '--overlay', dir, img(), 'sh', '-c', 'cat /etc/added; test -e /etc/motd || echo motd-deleted; test -d /opt/tool && echo tool-dir');
    expect(second.stdout, second.stderr).toBe('kept\nmotd-deleted\ntool-dir\n');
    // Without it, the image is as it was.
    expect((await b('exec', img(), 'sh', '-c', 'cat /etc/motd; test -e /etc/added || echo not-added')).stdout).toBe('from the image\nnot-added\n');
  });

  it('refuses a directory others can write, a symlink, and a file, with the way out', async () => {
    const open = path.join(work, 'overlay-open');
    mkdirSync(open);
    chmodSync(open, 0o777);
    const link = path.join(work, 'overlay-link');
    symlinkSync(open, link);
    const file = path.join(work, 'overlay-file');
    writeFileSync(file, '');
    const cases: [string, RegExp][] = [
      [open, /is not yours alone \(owner uid \d+, mode 0777\)[\s\S]*chmod go-w/],
      [link, /not a directory \(a symlink: name the directory itself\)/],
      [file, /not a directory/],
    ];
    for (const [dir, message] of cases) {
      const r = await b('exec', '--overlay', dir, img(), 'true');
      expect(r.stderr).toMatch(message);
      expect(r.code).toBe(125);
    }
    expect(readdirSync(open)).toEqual([]);
  });
});

describe('berth commit --from-overlay: the changes saved as a new image', () => {
  /** Type, permission bits, content and links: what umoci unpack --rootless can express. */
  const comparable = (listing: Listing) => Object.fromEntries(Object.entries(listing)
    .filter(([p, e]) => p !== '' && e.type !== 'char' && e.type !== 'block')
    .map(([p, e]) => [p, { type: e.type, mode: e.mode, size: e.size, sha256: e.sha256, link: e.link }]));

  it('is the base plus exactly the changes (deletions and a replaced directory included), runs, and matches umoci on the exported layout', async () => {
    const dir = path.join(work, 'commit-overlay');
    const changed = await b('exec', '--overlay', dir, img(), 'sh', '-c',
      'echo new > /etc/added; rm /etc/motd; mkdir -p /opt/tool; echo t > /opt/tool/run; chmod 755 /opt/tool/run; rm -rf /suid; mkdir /suid; echo only > /suid/only; echo ok');
    expect(changed.stdout, changed.stderr).toBe('ok\n');
    const out = path.join(work, 'committed.sqsh');
    const layout = path.join(work, 'committed-oci');
    const c = await b('commit', '--from-overlay', dir, '-o', out, '--oci-layout', layout, '--quiet');
    expect(c.code, c.stderr).toBe(0);
    const r = await b('exec', out, 'sh', '-c', 'cat /etc/added; test -e /etc/motd || echo no-motd; /opt/tool/run 2>/dev/null; cat /opt/tool/run; ls /suid; cat /work/../etc/passwd | head -1');
    expect(r.stdout, r.stderr).toMatch(/^new\nno-motd\nt\nonly\nroot:/);
    // The new image records its parent; the layout it came from lists the same as umoci unpacks it.
    const inspected = JSON.parse((await b('inspect', out, '--json')).stdout) as { image: { config: { Labels: Record<string, string> }; layers: unknown[] } };
    const parent = JSON.parse((await b('inspect', img(), '--json')).stdout) as { image: { source: string; manifestDigest: string } };
    expect(inspected.image.config.Labels).toMatchObject({
      'org.opencontainers.image.base.name': parent.image.source, 'org.opencontainers.image.base.digest': parent.image.manifestDigest,
    });
    expect(inspected.image.layers).toHaveLength(2);
    const base = await listImage(img());
    const mine = await listImage(out);
    expect(comparable(mine)).toEqual(comparable(await umociListing(layout, 'latest', work)));
    // Exactly the changes: what differs from the base is what the container did (and berth's mount points).
    const [mineC, baseC] = [comparable(mine), comparable(base)];
    const changedPaths = Object.keys(mineC).filter((p) => JSON.stringify(mineC[p]) !== JSON.stringify(baseC[p])).sort();
    const gone = Object.keys(base).filter((p) => !(p in mine)).sort();
    expect(gone).toEqual(['etc/motd', 'suid/busybox']);
    expect(changedPaths.filter((p) => !/^(dev|proc|sys|home|tmp|etc\/(passwd|group|hosts|resolv\.conf))(\/|$)/.test(p) && !p.startsWith(work.slice(1))))
      .toEqual(['etc/added', 'opt', 'opt/tool', 'opt/tool/run', 'suid/only']);
  });

  it('never writes into a directory: -o naming one, or --oci-layout naming one that exists, is refused and it is left as it was', async () => {
    const dir = path.join(work, 'commit-overlay');
    const home = path.join(work, 'a-home');
    mkdirSync(home);
    writeFileSync(path.join(home, 'thesis.tex'), 'precious\n');
    for (const args of [['-o', home, '--force'], ['-o', path.join(work, 'x.sqsh'), '--oci-layout', home]]) {
      const r = await b('commit', '--from-overlay', dir, img(), ...args);
      expect(r.code).toBe(125);
      expect(r.stderr).toMatch(/is a directory|does not exist yet/);
      expect(readdirSync(home)).toEqual(['thesis.tex']);
    }
    expect(readdirSync(work).filter((n) => n.startsWith('.berth-commit-'))).toEqual([]);
  });
});

describe('--memory, --cpus, --pids-limit (#15)', () => {
  // What this node allows the user the suite runs as, from the facts berth decides with: the
  // run below must then fail with exactly that reason, or (where it allows) be held to the limit.
  const why = (limits: Limits) => {
    try {
      limitsTarget(limits, cgroupFacts('/', process.getuid!(), process.env));
      return undefined;
    } catch (e: unknown) {
      if (!isBerthError(e)) throw e;
      return e;
    }
  };

  it('a limit that cannot be applied here is an error that says why (exit 125); where it can, an allocation past it is killed', async () => {
    const e = why({ memory: 64 << 20 });
    const r = await b('exec', '--memory', '64m', img(), 'dd', 'if=/dev/zero', 'of=/dev/null', 'bs=200M', 'count=1');
    if (e) {
      expect(r.stderr).toBe(`berth: error: ${e.message}\nberth: hint: ${e.hint}\n`);
      expect(r.code).toBe(125);
      // This machine's layout (cgroup v1 holds memory, cgroup2 at /sys/fs/cgroup/unified): said as it is.
      if (cgroupFacts('/', process.getuid!(), process.env).v1.some((v) => v.controller === 'memory')) {
        expect(r.stderr).toMatch(/^berth: error: --memory cannot be applied: the memory controller is held by cgroup v1 \(\/sys\/fs\/cgroup\/memory\): this node has a hybrid layout/);
      }
    } else {
      expect(r.code).toBe(137); // the kernel's OOM killer, SIGKILL
      expect(r.stderr).toMatch(/^berth: note: the container reached its --memory limit \(67108864 bytes\)/m);
    }
  });

  it("berth doctor's resource limits line gives the same reason, or where the cgroup would go", async () => {
    const e = why({ memory: 1, cpus: 1, pids: 1 });
    const r = await b('doctor', '--json');
    const line = (JSON.parse(r.stdout) as { name: string; verdict: string; detail: string; fix?: string }[]).find((c) => c.name === 'resource limits');
    if (e) {
      expect(line).toEqual({ name: 'resource limits', verdict: 'warn', detail: e.message.replace(/^.*? cannot be applied: /, 'cannot be applied here: '), fix: e.hint!.replace(/; or add --limits best-effort.*$/, '') });
    } else {
      expect(line).toMatchObject({ verdict: 'ok', detail: expect.stringMatching(/^--memory, --cpus, --pids-limit apply: cgroups are made in your delegated cgroup \//) });
    }
  });

  it('--limits best-effort warns with the reason and runs the container', async () => {
    const e = why({ cpus: 0.5, pids: 64 });
    const r = await b('exec', '--cpus', '0.5', '--pids-limit', '64', '--limits', 'best-effort', img(), 'echo', 'ran');
    expect(r.stdout).toBe('ran\n');
    expect(r.code).toBe(0);
    expect(r.stderr).toBe(e ? `${bestEffortWarning(e)}\n` : '');
  });

  it('values are checked before anything runs, --dry-run shows them, and a Slurm step or an instance refuses them', async () => {
    const bad = await b('exec', '--memory', 'lots', img(), 'echo', 'ran');
    expect([bad.code, bad.stderr]).toEqual([125, "berth: error: invalid --memory 'lots'\nberth: hint: give a size such as 512m or 4g (k, m, g, t: binary units)\n"]);
    const dry = await b('exec', '-m', '1g', '--cpus', '1.5', '--dry-run', img(), 'true');
    expect(JSON.parse(dry.stdout)).toMatchObject({ limits: { memory: 1 << 30, cpus: 1.5 } });
    expect(JSON.parse(dry.stdout).cgroup).toBeUndefined();
    const step = await b('plan', '--slurm-step', '--memory', '1g', img());
    expect(step.code).toBe(125);
    expect(step.stderr).toMatch(/^berth: error: --memory, --cpus and --pids-limit are not for a Slurm step: the job's cgroup, which Slurm made, already limits every task of the step\nberth: hint: ask Slurm for the limits/);
    const instance = await b('instance', 'start', '--pids-limit', '10', img(), 'limited');
    expect([instance.code, instance.stderr.split('\n')[0]]).toEqual([125, 'berth: error: --memory, --cpus and --pids-limit are not (yet) taken by berth instance start']);
  });
});
