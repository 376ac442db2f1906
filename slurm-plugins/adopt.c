/* A job's servers outlive the step that started them. Where the site tracks processes by cgroup
 * (proctrack/cgroup, as production clusters do), slurmstepd kills a step's cgroup whole when
 * the step ends, and with it the image server the step started for the job (scope slurm-JOB,
 * which the job's later steps would join) and the step servers of its named containers
 * (--container-name, which wait for the job's next step). As each task of a step ends, still
 * in slurmstepd as root, the plugin moves those of the job's that are in this step's cgroups
 * (each with its guard and what it started) into the job's extern step (PrologFlags=Contain),
 * or else its batch step, as pam_slurm_adopt does with an ssh session: they then end with the
 * job, and the epilog clears what they leave. Under proctrack/linuxproc nothing is in a step
 * cgroup and nothing moves. Each task learns from its environment (KEPT_BY_PLUGIN) that a
 * server its step starts may be the job's (plantext.h).
 *
 * What it moves is proven first, as the epilog proves what it stops (a pid file is the user's
 * to write): every uid of the process is the job's user, its command line is that of a
 * server of this runtime directory, it is in this very step's cgroups, and it is still the same
 * process after the move (alive after the write, so its number was never another's). A user
 * can thus move only a process of their own, of this step, into their own job.
 *
 * The cgroup v1 layout (slurm[_NODE]/uid_U/job_J/step_S, one tree per controller) is what
 * this was tested on; under v2, where a step's directory is not a leaf, the servers stay
 * per step. */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <glob.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "spank_berth.h"

/* Where the cgroup v1 tree holding `controllers` ("freezer", "cpu,cpuacct", "name=systemd") is
 * mounted: a cgroup mount whose options name each of them. */
static int tree_of(const char *controllers, char *out, size_t size)
{
	FILE *f = fopen("/proc/self/mountinfo", "re");
	if (!f)
		return -1;
	char line[4096];
	int found = -1;
	while (found != 0 && fgets(line, sizeof line, f)) {
		/* ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPEROPTIONS */
		char root[PATH_MAX], point[PATH_MAX], fstype[64], super[1024];
		const char *dash = strstr(line, " - ");
		if (!dash || sscanf(line, "%*s %*s %*s %4095s %4095s", root, point) != 2 ||
		    sscanf(dash, " - %63s %*s %1023s", fstype, super) != 2 || strcmp(fstype, "cgroup") != 0 || strcmp(root, "/") != 0)
			continue;
		char want[256];
		if (format(want, sizeof want, "%s", controllers) != 0)
			break;
		int all = 1;
		for (char *save, *c = strtok_r(want, ",", &save); c && all; c = strtok_r(NULL, ",", &save)) {
			size_t len = strlen(c);
			const char *at = super;
			all = 0;
			while ((at = strstr(at, c)) != NULL) {
				if ((at == super || at[-1] == ',') && (at[len] == ',' || at[len] == '\0')) {
					all = 1;
					break;
				}
				at += len;
			}
		}
		if (all && !strchr(point, '\\')) /* an escaped (odd) mount point is not Slurm's */
			found = format(out, size, "%s", point);
	}
	fclose(f);
	return found;
}

/* Moves `pid` out of step `step` of `job` into the job's extern (or else batch) step, in every
 * v1 tree where it is in that step. 1 when at least one tree had it there (and all moved),
 * 0 when none did, -1 when a move failed. */
static int move_out_of_step(pid_t pid, uint32_t job, uint32_t step)
{
	char cgroups[8192], at[64];
	if (read_proc(pid, "cgroup", cgroups, sizeof cgroups) <= 0 || format(at, sizeof at, "/job_%u/step_%u", job, step) != 0)
		return -1;
	int moved = 0;
	for (char *save, *line = strtok_r(cgroups, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		/* ID:CONTROLLERS:PATH; v2's line (0::PATH) is left as it is. */
		char *controllers = strchr(line, ':');
		char *path = controllers ? strchr(controllers + 1, ':') : NULL;
		if (!path || path == controllers + 1)
			continue;
		*path++ = '\0';
		controllers++;
		char *in = strstr(path, at);
		if (!in || (in[strlen(at)] != '\0' && in[strlen(at)] != '/'))
			continue;
		char tree[PATH_MAX], target[PATH_MAX * 2];
		if (tree_of(controllers, tree, sizeof tree) != 0)
			return -1;
		in[strlen(at) - strlen(strrchr(at, '/')) + 1] = '\0'; /* PATH up to /job_J/ */
		int fd = -1;
		static const char *const steps[] = { "step_extern", "step_batch" };
		for (size_t i = 0; i < sizeof steps / sizeof *steps && fd < 0; i++)
			if (format(target, sizeof target, "%s%s%s/cgroup.procs", tree, path, steps[i]) == 0)
				fd = open(target, O_WRONLY | O_CLOEXEC | O_NOFOLLOW);
		if (fd < 0)
			return -1;
		char number[32];
		int len = snprintf(number, sizeof number, "%d", (int)pid);
		int ok = write(fd, number, (size_t)len) == len;
		close(fd);
		if (!ok)
			return -1;
		moved = 1;
	}
	return moved;
}

/* The parent of `pid` from /proc/PID/stat, or -1. */
static pid_t parent_of(pid_t pid)
{
	char stat[1024];
	const char *end = read_proc(pid, "stat", stat, sizeof stat) > 0 ? strrchr(stat, ')') : NULL;
	int ppid;
	return end && sscanf(end + 2, "%*c %d", &ppid) == 1 ? (pid_t)ppid : -1;
}

/* Whether every uid of `pid` is `uid`. */
static int all_uids(pid_t pid, uid_t uid)
{
	char status[4096];
	const char *at = read_proc(pid, "status", status, sizeof status) > 0 ? strstr(status, "\nUid:") : NULL;
	unsigned u[4];
	return at && sscanf(at, "\nUid: %u %u %u %u", &u[0], &u[1], &u[2], &u[3]) == 4 && u[0] == uid && u[1] == uid && u[2] == uid && u[3] == uid;
}

/* Moves `pid` (the user's) out of the step, if it is in it; reports what could not be. */
static void move_one(pid_t pid, uid_t uid, uint32_t job, uint32_t step, const char *dir)
{
	int pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
	if (pidfd < 0)
		return;
	if (all_uids(pid, uid)) {
		int r = move_out_of_step(pid, job, step);
		if (r < 0)
			slurm_error("berth: cannot move %d, of the job's server %s, out of step %u.%u's cgroups: %s; it ends with the step",
				    (int)pid, dir, job, step, strerror(errno));
		else if (r > 0 && syscall(SYS_pidfd_send_signal, pidfd, 0, NULL, 0) != 0)
			slurm_error("berth: %d, of the job's server %s, ended while it was moved out of step %u.%u", (int)pid, dir, job, step);
	}
	close(pidfd);
}

/* A server's family: its guard (its parent, for an image server: guard.c), itself, and every
 * process it started (a named container's own); in a step's cgroup all are the job's. */
static void move_family(pid_t pid, uid_t uid, uint32_t job, uint32_t step, const char *dir)
{
	pid_t parent = parent_of(pid);
	char cmd[64];
	if (parent > 1 && read_proc(parent, "cmdline", cmd, sizeof cmd) > 0 && strncmp(cmd, "berth-helper", 12) == 0)
		move_one(parent, uid, job, step, dir);
	/* Descendants, level by level: each pass moves the children of what the last one moved. */
	pid_t level[256] = { pid };
	size_t n = 1;
	while (n > 0) {
		pid_t next[256];
		size_t m = 0;
		for (size_t i = 0; i < n; i++)
			move_one(level[i], uid, job, step, dir);
		DIR *proc = opendir("/proc");
		for (struct dirent *e; proc && (e = readdir(proc)) && m < sizeof next / sizeof *next;) {
			char *end;
			long child = strtol(e->d_name, &end, 10);
			if (*end || child <= 1)
				continue;
			pid_t pp = parent_of((pid_t)child);
			for (size_t i = 0; i < n; i++)
				if (pp == level[i]) {
					next[m++] = (pid_t)child;
					break;
				}
		}
		if (proc)
			closedir(proc);
		memcpy(level, next, m * sizeof *next);
		n = m;
	}
}

/* Each server named by a pid file matching `pattern` that `proven` shows to be its, with its
 * family: out of this step, each still the same process after. */
static void adopt_servers(const char *pattern, uint32_t job, uint32_t step, uid_t uid, int (*proven)(int, pid_t, uid_t, const char *))
{
	glob_t g;
	if (glob(pattern, GLOB_NOSORT, NULL, &g) != 0)
		return;
	for (size_t i = 0; i < g.gl_pathc; i++) {
		char err[PATH_MAX + 256], dir[PATH_MAX], text[32] = "";
		int fd = open_owned_file(g.gl_pathv[i], uid, err, sizeof err);
		ssize_t len = fd >= 0 ? read(fd, text, sizeof text - 1) : -1;
		if (fd >= 0)
			close(fd);
		char *end;
		long pid = len > 0 ? (text[len] = '\0', strtol(text, &end, 10)) : 0;
		if (pid <= 1 || format(dir, sizeof dir, "%s", g.gl_pathv[i]) != 0)
			continue;
		*strrchr(dir, '/') = '\0';
		int pidfd = (int)syscall(SYS_pidfd_open, (pid_t)pid, 0);
		if (pidfd < 0)
			continue;
		if (proven(pidfd, (pid_t)pid, uid, dir))
			move_family((pid_t)pid, uid, job, step, dir);
		close(pidfd);
	}
	globfree(&g);
}

void keep_for_job(uint32_t job, uint32_t step, uid_t uid, const char *runtime)
{
	if (step == SLURM_BATCH_SCRIPT || step == SLURM_EXTERN_CONT)
		return; /* they live as long as the job */
	char err[PATH_MAX + 256], pattern[PATH_MAX];
	int dir = open_private_dir(runtime, uid, 0, err, sizeof err);
	if (dir < 0)
		return;
	close(dir);
	/* The job's image servers (not those narrowed to one step: img-...-slurm-JOB.STEP), and its
	 * named containers' step servers. */
	if (format(pattern, sizeof pattern, "%s/img-*-slurm-%u/pid", runtime, job) == 0)
		adopt_servers(pattern, job, step, uid, prove_image_server);
	if (format(pattern, sizeof pattern, "%s/named-%u-*/pid", runtime, job) == 0)
		adopt_servers(pattern, job, step, uid, prove_step_server);
}
