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
 * What it moves is proven first, as the epilog proves what it stops: the runtime directory and
 * its pid files are the user's to write, so a child that has become the user reads and proves
 * them (bounded in count and in time), and root reads only /proc. Every uid of the process is
 * the job's user, its command line is that of a server of this runtime directory, it is in this
 * very step's cgroups, and it is still the same process after the move (alive after the write,
 * so its number was never another's). A user can thus move only a process of their own, of
 * this step, into their own job. The flag is set only where the job has a step to move into.
 *
 * The cgroup v1 layout (slurm[_NODE]/uid_U/job_J/step_S, one tree per controller) is what
 * this was tested on; under v2, where a step's directory is not a leaf, the servers stay
 * per step. */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <glob.h>
#include <grp.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
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

/* A line of /proc/PID/cgroup, ID:CONTROLLERS:PATH, split in place; 0 for v2's (0::PATH), which
 * is left as it is. */
static int v1_line(char *line, char **controllers, char **path)
{
	char *colon = strchr(line, ':');
	char *second = colon ? strchr(colon + 1, ':') : NULL;
	if (!second || second == colon + 1)
		return 0;
	*second = '\0';
	*controllers = colon + 1;
	*path = second + 1;
	return 1;
}

/* The job's step to move into: extern where the job has one on this node, else batch; looked
 * for in the tree of the first controller listed, and used for every tree. */
static const char *job_step_in(const char *tree, const char *jobdir)
{
	char path[PATH_MAX * 2];
	if (format(path, sizeof path, "%s%sstep_extern", tree, jobdir) == 0 && access(path, F_OK) == 0)
		return "step_extern";
	if (format(path, sizeof path, "%s%sstep_batch", tree, jobdir) == 0 && access(path, F_OK) == 0)
		return "step_batch";
	return NULL;
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
	const char *into = NULL;
	for (char *save, *line = strtok_r(cgroups, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		char *controllers, *path;
		if (!v1_line(line, &controllers, &path))
			continue;
		char *in = strstr(path, at);
		if (!in || (in[strlen(at)] != '\0' && in[strlen(at)] != '/'))
			continue;
		char tree[PATH_MAX], target[PATH_MAX * 2];
		if (tree_of(controllers, tree, sizeof tree) != 0)
			return -1;
		in[strlen(at) - strlen(strrchr(at, '/')) + 1] = '\0'; /* PATH up to /job_J/ */
		if (!into && !(into = job_step_in(tree, path))) {
			errno = ENOENT; /* no extern step (PrologFlags=Contain) and no batch step here */
			return -1;
		}
		int fd = format(target, sizeof target, "%s%s%s/cgroup.procs", tree, path, into) == 0 ? open(target, O_WRONLY | O_CLOEXEC | O_NOFOLLOW) : -1;
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

/* Whether every uid of `pid` is `uid`. */
static int all_uids(pid_t pid, uid_t uid)
{
	char status[4096];
	const char *at = read_proc(pid, "status", status, sizeof status) > 0 ? strstr(status, "\nUid:") : NULL;
	unsigned u[4];
	return at && sscanf(at, "\nUid: %u %u %u %u", &u[0], &u[1], &u[2], &u[3]) == 4 && u[0] == uid && u[1] == uid && u[2] == uid && u[3] == uid;
}

/* Moves `pid` (the user's) out of the step, if it is in it; says what could not be. */
static void move_one(pid_t pid, uid_t uid, uint32_t job, uint32_t step)
{
	int pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
	if (pidfd < 0)
		return;
	if (all_uids(pid, uid)) {
		int r = move_out_of_step(pid, job, step);
		if (r < 0)
			slurm_error("berth: cannot move process %d of a server of job %u out of step %u.%u's cgroups: %s; it ends with the step",
				    (int)pid, job, job, step, strerror(errno));
		else if (r > 0 && syscall(SYS_pidfd_send_signal, pidfd, 0, NULL, 0) != 0)
			slurm_error("berth: process %d of a server of job %u ended while it was moved out of step %u.%u", (int)pid, job, job, step);
	}
	close(pidfd);
}

/* Every process and its parent, read once. */
struct procs {
	pid_t *pid, *parent;
	size_t n;
};

static pid_t parent_of(pid_t pid)
{
	char stat[1024];
	const char *f = read_proc(pid, "stat", stat, sizeof stat) > 0 ? stat_field(stat, 4) : NULL;
	int ppid;
	return f && sscanf(f, "%d", &ppid) == 1 ? (pid_t)ppid : -1;
}

static void read_procs(struct procs *ps)
{
	size_t cap = 0;
	*ps = (struct procs){ 0 };
	DIR *proc = opendir("/proc");
	for (struct dirent *e; proc && (e = readdir(proc));) {
		char *end;
		long pid = strtol(e->d_name, &end, 10);
		if (*end || pid <= 1 || pid > INT_MAX)
			continue;
		if (ps->n == cap) {
			size_t more = cap ? cap * 2 : 1024;
			pid_t *p = realloc(ps->pid, more * sizeof *p), *q = p ? realloc(ps->parent, more * sizeof *q) : NULL;
			if (p)
				ps->pid = p;
			if (!q)
				break;
			ps->parent = q;
			cap = more;
		}
		ps->pid[ps->n] = (pid_t)pid;
		ps->parent[ps->n++] = parent_of((pid_t)pid);
	}
	if (proc)
		closedir(proc);
}

/* What one step's end moves at most: a server, its guard, and what it started. */
#define MOVED_MAX 4096

/* A server's family: its guard (its parent, when a berth-helper of the user's: guard.c), itself,
 * and every process it started (a named container's); in the step's cgroup all are the job's. */
static void move_family(const struct procs *ps, pid_t pid, uid_t uid, uint32_t job, uint32_t step)
{
	pid_t parent = parent_of(pid);
	char cmd[64];
	if (parent > 1 && read_proc(parent, "cmdline", cmd, sizeof cmd) > 0 && strncmp(cmd, "berth-helper", 12) == 0)
		move_one(parent, uid, job, step);
	/* Breadth first through the snapshot: each process once, however the tree is shaped. */
	pid_t *queue = malloc(MOVED_MAX * sizeof *queue);
	if (!queue)
		return;
	size_t head = 0, tail = 0;
	queue[tail++] = pid;
	while (head < tail) {
		pid_t at = queue[head++];
		move_one(at, uid, job, step);
		for (size_t i = 0; i < ps->n && tail < MOVED_MAX; i++)
			if (ps->parent[i] == at)
				queue[tail++] = ps->pid[i];
	}
	if (tail == MOVED_MAX)
		slurm_error("berth: a server of job %u has more than %d processes: the rest end with step %u.%u", job, MOVED_MAX, job, step);
	free(queue);
}

/* What a user may write is read as that user: in a child that has become them, bounded in
 * what it reads and in time (a FUSE mount of theirs could make a read wait for ever), which
 * sends back the pids it proved. The proofs read the user's own /proc entries as the user. */
#define PID_FILES_MAX 64
#define PROVE_MS 2000

static void prove_as_user(int out, const char *runtime, uint32_t job, uid_t uid, gid_t gid)
{
	if (setgroups(0, NULL) != 0 || setresgid(gid, gid, gid) != 0 || setresuid(uid, uid, uid) != 0)
		_exit(1);
	char err[PATH_MAX + 256], pattern[PATH_MAX];
	int dir = open_private_dir(runtime, uid, 0, err, sizeof err);
	if (dir < 0)
		_exit(0);
	close(dir);
	/* The job's image servers (not those narrowed to one step: img-...-slurm-JOB.STEP), and its
	 * named containers' step servers. */
	static const struct {
		const char *pattern;
		int (*proven)(int, pid_t, uid_t, const char *);
	} kinds[] = { { "%s/img-*-slurm-%u/pid", prove_image_server }, { "%s/named-%u-*/pid", prove_step_server } };
	size_t files = 0;
	for (size_t k = 0; k < sizeof kinds / sizeof *kinds; k++) {
		glob_t g;
		if (format(pattern, sizeof pattern, kinds[k].pattern, runtime, job) != 0 || glob(pattern, GLOB_NOSORT, NULL, &g) != 0)
			continue;
		for (size_t i = 0; i < g.gl_pathc && files < PID_FILES_MAX; i++, files++) {
			char path[PATH_MAX], text[32] = "";
			int fd = open_owned_file(g.gl_pathv[i], uid, err, sizeof err);
			ssize_t len = fd >= 0 ? read(fd, text, sizeof text - 1) : -1;
			if (fd >= 0)
				close(fd);
			char *end;
			long pid = len > 0 ? (text[len] = '\0', strtol(text, &end, 10)) : 0;
			if (pid <= 1 || pid > INT_MAX || (*end != '\0' && *end != '\n') || format(path, sizeof path, "%s", g.gl_pathv[i]) != 0)
				continue;
			*strrchr(path, '/') = '\0';
			int pidfd = (int)syscall(SYS_pidfd_open, (pid_t)pid, 0);
			int32_t proven = (int32_t)pid;
			if (pidfd >= 0 && kinds[k].proven(pidfd, (pid_t)pid, uid, path) && write(out, &proven, sizeof proven) != sizeof proven)
				_exit(1);
			if (pidfd >= 0)
				close(pidfd);
		}
		globfree(&g);
	}
	_exit(0);
}

void keep_for_job(uint32_t job, uint32_t step, uid_t uid, gid_t gid, const char *runtime)
{
	if (step == SLURM_BATCH_SCRIPT || step == SLURM_EXTERN_CONT || step == SLURM_INTERACTIVE_STEP)
		return; /* they live as long as the job */
	int pipefd[2];
	if (pipe2(pipefd, O_CLOEXEC) != 0)
		return;
	pid_t child = fork();
	if (child == 0) {
		close(pipefd[0]);
		prove_as_user(pipefd[1], runtime, job, uid, gid);
	}
	close(pipefd[1]);
	pid_t proven[PID_FILES_MAX];
	size_t n = 0, got = 0;
	struct pollfd in = { .fd = pipefd[0], .events = POLLIN };
	/* One deadline for the whole answer: a child that trickles a byte at a time gets no more. */
	struct timespec now, deadline;
	clock_gettime(CLOCK_MONOTONIC, &deadline);
	deadline.tv_sec += PROVE_MS / 1000;
	for (;;) {
		clock_gettime(CLOCK_MONOTONIC, &now);
		long left = (deadline.tv_sec - now.tv_sec) * 1000 + (deadline.tv_nsec - now.tv_nsec) / 1000000;
		int ready = left > 0 ? poll(&in, 1, (int)left) : 0;
		if (ready < 0 && errno == EINTR)
			continue;
		ssize_t len = ready > 0 ? read(pipefd[0], (char *)proven + got, sizeof proven - got) : -1;
		if (len <= 0)
			break; /* the end, or the time is up: what came is what is moved */
		got += (size_t)len;
	}
	n = got / sizeof *proven;
	close(pipefd[0]);
	if (child > 0) {
		kill(child, SIGKILL);
		while (waitpid(child, NULL, 0) < 0 && errno == EINTR)
			;
	}
	if (n == 0)
		return;
	struct procs ps;
	read_procs(&ps);
	for (size_t i = 0; i < n; i++)
		move_family(&ps, proven[i], uid, job, step);
	free(ps.pid);
	free(ps.parent);
}

/* Whether a server that this task's step starts may be the job's: the step's end moves it when
 * the job has an extern or batch step on this node to move it into, or when no step cgroup
 * holds the task at all (nothing will kill the server with the step). */
int job_keeps_servers(void)
{
	char cgroups[8192];
	if (read_proc(getpid(), "cgroup", cgroups, sizeof cgroups) <= 0)
		return 0;
	for (char *save, *line = strtok_r(cgroups, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		char *controllers, *path;
		if (!v1_line(line, &controllers, &path))
			continue;
		char *in = strstr(path, "/job_"), *stepdir = in ? strstr(in + 5, "/step_") : NULL;
		if (!stepdir)
			continue;
		char tree[PATH_MAX];
		stepdir[1] = '\0'; /* PATH up to /job_J/ */
		return tree_of(controllers, tree, sizeof tree) == 0 && job_step_in(tree, path) != NULL;
	}
	return 1;
}
