/* berth-helper --probe: tries, for real and touching nothing, what containers need: a user
 * namespace, a mount namespace, /dev/fuse, and overlayfs in the user namespace. One line per
 * check on stdout ("name ok" or "name fail ERRNO-TEXT"), for `berth doctor`. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "helper.h"

static void report(const char *name, int ok, int err)
{
	if (ok)
		printf("%s ok\n", name);
	else
		printf("%s fail %s\n", name, strerror(err));
}

int probe(void)
{
	int fuse = open("/dev/fuse", O_RDWR | O_CLOEXEC);
	report("fuse", fuse >= 0, errno);
	if (fuse >= 0)
		close(fuse);
	fflush(stdout);
	/* The rest in a child, whose namespaces vanish with it. */
	pid_t pid = fork();
	if (pid < 0)
		return 1;
	if (pid == 0) {
		const char *failed;
		int ok = unshare_userns(getuid(), getgid(), &failed) == 0, err = errno;
		report("userns", ok || failed, err);
		if (!ok && !failed) {
			fflush(stdout);
			_exit(0);
		}
		report("idmap", ok, err);
		char dir[] = "/tmp/berth-probe-XXXXXX";
		ok = mount("none", "/", NULL, MS_REC | MS_PRIVATE, NULL) == 0 && mkdtemp(dir) &&
		     mount("tmpfs", dir, "tmpfs", 0, "mode=0700") == 0;
		report("mountns", ok, errno);
		if (!ok) {
			rmdir(dir);
			fflush(stdout);
			_exit(0);
		}
		char lower[64], upper[64], work[64], root[64], opts[300];
		snprintf(lower, sizeof lower, "%s/l", dir);
		snprintf(upper, sizeof upper, "%s/u", dir);
		snprintf(work, sizeof work, "%s/w", dir);
		snprintf(root, sizeof root, "%s/r", dir);
		mkdir(lower, 0755), mkdir(upper, 0755), mkdir(work, 0755), mkdir(root, 0755);
		snprintf(opts, sizeof opts, "lowerdir=%s,upperdir=%s,workdir=%s,userxattr", lower, upper, work);
		ok = mount("overlay", root, "overlay", 0, opts) == 0;
		report("overlay", ok, errno);
		umount2(dir, MNT_DETACH);
		rmdir(dir);
		fflush(stdout);
		_exit(0);
	}
	int status;
	waitpid(pid, &status, 0);
	return 0;
}
