/* The helper's library: what its entry points (main.c, step.c, server.c) share and what can be
 * tested without them. Dying with a message and the setup exit status (fail, fail_errno: the
 * exec'd helper's error style, crun's error_handling.md), forking a process that is nobody's
 * child, proving the runtime directory and a plan file the caller's own (trusted.h), and the
 * last step of every container: chdir, no_new_privs and exec. Charliecloud keeps ch_misc.c
 * beside ch-run.c the same way. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
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

void xformat(char *out, size_t size, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(out, size, fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= size)
		fail("a path or option list does not fit in %zu bytes: %s...", size, out);
}

int memfd_of(const char *text, size_t len)
{
	int fd = memfd_create("berth-plan", MFD_CLOEXEC);
	if (fd < 0 || write(fd, text, len) != (ssize_t)len || lseek(fd, 0, SEEK_SET) != 0)
		fail_errno("cannot hold the launch plan");
	return fd;
}

static char *argv_start;
static size_t argv_size;

void keep_argv(int argc, char **argv)
{
	if (argc < 1)
		return;
	argv_start = argv[0];
	argv_size = (size_t)(argv[argc - 1] + strlen(argv[argc - 1]) + 1 - argv[0]); /* the strings are contiguous */
}

void set_title(const char *title)
{
	if (!argv_start)
		return;
	memset(argv_start, 0, argv_size);
	strncpy(argv_start, title, argv_size - 1);
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

/* Why the command cannot start, then the status. An instance's monitor waits on exec_report
 * (instance.c): the byte comes after the message, so that the monitor finds it in the log. */
static noreturn void exec_failed(const struct plan *p, int status, int err, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static noreturn void exec_failed(const struct plan *p, int status, int err, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vreport(fmt, ap, err);
	va_end(ap);
	char byte = 'x';
	if (p->exec_report >= 0 && write(p->exec_report, &byte, 1) != 1)
		status = BERTH_EXIT_SETUP;
	_exit(status);
}

noreturn void exec_in_container(const struct plan *p)
{
	if (p->nargv == 0)
		fail("the launch plan has no command to run");
	if (chdir(p->cwd) != 0)
		exec_failed(p, BERTH_EXIT_SETUP, errno, "cannot enter the working directory %s inside the container", p->cwd);
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0)
		exec_failed(p, BERTH_EXIT_SETUP, errno, "cannot set no_new_privs");
	if (p->fake_syscalls)
		install_fake_syscalls(); /* berth build's RUN: seccomp.c */
	const char *cmd = p->argv[0];
	int err = ENOENT;
	if (strchr(cmd, '/')) {
		execve(cmd, p->argv, p->env);
		err = errno;
	} else {
		char *dirs = strdup(p->path), *save = NULL, path[PATH_MAX];
		for (char *dir = strtok_r(dirs, ":", &save); dir; dir = strtok_r(NULL, ":", &save)) {
			if (format(path, sizeof path, "%s/%s", *dir ? dir : ".", cmd) != 0)
				continue; /* longer than any path execve takes (ENAMETOOLONG), never cut to another */
			execve(path, p->argv, p->env);
			if (errno != ENOENT && errno != ENOTDIR)
				err = errno; /* found but not runnable: remember why, keep looking */
		}
	}
	if (err == ENOENT)
		exec_failed(p, BERTH_EXIT_NOT_FOUND, 0, "'%s' is not in the image (searched %s)", cmd, strchr(cmd, '/') ? cmd : p->path);
	exec_failed(p, BERTH_EXIT_CANNOT_EXEC, err, "cannot execute '%s' in the container", cmd);
}
