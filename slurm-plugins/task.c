/* Each task of a step on a node. As root (task_init_privileged), the plugin makes the user's
 * runtime directory where only root can (runtime_dir's parent is root's alone, as /run/berth
 * is). As the user (task_init), it proves that directory private (trusted.h), has berth make
 * the step's plan there once per job, node and key, reads the plan (before joining: the
 * runtime directory need not be visible inside), has berth-helper start the step's container
 * unless one is served, joins it, applies the plan's environment changes to its own
 * environment, and returns to slurmstepd, which execs the command inside.
 *
 * It fails closed: a task that asked for a container and cannot have one ends here with the
 * reason, even where plugstack.conf loads the plugin as `optional` (Slurm then ignores a
 * failing callback, and the task would run on the host with the host's software). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdnoreturn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "spank_berth.h"

/* A step's directory: the runtime directory and named-JOB-NAME-NODE (a name and a node name
 * are short); the files beside and in it, that and a suffix (.lock, .plan, /sock,
 * plan-JOB-NODE-KEY). Made with format(): too long is said, never cut. */
#define STEP_DIR_MAX (sizeof ((struct task *)0)->runtime + 300)
#define STEP_FILE_MAX (STEP_DIR_MAX + 100)

/* A task that asked for a container and cannot have one ends here with the reason (fail
 * closed); every other function of the plugin returns its error. */
static noreturn void task_exit(int status, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static noreturn void task_exit(int status, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vcomplain(1, fmt, ap);
	va_end(ap);
	_exit(status);
}
#define task_fail(...) task_exit(BERTH_EXIT_SETUP, __VA_ARGS__)

/* Whether this task asked for a container, and who and where it is. The batch script and the
 * extern step stay on the host: the sruns inside a batch script carry its --container-*
 * options to their own steps. */
static int container_task(spank_t sp, struct task *t)
{
	if (spank_get_item(sp, S_JOB_ID, &t->job) != ESPANK_SUCCESS || spank_get_item(sp, S_JOB_STEPID, &t->step) != ESPANK_SUCCESS ||
	    spank_get_item(sp, S_JOB_UID, &t->uid) != ESPANK_SUCCESS || spank_get_item(sp, S_JOB_GID, &t->gid) != ESPANK_SUCCESS)
		return 0;
	if (t->step == SLURM_BATCH_SCRIPT || t->step == SLURM_EXTERN_CONT || t->step == SLURM_INTERACTIVE_STEP)
		return 0;
	if (from_environment(sp) != 0)
		_exit(BERTH_EXIT_SETUP); /* it said why */
	if (!req.image)
		return 0;
	if (expand_runtime(t->runtime, sizeof t->runtime, t->uid) != 0)
		task_fail("runtime_dir=%s is too long for uid %u; set a shorter one in plugstack.conf", conf.runtime, (unsigned)t->uid);
	return 1;
}

/* As root: the runtime directory, made and given to the user where its parent is root's alone
 * (and that parent made, when missing, in a grandparent that is root's alone). Anywhere else
 * (/tmp) the user makes it, and task_init proves it either way. */
int slurm_spank_task_init_privileged(spank_t sp, int ac, char **av)
{
	(void)ac, (void)av;
	struct task t;
	if (!container_task(sp, &t))
		return 0;
	char parent[sizeof t.runtime], err[sizeof t.runtime + 256];
	memcpy(parent, t.runtime, sizeof parent);
	char *name = strrchr(parent, '/');
	if (!name || name == parent)
		return 0;
	*name++ = '\0';
	/* The parent, proven root's alone all the way from / (made in a grandparent that is). */
	int dir = open_safe_dir(parent, 0, err, sizeof err);
	if (dir < 0) {
		char *pname = strrchr(parent, '/');
		*pname = '\0';
		int grand = open_safe_dir(*parent ? parent : "/", 0, err, sizeof err);
		*pname = '/';
		if (grand < 0)
			return 0; /* not root's alone: the user's task makes the directory, and proves it */
		mkdirat(grand, pname + 1, 0755);
		close(grand);
		if ((dir = open_safe_dir(parent, 0, err, sizeof err)) < 0)
			return 0;
	}
	if (mkdirat(dir, name, 0700) == 0 && fchownat(dir, name, t.uid, t.gid, AT_SYMLINK_NOFOLLOW) != 0)
		task_fail("cannot give %s to uid %u: %s", t.runtime, (unsigned)t.uid, strerror(errno));
	close(dir);
	return 0;
}

/* `berth plan --slurm-step ... IMAGE`, with the job's environment and this node's runtime directory. */
struct plan_command {
	char *argv[48]; /* every option at most once: 33 words with the image and the NULL */
	int output; /* argv's slot for the plan file */
	char **env;
};

static int plan_command(spank_t sp, const char *image, int staged_registry, const char *runtime, const char *save_overlay, struct plan_command *c)
{
	int n = 0;
	c->argv[n++] = conf.berth;
	c->argv[n++] = "plan";
	c->argv[n++] = "--slurm-step";
	/* The staged copy of a registry image (pulled through the signature policy into the user's
	 * cache at submission): its recorded verdict may be believed, as the cache entry's would be.
	 * A staged copy of a file the user named is judged as the local image it is. */
	if (staged_registry) c->argv[n++] = "--staged-registry-image";
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
	if (req.home == 1) c->argv[n++] = "--mount-home";
	if (req.remap == 1) c->argv[n++] = "--fakeroot";
	if (req.mpi == 1) c->argv[n++] = "--mpi";
	if (req.rdma != -1) c->argv[n++] = req.rdma ? "--rdma" : "--no-rdma";
	if (req.gpus) { c->argv[n++] = "--gpus"; c->argv[n++] = req.gpus; }
	if (req.ipc == 1) c->argv[n++] = "--ipc";
	if (req.hostname) { c->argv[n++] = "--hostname"; c->argv[n++] = req.hostname; }
	if (req.network) { c->argv[n++] = "--network"; c->argv[n++] = req.network; }
	if (req.save) { c->argv[n++] = "--save-overlay"; c->argv[n++] = (char *)save_overlay; }
	/* --container-mounts SRC:DST[:ro|rw],... is berth's --bind list as it is: berth checks it
	 * (parseBinds, src/plan/build.ts), the one validator of bind syntax. */
	if (req.mounts) { c->argv[n++] = "--bind"; c->argv[n++] = req.mounts; }
	c->argv[n++] = (char *)image;
	c->argv[n] = NULL;
	c->env = berth_env(sp, runtime);
	return c->env ? 0 : -1;
}

/* Slurm's own variables change from step to step (ranks, step ids, ports, PMI) and a plan never
 * reads them, except its inputs (BERTH_STEP_PLAN_INPUTS, generated from src/plan/contract.ts:
 * those that grant GPUs): they stay in the key. A plan naming another input is refused
 * (step_inputs_known), so the list cannot fall behind without a word. */
static int varies_per_step(const char *kv)
{
	static const char *const kept[] = BERTH_STEP_PLAN_INPUTS;
	for (size_t i = 0; i < sizeof kept / sizeof *kept; i++)
		if (strncmp(kv, kept[i], strlen(kept[i])) == 0 && kv[strlen(kept[i])] == '=')
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

/* The step's plan's environment changes, working directory and inputs (plantext.h), read
 * before joining the container (the runtime directory is the host's) and applied after. */
static void read_plan_env(const char *planfile, uid_t uid, struct step_env *e)
{
	char err[STEP_FILE_MAX + 256];
	int fd = open_owned_file(planfile, uid, err, sizeof err);
	if (fd < 0)
		task_fail("refusing the step's plan: %s", err);
	if (read_step_env(fd, e, err, sizeof err) != 0 || step_inputs_known(e, err, sizeof err) != 0)
		task_fail("%s", err);
}

/* The task's environment is slurmstepd's, which execs the command with it. */
static int spank_set(void *sp, const char *name, const char *value)
{
	return spank_setenv(sp, name, value, 1) == ESPANK_SUCCESS ? 0 : -1;
}

static int spank_unset(void *sp, const char *name)
{
	spank_unsetenv(sp, name); /* one the task lacks is no error */
	return 0;
}

/* The image to run: a staged copy, when staging is on and the copy is the user's own.
 * Returns whether it is the staged copy of a registry image. */
static int choose_image(spank_t sp, const struct task *t, char image[STAGED_MAX])
{
	char staged[STAGED_MAX], err[STAGED_MAX + 256];
	if (job_image(sp, image) != 0)
		_exit(BERTH_EXIT_SETUP); /* it said why */
	if (!staged_path(sp, staged, t->job, t->uid, image))
		return 0;
	int fd = open_owned_file(staged, t->uid, err, sizeof err);
	if (fd < 0 && errno != ENOENT)
		task_fail("refusing the staged image: %s; the job does not run it (ask the site to check stage_dir=%s)", err, conf.stage_dir);
	if (fd < 0)
		return 0;
	int registry = strncmp(image, "docker://", 9) == 0;
	memcpy(image, staged, STAGED_MAX);
	close(fd);
	return registry;
}

/* Starts the step's container: the one join path's `start` (plantext.h). */
struct starter {
	struct plan_command *cmd;
	char *planfile, *stepdir;
};

static int start_step_container(void *ctx)
{
	struct starter *s = ctx;
	char *argv[] = { conf.helper, "--step-server", s->planfile, s->stepdir, NULL };
	return run(argv, environ, NULL, 0) == 0 ? 0 : -1; /* the helper printed why */
}

/* What execve would make of one candidate: 0 runnable, else the errno that stops it. */
static int runnable(const char *file)
{
	struct stat st;
	if (stat(file, &st) != 0)
		return errno;
	if (S_ISDIR(st.st_mode))
		return EACCES;
	return access(file, X_OK) == 0 ? 0 : errno;
}

/* berth's exit contract (docker run's) for the task's command, checked inside the container
 * before slurmstepd execs it: not in the image is 127 and not runnable 126, as berth exec says,
 * where slurmstepd would end the task with the errno (2, 13) instead. */
static void check_command(spank_t sp)
{
	int argc = 0;
	char **argv = NULL;
	if (spank_get_item(sp, S_JOB_ARGV, &argc, &argv) != ESPANK_SUCCESS || argc < 1 || !argv[0] || !argv[0][0])
		return; /* nothing to check: slurmstepd says what is wrong */
	const char *cmd = argv[0];
	int err;
	char path[8192] = "";
	if (strchr(cmd, '/')) {
		err = runnable(cmd);
	} else {
		if (spank_getenv(sp, "PATH", path, sizeof path) != ESPANK_SUCCESS)
			return; /* no PATH, or one too long to copy: let slurmstepd search */
		err = ENOENT;
		char candidate[8448];
		for (char *save = NULL, *dir = strtok_r(path, ":", &save); dir; dir = strtok_r(NULL, ":", &save)) {
			if (format(candidate, sizeof candidate, "%s/%s", dir, cmd) != 0)
				continue;
			int e = runnable(candidate);
			if (e == 0)
				return;
			if (e != ENOENT && e != ENOTDIR)
				err = e; /* found but not runnable: remember why, keep looking (as execvp) */
		}
	}
	if (err == 0)
		return;
	if (err == ENOENT || err == ENOTDIR)
		task_exit(BERTH_EXIT_NOT_FOUND, "'%s' is not in the image", cmd);
	task_exit(BERTH_EXIT_CANNOT_EXEC, "cannot execute '%s' in the container: %s", cmd, strerror(err));
}

/* The step's container's directory on this node (step_dir): per step, or per job and name. */
static void task_step_dir(spank_t sp, const struct task *t, char *stepdir, size_t size, char node[256])
{
	char jobs[16], steps[16];
	const char *nodename = variable(sp, "SLURMD_NODENAME");
	snprintf(node, 256, "node");
	if (nodename && strlen(nodename) < 256 && !strchr(nodename, '/'))
		memcpy(node, nodename, strlen(nodename) + 1);
	snprintf(jobs, sizeof jobs, "%u", t->job);
	snprintf(steps, sizeof steps, "%u", t->step);
	if (req.name && strchr(req.name, '/'))
		task_fail("--container-name=%s: a name cannot contain '/'", req.name);
	if (step_dir(stepdir, size, t->runtime, jobs, steps, req.name, node) != 0)
		task_fail("--container-name=%s is too long for the runtime directory %s", req.name ? req.name : "", t->runtime);
}

/* The job's servers that this step started, in the plugin's runtime directory or in the one
 * berth itself would use in this task (a `srun berth exec` step: BERTH_RUNTIME_DIR, else
 * $XDG_RUNTIME_DIR/berth, else /tmp/berth-UID), are the job's, not the step's (adopt.c). */
static void keep_job_servers(spank_t sp)
{
	uint32_t job, step;
	uid_t uid;
	gid_t gid;
	if (spank_get_item(sp, S_JOB_ID, &job) != ESPANK_SUCCESS || spank_get_item(sp, S_JOB_STEPID, &step) != ESPANK_SUCCESS ||
	    spank_get_item(sp, S_JOB_UID, &uid) != ESPANK_SUCCESS || spank_get_item(sp, S_JOB_GID, &gid) != ESPANK_SUCCESS)
		return;
	char runtime[sizeof ((struct task *)0)->runtime], own[PATH_MAX], xdg[PATH_MAX];
	if (expand_runtime(runtime, sizeof runtime, uid) == 0)
		keep_for_job(job, step, uid, gid, runtime);
	int found = spank_getenv(sp, "BERTH_RUNTIME_DIR", own, sizeof own) == ESPANK_SUCCESS && *own == '/';
	if (!found && spank_getenv(sp, "XDG_RUNTIME_DIR", xdg, sizeof xdg) == ESPANK_SUCCESS && *xdg == '/')
		found = format(own, sizeof own, "%s/berth", xdg) == 0;
	if (!found)
		found = format(own, sizeof own, "/tmp/berth-%u", (unsigned)uid) == 0;
	if (found && strcmp(own, runtime) != 0)
		keep_for_job(job, step, uid, gid, own);
}

/* In slurmstepd, as each task ends: the job's servers kept from the step's end; then
 * --container-save's work once the node's last has (save.c). */
int slurm_spank_task_exit(spank_t sp, int ac, char **av)
{
	(void)ac, (void)av;
	struct task t;
	keep_job_servers(sp);
	if (!req.save || !container_task(sp, &t))
		return 0;
	char stepdir[STEP_DIR_MAX], node[256];
	task_step_dir(sp, &t, stepdir, sizeof stepdir, node);
	save_at_task_exit(sp, &t, stepdir);
	return 0;
}

int slurm_spank_task_init(spank_t sp, int ac, char **av)
{
	(void)ac, (void)av;
	struct task t;
	/* Every task, in a container or not (a `srun berth exec` step): the image servers its step
	 * starts may be the job's, as the step's end will not take them (adopt.c, plantext.h). */
	char runtime[sizeof ((struct task *)0)->runtime];
	uid_t uid;
	if (job_keeps_servers() && spank_get_item(sp, S_JOB_UID, &uid) == ESPANK_SUCCESS && expand_runtime(runtime, sizeof runtime, uid) == 0) {
		spank_setenv(sp, KEPT_BY_PLUGIN, runtime, 1);
		setenv(KEPT_BY_PLUGIN, runtime, 1); /* and the step server's, started from this process's environment */
	}
	if (!container_task(sp, &t))
		return 0;
	char image[STAGED_MAX];
	int staged_registry = choose_image(sp, &t, image);

	char err[STEP_FILE_MAX + 256]; /* a message naming a path */
	int rt = open_private_dir(t.runtime, t.uid, 1, err, sizeof err);
	if (rt < 0)
		task_fail("cannot use the runtime directory: %s; remove it, or have the site set runtime_dir= in plugstack.conf to a directory under a root-owned parent (the default /run/berth/%%U)", err);
	close(rt);
	char stepdir[STEP_DIR_MAX], planfile[STEP_FILE_MAX], lockfile[STEP_FILE_MAX], sock[STEP_FILE_MAX], save[STEP_FILE_MAX], node[256];
	task_step_dir(sp, &t, stepdir, sizeof stepdir, node);
	if (format(save, sizeof save, "%s.save", stepdir) != 0)
		task_fail("the runtime directory's path %s is too long; set a shorter runtime_dir=", t.runtime);
	struct plan_command cmd;
	char here[4096] = "/";
	if (plan_command(sp, image, staged_registry, t.runtime, save, &cmd) != 0 || !getcwd(here, sizeof here))
		task_fail("cannot prepare the step's plan: too many options, or the job's environment is unreadable");
	/* One plan per job, node and key (the job epilog removes them); a named container keeps the
	 * plan it was made with, for the later steps that join it. */
	int fits = format(lockfile, sizeof lockfile, "%s.lock", stepdir) == 0 && format(sock, sizeof sock, "%s/sock", stepdir) == 0 &&
		   (req.name ? format(planfile, sizeof planfile, "%s.plan", stepdir)
			     : format(planfile, sizeof planfile, "%s/plan-%u-%s-%016llx", t.runtime, t.job, node, (unsigned long long)plan_key(&cmd, here))) == 0;
	if (!fits)
		task_fail("the runtime directory's path %s is too long; set a shorter runtime_dir=", t.runtime);
	cmd.argv[cmd.output] = planfile;

	/* The plan, made once under the step's lock (a task that finds it skips Node altogether). */
	int lock = lock_file(lockfile, 0);
	if (lock < 0)
		task_fail("cannot lock %s: %s", lockfile, strerror(errno));
	int made = access(planfile, F_OK) == 0 ? 0 : run(cmd.argv, cmd.env, NULL, 0);
	if (made != 0)
		unlink(lockfile); /* nothing will be served: leave nothing behind */
	close(lock);
	if (made != 0)
		_exit(BERTH_EXIT_SETUP); /* berth printed why */
	free(cmd.env);
	struct step_env pe;
	read_plan_env(planfile, t.uid, &pe);
	struct starter starter = { &cmd, planfile, stepdir };
	struct env_ops ops = { spank_set, spank_unset, sp };
	if (enter_step(sock, start_step_container, &starter, &pe, &ops, err, sizeof err) != 0)
		task_fail("%s", err);
	free_step_env(&pe);
	check_command(sp);
	return 0;
}
