/* Unit tests of native/helper/userns.c's one user-namespace set-up (#18), unshare_userns: in a
 * child each, so that the namespaces go with it. Where this node allows no unprivileged user
 * namespace (a sysctl, AppArmor), the checks say so and pass: berth doctor is the place that
 * judges the node, not these tests. */
#define _GNU_SOURCE
#include <errno.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../helper/helper.h"
#include "check.h"

/* In a child: unshare_userns(inner) and 0 when getuid/getgid are then inner; 2 when the node refuses. */
static int ids_inside(unsigned uid, unsigned gid)
{
	pid_t pid = fork();
	if (pid == 0) {
		const char *failed;
		if (unshare_userns(uid, gid, &failed) != 0)
			_exit(!failed && (errno == EPERM || errno == ENOSPC || errno == EINVAL || errno == EACCES) ? 2 : 1);
		_exit(getuid() == uid && getgid() == gid ? 0 : 1);
	}
	int status;
	return pid > 0 && waitpid(pid, &status, 0) == pid && WIFEXITED(status) ? WEXITSTATUS(status) : 1;
}

int main(void)
{
	int self = ids_inside(getuid(), getgid());
	if (self == 2) {
		CHECK(1, "unshare_userns: this node refuses unprivileged user namespaces (skipped)");
		return checks_done("userns");
	}
	CHECK(self == 0, "unshare_userns: the caller mapped to itself");
	CHECK(ids_inside(0, 0) == 0, "unshare_userns: the caller mapped to root (--fakeroot)");
	CHECK(ids_inside(1234, 5678) == 0, "unshare_userns: the caller mapped to another uid and gid (--user)");
	return checks_done("userns");
}
