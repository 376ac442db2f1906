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
 * Built against the installed Slurm's <slurm/spank.h>. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <glob.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <slurm/slurm.h>
#include <slurm/spank.h>

#include "../native/common/plantext.h"

SPANK_PLUGIN(berth, 1);

/* Named containers live until the job ends (the job epilog stops them). */
#define NAMED_LINGER "31536000"

enum { O_IMAGE = 1, O_MOUNTS, O_WORKDIR, O_ENV, O_WRITABLE, O_READONLY, O_HOME, O_NO_HOME, O_REMAP, O_NO_REMAP,
       O_ENTRYPOINT, O_NO_ENTRYPOINT, O_NAME, O_SAVE, O_MPI, O_GPUS, O_RDMA, O_NO_RDMA, O_STAGE, O_NO_STAGE };

/* What the user asked for: a string, or a switch that is -1 (not given), 0 or 1. */
static struct {
	char *image, *mounts, *workdir, *env, *name, *save, *gpus;
	int writable, home, remap, entrypoint, mpi, rdma, stage;
} req = { .writable = -1, .home = -1, .remap = -1, .entrypoint = -1, .mpi = -1, .rdma = -1, .stage = -1 };

/* plugstack.conf arguments. */
static struct {
	char berth[1024], helper[1024], runtime[1024], stage_dir[1024];
	int execute_entrypoint, sbatch_support;
} conf = { "berth", "berth-helper", "/tmp/berth-%U", "", 0, 1 };

static int set_switch(int *field, int value, const char *yes, const char *no)
{
	if (*field != -1 && *field != value) {
		slurm_error("berth: --%s and --%s contradict each other; give one of them", yes, no);
		return -1;
	}
	*field = value;
	return 0;
}

static int set_string(char **field, const char *value, const char *name)
{
	if (!value || !*value) {
		slurm_error("berth: --%s needs a value", name);
		return -1;
	}
	free(*field);
	*field = strdup(value);
	return 0;
}

static int option(int val, const char *arg, int remote)
{
	(void)remote;
	switch (val) {
	case O_IMAGE: return set_string(&req.image, arg, "container-image");
	case O_MOUNTS: return set_string(&req.mounts, arg, "container-mounts");
	case O_WORKDIR: return set_string(&req.workdir, arg, "container-workdir");
	case O_ENV: return set_string(&req.env, arg, "container-env");
	case O_NAME: return set_string(&req.name, arg, "container-name");
	case O_SAVE: return set_string(&req.save, arg, "container-save");
	case O_GPUS: return set_string(&req.gpus, arg, "container-gpus");
	case O_WRITABLE: return set_switch(&req.writable, 1, "container-writable", "container-readonly");
	case O_READONLY: return set_switch(&req.writable, 0, "container-writable", "container-readonly");
	case O_HOME: return set_switch(&req.home, 1, "container-mount-home", "no-container-mount-home");
	case O_NO_HOME: return set_switch(&req.home, 0, "container-mount-home", "no-container-mount-home");
	case O_REMAP: return set_switch(&req.remap, 1, "container-remap-root", "no-container-remap-root");
	case O_NO_REMAP: return set_switch(&req.remap, 0, "container-remap-root", "no-container-remap-root");
	case O_ENTRYPOINT: return set_switch(&req.entrypoint, 1, "container-entrypoint", "no-container-entrypoint");
	case O_NO_ENTRYPOINT: return set_switch(&req.entrypoint, 0, "container-entrypoint", "no-container-entrypoint");
	case O_MPI: return set_switch(&req.mpi, 1, "container-mpi", "no-container-mpi");
	case O_RDMA: return set_switch(&req.rdma, 1, "container-rdma", "no-container-rdma");
	case O_NO_RDMA: return set_switch(&req.rdma, 0, "container-rdma", "no-container-rdma");
	case O_STAGE: return set_switch(&req.stage, 1, "container-stage", "no-container-stage");
	case O_NO_STAGE: return set_switch(&req.stage, 0, "container-stage", "no-container-stage");
	}
	return -1;
}

static struct spank_option options[] = {
	{ "container-image", "[docker://]IMAGE", "run the step in a berth container of IMAGE (a squashfs file, or a registry reference) [BERTH_CONTAINER_IMAGE]", 1, O_IMAGE, option },
	{ "container-mounts", "SRC:DST[:ro|rw],...", "bind host paths into the container [BERTH_CONTAINER_MOUNTS]", 1, O_MOUNTS, option },
	{ "container-workdir", "PATH", "working directory inside the container [BERTH_CONTAINER_WORKDIR]", 1, O_WORKDIR, option },
	{ "container-env", "NAME[,NAME...]", "host variables that keep their host value inside [BERTH_CONTAINER_ENV]", 1, O_ENV, option },
	{ "container-writable", NULL, "make the container's root writable (changes vanish with the container) [BERTH_CONTAINER_WRITABLE=1]", 0, O_WRITABLE, option },
	{ "container-readonly", NULL, "keep the container's root read-only (the default) [BERTH_CONTAINER_WRITABLE=0]", 0, O_READONLY, option },
	{ "container-mount-home", NULL, "bind $HOME (the default) [BERTH_CONTAINER_MOUNT_HOME=1]", 0, O_HOME, option },
	{ "no-container-mount-home", NULL, "do not bind $HOME [BERTH_CONTAINER_MOUNT_HOME=0]", 0, O_NO_HOME, option },
	{ "container-remap-root", NULL, "be root inside (still only your own privileges) [BERTH_CONTAINER_REMAP_ROOT=1]", 0, O_REMAP, option },
	{ "no-container-remap-root", NULL, "be yourself inside (the default) [BERTH_CONTAINER_REMAP_ROOT=0]", 0, O_NO_REMAP, option },
	{ "container-entrypoint", NULL, "run the image's entrypoint: not supported, see berth's README [BERTH_CONTAINER_ENTRYPOINT=1]", 0, O_ENTRYPOINT, option },
	{ "no-container-entrypoint", NULL, "do not run the image's entrypoint (the default) [BERTH_CONTAINER_ENTRYPOINT=0]", 0, O_NO_ENTRYPOINT, option },
	{ "container-name", "NAME", "a named container that later steps of the job join [BERTH_CONTAINER_NAME]", 1, O_NAME, option },
	{ "container-save", "PATH", "save the container as an image: not supported yet [BERTH_CONTAINER_SAVE]", 1, O_SAVE, option },
	{ "container-mpi", NULL, "replace the image's MPICH-ABI MPI with the node's [BERTH_CONTAINER_MPI=1]", 0, O_MPI, option },
	{ "container-gpus", "all|none|LIST", "GPUs with the node's driver (default: the step's) [BERTH_CONTAINER_GPUS]", 1, O_GPUS, option },
	{ "container-rdma", NULL, "bind the node's InfiniBand/RDMA stack (default: where there is one) [BERTH_CONTAINER_RDMA=1]", 0, O_RDMA, option },
	{ "no-container-rdma", NULL, "do not bind the node's RDMA stack [BERTH_CONTAINER_RDMA=0]", 0, O_NO_RDMA, option },
	{ "container-stage", NULL, "copy the image to node-local storage with sbcast (the default where the site set stage_dir) [BERTH_CONTAINER_STAGE=1]", 0, O_STAGE, option },
	{ "no-container-stage", NULL, "run the image from where it is, not staged [BERTH_CONTAINER_STAGE=0]", 0, O_NO_STAGE, option },
};

static int parse_args(int ac, char **av)
{
	for (int i = 0; i < ac; i++) {
		const char *eq = strchr(av[i], '=');
		size_t klen = eq ? (size_t)(eq - av[i]) : strlen(av[i]);
		const char *v = eq ? eq + 1 : "";
#define KEY(k) (klen == strlen(k) && strncmp(av[i], k, klen) == 0)
		if (KEY("berth")) snprintf(conf.berth, sizeof conf.berth, "%s", v);
		else if (KEY("helper")) snprintf(conf.helper, sizeof conf.helper, "%s", v);
		else if (KEY("runtime_dir")) snprintf(conf.runtime, sizeof conf.runtime, "%s", v);
		else if (KEY("stage_dir")) snprintf(conf.stage_dir, sizeof conf.stage_dir, "%s", v);
		else if (KEY("execute_entrypoint")) conf.execute_entrypoint = atoi(v);
		else if (KEY("sbatch_support")) conf.sbatch_support = atoi(v);
		else {
			slurm_error("berth: unknown argument '%s' in plugstack.conf; the arguments are berth=PATH, helper=PATH, runtime_dir=DIR (%%U: the uid), stage_dir=DIR, execute_entrypoint=0|1, sbatch_support=0|1", av[i]);
			return -1;
		}
#undef KEY
	}
	if (conf.execute_entrypoint) {
		slurm_error("berth: execute_entrypoint=1 is not supported: berth's plugin runs the task's command itself, not the image's entrypoint");
		return -1;
	}
	return 0;
}

int slurm_spank_init(spank_t sp, int ac, char **av)
{
	if (parse_args(ac, av) != 0)
		return -1;
	if (spank_context() == S_CTX_ALLOCATOR && !conf.sbatch_support)
		return 0;
	/* Registered here, not as a static table: sbatch and salloc see only registered options. */
	for (size_t i = 0; i < sizeof options / sizeof *options; i++)
		if (spank_option_register(sp, &options[i]) != ESPANK_SUCCESS)
			return -1;
	return 0;
}

/* The job's value of a variable: srun's or sbatch's own environment, or the job's in a task. */
static const char *variable(spank_t sp, const char *name)
{
	static char buf[8192];
	if (!spank_remote(sp))
		return getenv(name);
	return spank_getenv(sp, name, buf, sizeof buf) == ESPANK_SUCCESS ? buf : NULL;
}

/* Each option's variable, read where the command line did not give the option. */
static const struct { char **field; const char *name; } STRING_VARS[] = {
	{ &req.image, "BERTH_CONTAINER_IMAGE" }, { &req.mounts, "BERTH_CONTAINER_MOUNTS" },
	{ &req.workdir, "BERTH_CONTAINER_WORKDIR" }, { &req.env, "BERTH_CONTAINER_ENV" },
	{ &req.name, "BERTH_CONTAINER_NAME" }, { &req.save, "BERTH_CONTAINER_SAVE" }, { &req.gpus, "BERTH_CONTAINER_GPUS" },
};
static const struct { int *field; const char *name; } SWITCH_VARS[] = {
	{ &req.writable, "BERTH_CONTAINER_WRITABLE" }, { &req.home, "BERTH_CONTAINER_MOUNT_HOME" },
	{ &req.remap, "BERTH_CONTAINER_REMAP_ROOT" }, { &req.entrypoint, "BERTH_CONTAINER_ENTRYPOINT" },
	{ &req.mpi, "BERTH_CONTAINER_MPI" }, { &req.rdma, "BERTH_CONTAINER_RDMA" }, { &req.stage, "BERTH_CONTAINER_STAGE" },
};

static void from_environment(spank_t sp)
{
	const char *v;
	for (size_t i = 0; i < sizeof STRING_VARS / sizeof *STRING_VARS; i++)
		if (!*STRING_VARS[i].field && (v = variable(sp, STRING_VARS[i].name)) && *v)
			*STRING_VARS[i].field = strdup(v);
	for (size_t i = 0; i < sizeof SWITCH_VARS / sizeof *SWITCH_VARS; i++)
		if (*SWITCH_VARS[i].field == -1 && (v = variable(sp, SWITCH_VARS[i].name)) && *v)
			*SWITCH_VARS[i].field = strcmp(v, "0") != 0;
}

/* Runs argv with env, as this process's user; its stdout (when out) is captured and its
 * stderr goes to ours (the user's terminal or job output). Returns the exit status. */
static int run_capturing(char *const argv[], char *const env[], char *out, size_t outsize, int with_stderr)
{
	int pipefd[2] = { -1, -1 };
	if (out && pipe2(pipefd, O_CLOEXEC) != 0)
		return -1;
	pid_t pid = fork();
	if (pid < 0)
		return -1;
	if (pid == 0) {
		if (out) {
			dup2(pipefd[1], STDOUT_FILENO);
			if (with_stderr)
				dup2(pipefd[1], STDERR_FILENO);
		} else
			dup2(STDERR_FILENO, STDOUT_FILENO);
		execvpe(argv[0], argv, env);
		fprintf(stderr, "berth: error: cannot run %s: %s (set berth= and helper= in plugstack.conf)\n", argv[0], strerror(errno));
		_exit(127);
	}
	size_t len = 0;
	if (out) {
		close(pipefd[1]);
		ssize_t got;
		while ((got = read(pipefd[0], out + len, outsize - 1 - len)) > 0 && (len += (size_t)got) < outsize - 1)
			;
		out[len] = '\0';
		close(pipefd[0]);
	}
	int status;
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

static int run(char *const argv[], char *const env[], char *out, size_t outsize)
{
	return run_capturing(argv, env, out, outsize, 0);
}

extern char **environ;

/* The image this job runs: the one given, with a docker:// tag pinned at submission. */
static void job_image(spank_t sp, char *out, size_t size)
{
	snprintf(out, size, "%s", req.image);
	const char *pinned = variable(sp, "BERTH_CONTAINER_IMAGE_RESOLVED");
	size_t n = strlen(req.image);
	if (pinned && strncmp(pinned, req.image, n) == 0 && pinned[n] == '=')
		snprintf(out, size, "%s", pinned + n + 1);
}

/* Where sbcast puts a job's image on each node: named by the job and the image (a file's name,
 * or a registry image's digest), so that every step of the job finds the one copy. */
static int staged_path(char *out, size_t size, uint32_t job, const char *image)
{
	if (!*conf.stage_dir || req.stage == 0)
		return 0;
	const char *at = strstr(image, "@sha256:");
	if (strncmp(image, "docker://", 9) == 0 && !at)
		return 0;
	if (at)
		snprintf(out, size, "%s/berth-%u-%s.sqsh", conf.stage_dir, job, at + 8);
	else
		snprintf(out, size, "%s/berth-%u-%s", conf.stage_dir, job, strrchr(image, '/') ? strrchr(image, '/') + 1 : image);
	return 1;
}

/* In srun, once the job has its nodes and before the tasks start: with stage_dir= set by the
 * site, the image goes to each node's local storage through Slurm's own sbcast, so that the
 * nodes read their own disks and not the shared file system. Once per job: a later step finds
 * it there ("File exists"). A registry image is pulled here first, into the cache. */
int slurm_spank_local_user_init(spank_t sp, int ac, char **av)
{
	(void)ac, (void)av;
	uint32_t job;
	char image[8300], dest[9500], file[8300], jobs[16], out[8192];
	if (!req.image || spank_get_item(sp, S_JOB_ID, &job) != ESPANK_SUCCESS)
		return 0;
	job_image(sp, image, sizeof image);
	if (!staged_path(dest, sizeof dest, job, image))
		return 0;
	snprintf(file, sizeof file, "%s", image);
	if (strncmp(image, "docker://", 9) == 0) {
		/* Quiet (the job's stderr is no place for progress bars), and the path from the JSON. */
		char *pull[] = { conf.berth, "pull", "--quiet", "--json", image, NULL }, *at;
		if (run(pull, environ, out, sizeof out) != 0)
			return -1; /* berth printed why */
		if (!(at = strstr(out, "\"path\":\"")) || sscanf(at + 8, "%8299[^\"]", file) != 1) {
			slurm_error("berth: berth pull did not say where it put %s", image);
			return -1;
		}
	} else if (access(file, R_OK) != 0) {
		slurm_error("berth: error: cannot read the image %s: %s", file, strerror(errno));
		return -1;
	}
	snprintf(jobs, sizeof jobs, "%u", job);
	char *argv[] = { "sbcast", "--jobid", jobs, file, dest, NULL };
	int status = run_capturing(argv, environ, out, sizeof out, 1);
	if (status != 0 && status != 17 /* EEXIST: staged by an earlier step */) {
		slurm_error("berth: staging %s to %s on the job's nodes with sbcast failed: %s", file, dest, out);
		return -1;
	}
	return 0;
}

/* At submission: refuse what cannot work before the job queues, and pin a docker:// tag. */
int slurm_spank_init_post_opt(spank_t sp, int ac, char **av)
{
	(void)ac, (void)av;
	if (spank_remote(sp))
		return 0;
	from_environment(sp);
	if (!req.image)
		return 0;
	if (req.save) {
		slurm_error("berth: --container-save is not supported yet; convert the image you need with berth convert");
		return -1;
	}
	if (req.entrypoint == 1) {
		slurm_error("berth: --container-entrypoint is not supported: the plugin runs the step's command itself; name the entrypoint in the command");
		return -1;
	}
	if (strncmp(req.image, "docker://", 9) != 0 || strchr(req.image, '@'))
		return 0;
	/* Pinned already by an enclosing sbatch for this very reference? */
	const char *pinned = getenv("BERTH_CONTAINER_IMAGE_RESOLVED");
	size_t n = strlen(req.image);
	if (pinned && strncmp(pinned, req.image, n) == 0 && pinned[n] == '=')
		return 0;
	char out[4096];
	char *argv[] = { conf.berth, "resolve", req.image, NULL };
	if (run(argv, environ, out, sizeof out) != 0)
		return -1; /* berth printed why */
	out[strcspn(out, "\n")] = '\0';
	char value[8300];
	snprintf(value, sizeof value, "%s=%s", req.image, out);
	setenv("BERTH_CONTAINER_IMAGE_RESOLVED", value, 1); /* srun and sbatch pass it to the job */
	return 0;
}

static void expand_runtime(char *out, size_t size, uid_t uid)
{
	const char *at = strstr(conf.runtime, "%U");
	if (at)
		snprintf(out, size, "%.*s%u%s", (int)(at - conf.runtime), conf.runtime, (unsigned)uid, at + 2);
	else
		snprintf(out, size, "%s", conf.runtime);
}

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

static uint64_t fnv(uint64_t h, const char *s)
{
	for (; *s; s++)
		h = (h ^ (unsigned char)*s) * 0x100000001b3ULL;
	return (h ^ 0xff) * 0x100000001b3ULL;
}

/* Everything a step's plan depends on: the options and image (argv), the working directory and
 * the job's environment. Later steps of a job with the same key reuse the first one's plan: no
 * Node process at all for them. */
static uint64_t plan_key(const struct plan_command *c, const char *cwd)
{
	uint64_t h = fnv(0xcbf29ce484222325ULL, cwd);

	for (int i = 0; c->argv[i]; i++)
		if (i != c->output)
			h = fnv(h, c->argv[i]);
	/* The environment's order changes from step to step: a sum does not care. */
	uint64_t env = 0;
	for (char **e = c->env; *e; e++)
		if (!varies_per_step(*e))
			env += fnv(0xcbf29ce484222325ULL, *e);
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

/* At the job's end, on each node: the job's staged images, plans and named containers go. */
static void remove_matching(const char *pattern)
{
	glob_t g;
	if (glob(pattern, 0, NULL, &g) == 0)
		for (size_t i = 0; i < g.gl_pathc; i++)
			unlink(g.gl_pathv[i]);
	globfree(&g);
}

/* The epilog's cleanup, in a child that has become the job's user: the paths and the pid
 * files it reads are the user's to write, so root must not act on them (a pid file could name
 * any process, a runtime directory could be a link to anywhere). */
static void clean_up_as(uid_t uid, gid_t gid, uint32_t job)
{
	if (setgroups(0, NULL) != 0 || setresgid(gid, gid, gid) != 0 || setresuid(uid, uid, uid) != 0)
		_exit(1);
	char runtime[1100], pattern[1300];
	expand_runtime(runtime, sizeof runtime, uid);
	if (*conf.stage_dir) {
		snprintf(pattern, sizeof pattern, "%s/berth-%u-*", conf.stage_dir, job);
		remove_matching(pattern);
	}
	snprintf(pattern, sizeof pattern, "%s/plan-%u-*", runtime, job);
	remove_matching(pattern);
	snprintf(pattern, sizeof pattern, "%s/named-%u-*/pid", runtime, job);
	glob_t g;
	if (glob(pattern, 0, NULL, &g) == 0) {
		for (size_t i = 0; i < g.gl_pathc; i++) {
			FILE *f = fopen(g.gl_pathv[i], "re");
			int pid = 0;
			if (f && fscanf(f, "%d", &pid) == 1 && pid > 1)
				kill(pid, SIGTERM); /* it removes its own directory */
			if (f)
				fclose(f);
		}
	}
	globfree(&g);
	_exit(0);
}

int slurm_spank_job_epilog(spank_t sp, int ac, char **av)
{
	uint32_t job;
	uid_t uid;
	gid_t gid;
	if (parse_args(ac, av) != 0)
		return -1;
	if (spank_get_item(sp, S_JOB_ID, &job) != ESPANK_SUCCESS || spank_get_item(sp, S_JOB_UID, &uid) != ESPANK_SUCCESS)
		return 0;
	struct passwd *pw = getpwuid(uid);
	if (spank_get_item(sp, S_JOB_GID, &gid) != ESPANK_SUCCESS)
		gid = pw ? pw->pw_gid : (gid_t)uid;
	pid_t pid = fork();
	if (pid == 0)
		clean_up_as(uid, gid, job);
	while (pid > 0 && waitpid(pid, NULL, 0) < 0 && errno == EINTR)
		;
	return 0;
}
