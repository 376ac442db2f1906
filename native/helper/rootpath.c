/* Paths inside the container's root while berth-helper builds it: every lookup goes through
 * openat2(RESOLVE_IN_ROOT), so a symlink in the image resolves inside the root as it would for the
 * container, and every file, directory and symlink the helper makes there is created by one
 * mkdirat, symlinkat or openat(O_CREAT|O_EXCL|O_NOFOLLOW) in a directory so opened: nothing is
 * ever created through a symlink, and never on the host through one (a directory bound in). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/openat2.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "root.h"

#define MAX_SYMLINKS 40 /* the kernel's own limit on symlinks in one lookup (path_resolution(7)) */

noreturn void op_fail(const struct op *op, const char *what)
{
	fail_errno("%s %s (%s)", what, op->target, op->origin);
}

static int open_in_root_how(int rootfd, const char *path, int flags, mode_t mode, unsigned long long resolve)
{
	struct open_how how = {
		.flags = (unsigned long long)(flags | O_CLOEXEC),
		.mode = (flags & O_CREAT) ? mode : 0,
		.resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS | resolve,
	};
	int fd;
	/* RESOLVE_IN_ROOT answers EAGAIN when a rename or a mount anywhere on the system raced a ".."
	 * of the path (openat2(2)); a relative symlink in an image climbs with "..". Ask again. */
	for (int i = 0; (fd = (int)syscall(SYS_openat2, rootfd, path, &how, sizeof how)) < 0 && errno == EAGAIN && i < 64; i++)
		;
	return fd;
}

int open_in_root(int rootfd, const char *path, int flags, mode_t mode)
{
	return open_in_root_how(rootfd, path, flags, mode, 0);
}

int is_own(const struct root *r, int fd)
{
	int id = mount_id(fd);
	for (size_t i = 0; i < r->nown; i++)
		if (r->own[i] == id)
			return 1;
	return 0;
}

void add_own(struct root *r, int fd)
{
	int id = mount_id(fd);
	if (id < 0)
		fail_errno("cannot find the mount of the container's root in /proc/self/fdinfo");
	if (r->nown < sizeof r->own / sizeof *r->own)
		r->own[r->nown++] = id; /* past 64 tmpfs mounts, later ones count as the host's: stricter */
}

/* Creates `name` in `dir` without following a symlink there: mkdirat and symlinkat never do, and
 * O_CREAT|O_EXCL fails on any existing name, a dangling symlink included (open(2)). */
static int create_node(int dir, const char *name, enum node kind, const char *link)
{
	if (kind == NODE_DIR)
		return mkdirat(dir, name, 0755);
	if (kind == NODE_SYMLINK)
		return symlinkat(link, dir, name);
	int fd = openat(dir, name, O_CREAT | O_EXCL | O_NOFOLLOW | O_WRONLY | O_NONBLOCK | O_CLOEXEC, 0644);
	if (fd < 0)
		return -1;
	close(fd);
	return 0;
}

/* About to create `name` in `dir`, reached as path[0, name): fine on the container's own
 * filesystems; in a directory bound from the host (your home, /tmp) only where the plan's path
 * leads there without a symlink. Otherwise an image whose /data is a symlink to /home/you/x
 * would have `--bind SRC:/data` create x in your real home. */
static void may_create(const struct root *r, const struct op *op, int dir, char *path, char *name, int followed)
{
	if (is_own(r, dir))
		return;
	char saved = *name;
	*name = '\0';
	int direct = followed ? -1 : open_in_root_how(r->fd, path, O_PATH | O_DIRECTORY, 0, RESOLVE_NO_SYMLINKS);
	int err = errno;
	*name = saved;
	if (direct >= 0) {
		close(direct);
		return;
	}
	if (!followed && err != ELOOP) {
		errno = err;
		op_fail(op, "cannot open the directory of");
	}
	fail("cannot create %s (%s): a symlink on the way leads it to %s, in a directory bound from the host; berth "
	     "creates nothing on the host through a symlink (name the real path, or make the target first)",
	     op->target, op->origin, path);
}

#define FOLLOW (-2)

/* path[0, name) + name is a dangling symlink in `dir`, followed by `rest`: rewrites path as the
 * link's target (from the root if absolute, else from the link's directory), then the rest. */
static int follow_link(int dir, char *path, size_t size, const char *name, const char *rest)
{
	char link[PATH_MAX], next[PATH_MAX];
	ssize_t n = readlinkat(dir, name, link, sizeof link - 1);
	if (n < 0)
		return -1; /* EINVAL: not a symlink, yet missing (a race) */
	link[n] = '\0';
	int dirlen = link[0] == '/' ? 0 : (int)(name - path);
	int len = snprintf(next, sizeof next, "%.*s%s%s%s", dirlen, path, link, *rest ? "/" : "", rest);
	if (len < 0 || (size_t)len >= size || (size_t)len >= sizeof next) {
		errno = ENAMETOOLONG;
		return -1;
	}
	memcpy(path, next, (size_t)len + 1);
	return FOLLOW;
}

/* Creates what is missing of name's component (the last one as `kind`, others as directories) in
 * `dir`; returns its O_PATH fd, -1, or FOLLOW where it is a dangling symlink (path rewritten). */
static int create_component(const struct root *r, const struct op *op, int dir, char *path, size_t size,
			    char *name, const char *rest, enum node kind, const char *link, int followed)
{
	int fd = open_in_root(r->fd, path, O_PATH, 0);
	if (fd >= 0 || errno != ENOENT)
		return fd;
	may_create(r, op, dir, path, name, followed);
	if (create_node(dir, name, *rest ? NODE_DIR : kind, link) == 0 || (errno == EEXIST && !*rest && kind == NODE_SYMLINK))
		return openat(dir, name, O_PATH | O_NOFOLLOW | O_CLOEXEC); /* made it, or an existing one wins */
	if (errno != EEXIST)
		return -1;
	/* Something is there: a symlink that resolves inside the root, or a dangling one. */
	fd = open_in_root(r->fd, path, O_PATH, 0);
	if (fd >= 0 || errno != ENOENT)
		return fd;
	return follow_link(dir, path, size, name, rest);
}

/* One walk of `path` from the root; returns the last component's O_PATH fd, -1, or FOLLOW. */
static int create_along(const struct root *r, const struct op *op, char *path, size_t size, enum node kind,
			const char *link, int followed)
{
	int dir = open_in_root(r->fd, "/", O_PATH | O_DIRECTORY, 0);
	for (char *name = path + strspn(path, "/"); dir >= 0 && *name;) {
		char *end = name + strcspn(name, "/");
		char *rest = end + strspn(end, "/");
		char saved = *end;
		*end = '\0';
		int fd = create_component(r, op, dir, path, size, name, rest, kind, link, followed);
		if (fd != FOLLOW)
			*end = saved;
		close(dir);
		if (fd < 0 || !*rest)
			return fd;
		dir = fd;
		name = rest;
	}
	return dir; /* the root itself */
}

/* Opens `target` inside the root (O_PATH), creating what is missing: directories on the way, the
 * last component as `kind`. Each creation is one mkdirat, symlinkat or O_CREAT|O_EXCL|O_NOFOLLOW
 * in a directory opened with RESOLVE_IN_ROOT, so no symlink is ever followed out of the root. A
 * dangling symlink on the way (an image's /etc/resolv.conf -> ../run/systemd/resolve/stub-resolv.conf)
 * is followed inside the root, as RESOLVE_IN_ROOT resolves it, and its target created there. */
int open_creating(const struct root *r, const struct op *op, const char *target, enum node kind, const char *link)
{
	char path[PATH_MAX];
	if (snprintf(path, sizeof path, "%s", target) >= (int)sizeof path) {
		errno = ENAMETOOLONG;
		return -1;
	}
	for (int hops = 0; hops <= MAX_SYMLINKS; hops++) {
		int fd = create_along(r, op, path, sizeof path, kind, link, hops > 0);
		if (fd != FOLLOW)
			return fd;
	}
	errno = ELOOP;
	return -1;
}

