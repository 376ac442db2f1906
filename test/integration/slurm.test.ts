// berth under a real Slurm (test/slurm/cluster: munged, slurmctld and three slurmd on this
// machine, with berth's SPANK plugin in plugstack.conf; test/run starts it as root), used by
// an ordinary user as job scripts do: srun and sbatch with --container-* options, the MPICH
// image with the host's MPI over PMI2, a docker:// image pulled once for a whole job, a
// cancelled job that leaves nothing behind, and the `berth srun` wrapper.
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, readlinkSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { userInfo } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BERTH, ROOT, berth, cleanup, run, tempDir } from '../helpers.js';
import { push, startRegistry, type Registry } from '../registry.js';

let work: string;
let registry: Registry;
const img = (name: string) => path.join(work, `${name}.sqsh`);
const runtime = `/run/berth/${userInfo().uid}`;
const env = (more: Record<string, string> = {}) => ({ ...process.env, BERTH_CACHE_DIR: path.join(work, 'cache'), ...more });
const srun = (...args: string[]) => run('srun', args, { cwd: work, env: env() });

/** srun's stderr without its notes on waiting for resources (the suite's files run in parallel). */
const errors = (stderr: string) => stderr.split('\n').filter((l) => l && !/^srun: job \d+ (queued|has been allocated)/.test(l)).join('\n');

/** Processes of this user that belong to berth (helpers, step and image servers), zombies aside. */
/**
 * The berth-helper processes of the test user, those of job `job` only when it is given: other
 * test files run containers of their own at the same time, and one whose environment shows it
 * is not the job's is not counted (servers that hide theirs, being not dumpable, still are when
 * they started after `since`).
 */
function berthProcesses(job?: { id: string; since?: number }): string[] {
  const boot = Number(/^btime (\d+)$/m.exec(readFileSync('/proc/stat', 'utf8'))![1]) * 1000;
  const startedAt = (pid: string) => boot + Number(readFileSync(`/proc/${pid}/stat`, 'utf8').replace(/^.*\) /s, '').split(' ')[19]) * 10;
  const ps = spawnSync('ps', ['-u', String(userInfo().uid), '-o', 'pid=,stat=,args=']).stdout.toString();
  return ps.split('\n').filter((l) => /berth-helper/.test(l) && !/^\s*\d+\s+Z/.test(l)).filter((l) => {
    if (job === undefined) return true;
    const pid = l.trim().split(/\s+/)[0]!;
    try {
      return readFileSync(`/proc/${pid}/environ`, 'latin1').split('\0').includes(`SLURM_JOB_ID=${job.id}`);
    } catch {
      // Not dumpable (a server): counted unless it was started before the job was submitted;
      // not at all without `since` (the caller checks the job's servers by their pids).
      if (job.since === undefined) return false;
      try {
        return startedAt(pid) >= job.since - 1000;
      } catch {
        return false; // gone meanwhile
      }
    }
  }).map((l) => l.trim().replace(/^\d+\s+/, ''));
}
/** What the namespace test prints in each task: node, hostname, IPC and network namespaces, interfaces. */
const NAMESPACES = 'echo "$SLURMD_NODENAME $(id -u) $(hostname) $(readlink /proc/self/ns/ipc) $(readlink /proc/self/ns/net) $(grep -o "^ *[a-z0-9]*:" /proc/net/dev | tr -d " :" | tr "\\n" ,)"';

/** Every task saw `hostname` and a loopback only, in namespaces not the host's; one IPC namespace per node. */
function expectStepNamespaces(stdout: string, tasks: number, nodes: number, hostname: string, uid: string): void {
  const lines = stdout.trim().split('\n');
  expect(lines).toHaveLength(tasks);
  const ipcByNode = new Map<string, Set<string>>();
  for (const l of lines) {
    const [node, id, host, ipc, net, interfaces] = l.split(' ');
    expect([id, host, interfaces]).toEqual([uid, hostname, 'lo,']);
    expect(ipc).not.toBe(readlinkSync('/proc/self/ns/ipc'));
    expect(net).not.toBe(readlinkSync('/proc/self/ns/net'));
    ipcByNode.set(node!, (ipcByNode.get(node!) ?? new Set()).add(ipc!));
  }
  expect(ipcByNode.size).toBe(nodes);
  for (const set of ipcByNode.values()) expect(set.size).toBe(1);
}

/** Every file and directory under dir, with its size: what a refused save must leave as it was. */
function tree(dir: string): string[] {
  return readdirSync(dir, { recursive: true, withFileTypes: true }).map((e) => {
    const p = path.join(e.parentPath, e.name);
    return `${path.relative(dir, p)} ${e.isSymbolicLink() ? `-> ${readlinkSync(p)}` : statSync(p).size}`;
  }).sort();
}

const stepDirs = () => (existsSync(runtime) ? readdirSync(runtime).filter((n) => /^(step|named)-/.test(n)) : []);

async function until(check: () => boolean, ms: number): Promise<boolean> {
  for (const end = Date.now() + ms; Date.now() < end; await new Promise((r) => setTimeout(r, 100))) if (check()) return true;
  return check();
}

beforeAll(async () => {
  const up = spawnSync('sinfo', ['-h', '-o', '%D %T'], { encoding: 'utf8' });
  if (up.status !== 0 || !process.env.SLURM_CONF) {
    throw new Error(`no test Slurm cluster (SLURM_CONF=${process.env.SLURM_CONF}): start it as root with test/slurm/cluster start, as test/run does\n${up.stderr}`);
  }
  work = tempDir('slurm');
  const made = await run(path.join(ROOT, 'test/fixtures/make-run-images.sh'), [work]);
  if (made.code !== 0) throw new Error(made.stderr);
  for (const tag of ['busybox', 'mpich', 'ep']) {
    const r = await berth('convert', `oci:${work}/oci:${tag}`, '-o', img(tag), '--quiet');
    if (r.code !== 0) throw new Error(r.stderr);
  }
  mkdirSync(path.join(work, 'foreign'));
  const foreign = await run(path.join(ROOT, 'test/fixtures/make-foreign-images.sh'), [path.join(work, 'foreign')]);
  if (foreign.code !== 0) throw new Error(foreign.stderr);
  registry = await startRegistry(path.join(work, 'registry'));
  await push(`oci:${work}/oci:busybox`, registry, 'lab/busybox:1.0');
}, 240_000);
afterAll(async () => {
  await registry?.stop();
  cleanup(work);
});

describe('the SPANK plugin', () => {
  it('runs a one-task step in the image, with the exit status of the task', async () => {
    const r = await srun('-n1', `--container-image=${img('busybox')}`, 'sh', '-c', 'cat /etc/motd; exit 3');
    expect(r.stdout).toBe('from the image\n');
    expect(r.code).toBe(3);
    expect(r.stderr).toMatch(/task 0: Exited with exit code 3/);
  });

  it('lists its options in srun --help, and refuses contradictory ones before the job starts', async () => {
    expect((await run('srun', ['--help'])).stdout).toMatch(/--container-image=\[docker:\/\/\]IMAGE[\s\S]*--container-mpi[\s\S]*--container-gpus/);
    const r = await srun('-n1', `--container-image=${img('busybox')}`, '--container-writable', '--container-readonly', 'true');
    expect(r.code).not.toBe(0);
    expect(r.stderr).toContain('--container-writable and --container-readonly contradict each other');
  });

  it('reads BERTH_CONTAINER_* variables, and the command line wins over them', async () => {
    const fromEnv = await run('srun', ['-n1', 'cat', '/etc/motd'], { cwd: work, env: env({ BERTH_CONTAINER_IMAGE: img('busybox') }) });
    expect(fromEnv.stdout).toBe('from the image\n');
    const both = await run('srun', ['-n1', `--container-image=${img('busybox')}`, 'cat', '/etc/motd'],
      { cwd: work, env: env({ BERTH_CONTAINER_IMAGE: `${work}/no-such.sqsh` }) });
    expect(both.stdout).toBe('from the image\n');
  });

  it('--container-mounts is berth\'s --bind list, checked by berth alone (#18)', async () => {
    const data = path.join(work, 'mounts-data');
    mkdirSync(data, { recursive: true });
    writeFileSync(path.join(data, 'hello'), 'bound\n');
    const r = await srun('-n1', `--container-image=${img('busybox')}`, `--container-mounts=${data}:/data:ro,${data}:/data2`, 'sh', '-c',
      'cat /data/hello /data2/hello; touch /data/x 2>/dev/null && echo writable || echo read-only');
    expect(errors(r.stderr)).toBe('');
    expect(r.stdout).toBe('bound\nbound\nread-only\n');
    const bad = await srun('-n1', `--container-image=${img('busybox')}`, `--container-mounts=${data}:/data:bogus`, 'true');
    expect(bad.code).toBe(125);
    expect(bad.stderr).toContain("unknown option 'bogus'");
  });

  it('rejects an unknown plugstack.conf argument, naming the known ones', async () => {
    // A client-side copy of the configuration whose plugstack gives the plugin a typo.
    const etc = path.dirname(process.env.SLURM_CONF!);
    const conf = path.join(work, 'slurm.conf');
    const stack = path.join(work, 'plugstack.conf');
    const line = readFileSync(path.join(etc, 'plugstack.conf.d/berth.conf'), 'utf8').trim();
    writeFileSync(stack, `${line} colour=blue\n`);
    writeFileSync(conf, readFileSync(process.env.SLURM_CONF!, 'utf8').replace(/^PlugStackConfig=.*$/m, `PlugStackConfig=${stack}`));
    const r = await run('srun', ['-n1', 'true'], { cwd: work, env: env({ SLURM_CONF: conf }) });
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/berth: unknown argument 'colour=blue' in plugstack\.conf; the arguments are berth=PATH, helper=PATH, runtime_dir=DIR/);
  });

  it('shares one container among the tasks of a step on a node: one mount namespace per node', async () => {
    const r = await srun('-N2', '-n4', `--container-image=${img('busybox')}`, '--no-container-stage', '--container-writable', 'sh', '-c',
      'echo "$SLURMD_NODENAME $(readlink /proc/self/ns/mnt) $(cat /etc/motd)"');
    expect(r.code).toBe(0);
    const lines = r.stdout.trim().split('\n').sort();
    expect(lines).toHaveLength(4);
    const byNode = new Map<string, Set<string>>();
    for (const l of lines) {
      const [node, ns] = l.split(' ');
      byNode.set(node!, (byNode.get(node!) ?? new Set()).add(ns!));
      expect(l).toMatch(/ from the image$/);
    }
    expect(byNode.size).toBe(2);
    for (const set of byNode.values()) expect(set.size).toBe(1);
    const nsOfEach = [...byNode.values()].map((s) => [...s][0]);
    expect(nsOfEach[0]).not.toBe(nsOfEach[1]);
    expect(nsOfEach).not.toContain(readlinkSync('/proc/self/ns/mnt'));
  });

  it("runs MPI hello world across three nodes with srun --mpi=pmi2 on the host's MPICH (--container-mpi)", async () => {
    // The three "nodes" are one machine: UCX would try shared memory between different nodes'
    // containers (different user namespaces), which real nodes never do. TCP it is.
    const r = await run('srun', ['-N3', '-n3', '--mpi=pmi2', `--container-image=${img('mpich')}`, '--no-container-stage', '--container-mpi', 'mpi_hello'],
      { cwd: work, env: env({ UCX_TLS: 'tcp,self' }) });
    expect(errors(r.stderr)).toBe('');
    const st = statSync('/usr/lib/x86_64-linux-gnu/libmpich.so.12');
    const file = `${Math.floor(st.dev / 256)}:${st.dev % 256}:${st.ino}`;
    expect(r.stdout.trim().split('\n').sort()).toEqual([0, 1, 2].map((i) => `rank ${i} of 3 lib /.berth/host/lib/libmpich.so.12 file ${file}`));
  });

  it('runs the steps of an sbatch script whose #SBATCH lines name the image', async () => {
    const script = path.join(work, 'job.sh');
    writeFileSync(script, [
      '#!/bin/bash',
      `#SBATCH --container-image=${img('busybox')}`,
      '#SBATCH -N2 -n2',
      `#SBATCH -o ${work}/job.out`,
      'test -e /suid/busybox && echo "batch script: in a container" || echo "batch script: on the host"',
      'srun sh -c \'echo "task $SLURM_PROCID: $(cat /etc/motd)"\'',
      'srun true',
      // A plan per node for the whole job: the second step started no Node process.
      `echo "plans: $(ls ${runtime} | grep -c "^plan-$SLURM_JOB_ID-")"`,
      '',
    ].join('\n'), { mode: 0o755 });
    const r = await run('sbatch', ['--wait', script], { cwd: work, env: env() });
    expect(r.code).toBe(0);
    const out = readFileSync(path.join(work, 'job.out'), 'utf8').split('\n').filter(Boolean);
    expect(out[0]).toBe('batch script: on the host');
    expect(out.slice(1, 3).sort()).toEqual(['task 0: from the image', 'task 1: from the image']);
    expect(out[3]).toBe('plans: 2');
  });

  it("stages the image to the nodes with sbcast where the site says so (stage_dir), once per job that names it, and removes it after", async () => {
    const stage = path.join(path.dirname(process.env.SLURM_CONF!), '../stage');
    const script = path.join(work, 'staged.sh');
    writeFileSync(script, [
      '#!/bin/bash',
      `#SBATCH -N2 -n2 -o ${work}/staged.out --container-image=${img('busybox')}`,
      'srun cat /etc/motd',
      'srun true',
      `ls ${stage} | grep "^berth-$SLURM_JOB_ID-"`,
      `grep -h "^image " ${runtime}/plan-$SLURM_JOB_ID-*`,
      '',
    ].join('\n'), { mode: 0o755 });
    const r = await run('sbatch', ['--wait', '--parsable', script], { cwd: work, env: env() });
    expect(r.code).toBe(0);
    const job = r.stdout.trim();
    // Named by the job, the user, a token drawn at submission (no one can plant it ahead) and the image.
    const name = new RegExp(`^berth-${job}-${userInfo().uid}-[0-9a-f]{32}-[0-9a-f]{16}-busybox\\.sqsh$`);
    const [motd1, motd2, listed, ...plans] = readFileSync(path.join(work, 'staged.out'), 'utf8').trim().split('\n');
    expect([motd1, motd2]).toEqual(['from the image', 'from the image']);
    expect(listed).toMatch(name);
    const staged = path.join(stage, listed!);
    expect(plans).toEqual([`image ${staged}`, `image ${staged}`]);
    await until(() => !existsSync(staged), 15_000);
    expect(existsSync(staged)).toBe(false);
  });

  it('runs the images people already have: a SIF and an enroot squashfs staged, an OCI layout converted once, a directory in place', async () => {
    const foreign = (name: string) => path.join(work, 'foreign', name);
    const script = path.join(work, 'foreign.sh');
    const probe = `sh -c 'echo "$FROM_ENV $STAGE"; cat /etc/motd 2>/dev/null || true'`;
    writeFileSync(script, [
      '#!/bin/bash',
      `#SBATCH -N2 -n2 -o ${work}/foreign.out -e ${work}/foreign.err`,
      ...[foreign('app.sif'), foreign('enroot.sqsh'), foreign('sandbox'), `oci:${work}/oci:busybox`]
        .map((image) => `srun -N1 -n1 --container-image=${image} ${probe}`),
      `grep -h "^image" ${runtime}/plan-$SLURM_JOB_ID-* | sort`,
      '',
    ].join('\n'), { mode: 0o755 });
    // A cache of its own: the layout's manifest is the one a later test pulls from the registry.
    const r = await run('sbatch', ['--wait', '--parsable', script], { cwd: work, env: env({ BERTH_CACHE_DIR: path.join(work, 'cache-foreign') }) });
    const out = readFileSync(path.join(work, 'foreign.out'), 'utf8');
    expect(r.code, readFileSync(path.join(work, 'foreign.err'), 'utf8')).toBe(0);
    const lines = out.trim().split('\n');
    // Apptainer's environment scripts, enroot's /etc/environment, the sandbox's scripts, the layout's file.
    expect(lines.slice(0, 5)).toEqual(['apptainer ten-ninety', 'enroot ', 'apptainer ten-ninety', ' ', 'from the image']);
    const plans = lines.slice(5);
    const staged = (name: string) => new RegExp(`^image .*/stage/berth-${r.stdout.trim()}-${userInfo().uid}-[0-9a-f]{32}-[0-9a-f]{16}-${name}$`);
    // The SIF is staged whole and served at its partition's offset; sbcast cannot copy a directory, so it runs where it is.
    expect(plans).toContain(`image ${foreign('sandbox')}`);
    expect(plans.some((l) => staged('app\\.sif').test(l)), plans.join('\n')).toBe(true);
    expect(plans.some((l) => staged('enroot\\.sqsh').test(l)), plans.join('\n')).toBe(true);
    expect(plans.some((l) => staged('oci:busybox').test(l)), plans.join('\n')).toBe(true);
    expect(plans).toContain('imageformat directory');
    expect(plans.some((l) => /^imageoffset [1-9]\d*$/.test(l)), plans.join('\n')).toBe(true);
  });

  it('builds an image inside a job (berth build -t) and runs it in the next step by its name (#17)', async () => {
    const ctx = path.join(work, 'job-build');
    mkdirSync(ctx, { recursive: true });
    writeFileSync(path.join(ctx, 'Dockerfile'), `FROM ${img('busybox')}\nRUN echo built on $(hostname) > /etc/built\nCMD ["cat", "/etc/built"]\n`);
    const script = path.join(work, 'job-build.sh');
    writeFileSync(script, [
      '#!/bin/bash',
      `#SBATCH -N1 -o ${work}/job-build.out -e ${work}/job-build.err`,
      'set -e',
      `${BERTH} build -t jobtool:1 --quiet ${ctx} > /dev/null`, // it prints the image's digest
      'srun --container-image=jobtool:1 cat /etc/built',
      `${BERTH} images | grep -c jobtool`,
      '',
    ].join('\n'), { mode: 0o755 });
    const r = await run('sbatch', ['--wait', script], { cwd: work, env: env() });
    expect(r.code, readFileSync(path.join(work, 'job-build.err'), 'utf8')).toBe(0);
    expect(readFileSync(path.join(work, 'job-build.out'), 'utf8')).toMatch(/^built on \S+\n1\n$/);
  });

  it('a task whose image server ends under its step is stopped with the reason, not left to fault', async () => {
    // The tasks join the step's container, not the image server: the step server passes each
    // task's "watch" on, so the image server's guard can stop them with a message.
    const child = spawn('srun', ['-n1', `--container-image=${img('busybox')}`, 'sh', '-c', 'echo ready; while :; do cat /etc/motd > /dev/null; sleep 0.05; done'],
      { cwd: work, env: env() });
    let out = '';
    let err = '';
    child.stderr.on('data', (d: Buffer) => { err += d.toString(); });
    await new Promise<void>((resolve) => child.stdout.on('data', (d: Buffer) => { out += d.toString(); if (out.includes('ready')) resolve(); }));
    const servers = readdirSync(runtime).filter((n) => n.startsWith('img-') && !n.endsWith('.lock')).map((n) => path.join(runtime, n))
      .sort((a, b) => statSync(b).mtimeMs - statSync(a).mtimeMs);
    process.kill(Number(readFileSync(path.join(servers[0]!, 'pid'), 'utf8')), 'SIGKILL');
    const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
    expect(err).toMatch(/berth: error: the image server for \S+busybox\.sqsh ended \(signal 9\); the image may be corrupt: the container was stopped/); // the staged copy
    expect(code).not.toBe(0);
  });

  it("keeps the image's server warm for the job's later steps and its berth exec, until the job's end (#19)", async () => {
    // One image server per user, image and job on a node: every step after the first, and a
    // berth exec in the script, join the one the first step started (the same process). It
    // waits images.job-linger (ten minutes), not images.linger, while the job's batch step
    // lives, and leaves when the job has ended: one the epilog knows nothing of too (another
    // runtime directory), whose images.linger would have kept it for a minute. The steps run the job's staged copy of the image: berth exec is given that.
    const script = path.join(work, 'warm.sh');
    const servers = `${runtime}/img-*-slurm-$SLURM_JOB_ID`;
    const own = path.join(work, 'rt-job');
    const staged = `$(ls -d ${path.dirname(process.env.SLURM_CONF!)}/../stage/berth-$SLURM_JOB_ID-*)`;
    writeFileSync(script, [
      '#!/bin/bash',
      `#SBATCH -N1 -o ${work}/warm.out`,
      'export BERTH_IMAGE_LINGER=1',
      `srun --container-image=${img('busybox')} true && cat ${servers}/pid`,
      'sleep 2',
      `srun --container-image=${img('busybox')} true && cat ${servers}/pid`,
      // No BERTH_RUNTIME_DIR: in a job under the plugin, berth's default is the plugin's runtime_dir.
      `${BERTH} exec ${staged} true && cat ${servers}/pid`,
      `BERTH_RUNTIME_DIR=${own} BERTH_IMAGE_LINGER=60 ${BERTH} exec ${staged} true && sleep 2 && cat ${own}/img-*-slurm-$SLURM_JOB_ID/pid`,
      '',
    ].join('\n'), { mode: 0o755 });
    const r = await run('sbatch', ['--wait', '--parsable', script], { cwd: work, env: env() });
    expect(r.code).toBe(0);
    const job = r.stdout.trim();
    const lines = readFileSync(path.join(work, 'warm.out'), 'utf8').trim().split('\n');
    expect(lines).toHaveLength(4);
    expect(lines[0]).toMatch(/^\d+$/);
    expect(lines.slice(1, 3)).toEqual([lines[0], lines[0]]); // the same server, still up
    expect(lines[3]).toMatch(/^\d+$/);
    const ofJob = (dir: string) => readdirSync(dir).filter((n) => n.startsWith('img-') && new RegExp(`-slurm-${job}(\\.|$)`).test(n));
    // Killed with the job's cgroup, a server may wait as a zombie for an init that never reaps.
    const gone = (pid: string) => !existsSync(`/proc/${pid}`) || /^\d+ \(.*\) [ZX]/s.test(readFileSync(`/proc/${pid}/stat`, 'latin1'));
    expect(await until(() => ofJob(runtime).length === 0 && ofJob(own).length === 0 && gone(lines[0]!) && gone(lines[3]!), 15_000)).toBe(true);
  });

  it("an srun's own job (no batch step to follow): the job's epilog stops its image server, which images.linger would have kept a minute (#19)", async () => {
    const since = Date.now();
    const r = await run('srun', [`--container-image=${img('busybox')}`, 'sh', '-c', 'echo $SLURM_JOB_ID'], { cwd: work, env: env({ BERTH_IMAGE_LINGER: '60' }) });
    expect(r.code).toBe(0);
    const job = r.stdout.trim();
    const ofJob = () => readdirSync(runtime).filter((n) => n.startsWith('img-') && new RegExp(`-slurm-${job}(\\.|$)`).test(n));
    expect(await until(() => ofJob().length === 0 && berthProcesses({ id: job, since }).length === 0, 20_000)).toBe(true);
  });

  it('keeps a named container for the later steps of a job (--container-name)', async () => {
    const script = path.join(work, 'named.sh');
    writeFileSync(script, [
      '#!/bin/bash',
      `#SBATCH -N1 -o ${work}/named.out`,
      `srun --container-image=${img('busybox')} --container-name=keep --container-writable sh -c 'echo kept > /etc/state'`,
      `srun --container-image=${img('busybox')} --container-name=keep cat /etc/state`,
      // The epilog reads pid files the user can write: one naming slurmctld must not stop it.
      `mkdir ${runtime}/named-$SLURM_JOB_ID-forged-n1 && cat ${path.dirname(process.env.SLURM_CONF!)}/../run/slurmctld.pid > ${runtime}/named-$SLURM_JOB_ID-forged-n1/pid`,
      '',
    ].join('\n'), { mode: 0o755 });
    const r = await run('sbatch', ['--wait', script], { cwd: work, env: env() });
    expect(r.code).toBe(0);
    expect(readFileSync(path.join(work, 'named.out'), 'utf8')).toBe('kept\n');
    // The job epilog stops the container, as the job's user: slurmctld lives on.
    await until(() => !stepDirs().some((d) => d.startsWith('named-') && !d.includes('-forged-')), 15_000);
    expect(stepDirs().filter((d) => d.startsWith('named-') && !d.includes('-forged-'))).toEqual([]);
    const ctld = Number(readFileSync(path.join(path.dirname(process.env.SLURM_CONF!), '../run/slurmctld.pid'), 'utf8'));
    expect(() => process.kill(ctld, 0)).toThrow(/EPERM/); // alive, and not ours
    for (const d of stepDirs().filter((n) => n.includes('-forged-'))) cleanup(path.join(runtime, d));
  });

  it('pulls a docker:// image once for a multi-node job, and runs that digest everywhere', async () => {
    const before = registry.requests().length;
    const ref = `docker://${registry.host}/lab/busybox:1.0`;
    const r = await srun('-N3', '-n6', `--container-image=${ref}`, 'cat', '/etc/motd');
    expect(errors(r.stderr)).toBe('');
    expect(r.stdout).toBe('from the image\n'.repeat(6));
    const requests = registry.requests().slice(before);
    const blobs = requests.filter((l) => l.startsWith('GET') && l.includes('/blobs/'));
    expect(blobs.length).toBeGreaterThan(0);
    expect(new Set(blobs).size).toBe(blobs.length); // each blob once, for the whole job
    // The tag was resolved once, at submission; the nodes asked only by digest.
    expect(requests.filter((l) => l.includes('/manifests/1.0'))).toHaveLength(1);
    expect(requests.filter((l) => l.includes('/manifests/') && !l.includes('/manifests/sha256:') && !l.includes('/manifests/1.0'))).toEqual([]);
    const again = registry.requests().length;
    expect((await srun('-N3', '-n3', `--container-image=${ref}`, 'true')).code).toBe(0);
    expect(registry.requests().slice(again).filter((l) => l.includes('/blobs/'))).toEqual([]);
  });

  it("runs the image's entrypoint once when the step's container starts (--container-entrypoint)", async () => {
    // ep's entrypoint is `/bin/echo ep`: started with `true`, it prints "ep true".
    const r = await srun('-N1', '-n2', `--container-image=${img('ep')}`, '--container-entrypoint', 'sh', '-c', 'echo task $SLURM_PROCID');
    expect(r.code).toBe(0);
    expect(r.stdout.split('\n').filter(Boolean).sort()).toEqual(['task 0', 'task 1']);
    expect(errors(r.stderr)).toBe('ep true');
    const without = await srun('-n1', `--container-image=${img('ep')}`, 'true');
    expect(errors(without.stderr)).toBe('');
  });

  it('gives a step IPC, UTS and network namespaces of its own on each node, shared by its tasks there (--container-ipc, --container-hostname, --container-network=none) (#15)', async () => {
    const r = await srun('-N2', '-n4', `--container-image=${img('busybox')}`, '--no-container-stage', '--container-ipc', '--container-hostname=worker',
      '--container-network=none', 'sh', '-c', NAMESPACES);
    expect(errors(r.stderr)).toBe('');
    expectStepNamespaces(r.stdout, 4, 2, 'worker', String(userInfo().uid));
    const user = await srun('-n1', `--container-image=${img('busybox')}`, '--container-network=user', 'true');
    expect(user.code).not.toBe(0);
    expect(user.stderr).toMatch(/--container-network=user: a step takes none \(a loopback only\) or host/);
  });

  it("saves what the step changed on its first node as a new image (--container-save), replacing an existing file whole (#15)", async () => {
    const saved = path.join(work, 'saved.sqsh');
    writeFileSync(saved, 'an older image\n');
    const r = await srun('-N2', '-n2', `--container-image=${img('busybox')}`, '--no-container-stage', '--container-save=saved.sqsh', 'sh', '-c',
      'echo "changed on node $SLURM_NODEID" > /etc/motd; echo "$SLURM_NODEID" > /node; rm -rf /root');
    expect(errors(r.stderr)).toBe('');
    expect(r.code).toBe(0);
    const inside = await berth('exec', saved, 'sh', '-c', 'cat /etc/motd /node; ls /root 2>&1');
    expect(inside.stdout).toMatch(/^changed on node 0\n0\nls: \/root: No such file or directory\n$/);
    // The step's writable layers are gone from the nodes (they share this machine's /run).
    expect(readdirSync(runtime).filter((n) => n.endsWith('.save'))).toEqual([]);
    // A failed step saves nothing: the image stays.
    const before = statSync(saved).mtimeMs;
    const failed = await srun('-n1', `--container-image=${img('busybox')}`, '--no-container-stage', `--container-save=${saved}`, 'sh', '-c', 'echo broken > /etc/motd; exit 3');
    expect(failed.code).toBe(3);
    expect(failed.stderr).toMatch(/not saved, a task of the step failed/);
    expect(statSync(saved).mtimeMs).toBe(before);
  });

  it('refuses a --container-save PATH that is a directory before the job runs, and changes nothing there (pyxis issue 151) (#15)', async () => {
    const home = path.join(work, 'victim-home');
    mkdirSync(path.join(home, 'project'), { recursive: true });
    writeFileSync(path.join(home, 'project', 'thesis.tex'), 'years of work\n');
    mkdirSync(path.join(home, 'empty'));
    symlinkSync(path.join(home, 'project'), path.join(home, 'link'));
    const before = tree(home);
    for (const target of ['./', '.', '..', home, `${home}/`, 'empty', 'project', 'link', '~/']) {
      const r = await run('srun', ['-n1', `--container-image=${img('busybox')}`, `--container-save=${target}`, 'touch', '/ran'], { cwd: home, env: env({ HOME: home }) });
      expect(r.code, target).not.toBe(0);
      expect(r.stderr, target).toMatch(/--container-save=\S+ (names a directory|is a directory|: \S+ is not a directory)/);
      expect(r.stderr, target).not.toMatch(/srun: job \d+ (queued|has been allocated)/); // refused before any job
    }
    expect(tree(home)).toEqual(before);
    const readonly = await srun('-n1', `--container-image=${img('busybox')}`, '--container-readonly', '--container-save=ro.sqsh', 'true');
    expect(readonly.stderr).toMatch(/--container-save saves what the container changed, and --container-readonly forbids changes/);
    expect(existsSync(path.join(work, 'ro.sqsh'))).toBe(false);
  });

  it('reports a missing image in one readable message', async () => {
    const r = await srun('-n1', `--container-image=${work}/nope.sqsh`, 'true');
    // Found on the submitting side (staging reads the image there): srun itself fails, and Slurm
    // gives that failure status 1; the plugin does not choose it (README "Exit status").
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('local_user_init() failed');
    expect(r.stderr).toMatch(/berth: error: .*nope\.sqsh/);
  });

  it('follows the exit-status contract: 127 for a command not in the image, 126 for one it cannot run, --container-mount-home (#13)', async () => {
    const missing = await srun('-n1', `--container-image=${img('busybox')}`, 'no-such-tool');
    expect(missing.code).toBe(127);
    expect(missing.stderr).toContain("berth: error: 'no-such-tool' is not in the image");
    const notRunnable = await srun('-n1', `--container-image=${img('busybox')}`, '/etc/motd');
    expect(notRunnable.code).toBe(126);
    expect(notRunnable.stderr).toContain("berth: error: cannot execute '/etc/motd' in the container: Permission denied");
    const home = await srun('-n1', `--container-image=${img('busybox')}`, '--container-mount-home', 'sh', '-c', 'test -d "$HOME" && grep -q " $HOME " /proc/self/mountinfo && echo bound');
    expect(home.stdout, home.stderr).toBe('bound\n');
  });

  it('leaves nothing on the nodes after a cancelled job', async () => {
    const script = path.join(work, 'long.sh');
    writeFileSync(script, `#!/bin/bash\n#SBATCH -N2 -n2 -o /dev/null\nsrun --container-image=${img('busybox')} sleep 300\n`, { mode: 0o755 });
    const sub = await run('sbatch', ['--parsable', script], { cwd: work, env: env() });
    const job = sub.stdout.trim();
    // The job's image servers hide their environment (not dumpable): they are known by the pids
    // their directories record, not by when they started, which other test files' servers share.
    const serverPids = () => readdirSync(runtime).filter((n) => n.startsWith('img-') && new RegExp(`-slurm-${job}(\\.|$)`).test(n))
      .map((n) => { try { return readFileSync(path.join(runtime, n, 'pid'), 'utf8').trim(); } catch { return ''; } }).filter(Boolean);
    const steps = () => stepDirs().filter((d) => d.startsWith(`step-${job}.`) && !d.endsWith('.lock'));
    expect(await until(() => steps().length === 2 && serverPids().length > 0, 30_000)).toBe(true);
    const servers = serverPids();
    expect((await run('scancel', [job])).code).toBe(0);
    const ofJob = (n: string) => n.includes(`-${job}.`) || n.startsWith(`plan-${job}-`) || new RegExp(`-slurm-${job}(\\.|$)`).test(n);
    // Killed with the job's cgroup, a server may wait as a zombie for an init that never reaps.
    const gone = (pid: string) => {
      try {
        return /^\d+ \(.*\) [ZX]/s.test(readFileSync(`/proc/${pid}/stat`, 'latin1'));
      } catch {
        return true; // no such process
      }
    };
    await until(() => !readdirSync(runtime).some(ofJob) && berthProcesses({ id: job }).length === 0 && servers.every(gone), 30_000);
    expect(readdirSync(runtime).filter(ofJob)).toEqual([]);
    expect(berthProcesses({ id: job })).toEqual([]);
    expect(servers.filter((pid) => !gone(pid))).toEqual([]);
  });
});

describe('berth srun (no plugin needed)', () => {
  it('runs each task in the step container of its node, with exit codes', async () => {
    const r = await run(process.execPath, [BERTH, 'srun', '-N2', '-n4', '--image', img('busybox'), '--', 'sh', '-c',
      'echo "$SLURM_PROCID $(readlink /proc/self/ns/mnt) $(cat /etc/motd)"'], { cwd: work, env: env() });
    expect(r.code).toBe(0);
    const lines = r.stdout.trim().split('\n').sort();
    expect(lines.map((l) => l.split(' ')[0])).toEqual(['0', '1', '2', '3']);
    expect(new Set(lines.map((l) => l.split(' ')[1])).size).toBe(2); // one container per node
    const failed = await run(process.execPath, [BERTH, 'srun', '-n1', '--image', img('busybox'), '--', 'sh', '-c', 'exit 5'], { cwd: work, env: env() });
    expect(failed.code).toBe(5);
  });

  it('follows the exit-status contract: 125 for its own failures, 126 and 127 for the command (#13)', async () => {
    const wrapper = (...args: string[]) => run(BERTH, ['srun', '-n1', ...args], { cwd: work, env: env() });
    expect((await wrapper('--image', img('busybox'), '--', 'no-such-tool')).code).toBe(127);
    expect((await wrapper('--image', img('busybox'), '--', '/etc/motd')).code).toBe(126);
    const bad = await wrapper('--image', img('busybox'), '--rm', '--', 'true');
    expect(bad.code).toBe(125);
    expect(bad.stderr).toMatch(/^berth: error: --rm is Docker's and has no berth meaning\nberth: hint: .*leave out --rm\n$/);
  });

  it("takes Docker's -u: every task is that uid and gid inside, without capabilities (#13)", async () => {
    const r = await run(BERTH, ['srun', '-N2', '-n2', '--image', img('busybox'), '-u', '4321:99', '--', 'sh', '-c', 'echo "$(id -u) $(id -g) $(grep CapEff /proc/self/status | tr -d "\t")"'], { cwd: work, env: env() });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toBe('4321 99 CapEff:0000000000000000\n'.repeat(2));
  });

  it('takes --ipc, --hostname and --network none per step, --fakeroot too; refuses --network user with the reason (#15)', async () => {
    const r = await run(BERTH, ['srun', '-N2', '-n4', '--image', img('busybox'), '--fakeroot', '--ipc', '--hostname', 'svc', '--network', 'none', '--', 'sh', '-c', NAMESPACES],
      { cwd: work, env: env() });
    expect(r.code, r.stderr).toBe(0);
    expectStepNamespaces(r.stdout, 4, 2, 'svc', '0');
    const user = await run(BERTH, ['srun', '-n1', '--image', img('busybox'), '-p', '8080:80', '--', 'true'], { cwd: work, env: env() });
    expect(user.code).toBe(125);
    expect(user.stderr).toMatch(/--network user and -p are not offered for Slurm steps: each node would need its own pasta/);
    const uts = await run(BERTH, ['srun', '-n1', '--image', img('busybox'), '--uts', '--', 'true'], { cwd: work, env: env() });
    expect([uts.code, uts.stderr]).toEqual([125, expect.stringMatching(/--uts needs --hostname NAME in a Slurm step/)]);
  });

  it('passes berth options on, such as --mpi', async () => {
    const r = await run(process.execPath, [BERTH, 'srun', '-n2', '--mpi=pmi2', '--image', img('mpich'), '--mpi', '--', 'mpi_hello'], { cwd: work, env: env() });
    expect(errors(r.stderr)).toBe('');
    expect(r.stdout.trim().split('\n').map((l) => l.split(' lib ')[0]).sort()).toEqual(['rank 0 of 2', 'rank 1 of 2']);
    expect(r.stdout).toContain('/.berth/host/lib/libmpich.so.12');
  });
});
