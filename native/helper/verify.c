/* The check that injected host libraries (RDMA providers, MPI, GPU drivers) resolve inside
 * the container, as enroot's `ldd -r` check does: the image's own loader traces each library
 * with every symbol bound at once (LD_TRACE_LOADED_OBJECTS + LD_BIND_NOW + LD_WARN, which is
 * what ldd -r sets). A missing library or an undefined symbol fails the start naming both,
 * rather than letting the job die at its first MPI or CUDA call. It runs as the container
 * user, in the finished root. The image server's directory remembers a passed check, keyed by
 * everything that could change its outcome, so the tasks of a step pay for it once. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "helper.h"
#include "../common/plantext.h"

static const char *env_value(const struct plan *p, const char *name)
{
	size_t n = strlen(name);
	for (size_t i = 0; i < p->nenv; i++)
		if (strncmp(p->env[i], name, n) == 0 && p->env[i][n] == '=')
			return p->env[i] + n + 1;
	return NULL;
}

/* Runs the loader on one library; returns its output (stdout and stderr) and exit status. */
static int trace(const char *loader, const char *lib, const char *libpath, char *out, size_t outsize)
{
	int pipefd[2];
	if (pipe2(pipefd, O_CLOEXEC) != 0)
		fail_errno("cannot create a pipe");
	pid_t pid = fork();
	if (pid < 0)
		fail_errno("cannot fork");
	if (pid == 0) {
		dup2(pipefd[1], 1);
		dup2(pipefd[1], 2);
		char *lp;
		if (asprintf(&lp, "LD_LIBRARY_PATH=%s", libpath ? libpath : "") < 0)
			_exit(127); /* the whole of it, as the container will have it */
		char *envp[] = { "LD_TRACE_LOADED_OBJECTS=1", "LD_BIND_NOW=1", "LD_WARN=yes", lp, NULL };
		execve(loader, (char *[]){ (char *)loader, (char *)lib, NULL }, envp);
		_exit(127);
	}
	close(pipefd[1]);
	size_t len = 0;
	ssize_t got;
	while ((got = read(pipefd[0], out + len, outsize - 1 - len)) > 0 || (got < 0 && errno == EINTR))
		if (got > 0 && (len += (size_t)got) >= outsize - 1)
			break;
	out[len] = '\0';
	close(pipefd[0]);
	int status;
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

/* The first line of `out` containing `what`, without its newline. */
static const char *line_with(char *out, const char *what)
{
	char *at = strstr(out, what);
	if (!at)
		return NULL;
	while (at > out && at[-1] != '\n')
		at--;
	char *end = strchr(at, '\n');
	if (end)
		*end = '\0';
	return at;
}

void verify_libraries(const struct plan *p, int statedir)
{
	size_t checks = 0;
	for (size_t i = 0; i < p->nops; i++)
		checks += p->ops[i].kind == OP_VERIFY;
	if (checks == 0)
		return; /* most containers: nothing injected, nothing to hash */
	uint64_t key = FNV1A_BASIS;
	for (size_t i = 0; i < p->nops; i++)
		key = fnv1a(fnv1a(fnv1a(key, p->ops[i].source), p->ops[i].target), p->ops[i].options);
	const char *libpath = env_value(p, "LD_LIBRARY_PATH");
	key = fnv1a(key, libpath ? libpath : "");
	char stamp[64];
	snprintf(stamp, sizeof stamp, "verified-%016llx", (unsigned long long)key);
	if (faccessat(statedir, stamp, F_OK, 0) == 0)
		return;
	for (size_t i = 0; i < p->nops; i++) {
		const struct op *op = &p->ops[i];
		if (op->kind != OP_VERIFY)
			continue;
		if (access(op->source, X_OK) != 0)
			return; /* no loader in the image (a static one): nothing there could load them */
		static char out[65536];
		int status = trace(op->source, op->target, libpath, out, sizeof out);
		const char *bad;
		if ((bad = line_with(out, "undefined symbol")) || (bad = line_with(out, "not found")))
			fail("%s (%s) does not resolve inside the container: %s\n"
			     "  The image's libraries are too old or too different for it; use an image built on a newer base, or leave that binding out.",
			     op->target, op->origin, bad);
		if (status != 0)
			fail("the image's loader %s cannot load %s (%s), status %d: %.400s", op->source, op->target, op->origin, status, out);
	}
	int fd = openat(statedir, stamp, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
	if (fd >= 0)
		close(fd);
}
