/* Each task of a step on a node: the first one has berth make the step's plan (or finds the
 * job's plan) and berth-helper start the step's container; every task joins it, applies the
 * plan's environment changes to its own environment, and returns to slurmstepd, which execs
 * the command inside. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "spank_berth.h"

/* --container-mounts SRC:DST[:ro|rw],... as berth --bind values (the same syntax; pyxis's other flags are refused). */
static int add_mounts(char **argv, int *argc, int max)
{
	if (!req.mounts)
		return 0;
	char *copy = strdup(req.mounts), *save = NULL;
	for (char *m = strtok_r(copy, ",", &save); m; m = strtok_r(NULL, ",", &save)) {
		char *flags = strchr(m, ':') ? strchr(strchr(m, ':') + 1, ':') : NULL;
		if (flags && strcmp(flags, ":ro") && strcmp(flags, ":rw")) {
			fprintf(stderr, "berth: error: --container-mounts %s: berth takes SRC:DST[:ro|rw]\n", m);
			return -1;
		}
		if (*argc + 2 >= max)
			return -1;
		argv[(*argc)++] = "--bind";
		argv[(*argc)++] = strdup(m);
	}
	return 0;
}

/* `berth plan --slurm-step ... IMAGE`, with the job's environment and this node's runtime directory. */
struct plan_command {
	char *argv[64];
	int output; /* argv's slot for the plan file */
	char **env;
};

static int plan_command(spank_t sp, const char *image, const char *runtime, struct plan_command *c)
{
	int n = 0;
	c->argv[n++] = conf.berth;
	c->argv[n++] = "plan";
	c->argv[n++] = "--slurm-step";
	c->argv[n++] = "-o";
	c->output = n;
	c->argv[n++] = "";
	if (req.name) {
		c->argv[n++] = "--step-linger";
		c->argv[n++] = NAMED_LINGER;
	}
	if (req.workdir) { c->argv[n++] = "--pwd"; c->argv[n++] = req.workdir; }
	if (req.env) { c->argv[n++] = "--keep-env"; c->argv[n++] = req.env; }
	if (req.writable == 1) c->argv[n++] = "--writable-tmpfs";
	if (req.entrypoint == 1 || (req.entrypoint == -1 && conf.execute_entrypoint)) c->argv[n++] = "--entrypoint";
	if (req.home == 0) c->argv[n++] = "--no-home";
	if (req.home == 1) c->argv[n++] = "--home";
	if (req.remap == 1) c->argv[n++] = "--fakeroot";
	if (req.mpi == 1) c->argv[n++] = "--mpi";
	if (req.rdma != -1) c->argv[n++] = req.rdma ? "--rdma" : "--no-rdma";
	if (req.gpus) { c->argv[n++] = "--gpus"; c->argv[n++] = req.gpus; }
	if (add_mounts(c->argv, &n, 60) != 0)
		return -1;
	c->argv[n++] = (char *)image;
	c->argv[n] = NULL;
	char **jobenv = NULL;
	if (spank_get_item(sp, S_JOB_ENV, &jobenv) != ESPANK_SUCCESS)
		return -1;
	size_t count = 0;
	while (jobenv[count])
		count++;
	c->env = calloc(count + 2, sizeof *c->env);
	memcpy(c->env, jobenv, count * sizeof *c->env);
	static char rt[1200];
	snprintf(rt, sizeof rt, "BERTH_RUNTIME_DIR=%s", runtime);
	c->env[count] = rt;
	return 0;
}

/* Slurm's own variables change from step to step (ranks, step ids, ports, PMI) and a plan never
 * reads them, except those that grant GPUs: they stay in the key. */
static int varies_per_step(const char *kv)
{
	static const char *const kept[] = { "SLURM_STEP_GPUS=", "SLURM_JOB_GPUS=", "SLURM_JOB_ID=" };
	for (size_t i = 0; i < sizeof kept / sizeof *kept; i++)
		if (strncmp(kv, kept[i], strlen(kept[i])) == 0)
			return 0;
	return strncmp(kv, "SLURM_", 6) == 0 || strncmp(kv, "SLURMD_", 7) == 0 || strncmp(kv, "PMI_", 4) == 0;
}

/* Everything a step's plan depends on: the options and image (argv), the working directory and
 * the job's environment. Later steps of a job with the same key reuse the first one's plan: no
 * Node process at all for them. */
static uint64_t plan_key(const struct plan_command *c, const char *cwd)
{
	uint64_t h = fnv1a(FNV1A_BASIS, cwd);

	for (int i = 0; c->argv[i]; i++)
		if (i != c->output)
			h = fnv1a(h, c->argv[i]);
	/* The environment's order changes from step to step: a sum does not care. */
	uint64_t env = 0;
	for (char **e = c->env; *e; e++)
		if (!varies_per_step(*e))
			env += fnv1a(FNV1A_BASIS, *e);
	return h ^ env;
}

/* The plan's environment changes, applied to this task's own environment, and its cwd. */
static int apply_plan(spank_t sp, const char *planfile, char *cwd, size_t cwdsize)
{
	FILE *in = fopen(planfile, "re");
	if (!in) {
		fprintf(stderr, "berth: error: cannot read the step's plan %s: %s\n", planfile, strerror(errno));
		return -1;
	}
	char *line = NULL;
	size_t cap = 0;
	ssize_t len;
	while ((len = getline(&line, &cap, in)) > 0) {
		line[strcspn(line, "\n")] = '\0';
		char *sp_at = strchr(line, ' ');
		if (!sp_at)
			continue;
		*sp_at = '\0';
		char *value = plan_unescape(sp_at + 1);
		if (!value)
			break;
		if (strcmp(line, "env") == 0 && strchr(value, '=')) {
			char *eq = strchr(value, '=');
			*eq = '\0';
			spank_setenv(sp, value, eq + 1, 1);
		} else if (strcmp(line, "unset") == 0) {
			spank_unsetenv(sp, value);
		} else if (strcmp(line, "cwd") == 0) {
			snprintf(cwd, cwdsize, "%s", value);
		}
		free(value);
	}
	free(line);
	fclose(in);
	return 0;
}

int slurm_spank_task_init(spank_t sp, int ac, char **av)
{
	(void)ac, (void)av;
	uint32_t job, step;
	uid_t uid;
	if (spank_get_item(sp, S_JOB_ID, &job) != ESPANK_SUCCESS || spank_get_item(sp, S_JOB_STEPID, &step) != ESPANK_SUCCESS ||
	    spank_get_item(sp, S_JOB_UID, &uid) != ESPANK_SUCCESS)
		return -1;
	/* The batch script and the extern step stay on the host: the sruns inside a batch script
	 * carry its --container-* options to their own steps. */
	if (step == SLURM_BATCH_SCRIPT || step == SLURM_EXTERN_CONT || step == SLURM_INTERACTIVE_STEP)
		return 0;
	from_environment(sp);
	if (!req.image)
		return 0;
	char image[9500], staged[9500];
	job_image(sp, image, sizeof image);
	if (staged_path(staged, sizeof staged, job, image) && access(staged, R_OK) == 0)
		snprintf(image, sizeof image, "%s", staged);

	char runtime[1100], stepdir[1400], planfile[1500], lockfile[1500], sock[1500], jobs[16], steps[16], node[256] = "node";
	expand_runtime(runtime, sizeof runtime, uid);
	if (mkdir(runtime, 0700) != 0 && errno != EEXIST) {
		fprintf(stderr, "berth: error: cannot create the runtime directory %s: %s\n", runtime, strerror(errno));
		return -1;
	}
	const char *nodename = variable(sp, "SLURMD_NODENAME");
	if (nodename && strlen(nodename) < sizeof node)
		memcpy(node, nodename, strlen(nodename) + 1);
	snprintf(jobs, sizeof jobs, "%u", job);
	snprintf(steps, sizeof steps, "%u", step);
	step_dir(stepdir, sizeof stepdir, runtime, jobs, steps, req.name, node);
	snprintf(lockfile, sizeof lockfile, "%s.lock", stepdir);
	snprintf(sock, sizeof sock, "%s/sock", stepdir);
	struct plan_command cmd;
	char here[4096] = "/";
	if (plan_command(sp, image, runtime, &cmd) != 0 || !getcwd(here, sizeof here))
		return -1;
	/* One plan per job, node and key (the job epilog removes them); a named container keeps the
	 * plan it was made with, for the later steps that join it. */
	if (req.name)
		snprintf(planfile, sizeof planfile, "%s.plan", stepdir);
	else
		snprintf(planfile, sizeof planfile, "%s/plan-%u-%s-%016llx", runtime, job, node, (unsigned long long)plan_key(&cmd, here));
	cmd.argv[cmd.output] = planfile;

	char err[1024];
	for (int tries = 0; join_container(sock, err, sizeof err) != 0; tries++) {
		if (tries == 3) {
			fprintf(stderr, "berth: error: %s\n", err);
			return -1;
		}
		/* Not served yet (or leaving just now): make the plan once, then start the container. */
		int lock = lock_file(lockfile, 0);
		if (lock < 0) {
			fprintf(stderr, "berth: error: cannot lock %s: %s\n", lockfile, strerror(errno));
			return -1;
		}
		int made = access(planfile, R_OK) == 0 ? 0 : run(cmd.argv, cmd.env, NULL, 0);
		if (made != 0)
			unlink(lockfile); /* nothing will be served: leave nothing behind */
		close(lock);
		if (made != 0)
			return -1; /* berth printed why */
		char *argv[] = { conf.helper, "--step-server", planfile, stepdir, NULL };
		if (run(argv, environ, NULL, 0) != 0)
			return -1; /* the helper printed why */
	}
	free(cmd.env);
	char cwd[4096] = "/";
	if (apply_plan(sp, planfile, cwd, sizeof cwd) != 0)
		return -1;
	if (chdir(cwd) != 0) {
		fprintf(stderr, "berth: error: cannot enter %s inside the container: %s\n", cwd, strerror(errno));
		return -1;
	}
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0)
		return -1;
	return 0;
}
