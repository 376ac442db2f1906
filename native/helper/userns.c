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

static void write_file(const char *path, const char *text)
{
	int fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd < 0 || write(fd, text, strlen(text)) != (ssize_t)strlen(text))
		fail_errno("cannot write %s", path);
	close(fd);
}

void enter_user_namespace(int fakeroot)
{
	uid_t uid = getuid();
	gid_t gid = getgid();
	if (unshare(CLONE_NEWUSER | CLONE_NEWNS) != 0)
		explain_userns_failure(errno);
	char map[64];
	/* An unprivileged process may map only itself, and only after denying setgroups. */
	write_file("/proc/self/setgroups", "deny");
	snprintf(map, sizeof map, "%u %u 1\n", fakeroot ? 0 : uid, uid);
	write_file("/proc/self/uid_map", map);
	snprintf(map, sizeof map, "%u %u 1\n", fakeroot ? 0 : gid, gid);
	write_file("/proc/self/gid_map", map);
}

void lock_mounts(void)
{
	uid_t uid = getuid();
	gid_t gid = getgid();
	if (unshare(CLONE_NEWUSER | CLONE_NEWNS) != 0)
		fail_errno("cannot lock the container's mounts (a nested user namespace)");
	char map[64];
	write_file("/proc/self/setgroups", "deny");
	snprintf(map, sizeof map, "%u %u 1\n", uid, uid);
	write_file("/proc/self/uid_map", map);
	snprintf(map, sizeof map, "%u %u 1\n", gid, gid);
	write_file("/proc/self/gid_map", map);
}

/* docker run -u: the command runs as uid:gid, which a nested user namespace maps to the caller
 * (as the image server's maps the caller to 0 for --fakeroot). Its mounts become locked, as
 * with lock_mounts, and the exec that follows drops every capability, since the uid is not 0. */
void become_user(unsigned uid, unsigned gid)
{
	uid_t outer_uid = getuid();
	gid_t outer_gid = getgid();
	if (unshare(CLONE_NEWUSER | CLONE_NEWNS) != 0)
		fail_errno("cannot enter a user namespace for --user %u:%u", uid, gid);
	char map[64];
	write_file("/proc/self/setgroups", "deny");
	snprintf(map, sizeof map, "%u %u 1\n", uid, (unsigned)outer_uid);
	write_file("/proc/self/uid_map", map);
	snprintf(map, sizeof map, "%u %u 1\n", gid, (unsigned)outer_gid);
	write_file("/proc/self/gid_map", map);
}
