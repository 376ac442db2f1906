/* Mount flags for a whole tree: a bind that the plan makes read-only, nosuid, nodev or noexec
 * is so all the way down, its submounts included (the host's /sys with cgroup2 and the others
 * under it, a --bind SRC:DST:ro whose SRC holds a mount). mount_setattr(AT_RECURSIVE) does it in
 * one call (Linux 5.12); before that, each mount below is remounted from /proc/self/mountinfo
 * and checked, and the start fails where one cannot be. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/openat2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "root.h"

/* The flags of the mount that fd is on. A remount of a bind must repeat the ones the kernel
 * locked (those of a mount that came from a more privileged namespace, mount_namespaces(7)). */
unsigned long mount_flags(int fd)
{
	struct statvfs st;
	unsigned long f = 0;
	if (fstatvfs(fd, &st) != 0)
		return 0;
	if (st.f_flag & ST_RDONLY) f |= MS_RDONLY;
	if (st.f_flag & ST_NOSUID) f |= MS_NOSUID;
	if (st.f_flag & ST_NODEV) f |= MS_NODEV;
	if (st.f_flag & ST_NOEXEC) f |= MS_NOEXEC;
	if (st.f_flag & ST_NOATIME) f |= MS_NOATIME;
	if (st.f_flag & ST_NODIRATIME) f |= MS_NODIRATIME;
	if (st.f_flag & ST_RELATIME) f |= MS_RELATIME;
	return f;
}

/* The mount that fd is on, by id: /proc/self/fdinfo's mnt_id (Linux 3.15). */
int mount_id(int fd)
{
	char path[64], line[256];
	int id = -1;
	snprintf(path, sizeof path, "/proc/self/fdinfo/%d", fd);
	FILE *f = fopen(path, "re");
	while (f && fgets(line, sizeof line, f) && sscanf(line, "mnt_id: %d", &id) != 1)
		;
	if (f)
		fclose(f);
	return id;
}

/* One bind mount remounted with `flags` added, and checked. */
static void remount_one(const struct op *op, int fd, const char *what, unsigned long flags)
{
	char where[64];
	snprintf(where, sizeof where, "/proc/self/fd/%d", fd);
	if (mount(NULL, where, NULL, MS_BIND | MS_REMOUNT | flags | mount_flags(fd), NULL) != 0)
		fail_errno("cannot remount %s with %s (%s)", what, op->options, op->origin);
	if ((mount_flags(fd) & flags) != flags)
		fail("%s (%s): %s is still without some of %s after a remount", op->target, op->origin, what, op->options);
}

struct mnt {
	int id, parent;
	char *point;
};

/* mountinfo writes space, tab, newline and backslash in mount points as \ooo (proc(5)). */
static void unescape(char *s)
{
	char *w = s;
	for (; *s; s++, w++) {
		if (s[0] == '\\' && s[1] >= '0' && s[1] <= '3' && s[2] >= '0' && s[2] <= '7' && s[3] >= '0' && s[3] <= '7') {
			*w = (char)((s[1] - '0') * 64 + (s[2] - '0') * 8 + (s[3] - '0'));
			s += 3;
		} else {
			*w = *s;
		}
	}
	*w = '\0';
}

static size_t read_mounts(struct mnt **out)
{
	FILE *f = fopen("/proc/self/mountinfo", "re");
	if (!f)
		fail_errno("cannot read /proc/self/mountinfo");
	char *line = NULL, point[PATH_MAX];
	size_t cap = 0, n = 0, size = 0;
	struct mnt *m = NULL;
	while (getline(&line, &cap, f) > 0) {
		int id, parent;
		if (sscanf(line, "%d %d %*s %*s %4095s", &id, &parent, point) != 3)
			continue;
		if (n == size && !(m = realloc(m, (size = size ? 2 * size : 64) * sizeof *m)))
			fail_errno("cannot read /proc/self/mountinfo");
		unescape(point);
		m[n++] = (struct mnt){ id, parent, strdup(point) };
	}
	free(line);
	fclose(f);
	*out = m;
	return n;
}

/* Whether mount i lies below the mount `top`: its parent, or its parent's parent, and so on. */
static int is_below(const struct mnt *m, size_t n, size_t i, int top)
{
	for (size_t hops = 0; hops < n; hops++) {
		if (m[i].parent == top)
			return 1;
		size_t j;
		for (j = 0; j < n && m[j].id != m[i].parent; j++)
			;
		if (j == n || j == i)
			return 0; /* the namespace's root: its parent lies outside */
		i = j;
	}
	return 0;
}

/* A mount point as mountinfo names it (from the namespace's root), opened without a symlink. */
static int open_mount_point(const char *path)
{
	struct open_how how = { .flags = O_PATH | O_CLOEXEC, .resolve = RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS };
	return (int)syscall(SYS_openat2, AT_FDCWD, path, &how, sizeof how);
}

/* Without mount_setattr (before Linux 5.12): the top mount, then each mount below it found in
 * /proc/self/mountinfo, remounted one by one and checked. A mount point is opened without
 * following symlinks; a mount that another covers (its mount point reaches another mount)
 * cannot be reached from the container and is left, as its cover is restricted too. */
static void remount_tree(const struct op *op, int top, unsigned long flags)
{
	remount_one(op, top, op->target, flags);
	int top_id = mount_id(top);
	if (top_id < 0)
		fail_errno("cannot find the mount of %s (%s) in /proc/self/fdinfo", op->target, op->origin);
	struct mnt *m;
	size_t n = read_mounts(&m);
	for (size_t i = 0; i < n; i++) {
		if (!is_below(m, n, i, top_id))
			continue;
		int fd = open_mount_point(m[i].point);
		if (fd < 0)
			fail_errno("cannot open %s, a mount below %s (%s)", m[i].point, op->target, op->origin);
		if (mount_id(fd) == m[i].id)
			remount_one(op, fd, m[i].point, flags);
		close(fd);
	}
	for (size_t i = 0; i < n; i++)
		free(m[i].point);
	free(m);
}

/* mount_setattr(2) (Linux 5.12) through syscall(): glibc before 2.36 has no wrapper, and its
 * <sys/mount.h> clashes with <linux/mount.h>, so the few constants are repeated here. */
#ifndef SYS_mount_setattr
#define SYS_mount_setattr 442 /* the same number on every architecture */
#endif
#ifndef MOUNT_ATTR_RDONLY
#define MOUNT_ATTR_RDONLY 0x1
#define MOUNT_ATTR_NOSUID 0x2
#define MOUNT_ATTR_NODEV 0x4
#define MOUNT_ATTR_NOEXEC 0x8
#endif
#ifndef AT_RECURSIVE
#define AT_RECURSIVE 0x8000
#endif
struct setattr_args { unsigned long long attr_set, attr_clr, propagation, userns_fd; }; /* struct mount_attr */

static const struct { unsigned long ms; unsigned long long attr; } ATTRS[] = {
	{ MS_RDONLY, MOUNT_ATTR_RDONLY }, { MS_NOSUID, MOUNT_ATTR_NOSUID },
	{ MS_NODEV, MOUNT_ATTR_NODEV }, { MS_NOEXEC, MOUNT_ATTR_NOEXEC },
};

/* Adds `flags` to the mount at fd and to every mount below it, in one call: a read-only bind of
 * a directory that holds mounts (the host's /sys, with cgroup2 and the others under it) is
 * read-only all the way down. Where the kernel lacks mount_setattr, remount_tree does the same. */
void restrict_tree(const struct op *op, int fd, unsigned long flags)
{
	struct setattr_args attr = { 0 };
	for (size_t i = 0; i < sizeof ATTRS / sizeof *ATTRS; i++)
		if (flags & ATTRS[i].ms)
			attr.attr_set |= ATTRS[i].attr;
	int forced = getenv("BERTH_FORCE_NO_MOUNT_SETATTR") != NULL; /* for the tests of remount_tree */
	if (!forced && syscall(SYS_mount_setattr, fd, "", AT_EMPTY_PATH | AT_RECURSIVE, &attr, sizeof attr) == 0)
		return;
	/* ENOSYS before 5.12; EPERM from a seccomp filter that does not know the call. */
	if (!forced && errno != ENOSYS && errno != EPERM)
		fail_errno("cannot make %s and the mounts below it %s (%s)", op->target, op->options, op->origin);
	remount_tree(op, fd, flags);
}

