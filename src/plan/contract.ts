// What berth's TypeScript and its C (native/helper, slurm-plugins) must agree on, written once
// here and given to C as native/contract.h, which build.mjs regenerates from this module
// (test/unit/contract.test.ts fails when the committed header is not what this makes): the
// helper's exit statuses, the PATH a plan without one gets, what berth hands its launcher, and the
// Slurm variables a step's plan reads, which the plugin keeps in the key of its cached step plans.
import { EXIT } from '../errors.js';

export const DEFAULT_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

/**
 * The Slurm variables a step's plan depends on (GPUs granted, src/host/gpu.ts `gpuGrant`); every
 * other SLURM_* differs from step to step without changing the plan. A step plan names them in
 * `input` lines, and the plugin refuses a plan naming one it does not key by, so a new one can
 * never make cached step plans stale without a word.
 */
export const STEP_PLAN_INPUTS = ['SLURM_JOB_ID', 'SLURM_STEP_GPUS', 'SLURM_JOB_GPUS'] as const;

/**
 * What berth writes first on its launcher's pipe (src/runtime/launch.ts, native/helper/launch.c):
 * which of the helper's entry points carries out the plan that follows.
 */
export const HANDOVER = { container: 'berth-launch container\n', instanceJoin: 'berth-launch instance-join\n' } as const;

const cString = (s: string) => JSON.stringify(s); // ASCII: JSON's escapes are C's

/** native/contract.h, as build.mjs writes it. */
export function contractHeader(): string {
  return `/* Generated from src/plan/contract.ts by build.mjs (npm run build): do not edit. What berth's
 * TypeScript and C agree on. Exit statuses of berth-helper beyond the container's own, docker
 * run's convention, which batch scripts already know (src/errors.ts EXIT). */
#ifndef BERTH_CONTRACT_H
#define BERTH_CONTRACT_H

#define BERTH_EXIT_SETUP ${EXIT.berth} /* the container could not be set up; the message says why */
#define BERTH_EXIT_CANNOT_EXEC ${EXIT.cannotExec} /* the command exists but could not be executed */
#define BERTH_EXIT_NOT_FOUND ${EXIT.notFound} /* the command is not in the image */

/* The PATH of a plan that sets none (src/plan/build.ts gives every plan it makes this one). */
#define BERTH_DEFAULT_PATH ${cString(DEFAULT_PATH)}

/* What berth writes first on the launcher's pipe (berth-helper --launch): the plan's kind. */
#define BERTH_HANDOVER_CONTAINER ${cString(HANDOVER.container)}
#define BERTH_HANDOVER_INSTANCE_JOIN ${cString(HANDOVER.instanceJoin)}

/* The Slurm variables a step's plan reads (its \`input\` lines): kept in the plugin's plan key. */
#define BERTH_STEP_PLAN_INPUTS { ${STEP_PLAN_INPUTS.map(cString).join(', ')} }

#endif
`;
}
