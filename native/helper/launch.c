/* berth-helper --launch SCRIPT ARGS...: the `berth` command itself, exec'd by the first lines
 * of dist/berth.cjs. It runs berth's Node program (node -- SCRIPT ARGS) as its child, with a
 * pipe on which a command that starts a container hands over the plan instead of starting
 * berth-helper itself (src/runtime/launch.ts). Once Node has exited, this process carries the
 * plan out: it becomes the container. So the container is the caller's own child, with no
 * Node above it: its exit status and signals are the job's, no memory is held by a waiting
 * Node, and a kill -9 of `berth` is a kill -9 of the container (nothing can be orphaned).
 *
 * Every other command (pull, images, a container that berth must wait for to remove its
 * cgroup) hands nothing over, and this process exits as Node did. While Node runs, signals
 * sent to this process are passed on to it (a terminal's reach it directly, pidns.c's rule);
 * one that asks berth to stop (SIGTERM, SIGINT, SIGHUP, SIGQUIT) also means no container is
 * started after it, even where Node has just handed a plan over. Node dies with this process
 * as berth died of a kill -9 before (PR_SET_PDEATHSIG: SIGKILL, and a helper Node started dies
 * with Node): what berth writes survives a kill -9. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "helper.h"

/* What Node writes first on the pipe (BERTH_HANDOVER_*, from src/plan/contract.ts): which kind of plan follows. */
#define CONTAINER BERTH_HANDOVER_CONTAINER
#define INSTANCE_JOIN BERTH_HANDOVER_INSTANCE_JOIN
#define PLAN_MAX (64u << 20)

/* Node, with the pipe and who holds its other end: berth takes the pipe only from its parent. */
static noreturn void run_node(int channel, pid_t launcher, char **argv)
{
	char fd[16], pid[24];
	snprintf(fd, sizeof fd, "%d", channel);
	snprintf(pid, sizeof pid, "%d", (int)launcher);
	if (setenv("BERTH_LAUNCH_FD", fd, 1) != 0 || setenv("BERTH_LAUNCH_PID", pid, 1) != 0)
		_exit(BERTH_EXIT_SETUP);
	size_t n = 0;
	while (argv[n])
		n++;
	char **args = calloc(n + 3, sizeof *args);
	if (!args)
		_exit(BERTH_EXIT_SETUP);
	args[0] = "node";
	args[1] = "--"; /* Node reads nothing after it as its own (build.mjs says why) */
	memcpy(args + 2, argv, n * sizeof *args);
	execvp("node", args);
	fprintf(stderr, "berth: error: cannot run node: %s\nberth: hint: berth needs Node.js 20 or later on PATH\n", strerror(errno));
	_exit(BERTH_EXIT_SETUP);
}

/* Everything Node wrote, up to its end of the pipe (Node holds it close-on-exec: nothing Node
 * starts keeps it open). */
static char *read_all(int fd, size_t *len)
{
	size_t cap = 1 << 16;
	char *buf = malloc(cap);
	*len = 0;
	for (;;) {
		if (!buf)
			fail("out of memory reading berth's launch plan");
		if (*len == cap) {
			if (cap >= PLAN_MAX)
				fail("berth's launch plan is larger than %u MiB", PLAN_MAX >> 20);
			buf = realloc(buf, cap *= 2);
			continue;
		}
		ssize_t r = read(fd, buf + *len, cap - *len);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			fail_errno("cannot read berth's launch plan");
		if (r == 0)
			return buf;
		*len += (size_t)r;
	}
}

noreturn void launch_main(char **argv)
{
	int channel[2];
	if (pipe2(channel, O_CLOEXEC) != 0)
		fail_errno("cannot make a pipe for berth");
	pid_t self = getpid();
	pid_t node = fork();
	if (node < 0)
		fail_errno("cannot start berth (fork)");
	if (node == 0) {
		if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || getppid() != self)
			_exit(BERTH_EXIT_SETUP);
		int w = fcntl(channel[1], F_DUPFD, 3); /* without close-on-exec, for node */
		if (w < 0)
			_exit(BERTH_EXIT_SETUP);
		run_node(w, self, argv);
	}
	close(channel[1]);
	forward_signals(node);
	size_t len;
	char *text = read_all(channel[0], &len);
	close(channel[0]);
	int status;
	while (waitpid(node, &status, 0) < 0)
		if (errno != EINTR)
			fail_errno("cannot wait for berth");
	int stop = stop_forwarding();
	if (WIFSIGNALED(status)) {
		signal(WTERMSIG(status), SIG_DFL);
		raise(WTERMSIG(status));
		_exit(128 + WTERMSIG(status));
	}
	int code = WIFEXITED(status) ? WEXITSTATUS(status) : BERTH_EXIT_SETUP;
	if (code != 0 || len == 0)
		_exit(code);
	if (stop) {
		/* Told to stop while Node planned: no container starts after that. */
		signal(stop, SIG_DFL);
		raise(stop);
		_exit(128 + stop);
	}
	int container = len > strlen(CONTAINER) && memcmp(text, CONTAINER, strlen(CONTAINER)) == 0;
	int join = len > strlen(INSTANCE_JOIN) && memcmp(text, INSTANCE_JOIN, strlen(INSTANCE_JOIN)) == 0;
	if (container || join) {
		size_t skip = strlen(container ? CONTAINER : INSTANCE_JOIN);
		int plan = memfd_of(text + skip, len - skip);
		if (join)
			instance_join_main(plan);
		run_container(plan, -1);
	}
	fail("berth handed over something that is not a launch plan; berth-helper %s may not match this berth (berth version compares them)", BERTH_VERSION);
}
