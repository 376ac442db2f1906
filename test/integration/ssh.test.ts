// berth push and berth submit against real sshd processes on loopback (Debian's
// openssh-server, run by the test user itself), one of them a jump host: keys from files and
// from ssh-agent, passphrases asked on a terminal, known_hosts (unknown, changed, accepted),
// a connection cut in the middle of an upload and resumed, a full remote disk, and a job
// submitted to the real Slurm of the Slurm tests and followed to its end.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { userInfo } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BERTH, ROOT, berth, cleanup, freePort, run, tempDir } from '../helpers.js';
import { throttledProxy } from '../registry.js';

let work: string;
let home: string;
const daemons: ChildProcess[] = [];
const ports: Record<string, number> = {};
const sha = (file: string) => createHash('sha256').update(readFileSync(file)).digest('hex');


/** An sshd of the test user's own on 127.0.0.1:PORT; `wrap` runs it inside another command (unshare). */
async function sshd(name: string, wrap: string[] = []): Promise<void> {
  const port = await freePort();
  ports[name] = port;
  const dir = path.join(work, `sshd-${name}`);
  mkdirSync(dir);
  spawnSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', path.join(dir, 'hostkey')]);
  writeFileSync(path.join(dir, 'config'), [
    `Port ${port}`, 'ListenAddress 127.0.0.1', `HostKey ${dir}/hostkey`, `AuthorizedKeysFile ${work}/authorized_keys`,
    `PidFile ${dir}/pid`, 'UsePAM no', 'StrictModes no', 'PasswordAuthentication no', 'KbdInteractiveAuthentication no',
    'Subsystem sftp internal-sftp', 'AllowTcpForwarding yes', `SetEnv SLURM_CONF=${process.env.SLURM_CONF ?? ''}`, '',
  ].join('\n'));
  const child = spawn(wrap[0] ?? '/usr/sbin/sshd', [...wrap.slice(1), ...(wrap.length ? ['/usr/sbin/sshd'] : []), '-D', '-e', '-f', path.join(dir, 'config')],
    { stdio: ['ignore', 'ignore', 'pipe'] });
  let log = '';
  child.stderr!.on('data', (d: Buffer) => {
    log += d.toString();
    if (existsSync(dir)) writeFileSync(path.join(dir, 'log'), log);
  });
  daemons.push(child);
  for (let i = 0; i < 100 && !/Server listening/.test(log); i++) await new Promise((r) => setTimeout(r, 50));
  if (!/Server listening/.test(log)) throw new Error(`sshd ${name} did not start: ${log}`);
}

const hostKeyLine = (name: string, port = ports[name]!) => `[127.0.0.1]:${port} ${readFileSync(path.join(work, `sshd-${name}/hostkey.pub`), 'utf8').split(' ').slice(0, 2).join(' ')}\n`;
const envFor = (more: Record<string, string | undefined> = {}) => {
  const e: NodeJS.ProcessEnv = { ...process.env, HOME: home, SSH_AUTH_SOCK: undefined, ...more };
  for (const k of Object.keys(e)) if (e[k] === undefined) delete e[k];
  return e;
};
const b = (args: string[], more: Record<string, string | undefined> = {}, input?: string) => run(process.execPath, [BERTH, ...args], { env: envFor(more), cwd: work, input });

function sshConfig(extra = ''): void {
  writeFileSync(path.join(home, '.ssh/config'), `${extra}
Host login
  HostName 127.0.0.1
  Port ${ports.login}
  IdentityFile ${work}/id_plain
Host viajump
  HostName 127.0.0.1
  Port ${ports.login}
  ProxyJump jumphost
  IdentityFile ${work}/none
Host jumphost
  HostName 127.0.0.1
  Port ${ports.jump}
  IdentityFile ${work}/none
Host passkey
  HostName 127.0.0.1
  Port ${ports.login}
  IdentityFile ${work}/id_pass
Host small
  HostName 127.0.0.1
  Port ${ports.small}
  IdentityFile ${work}/id_plain
Host *
  UserKnownHostsFile ${home}/.ssh/known_hosts
`);
}

let agent: ChildProcess | undefined;
let image: string;

beforeAll(async () => {
  work = tempDir('ssh');
  home = path.join(work, 'home');
  mkdirSync(path.join(home, '.ssh'), { recursive: true, mode: 0o700 });
  for (const [key, pass] of [['id_plain', ''], ['id_pass', 'sekret'], ['id_stranger', '']]) {
    spawnSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', pass!, '-f', path.join(work, key!)]);
  }
  writeFileSync(path.join(work, 'authorized_keys'), ['id_plain', 'id_pass'].map((k) => readFileSync(path.join(work, `${k}.pub`), 'utf8')).join(''));
  await sshd('login');
  await sshd('jump');
  // Its own small tmpfs, in a mount namespace of the user's own: a remote disk that fills up.
  mkdirSync(path.join(work, 'small'));
  // (mount(8) insists on uid 0, so the mount(2) call is made from Python, with the namespace's capabilities kept.)
  await sshd('small', ['unshare', '--user', '--map-current-user', '--mount', '--keep-caps', '/usr/bin/python3', '-c',
    `import ctypes, os, sys; libc = ctypes.CDLL(None, use_errno=True)
if libc.mount(b'none', b'${work}/small', b'tmpfs', 0, b'size=1m') != 0: sys.exit('mount: errno %d' % ctypes.get_errno())
os.execv(sys.argv[1], sys.argv[1:])`]);
  writeFileSync(path.join(home, '.ssh/known_hosts'), ['login', 'jump', 'small'].map((n) => hostKeyLine(n)).join(''));
  sshConfig();
  image = path.join(work, 'app.sqsh');
  writeFileSync(image, randomBytes(3 * 1024 * 1024));
  mkdirSync(path.join(work, 'remote'));
}, 60_000);

afterAll(async () => {
  agent?.kill();
  await Promise.all(daemons.map((d) => new Promise((resolve) => {
    d.stderr?.removeAllListeners('data');
    d.once('close', resolve);
    d.kill();
  })));
  cleanup(work);
});

describe('berth push', () => {
  it('uploads with a key file, verified, then skips what is already there', async () => {
    const r = await b(['push', image, `login:${work}/remote/`]);
    expect(r.stderr).toMatch(/pushed to login:.*app\.sqsh \(3\.1 MB sent, sha256 verified\)/);
    expect(r.code).toBe(0);
    expect(sha(path.join(work, 'remote/app.sqsh'))).toBe(sha(image));
    expect(readdirSync(path.join(work, 'remote'))).toEqual(['app.sqsh']); // nothing partial left
    const again = await b(['push', image, `login:${work}/remote/app.sqsh`]);
    expect(again.stderr).toMatch(/already holds this image/);
  });

  it('logs in through ssh-agent via a ProxyJump host', async () => {
    const sock = path.join(work, 'agent.sock');
    agent = spawn('ssh-agent', ['-D', '-a', sock], { stdio: 'ignore' });
    for (let i = 0; i < 50 && !existsSync(sock); i++) await new Promise((r) => setTimeout(r, 50));
    expect(spawnSync('ssh-add', [path.join(work, 'id_plain')], { env: { ...process.env, SSH_AUTH_SOCK: sock } }).status).toBe(0);
    const r = await b(['push', image, `viajump:${work}/remote/jumped.sqsh`], { SSH_AUTH_SOCK: sock });
    expect(r.stderr).toMatch(/pushed to viajump:/);
    expect(sha(path.join(work, 'remote/jumped.sqsh'))).toBe(sha(image));
    expect(readFileSync(path.join(work, 'sshd-jump/log'), 'utf8')).toMatch(/Accepted publickey for \S+ from 127\.0\.0\.1/);
  });

  it('asks for a passphrase on a terminal, and says what to do without one', async () => {
    const none = await b(['push', image, `passkey:${work}/remote/pass.sqsh`]);
    expect(none.code).toBe(125);
    expect(none.stderr).toMatch(/refused every way berth tried to log in .*id_pass needs its passphrase \(no terminal to ask on: load it into ssh-agent with ssh-add\)/);
    // script(1) gives berth a terminal; the passphrase is typed into it.
    const cmd = [process.execPath, BERTH, 'push', image, `passkey:${work}/remote/pass.sqsh`].join(' ');
    const r = await run('script', ['-qec', cmd, '/dev/null'], { env: envFor(), input: 'sekret\n', cwd: work });
    expect(r.stdout).toMatch(/Enter passphrase for key '.*id_pass':/);
    expect(sha(path.join(work, 'remote/pass.sqsh'))).toBe(sha(image));
  });

  it('refuses an unknown host with its fingerprint, and trusts it with --accept-new-host-key', async () => {
    writeFileSync(path.join(home, '.ssh/known_hosts'), hostKeyLine('jump'));
    const fp = spawnSync('ssh-keygen', ['-l', '-f', path.join(work, 'sshd-login/hostkey.pub')], { encoding: 'utf8' }).stdout.split(' ')[1];
    const r = await b(['push', image, `login:${work}/remote/`]);
    expect(r.code).toBe(125);
    expect(r.stderr).toContain(`[127.0.0.1]:${ports.login} is not a known host: it shows the key ssh-ed25519 ${fp}`);
    const accepted = await b(['push', '--accept-new-host-key', image, `login:${work}/remote/`]);
    expect(accepted.code).toBe(0);
    expect(readFileSync(path.join(home, '.ssh/known_hosts'), 'utf8')).toContain(hostKeyLine('login'));
  });

  it('refuses a changed host key, naming the new fingerprint', async () => {
    writeFileSync(path.join(home, '.ssh/known_hosts'), `[127.0.0.1]:${ports.login} ${readFileSync(path.join(work, 'id_stranger.pub'), 'utf8').split(' ').slice(0, 2).join(' ')}\n`);
    const r = await b(['push', '--accept-new-host-key', image, `login:${work}/remote/`]);
    expect(r.code).toBe(125);
    expect(r.stderr).toMatch(/shows the key ssh-ed25519 SHA256:\S+, which is NOT the key .* holds for it[\s\S]*ssh-keygen -R/);
    writeFileSync(path.join(home, '.ssh/known_hosts'), ['login', 'jump', 'small'].map((n) => hostKeyLine(n)).join(''));
  });

  it('continues an upload that a dropped connection cut short', async () => {
    const proxy = await throttledProxy(`127.0.0.1:${ports.login}`, 512 * 1024);
    const proxyPort = Number(proxy.host.split(':')[1]);
    writeFileSync(path.join(home, '.ssh/known_hosts'), ['login', 'jump', 'small'].map((n) => hostKeyLine(n)).join('') + hostKeyLine('login', proxyPort));
    const partial = path.join(work, 'remote/.cut.sqsh.berth-partial');
    sshConfig(`Host slow\n  HostName 127.0.0.1\n  Port ${proxyPort}\n  IdentityFile ${work}/id_plain\n`);
    const pushing = b(['push', image, `slow:${work}/remote/cut.sqsh`]);
    // More than the writes in flight (1 MiB), so that the next push has something to keep.
    for (let i = 0; i < 200 && !(existsSync(partial) && statSync(partial).size > 1.5 * 1024 * 1024); i++) await new Promise((r) => setTimeout(r, 50));
    proxy.cut();
    const cut = await pushing;
    expect(cut.code).toBe(125);
    expect(cut.stderr).toMatch(/push again: it continues where it stopped/);
    const got = statSync(partial).size;
    expect(got).toBeGreaterThan(0);
    expect(got).toBeLessThan(statSync(image).size);
    const resumed = await b(['push', image, `login:${work}/remote/cut.sqsh`]);
    expect(resumed.stderr).toMatch(/resumed at/);
    expect(sha(path.join(work, 'remote/cut.sqsh'))).toBe(sha(image));
    expect(existsSync(partial)).toBe(false);
  });

  it('says so when the remote disk is full, and leaves nothing there', async () => {
    const r = await b(['push', image, `small:${work}/small/`]);
    expect(r.code).toBe(125);
    expect(r.stderr).toMatch(/the remote disk is full \(\d+ bytes free, 3145728 needed\); the partial copy was removed/);
    const ls = spawnSync('ssh', ['-i', path.join(work, 'id_plain'), '-o', `UserKnownHostsFile=${home}/.ssh/known_hosts`, '-p', String(ports.small), '127.0.0.1', `ls -A ${work}/small`], { encoding: 'utf8' });
    expect(ls.status).toBe(0);
    expect(ls.stdout).toBe('');
  });

  it('names an unreachable host and a refused login', async () => {
    const dead = await freePort();
    sshConfig(`Host dead\n  HostName 127.0.0.1\n  Port ${dead}\n`);
    const r = await b(['push', image, 'dead:x']);
    expect(r.stderr).toMatch(new RegExp(`cannot reach 127\\.0\\.0\\.1:${dead}: ECONNREFUSED`));
    writeFileSync(path.join(home, '.ssh/config'), `Host login\n  HostName 127.0.0.1\n  Port ${ports.login}\n  IdentityFile ${work}/id_stranger\n  UserKnownHostsFile ${home}/.ssh/known_hosts\n`);
    const refused = await b(['push', image, `login:${work}/remote/`]);
    expect(refused.stderr).toMatch(new RegExp(`${userInfo().username}@\\[127\\.0\\.0\\.1\\]:${ports.login} refused every way berth tried to log in \\(.*id_stranger\\)`));
    sshConfig();
  });
});

describe('berth submit', () => {
  it('pushes the image, submits, follows the job and exits with its exit code', async () => {
    const img = path.join(work, 'busybox.sqsh');
    const made = await run(path.join(ROOT, 'test/fixtures/make-run-images.sh'), [work]);
    expect(made.code).toBe(0);
    expect((await berth('convert', `oci:${work}/oci:busybox`, '-o', img, '--quiet')).code).toBe(0);
    const r = await b(['submit', 'login', '--image', img, '--remote-berth', BERTH, '-N2', '-n2', '--wait', '--',
      'sh', '-c', 'echo "task $SLURM_PROCID: $(cat /etc/motd)"; exit 4']);
    expect(r.stderr).toMatch(/submitted job \d+ on login; following it/);
    // The job's output, as it was written: the tasks' lines, and srun's own about their exit codes.
    const lines = r.stdout.split('\n').filter(Boolean);
    expect(lines.filter((l) => l.startsWith('task')).sort()).toEqual(['task 0: from the image', 'task 1: from the image']);
    expect(lines.filter((l) => l.startsWith('srun: error:'))).toHaveLength(2);
    expect(r.code).toBe(4);
  }, 120_000);

  it('says when berth is missing on the cluster', async () => {
    const r = await b(['submit', 'login', '--image', image, '--', 'true']);
    expect(r.code).toBe(125);
    expect(r.stderr).toMatch(/berth is not installed on login \(not on a login shell's PATH there\)/);
  });
});
