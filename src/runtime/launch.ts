// berth started by its launcher (berth-helper --launch, native/helper/launch.c: what the
// `berth` command runs): a container that berth need not wait for is handed over to the
// launcher as its plan, and this process exits; the launcher, the caller's own child, then
// becomes the container. So no Node process stays above a job's command.
import { closeSync, fstatSync, openSync, writeSync } from 'node:fs';
import { HANDOVER } from '../plan/contract.js';
import { serializePlan } from '../plan/serialize.js';
import type { LaunchPlan } from '../plan/types.js';

let channel: number | undefined;

/**
 * Takes the launcher's pipe (BERTH_LAUNCH_FD), once, as berth starts, where the launcher is
 * this process's parent (BERTH_LAUNCH_PID): a variable inherited from elsewhere is ignored.
 * The pipe is reopened close-on-exec and the inherited descriptor closed, so that nothing
 * berth starts (a build's containers, an image server) holds it: the launcher reads it to its
 * end. Where BERTH_HELPER names another helper, nothing is taken: berth starts that one and
 * waits, as without a launcher.
 */
export function takeLaunchChannel(): void {
  const given = process.env.BERTH_LAUNCH_FD;
  const launcher = process.env.BERTH_LAUNCH_PID;
  delete process.env.BERTH_LAUNCH_FD;
  delete process.env.BERTH_LAUNCH_PID;
  if (!given || !/^\d{1,9}$/.test(given) || Number(given) < 3 || launcher !== String(process.ppid)) return;
  const fd = Number(given);
  try {
    if (!fstatSync(fd).isFIFO()) return;
  } catch {
    return; // not open
  }
  try {
    if (!process.env.BERTH_HELPER) channel = openSync(`/proc/self/fd/${fd}`, 'w');
  } catch {
    channel = undefined; // berth then starts berth-helper itself and waits for it, as without a launcher
  }
  closeSync(fd);
}

/** Hands the plan to the launcher; false when berth was not started by one (`node dist/berth.cjs`). */
export function handOver(plan: LaunchPlan, kind: keyof typeof HANDOVER): boolean {
  if (channel === undefined) return false;
  const text = Buffer.from(HANDOVER[kind] + serializePlan(plan));
  for (let done = 0; done < text.length;) done += writeSync(channel, text, done);
  closeSync(channel);
  channel = undefined;
  return true;
}
