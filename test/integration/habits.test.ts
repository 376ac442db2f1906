// What Apptainer and Docker users type first (#13), table-driven: each spelling is either
// accepted, with its effect checked inside a real container, or refused with the berth way
// named. Then the exit-status contract (docker run's) for every class of failure, and no
// operating-system error reaching the user as a stack trace.
import { chmodSync, mkdirSync, symlinkSync, writeFileSync } from 'node:fs';
import { constants } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BERTH, ROOT, berth, cleanup, run, tempDir, type Ran } from '../helpers.js';

let work: string;
const img = (name = 'busybox') => path.join(work, `${name}.sqsh`);
const env = (extra: Record<string, string> = {}) => ({ ...process.env, BERTH_RUNTIME_DIR: path.join(work, 'runtime'), BERTH_IMAGE_LINGER: '0', ...extra });
/** berth as users start it: the file itself (its launcher line), not `node FILE`. */
const b = (args: string[], extra: Record<string, string> = {}, cwd?: string) => run(BERTH, args, { env: env(extra), cwd: cwd ?? work });

beforeAll(async () => {
  work = tempDir('habits');
  const made = await run(path.join(ROOT, 'test/fixtures/make-habit-images.sh'), [work]);
  if (made.code !== 0) throw new Error(made.stderr);
  for (const tag of ['busybox', 'ep', 'user']) {
    const r = await berth('convert', `oci:${work}/oci:${tag}`, '-o', img(tag), '--quiet');
    if (r.code !== 0) throw new Error(r.stderr);
  }
  mkdirSync(path.join(work, 'data'));
  writeFileSync(path.join(work, 'data/f'), 'from the host\n');
  mkdirSync(path.join(work, 'myhome'));
  writeFileSync(path.join(work, 'myhome/f'), 'my home\n');
  writeFileSync(path.join(work, 'host-tmp-marker'), '');
}, 120_000);
afterAll(() => {
  chmodSync(path.join(work, 'locked'), 0o700);
  cleanup(work);
});

/** berth's form: an error line and a hint line, no stack, no internal error. */
function berthsForm(r: Ran): void {
  expect(r.stderr).toMatch(/^berth: error: .+\nberth: hint: .+\n$/);
  expect(r.stderr).not.toMatch(/internal error|\n\s+at |Did you mean/);
}

interface Accepted {
  habit: string;
  args: () => string[];
  env?: Record<string, string> | (() => Record<string, string>);
  stdout: RegExp;
  stderr?: RegExp;
}

const sh = (script: string) => ['sh', '-c', script];
const d = () => path.join(work, 'data');

const ACCEPTED: Accepted[] = [
  { habit: 'Apptainer --hostname (a UTS namespace of its own)', args: () => ['exec', '--hostname', 'box', img(), 'hostname'], stdout: /^box\n$/ },
  { habit: "Docker --network none", args: () => ['exec', '--network', 'none', img(), ...sh("grep -o '^ *[a-z0-9]*:' /proc/net/dev | tr -d ' '")], stdout: /^lo:\n$/ },
  { habit: "Apptainer --net (user-mode networking here)", args: () => ['exec', '--net', img(), ...sh("grep -o '^ *[a-z0-9]*:' /proc/net/dev | tr -d ' ' | sort")], stdout: /^eth0:\nlo:\n$/ },
  { habit: '--nv on a node without a GPU (Apptainer: warns and goes on)', args: () => ['exec', '--nv', img(), 'echo', 'ran'], stdout: /^ran\n$/, stderr: /warning: --gpus all: this node has no NVIDIA .* GPU; the container runs without one/ },
  { habit: '--rocm on a node without a GPU', args: () => ['exec', '--rocm', img(), 'echo', 'ran'], stdout: /^ran\n$/, stderr: /warning: --gpus all: this node has no/ },
  { habit: '--gpus all on a node without a GPU', args: () => ['exec', '--gpus', 'all', img(), 'echo', 'ran'], stdout: /^ran\n$/, stderr: /warning: --gpus all/ },
  {
    habit: '-c / --contain: an empty, writable home of its own, a private /tmp, the environment kept',
    args: () => ['exec', '-c', img(), ...sh(`ls -A "$HOME" | wc -l; touch "$HOME/new" && echo writable; test -e ${work}/host-tmp-marker || echo no-host-dir; echo "$HABIT"`)],
    env: { HABIT: 'kept' }, stdout: /^0\nwritable\nno-host-dir\nkept\n$/,
  },
  {
    habit: '-C / --containall: --contain, a clean environment and a PID namespace',
    args: () => ['exec', '-C', img(), ...sh('ls -A "$HOME" | wc -l; touch "$HOME/new" && echo writable; echo "[$HABIT]"; ls /proc | grep -cE "^[0-9]+$"')],
    env: { HABIT: 'kept' }, stdout: /^0\nwritable\n\[\]\n[1-9]\n$/,
  },
  { habit: '--containall (long)', args: () => ['exec', '--containall', img(), ...sh('echo "[$HABIT]"')], env: { HABIT: 'kept' }, stdout: /^\[\]\n$/ },
  { habit: '--home DIR (Apptainer: the home is DIR)', args: () => ['exec', '--home', path.join(work, 'myhome'), img(), ...sh('echo "$HOME"; cat ~/f')], stdout: /^\/.*\/myhome\nmy home\n$/ },
  { habit: '-H SRC:DST', args: () => ['exec', '-H', `${path.join(work, 'myhome')}:/home/me`, img(), ...sh('echo "$HOME"; cat ~/f; grep -c ":/home/me:" /etc/passwd')], stdout: /^\/home\/me\nmy home\n1\n$/ },
  { habit: 'APPTAINER_BIND', args: () => ['exec', img(), 'cat', '/ab/f'], env: () => ({ APPTAINER_BIND: `${work}/data:/ab` }), stdout: /^from the host\n$/ },
  { habit: 'SINGULARITY_BIND, comma-separated', args: () => ['exec', img(), ...sh('cat /sb/f /sc/f')], env: () => ({ SINGULARITY_BIND: `${work}/data:/sb,${work}/data:/sc:ro` }), stdout: /^from the host\nfrom the host\n$/ },
  { habit: 'APPTAINERENV_* and SINGULARITYENV_* (APPTAINER_ wins)', args: () => ['exec', img(), ...sh('echo "$P $Q"')], env: { APPTAINERENV_P: 'a', SINGULARITYENV_P: 's', SINGULARITYENV_Q: 'q' }, stdout: /^a q\n$/ },
  { habit: 'APPTAINERENV_* under --cleanenv', args: () => ['exec', '--cleanenv', img(), ...sh('echo "$P"')], env: { APPTAINERENV_P: 'a' }, stdout: /^a\n$/ },
  { habit: '-B SRC:DST:nosuid', args: () => ['exec', '-B', `${d()}:/n:nosuid`, img(), ...sh('grep " /n " /proc/self/mountinfo | cut -d" " -f6')], stdout: /^rw,nosuid,nodev/ },
  { habit: '-B SRC:DST:noexec', args: () => ['exec', '-B', `${d()}:/n:noexec`, img(), ...sh('grep " /n " /proc/self/mountinfo | cut -d" " -f6')], stdout: /noexec/ },
  { habit: '-B SRC:DST:ro:nosuid', args: () => ['exec', '-B', `${d()}:/n:ro:nosuid`, img(), ...sh('touch /n/x 2>/dev/null || echo read-only')], stdout: /^read-only\n$/ },
  { habit: 'Docker -v SRC:DST:ro,z', args: () => ['exec', '-v', `${d()}:/v:ro,z`, img(), ...sh('cat /v/f; touch /v/x 2>/dev/null || echo read-only')], stdout: /^from the host\nread-only\n$/ },
  { habit: 'Docker --volume', args: () => ['exec', '--volume', `${d()}:/v`, img(), 'cat', '/v/f'], stdout: /^from the host\n$/ },
  { habit: 'Docker --entrypoint (its Cmd goes too)', args: () => ['run', '--entrypoint', '/bin/echo', img('ep'), '--', 'hi'], stdout: /^hi\n$/ },
  { habit: "Docker --entrypoint '' and a command", args: () => ['run', '--entrypoint', '', img('ep'), '--', 'echo', 'plain'], stdout: /^plain\n$/ },
  { habit: 'Docker -u UID:GID', args: () => ['exec', '-u', '4321:99', img(), ...sh('id -u; id -g; cat /proc/self/status | grep CapEff')], stdout: /^4321\n99\nCapEff:\s+0+\n$/ },
  { habit: "Docker --user NAME (the image's account)", args: () => ['exec', '--user', 'app', img(), ...sh('id -u; id -g; echo "$USER"')], stdout: /^1234\n2345\napp\n$/ },
  { habit: 'Docker --user NAME:GROUP', args: () => ['exec', '--user', 'app:staff', img(), 'id', '-g'], stdout: /^50\n$/ },
  { habit: 'Docker -u: files of yours are the user\'s inside', args: () => ['exec', '-u', '4321', '-B', `${d()}:/d`, img(), ...sh('stat -c %u /d/f; echo x > /d/written && echo wrote')], stdout: /^4321\nwrote\n$/ },
  { habit: "the image's User is said, not silently ignored", args: () => ['run', img('user'), '--', 'echo', 'ran'], stdout: /^ran\n$/, stderr: /note: the image's User is 'app'; berth runs the command as you, as Apptainer does \(--user app/ },
  { habit: 'Docker -w / --workdir', args: () => ['exec', '-w', '/etc', img(), 'pwd'], stdout: /^\/etc\n$/ },
  { habit: 'Docker --workdir', args: () => ['exec', '--workdir', '/etc', img(), 'pwd'], stdout: /^\/etc\n$/ },
  { habit: 'Apptainer --cwd', args: () => ['exec', '--cwd', '/etc', img(), 'pwd'], stdout: /^\/etc\n$/ },
  { habit: "Docker --env NAME passes the host's value", args: () => ['exec', '--env', 'HABIT', img(), ...sh('echo "$HABIT"')], env: { HABIT: 'from host' }, stdout: /^from host\n$/ },
  { habit: 'Apptainer --env A=1,B=2 (split)', args: () => ['exec', '--env', 'A=1,B=2', img(), ...sh('echo "$A $B"')], stdout: /^1 2\n$/ },
  { habit: '--env DIRS=a,b stays one value', args: () => ['exec', '--env', 'DIRS=a,b', img(), ...sh('echo "$DIRS"')], stdout: /^a,b\n$/ },
  { habit: 'Docker -it', args: () => ['exec', '-it', img(), 'echo', 'ran'], stdout: /^ran\n$/ },
];

describe('habits that berth accepts', () => {
  for (const c of ACCEPTED) {
    it(c.habit, async () => {
      const r = await b(c.args(), typeof c.env === 'function' ? c.env() : c.env);
      expect(r.code, r.stderr).toBe(0);
      expect(r.stdout).toMatch(c.stdout);
      if (c.stderr) expect(r.stderr).toMatch(c.stderr);
    });
  }
});

interface Refused {
  habit: string;
  args: () => string[];
  error: RegExp;
  hint: RegExp;
}

const REFUSED: Refused[] = [
  { habit: "Docker -e FOO=bar (berth's -e is Apptainer's --cleanenv)", args: () => ['exec', '-e', 'FOO=bar', img(), 'true'], error: /'FOO=bar' was read as the image: -e is Apptainer's --cleanenv in berth/, hint: /--env FOO=bar/ },
  { habit: "Docker -e NAME (pass the host's value)", args: () => ['exec', '-e', 'HABIT', img(), 'true'], error: /'HABIT' was read as the image/, hint: /--env HABIT/ },
  { habit: "Apptainer's -w IMAGE (--writable; berth's -w is Docker's --workdir)", args: () => ['exec', '-w', img(), 'echo', 'hi'], error: /was taken as the working directory: -w is Docker's --workdir in berth/, hint: /--writable-tmpfs/ },
  { habit: 'Docker --rm', args: () => ['run', '--rm', img()], error: /--rm is Docker's and has no berth meaning/, hint: /leaves nothing behind/ },
  { habit: 'Docker --name', args: () => ['run', '--name', 'db', img()], error: /--name is Docker's/, hint: /instance/ },
  { habit: 'Docker -d', args: () => ['run', '-d', img()], error: /-d is Docker's/, hint: /foreground/ },
  { habit: 'Docker -P', args: () => ['run', '-P', img()], error: /-P is Docker's/, hint: /-p HOST_PORT:CONTAINER_PORT/ },
  { habit: 'Docker --network=bridge', args: () => ['run', '--network=bridge', img()], error: /--network bridge: berth knows none/, hint: /need root/ },
  { habit: 'Docker --privileged', args: () => ['run', '--privileged', img()], error: /--privileged is Docker's/, hint: /--fakeroot/ },
  { habit: 'Apptainer --writable', args: () => ['exec', '--writable', img(), 'true'], error: /--writable is Apptainer's/, hint: /--writable-tmpfs/ },
  { habit: "Docker --entrypoint on exec (it is berth run's)", args: () => ['exec', '--entrypoint', 'x', img(), 'true'], error: /berth exec does not take --entrypoint/, hint: /berth exec --help/ },
  { habit: '--env NAME that the host does not have', args: () => ['exec', '--env', 'BERTH_HABIT_UNSET', img(), 'true'], error: /BERTH_HABIT_UNSET is not set here/, hint: /--env BERTH_HABIT_UNSET=VALUE/ },
  { habit: 'a bind option with no meaning', args: () => ['exec', '-B', `${d()}:/n:bogus`, img(), 'true'], error: /unknown option 'bogus'/, hint: /noexec/ },
  { habit: '--user and --fakeroot together', args: () => ['exec', '--fakeroot', '-u', '1', img(), 'true'], error: /--fakeroot and --user/, hint: /choose one/ },
  { habit: "--user NAME the image does not have", args: () => ['exec', '-u', 'nobody-here', img(), 'true'], error: /no such user/, hint: /UID\[:GID\]/ },
  { habit: "Apptainer's order: pull OUT SOURCE", args: () => ['pull', 'out.sqsh', 'docker://busybox:1'], error: /takes one image reference/, hint: /berth pull docker:\/\/busybox:1 -o out\.sqsh/ },
];

describe('habits that berth refuses, with the berth way', () => {
  for (const c of REFUSED) {
    it(c.habit, async () => {
      const r = await b(c.args());
      expect(r.code).toBe(125);
      berthsForm(r);
      expect(r.stderr).toMatch(c.error);
      expect(r.stderr).toMatch(c.hint);
    });
  }
});

describe('the exit status contract (docker run)', () => {
  const CASES: { class: string; args: () => string[]; code: number }[] = [
    { class: 'an unknown option', args: () => ['exec', '--no-such-option', img(), 'true'], code: 125 },
    { class: 'a missing argument', args: () => ['exec'], code: 125 },
    { class: 'an unknown command', args: () => ['frobnicate'], code: 125 },
    { class: 'an image that does not exist', args: () => ['exec', path.join(work, 'none.sqsh'), 'true'], code: 125 },
    { class: 'a file that is not an image', args: () => ['exec', path.join(work, 'data/f'), 'true'], code: 125 },
    { class: 'a bind source that does not exist', args: () => ['exec', '-B', '/no/such:/x', img(), 'true'], code: 125 },
    { class: 'the command is not executable', args: () => ['exec', img(), '/etc/motd'], code: 126 },
    { class: 'the command is not in the image', args: () => ['exec', img(), 'no-such-tool'], code: 127 },
    { class: "the command's own status", args: () => ['exec', img(), ...sh('exit 3')], code: 3 },
    { class: "the command's own status 1 (not berth's)", args: () => ['exec', img(), 'false'], code: 1 },
    { class: 'the command killed by a signal', args: () => ['exec', img(), ...sh('kill -9 $$')], code: 137 },
    { class: 'a --pid container killed by a signal', args: () => ['exec', '--pid', img(), ...sh('kill -TERM $$')], code: 143 },
  ];
  for (const c of CASES) {
    it(`${c.class}: ${c.code}`, async () => {
      const r = await b(c.args());
      // The berth command is the container (exec in place): a command killed by signal N kills
      // it, and a job script's $? is 128+N.
      expect(r.code ?? 128 + constants.signals[r.signal!], r.stderr).toBe(c.code);
      if (c.code === 125) expect(r.stderr).not.toMatch(/internal error|\n\s+at /);
    });
  }

  it('help and the versions exit 0; -v and berth version name berth, the helper and the plugin', async () => {
    expect((await b(['--help'])).code).toBe(0);
    expect((await b(['exec', '--help'])).code).toBe(0);
    for (const args of [['-v'], ['--version'], ['version']]) {
      const r = await b(args);
      expect(r.code, r.stderr).toBe(0);
      expect(r.stdout).toMatch(/^berth \d+\.\d+\.\d+ \(node v.*\)\nberth-helper \d+\.\d+\.\d+ \(.*berth-helper\)\nspank plugin \d+\.\d+\.\d+ \(.*spank_berth\.so\)\n$/);
    }
  });

  it('a helper of another version is an error that says so', async () => {
    const other = path.join(work, 'old-helper');
    writeFileSync(other, '#!/bin/sh\necho "berth-helper 0.0.1"\n', { mode: 0o755 });
    const r = await b(['version'], { BERTH_HELPER: other });
    expect(r.code).toBe(125);
    expect(r.stderr).toMatch(/berth-helper .*old-helper is version 0\.0\.1, berth is \d+\.\d+\.\d+/);
    expect(r.stderr).toMatch(/hint: install berth, berth-helper and the SPANK plugin from one build/);
  });

  it('a SPANK plugin of another version, or of a build without one, is an error that says so', async () => {
    const other = path.join(work, 'other.so');
    writeFileSync(other, Buffer.concat([Buffer.from('\x7fELF...'), Buffer.from('berth-spank-plugin-version 9.9.9\0'), Buffer.alloc(16)]));
    const r = await b(['version'], { BERTH_SPANK_PLUGIN: other });
    expect(r.code).toBe(125);
    expect(r.stderr).toMatch(/the SPANK plugin .*other\.so is version 9\.9\.9, berth is \d+\.\d+\.\d+/);
    const old = path.join(work, 'old.so');
    writeFileSync(old, '\x7fELF without a marker');
    const unmarked = await b(['version'], { BERTH_SPANK_PLUGIN: old });
    expect(unmarked.code).toBe(125);
    expect(unmarked.stderr).toMatch(/the SPANK plugin .*old\.so is of a build without a version/);
  });
});

describe("Node's own options never steer berth", () => {
  it('--env-file FILE is berth\'s, wherever it is (Node 20 reads it from anywhere in its argv)', async () => {
    const file = path.join(work, 'vars');
    writeFileSync(file, 'FROM_FILE=yes\n');
    const missing = await b(['exec', '--env-file', path.join(work, 'missing'), img(), 'true']);
    expect(missing.code).toBe(125);
    expect(missing.stderr).not.toMatch(/^node:/m);
    berthsForm(missing);
    expect(missing.stderr).toMatch(/cannot read --env-file .*missing: no such file or directory/);
    const given = await b(['exec', '--env-file', file, img(), ...sh('echo "$FROM_FILE"')]);
    expect(given.code, given.stderr).toBe(0);
    expect(given.stdout).toBe('yes\n');
    // Before the command, too: berth's parser answers, not Node's.
    const first = await b(['--env-file', file, 'version']);
    expect(first.code).toBe(125);
    expect(first.stderr).toMatch(/^berth: error: unknown option '--env-file'/);
  });
});

describe('operating-system errors in berth\'s form, never a stack', () => {
  // Made here, as this (ordinary) user: a directory even its owner may not enter, a symlink loop,
  // a name over NAME_MAX, a path through a file.
  const locked = () => path.join(work, 'locked');
  const loop = () => path.join(work, 'loop');
  const long = () => path.join(work, 'x'.repeat(300));
  const through = () => path.join(work, 'data/f/below');
  beforeAll(() => {
    mkdirSync(locked());
    writeFileSync(path.join(locked(), 'inside'), 'A=1\n');
    chmodSync(locked(), 0);
    symlinkSync('loop', loop());
  });
  const PATHS: [string, () => string, RegExp][] = [
    ['EACCES', () => path.join(locked(), 'inside'), /permission denied \(EACCES/],
    ['ELOOP', loop, /too many levels of symbolic links \(ELOOP/],
    ['ENAMETOOLONG', long, /the name is too long \(ENAMETOOLONG/],
    ['ENOTDIR', through, /not a directory|does not exist|no such (file or )?directory/],
    ['ENOENT', () => path.join(work, 'absent'), /does not exist|no such (file or )?directory/],
  ];
  for (const [errno, p, message] of PATHS) {
    it(`${errno}: the image, a bind, an env file, --home`, async () => {
      for (const args of [['exec', p(), 'true'], ['exec', '-B', `${p()}:/x`, img(), 'true'], ['exec', '--env-file', p(), img(), 'true'], ['exec', '--home', p(), img(), 'true']]) {
        const r = await b(args);
        expect(r.code, args.join(' ')).toBe(125);
        berthsForm(r);
        expect(r.stderr, args.join(' ')).toMatch(message);
      }
    });
  }
  it('EISDIR: an env file that is a directory; --home that is a file', async () => {
    const dir = await b(['exec', '--env-file', d(), img(), 'true']);
    expect(dir.code).toBe(125);
    berthsForm(dir);
    expect(dir.stderr).toMatch(/cannot read --env-file .*data: is a directory \(EISDIR/);
    const file = await b(['exec', '--home', path.join(d(), 'f'), img(), 'true']);
    expect(file.code).toBe(125);
    berthsForm(file);
    expect(file.stderr).toMatch(/--home .*data\/f: not a directory/);
  });
  it('a working directory that was removed', async () => {
    const gone = path.join(work, 'gone');
    const r = await run('sh', ['-c', `mkdir ${gone} && cd ${gone} && rmdir ${gone} && exec ${BERTH} exec ${img()} true`], { env: env() });
    expect(r.code).toBe(125);
    expect(r.stderr).toMatch(/berth: error: the working directory cannot be found \(ENOENT\)/);
    expect(r.stderr).toMatch(/berth: hint: cd to a directory that exists/);
    expect(r.stderr).not.toMatch(/internal error|\n\s+at /);
  });
});
