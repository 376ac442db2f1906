#define _GNU_SOURCE
#include "plantext.h"
#include "../contract.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/nsfs.h>
#include <poll.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

char *plan_unescape(const char *s)
{
	if (strcmp(s, "-") == 0)
		return strdup("");
	char *out = malloc(strlen(s) + 1), *w = out;
	if (!out)
		return NULL;
	for (const char *r = s; *r; r++) {
		if (r[0] == '\\' && r[1] >= '0' && r[1] <= '3' && r[2] >= '0' && r[2] <= '7' && r[3] >= '0' && r[3] <= '7') {
			*w++ = (char)((r[1] - '0') * 64 + (r[2] - '0') * 8 + (r[3] - '0'));
			r += 3;
		} else {
			*w++ = *r;
		}
	}
	*w = '\0';
	return out;
}

static int lock_owned_at(int dirfd, const char *path, int nonblock, uid_t owner)
{
	for (;;) {
		int fd = openat(dirfd, path, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK, 0600);
		if (fd < 0)
			return -1;
		struct stat st;
		int refused = fstat(fd, &st) != 0 ? errno : !S_ISREG(st.st_mode) ? EINVAL : owner != (uid_t)-1 && st.st_uid != owner ? EPERM : 0;
		if (refused || flock(fd, LOCK_EX | (nonblock ? LOCK_NB : 0)) != 0) {
			int err = refused ? refused : errno;
			close(fd);
			errno = err;
			return -1;
		}
		struct stat now;
		if (fstatat(dirfd, path, &now, AT_SYMLINK_NOFOLLOW) == 0 && st.st_ino == now.st_ino && st.st_dev == now.st_dev)
			return fd;
		close(fd);
	}
}

int lock_file(const char *path, int nonblock)
{
	return lock_owned_at(AT_FDCWD, path, nonblock, (uid_t)-1);
}

int lock_file_at(int dirfd, const char *path, int nonblock)
{
	return lock_owned_at(dirfd, path, nonblock, (uid_t)-1);
}

int lock_file_owned(const char *path, uid_t owner, int nonblock)
{
	return lock_owned_at(AT_FDCWD, path, nonblock, owner);
}

int step_dir(char *out, size_t size, const char *runtime, const char *job, const char *step, const char *name, const char *node)
{
	int n = name && *name ? snprintf(out, size, "%s/named-%s-%s-%s", runtime, job, name, node)
			      : snprintf(out, size, "%s/step-%s.%s-%s", runtime, job, step, node);
	return n < 0 || (size_t)n >= size ? -1 : 0;
}

int socket_answers(const char *sock)
{
	struct sockaddr_un addr = { .sun_family = AF_UNIX };
	if (strlen(sock) >= sizeof addr.sun_path)
		return -1;
	memcpy(addr.sun_path, sock, strlen(sock) + 1);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	int ok = fd >= 0 && connect(fd, (struct sockaddr *)&addr, sizeof addr) == 0;
	if (fd >= 0)
		close(fd);
	return ok;
}

ssize_t read_proc(pid_t pid, const char *name, char *buf, size_t size)
{
	char path[64];
	snprintf(path, sizeof path, "/proc/%d/%s", (int)pid, name);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	ssize_t len = fd >= 0 ? read(fd, buf, size - 1) : -1;
	if (fd >= 0)
		close(fd);
	buf[len > 0 ? len : 0] = '\0';
	return len;
}

const char *stat_field(const char *stat, int n)
{
	const char *p = strrchr(stat, ')');
	if (!p || p[1] != ' ' || n < 3)
		return NULL;
	for (p += 2; n > 3; n--) {
		if (!(p = strchr(p, ' ')))
			return NULL;
		p++;
	}
	return *p ? p : NULL;
}

int job_scope(char *out, size_t size, const char *stepdir)
{
	const char *name = strrchr(stepdir, '/') ? strrchr(stepdir, '/') + 1 : stepdir;
	size_t prefix = strncmp(name, "step-", 5) == 0 ? 5 : strncmp(name, "named-", 6) == 0 ? 6 : 0;
	size_t digits = prefix ? strspn(name + prefix, "0123456789") : 0;
	char end = digits ? name[prefix + digits] : 0;
	if (!digits || (end != '.' && end != '-'))
		return -1;
	int n = snprintf(out, size, "slurm-%.*s", (int)digits, name + prefix);
	return n < 0 || (size_t)n >= size ? -1 : 0;
}

int step_scope(char *out, size_t size, const char *cgroups, int kept)
{
	/* Slurm's cgroup plugins (v1 and v2) name a step's job_JOB/step_STEP; STEP is a number
	 * (with +N for a heterogeneous job's component), batch, extern or interactive: those
	 * three last as long as the job, and a server of theirs may be the job's. */
	for (const char *at = cgroups; (at = strstr(at, "/job_")); at++) {
		const char *job = at + 5;
		size_t digits = strspn(job, "0123456789");
		if (!digits || strncmp(job + digits, "/step_", 6) != 0)
			continue;
		const char *step = job + digits + 6;
		size_t len = strspn(step, "0123456789+abcdefghijklmnopqrstuvwxyz");
		if (!len || (step[len] != '/' && step[len] != '\n' && step[len] != '\0'))
			continue;
		if (step[0] < '0' || step[0] > '9')
			return -1;
		/* The line's hierarchy: v2's is 0::PATH, which berth's plugin does not move from. */
		const char *line = at;
		while (line > cgroups && line[-1] != '\n')
			line--;
		if (kept && strncmp(line, "0::", 3) != 0)
			return -1;
		int n = snprintf(out, size, "slurm-%.*s.%.*s", (int)digits, job, (int)len, step);
		return n < 0 || (size_t)n >= size ? -2 : 0;
	}
	return -1;
}

int watch_answer(int sock)
{
	struct pollfd answer = { .fd = sock, .events = POLLIN };
	int ready;
	while ((ready = poll(&answer, 1, WATCH_ANSWER_MS)) < 0 && errno == EINTR)
		;
	char w;
	ssize_t got = ready > 0 ? recv(sock, &w, 1, 0) : -1;
	return got == 1 ? w : got == 0 ? 0 : -1;
}

/* Asks the step's server, on the joined connection, to have this task watched (with its stderr,
 * or /dev/null where it has none), and waits for the yes. */
static int watched(int fd, char *err, size_t errsize)
{
	int out = fcntl(STDERR_FILENO, F_GETFD) < 0 ? open("/dev/null", O_WRONLY | O_CLOEXEC) : STDERR_FILENO;
	ssize_t sent = out >= 0 ? send_with_fds(fd, "watch\n", 6, &out, 1, MSG_NOSIGNAL) : -1;
	if (out != STDERR_FILENO && out >= 0)
		close(out);
	int w = sent == 6 ? watch_answer(fd) : -1;
	if (w == 'w')
		return 0;
	snprintf(err, errsize, "%s", w == 'n' ? "the image server cannot watch this task (its guard is full, or out of descriptors: see ulimit -n); try again when some have ended"
					     : "the step's container did not answer (it may be ending); try again");
	return -1;
}

int join_container(const char *sock, char *err, size_t errsize)
{
	struct sockaddr_un addr = { .sun_family = AF_UNIX };
	if (strlen(sock) >= sizeof addr.sun_path) {
		snprintf(err, errsize, "the socket path %s is too long (set a shorter runtime directory)", sock);
		errno = ENAMETOOLONG;
		return -1;
	}
	strcpy(addr.sun_path, sock);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&addr, sizeof addr) != 0) {
		int e = errno;
		if (fd >= 0)
			close(fd);
		snprintf(err, errsize, "no container is served at %s: %s", sock, strerror(e));
		errno = e == ENOENT ? ENOENT : ECONNREFUSED;
		return -1;
	}
	if (!peer_is_self(fd)) {
		close(fd);
		snprintf(err, errsize, "the container server at %s is not yours; refusing its namespaces", sock);
		errno = EPERM;
		return -1;
	}
	/* The connection is closed once joined (left open, it would leak into the job): the server
	 * tracks this process by its pid, not by the connection. Before that, this task asks to be
	 * watched, with its stderr, and waits for the yes: the image server's guard then stops it
	 * with the reason if the image server ends under the step. */
	int rv = receive_namespaces(fd, "container server", err, errsize);
	int e = errno;
	if (rv == 0 && watched(fd, err, errsize) != 0) {
		rv = -1;
		e = EPROTO;
	}
	close(fd);
	if (rv != 0 && e == ECONNREFUSED)
		snprintf(err, errsize, "the container server at %s is shutting down", sock);
	errno = e;
	return rv;
}

ssize_t send_with_fds(int sock, const void *data, size_t len, const int *fds, size_t n, int flags)
{
	char ctl[CMSG_SPACE(NS_MAX * sizeof(int))];
	if (n > NS_MAX) {
		errno = EINVAL;
		return -1;
	}
	memset(ctl, 0, sizeof ctl);
	struct iovec iov = { .iov_base = (void *)data, .iov_len = len };
	struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl, .msg_controllen = CMSG_SPACE(n * sizeof(int)) };
	struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
	c->cmsg_level = SOL_SOCKET;
	c->cmsg_type = SCM_RIGHTS;
	c->cmsg_len = CMSG_LEN(n * sizeof(int));
	memcpy(CMSG_DATA(c), fds, n * sizeof(int));
	return sendmsg(sock, &msg, flags);
}

void send_namespaces(int sock, const int *fds, size_t n)
{
	send_with_fds(sock, "n", 1, fds, n, MSG_NOSIGNAL);
}

static int same_ns(int a, int b)
{
	struct stat x, y;
	return fstat(a, &x) == 0 && fstat(b, &y) == 0 && x.st_ino == y.st_ino && x.st_dev == y.st_dev;
}

/* fds[0] is the server's user namespace, the others namespaces owned by it or its ancestors
 * (down from the caller's own). */
static int join_namespaces(const int *fds, size_t n, const char *what, char *err, size_t errsize)
{
	int chain[NS_MAX], owner[NS_MAX], type[NS_MAX], done[NS_MAX] = { 0 }, depth = 0, ok = 1;
	for (size_t i = 0; i < NS_MAX; i++)
		owner[i] = -1;
	int mine = open("/proc/self/ns/user", O_RDONLY | O_CLOEXEC);
	/* From the server's user namespace up to the caller's: the ones to enter, outermost last. */
	int ns = ioctl(fds[0], NS_GET_NSTYPE) == CLONE_NEWUSER ? fcntl(fds[0], F_DUPFD_CLOEXEC, 0) : -1;
	while (ns >= 0 && !same_ns(ns, mine) && depth < NS_MAX) {
		chain[depth++] = ns;
		ns = ioctl(ns, NS_GET_PARENT);
	}
	ok = ns >= 0 && same_ns(ns, mine);
	if (ns >= 0)
		close(ns);
	/* Only what a container has of its own (a PID namespace cannot be entered this way). */
	for (size_t i = 1; ok && i < n; i++) {
		owner[i] = ioctl(fds[i], NS_GET_USERNS);
		type[i] = ioctl(fds[i], NS_GET_NSTYPE);
		ok = owner[i] >= 0 && (type[i] == CLONE_NEWNS || type[i] == CLONE_NEWIPC || type[i] == CLONE_NEWUTS || type[i] == CLONE_NEWNET);
	}
	if (!ok)
		snprintf(err, errsize, "the %s's namespaces are not nested in yours", what);
	for (int d = depth - 1; ok && d >= 0; d--) {
		if (setns(chain[d], CLONE_NEWUSER) != 0) {
			snprintf(err, errsize, "cannot join the %s's user namespace: %s", what, strerror(errno));
			ok = 0;
		}
		for (size_t i = 1; ok && i < n; i++)
			if (!done[i] && same_ns(owner[i], chain[d])) {
				if (setns(fds[i], type[i]) != 0) {
					snprintf(err, errsize, "cannot join the %s's %s namespace: %s", what,
						 type[i] == CLONE_NEWNS ? "mount" : type[i] == CLONE_NEWIPC ? "IPC" : type[i] == CLONE_NEWUTS ? "UTS" : "network", strerror(errno));
					ok = 0;
				}
				done[i] = 1;
			}
	}
	for (size_t i = 1; ok && i < n; i++)
		if (!done[i]) {
			snprintf(err, errsize, "the %s handed over a namespace that none of its user namespaces owns", what);
			ok = 0;
		}
	for (int d = 0; d < depth; d++)
		close(chain[d]);
	for (size_t i = 1; i < n; i++)
		if (owner[i] >= 0)
			close(owner[i]);
	if (mine >= 0)
		close(mine);
	errno = EPERM;
	return ok ? 0 : -1;
}

int receive_namespaces(int sock, const char *what, char *err, size_t errsize)
{
	char byte, ctl[CMSG_SPACE(NS_MAX * sizeof(int))];
	struct iovec iov = { .iov_base = &byte, .iov_len = 1 };
	struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl, .msg_controllen = sizeof ctl };
	ssize_t got = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC);
	struct cmsghdr *c = got == 1 ? CMSG_FIRSTHDR(&msg) : NULL;
	int fds[NS_MAX];
	size_t n = 0;
	if (c && c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
		n = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
		memcpy(fds, CMSG_DATA(c), n * sizeof(int));
	}
	int rv = -1;
	if (n >= 2 && !(msg.msg_flags & MSG_CTRUNC)) {
		rv = join_namespaces(fds, n, what, err, errsize);
	} else {
		int why = got < 0 && errno == EAGAIN ? EAGAIN : ECONNREFUSED; /* a receive that timed out: EAGAIN */
		snprintf(err, errsize, "the %s sent no namespaces", what);
		errno = why;
	}
	int e = errno;
	for (size_t i = 0; i < n; i++)
		close(fds[i]);
	errno = rv == 0 ? 0 : e;
	return rv;
}

unsigned long long fnv1a(unsigned long long h, const char *s)
{
	for (; *s; s++)
		h = (h ^ (unsigned char)*s) * 0x100000001b3ULL;
	return (h ^ 0xff) * 0x100000001b3ULL; /* a terminator, so that "ab"+"c" differs from "a"+"bc" */
}

int peer_is_self(int sock)
{
	struct ucred cred;
	socklen_t len = sizeof cred;
	return getsockopt(sock, SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0 && cred.uid == getuid();
}

int join_step(const char *sock, int (*start)(void *ctx), void *ctx, char *err, size_t errsize)
{
	for (int tries = 1;; tries++) {
		if (join_container(sock, err, errsize) == 0)
			return 0;
		if (errno == EPERM || tries == JOIN_TRIES)
			return -1; /* not ours, or not joinable: starting another would not help */
		if (start(ctx) != 0) {
			snprintf(err, errsize, "the step's container did not start (see above)");
			return -1;
		}
	}
}

static int push_value(char ***list, size_t *n, char *value)
{
	char **grown = realloc(*list, (*n + 1) * sizeof **list);
	if (!grown)
		return -1;
	grown[(*n)++] = value;
	*list = grown;
	return 0;
}

void free_step_env(struct step_env *e)
{
	for (size_t i = 0; i < e->nset; i++)
		free(e->set[i]);
	for (size_t i = 0; i < e->nunset; i++)
		free(e->unset[i]);
	for (size_t i = 0; i < e->ninputs; i++)
		free(e->inputs[i]);
	free(e->set), free(e->unset), free(e->inputs), free(e->cwd);
	memset(e, 0, sizeof *e);
}

static void close_file(FILE **f)
{
	if (*f)
		fclose(*f);
}

static void free_line(char **line)
{
	free(*line);
}

int read_step_env(int fd, struct step_env *e, char *err, size_t errsize)
{
	memset(e, 0, sizeof *e);
	__attribute__((cleanup(close_file))) FILE *in = fdopen(fd, "re");
	if (!in) {
		snprintf(err, errsize, "cannot read the step's plan: %s", strerror(errno));
		close(fd);
		return -1;
	}
	__attribute__((cleanup(free_line))) char *line = NULL;
	size_t cap = 0;
	while (getline(&line, &cap, in) > 0) {
		line[strcspn(line, "\n")] = '\0';
		char *space = strchr(line, ' ');
		if (!space)
			continue;
		*space = '\0';
		char ***list = NULL;
		size_t *n = NULL;
		if (strcmp(line, "env") == 0)
			list = &e->set, n = &e->nset;
		else if (strcmp(line, "unset") == 0)
			list = &e->unset, n = &e->nunset;
		else if (strcmp(line, "input") == 0)
			list = &e->inputs, n = &e->ninputs;
		else if (strcmp(line, "cwd") != 0)
			continue;
		char *value = plan_unescape(space + 1);
		if (value && list == &e->set && !strchr(value, '=')) {
			free(value); /* not NAME=VALUE: nothing to set */
			continue;
		}
		if (value && !list) {
			free(e->cwd);
			e->cwd = value;
		} else if (!value || push_value(list, n, value) != 0) {
			free(value);
			snprintf(err, errsize, "out of memory reading the step's plan");
			free_step_env(e);
			return -1;
		}
	}
	if (!e->cwd && !(e->cwd = strdup("/"))) {
		snprintf(err, errsize, "out of memory reading the step's plan");
		free_step_env(e);
		return -1;
	}
	return 0;
}

int step_inputs_known(const struct step_env *e, char *err, size_t errsize)
{
	static const char *const known[] = BERTH_STEP_PLAN_INPUTS;
	for (size_t i = 0; i < e->ninputs; i++) {
		size_t k = 0;
		while (k < sizeof known / sizeof *known && strcmp(known[k], e->inputs[i]) != 0)
			k++;
		if (k == sizeof known / sizeof *known) {
			snprintf(err, errsize, "the step's plan depends on %s, which this Slurm plugin does not know: berth and the plugin are from different versions", e->inputs[i]);
			return -1;
		}
	}
	return 0;
}

int apply_step_env(const struct step_env *e, const struct env_ops *ops, char *err, size_t errsize)
{
	for (size_t i = 0; i < e->nunset; i++)
		if (ops->unset(ops->ctx, e->unset[i]) != 0) {
			snprintf(err, errsize, "cannot remove %s from the task's environment", e->unset[i]);
			return -1;
		}
	for (size_t i = 0; i < e->nset; i++) {
		char *eq = strchr(e->set[i], '=');
		if (!eq)
			continue;
		*eq = '\0';
		int rv = ops->set(ops->ctx, e->set[i], eq + 1);
		*eq = '=';
		if (rv != 0) {
			snprintf(err, errsize, "cannot set %s in the task's environment", e->set[i]);
			return -1;
		}
	}
	return 0;
}

int enter_step(const char *sock, int (*start)(void *ctx), void *ctx, const struct step_env *e, const struct env_ops *ops, char *err,
	       size_t errsize)
{
	if (join_step(sock, start, ctx, err, errsize) != 0 || apply_step_env(e, ops, err, errsize) != 0)
		return -1;
	if (chdir(e->cwd) != 0) {
		snprintf(err, errsize, "cannot enter the working directory %s inside the container: %s", e->cwd, strerror(errno));
		return -1;
	}
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) {
		snprintf(err, errsize, "cannot set no_new_privs: %s", strerror(errno));
		return -1;
	}
	return 0;
}
