/* exec instance://NAME (berth-helper --instance-join, the plan on fd 3): runs a command inside
 * a running instance. After proving the recorded process (instance_state.c), it joins that
 * process's user, mount and PID namespaces through its /proc directory, each right after the
 * user namespace that owns it, and forks the command into the PID namespace (setns cannot move
 * the caller itself into one), taking the instance's environment, PATH and working directory
 * from the plan the instance was started with; what berth's join plan sets wins. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/nsfs.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "helper.h"
#include "instance.h"

static int same_ns(int a, int b)
{
	struct stat x, y;
	return fstat(a, &x) == 0 && fstat(b, &y) == 0 && x.st_ino == y.st_ino && x.st_dev == y.st_dev;
}

/* The IPC, UTS and network namespaces an instance was given (--ipc, --hostname, --network):
 * those it shares with the host are the caller's already (and joining the host's from inside
 * would be refused); each other one is joined right after the user namespace that owns it. */
static const struct { const char *ns; int type; } ISOLATION[] = { { "ns/ipc", CLONE_NEWIPC }, { "ns/uts", CLONE_NEWUTS }, { "ns/net", CLONE_NEWNET } };
#define NISOLATION (sizeof ISOLATION / sizeof *ISOLATION)

static void open_isolation(int proc, const char *name, int fds[NISOLATION], int owners[NISOLATION])
{
	for (size_t i = 0; i < NISOLATION; i++) {
		char mine[32];
		snprintf(mine, sizeof mine, "/proc/self/%s", ISOLATION[i].ns);
		int ours = open(mine, O_RDONLY | O_CLOEXEC);
		fds[i] = openat(proc, ISOLATION[i].ns, O_RDONLY | O_CLOEXEC);
		if (fds[i] < 0 || ours < 0)
			fail_errno("cannot open the namespaces of the instance %s", name);
		owners[i] = -1;
		if (same_ns(fds[i], ours)) {
			close(fds[i]);
			fds[i] = -1;
		} else if ((owners[i] = ioctl(fds[i], NS_GET_USERNS)) < 0)
			fail_errno("cannot read the owner of the %s namespace of the instance %s", ISOLATION[i].ns + 3, name);
		close(ours);
	}
}

static void join_isolation_owned_by(int userns, const char *name, int fds[NISOLATION], const int owners[NISOLATION])
{
	for (size_t i = 0; i < NISOLATION; i++) {
		if (fds[i] < 0 || !same_ns(owners[i], userns))
			continue;
		if (setns(fds[i], ISOLATION[i].type) != 0)
			fail_errno("cannot join the %s namespace of the instance %s", ISOLATION[i].ns + 3, name);
		close(fds[i]);
		fds[i] = -1;
	}
}

/* Joins the user, mount and (unless it is ours) PID namespace of the process whose /proc
 * directory is `proc`. setns needs CAP_SYS_ADMIN in the namespace's owner, which this process
 * has in a user namespace right after joining it (its own uid made it): so the user
 * namespaces are joined from ours down to the process's, each other namespace right after its
 * owner (an instance of --fakeroot's has its mounts in a nested one). Returns whether the PID
 * namespace was joined (then only children are in it). */
static int join_namespaces(int proc, const char *name)
{
	int user = openat(proc, "ns/user", O_RDONLY | O_CLOEXEC), mnt = openat(proc, "ns/mnt", O_RDONLY | O_CLOEXEC);
	int pid = openat(proc, "ns/pid", O_RDONLY | O_CLOEXEC);
	int my_user = open("/proc/self/ns/user", O_RDONLY | O_CLOEXEC), my_pid = open("/proc/self/ns/pid", O_RDONLY | O_CLOEXEC);
	if (user < 0 || mnt < 0 || pid < 0 || my_user < 0 || my_pid < 0)
		fail_errno("cannot open the namespaces of the instance %s", name);
	int want_pid = !same_ns(pid, my_pid);
	int chain[8], n = 0;
	for (int ns = user; ns >= 0 && !same_ns(ns, my_user); ns = ioctl(ns, NS_GET_PARENT)) {
		if (n == 8)
			fail("the instance %s is nested deeper in user namespaces than berth makes them", name);
		chain[n++] = ns;
	}
	int mnt_owner = ioctl(mnt, NS_GET_USERNS), pid_owner = want_pid ? ioctl(pid, NS_GET_USERNS) : -1;
	int iso[NISOLATION], iso_owners[NISOLATION];
	open_isolation(proc, name, iso, iso_owners);
	int joined_mnt = 0, joined_pid = 0;
	while (n-- > 0) {
		if (setns(chain[n], CLONE_NEWUSER) != 0)
			fail_errno("cannot join the user namespace of the instance %s", name);
		join_isolation_owned_by(chain[n], name, iso, iso_owners);
		if (want_pid && !joined_pid && pid_owner >= 0 && same_ns(pid_owner, chain[n])) {
			if (setns(pid, CLONE_NEWPID) != 0)
				fail_errno("cannot join the PID namespace of the instance %s", name);
			joined_pid = 1;
		}
		if (!joined_mnt && mnt_owner >= 0 && same_ns(mnt_owner, chain[n])) {
			if (setns(mnt, CLONE_NEWNS) != 0)
				fail_errno("cannot join the mount namespace of the instance %s", name);
			joined_mnt = 1;
		}
		close(chain[n]);
	}
	if (!joined_mnt || want_pid != joined_pid)
		fail("the namespaces of the instance %s are not the ones berth made for it; stop it and start it again", name);
	for (size_t i = 0; i < NISOLATION; i++)
		if (iso[i] >= 0)
			fail("the namespaces of the instance %s are not the ones berth made for it; stop it and start it again", name);
	close(mnt);
	close(pid);
	close(my_user);
	close(my_pid);
	return joined_pid;
}

/* KEY=VALUE into the environment, replacing KEY's value. */
static void set_env(struct plan *p, char *kv)
{
	size_t len = strcspn(kv, "=");
	for (size_t i = 0; i < p->nenv; i++)
		if (strncmp(p->env[i], kv, len) == 0 && p->env[i][len] == '=') {
			p->env[i] = kv;
			return;
		}
	char **grown = realloc(p->env, (p->nenv + 2) * sizeof *grown);
	if (!grown)
		fail("out of memory");
	grown[p->nenv++] = kv;
	grown[p->nenv] = NULL;
	p->env = grown;
}

static int is_under(const char *path, const char *dir)
{
	size_t n = strlen(dir);
	return strncmp(path, dir, n) == 0 && (path[n] == '\0' || path[n] == '/' || (n == 1 && dir[0] == '/'));
}

/* Where the joined command starts: what the join plan says (--pwd), else where the caller is
 * when the instance has that bound in at the same path (exec's habit), else the instance's own. */
static const char *join_cwd(const struct plan *inst, const char *given)
{
	static char here[4096];
	if (*given)
		return given;
	if (!getcwd(here, sizeof here))
		return inst->cwd;
	for (size_t i = 0; i < inst->nops; i++) {
		const struct op *o = &inst->ops[i];
		if (o->kind == OP_BIND && strcmp(o->source, o->target) == 0 && strcmp(o->target, "/") != 0 && is_under(here, o->target))
			return here;
	}
	return inst->cwd;
}

noreturn void instance_join_main(int plan_fd)
{
	struct plan j;
	plan_read(plan_fd, &j);
	if (!j.instance)
		fail("the launch plan names no instance");
	check_instance_name(j.instance);
	check_runtime_dir(j.runtime);
	int instances = open_instances(j.runtime, 0);
	int dir = instances >= 0 ? open_instance(instances, j.instance) : -1;
	if (dir < 0)
		fail("there is no instance named %s on this node; `berth instance list` shows yours", j.instance);
	struct instance_state st;
	struct proven cmd;
	if (read_state(dir, &st) != 0)
		fail("the instance %s is still starting; try again in a moment", j.instance);
	if (prove(st.pid, st.start, &cmd) != 0)
		fail("the instance %s is no longer running (its log is %s/instances/%s/log); `berth instance stop %s` removes it", j.instance,
		     j.runtime, j.instance, j.instance);
	int planfd = openat(dir, "plan", O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	struct stat pst;
	if (planfd < 0 || fstat(planfd, &pst) != 0 || !S_ISREG(pst.st_mode) || pst.st_uid != getuid() || (pst.st_mode & 022))
		fail("the instance %s has no plan of yours; stop it and start it again", j.instance);
	struct plan inst;
	plan_read(planfd, &inst);
	inst.argv = j.argv;
	inst.nargv = j.nargv;
	for (size_t i = 0; i < j.nenv; i++)
		set_env(&inst, j.env[i]);
	inst.cwd = strdup(join_cwd(&inst, j.cwd));
	char *pwd = malloc(strlen(inst.cwd) + 5);
	if (!inst.cwd || !pwd)
		fail("out of memory");
	sprintf(pwd, "PWD=%s", inst.cwd);
	set_env(&inst, pwd);
	for (size_t i = 0; i < inst.nenv; i++)
		if (strncmp(inst.env[i], "PATH=", 5) == 0)
			inst.path = inst.env[i] + 5;
	/* Watched as a container is, before it joins: if the image server ends under it, the guard
	 * stops it with the reason on its stderr. The instance's own server, as its state says:
	 * its key, computed again, could name another (the image touched since, another cgroup). */
	watch_as_instance(j.runtime, st.server);
	int in_pidns = join_namespaces(cmd.proc, j.instance);
	unprove(&cmd);
	close(dir);
	close(instances);
	if (in_pidns) {
		/* Only a child enters the PID namespace; this process waits for it, outside. */
		pid_t child = fork_tied();
		if (child != 0)
			exit_as(child);
	}
	exec_in_container(&inst);
}
