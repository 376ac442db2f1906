/* A PID namespace of the container's own (plan line `pidns 1`: --pid, --fakeroot, --containall).
 * The helper forks into it: its parent stays outside (the image server follows that process,
 * and the job waits for it), forwards the signals sent to it and exits as the container did;
 * the child is the namespace's init, PID 1, which mounts the container's own /proc, forks the
 * command as PID 2, reaps every orphan and forwards signals to the command. As tini does, a
 * signal that the terminal sent (si_code SI_KERNEL) is not forwarded: the terminal sends it to
 * the whole foreground process group, the command included, and a second copy would be one
 * too many. Without an init, PID 1 would ignore SIGTERM and leave zombies. */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "helper.h"

static const int FORWARDED[] = { SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGUSR1, SIGUSR2, SIGALRM, SIGCONT, SIGWINCH };
#define NFORWARDED (sizeof FORWARDED / sizeof *FORWARDED)
static volatile pid_t forward_to;
static volatile sig_atomic_t stop_signal;
static struct sigaction before[NFORWARDED];

static void forward(int sig, siginfo_t *info, void *ctx)
{
	(void)ctx;
	if (sig == SIGTERM || sig == SIGINT || sig == SIGHUP || sig == SIGQUIT)
		stop_signal = sig;
	if (info->si_code != SI_KERNEL && forward_to > 0)
		kill(forward_to, sig);
}

void forward_signals(pid_t to)
{
	forward_to = to;
	struct sigaction sa = { .sa_sigaction = forward, .sa_flags = SA_SIGINFO | SA_RESTART };
	sigemptyset(&sa.sa_mask);
	/* A signal the caller ignores (nohup's SIGHUP) stays ignored, here as in the container. */
	for (size_t i = 0; i < NFORWARDED; i++)
		if (sigaction(FORWARDED[i], NULL, &before[i]) == 0 && before[i].sa_handler != SIG_IGN)
			sigaction(FORWARDED[i], &sa, NULL);
}

int stop_forwarding(void)
{
	forward_to = 0;
	for (size_t i = 0; i < NFORWARDED; i++)
		sigaction(FORWARDED[i], &before[i], NULL);
	return stop_signal;
}

pid_t fork_tied(void)
{
	int outside = (int)syscall(SYS_pidfd_open, getpid(), 0);
	pid_t child = fork();
	if (child < 0)
		fail_errno("cannot fork the container's init");
	if (child == 0) {
		/* The process outside is the one the image server's guard kills when the server dies
		 * (guard.c), and the job's: the container must not outlive it. Checked after, in case
		 * it died before the prctl. */
		struct pollfd gone = { .fd = outside, .events = POLLIN };
		if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || (outside >= 0 && poll(&gone, 1, 0) == 1))
			_exit(BERTH_EXIT_SETUP);
		if (outside >= 0)
			close(outside);
		return 0;
	}
	if (outside >= 0)
		close(outside);
	return child;
}

noreturn void exit_as(pid_t child)
{
	forward_signals(child);
	int status;
	while (waitpid(child, &status, 0) < 0)
		if (errno != EINTR)
			fail_errno("cannot wait for the container");
	if (WIFSIGNALED(status)) {
		signal(WTERMSIG(status), SIG_DFL);
		raise(WTERMSIG(status));
	}
	_exit(WIFEXITED(status) ? WEXITSTATUS(status) : BERTH_EXIT_SETUP);
}

void enter_pid_namespace(void)
{
	if (unshare(CLONE_NEWPID) != 0)
		fail_errno("cannot create the container's PID namespace");
	pid_t init = fork_tied();
	if (init != 0)
		exit_as(init);
}

noreturn void run_as_init(const struct plan *p)
{
	run_as_init_then(p, NULL, NULL, NULL, 0);
}

noreturn void run_as_init_then(const struct plan *p, void (*prepare)(void *ctx), void *ctx, const int *command_fds, size_t nfds)
{
	/* Blocked until the command's pid is known, so that no signal is lost or misdirected. */
	sigset_t all, old;
	sigfillset(&all);
	sigprocmask(SIG_BLOCK, &all, &old);
	pid_t cmd = fork();
	if (cmd < 0)
		fail_errno("cannot fork the container's command");
	if (cmd == 0) {
		sigprocmask(SIG_SETMASK, &old, NULL);
		if (prepare)
			prepare(ctx);
		exec_in_container(p);
	}
	/* What only the command holds: its end tells whoever waits on the other (instance.c). */
	for (size_t i = 0; i < nfds; i++)
		close(command_fds[i]);
	/* Out of the command's reach: as root of the namespace it could otherwise ptrace its init. */
	prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
	forward_signals(cmd);
	sigprocmask(SIG_SETMASK, &old, NULL);
	for (;;) {
		int status;
		pid_t pid = waitpid(-1, &status, 0);
		if (pid < 0 && errno == EINTR)
			continue;
		if (pid < 0)
			fail_errno("cannot wait for the container's command");
		/* When the command ends, so does the namespace: the kernel kills what is left. */
		if (pid == cmd)
			_exit(WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status));
	}
}
