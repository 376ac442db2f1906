/* Isolation on request: IPC, UTS (a hostname) and network namespaces of the container's own,
 * made in the image server's user namespace, where this process holds every capability. Off by
 * default (MPI ranks and node tools share the host's), so the default start pays nothing.
 *
 * --net none leaves the new network namespace with a loopback only. --net user gives it
 * user-mode networking through pasta (Debian's passt), which must run in the host's network
 * namespace: this process has left it once it joins the image server, so a keeper forked before
 * that waits, and runs pasta against this process's namespaces when they exist. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <poll.h>
#include <signal.h>
#include <stdnoreturn.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../exit_codes.h"
#include "helper.h"

/* --net user's keeper: a process outside every namespace of the container, and nobody's child
 * (a container shell's `wait` must not wait for it). Told that the namespace exists, it starts
 * pasta, which sets the namespace up and then runs on in the background holding it; the keeper
 * says how that went, and stops pasta once the container has ended (pasta would otherwise keep
 * the namespace, and its published ports, for ever). */
static int keeper_go = -1, keeper_said = -1;

static noreturn void keep_network(const struct plan *p, pid_t container, int go, int said)
{
	int container_fd = (int)syscall(SYS_pidfd_open, container, 0);
	char byte;
	if (container_fd < 0 || read(go, &byte, 1) != 1)
		_exit(0); /* the container ended before its namespace existed */
	int pidpipe[2];
	if (pipe(pidpipe) != 0)
		_exit(BERTH_EXIT_SETUP);
	pid_t pasta = fork();
	if (pasta == 0) {
		/* pasta writes the pid it runs on as in the background to --pid: this pipe. */
		char pidfile[32], target[24];
		snprintf(pidfile, sizeof pidfile, "/dev/fd/%d", pidpipe[1]);
		snprintf(target, sizeof target, "%d", (int)container);
		close(pidpipe[0]);
		char **argv = calloc(16 + 2 * p->npublish, sizeof *argv);
		size_t n = 0;
		if (!argv)
			_exit(BERTH_EXIT_SETUP);
		/* --quiet: no banner in the job's output; only the ports asked for, TCP, in. */
		static char *fixed[] = { "--quiet", "--config-net", "-u", "none", "-T", "none", "-U", "none" };
		argv[n++] = p->pasta;
		for (size_t i = 0; i < sizeof fixed / sizeof *fixed; i++)
			argv[n++] = fixed[i];
		for (size_t i = 0; i < p->npublish; i++) {
			argv[n++] = "-t";
			argv[n++] = p->publish[i];
		}
		if (p->npublish == 0) {
			argv[n++] = "-t";
			argv[n++] = "none";
		}
		argv[n++] = "--pid";
		argv[n++] = pidfile;
		argv[n++] = target;
		execv(p->pasta, argv);
		fprintf(stderr, "berth-helper: cannot run %s: %s\n", p->pasta, strerror(errno));
		_exit(BERTH_EXIT_SETUP);
	}
	close(pidpipe[1]);
	int status = -1;
	while (pasta > 0 && waitpid(pasta, &status, 0) < 0 && errno == EINTR)
		;
	char buf[24] = { 0 };
	ssize_t got = read(pidpipe[0], buf, sizeof buf - 1);
	int daemon_fd = got > 0 ? (int)syscall(SYS_pidfd_open, (pid_t)atoi(buf), 0) : -1;
	int ok = pasta > 0 && WIFEXITED(status) && WEXITSTATUS(status) == 0 && daemon_fd >= 0;
	if (write(said, ok ? "1" : "0", 1) != 1 || !ok)
		_exit(0);
	close(said);
	/* The container's end (its pidfd becomes readable) is pasta's. */
	struct pollfd pfd = { .fd = container_fd, .events = POLLIN };
	while (poll(&pfd, 1, -1) < 0 && errno == EINTR)
		;
	syscall(SYS_pidfd_send_signal, daemon_fd, SIGTERM, NULL, 0);
	_exit(0);
}

void prepare_network(const struct plan *p)
{
	if (p->net != NET_USER)
		return;
	int go[2], said[2];
	if (pipe2(go, O_CLOEXEC) != 0 || pipe2(said, O_CLOEXEC) != 0)
		fail_errno("cannot make the pipes of the network keeper");
	pid_t container = getpid();
	if (fork_orphan() == 0) {
		close(go[1]);
		close(said[0]);
		/* Only what it needs: the keeper outlives berth's descriptors' readers. */
		int fds[] = { go[0], said[1] };
		for (int fd = 3; fd < 1024; fd++)
			if (fd != fds[0] && fd != fds[1])
				close(fd);
		keep_network(p, container, go[0], said[1]);
	}
	close(go[0]);
	close(said[1]);
	keeper_go = go[1];
	keeper_said = said[0];
}

/* lo up: what a namespace of its own needs for anything at all to listen on 127.0.0.1. */
static void loopback_up(void)
{
	int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	struct ifreq ifr = { 0 };
	snprintf(ifr.ifr_name, sizeof ifr.ifr_name, "lo");
	if (s < 0 || ioctl(s, SIOCGIFFLAGS, &ifr) != 0)
		fail_errno("cannot read the loopback interface of the container's network namespace");
	ifr.ifr_flags |= IFF_UP;
	if (ioctl(s, SIOCSIFFLAGS, &ifr) != 0)
		fail_errno("cannot bring up the loopback interface of the container's network namespace");
	close(s);
}

void enter_isolation(const struct plan *p)
{
	int flags = (p->ipcns ? CLONE_NEWIPC : 0) | (p->hostname ? CLONE_NEWUTS : 0) | (p->net != NET_HOST ? CLONE_NEWNET : 0);
	if (!flags)
		return;
	if (unshare(flags) != 0)
		fail_errno("cannot create the container's %s%s%snamespace", p->ipcns ? "IPC " : "", p->hostname ? "UTS " : "",
			   p->net != NET_HOST ? "network " : "");
	if (p->hostname && sethostname(p->hostname, strlen(p->hostname)) != 0)
		fail_errno("cannot set the container's hostname to %s", p->hostname);
	if (p->net == NET_HOST)
		return;
	loopback_up();
	/* The namespace is the container's alone: any port of it may be its service's, as rootless
	 * Docker and Podman allow (the host's ports stay the host's rules). */
	int fd = open("/proc/sys/net/ipv4/ip_unprivileged_port_start", O_WRONLY | O_CLOEXEC);
	if (fd < 0 || write(fd, "0", 1) != 1)
		fail_errno("cannot open the container's low ports to it (ip_unprivileged_port_start)");
	close(fd);
	if (p->net != NET_USER)
		return;
	/* The namespace exists: pasta may set it up now; the command starts once it has. */
	char ok = '0';
	if (write(keeper_go, "x", 1) != 1 || read(keeper_said, &ok, 1) != 1 || ok != '1')
		fail("user-mode networking could not be set up: %s failed (it said why above, if it could); it needs /dev/net/tun usable by you (usually mode 0666) and the published ports free on this node; "
		     "run without --net/-p, or with --network none", p->pasta);
	close(keeper_go);
	close(keeper_said);
}
