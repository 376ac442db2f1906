// The user's instances on this node, through berth-helper: it alone reads and writes their
// state (RUNTIME/instances, native/helper/instance_state.c), proves their processes before it
// signals or joins them, and prints its own errors; berth passes its exit status on.
import { spawn, spawnSync } from 'node:child_process';
import type { Duplex } from 'node:stream';
import { BerthError } from '../errors.js';
import { serializePlan } from '../plan/serialize.js';
import type { LaunchPlan } from '../plan/types.js';
import { helperPath } from './helper.js';

export interface Instance {
  name: string;
  /** 'starting' until its command runs; 'exited' when it ended on its own (stop removes it). */
  status: 'running' | 'exited' | 'starting';
  /** The instance's command, as this node sees it. */
  pid: number;
  /** Seconds since the epoch. */
  started: number;
  exitStatus: number | null;
  /** SLURM_JOB_ID where it was started inside a job, else ''. */
  job: string;
  image: string;
  log: string;
}

/** The instances, or the helper's exit status when it failed (it has said why on stderr). */
export type Listed = { instances: Instance[] } | { exitCode: number };

function exitOf(status: number | null, signal: NodeJS.Signals | null): number {
  return status ?? (signal ? 128 : 125);
}

export function listInstances(runtimeDir: string): Listed {
  const r = spawnSync(helperPath(), ['--instance-list', runtimeDir], { stdio: ['ignore', 'pipe', 'inherit'], encoding: 'utf8' });
  if (r.error) throw new BerthError('HELPER_MISSING', `cannot start ${helperPath()}: ${r.error.message}`, 'rebuild it: make -C native');
  if (r.status !== 0) return { exitCode: exitOf(r.status, r.signal) };
  return { instances: r.stdout.split('\n').filter(Boolean).map((line) => JSON.parse(line) as Instance) };
}

/** Starts the instance the plan describes; resolves when its command runs (0) or failed (the helper's status). */
export function startInstance(plan: LaunchPlan): Promise<number> {
  const helper = helperPath();
  return new Promise((resolve, reject) => {
    const child = spawn(helper, ['--instance-start'], { stdio: ['ignore', 'inherit', 'inherit', 'pipe'] });
    const planPipe = child.stdio[3] as Duplex;
    planPipe.on('error', () => {}); // the helper's exit status tells what went wrong
    planPipe.end(serializePlan(plan));
    child.on('error', (e) => reject(new BerthError('HELPER_MISSING', `cannot start ${helper}: ${e.message}`, 'rebuild it: make -C native')));
    child.on('close', (code, signal) => resolve(exitOf(code, signal)));
  });
}

/** Stops (or, when it has ended, removes) the instance: `signal`, then SIGKILL after `timeout` seconds. */
export function stopInstance(runtimeDir: string, name: string, signal: number, timeout: number): number {
  const r = spawnSync(helperPath(), ['--instance-stop', runtimeDir, name, String(signal), String(timeout)], { stdio: ['ignore', 'inherit', 'inherit'] });
  if (r.error) throw new BerthError('HELPER_MISSING', `cannot start ${helperPath()}: ${r.error.message}`, 'rebuild it: make -C native');
  return exitOf(r.status, r.signal);
}
