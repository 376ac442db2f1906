/* berth-helper: executes one launch plan. Usage: berth-helper [PLAN_FILE] (default: the plan
 * on fd 3). It joins (or starts) the image server for the plan's image (server.c), takes a mount
 * namespace of its own, builds the container's root (mount.c), pivots into it, sets
 * no_new_privs and execs the command: the container is this very process, so its exit status,
 * signals and terminal are the job's own, with no process in between. Nothing is setuid. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "helper.h"
#include "../common/trusted.h"

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

pid_t fork_orphan(void)
{
	int pipefd[2];
	if (pipe2(pipefd, O_CLOEXEC) != 0)
		fail_errno("cannot create a pipe");
	pid_t mid = fork();
	if (mid < 0)
		fail_errno("cannot fork");
	if (mid == 0) {
		pid_t pid = fork();
		if (pid == 0) {
			close(pipefd[0]);
			close(pipefd[1]);
			return 0;
		}
		_exit(write(pipefd[1], &pid, sizeof pid) == sizeof pid ? 0 : 1);
	}
	close(pipefd[1]);
	waitpid(mid, NULL, 0);
	pid_t pid = 0;
	if (read(pipefd[0], &pid, sizeof pid) != sizeof pid || pid <= 0)
		fail("cannot fork");
	close(pipefd[0]);
	return pid;
}

/* The runtime directory holds the image servers' sockets and locks and the steps' plans: it
 * must be the user's own, and so must every directory on the way to it (trusted.h). */
void check_runtime_dir(const char *base)
{
	char err[1024];
	int fd = open_private_dir(base, getuid(), 1, err, sizeof err);
	if (fd < 0)
		fail("cannot use the runtime directory: %s; remove it, or set BERTH_RUNTIME_DIR (runtime_dir= for the Slurm plugin) to a directory of yours", err);
	close(fd);
}

int open_plan_file(const char *path)
{
	char err[1024], cwd[4096], full[8200];
	if (path[0] != '/') { /* proven from /, like every path berth trusts */
		if (!getcwd(cwd, sizeof cwd) || format(full, sizeof full, "%s/%s", cwd, path) != 0)
			fail("refusing the plan %s: cannot make its path absolute", path);
		path = full;
	}
	int fd = open_owned_file(path, getuid(), err, sizeof err);
	if (fd < 0)
		fail("refusing the plan: %s", err);
	return fd;
}

/* berth's plan comes on a socket (Node's stdio pipe), which berth goes on reading: the image
 * server's guard tells berth there when it had to stop the container (src/runtime/helper.ts). */
static int note_channel(void)
{
	struct stat st;
	if (fstat(3, &st) != 0 || !S_ISSOCK(st.st_mode))
		return -1;
	return fcntl(3, F_DUPFD_CLOEXEC, 3);
}

noreturn void exec_in_container(const struct plan *p)
{
	if (p->nargv == 0)
		fail("the launch plan has no command to run");
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
	if (argc == 2 && strcmp(argv[1], "--probe") == 0)
		return probe();
	if (argc == 4 && strcmp(argv[1], "--step-server") == 0)
		return step_server_main(argv[2], argv[3]);
	if (argc >= 4 && strcmp(argv[1], "--join") == 0 && strcmp(argv[2], "--") == 0)
		join_main(argv + 3);
	if (argc > 2 || (argc == 2 && argv[1][0] == '-')) {
		fprintf(stderr, "usage: berth-helper [PLAN_FILE]   (default: the plan on fd 3)\n"
				"       berth-helper --step-server PLAN_FILE STEP_DIR   (the SPANK plugin's)\n"
				"       berth-helper --join -- COMMAND...   (a task of `berth srun`: the plan in $BERTH_STEP_PLAN)\n"
				"berth-helper is started by berth; see `berth run --dry-run=helper` for the plans it executes.\n");
		return 2;
	}
	int plan_fd = 3, note = -1;
	if (argc == 2)
		plan_fd = open_plan_file(argv[1]);
	else
		note = note_channel();
	struct plan p;
	plan_read(plan_fd, &p);
	if (access(p.image, R_OK) != 0)
		fail_errno("cannot read the image %s", p.image);
	if (access("/dev/fuse", F_OK) != 0 && errno == ENOENT)
		fail("/dev/fuse does not exist on this node; an administrator must load the fuse module (modprobe fuse)");
	check_runtime_dir(p.runtime);

	struct server_paths sp;
	int server = attach_image(&p, &sp);
	ask_to_be_watched(server, note);
	if (note >= 0)
		close(note);
	/* Named by this process, which the image server follows (in a PID namespace, the one outside). */
	char base[4400];
	snprintf(base, sizeof base, "%s/c-%d", sp.work, getpid());
	if (p.pidns)
		enter_pid_namespace(); /* from here on, PID 1 of the container's own */
	/* Our own mount namespace for this container's root, still receiving the host's mounts. */
	if (unshare(CLONE_NEWNS) != 0 || mount("none", "/", NULL, MS_REC | MS_SLAVE, NULL) != 0)
		fail_errno("cannot create the container's mount namespace");
	int statedir = open(sp.dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (statedir < 0)
		fail_errno("cannot open the image server's directory %s", sp.dir);
	pid_t overlay = build_root(&p, &sp, base);
	/* In a PID namespace, a fuse-overlayfs ends with it: the kernel kills what PID 1 leaves. */
	if (overlay && !p.pidns)
		report_overlay(server, overlay);
	close(server);
	verify_libraries(&p, statedir);
	close(statedir);
	if (p.fakeroot)
		lock_mounts();
	if (p.pidns)
		run_as_init(&p);
	/* This process becomes the container: its exit status and signals are the job's own. */
	exec_in_container(&p);
}
