/* An image server's guard: its parent, which ends the server's containers with a message when
 * the server itself ends under them.
 *
 * A container reads its files through the server's FUSE mount. When the server dies (a crash
 * on a corrupt image, a kill), the kernel aborts that mount: every read fails with ENOTCONN,
 * and a page of a mapped file (the program, its libraries) not yet in memory becomes a SIGBUS,
 * which may come much later and says nothing. The container execs in place, so no helper stays
 * behind to watch it, and the dead server cannot act. So the server runs as the child of this
 * guard, which learns how it ended (waitpid) and which containers it served: each container,
 * once joined, hands the server its stderr and berth's note channel (the plan's socket), and
 * the server passes them on here with the container's pidfd before it reads anything for it.
 * When the server ends with containers still running, the guard kills them, says why on each
 * one's stderr, tells berth (which then exits 125) and removes the server's directory.
 *
 * Cost: one sleeping process per image server, not per container, and per container start one
 * message to the server and one from the server to here. The guard holds no /dev/fuse
 * descriptor: with one open, a dead server's mount would hang its readers instead of failing. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "helper.h"
#include "../common/plantext.h"

#define MAX_WATCHED 4096
#define GUARD_ANSWER_MS 5000 /* the server's wait for the guard's answer to 'W' */
#define NOTE "image-server-ended\n" /* what src/runtime/helper.ts listens for */

/* On the channel from the server: 'L' with its socket's inode once it listens; 'W' with a
 * container's pidfd, stderr and (when berth started it) note channel, which the guard answers
 * with one byte: 'w' when it has it, 'n' when it has no room (MAX_WATCHED, or descriptors
 * that did not all arrive), so that a container the guard cannot watch does not start. */
struct guard_msg {
	char kind;
	ino_t sock;
};

struct watched {
	int pidfd, err, note;
};

static struct watched watched[MAX_WATCHED];
static size_t nwatched;
static ino_t server_sock;
static pid_t server_pid;

static volatile sig_atomic_t told_to_stop;

/* A SIGTERM to the guard (the job's end, an admin) stops the containers, then the server: that
 * is no failure to report. The containers go first: one still running when the server's mount
 * goes would read a page of its program from it and die of SIGBUS before anyone kills it. */
static void forward(int sig)
{
	told_to_stop = 1;
	for (size_t i = 0; i < nwatched; i++)
		if (watched[i].pidfd >= 0)
			syscall(SYS_pidfd_send_signal, watched[i].pidfd, SIGKILL, NULL, 0);
	kill(server_pid, sig);
}

static void forget(struct watched *w)
{
	close(w->pidfd);
	if (w->err >= 0)
		close(w->err);
	if (w->note >= 0)
		close(w->note);
}

static void take(int chan, struct msghdr *msg, const struct guard_msg *m)
{
	int fds[3] = { -1, -1, -1 };
	struct cmsghdr *c = CMSG_FIRSTHDR(msg);
	size_t n = c && c->cmsg_type == SCM_RIGHTS ? (c->cmsg_len - CMSG_LEN(0)) / sizeof(int) : 0;
	if (n > 3)
		n = 3; /* the control buffer holds three */
	if (n)
		memcpy(fds, CMSG_DATA(c), n * sizeof(int));
	if (m->kind == 'L')
		server_sock = m->sock;
	if (m->kind != 'W')
		goto drop;
	/* A pidfd and a stderr at least, all that were sent (none cut off for want of room). */
	int ok = n >= 2 && !(msg->msg_flags & MSG_CTRUNC) && nwatched < MAX_WATCHED;
	if (ok)
		watched[nwatched++] = (struct watched){ fds[0], fds[1], fds[2] };
	send(chan, ok ? "w" : "n", 1, MSG_DONTWAIT | MSG_NOSIGNAL);
	if (ok)
		return;
drop:
	for (size_t i = 0; i < n; i++)
		close(fds[i]);
}

/* Every message waiting on the channel. Returns -1 once the server has closed it. */
static int receive(int chan)
{
	for (;;) {
		struct guard_msg m;
		char ctl[CMSG_SPACE(3 * sizeof(int))];
		struct iovec iov = { .iov_base = &m, .iov_len = sizeof m };
		struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl, .msg_controllen = sizeof ctl };
		ssize_t len = recvmsg(chan, &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
		if (len == 0 || (len < 0 && errno != EAGAIN && errno != EINTR))
			return -1;
		if (len < 0)
			return 0;
		if ((size_t)len == sizeof m)
			take(chan, &msg, &m);
	}
}

static int exited(int pidfd)
{
	struct pollfd p = { .fd = pidfd, .events = POLLIN };
	return poll(&p, 1, 0) == 1;
}

/* Whether the server has begun to end. The kernel marks a task PF_EXITING first in its exit,
 * before it closes its descriptors, which is what aborts the mount: a container that dies of
 * that (a SIGBUS on its program's pages) can end before the server's own end reaches here,
 * and must still be told why. Unreadable (out of descriptors) is not taken for ending: the
 * server's own end still reaches here. */
static int server_ending(void)
{
	char line[512];
	const char *f = read_proc(server_pid, "stat", line, sizeof line) > 0 ? stat_field(line, 3) : NULL;
	char state;
	unsigned flags;
	if (!f || sscanf(f, "%c %*d %*d %*d %*d %*d %u", &state, &flags) != 2)
		return 0;
	return state == 'Z' || state == 'X' || (flags & 0x4 /* PF_EXITING */);
}

/* Writes to a container's stderr, waiting a second at most: a reader that has stopped reading
 * must not hold up the others' messages. Once a pipe has room, a write of PIPE_BUF at most
 * does not block. */
static void tell(int fd, const char *msg)
{
	struct pollfd p = { .fd = fd, .events = POLLOUT };
	size_t len = strlen(msg) < PIPE_BUF ? strlen(msg) : PIPE_BUF;
	if (fd >= 0 && poll(&p, 1, 1000) == 1 && (p.revents & POLLOUT) && write(fd, msg, len) < 0)
		return; /* nothing more to do for a stderr that cannot be written */
}

/* The server's directory, unless a server started since (by a container that found ours dead)
 * is using it: under the lock, which such a start holds until it is done. */
static noreturn void clean_up(const struct server_paths *sp)
{
	int lock = lock_file_at(sp->parentfd, strrchr(sp->lock, '/') + 1, 0);
	struct stat st;
	int ours = fstatat(sp->dirfd, "sock", &st, AT_SYMLINK_NOFOLLOW) != 0 || st.st_ino == server_sock;
	if (lock < 0 || !ours)
		_exit(0);
	umount2(sp->mnt, MNT_DETACH); /* the dead server's mount, in the namespace this guard shares */
	umount2(sp->work, MNT_DETACH);
	shut_down(sp, NULL, lock);
}

static void describe_end(char *msg, size_t size, const char *image, int status)
{
	if (WIFSIGNALED(status))
		snprintf(msg, size,
			 "berth: error: the image server for %s ended (signal %d); the image may be corrupt: the container was "
			 "stopped, since its files could no longer be read (convert the image again, or check it: rdsquashfs -l / %s)\n",
			 image, WTERMSIG(status), image);
	else
		snprintf(msg, size,
			 "berth: error: the image server for %s ended (exit status %d) while the container ran: the container was "
			 "stopped, since its files could no longer be read\n",
			 image, WEXITSTATUS(status));
}

static noreturn void server_ended(const char *image, const struct server_paths *sp, int status)
{
	int clean = WIFEXITED(status) && WEXITSTATUS(status) == 0; /* it removed its directory itself */
	char msg[8400];
	describe_end(msg, sizeof msg, image, status);
	/* A server that ended cleanly did so after its last container: one that has exited too is
	 * not told. After a crash every container still known is told, even one that has just
	 * died (of that crash's SIGBUS, likely). */
	for (size_t i = 0; i < nwatched; i++) {
		if (clean && exited(watched[i].pidfd)) {
			forget(&watched[i]);
			watched[i].pidfd = -1;
		}
	}
	for (size_t i = 0; i < nwatched; i++)
		if (watched[i].pidfd >= 0)
			syscall(SYS_pidfd_send_signal, watched[i].pidfd, SIGKILL, NULL, 0);
	for (size_t i = 0; i < nwatched; i++) {
		if (watched[i].pidfd < 0)
			continue;
		if (!told_to_stop) {
			tell(watched[i].err, msg);
			if (watched[i].note >= 0)
				send(watched[i].note, NOTE, strlen(NOTE), MSG_DONTWAIT | MSG_NOSIGNAL);
		}
		forget(&watched[i]);
	}
	if (clean)
		_exit(0);
	clean_up(sp);
}

static noreturn void guard(const char *image, const struct server_paths *sp, int chan)
{
	static struct pollfd fds[MAX_WATCHED + 2];
	int server = (int)syscall(SYS_pidfd_open, server_pid, 0);
	for (;;) {
		fds[0] = (struct pollfd){ .fd = server, .events = POLLIN };
		fds[1] = (struct pollfd){ .fd = chan, .events = POLLIN };
		for (size_t i = 0; i < nwatched; i++)
			fds[2 + i] = (struct pollfd){ .fd = watched[i].pidfd, .events = POLLIN };
		if (poll(fds, 2 + nwatched, server < 0 ? 100 : -1) < 0 && errno != EINTR)
			continue;
		if ((fds[1].revents & (POLLIN | POLLHUP)) && receive(chan) < 0)
			chan = -1;
		int status;
		if (waitpid(server_pid, &status, WNOHANG) == server_pid) {
			if (chan >= 0)
				receive(chan); /* what it sent before it died */
			server_ended(image, sp, status);
		}
		/* Backwards, so that moving the last slot into a freed one is safe. */
		for (size_t i = nwatched; i-- > 0;) {
			if (!(fds[2 + i].revents & (POLLIN | POLLHUP)))
				continue;
			if (server_ending()) {
				/* Its end is a moment away: wait for it, and tell this container too. */
				while (waitpid(server_pid, &status, 0) < 0 && errno == EINTR)
					;
				if (chan >= 0)
					receive(chan);
				server_ended(image, sp, status);
			}
			forget(&watched[i]);
			watched[i] = watched[--nwatched];
		}
	}
}

int start_guard(const char *image, const struct server_paths *sp)
{
	int chan[2];
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, chan) != 0)
		fail_errno("cannot create the image server's channel to its guard");
	if ((server_pid = fork()) < 0)
		fail_errno("cannot fork the image server");
	if (server_pid == 0) {
		close(chan[0]);
		return chan[1];
	}
	close(chan[1]);
	/* stderr is the starting helper's report pipe, which only the server may write or close. */
	int devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
	for (int fd = 0; fd <= 2; fd++)
		dup2(devnull, fd);
	signal(SIGPIPE, SIG_IGN);
	struct sigaction fwd = { .sa_handler = forward, .sa_flags = SA_RESTART };
	sigaction(SIGTERM, &fwd, NULL);
	sigaction(SIGINT, &fwd, NULL);
	sigaction(SIGHUP, &fwd, NULL);
	/* The server's pid, for an admin (or a test) who needs to find it. */
	int pidfile = openat(sp->dirfd, "pid", O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (pidfile >= 0) {
		dprintf(pidfile, "%d\n", server_pid);
		close(pidfile);
	}
	guard(image, sp, chan[0]);
}

void guard_listening(int guard, const char *sock)
{
	struct stat st;
	struct guard_msg m = { .kind = 'L', .sock = stat(sock, &st) == 0 ? st.st_ino : 0 };
	send(guard, &m, sizeof m, MSG_DONTWAIT | MSG_NOSIGNAL);
}

int guard_watch(int guard, int pidfd, const int *fds, size_t nfds)
{
	/* A guard that once did not answer in time is not believed again: its late answer would
	 * be taken for the next container's. */
	static int lost;
	struct guard_msg m = { .kind = 'W' };
	int all[3] = { pidfd, -1, -1 };
	size_t n = 1;
	for (size_t i = 0; i < nfds && n < 3; i++)
		all[n++] = fds[i];
	if (lost || send_with_fds(guard, &m, sizeof m, all, n, MSG_DONTWAIT | MSG_NOSIGNAL) != (ssize_t)sizeof m)
		return -1;
	/* Its answer: a container the guard could not take is refused. */
	struct pollfd answer = { .fd = guard, .events = POLLIN };
	char w = 0;
	int ready;
	while ((ready = poll(&answer, 1, GUARD_ANSWER_MS)) < 0 && errno == EINTR)
		;
	if (ready != 1 || recv(guard, &w, 1, MSG_DONTWAIT) != 1) {
		lost = 1;
		return -1;
	}
	return w == 'w' ? 0 : -1;
}
