/* berth's SPANK plugin: `srun --container-image=IMAGE ...` (or `#SBATCH --container-image`)
 * runs every task of a step in a berth container. The options are pyxis's, so job scripts
 * written for pyxis run unchanged, plus berth's own --container-mpi, --container-gpus and
 * --container-rdma; each also reads a BERTH_CONTAINER_* variable, and the command line wins.
 *
 * The plugin stays thin. On each node, the first task of a step asks berth for the step's plan
 * (`berth plan --slurm-step`: the one Node process of the step on that node) and has
 * berth-helper start the step's container (--step-server); then every task joins that
 * container's user and mount namespaces, applies the plan's environment changes to its own
 * environment and lets slurmstepd exec the command inside: 64 ranks on a node cost one
 * container, and a task's own start costs a connect and two setns calls. A docker:// tag is
 * pinned to a digest once, at submission (srun or sbatch), so every node runs the same image.
 * Built against the installed Slurm's <slurm/spank.h>.
 *
 * Its files, one per concern; this header holds what they share:
 *   options.c  the options, their BERTH_CONTAINER_* variables, plugstack.conf, slurm_spank_init
 *   submit.c   srun/sbatch on the submitting node: refusals, pinning a tag, staging with sbcast
 *   task.c     each task on a node: its runtime directory, the step's plan, its container, joining it
 *   save.c     --container-save: the step's changes on its first node, as an image
 *   adopt.c    a step's end: the job's servers it started move to the job's cgroup
 *   epilog.c   the job's end on each node: what the job left
 *   process.c  running berth, the helper and sbcast */
#ifndef BERTH_SPANK_H
#define BERTH_SPANK_H

#include <limits.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <slurm/slurm.h>
#include <slurm/spank.h>

#include "../native/common/plantext.h"
#include "../native/common/trusted.h"
#include "../native/contract.h"

/* Named containers live until the job ends (the job epilog stops them). */
#define NAMED_LINGER "31536000"

/* What the user asked for: a string, or a switch that is -1 (not given), 0 or 1. */
struct request {
	char *image, *mounts, *workdir, *env, *name, *save, *gpus, *hostname, *network;
	int writable, home, remap, entrypoint, mpi, rdma, stage, ipc;
};
extern struct request req;

/* A task of a container step: who and where (task.c). */
struct task {
	uint32_t job, step;
	uid_t uid;
	gid_t gid;
	char runtime[1100];
};

/* plugstack.conf arguments. */
struct plugstack {
	char berth[1024], helper[1024], runtime[1024], stage_dir[1024];
	int execute_entrypoint, sbatch_support;
};
extern struct plugstack conf;

/* options.c */
int parse_args(int ac, char **av);
/* 1/true/yes/y -> 1, 0/false/no/n -> 0 (any case), anything else -1. */
int parse_bool(const char *v);
/* The job's value of a variable: srun's or sbatch's own environment, or the job's in a task. */
const char *variable(spank_t sp, const char *name);
/* The plugin's one way to report an error (ARCHITECTURE.md, "Errors"), where the user sees it:
 * srun's or sbatch's stderr through slurm_error, or in a task the job's stderr. */
void complain(spank_t sp, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void vcomplain(int remote, const char *fmt, va_list ap) __attribute__((format(printf, 2, 0)));
/* Fills what the command line did not give from the BERTH_CONTAINER_* variables; -1 on a bad value. */
int from_environment(spank_t sp);
/* An image as the plugin handles it: a path (PATH_MAX), or a docker:// reference with its
 * digest pinned; and where sbcast puts it (stage_dir, the job, uid, token and hash around its
 * name). Every one is made with format() (trusted.h): too long is refused, never cut. */
#define IMAGE_MAX (PATH_MAX + 256)
#define STAGED_MAX (sizeof conf.stage_dir + IMAGE_MAX + 128)
/* The image this job runs: the one given, with a docker:// tag pinned at submission; -1 when it
 * does not fit in IMAGE_MAX (said). */
int job_image(spank_t sp, char out[IMAGE_MAX]);
/* Where sbcast puts a job's image on each node; 0 when it is not staged. */
int staged_path(spank_t sp, char out[STAGED_MAX], uint32_t job, uid_t uid, const char *image);
/* runtime_dir= with %U expanded; -1 when it does not fit. */
int expand_runtime(char *out, size_t size, uid_t uid);

/* save.c: --container-save. At submission, PATH checked (never a directory) and made absolute;
 * in slurmstepd, each task's exit, the node's last one saving (node 0) and cleaning up. */
int check_save_path(void);
void save_at_task_exit(spank_t sp, const struct task *t, const char *stepdir);
/* rm -r as the caller, also through the mode-0 directories overlayfs leaves in its work directory. */
void remove_tree(const char *path);

/* epilog.c: whether the process behind pidfd is, beyond doubt, uid's step server of stepdir,
 * or the image server that wrote dir/pid. */
int prove_step_server(int pidfd, pid_t pid, uid_t uid, const char *stepdir);
int prove_image_server(int pidfd, pid_t pid, uid_t uid, const char *dir);
/* adopt.c: in slurmstepd, as a task of `step` ends: the job's servers in runtime that are in
 * the step's cgroups go to the job's extern (or batch) step, so the step's end does not kill them. */
void keep_for_job(uint32_t job, uint32_t step, uid_t uid, gid_t gid, const char *runtime);
/* In a task: whether the job's servers its step starts will be kept so (KEPT_BY_PLUGIN). */
int job_keeps_servers(void);

/* process.c: runs argv with env as this process's user; stdout (and stderr, if asked) is
 * captured in out when given, else it goes to our stderr. Returns the exit status. */
int run_capturing(char *const argv[], char *const env[], char *out, size_t outsize, int with_stderr);
int run(char *const argv[], char *const env[], char *out, size_t outsize);
/* The environment of a berth command the plugin runs in a task: the job's, with the runtime
 * directory the plugin's to say (runtime_dir=), not the job's. One block to free; NULL when the
 * job's environment cannot be had or memory is short. */
char **berth_env(spank_t sp, const char *runtime);
extern char **environ;

#endif
