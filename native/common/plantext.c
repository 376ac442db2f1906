#define _GNU_SOURCE
#include "plantext.h"

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
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

int lock_file(const char *path, int nonblock)
{
	return lock_file_at(AT_FDCWD, path, nonblock);
}

int lock_file_at(int dirfd, const char *path, int nonblock)
{
	for (;;) {
		int fd = openat(dirfd, path, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
		if (fd < 0)
			return -1;
		if (flock(fd, LOCK_EX | (nonblock ? LOCK_NB : 0)) != 0) {
			int err = errno;
			close(fd);
			errno = err;
			return -1;
		}
		struct stat held, now;
		if (fstat(fd, &held) == 0 && fstatat(dirfd, path, &now, 0) == 0 && held.st_ino == now.st_ino && held.st_dev == now.st_dev)
			return fd;
		close(fd);
	}
}

int step_dir(char *out, size_t size, const char *runtime, const char *job, const char *step, const char *name, const char *node)
{
	int n = name && *name ? snprintf(out, size, "%s/named-%s-%s-%s", runtime, job, name, node)
			      : snprintf(out, size, "%s/step-%s.%s-%s", runtime, job, step, node);
	return n < 0 || (size_t)n >= size ? -1 : 0;
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
	char byte, ctl[CMSG_SPACE(2 * sizeof(int))];
	struct iovec iov = { .iov_base = &byte, .iov_len = 1 };
	struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl, .msg_controllen = sizeof ctl };
	ssize_t got = recvmsg(fd, &msg, MSG_CMSG_CLOEXEC);
	struct cmsghdr *c = got == 1 ? CMSG_FIRSTHDR(&msg) : NULL;
	/* The connection stays open (not close-on-exec would leak it into the job): the server
	 * tracks this process by its pid, not by the connection. */
	close(fd);
	if (!c || c->cmsg_type != SCM_RIGHTS || c->cmsg_len != CMSG_LEN(2 * sizeof(int))) {
		snprintf(err, errsize, "the container server at %s is shutting down", sock);
		errno = ECONNREFUSED;
		return -1;
	}
	int ns[2];
	memcpy(ns, CMSG_DATA(c), sizeof ns);
	int ok = setns(ns[0], CLONE_NEWUSER) == 0 && setns(ns[1], CLONE_NEWNS) == 0;
	int e = errno;
	close(ns[0]);
	close(ns[1]);
	if (!ok) {
		snprintf(err, errsize, "cannot join the container's namespaces: %s", strerror(e));
		errno = EPERM;
		return -1;
	}
	return 0;
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
	for (int tries = 0;; tries++) {
		if (join_container(sock, err, errsize) == 0)
			return 0;
		if (errno == EPERM || tries == 4)
			return -1; /* not ours, or not joinable: starting another would not help */
		if (start(ctx) != 0) {
			snprintf(err, errsize, "the step's container did not start (see above)");
			return -1;
		}
	}
}
