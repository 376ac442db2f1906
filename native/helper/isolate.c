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
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../contract.h"
#include "helper.h"

/* --net user's keeper: a process outside every namespace of the container, and nobody's child
 * (a container shell's `wait` must not wait for it). Told that the namespace exists, it runs
 * pasta in the foreground as its own child, which dies with it (PR_SET_PDEATHSIG), so a
 * container that kills the keeper frees the ports too; it says how the set-up went, and stops
 * pasta once the container has ended (pasta would otherwise keep the namespace, and its
 * published ports, for ever). */
static int keeper_go = -1, keeper_said = -1;

/* Every listener on a published host port must be this user's (pasta's): pasta goes on when it
 * could bind only one of IPv4 and IPv6, and another user's socket on the other, or on one
 * address (127.0.0.1), would then take the connections meant for the container. */
static int ports_are_ours(const struct plan *p)
{
	const char *tables[] = { "/proc/net/tcp", "/proc/net/tcp6" };
	for (size_t i = 0; i < p->npublish; i++) {
		unsigned port = (unsigned)strtoul(p->publish[i], NULL, 10), listeners = 0;
		for (size_t t = 0; t < 2; t++) {
			FILE *f = fopen(tables[t], "re");
			char line[512];
			if (!f)
				continue;
			while (fgets(line, sizeof line, f)) {
				char local[64];
				unsigned st, uid, lport;
				/* sl local_address rem_address st tx:rx tr:when retrnsmt uid ... */
				if (sscanf(line, " %*s %63s %*s %x %*s %*s %*s %u", local, &st, &uid) != 3 || st != 0x0A)
					continue;
				char *colon = strrchr(local, ':');
				if (!colon || sscanf(colon + 1, "%x", &lport) != 1 || lport != port)
					continue;
				listeners++;
				if (uid != getuid()) {
					fprintf(stderr, "berth-helper: port %u on this node is also bound by uid %u, so connections to it could reach that process, not the container; publish another port (-p OTHER:%s)\n",
						port, uid, strchr(p->publish[i], ':') + 1);
					fclose(f);
					return 0;
				}
			}
			fclose(f);
		}
		if (listeners == 0) {
			fprintf(stderr, "berth-helper: pasta did not bind port %u on this node\n", port);
			return 0;
		}
	}
	return 1;
}

static noreturn void keep_network(const struct plan *p, pid_t container, int go, int said)
{
	prctl(PR_SET_DUMPABLE, 0, 0, 0, 0); /* the container may signal it, not read or trace it */
	int container_fd = (int)syscall(SYS_pidfd_open, container, 0);
	char byte;
	if (container_fd < 0 || read(go, &byte, 1) != 1)
		_exit(0); /* the container ended before its namespace existed */
	int ready[2], said_pipe[2];
	if (pipe(ready) != 0 || pipe2(said_pipe, O_CLOEXEC) != 0)
		_exit(BERTH_EXIT_SETUP);
	pid_t keeper = getpid(), pasta = fork();
	if (pasta == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
		if (getppid() != keeper)
			_exit(BERTH_EXIT_SETUP);
		/* pasta writes its pid to --pid (this pipe) once the namespace is set up; what it says
		 * goes to the keeper, which passes it on only while the container starts, so that
		 * nothing the caller waits on (a pipe of berth's stderr) stays open with pasta. */
		char pidfile[32], target[24];
		snprintf(pidfile, sizeof pidfile, "/dev/fd/%d", ready[1]);
		snprintf(target, sizeof target, "%d", (int)container);
		close(ready[0]);
		close(said_pipe[0]);
		int devnull = open("/dev/null", O_RDWR);
		if (devnull < 0 || dup2(devnull, STDIN_FILENO) < 0 || dup2(devnull, STDOUT_FILENO) < 0 || dup2(said_pipe[1], STDERR_FILENO) < 0)
			_exit(BERTH_EXIT_SETUP);
		char **argv = calloc(20 + 2 * p->npublish, sizeof *argv);
		size_t n = 0;
		if (!argv)
			_exit(BERTH_EXIT_SETUP);
		/* --quiet: no banner in the job's output; only the ports asked for, TCP, in; and no
		 * way from the namespace to the host's loopback through the gateway's address. */
		static char *fixed[] = { "--foreground", "--quiet", "--config-net", "--no-map-gw", "-u", "none", "-T", "none", "-U", "none" };
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
	close(ready[1]);
	close(said_pipe[1]);
	int pasta_fd = pasta > 0 ? (int)syscall(SYS_pidfd_open, pasta, 0) : -1;
	/* Ready when pasta says its pid; an end of the pipe first is pasta's end. 10 s at most,
	 * passing on what pasta says meanwhile. */
	int ok = 0;
	for (int waited = 0; pasta_fd >= 0 && waited < 100 && !ok;) {
		struct pollfd fds[2] = { { .fd = ready[0], .events = POLLIN }, { .fd = said_pipe[0], .events = POLLIN } };
		int n = poll(fds, 2, 100);
		char buf[512];
		if (n == 0)
			waited++;
		if (n > 0 && (fds[1].revents & (POLLIN | POLLHUP))) {
			ssize_t got = read(said_pipe[0], buf, sizeof buf);
			if (got > 0 && write(STDERR_FILENO, buf, (size_t)got) != got) {
				/* the caller's stderr is gone: nothing else to tell it by */
			}
		}
		if (n > 0 && (fds[0].revents & (POLLIN | POLLHUP))) {
			if (read(ready[0], buf, sizeof buf) <= 0)
				break; /* pasta ended before it was ready */
			ok = 1;
		}
	}
	ok = ok && ports_are_ours(p);
	if (!ok && pasta > 0) {
		/* Gone, ports and all, before the container is told it has no network. */
		syscall(SYS_pidfd_send_signal, pasta_fd, SIGKILL, NULL, 0);
		while (waitpid(pasta, NULL, 0) < 0 && errno == EINTR)
			;
	}
	if (write(said, ok ? "1" : "0", 1) != 1 || !ok)
		_exit(0);
	close(said);
	/* From here on nothing of the caller's is held open: what pasta still says is dropped. */
	int devnull = open("/dev/null", O_WRONLY);
	if (devnull >= 0) {
		dup2(devnull, STDOUT_FILENO);
		dup2(devnull, STDERR_FILENO);
		close(devnull);
	}
	/* The container's end is pasta's; pasta's own end leaves nothing to do. */
	for (;;) {
		struct pollfd ends[3] = { { .fd = container_fd, .events = POLLIN }, { .fd = pasta_fd, .events = POLLIN }, { .fd = said_pipe[0], .events = POLLIN } };
		if (poll(ends, 3, -1) < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		if (ends[0].revents || ends[1].revents)
			break;
		char drop[512];
		if (read(said_pipe[0], drop, sizeof drop) <= 0)
			said_pipe[0] = -1; /* pasta closed it: poll ignores a negative fd */
	}
	syscall(SYS_pidfd_send_signal, pasta_fd, SIGTERM, NULL, 0);
	while (waitpid(pasta, NULL, 0) < 0 && errno == EINTR)
		;
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
		fail("user-mode networking could not be set up with %s (the reason is above, where it could say one); it needs /dev/net/tun usable by you (usually mode 0666) and the published ports free on this node; "
		     "run without --net/-p, or with --network none", p->pasta);
	close(keeper_go);
	close(keeper_said);
}
