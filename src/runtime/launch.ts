// berth started by its launcher (berth-helper --launch, native/helper/launch.c: what the
// `berth` command runs): a container that berth need not wait for is handed over to the
// launcher as its plan, and this process exits; the launcher, the caller's own child, then
// becomes the container. So no Node process stays above a job's command.
import { closeSync, fstatSync, openSync, writeSync } from 'node:fs';
import { serializePlan } from '../plan/serialize.js';
import type { LaunchPlan } from '../plan/types.js';

let channel: number | undefined;

/**
 * Takes the launcher's pipe (BERTH_LAUNCH_FD), once, as berth starts. It is reopened
 * close-on-exec and the inherited descriptor closed, so that nothing berth starts (a build's
 * containers, an image server) holds it: the launcher reads it to its end. Anything but a pipe
 * is not a launcher's, and ignored.
 */
export function takeLaunchChannel(): void {
  const given = process.env.BERTH_LAUNCH_FD;
  delete process.env.BERTH_LAUNCH_FD;
  if (!given || !/^\d{1,9}$/.test(given)) return;
  const fd = Number(given);
  try {
    if (fstatSync(fd).isFIFO()) channel = openSync(`/proc/self/fd/${fd}`, 'w');
  } catch {
    channel = undefined; // berth then starts berth-helper itself and waits for it, as without a launcher
  }
  try { closeSync(fd); } catch { /* not open: nothing to close */ }
}

/** What the launcher reads first: which of its entry points carries the plan out. */
export type Handover = 'container' | 'instance-join';

/** Hands the plan to the launcher; false when berth was not started by one (`node dist/berth.cjs`). */
export function handOver(plan: LaunchPlan, kind: Handover): boolean {
  if (channel === undefined) return false;
  const text = Buffer.from(`berth-launch ${kind}\n${serializePlan(plan)}`);
  for (let done = 0; done < text.length;) done += writeSync(channel, text, done);
  closeSync(channel);
  channel = undefined;
  return true;
}
