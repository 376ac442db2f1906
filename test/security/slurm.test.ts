// The Slurm plugin on a shared node, played by an attacker (issue 11): a second ordinary user
// prepares the victim's runtime directory in /tmp and swaps plans into it, plants trojan images
// in the stage directory for the job ids to come, and the site's plugin is misconfigured as
// `optional`; root runs a step of its own. Each attack must be refused with no effect: no code
// run as the victim or as root, the victim's image the one that runs.
import { spawn, spawnSync } from 'node:child_process';
import { chmodSync, existsSync, lstatSync, mkdirSync, readdirSync, readFileSync, readlinkSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BERTH, ROOT, run } from '../helpers.js';
import { ATTACKER, VICTIM, account, as, dirOf } from './users.js';

const etc = path.dirname(process.env.SLURM_CONF ?? '/nonexistent/slurm.conf');
const pluginConf = path.join(etc, 'plugstack.conf.d/berth.conf');
let original = '';
let work: string; // the victim's, readable by all (images, job scripts)
let attackerDir: string;
const victim = () => account(VICTIM);
const image = (name: string) => path.join(work, `${name}.sqsh`);
const marker = (who: string) => `/tmp/berth-sec-pwned-${who}`;

/** plugstack.conf's berth line with changed arguments (slurmstepd reads it anew for each step). */
function reconfigure(edit: (line: string) => string): void {
  writeFileSync(pluginConf, `${edit(original.trim())}\n`);
}

/**
 * The attacker's plan for IMAGE: its container's start (init) runs a command that leaves a
 * marker as whoever runs it. Its runtime line names a directory that is the victim's own (as
 * /run/berth/UID is), so that a helper checking only the plan's word would accept it.
 */
async function evilPlan(who: string): Promise<string> {
  const a = who === 'root' ? { uid: 0, gid: 0 } : victim();
  const runtime = `/run/berth/${a.uid}`;
  mkdirSync(runtime, { recursive: true, mode: 0o700 });
  spawnSync('chown', [`${a.uid}:${a.gid}`, runtime]);
  const out = path.join(attackerDir, `evil-${who}.plan`);
  const r = await as(ATTACKER, process.execPath, [BERTH, 'plan', '--slurm-step', '--no-home', '-o', out, image('busybox')],
    { cwd: '/', env: { BERTH_RUNTIME_DIR: runtime } });
  expect(r.stderr).toBe('');
  const text = readFileSync(out, 'utf8').split('\n').filter((l) => !l.startsWith('init ')).join('\n');
  writeFileSync(out, `${text.trimEnd()}\ninit /bin/sh\ninit -c\ninit id\\040-u\\040>${marker(who)}\n`);
  chmodSync(out, 0o644);
  return out;
}

/** As the attacker, for `seconds`: replaces every plan that appears in DIR with EVIL. */
function swapPlans(dir: string, evil: string, seconds: number) {
  const script = `end=$((SECONDS+${seconds})); while [ $SECONDS -lt $end ]; do for f in "${dir}"/plan-* "${dir}"/*.plan; do
    [ -f "$f" ] && ! cmp -s "${evil}" "$f" && { rm -f "$f"; cp "${evil}" "$f"; chmod 666 "$f"; }; done; sleep 0.01; done`;
  const a = account(ATTACKER);
  const child = spawn('runuser', ['-u', ATTACKER, '--', 'env', '-i', `HOME=${a.home}`, 'PATH=/usr/bin:/bin', 'bash', '-c', script], { stdio: 'ignore' });
  return () => child.kill();
}

/** Job ids that the next jobs will get (they are sequential: anyone can guess them). */
function nextJobIds(): number[] {
  const ids = spawnSync('bash', ['-c', 'squeue -h -o %i -t all'], { encoding: 'utf8' }).stdout.trim().split('\n').map(Number).filter(Boolean);
  const last = Math.max(0, ...ids, Number(spawnSync('scontrol', ['show', 'config'], { encoding: 'utf8' }).stdout.match(/^FirstJobId\s*=\s*(\d+)/m)?.[1] ?? 0));
  return Array.from({ length: 60 }, (_, i) => last - 5 + i).filter((id) => id > 0);
}

const srunAs = (user: string, args: string[]) => as(user, 'srun', args, { cwd: work });
const srunAsRoot = (args: string[]) => run('srun', args, { cwd: work });

beforeAll(async () => {
  original = readFileSync(pluginConf, 'utf8');
  work = dirOf(VICTIM, 'slurm', 0o755);
  attackerDir = dirOf(ATTACKER, 'attacker', 0o755);
  const made = await as(VICTIM, path.join(ROOT, 'test/fixtures/make-run-images.sh'), [work], { cwd: work });
  expect(made.stderr).toBe('');
  // The attacker's trojan: the same image with another motd (umoci keeps its blobs 0600: root hands over a copy).
  spawnSync('cp', ['-r', `${work}/oci`, `${attackerDir}/oci`]);
  spawnSync('chown', ['-R', `${ATTACKER}:`, `${attackerDir}/oci`]);
  const trojan = await as(ATTACKER, 'bash', ['-c', `set -e; umoci unpack --rootless --image oci:busybox t >/dev/null;
    echo pwned > t/rootfs/etc/motd; umoci repack --image oci:busybox t >/dev/null; ${process.execPath} ${BERTH} convert oci:oci:busybox -o trojan.sqsh --quiet`], { cwd: attackerDir });
  expect(trojan.stderr).toBe('');
  const r = await as(VICTIM, process.execPath, [BERTH, 'convert', `oci:${work}/oci:busybox`, '-o', image('busybox'), '--quiet'], { cwd: work });
  expect(r.stderr).toBe('');
}, 240_000);

afterAll(() => {
  if (original) writeFileSync(pluginConf, original);
  for (const d of [work, attackerDir]) if (d) rmSync(d, { recursive: true, force: true });
  for (const who of [VICTIM, 'root']) rmSync(marker(who), { force: true });
});

describe('a runtime directory in /tmp (runtime_dir=/tmp/berth-sec-%U)', () => {
  const runtimeOf = (uid: number) => `/tmp/berth-sec-${uid}`;
  beforeAll(() => reconfigure((l) => `${l} runtime_dir=/tmp/berth-sec-%U`));
  afterAll(() => {
    reconfigure((l) => l);
    for (const uid of [victim().uid, 0]) rmSync(runtimeOf(uid), { recursive: true, force: true });
  });

  it('works when the victim makes it (the control: the attack is what fails the others)', async () => {
    const r = await srunAs(VICTIM, ['-n1', `--container-image=${image('busybox')}`, 'cat', '/etc/motd']);
    expect(r.stdout).toBe('from the image\n');
    expect(r.code).toBe(0);
    rmSync(runtimeOf(victim().uid), { recursive: true, force: true });
  });

  for (const who of [VICTIM, 'root']) {
    it(`refuses a directory the attacker made first, while plans are swapped in it: nothing runs as ${who} (#11.1)`, async () => {
      const uid = who === 'root' ? 0 : victim().uid;
      const dir = runtimeOf(uid);
      rmSync(dir, { recursive: true, force: true });
      expect((await as(ATTACKER, 'bash', ['-c', `mkdir ${dir} && chmod 0777 ${dir}`])).code).toBe(0);
      const evil = await evilPlan(who);
      // Planted ahead for the named container of each job to come, and swapped in for any other plan.
      const plant = nextJobIds().map((job) => `cp ${evil} ${dir}/named-${job}-work-n1.plan`).join('; ');
      expect((await as(ATTACKER, 'bash', ['-c', plant])).code).toBe(0);
      const stop = swapPlans(dir, evil, 20);
      try {
        const args = ['-n1', '-w', 'n1', `--container-image=${image('busybox')}`, '--container-name=work', 'cat', '/etc/motd'];
        const r = who === 'root' ? await srunAsRoot(args) : await srunAs(VICTIM, args);
        expect(existsSync(marker(who)) && readFileSync(marker(who), 'utf8')).toBe(false); // what the attack is after
        expect(r.code).not.toBe(0);
        expect(r.stdout).toBe('');
        expect(r.stderr).toContain(`cannot use the runtime directory: ${dir} belongs to someone else`);
        expect(r.stderr).toContain('another user may have made it');
      } finally {
        stop();
      }
      expect(existsSync(marker(who))).toBe(false);
      rmSync(dir, { recursive: true, force: true });
    });
  }

  it("refuses a symlink the attacker put in the victim's place, to a private directory of the victim's (#11.1)", async () => {
    const dir = runtimeOf(victim().uid);
    const target = path.join(victim().home, `.berth-sec-private`);
    rmSync(target, { recursive: true, force: true });
    mkdirSync(target, { mode: 0o700 });
    spawnSync('chown', [`${VICTIM}:`, target]);
    expect((await as(ATTACKER, 'ln', ['-s', target, dir])).code).toBe(0);
    const r = await srunAs(VICTIM, ['-n1', `--container-image=${image('busybox')}`, 'true']);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toContain('is a symbolic link, not a directory');
    expect(spawnSync('ls', ['-A', target], { encoding: 'utf8' }).stdout).toBe('');
    rmSync(dir, { force: true });
    rmSync(target, { recursive: true, force: true });
  });
});

describe('the default runtime directory, /run/berth/UID', () => {
  it('is made by root for the user, so the attacker cannot make it first', async () => {
    const r = await as(ATTACKER, 'mkdir', ['-p', `/run/berth/${victim().uid}-x`]);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/Permission denied/);
    const ok = await srunAs(VICTIM, ['-n1', `--container-image=${image('busybox')}`, 'cat', '/etc/motd']);
    expect(ok.stdout).toBe('from the image\n');
    const st = spawnSync('stat', ['-c', '%u %a', `/run/berth/${victim().uid}`, '/run/berth'], { encoding: 'utf8' }).stdout;
    expect(st).toBe(`${victim().uid} 700\n0 755\n`);
  });

  it('serves a step that root runs, as root', async () => {
    const r = await srunAsRoot(['-n1', `--container-image=${image('busybox')}`, 'sh', '-c', 'id -u; cat /etc/motd']);
    expect(r.stdout).toBe('0\nfrom the image\n');
    expect(r.code).toBe(0);
  });
});

describe("a step's end keeping the job's servers (proctrack/cgroup: slurm-plugins/adopt.c)", () => {
  it("never moves the victim's process, nor one of the attacker's own from outside the step, named by pid files the attacker wrote", async () => {
    const freezer = (pid: number) => readFileSync(`/proc/${pid}/cgroup`, 'utf8').split('\n').find((l) => /:freezer:/.test(l)) ?? '';
    // The victim's step, running on n1: the process the attacker names.
    const held = spawn('runuser', ['-u', VICTIM, '--', 'srun', '-w', 'n1', '-n1', 'sleep', '40'], { cwd: work, stdio: 'ignore' });
    // And one of the attacker's own, outside any job, titled as an image server.
    const decoy = spawn('runuser', ['-u', ATTACKER, '--', 'bash', '-c', 'exec -a "berth-helper image-server" sleep 40'], { stdio: 'ignore' });
    try {
      const found = (user: string, line: string) => Number(spawnSync('pgrep', ['-u', user, '-f', line], { encoding: 'utf8' }).stdout.trim().split('\n')[0] || 0);
      let sleeper = 0;
      for (let i = 0; i < 100 && !(sleeper = found(VICTIM, '^(/usr)?/bin/sleep 40$')); i++) await new Promise((r) => setTimeout(r, 100));
      const decoyPid = found(ATTACKER, '^berth-helper image-server 40$');
      expect(sleeper).toBeGreaterThan(0);
      expect(decoyPid).toBeGreaterThan(0);
      const before = [freezer(sleeper), freezer(decoyPid)];
      expect(before[0]).toMatch(/\/job_\d+\/step_0$/);
      // In the attacker's own step: pid files of "the job's servers" naming both, fresh.
      const rt = `/run/berth/${account(ATTACKER).uid}`;
      const plant = [`for d in ${rt}/img-x-slurm-$SLURM_JOB_ID ${rt}/named-$SLURM_JOB_ID-x-n1; do mkdir -p $d`,
        `echo ${sleeper} > $d/pid; done; mkdir -p ${rt}/img-y-slurm-$SLURM_JOB_ID; echo ${decoyPid} > ${rt}/img-y-slurm-$SLURM_JOB_ID/pid`].join('; ');
      const r = await srunAs(ATTACKER, ['-w', 'n1', '-n1', `--container-image=${image('busybox')}`, 'sh', '-c', 'true']);
      expect(r.code).toBe(0);
      const a = await srunAs(ATTACKER, ['-w', 'n1', '-n1', 'bash', '-c', plant]);
      expect(a.code).toBe(0);
      // The attacker's step has ended (its tasks' exit moved what it could prove): nothing moved.
      expect([freezer(sleeper), freezer(decoyPid)]).toEqual(before);
      expect(existsSync(`/proc/${sleeper}`)).toBe(true);
    } finally {
      held.kill();
      decoy.kill();
    }
  }, 60_000);
});

describe('the stage directory', () => {
  it('runs the victim\'s image although the attacker planted trojans for the next job ids under every name they can know (#11.2)', async () => {
    const stage = path.join(etc, '../stage');
    const uid = victim().uid;
    const names = (job: number) => [`berth-${job}-busybox.sqsh`, `berth-${job}-${uid}-busybox.sqsh`, `berth-${job}-${uid}--busybox.sqsh`];
    const planted = nextJobIds().flatMap((job) => names(job).map((n) => path.join(stage, n)));
    expect((await as(ATTACKER, 'bash', ['-c', planted.map((p) => `cp ${attackerDir}/trojan.sqsh ${p}`).join('; ')])).code).toBe(0);
    const script = path.join(work, 'staged.sh');
    writeFileSync(script, `#!/bin/bash\n#SBATCH -N2 -n2 -o ${work}/staged.out --container-image=${image('busybox')}\nsrun cat /etc/motd\n`, { mode: 0o755 });
    spawnSync('chown', [`${VICTIM}:`, script]);
    const r = await as(VICTIM, 'sbatch', ['--wait', script], { cwd: work });
    expect(r.code).toBe(0);
    expect(readFileSync(path.join(work, 'staged.out'), 'utf8')).toBe('from the image\nfrom the image\n');
    for (const p of planted) rmSync(p, { force: true });
  });
});

describe('--container-save into a directory others can write (#15)', () => {
  it("never writes into or over the victim's files through names the attacker planted in a sticky directory", async () => {
    const shared = dirOf('root', 'shared', 0o1777);
    const keep = path.join(work, 'keep');
    mkdirSync(keep);
    writeFileSync(path.join(keep, 'thesis.tex'), 'years of work\n');
    spawnSync('chown', ['-R', `${VICTIM}:`, keep]);
    const planted = await as(ATTACKER, 'bash', ['-c', `ln -s ${keep} ${shared}/dir.sqsh; ln -s ${keep}/thesis.tex ${shared}/file.sqsh`]);
    expect(planted.code).toBe(0);
    // A name that leads to a directory is refused before the job queues.
    const dir = await srunAs(VICTIM, ['-n1', `--container-image=${image('busybox')}`, `--container-save=${shared}/dir.sqsh`, 'true']);
    expect(dir.code).not.toBe(0);
    expect(dir.stderr).toMatch(/--container-save=\S+ is a directory/);
    // One that leads to a file: the new image may only replace the attacker's link, which the
    // sticky bit forbids; the victim's file stays as it is.
    const file = await srunAs(VICTIM, ['-n1', `--container-image=${image('busybox')}`, `--container-save=${shared}/file.sqsh`, 'sh', '-c', 'echo saved > /etc/motd']);
    expect(file.stderr).toMatch(/--container-save=\S+ failed/);
    expect(readdirSync(keep)).toEqual(['thesis.tex']);
    expect(readFileSync(path.join(keep, 'thesis.tex'), 'utf8')).toBe('years of work\n');
    expect(lstatSync(`${shared}/file.sqsh`).isSymbolicLink() && readlinkSync(`${shared}/file.sqsh`)).toBe(`${keep}/thesis.tex`);
    rmSync(shared, { recursive: true, force: true });
  });
});

describe('a plugin the site loads as optional', () => {
  afterAll(() => reconfigure((l) => l));

  it('never lets a task that asked for a container run on the host when berth cannot be run (#11.10)', async () => {
    reconfigure((l) => l.replace(/^required/, 'optional').replace(/berth=\S+/, 'berth=/nonexistent/berth'));
    const r = await srunAs(VICTIM, ['-n1', `--container-image=${image('busybox')}`, 'sh', '-c', 'echo on the host']);
    expect(r.stdout).not.toContain('on the host');
    expect(r.code).not.toBe(0);
    expect(r.stderr).toContain('cannot run /nonexistent/berth');
  });

  it('never lets it run on the host when the helper is missing', async () => {
    reconfigure((l) => l.replace(/^required/, 'optional').replace(/helper=\S+/, 'helper=/nonexistent/berth-helper'));
    const r = await srunAs(VICTIM, ['-n1', `--container-image=${image('busybox')}`, 'sh', '-c', 'echo on the host']);
    expect(r.stdout).not.toContain('on the host');
    expect(r.code).not.toBe(0);
    expect(r.stderr).toContain('cannot run /nonexistent/berth-helper');
  });
});
