/* One image server per user, image and scope (a Slurm job, or none: plantext.h): it holds a
 * user and mount namespace in which the image is mounted once through FUSE, and every
 * container of that image joins them (setns, as pyxis does), so the kernel's page cache of the
 * image stays warm across containers and N tasks on a node cost one mount.
 *
 *   RUNTIME/img-KEY.lock   flock: serializes "connect or start" against "shut down"
 *   RUNTIME/img-KEY/sock   the server listens here; a client gets the namespace fds by
 *                          SCM_RIGHTS and is then tracked by a pidfd of its process
 *   RUNTIME/img-KEY/mnt    the FUSE mount (inside the server's namespace only)
 *   RUNTIME/img-KEY/work   a tmpfs: each container's overlay upper/work dirs, c-PID/
 *
 * When a container's process exits, its c-PID directory is removed; when none is left for
 * `linger` seconds, the server unmounts, removes img-KEY and exits. */
#define _GNU_SOURCE
#include <dirent.h>
#include <limits.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "helper.h"
#include "../common/plantext.h"
#include "../common/trusted.h"

#define MAX_CLIENTS 4096
/* In the server's name: a container joins only a server that speaks its protocol (p2: "watch"
 * is answered, since the server's requests are served by threads). */
#define SERVER_PROTOCOL "p2"
#define MAX_SERVING_THREADS 4

/* One per CPU the server may use, up to 4: a node's ranks starting together read the image at
 * once. The server serves every container of the image on the node, not only the one that
 * started it (which a Slurm job may have bound to one CPU): it takes every CPU the kernel
 * lets it have, which the job's cpuset still bounds. */
static unsigned serving_threads(void)
{
	cpu_set_t cpus;
	CPU_ZERO(&cpus);
	for (int i = 0; i < CPU_SETSIZE; i++)
		CPU_SET(i, &cpus);
	(void)sched_setaffinity(0, sizeof cpus, &cpus); /* refused: it keeps what it had */
	if (sched_getaffinity(0, sizeof cpus, &cpus) != 0)
		return 1;
	int n = CPU_COUNT(&cpus);
	return n < 1 ? 1 : n > MAX_SERVING_THREADS ? MAX_SERVING_THREADS : (unsigned)n;
}

static void key_paths(const struct plan *p, struct server_paths *sp)
{
	struct stat st;
	if (stat(p->image, &st) != 0)
		fail_errno("cannot read the image %s", p->image);
	if (p->image_is_dir != !!S_ISDIR(st.st_mode))
		fail("the image %s is %s, not what berth planned for; plan the container again", p->image,
		     S_ISDIR(st.st_mode) ? "a directory" : "not a directory");
	/* The same file (and partition), unchanged, under the same uid mapping and scope: one server.
	 * Where a step's cgroup holds this process, the server it would start dies with the step
	 * unless berth's plugin keeps it for the job: else it is the step's alone (plantext.h). */
	char cgroups[4096], narrowed[64];
	ssize_t len = read_proc(getpid(), "cgroup", cgroups, sizeof cgroups);
	int step = step_scope(narrowed, sizeof narrowed, cgroups, getenv(KEPT_BY_PLUGIN) != NULL);
	const char *scope = step == 0 ? narrowed : p->scope;
	/* A step's cgroup too long to name, or in a job a cgroup this process cannot read (it may
	 * be a step's): then its server is its own, shared with no other step. */
	if (step == -2 || (step != 0 && *p->scope && len <= 0)) {
		xformat(narrowed, sizeof narrowed, "%.40s.p%d", *p->scope ? p->scope : "slurm", (int)getpid());
		scope = narrowed;
	}
	if (format(sp->scope, sizeof sp->scope, "%s", scope) != 0)
		fail("the scope %s is too long: SLURM_JOB_ID is a number", scope);
	char key[512];
	/* Cut short, two scopes could share one server: too long is refused, never truncated. */
	/* The times to the nanosecond, and the inode's change, folded into 32 bits: the socket's
	 * path must stay short, and the second alone would take a file rewritten within it for
	 * the one the server serves. */
	char times[64];
	xformat(times, sizeof times, "%ld.%ld %ld.%ld", (long)st.st_mtim.tv_sec, st.st_mtim.tv_nsec, (long)st.st_ctim.tv_sec, st.st_ctim.tv_nsec);
	int fits = format(key, sizeof key, "%s-%lx-%lx-%lx-%08x-%lx-%llx-%s%s%s", SERVER_PROTOCOL, (unsigned long)st.st_dev, (unsigned long)st.st_ino,
			  (unsigned long)st.st_mtime, (unsigned)(fnv1a(FNV1A_BASIS, times) & 0xffffffffu), (unsigned long)st.st_size, p->image_offset,
			  p->fakeroot ? "root" : "self",
			  *scope ? "-" : "", scope) == 0 &&
		   format(sp->lock, sizeof sp->lock, "%s/img-%s.lock", p->runtime, key) == 0 &&
		   format(sp->dir, sizeof sp->dir, "%s/img-%s", p->runtime, key) == 0 &&
		   format(sp->sock, sizeof sp->sock, "%s/sock", sp->dir) == 0 && format(sp->mnt, sizeof sp->mnt, "%s/mnt", sp->dir) == 0 &&
		   format(sp->work, sizeof sp->work, "%s/work", sp->dir) == 0;
	if (!fits)
		fail("the image server's paths under %s do not fit (scope %s); set a shorter BERTH_RUNTIME_DIR or container name", p->runtime, scope);
}

static int lock_path(const char *path, int nonblock)
{
	int fd = lock_file(path, nonblock);
	if (fd < 0 && !(nonblock && errno == EWOULDBLOCK))
		fail_errno("cannot open the lock %s", path);
	return fd;
}

/* A running server's own lock, through the directory it opened at its start. */
static int server_lock(const struct server_paths *sp)
{
	int fd = lock_file_at(sp->parentfd, strrchr(sp->lock, '/') + 1, 1);
	if (fd < 0 && errno != EWOULDBLOCK)
		fail_errno("cannot open the lock %s", sp->lock);
	return fd;
}

static const char *p_runtime = "";

static int connect_to(const char *path)
{
	struct sockaddr_un addr = { .sun_family = AF_UNIX };
	if (strlen(path) >= sizeof addr.sun_path)
		fail("the runtime directory path is too long for a socket: %s (set BERTH_RUNTIME_DIR to a shorter one)", path);
	strcpy(addr.sun_path, path);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		fail_errno("cannot create a socket");
	if (connect(fd, (struct sockaddr *)&addr, sizeof addr) == 0) {
		if (!peer_is_self(fd))
			fail("the image server at %s is not yours; refusing its namespaces (remove the runtime directory %s)", path, p_runtime);
		return fd;
	}
	close(fd);
	return -1;
}

static int remove_entry(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
	(void)st, (void)type, (void)ftw;
	remove(path);
	return 0;
}

static void remove_tree(const char *path)
{
	nftw(path, remove_entry, 16, FTW_DEPTH | FTW_PHYS | FTW_MOUNT);
}

/* Unmounts and removes everything, holding the lock (when given) until the directories are
 * gone: a server started next must not find them half-removed. Through directory fds opened
 * at the start: a step server no longer sees these paths from inside its container. */
noreturn void shut_down(const struct server_paths *sp, struct fuse_session *se, int lock)
{
	unlinkat(sp->dirfd, "sock", 0);
	/* The FUSE mount (or a directory image's bind) detached, not unmounted through libfuse:
	 * the serving threads may still be reading its descriptor, which closes as the process
	 * exits. And the containers' tmpfs. */
	(void)se;
	umount2(sp->mnt, MNT_DETACH | UMOUNT_NOFOLLOW);
	umount2(sp->work, MNT_DETACH | UMOUNT_NOFOLLOW);
	/* What else the directory holds: mnt, work, verification stamps. */
	int fd = openat(sp->dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
	for (struct dirent *e; d && (e = readdir(d));)
		if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
			unlinkat(sp->dirfd, e->d_name, e->d_type == DT_DIR ? AT_REMOVEDIR : 0);
	if (d)
		closedir(d);
	const char *name = strrchr(sp->dir, '/') + 1;
	unlinkat(sp->parentfd, name, AT_REMOVEDIR);
	char plan[SERVER_PATH_MAX + sizeof ".plan"]; /* name is a part of sp->dir */
	xformat(plan, sizeof plan, "%s.plan", name);
	unlinkat(sp->parentfd, plan, 0); /* a step server's plan, beside its directory */
	if (lock >= 0) {
		unlinkat(sp->parentfd, strrchr(sp->lock, '/') + 1, 0);
		close(lock);
	}
	_exit(0);
}

void open_server_dirs(struct server_paths *sp)
{
	if (mkdir(sp->dir, 0700) != 0 && errno != EEXIST)
		fail_errno("cannot create %s", sp->dir);
	sp->dirfd = open(sp->dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
	char parent[sizeof sp->dir];
	memcpy(parent, sp->dir, sizeof parent);
	*strrchr(parent, '/') = '\0';
	sp->parentfd = open(parent, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (sp->dirfd < 0 || sp->parentfd < 0)
		fail_errno("cannot open %s", sp->dir);
}

struct client {
	int pidfd;         /* the container's process */
	pid_t pid;
	int conn;          /* open until the container has built its root; -1 after */
	int overlay_pidfd; /* a fuse-overlayfs serving its root (old kernels), or -1 */
};

/* The channel to this image server's guard (guard.c), or -1 (a step server has none). */
static int guard_chan = -1;
/* A step server's connection to its image server, to which it passes on each task's "watch"
 * (the tasks join the step's container, never the image server itself), or -1. */
static int upstream = -1;

/* Whoever watches this server's clients, told of one: its guard, or (a step server) the image
 * server's. 0, or -1: not told. */
static int have_watched(int pidfd, const int *fds, size_t nfds)
{
	if (guard_chan >= 0)
		return nfds > 0 && guard_watch(guard_chan, pidfd, fds, nfds) == 0 ? 0 : -1;
	if (upstream < 0)
		return 0; /* nothing to watch it for */
	int task[2] = { pidfd, nfds > 0 ? fds[0] : -1 };
	if (task[1] < 0 || send_with_fds(upstream, "watch-task\n", 11, task, 2, MSG_NOSIGNAL) != 11)
		return -1;
	return watch_answer(upstream) == 'w' ? 0 : -1;
}

/* The fds that came with a message: at most `max`, the rest closed. */
static size_t received_fds(struct msghdr *msg, int *fds, size_t max)
{
	size_t n = 0;
	for (struct cmsghdr *c = CMSG_FIRSTHDR(msg); c; c = CMSG_NXTHDR(msg, c)) {
		if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
			continue;
		for (size_t i = 0; i < (c->cmsg_len - CMSG_LEN(0)) / sizeof(int); i++) {
			int fd;
			memcpy(&fd, CMSG_DATA(c) + i * sizeof fd, sizeof fd);
			if (n < max)
				fds[n++] = fd;
			else
				close(fd);
		}
	}
	return n;
}

/* What a container says on its connection: "watch", with its stderr and berth's note channel
 * attached, as soon as it has joined (passed on to the guard, with its pidfd); "overlay PID"
 * when it had to start fuse-overlayfs, which is stopped with it. The connection is closed after
 * "overlay", or when the container closes it (its root is built). */
static void read_report(struct client *c)
{
	char buf[64], ctl[CMSG_SPACE(2 * sizeof(int))];
	struct iovec iov = { .iov_base = buf, .iov_len = sizeof buf - 1 };
	struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl, .msg_controllen = sizeof ctl };
	ssize_t len = recvmsg(c->conn, &msg, MSG_CMSG_CLOEXEC);
	if (len < 0 && (errno == EAGAIN || errno == EINTR))
		return;
	int fds[2], pid, done = len <= 0;
	size_t nfds = len > 0 ? received_fds(&msg, fds, 2) : 0;
	buf[len > 0 ? len : 0] = '\0';
	for (char *line = buf, *end; (end = strchr(line, '\n')); line = end + 1) {
		*end = '\0';
		if (strcmp(line, "watch") == 0) {
			/* The container reads nothing of the image before this answer: the guard has it
			 * before any request of its own can crash this server. Where the guard could not
			 * be told, the answer is no, and the container does not start (fails closed). */
			if (send(c->conn, have_watched(c->pidfd, fds, nfds) == 0 ? "w" : "n", 1, MSG_NOSIGNAL) != 1)
				done = 1;
		} else if (strcmp(line, "watch-task") == 0) {
			/* From a step server: a task of its step, by its pidfd, with its stderr. */
			int told = guard_chan >= 0 && nfds == 2 && guard_watch(guard_chan, fds[0], fds + 1, 1) == 0;
			if (send(c->conn, told ? "w" : "n", 1, MSG_NOSIGNAL) != 1)
				done = 1;
		} else {
			done = 1;
		}
		if (sscanf(line, "overlay %d", &pid) == 1 && c->overlay_pidfd < 0)
			c->overlay_pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
	}
	for (size_t i = 0; i < nfds; i++)
		close(fds[i]);
	if (done) {
		close(c->conn);
		c->conn = -1;
	}
}

static void drop_client(const struct server_paths *sp, struct client *c)
{
	if (c->overlay_pidfd >= 0) {
		syscall(SYS_pidfd_send_signal, c->overlay_pidfd, SIGTERM, NULL, 0);
		close(c->overlay_pidfd);
	}
	if (c->conn >= 0)
		close(c->conn);
	if (*sp->work) {
		char dir[CONTAINER_BASE_MAX];
		xformat(dir, sizeof dir, "%s/c-%d", sp->work, c->pid);
		remove_tree(dir);
	}
	close(c->pidfd);
}

/* Whether process `pid` is root's (every uid) and its command line is `title` (then NULs: the
 * kernel gives the whole of the original argv's space, which a shorter title leaves zeroed). */
static int root_titled(pid_t pid, const char *title)
{
	/* Its name and uids first: reading another's command line takes its mm's lock, which a
	 * process of someone else's can keep busy; these two do not. */
	char buf[1024];
	if (read_proc(pid, "comm", buf, sizeof buf) < 0 || strcmp(buf, "slurmstepd\n") != 0 || read_proc(pid, "status", buf, sizeof buf) < 0)
		return 0;
	const char *uid = strstr(buf, "\nUid:");
	unsigned u[4];
	if (!uid || sscanf(uid, "\nUid: %u %u %u %u", &u[0], &u[1], &u[2], &u[3]) != 4 || u[0] || u[1] || u[2] || u[3])
		return 0;
	size_t want = strlen(title) + 1;
	ssize_t len = read_proc(pid, "cmdline", buf, sizeof buf);
	if (len < (ssize_t)want || memcmp(buf, title, want) != 0)
		return 0;
	for (ssize_t i = (ssize_t)want; i < len; i++)
		if (buf[i])
			return 0;
	return 1;
}

/* The job's life on this node, for a server whose scope is a whole job's (slurm-JOB): a pidfd
 * of the slurmstepd of its batch step or its extern step (PrologFlags=Contain), which live as
 * long as the job does here; -1 when it has neither here (an srun's own job, a salloc without
 * Contain). Only root makes a process that root's status and that title show. */
static int job_anchor(const char *scope)
{
	const char *job = strncmp(scope, "slurm-", 6) == 0 ? scope + 6 : "";
	if (!*job || strspn(job, "0123456789") != strlen(job))
		return -1;
	char batch[96], ext[96];
	snprintf(batch, sizeof batch, "slurmstepd: [%s.batch]", job);
	snprintf(ext, sizeof ext, "slurmstepd: [%s.extern]", job);
	DIR *d = opendir("/proc");
	int anchor = -1;
	for (struct dirent *e; d && anchor < 0 && (e = readdir(d));) {
		pid_t pid = (pid_t)strtol(e->d_name, NULL, 10);
		if (pid <= 1 || !(root_titled(pid, batch) || root_titled(pid, ext)))
			continue;
		/* The pidfd first, then the proof again: the number may have gone to another. */
		anchor = (int)syscall(SYS_pidfd_open, pid, 0);
		if (anchor >= 0 && !root_titled(pid, batch) && !root_titled(pid, ext)) {
			close(anchor);
			anchor = -1;
		}
	}
	if (d)
		closedir(d);
	return anchor;
}

static volatile sig_atomic_t stop_requested;
static void request_stop(int sig)
{
	(void)sig;
	stop_requested = 1;
}

/* The server's life after it is ready: serve FUSE (an image server), hand out its namespaces,
 * clean up after the processes that joined, and leave `linger` seconds after the last; or,
 * given an `anchor` (job_anchor), as soon as that has ended and no one is joined. */
noreturn void serve(const struct server_paths *sp, struct fuse_session *se, int gone, int listener, unsigned linger, int anchor, const char *const *own)
{
	/* What it hands out (plantext.h): its user and mount namespaces, and those it has of its own. */
	int ns[NS_MAX];
	size_t nns = 0;
	ns[nns++] = open("/proc/self/ns/user", O_RDONLY | O_CLOEXEC);
	ns[nns++] = open("/proc/self/ns/mnt", O_RDONLY | O_CLOEXEC);
	for (size_t i = 0; own && own[i] && nns < NS_MAX; i++)
		ns[nns++] = open(own[i], O_RDONLY | O_CLOEXEC);
	for (size_t i = 0; i < nns; i++)
		if (ns[i] < 0)
			fail_errno("cannot open the namespaces it serves");
	static struct client clients[MAX_CLIENTS];
	int spare = open("/dev/null", O_RDONLY | O_CLOEXEC); /* see accept4 below */
	/* fds: fuse, listener, anchor, then per client its pidfd and, while open, its connection.
	 * Only open descriptors take a slot: poll refuses more slots than RLIMIT_NOFILE (EINVAL),
	 * which slots of -1 would exceed near the limit (ulimit -n) and end the server under its
	 * containers. slot[i] is where client i's pidfd lies, its connection after it. */
	static struct pollfd fds[2 * MAX_CLIENTS + 3];
	static size_t slot[MAX_CLIENTS];
	size_t n = 0;
	time_t idle_since = time(NULL);
	/* SIGTERM (the job epilog, an admin) ends it cleanly. It is let in only while poll waits,
	 * so that one arriving between the check and the wait is not left for the next event. */
	struct sigaction stop = { .sa_handler = request_stop };
	sigaction(SIGTERM, &stop, NULL);
	sigset_t term, waiting;
	sigemptyset(&term);
	sigaddset(&term, SIGTERM);
	pthread_sigmask(SIG_BLOCK, &term, &waiting);
	sigdelset(&waiting, SIGTERM);
	/* FUSE requests are served by threads of their own (fuse.c), which write to `gone` when
	 * the mount goes (unmounted from outside). */
	for (;;) {
		fds[0] = (struct pollfd){ .fd = gone, .events = POLLIN };
		fds[1] = (struct pollfd){ .fd = listener, .events = POLLIN };
		fds[2] = (struct pollfd){ .fd = anchor, .events = POLLIN };
		size_t nfds = 3;
		for (size_t i = 0; i < n; i++) {
			slot[i] = nfds;
			fds[nfds++] = (struct pollfd){ .fd = clients[i].pidfd, .events = POLLIN };
			if (clients[i].conn >= 0)
				fds[nfds++] = (struct pollfd){ .fd = clients[i].conn, .events = POLLIN };
		}
		int timeout = -1;
		if (n == 0) {
			long left = (long)linger - (long)(time(NULL) - idle_since);
			timeout = left <= 0 ? 0 : left > INT_MAX / 1000 ? INT_MAX : (int)left * 1000;
		}
		struct timespec wait = { timeout / 1000, (long)(timeout % 1000) * 1000000 };
		int ready = ppoll(fds, nfds, timeout < 0 ? NULL : &wait, &waiting);
		if (stop_requested)
			break;
		if (ready < 0) {
			/* Never a reason to leave under the containers (ENOMEM passes): wait, try again. */
			if (errno != EINTR)
				nanosleep(&(struct timespec){ 0, 100000000 }, NULL);
			continue;
		}
		if (ready == 0 && n == 0) {
			/* Idle: leave, unless a client is connecting right now (it holds the lock). */
			int lock = server_lock(sp);
			if (lock < 0)
				continue;
			struct pollfd pending = { .fd = listener, .events = POLLIN };
			if (poll(&pending, 1, 0) == 0)
				shut_down(sp, se, lock);
			close(lock);
			continue;
		}
		/* Only the slots this poll() looked at: a reused fd number must not inherit an old
		 * slot's revents. Backwards, so that the last client, moved into a freed place, has
		 * been seen already. */
		for (size_t i = n; i-- > 0;) {
			if (clients[i].conn >= 0 && fds[slot[i] + 1].revents)
				read_report(&clients[i]);
			if (!(fds[slot[i]].revents & (POLLIN | POLLHUP)))
				continue;
			drop_client(sp, &clients[i]);
			clients[i] = clients[--n];
			if (n == 0)
				idle_since = time(NULL);
		}
		if (fds[0].revents)
			break; /* unmounted from outside */
		if (anchor >= 0 && fds[2].revents) {
			close(anchor); /* the job has ended on this node: nothing more to wait for */
			anchor = -1;
			linger = 0;
			if (n == 0)
				idle_since = time(NULL);
		}
		if (fds[1].revents & POLLIN) {
			int c = accept4(listener, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
			if (c < 0 && (errno == EMFILE || errno == ENFILE) && spare >= 0) {
				/* Out of descriptors: the one kept for this takes the connection, to close it
				 * (the container says the server closed it), not to leave it pending, which
				 * poll would report again at once, for ever. */
				close(spare);
				if ((c = accept4(listener, NULL, NULL, SOCK_CLOEXEC)) >= 0)
					close(c);
				spare = open("/dev/null", O_RDONLY | O_CLOEXEC);
				continue;
			}
			struct ucred cred;
			socklen_t len = sizeof cred;
			int pidfd = -1;
			/* Only the server's own user gets its namespaces (the socket's mode says so too). */
			if (c >= 0 && getsockopt(c, SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0 && cred.uid == getuid() && n < MAX_CLIENTS)
				pidfd = (int)syscall(SYS_pidfd_open, cred.pid, 0);
			if (pidfd >= 0) {
				clients[n++] = (struct client){ pidfd, cred.pid, c, -1 };
				send_namespaces(c, ns, nns);
			} else if (c >= 0) {
				close(c);
			}
		}
	}
	for (size_t i = 0; i < n; i++)
		drop_client(sp, &clients[i]);
	shut_down(sp, se, server_lock(sp));
}

void note_job_runtime(const char *runtime)
{
	const char *plugin = getenv(KEPT_BY_PLUGIN), *job = getenv("SLURM_JOB_ID");
	if (!plugin || plugin[0] != '/' || !job || strspn(job, "0123456789") != strlen(job) || !*job || strlen(job) > 20 ||
	    strcmp(plugin, runtime) == 0)
		return;
	char err[1024], name[64];
	int dir = open_private_dir(plugin, getuid(), 0, err, sizeof err);
	if (dir < 0)
		return; /* not one of the user's: nothing is written there */
	xformat(name, sizeof name, RUNTIME_ELSEWHERE, job, (unsigned)(fnv1a(FNV1A_BASIS, runtime) & 0xffffffffu));
	if (symlinkat(runtime, dir, name) != 0 && errno != EEXIST) {
		/* without it the epilog misses this directory: what a killed server leaves stays */
	}
	close(dir);
}

/* Runs in the grandchild of a helper: becomes the server, reporting readiness (or the error
 * that prevented it) on `report`. */
static noreturn void become_server(const struct plan *p, const struct server_paths *given, int report)
{
	struct server_paths local = *given, *sp = &local;
	daemon_begin(report, "berth-helper image-server");
	/* Every container costs it descriptors (its pidfd, its connection; the guard three): the
	 * soft limit (often 1024) is raised to the hard one, for it and its guard. */
	struct rlimit nofile;
	if (getrlimit(RLIMIT_NOFILE, &nofile) == 0 && nofile.rlim_cur < nofile.rlim_max) {
		nofile.rlim_cur = nofile.rlim_max;
		setrlimit(RLIMIT_NOFILE, &nofile);
	}
	/* A job's server waits for the job's next step while the job lives here. Looked for before
	 * the user namespace, in which root's processes would show no uid of root's. */
	int anchor = p->in_job ? job_anchor(sp->scope) : -1;
	if (p->in_job)
		note_job_runtime(p->runtime);
	enter_user_namespace(p->fakeroot);
	/* Not dumpable (once its maps are written: that needs /proc/self to be its own): no
	 * container, even a --fakeroot one with every capability in this user namespace, may reach
	 * this process's root, memory or fds through /proc, since its mm belongs to the host's. */
	prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
	/* Slave, not private: the host's later mounts (autofs homes, scratch) still show up. */
	if (mount("none", "/", NULL, MS_REC | MS_SLAVE, NULL) != 0)
		fail_errno("cannot make the image server's mounts private");
	open_server_dirs(sp);
	if ((mkdir(sp->mnt, 0700) != 0 && errno != EEXIST) || (mkdir(sp->work, 0700) != 0 && errno != EEXIST))
		fail_errno("cannot create the directories in %s", sp->dir);
	if (mount("tmpfs", sp->work, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0700") != 0)
		fail_errno("cannot mount a tmpfs on %s", sp->work);
	guard_chan = start_guard(p->image, sp); /* from here on, this is the guard's child */
	struct fuse_session *se = NULL;
	if (p->image_is_dir)
		bind_image_dir(p->image, sp->mnt);
	else
		se = fuse_mount_image(p->image, p->image_offset, sp->mnt);

	int listener = listen_on(sp->sock);
	guard_listening(guard_chan, sp->sock);
	if (chdir("/") != 0)
		fail_errno("cannot enter /");
	/* The threads start before the server says it is ready: a failure is reported. */
	int gone = se ? fuse_serve_in_threads(se, serving_threads()) : -1;
	daemon_ready();
	serve(sp, se, gone, listener, anchor >= 0 ? p->joblinger : p->linger, anchor, NULL);
}

int listen_on(const char *path)
{
	unlink(path);
	struct sockaddr_un addr = { .sun_family = AF_UNIX };
	if (strlen(path) >= sizeof addr.sun_path)
		fail("the runtime directory path is too long for a socket: %s (set BERTH_RUNTIME_DIR to a shorter one)", path);
	strcpy(addr.sun_path, path);
	int listener = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (listener < 0 || bind(listener, (struct sockaddr *)&addr, sizeof addr) != 0 || listen(listener, 1024) != 0)
		fail_errno("cannot listen on %s", path);
	chmod(path, 0600);
	return listener;
}

void daemon_begin(int report, const char *title)
{
	setsid();
	if (title)
		set_title(title);
	/* Errors go to the starting helper, which prints them, through the report pipe. Nothing
	 * else of the helper's is kept: above all not its lock, which flock ties to the file
	 * description and would keep held. */
	dup2(report, STDERR_FILENO);
	close_range(3, ~0U, 0);
}

void daemon_ready(void)
{
	int devnull = open("/dev/null", O_RDWR);
	dup2(devnull, STDIN_FILENO);
	dup2(devnull, STDOUT_FILENO);
	/* stderr was the report pipe: replacing it with /dev/null is EOF without a message: ready. */
	dup2(devnull, STDERR_FILENO);
	if (devnull > STDERR_FILENO)
		close(devnull);
	signal(SIGPIPE, SIG_IGN);
}

void start_detached(const struct plan *p, const struct server_paths *sp, become_fn become)
{
	int pipefd[2];
	if (pipe2(pipefd, O_CLOEXEC) != 0)
		fail_errno("cannot create a pipe");
	/* The server is nobody's child: it outlives this container. */
	if (fork_orphan() == 0) {
		close(pipefd[0]);
		become(p, sp, pipefd[1]);
	}
	close(pipefd[1]);
	char msg[4096];
	ssize_t len, total = 0;
	while ((len = read(pipefd[0], msg + total, sizeof msg - 1 - (size_t)total)) > 0)
		total += len;
	close(pipefd[0]);
	if (total > 0) {
		/* The server already wrote "berth: error: ..."; pass it on verbatim. */
		msg[total] = '\0';
		fputs(msg, stderr);
		_exit(BERTH_EXIT_SETUP);
	}
}

int attach_image(const struct plan *p, struct server_paths *sp)
{
	p_runtime = p->runtime;
	key_paths(p, sp);
	int lock = lock_path(sp->lock, 0);
	int sock = connect_to(sp->sock);
	if (sock < 0) {
		start_detached(p, sp, become_server);
		if ((sock = connect_to(sp->sock)) < 0)
			fail_errno("the image server for %s did not start", p->image);
	}
	/* A server that accepted but does not answer (stopped, wedged) must not hang the start. */
	struct timeval limit = { WATCH_ANSWER_MS / 1000, 0 };
	setsockopt(sock, SOL_SOCKET, SO_RCVTIMEO, &limit, sizeof limit);
	char err[512];
	if (receive_namespaces(sock, "image server", err, sizeof err) != 0)
		fail("%s", errno == ECONNREFUSED ? "the image server closed the connection without answering"
			   : errno == EAGAIN ? "the image server did not answer in 30 s; stop it (berth-helper image-server processes) and try again"
					     : err);
	limit.tv_sec = 0; /* the connection stays open; what comes later has its own limits */
	setsockopt(sock, SOL_SOCKET, SO_RCVTIMEO, &limit, sizeof limit);
	close(lock);
	return sock;
}

int watch_as_instance(const char *runtime, const char *server)
{
	/* Only a server directly in the caller's proven runtime directory: img-KEY/sock. */
	size_t len = strlen(runtime);
	const char *name = server + len + 1;
	if (strncmp(server, runtime, len) != 0 || server[len] != '/' || strncmp(name, "img-", 4) != 0 || strchr(name, '/') != strrchr(name, '/') ||
	    strcmp(strrchr(name, '/') ? strrchr(name, '/') : "", "/sock") != 0)
		return -1;
	p_runtime = runtime;
	int sock = connect_to(server);
	if (sock < 0)
		return -1;
	struct timeval limit = { WATCH_ANSWER_MS / 1000, 0 };
	setsockopt(sock, SOL_SOCKET, SO_RCVTIMEO, &limit, sizeof limit);
	/* Its namespaces come first, as to any container: this one joins the instance's instead. */
	char byte, ctl[CMSG_SPACE(NS_MAX * sizeof(int))];
	struct iovec iov = { .iov_base = &byte, .iov_len = 1 };
	struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl, .msg_controllen = sizeof ctl };
	ssize_t got = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC);
	int fds[NS_MAX];
	size_t n = received_fds(&msg, fds, NS_MAX);
	for (size_t i = 0; i < n; i++)
		close(fds[i]);
	if (got != 1)
		fail("the image server of the instance closed the connection without answering; the instance may be ending");
	ask_to_be_watched(sock, -1);
	close(sock);
	return 0;
}

void ask_to_be_watched(int sock, int note)
{
	ask_to_be_watched_on(sock, STDERR_FILENO, note);
}

void ask_to_be_watched_on(int sock, int err, int note)
{
	/* The guard takes the first as stderr: when it is closed (2>&-), /dev/null stands in. */
	int fds[2] = { err, note }, n = note >= 0 ? 2 : 1;
	if (fcntl(err, F_GETFD) < 0 && (fds[0] = open("/dev/null", O_WRONLY | O_CLOEXEC)) < 0)
		fail_errno("cannot open /dev/null");
	if (send_with_fds(sock, "watch\n", 6, fds, (size_t)n, MSG_NOSIGNAL) != 6)
		fail_errno("cannot register the container with the image server");
	if (fds[0] != err)
		close(fds[0]);
	/* Its answer: the guard has it (read_report). */
	int w = watch_answer(sock);
	if (w == 0)
		fail("the image server ended before it took the container; the image may be corrupt (convert it again, or check it: rdsquashfs -l /)");
	if (w == 'n')
		fail("the image server cannot watch more containers now (its guard is full, or out of descriptors: see ulimit -n); try again when some have ended");
	if (w != 'w')
		fail("the image server did not take the container (no answer in %d s); try again, or stop it (berth-helper image-server processes)",
		     WATCH_ANSWER_MS / 1000);
}

void watch_tasks_through(int sock)
{
	upstream = sock;
}

void report_overlay(int sock, pid_t overlay)
{
	char msg[32];
	int len = snprintf(msg, sizeof msg, "overlay %d\n", overlay);
	if (write(sock, msg, (size_t)len) != len)
		fail_errno("cannot tell the image server about fuse-overlayfs");
}
