/* Generated from src/plan/contract.ts by build.mjs (npm run build): do not edit. What berth's
 * TypeScript and C agree on. Exit statuses of berth-helper beyond the container's own, docker
 * run's convention, which batch scripts already know (src/errors.ts EXIT). */
#ifndef BERTH_CONTRACT_H
#define BERTH_CONTRACT_H

#define BERTH_EXIT_SETUP 125 /* the container could not be set up; the message says why */
#define BERTH_EXIT_CANNOT_EXEC 126 /* the command exists but could not be executed */
#define BERTH_EXIT_NOT_FOUND 127 /* the command is not in the image */

/* The PATH of a plan that sets none (src/plan/build.ts gives every plan it makes this one). */
#define BERTH_DEFAULT_PATH "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

/* What berth writes first on the launcher's pipe (berth-helper --launch): the plan's kind. */
#define BERTH_HANDOVER_CONTAINER "berth-launch container\n"
#define BERTH_HANDOVER_INSTANCE_JOIN "berth-launch instance-join\n"

/* The Slurm variables a step's plan reads (its `input` lines): kept in the plugin's plan key. */
#define BERTH_STEP_PLAN_INPUTS { "SLURM_JOB_ID", "SLURM_STEP_GPUS", "SLURM_JOB_GPUS" }

#endif
