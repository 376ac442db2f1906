// Instances under a real Slurm (test/slurm/cluster, as slurm.test.ts uses it): one started inside
// a job step ends with that step, and leaves nothing behind. Under proctrack/linuxproc, which
// follows processes only by their parents (the instance's monitor is nobody's child), its
// monitor watches the slurmstepd it was started under; under proctrack/cgroup (the cluster's
// default) the step's end kills it whole, and the job's epilog clears what it left.
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { BERTH, ROOT, cleanup, run, tempDir } from '../helpers.js';

let work: string;
const runtime = () => path.join(work, 'rt');
const env = () => ({ ...process.env, BERTH_RUNTIME_DIR: runtime(), BERTH_IMAGE_LINGER: '0' });

interface Listed { name: string; status: string; pid: number; job: string }

function alive(pid: number): boolean {
  try {
    return !/^\d+ \(.*\) Z/s.test(readFileSync(`/proc/${pid}/stat`, 'latin1'));
  } catch {
    return false;
  }
}

async function until(check: () => boolean, ms: number): Promise<boolean> {
  for (const end = Date.now() + ms; Date.now() < end; await new Promise((r) => setTimeout(r, 100))) if (check()) return true;
  return check();
}

const empty = () => !existsSync(runtime()) || readdirSync(runtime()).length === 0;

beforeAll(async () => {
  const up = spawnSync('sinfo', ['-h', '-o', '%D %T'], { encoding: 'utf8' });
  if (up.status !== 0 || !process.env.SLURM_CONF) {
    throw new Error(`no test Slurm cluster (SLURM_CONF=${process.env.SLURM_CONF}): start it as root with test/slurm/cluster start, as test/run does\n${up.stderr}`);
  }
  work = tempDir('slurm-instance');
  const made = await run(path.join(ROOT, 'test/fixtures/make-instance-images.sh'), [work]);
  if (made.code !== 0) throw new Error(made.stderr);
}, 180_000);
afterAll(() => cleanup(work));

it('an instance started in a step is running during it, and ends with it, leaving nothing', async () => {
  const script = `set -e
${process.execPath} ${BERTH} instance start --writable-tmpfs ${work}/daemon.sqsh in-job
${process.execPath} ${BERTH} instance list --json
${process.execPath} ${BERTH} exec instance://in-job cat /written-by-instance`;
  const r = await run('srun', ['-n1', '-N1', 'bash', '-c', script], { cwd: work, env: env() });
  expect(r.code).toBe(0);
  const [listed, ...rest] = JSON.parse(r.stdout.slice(0, r.stdout.lastIndexOf(']') + 1)) as Listed[];
  expect(rest).toEqual([]);
  expect(listed).toMatchObject({ name: 'in-job', status: 'running' });
  expect(listed!.job).toMatch(/^\d+$/);
  expect(r.stdout.endsWith(']\n2\n')).toBe(true); // joined inside the job: the instance's command is its PID 2
  // The step is over: its instance goes, and with it its directory and its image server.
  expect(await until(() => !alive(listed!.pid) && empty(), 20_000)).toBe(true);
});

it('an sbatch job\'s instance ends with the job', async () => {
  const out = path.join(work, 'job.out');
  writeFileSync(path.join(work, 'job.sh'), `#!/bin/bash
${process.execPath} ${BERTH} instance start ${work}/hold.sqsh batch
${process.execPath} ${BERTH} instance list --json
`);
  const r = await run('sbatch', ['--wait', '-N1', '-o', out, '-e', `${out}.err`, path.join(work, 'job.sh')], { cwd: work, env: env() });
  expect(r.code).toBe(0);
  const [listed] = JSON.parse(readFileSync(out, 'utf8')) as Listed[];
  expect(listed).toMatchObject({ name: 'batch', status: 'running' });
  expect(await until(() => !alive(listed!.pid) && empty(), 20_000)).toBe(true);
});
