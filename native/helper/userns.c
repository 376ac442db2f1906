/* Enters a new user and mount namespace, mapping the caller's uid and gid to themselves (or
 * to 0 with --fakeroot). This is where an unprivileged process gets the capabilities it needs
 * to mount, over its own namespaces only. unshare(2) requires a single-threaded caller, which
 * this helper is; Node never does this itself. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "helper.h"

static int read_int(const char *path)
{
	FILE *f = fopen(path, "r");
	int v = -1;
	if (f) {
		if (fscanf(f, "%d", &v) != 1)
			v = -1;
		fclose(f);
	}
	return v;
}

/* unshare(CLONE_NEWUSER) failed: name the knob that forbids it. */
static noreturn void explain_userns_failure(int err)
{
	if (read_int("/proc/sys/user/max_user_namespaces") == 0)
		fail("unprivileged user namespaces are disabled (user.max_user_namespaces = 0); "
		     "an administrator can enable them with: sysctl -w user.max_user_namespaces=15000");
	if (read_int("/proc/sys/kernel/unprivileged_userns_clone") == 0)
		fail("unprivileged user namespaces are disabled (kernel.unprivileged_userns_clone = 0); "
		     "an administrator can enable them with: sysctl -w kernel.unprivileged_userns_clone=1");
	if (read_int("/proc/sys/kernel/apparmor_restrict_unprivileged_userns") == 1)
		fail("AppArmor forbids unprivileged user namespaces (kernel.apparmor_restrict_unprivileged_userns = 1); "
		     "an administrator can allow them with: sysctl -w kernel.apparmor_restrict_unprivileged_userns=0");
	if (err == ENOSPC)
		fail("the limit on user namespaces is reached (user.max_user_namespaces); an administrator can raise it");
	errno = err;
	fail_errno("cannot create a user namespace; run 'berth doctor' to see what this node allows");
}

static int write_file(const char *path, const char *text)
{
	int fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	int ok = write(fd, text, strlen(text)) == (ssize_t)strlen(text);
	int err = errno;
	close(fd);
	errno = err;
	return ok ? 0 : -1;
}

int unshare_userns(unsigned inner_uid, unsigned inner_gid, const char **failed)
{
	uid_t uid = getuid();
	gid_t gid = getgid();
	*failed = NULL;
	if (unshare(CLONE_NEWUSER | CLONE_NEWNS) != 0)
		return -1;
	char uid_map[32], gid_map[32];
	snprintf(uid_map, sizeof uid_map, "%u %u 1\n", inner_uid, (unsigned)uid);
	snprintf(gid_map, sizeof gid_map, "%u %u 1\n", inner_gid, (unsigned)gid);
	/* An unprivileged process may map only itself, and only after denying setgroups. */
	const char *files[][2] = { { "/proc/self/setgroups", "deny" }, { "/proc/self/uid_map", uid_map }, { "/proc/self/gid_map", gid_map } };
	for (size_t i = 0; i < sizeof files / sizeof *files; i++)
		if (write_file(files[i][0], files[i][1]) != 0) {
			*failed = files[i][0];
			return -1;
		}
	return 0;
}

/* A failed unshare_userns after unshare itself succeeded: the file that could not be written. */
static noreturn void map_failed(const char *what, const char *file)
{
	fail_errno("cannot %s: writing %s", what, file);
}

void enter_user_namespace(int fakeroot)
{
	const char *failed;
	if (unshare_userns(fakeroot ? 0 : getuid(), fakeroot ? 0 : getgid(), &failed) != 0) {
		if (!failed)
			explain_userns_failure(errno);
		map_failed("map the caller into its user namespace", failed);
	}
}

void lock_mounts(void)
{
	const char *failed;
	if (unshare_userns(getuid(), getgid(), &failed) != 0) {
		if (!failed)
			fail_errno("cannot lock the container's mounts (a nested user namespace)");
		map_failed("lock the container's mounts", failed);
	}
}

/* docker run -u: the command runs as uid:gid, which a nested user namespace maps to the caller
 * (as the image server's maps the caller to 0 for --fakeroot). Its mounts become locked, as
 * with lock_mounts, and the exec that follows drops every capability, since the uid is not 0. */
void become_user(unsigned uid, unsigned gid)
{
	const char *failed;
	if (unshare_userns(uid, gid, &failed) != 0) {
		if (!failed)
			fail_errno("cannot enter a user namespace for --user %u:%u", uid, gid);
		map_failed("map --user's uid and gid", failed);
	}
}
