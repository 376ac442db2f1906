/* Resource limits: moves the container into the cgroup berth made for it (the plan's `cgroup`
 * line; berth chose the delegated directory, made the cgroup and wrote its limits, and removes it
 * when the container ends: src/runtime/cgroup.ts). The directory is checked again here, on what
 * is opened: reached without any symlink, on cgroup2, a directory of the caller's that no one else
 * can write, and its cgroup.procs the caller's. cgroup.procs is opened before any namespace is
 * joined, as the caller: since Linux 5.16 a migration is checked against the credentials the file
 * was opened with (commit 1756d7994ad8), and the write comes only once the image server is joined,
 * so that a server this container starts stays in the caller's cgroup and outlives it. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/magic.h>
#include <linux/openat2.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "helper.h"

int cgroup_open(const char *path)
{
	struct open_how how = { .flags = O_PATH | O_DIRECTORY | O_CLOEXEC, .resolve = RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS };
	int dir = (int)syscall(SYS_openat2, AT_FDCWD, path, &how, sizeof how);
	if (dir < 0)
		fail_errno("cannot open the container's cgroup %s%s", path, errno == ELOOP ? " (a symlink on the way)" : "");
	struct statfs fs;
	struct stat st;
	if (fstatfs(dir, &fs) != 0 || fs.f_type != CGROUP2_SUPER_MAGIC)
		fail("refusing the container's cgroup %s: not on cgroup2", path);
	if (fstat(dir, &st) != 0 || st.st_uid != getuid() || (st.st_mode & 022))
		fail("refusing the container's cgroup %s: not yours alone (owner uid %u, mode %04o)", path, (unsigned)st.st_uid, (unsigned)(st.st_mode & 07777));
	int procs = openat(dir, "cgroup.procs", O_WRONLY | O_NOFOLLOW | O_CLOEXEC);
	if (procs < 0)
		fail_errno("cannot open %s/cgroup.procs", path);
	if (fstat(procs, &st) != 0 || st.st_uid != getuid())
		fail("refusing the container's cgroup %s: its cgroup.procs is uid %u's", path, (unsigned)st.st_uid);
	close(dir);
	return procs;
}

void cgroup_enter(int procs, const char *path)
{
	/* "0": the writing process itself (cgroup-v2.rst, cgroup.procs); what it forks follows. */
	if (write(procs, "0", 1) != 1)
		fail_errno("cannot move the container into its cgroup %s", path);
	close(procs);
}
