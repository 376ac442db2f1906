/* Slurm steps: one container per step and node (or per job, node and --container-name), built
 * by the first task and joined by every task after it, as pyxis does with enroot: the 64 ranks
 * of a node cost one container, and share its writable layer. The container is served the way
 * an image is (server.c): its process holds the namespaces instead of running a command, hands
 * them to each task that connects, follows the tasks by pidfd, and leaves `steplinger` seconds
 * after the last one, taking its directory with it. The SPANK plugin starts it with
 * --step-server and joins it itself; `berth srun`'s tasks run --join. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "helper.h"
#include "../common/plantext.h"
#include "../common/trusted.h"

extern char **environ;

static void step_paths(const char *stepdir, struct server_paths *sp)
{
	memset(sp, 0, sizeof *sp);
	if (format(sp->lock, sizeof sp->lock, "%s.lock", stepdir) != 0 || format(sp->dir, sizeof sp->dir, "%s", stepdir) != 0 ||
	    format(sp->sock, sizeof sp->sock, "%s/sock", stepdir) != 0)
		fail("the step directory %s is too long; set a shorter runtime directory", stepdir);
}

/* --container-entrypoint: the image's entrypoint runs once, in the finished container and
 * before any task joins, with `true` for a command (pyxis runs it when its container starts).
 * Its output goes where the server's stdout does (the first task's output: stderr is the
 * server's report pipe, where anything written means failure); a failure fails the step. */
static void run_init(const struct plan *p)
{
	if (p->ninit == 0)
		return;
	pid_t pid = fork();
	if (pid < 0)
		fail_errno("cannot fork");
	if (pid == 0) {
		dup2(STDOUT_FILENO, STDERR_FILENO);
		struct plan init = *p;
		init.argv = p->init;
		init.nargv = p->ninit;
		exec_in_container(&init);
	}
	int status;
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
		fail("the image's entrypoint (%s) failed with status %d when the step's container started; run without --container-entrypoint, or fix the entrypoint",
		     p->init[0], WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status));
}

static noreturn void become_step_server(const struct plan *p, const struct server_paths *given, int report)
{
	if (p->net == NET_USER)
		fail("--network user and -p are not offered for Slurm steps (one pasta per node and step, each publishing the ports on its own node); berth plan refuses them");
	struct server_paths sp = *given;
	daemon_begin(report, NULL); /* its command line stays: the job epilog proves it by it (epilog.c) */
	open_server_dirs(&sp);
	int listener = listen_on(sp.sock);
	/* Its pid, for the job epilog that stops named containers when the job ends. */
	int pidfile = openat(sp.dirfd, "pid", O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (pidfile >= 0) {
		dprintf(pidfile, "%d\n", getpid());
		close(pidfile);
	}
	struct server_paths image;
	int server = attach_image(p, &image);
	/* --ipc, --hostname, --network none: made once, in the image server's user namespace, and
	 * handed to every task with the rest (serve), so all the tasks of the node share them. */
	enter_isolation(p);
	const char *own[4] = { NULL };
	size_t nown = 0;
	if (p->ipcns)
		own[nown++] = "/proc/self/ns/ipc";
	if (p->hostname)
		own[nown++] = "/proc/self/ns/uts";
	if (p->net != NET_HOST)
		own[nown++] = "/proc/self/ns/net";
	char base[CONTAINER_BASE_MAX];
	name_container(&image, base);
	/* Watched as every container is, and so is each task once it joins (its "watch" passed on
	 * through a connection kept open): when the image server ends under the step, the guard
	 * stops the tasks with the reason on their stderr rather than leaving them to fault. */
	int devnull = open("/dev/null", O_WRONLY | O_CLOEXEC);
	ask_to_be_watched_on(server, devnull, -1);
	close(devnull);
	int kept = fcntl(server, F_DUPFD_CLOEXEC, 3);
	if (kept < 0)
		fail_errno("cannot keep the connection to the image server");
	watch_tasks_through(kept);
	enter_container_root(p, &image, server, base, 1);
	/* --container-remap-root: the tasks join the nested namespace, whose mounts they cannot change;
	 * --user (berth srun -u): they join the one that makes them that uid and gid. The caller owns
	 * the image server's namespace, so its tasks may enter any namespace nested in it. */
	drop_to_plan_user(p);
	run_init(p);
	daemon_ready();
	/* As an image server (server.c): out of its containers' reach through /proc. Only now: an
	 * image server it started had to write its own uid_map, which a non-dumpable parent's
	 * children cannot. */
	prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
	serve(&sp, NULL, -1, listener, p->steplinger, -1, own);
}

/* Under the step's lock: starts the step's container unless one is served. */
static void ensure_step_server(const struct plan *p, const struct server_paths *sp)
{
	int lock = lock_file(sp->lock, 0);
	if (lock < 0)
		fail_errno("cannot open the lock %s", sp->lock);
	int serving = socket_answers(sp->sock);
	if (serving < 0)
		fail("the runtime directory path is too long for a socket: %s (set a shorter runtime.dir)", sp->sock);
	if (!serving)
		start_detached(p, sp, become_step_server);
	close(lock);
}

/* Whether `path` sits directly in the directory `dir`. */
static int directly_in(const char *path, const char *dir)
{
	const char *slash = strrchr(path, '/');
	return slash && (size_t)(slash - path) == strlen(dir) && strncmp(path, dir, strlen(dir)) == 0 && slash[1];
}

int step_server_main(const char *planfile, const char *stepdir)
{
	struct plan p;
	plan_read(open_plan_file(planfile), &p);
	/* The plan names its runtime directory; it is believed only where the plan itself lies
	 * there, and that directory is then proven the caller's. */
	if (!directly_in(planfile, p.runtime) || !directly_in(stepdir, p.runtime))
		fail("refusing the plan %s: its runtime directory is %s, where neither it nor the step directory %s lies", planfile, p.runtime, stepdir);
	check_runtime_dir(p.runtime);
	char scope[64];
	if (job_scope(scope, sizeof scope, stepdir) != 0)
		fail("refusing the step directory %s: it names no Slurm job", stepdir);
	p.scope = scope; /* the image's server is the job's (plantext.h) */
	struct server_paths sp;
	step_paths(stepdir, &sp);
	ensure_step_server(&p, &sp);
	return 0;
}

/* join_step's `start`: the step's container, unless one is served (a failure exits). */
struct step_start {
	const struct plan *p;
	const struct server_paths *sp;
};
static int start_step(void *ctx)
{
	struct step_start *s = ctx;
	ensure_step_server(s->p, s->sp);
	return 0;
}

/* --join's environment is its own, which it execs the command with. */
static int own_set(void *ctx, const char *name, const char *value)
{
	(void)ctx;
	return setenv(name, value, 1);
}

static int own_unset(void *ctx, const char *name)
{
	(void)ctx;
	return unsetenv(name);
}

noreturn void join_main(char **argv)
{
	const char *text = getenv("BERTH_STEP_PLAN");
	const char *job = getenv("SLURM_JOB_ID"), *step = getenv("SLURM_STEP_ID"), *node = getenv("SLURMD_NODENAME");
	if (!text || !job || !step || !node)
		fail("berth-helper --join runs as a task of a Slurm step started by `berth srun` ($BERTH_STEP_PLAN and Slurm's variables are missing)");
	int fd = memfd_create("berth-plan", MFD_CLOEXEC);
	if (fd < 0 || write(fd, text, strlen(text)) != (ssize_t)strlen(text) || lseek(fd, 0, SEEK_SET) != 0)
		fail_errno("cannot hold the plan");
	struct plan p;
	plan_read(fd, &p);
	check_runtime_dir(p.runtime);
	char stepdir[SERVER_PATH_MAX];
	if (step_dir(stepdir, sizeof stepdir, p.runtime, job, step, NULL, node) != 0 || strchr(node, '/'))
		fail("the step directory for job %s step %s on %s does not fit under %s; set a shorter BERTH_RUNTIME_DIR", job, step, node, p.runtime);
	char scope[64];
	if (job_scope(scope, sizeof scope, stepdir) != 0)
		fail("job %s: not a Slurm job id", job);
	p.scope = scope;
	struct server_paths sp;
	step_paths(stepdir, &sp);
	char err[1024];
	struct step_start start = { &p, &sp };
	/* The task's own environment (its rank, its PMI), less what the plan unsets, plus what it
	 * sets: the same join as the plugin's tasks (plantext.h), which read only the plan's env
	 * lines (a step plan's env is what changes: none is no change, not the default PATH). */
	struct step_env e = { .set = p.env, .nset = p.env_defaulted ? 0 : p.nenv, .unset = p.unset, .nunset = p.nunset, .cwd = p.cwd };
	struct env_ops ops = { own_set, own_unset, NULL };
	unsetenv("BERTH_STEP_PLAN");
	if (enter_step(sp.sock, start_step, &start, &e, &ops, err, sizeof err) != 0)
		fail("%s", err);
	p.env = environ;
	for (p.nenv = 0; environ[p.nenv]; p.nenv++)
		;
	p.argv = argv;
	for (p.nargv = 0; argv[p.nargv]; p.nargv++)
		;
	exec_in_container(&p);
}
