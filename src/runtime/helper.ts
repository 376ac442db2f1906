// Starts berth-helper with a plan and waits for the container: its exit status becomes
// berth's, and signals sent to berth reach the container.
import { spawn } from 'node:child_process';
import { constants as fsConstants } from 'node:fs';
import { constants } from 'node:os';
import { isatty } from 'node:tty';
import type { Duplex } from 'node:stream';
import { BerthError, EXIT } from '../errors.js';
import { serializePlan } from '../plan/serialize.js';
import type { LaunchPlan } from '../plan/types.js';
import { nativeFile } from './native.js';

/** berth-helper: BERTH_HELPER, else native/build/ of the checkout or package this file is in. */
export function helperPath(): string {
  if (process.env.BERTH_HELPER) return process.env.BERTH_HELPER;
  const found = nativeFile('berth-helper', fsConstants.X_OK);
  if (found) return found;
  throw new BerthError('HELPER_MISSING', 'berth-helper is not built', 'build it: make -C native (the README setup does), or set BERTH_HELPER');
}

/** Signals passed on. On a terminal, ^C and ^\ reach the container directly (same process group). */
const FORWARDED: NodeJS.Signals[] = ['SIGTERM', 'SIGHUP', 'SIGUSR1', 'SIGUSR2', 'SIGINT', 'SIGQUIT'];

/** `helperArgs`: the helper's mode (--instance-join), none for a container of its own. */
export function runPlan(plan: LaunchPlan, helperArgs: string[] = []): Promise<number> {
  const helper = helperPath();
  return new Promise((resolve, reject) => {
    const child = spawn(helper, helperArgs, { stdio: ['inherit', 'inherit', 'inherit', 'pipe'] });
    const planPipe = child.stdio[3] as Duplex;
    planPipe.on('error', () => {}); // the helper's own exit status tells what went wrong
    planPipe.end(serializePlan(plan));
    // The pipe is a socket, and stays open: the image server's guard writes here when it had to
    // stop the container because the server ended under it (native/helper/guard.c), after
    // telling the container's stderr why. That is a setup failure, not the command's status.
    let serverEnded = false;
    planPipe.on('data', (d: Buffer) => { if (d.toString().includes('image-server-ended')) serverEnded = true; });
    // isatty, not process.stdin: that would make the stdin the container shares non-blocking.
    const fromTerminal = isatty(0);
    const forward = (signal: NodeJS.Signals) => {
      if (fromTerminal && (signal === 'SIGINT' || signal === 'SIGQUIT')) return;
      child.kill(signal);
    };
    for (const s of FORWARDED) process.on(s, forward);
    child.on('error', (e) => reject(new BerthError('HELPER_MISSING', `cannot start ${helper}: ${e.message}`, 'rebuild it: make -C native')));
    child.on('close', (code, signal) => {
      for (const s of FORWARDED) process.removeListener(s, forward);
      resolve(serverEnded ? EXIT.berth : code ?? 128 + (signal ? constants.signals[signal] : 0));
    });
  });
}

/**
 * Runs a plan whose command prints something berth needs (a step's environment), and returns
 * its stdout; stderr stays the user's. Not a job's container: no signals are passed on.
 */
export function captureFromContainer(plan: LaunchPlan): Promise<{ code: number; stdout: Buffer }> {
  const helper = helperPath();
  return new Promise((resolve, reject) => {
    const child = spawn(helper, [], { stdio: ['ignore', 'pipe', 'inherit', 'pipe'] });
    const planPipe = child.stdio[3] as Duplex;
    planPipe.on('error', () => {});
    planPipe.end(serializePlan(plan));
    const out: Buffer[] = [];
    child.stdout!.on('data', (d: Buffer) => out.push(d));
    child.on('error', (e) => reject(new BerthError('HELPER_MISSING', `cannot start ${helper}: ${e.message}`, 'rebuild it: make -C native')));
    child.on('close', (code, signal) => resolve({ code: code ?? 128 + (signal ? constants.signals[signal] : 0), stdout: Buffer.concat(out) }));
  });
}
