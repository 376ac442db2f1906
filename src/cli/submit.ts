// berth submit [USER@]HOST --image IMAGE.sqsh|docker://REF [SBATCH OPTIONS] -- COMMAND [ARGS...]
// Pushes the image (or leaves a registry reference for the cluster to pull), submits a batch
// job that runs `berth srun` with it, and prints the job id; --wait follows the job to its
// end, streams its output, and exits with its exit code.
import { BerthError, EXIT } from '../errors.js';
import { connect, exec, shellQuote, type Connection } from '../ssh/connect.js';
import type { CommandResult } from './options.js';
import { progressMode } from './progress.js';
import { pushTo } from './push-progress.js';

interface SubmitArgs {
  host: string;
  image: string;
  sbatch: string[];
  command: string[];
  wait: boolean;
  acceptNewHostKey: boolean;
  /** berth on the cluster, where it is not on a login shell's PATH. */
  remoteBerth: string;
}

export function splitSubmitArgs(args: string[]): SubmitArgs {
  const [host, ...rest] = args;
  const dashes = rest.indexOf('--');
  const before = dashes === -1 ? rest : rest.slice(0, dashes);
  const command = dashes === -1 ? [] : rest.slice(dashes + 1);
  if (!host || host.startsWith('-')) throw new BerthError('USAGE', 'berth submit needs a host first', 'e.g. berth submit cluster --image app.sqsh -N2 -- ./run.sh');
  if (command.length === 0) throw new BerthError('USAGE', 'berth submit needs a command after --', 'e.g. berth submit cluster --image app.sqsh -- python3 train.py');
  const sbatch: string[] = [];
  let image: string | undefined;
  let wait = false;
  let acceptNewHostKey = false;
  let remoteBerth = 'berth';
  for (let i = 0; i < before.length; i++) {
    const a = before[i]!;
    if (a === '--image') image = before[++i];
    else if (a.startsWith('--image=')) image = a.slice(8);
    else if (a === '--wait') wait = true;
    else if (a === '--accept-new-host-key') acceptNewHostKey = true;
    else if (a === '--remote-berth') remoteBerth = before[++i] ?? '';
    else if (a.startsWith('--remote-berth=')) remoteBerth = a.slice(15);
    else sbatch.push(a);
  }
  if (!image) throw new BerthError('USAGE', 'berth submit needs --image IMAGE.sqsh or --image docker://REF', 'e.g. berth submit cluster --image app.sqsh -- ./run.sh');
  return { host, image, sbatch, command, wait, acceptNewHostKey, remoteBerth };
}

const JOB_DIR = '.berth/jobs';

/** The job's state and exit code as the controller tells them; undefined while it runs. */
async function jobEnd(conn: Connection, id: string): Promise<{ state: string; code: number } | undefined> {
  const r = await exec(conn.client, `scontrol show job -o ${shellQuote(id)}`);
  const state = /JobState=(\S+)/.exec(r.stdout)?.[1];
  if (!state) throw new BerthError('REMOTE_FAILED', `cannot follow job ${id}: ${r.stderr.trim() || 'scontrol knows no such job'}`, 'see sacct on the cluster');
  if (['PENDING', 'RUNNING', 'CONFIGURING', 'COMPLETING', 'SUSPENDED', 'REQUEUED', 'RESIZING'].includes(state)) return undefined;
  const [code, signal] = (/ExitCode=(\d+):(\d+)/.exec(r.stdout)?.slice(1) ?? ['1', '0']).map(Number);
  return { state, code: signal ? 128 + signal! : code! };
}

export async function submitCommand(args: string[]): Promise<CommandResult> {
  const a = splitSubmitArgs(args);
  const conn = await connect(a.host, { acceptNewHostKey: a.acceptNewHostKey });
  try {
    const which = await exec(conn.client, `command -v ${shellQuote(a.remoteBerth)} && command -v sbatch`);
    if (which.code !== 0) {
      const missing = which.stdout.trim() ? 'sbatch (Slurm)' : a.remoteBerth;
      throw new BerthError('REMOTE_FAILED', `${missing} is not installed on ${conn.target.alias} (not on a login shell's PATH there)`,
        missing === 'sbatch (Slurm)' ? 'submit to a Slurm login node' : 'install berth on the cluster (see the README), load its module in ~/.profile, or name it with --remote-berth PATH');
    }
    let image = a.image;
    if (!image.startsWith('docker://')) {
      const home = (await exec(conn.client, 'pwd')).stdout.trim();
      image = `${home}/${(await pushTo(conn, image, 'berth-images/', progressMode({}))).remotePath}`;
    }
    const given = a.sbatch.findIndex((o) => /^(-o|--output)(=|$)/.test(o));
    const hasOutput = given !== -1;
    const outputOf = (id: string) => (hasOutput
      ? (a.sbatch[given]!.includes('=') ? a.sbatch[given]!.split('=').slice(1).join('=') : a.sbatch[given + 1] ?? '')
      : `${JOB_DIR}/%j.out`).replace(/%j/g, id);
    const script = `#!/bin/sh\nexec ${shellQuote(a.remoteBerth)} srun --image ${shellQuote(image)} -- ${a.command.map(shellQuote).join(' ')}\n`;
    const sbatch = ['sbatch', '--parsable', ...(hasOutput ? [] : [`--output=${JOB_DIR}/%j.out`]), ...a.sbatch].map(shellQuote).join(' ');
    const submitted = await exec(conn.client, `mkdir -p ${JOB_DIR} && ${sbatch}`, undefined, script);
    const id = submitted.stdout.trim().split(';')[0];
    if (submitted.code !== 0 || !id || !/^\d+$/.test(id)) {
      throw new BerthError('REMOTE_FAILED', `sbatch on ${conn.target.alias} refused the job: ${submitted.stderr.trim() || submitted.stdout.trim()}`, 'check the sbatch options');
    }
    if (!a.wait) return `${id}`;
    process.stderr.write(`berth: submitted job ${id} on ${conn.target.alias}; following it\n`);
    // The output as it grows, until the job has ended and the last lines are in.
    let tailStream: { close(): void } | undefined;
    const tail = new Promise<void>((resolve) => {
      conn.client.exec(`exec tail -n +1 -F ${shellQuote(outputOf(id))} 2>/dev/null`, (err, stream) => {
        if (err) return resolve();
        stream.on('data', (d: Buffer) => process.stdout.write(d));
        stream.on('close', () => resolve());
        tailStream = stream;
      });
    });
    let end: { state: string; code: number } | undefined;
    while (!(end = await jobEnd(conn, id))) await new Promise((r) => setTimeout(r, 1000));
    await new Promise((r) => setTimeout(r, 1500));
    tailStream?.close();
    await Promise.race([tail, new Promise((r) => setTimeout(r, 2000))]);
    if (end.state !== 'COMPLETED') process.stderr.write(`berth: job ${id} ended ${end.state}, exit code ${end.code}\n`);
    return { exitCode: end.code === 0 ? EXIT.ok : end.code };
  } finally {
    conn.close();
  }
}
