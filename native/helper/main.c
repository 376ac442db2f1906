/* berth-helper: executes one launch plan. Usage: berth-helper [PLAN_FILE] (default: the plan
 * on fd 3). Two processes result:
 *   this one, in a new user + mount namespace, serves the image through FUSE, forwards
 *     signals, and when the container's process ends unmounts everything, removes its runtime
 *     directory and exits with that process's status (128+N after signal N);
 *   its child unshares a mount namespace of its own, builds the root (mount.c), pivots into
 *     it, sets no_new_privs and execs the command.
 * Nothing is installed setuid and no daemon outlives the container. */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include "helper.h"

static void vreport(const char *fmt, va_list ap, int err)
{
	char msg[4096];
	vsnprintf(msg, sizeof msg, fmt, ap);
	if (err)
		fprintf(stderr, "berth: error: %s: %s\n", msg, strerror(err));
	else
		fprintf(stderr, "berth: error: %s\n", msg);
}

noreturn void fail(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vreport(fmt, ap, 0);
	va_end(ap);
	_exit(BERTH_EXIT_SETUP);
}

noreturn void fail_errno(const char *fmt, ...)
{
	int err = errno;
	va_list ap;
	va_start(ap, fmt);
	vreport(fmt, ap, err);
	va_end(ap);
	_exit(BERTH_EXIT_SETUP);
}

/* The signals a batch system or a user sends to a job; they are passed on to the container. */
static const int FORWARDED[] = { SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, SIGCONT };

static volatile pid_t child_pid;
static volatile sig_atomic_t child_done;
static struct fuse_session *session;

static void on_forward(int sig, siginfo_t *info, void *ctx)
{
	(void)ctx;
	/* A terminal's ^C reaches the whole foreground process group, the container included;
	 * only signals sent by a process (kill, scancel, berth's parent) need passing on. */
	if (info->si_code == SI_KERNEL)
		return;
	if (child_pid > 0)
		kill(child_pid, sig);
}

static void on_child(int sig)
{
	(void)sig;
	child_done = 1;
	fuse_stop(session);
	/* The FUSE loop notices the flag when a read is interrupted; keep interrupting it. */
	struct itimerval tick = { { 0, 20000 }, { 0, 20000 } };
	setitimer(ITIMER_REAL, &tick, NULL);
}

static void on_alarm(int sig)
{
	(void)sig;
}

static void handle(int sig, void (*fn)(int), void (*fn_info)(int, siginfo_t *, void *))
{
	struct sigaction sa = { 0 };
	sigemptyset(&sa.sa_mask);
	if (fn_info) {
		sa.sa_sigaction = fn_info;
		sa.sa_flags = SA_SIGINFO; /* no SA_RESTART: the FUSE read must see EINTR */
	} else {
		sa.sa_handler = fn;
	}
	sigaction(sig, &sa, NULL);
}

/* Removes run directories left by helpers that were killed (kill -9 skips our cleanup). */
static void sweep_stale(const char *base)
{
	DIR *d = opendir(base);
	if (!d)
		return;
	for (struct dirent *e; (e = readdir(d));) {
		int pid;
		if (sscanf(e->d_name, "run-%d-", &pid) != 1 || pid == getpid())
			continue;
		if (kill(pid, 0) != 0 && errno == ESRCH)
			unlinkat(dirfd(d), e->d_name, AT_REMOVEDIR);
	}
	closedir(d);
}

static char *make_rundir(const char *base)
{
	struct stat st;
	if (mkdir(base, 0700) != 0 && errno != EEXIST)
		fail_errno("cannot create the runtime directory %s", base);
	if (lstat(base, &st) != 0 || !S_ISDIR(st.st_mode) || st.st_uid != getuid() || (st.st_mode & 077))
		fail("the runtime directory %s must be a directory of yours with mode 0700; remove it or set BERTH_RUNTIME_DIR", base);
	sweep_stale(base);
	static char dir[4096];
	snprintf(dir, sizeof dir, "%s/run-%d-XXXXXX", base, getpid());
	if (!mkdtemp(dir))
		fail_errno("cannot create a directory in %s", base);
	return dir;
}

static void prepare_rundir(const char *dir)
{
	/* Private to this run's namespace: nobody else ever sees these mounts. */
	if (mount("none", "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0)
		fail_errno("cannot make the mount namespace private");
	if (mount("tmpfs", dir, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0700") != 0)
		fail_errno("cannot mount a tmpfs on %s", dir);
	const char *subdirs[] = { "image", "rw", "rw/upper", "rw/work", "root" };
	char path[4200];
	for (size_t i = 0; i < sizeof subdirs / sizeof *subdirs; i++) {
		snprintf(path, sizeof path, "%s/%s", dir, subdirs[i]);
		if (mkdir(path, 0755) != 0)
			fail_errno("cannot create %s", path);
	}
}

static noreturn void exec_command(const struct plan *p)
{
	if (chdir(p->cwd) != 0)
		fail_errno("cannot enter the working directory %s inside the container", p->cwd);
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0)
		fail_errno("cannot set no_new_privs");
	const char *cmd = p->argv[0];
	int err = ENOENT;
	if (strchr(cmd, '/')) {
		execve(cmd, p->argv, p->env);
		err = errno;
	} else {
		char *dirs = strdup(p->path), *save = NULL, path[4096];
		for (char *dir = strtok_r(dirs, ":", &save); dir; dir = strtok_r(NULL, ":", &save)) {
			snprintf(path, sizeof path, "%s/%s", *dir ? dir : ".", cmd);
			execve(path, p->argv, p->env);
			if (errno != ENOENT && errno != ENOTDIR)
				err = errno; /* found but not runnable: remember why, keep looking */
		}
	}
	if (err == ENOENT) {
		fprintf(stderr, "berth: error: '%s' is not in the image (searched %s)\n",
			cmd, strchr(cmd, '/') ? cmd : p->path);
		_exit(BERTH_EXIT_NOT_FOUND);
	}
	fprintf(stderr, "berth: error: cannot execute '%s' in the container: %s\n", cmd, strerror(err));
	_exit(BERTH_EXIT_CANNOT_EXEC);
}

int main(int argc, char **argv)
{
	if (argc > 2 || (argc == 2 && argv[1][0] == '-')) {
		fprintf(stderr, "usage: berth-helper [PLAN_FILE]   (default: the plan on fd 3)\n"
				"berth-helper is started by berth; see `berth run --dry-run` for the plans it executes.\n");
		return 2;
	}
	int plan_fd = 3;
	if (argc == 2 && (plan_fd = open(argv[1], O_RDONLY | O_CLOEXEC)) < 0)
		fail_errno("cannot open the plan %s", argv[1]);
	struct plan p;
	plan_read(plan_fd, &p);
	if (access(p.image, R_OK) != 0)
		fail_errno("cannot read the image %s", p.image);

	char *rundir = make_rundir(p.runtime);
	enter_user_namespace(p.fakeroot);
	prepare_rundir(rundir);
	char mnt[4200];
	snprintf(mnt, sizeof mnt, "%s/image", rundir);
	session = fuse_mount_image(p.image, mnt);

	sigset_t forwarded, old;
	sigemptyset(&forwarded);
	for (size_t i = 0; i < sizeof FORWARDED / sizeof *FORWARDED; i++)
		sigaddset(&forwarded, FORWARDED[i]);
	sigaddset(&forwarded, SIGCHLD);
	sigprocmask(SIG_BLOCK, &forwarded, &old); /* no signal may fall between fork and handlers */

	pid_t pid = fork();
	if (pid < 0)
		fail_errno("cannot fork");
	if (pid == 0) {
		sigprocmask(SIG_SETMASK, &old, NULL);
		close(fuse_session_fd_of(session));
		if (unshare(CLONE_NEWNS) != 0)
			fail_errno("cannot create the container's mount namespace");
		build_root(&p, rundir);
		exec_command(&p);
	}
	child_pid = pid;
	for (size_t i = 0; i < sizeof FORWARDED / sizeof *FORWARDED; i++)
		handle(FORWARDED[i], NULL, on_forward);
	handle(SIGCHLD, on_child, NULL);
	handle(SIGALRM, on_alarm, NULL);
	sigprocmask(SIG_SETMASK, &old, NULL);

	fuse_serve(session);

	int status = 0;
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	fuse_finish(session);
	umount2(rundir, MNT_DETACH);
	rmdir(rundir);
	if (WIFSIGNALED(status))
		return 128 + WTERMSIG(status);
	return WEXITSTATUS(status);
}
