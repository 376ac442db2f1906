/* Proving paths private to a user (trusted.h). The rule is that of systemd's chase(CHASE_SAFE)
 * and of sshd's StrictModes: a path is only as safe as every directory on the way to it, since
 * whoever can write to a directory (without the sticky bit) can rename what is in it. */
#define _GNU_SOURCE
#include "trusted.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/sysmacros.h>
#include <stdlib.h>
#include <unistd.h>

#define MAX_LINKS 8

int format(char *out, size_t size, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(out, size, fmt, ap);
	va_end(ap);
	return n < 0 || (size_t)n >= size ? -1 : 0;
}

#define FUSE_SUPER_MAGIC 0x65735546

/* On a FUSE mount, owners and modes are whatever its server says: such a mount is believed only
 * when root or uid made it (its user_id= in mountinfo). fusermount3 is setuid: any user can
 * mount one, and with user_allow_other in /etc/fuse.conf, others see it. */
static int mounted_by_trusted(int fd, const struct stat *st, uid_t uid)
{
	struct statfs fs;
	if (fstatfs(fd, &fs) != 0)
		return 0;
	if (fs.f_type != FUSE_SUPER_MAGIC)
		return 1;
	FILE *f = fopen("/proc/self/mountinfo", "re");
	char *line = NULL;
	size_t cap = 0;
	int ok = 0;
	while (f && getline(&line, &cap, f) > 0) {
		unsigned maj, min;
		const char *opts = strstr(line, " - ");
		if (sscanf(line, "%*u %*u %u:%u", &maj, &min) != 2 || maj != major(st->st_dev) || min != minor(st->st_dev) || !opts)
			continue;
		const char *user = strstr(opts, "user_id=");
		unsigned owner;
		ok = user && sscanf(user, "user_id=%u", &owner) == 1 && (owner == 0 || owner == (unsigned)uid);
		break;
	}
	free(line);
	if (f)
		fclose(f);
	return ok;
}

/* Root's or uid's, and no one else can rename what it holds. */
static int safe_to_pass(int fd, const struct stat *st, uid_t uid)
{
	return (st->st_uid == 0 || st->st_uid == uid) && (!(st->st_mode & 022) || (st->st_mode & S_ISVTX)) && mounted_by_trusted(fd, st, uid);
}

static int refuse(char *err, size_t n, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int refuse(char *err, size_t n, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(err, n, fmt, ap);
	va_end(ap);
	return -1;
}

/* An O_PATH fd of the directory `path` names, each directory on the way safe to pass. */
static int walk(const char *path, uid_t uid, int links, char *err, size_t n)
{
	char buf[PATH_MAX], seen[PATH_MAX] = "";
	if (path[0] != '/')
		return refuse(err, n, "%s is not an absolute path", path);
	if (format(buf, sizeof buf, "%s", path) != 0)
		return refuse(err, n, "%s is too long", path);
	int fd = open("/", O_PATH | O_DIRECTORY | O_CLOEXEC);
	struct stat st;
	if (fd < 0 || fstat(fd, &st) != 0 || !safe_to_pass(fd, &st, uid)) {
		if (fd >= 0)
			close(fd);
		/* Inside a user namespace that does not map root, root's files are the overflow uid's. */
		return refuse(err, n, "/ appears owned by uid %u, not root: berth runs in a user namespace that does not map root, where root's "
				      "directories cannot be told from other users'; run berth outside it", (unsigned)st.st_uid);
	}
	char *save = NULL;
	for (char *c = strtok_r(buf, "/", &save); c; c = strtok_r(NULL, "/", &save)) {
		if (strcmp(c, ".") == 0)
			continue;
		if (strcmp(c, "..") == 0) {
			close(fd);
			return refuse(err, n, "%s contains '..'", path);
		}
		size_t len = strlen(seen);
		if (format(seen + len, sizeof seen - len, "/%s", c) != 0) {
			close(fd);
			return refuse(err, n, "%s is too long", path);
		}
		int next = openat(fd, c, O_PATH | O_NOFOLLOW | O_CLOEXEC);
		if (next < 0 || fstat(next, &st) != 0) {
			int e = errno;
			close(fd);
			return refuse(err, n, "%s: %s", seen, strerror(e));
		}
		if (S_ISLNK(st.st_mode)) {
			/* A link is as good as whoever could have made it: root's or the user's own. */
			char target[PATH_MAX], rest[PATH_MAX], joined[PATH_MAX];
			ssize_t t = readlinkat(fd, c, target, sizeof target - 1);
			close(next);
			close(fd);
			if (st.st_uid != 0 && st.st_uid != uid)
				return refuse(err, n, "%s is a symbolic link made by uid %u, who could point it anywhere", seen, (unsigned)st.st_uid);
			if (t < 0 || links >= MAX_LINKS)
				return refuse(err, n, "%s: %s", seen, t < 0 ? strerror(errno) : "too many symbolic links");
			target[t] = '\0';
			const char *tail = save && *save ? save : "";
			*strrchr(seen, '/') = '\0';
			format(rest, sizeof rest, "%s", tail);
			if (format(joined, sizeof joined, "%s%s%s/%s", target[0] == '/' ? "" : seen, target[0] == '/' ? "" : "/", target, rest) != 0)
				return refuse(err, n, "%s is too long", path);
			return walk(joined, uid, links + 1, err, n);
		}
		close(fd);
		fd = next;
		if (!S_ISDIR(st.st_mode)) {
			close(fd);
			return refuse(err, n, "%s is not a directory", seen);
		}
		if (!safe_to_pass(fd, &st, uid)) {
			int fuse = !mounted_by_trusted(fd, &st, uid);
			close(fd);
			return refuse(err, n, "%s is owned by uid %u with mode %04o%s: someone other than root and uid %u can replace what it holds",
				      seen, (unsigned)st.st_uid, (unsigned)(st.st_mode & 07777), fuse ? " on a FUSE mount another user made" : "",
				      (unsigned)uid);
		}
	}
	return fd;
}

/* Splits PATH into its directory (walked) and its last component. */
static int parent_of(const char *path, uid_t uid, char *name, size_t namesize, char *err, size_t n)
{
	char dir[PATH_MAX];
	if (format(dir, sizeof dir, "%s", path) != 0)
		return refuse(err, n, "%s is too long", path);
	size_t len = strlen(dir);
	while (len > 1 && dir[len - 1] == '/')
		dir[--len] = '\0';
	char *slash = strrchr(dir, '/');
	if (!slash || !slash[1] || strcmp(slash + 1, ".") == 0 || strcmp(slash + 1, "..") == 0)
		return refuse(err, n, "%s is not an absolute path to a file or directory", path);
	if (format(name, namesize, "%s", slash + 1) != 0)
		return refuse(err, n, "%s is too long", path);
	if (slash == dir)
		slash[1] = '\0';
	else
		*slash = '\0';
	return walk(dir, uid, 0, err, n);
}

int open_safe_dir(const char *path, uid_t uid, char *err, size_t n)
{
	return walk(path, uid, 0, err, n);
}

int open_private_dir(const char *path, uid_t uid, int create, char *err, size_t n)
{
	char name[NAME_MAX + 1];
	int parent = parent_of(path, uid, name, sizeof name, err, n);
	if (parent < 0)
		return -1;
	int fd = openat(parent, name, O_PATH | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0 && errno == ENOENT && create) {
		if (mkdirat(parent, name, 0700) != 0 && errno != EEXIST) {
			int e = errno;
			close(parent);
			return refuse(err, n, "cannot create %s: %s", path, strerror(e));
		}
		fd = openat(parent, name, O_PATH | O_NOFOLLOW | O_CLOEXEC);
	}
	int e = errno;
	close(parent);
	struct stat st;
	if (fd < 0 || fstat(fd, &st) != 0)
		return refuse(err, n, "%s: %s", path, strerror(fd < 0 ? e : errno));
	const char *why = S_ISLNK(st.st_mode)		  ? "is a symbolic link, not a directory"
			  : !S_ISDIR(st.st_mode)		  ? "is not a directory"
			  : st.st_uid != uid			  ? "belongs to someone else"
			  : (st.st_mode & 077)			  ? "is open to others"
			  : !mounted_by_trusted(fd, &st, uid) ? "is on a FUSE mount another user made"
							  : NULL;
	if (why) {
		close(fd);
		return refuse(err, n, "%s %s (owner uid %u, mode %04o; it must be uid %u's, mode 0700): another user may have made it to take over yours",
			      path, why, (unsigned)st.st_uid, (unsigned)(st.st_mode & 07777), (unsigned)uid);
	}
	return fd;
}

int open_owned_file(const char *path, uid_t uid, char *err, size_t n)
{
	char name[NAME_MAX + 1];
	int parent = parent_of(path, uid, name, sizeof name, err, n);
	if (parent < 0) {
		errno = EPERM;
		return -1;
	}
	/* O_NONBLOCK: a FIFO planted in its place must not hang us before fstat says what it is. */
	int fd = openat(parent, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
	int e = errno;
	close(parent);
	struct stat st;
	if (fd < 0) {
		refuse(err, n, "%s: %s", path, e == ELOOP ? "is a symbolic link" : strerror(e));
		errno = e == ELOOP ? EPERM : e;
		return -1;
	}
	/* A second name (st_nlink) could be another user's hard link to some other file of uid's. */
	if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_uid != uid || (st.st_mode & 022) || st.st_nlink != 1 ||
	    !mounted_by_trusted(fd, &st, uid)) {
		close(fd);
		refuse(err, n, "%s is not a file of uid %u's that only they can write, under one name, on a file system no other user mounted "
			       "(owner uid %u, mode %04o, %lu names): another user may have placed it",
		       path, (unsigned)uid, (unsigned)st.st_uid, (unsigned)(st.st_mode & 07777), (unsigned long)st.st_nlink);
		errno = EPERM;
		return -1;
	}
	fcntl(fd, F_SETFL, 0);
	return fd;
}
