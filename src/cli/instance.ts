// berth instance start | stop | list: named, long-running containers of the user's on this node
// (Apptainer's instances). The plan is made here (plan/prepare.ts); berth-helper starts, proves,
// stops and lists them (runtime/instances.ts, native/helper/instance.c) and prints its own
// errors, whose exit status berth passes on. `berth exec instance://NAME` joins one (run.ts).
import { constants } from 'node:os';
import { BerthError } from '../errors.js';
import { hostFacts } from '../host/user.js';
import { checkInstanceName } from '../plan/instance.js';
import { prepareInstancePlan, type RunFlags } from '../plan/prepare.js';
import { formatPlan } from '../plan/serialize.js';
import { listInstances, startInstance, stopInstance, type Instance } from '../runtime/instances.js';
import type { CommandResult } from './options.js';
import { pullDisplay } from './pull-progress.js';
import { printable } from './terminal.js';

export interface StartFlags extends RunFlags {
  dryRun?: boolean;
  planFormat?: string;
}

export async function instanceStartCommand(image: string, name: string, args: string[], flags: StartFlags): Promise<CommandResult> {
  if (args[0] === '--') args = args.slice(1);
  const plan = await prepareInstancePlan(name, image, args, flags, pullDisplay('quiet'));
  if (flags.dryRun) return formatPlan(plan, flags.planFormat);
  const code = await startInstance(plan);
  if (code !== 0) return { exitCode: code };
  const listed = listInstances(plan.runtimeDir);
  const started = 'instances' in listed ? listed.instances.find((i) => i.name === name) : undefined;
  // stdout stays empty (as for apptainer instance start); what happened is a log line.
  if (started) process.stderr.write(`berth: instance ${name} started (pid ${started.pid}); its output goes to ${printable(started.log)}\n`);
  return { exitCode: 0 };
}

export interface StopFlags {
  all?: boolean;
  signal?: string;
  timeout?: string;
  force?: boolean;
}

/** A signal as kill(1) takes it: TERM, SIGTERM or 15. */
export function signalNumber(value: string): number {
  const byName = (constants.signals as Record<string, number>)[value.toUpperCase().replace(/^(SIG)?/, 'SIG')];
  const n = /^\d+$/.test(value) ? Number(value) : byName;
  if (!n || n >= 65) throw new BerthError('USAGE', `--signal ${value}: not a signal`, 'e.g. --signal TERM, --signal INT or --signal 2');
  return n;
}

function seconds(value: string | undefined): number {
  if (value === undefined) return 10;
  if (!/^\d+$/.test(value) || Number(value) > 86400) throw new BerthError('USAGE', `--timeout ${value}: not a number of seconds`, 'e.g. --timeout 30 (0 to 86400)');
  return Number(value);
}

export function instanceStopCommand(name: string | undefined, flags: StopFlags): CommandResult {
  if (Boolean(flags.all) === (name !== undefined)) {
    throw new BerthError('USAGE', flags.all ? 'give an instance name or --all, not both' : 'which instance? give its name, or --all', 'berth instance list shows yours');
  }
  const signal = flags.force ? constants.signals.SIGKILL : signalNumber(flags.signal ?? 'TERM');
  const timeout = seconds(flags.timeout);
  const runtime = hostFacts().runtimeDir;
  let names: string[];
  if (name !== undefined) {
    checkInstanceName(name);
    names = [name];
  } else {
    const listed = listInstances(runtime);
    if ('exitCode' in listed) return listed;
    names = listed.instances.map((i) => i.name).sort();
  }
  let failed = 0;
  for (const n of names) {
    const code = stopInstance(runtime, n, signal, timeout);
    if (code === 0) process.stderr.write(`berth: instance ${n} stopped\n`);
    else failed = code;
  }
  return { exitCode: failed };
}

function describe(i: Instance): string {
  if (i.status === 'running') return 'running';
  if (i.status === 'starting') return 'starting';
  return i.exitStatus === null ? 'exited' : `exited (${i.exitStatus})`;
}

/** When it started; unknown while it is starting (its state is written once its command runs). */
function when(i: Instance): string | undefined {
  return i.status === 'starting' ? undefined : new Date(i.started * 1000).toISOString();
}

export function instanceListCommand(flags: { json?: boolean }): CommandResult {
  const listed = listInstances(hostFacts().runtimeDir);
  if ('exitCode' in listed) return listed;
  const instances = [...listed.instances].sort((a, b) => a.name.localeCompare(b.name));
  if (flags.json) {
    return { out: JSON.stringify(instances.map((i) => ({ ...i, started: when(i) ?? null })), null, 2), exitCode: 0 };
  }
  if (instances.length === 0) return { out: 'no instances on this node (berth instance start IMAGE NAME starts one)', exitCode: 0 };
  const header = ['NAME', 'PID', 'STATUS', 'STARTED', 'JOB', 'IMAGE', 'LOG'];
  const rows = [header, ...instances.map((i) => [i.name, String(i.pid), describe(i), when(i)?.replace(/\.\d+Z$/, 'Z') ?? '-', i.job || '-', i.image || '-', i.log])];
  const widths = header.map((_, c) => Math.max(...rows.map((r) => (r[c] ?? '').length)));
  const line = (r: string[]) => r.map((cell, c) => (c < r.length - 1 ? cell.padEnd(widths[c] ?? 0) : cell)).join('  ');
  return { out: rows.map((r) => printable(line(r))).join('\n'), exitCode: 0 };
}
