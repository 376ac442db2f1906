/* The start-up sequence every container shares, once joined to its image server: a lone
 * container (main.c), a Slurm step's (step.c) and an instance's init (instance.c). A mount
 * namespace of its own that still receives the host's mounts, the root built from the image
 * (mount.c) and pivoted into, and the injected libraries checked with the image's own loader
 * (verify.c). What differs between them (a PID namespace, a cgroup, the guard's watch, the
 * namespaces a step hands out) stays with each caller. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <sys/mount.h>
#include <unistd.h>

#include "helper.h"
#include "../common/trusted.h"

void name_container(const struct server_paths *sp, char base[CONTAINER_BASE_MAX])
{
	if (format(base, CONTAINER_BASE_MAX, "%s/c-%d", sp->work, getpid()) != 0)
		fail("the image server's directory %s is too long", sp->work);
}

void enter_container_root(const struct plan *p, const struct server_paths *sp, int server, const char *base, int report)
{
	if (unshare(CLONE_NEWNS) != 0 || mount("none", "/", NULL, MS_REC | MS_SLAVE, NULL) != 0)
		fail_errno("cannot create the container's mount namespace");
	/* The server's directory, opened before the pivot hides it: verify.c's stamp is there. */
	int statedir = open(sp->dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (statedir < 0)
		fail_errno("cannot open the image server's directory %s", sp->dir);
	pid_t overlay = build_root(p, sp, base);
	if (overlay && report)
		report_overlay(server, overlay);
	close(server);
	verify_libraries(p, statedir);
	close(statedir);
}

void drop_to_plan_user(const struct plan *p)
{
	if (p->fakeroot)
		lock_mounts();
	else if (p->has_user)
		become_user(p->user_uid, p->user_gid);
}
