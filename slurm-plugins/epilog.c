/* At the job's end, on each node (slurmd, as root): what the job left goes. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <glob.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdnoreturn.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "spank_berth.h"
#include "../native/common/plantext.h"

static void remove_matching(const char *pattern)
{
	glob_t g;
	if (glob(pattern, GLOB_NOSORT, NULL, &g) == 0)
		for (size_t i = 0; i < g.gl_pathc; i++)
			unlink(g.gl_pathv[i]);
	globfree(&g);
}

/* Whether every uid PID has is `uid`, and its command line's first `n` words are `words`
 * (argv[i] NULL: any word; more words may follow). */
static int runs_as(pid_t pid, uid_t uid, const char *const *words, int n)
{
	char status[4096], cmd[8192];
	const char *at = read_proc(pid, "status", status, sizeof status) > 0 ? strstr(status, "\nUid:") : NULL;
	unsigned u[4];
	if (!at || sscanf(at, "\nUid: %u %u %u %u", &u[0], &u[1], &u[2], &u[3]) != 4)
		return 0;
	for (int i = 0; i < 4; i++)
		if (u[i] != (unsigned)uid)
			return 0;
	ssize_t len = read_proc(pid, "cmdline", cmd, sizeof cmd);
	ssize_t off = 0;
	for (int i = 0; i < n; i++, off += (ssize_t)strlen(cmd + off) + 1)
		if (off >= len || (words[i] && strcmp(cmd + off, words[i]) != 0))
			return 0;
	return 1;
}

/* Whether PID is, beyond doubt, the step server of STEPDIR started for uid: every uid it has
 * is the job's, and it runs `HELPER --step-server PLAN STEPDIR` as this plugin started it. A pid file names a
 * number, and numbers are reused: the pidfd, opened first, is what gets signalled, so a
 * process that died meanwhile and whose number went to another is not signalled at all. */
int prove_step_server(int pidfd, pid_t pid, uid_t uid, const char *stepdir)
{
	const char *const words[] = { conf.helper, "--step-server", NULL, stepdir };
	return runs_as(pid, uid, words, 4) && syscall(SYS_pidfd_send_signal, pidfd, 0, NULL, 0) == 0;
}

/* When process `pid` started, in seconds since the epoch (to the second, as the boot time
 * is given), or -1. */
static long long started_at(pid_t pid)
{
	char stat[1024], procstat[4096];
	const char *f = read_proc(pid, "stat", stat, sizeof stat) > 0 ? stat_field(stat, 22) : NULL;
	unsigned long long ticks = 0; /* the start time, in clock ticks since boot */
	if (!f || sscanf(f, "%llu", &ticks) != 1)
		return -1;
	int fd = open("/proc/stat", O_RDONLY | O_CLOEXEC);
	ssize_t len = fd >= 0 ? read(fd, procstat, sizeof procstat - 1) : -1;
	if (fd >= 0)
		close(fd);
	procstat[len > 0 ? len : 0] = '\0';
	const char *at = strstr(procstat, "\nbtime ");
	long long boot;
	long hz = sysconf(_SC_CLK_TCK);
	if (!at || sscanf(at, "\nbtime %lld", &boot) != 1 || hz <= 0)
		return -1;
	return boot + (long long)(ticks / (unsigned long long)hz);
}

/* An image server of the job's (its title, server.c) that wrote the pid file in `dir`: every
 * image server has that title, so it must also have started before the file was written (its
 * guard writes it once the server is forked), which a later process given a reused number has
 * not. */
int prove_image_server(int pidfd, pid_t pid, uid_t uid, const char *dir)
{
	const char *const words[] = { "berth-helper image-server" };
	char file[PATH_MAX];
	struct stat st;
	long long start = started_at(pid);
	return runs_as(pid, uid, words, 1) && format(file, sizeof file, "%s/pid", dir) == 0 && stat(file, &st) == 0 && start >= 0 &&
	       start <= (long long)st.st_mtim.tv_sec + 1 /* the boot time's second */ &&
	       syscall(SYS_pidfd_send_signal, pidfd, 0, NULL, 0) == 0;
}

/* Whether `pid` has ended and only waits to be reaped (a zombie). */
static int dead(pid_t pid)
{
	char stat[1024];
	const char *f = read_proc(pid, "stat", stat, sizeof stat) > 0 ? stat_field(stat, 3) : NULL;
	return f && (*f == 'Z' || *f == 'X');
}

/* Sends SIGTERM to each process named by a pid file matching `pattern` that `proven` shows to
 * be what wrote it, given the directory the file is in; it removes its own directory. The
 * directory of one that is gone (killed with its step) goes here, and its lock. */
static void stop_servers(const char *pattern, uid_t uid, int (*proven)(int, pid_t, uid_t, const char *))
{
	glob_t g;
	if (glob(pattern, GLOB_NOSORT, NULL, &g) != 0)
		return;
	for (size_t i = 0; i < g.gl_pathc; i++) {
		char err[PATH_MAX + 256], dir[PATH_MAX];
		int fd = open_owned_file(g.gl_pathv[i], uid, err, sizeof err);
		FILE *f = fd >= 0 ? fdopen(fd, "re") : NULL;
		int pid = 0;
		if (f && fscanf(f, "%d", &pid) == 1 && pid > 1 && format(dir, sizeof dir, "%s", g.gl_pathv[i]) == 0) {
			*strrchr(dir, '/') = '\0';
			int pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
			if (pidfd >= 0 && proven(pidfd, pid, uid, dir))
				syscall(SYS_pidfd_send_signal, pidfd, SIGTERM, NULL, 0);
			/* Gone, or dead and not yet reaped (killed with its cgroup, an orphan of an init
			 * that has not waited for it): what it left goes, unless a server is starting
			 * there now (it holds the lock) or one answers (the pid file may name a number of
			 * another namespace's). */
			int gone = pidfd < 0 ? errno == ESRCH : dead(pid);
			if (pidfd >= 0)
				close(pidfd);
			char lock[PATH_MAX], sock[PATH_MAX];
			int held = -1;
			if (gone && format(lock, sizeof lock, "%s.lock", dir) == 0 &&
			    format(sock, sizeof sock, "%s/sock", dir) == 0 && (held = lock_file(lock, 1)) >= 0 && socket_answers(sock) == 0) {
				remove_tree(dir);
				unlink(lock);
			}
			if (held >= 0)
				close(held);
		}
		if (f)
			fclose(f);
		else if (fd >= 0)
			close(fd);
	}
	globfree(&g);
}

/* What the job left in one runtime directory, proven the user's (trusted.h). */
static void clear_job_in(const char *runtime, uid_t uid, uint32_t job)
{
	char pattern[PATH_MAX], err[PATH_MAX + 256], jobs[16];
	int dir = open_private_dir(runtime, uid, 0, err, sizeof err);
	if (dir < 0)
		return;
	close(dir);
	/* The job's step containers (their step servers wrote their pids beside them): its named
	 * ones, which wait for the job's next step, and what a killed step left. Then its image
	 * servers, which wait for the next step too (a step's own, narrowed: plantext.h). */
	static const char *const steps[] = { "%s/named-%u-*/pid", "%s/step-%u.*/pid" };
	for (size_t i = 0; i < sizeof steps / sizeof *steps; i++)
		if (format(pattern, sizeof pattern, steps[i], runtime, job) == 0)
			stop_servers(pattern, uid, prove_step_server);
	static const char *const images[] = { "%s/img-*-slurm-%u/pid", "%s/img-*-slurm-%u.*/pid" };
	for (size_t i = 0; i < sizeof images / sizeof *images; i++)
		if (format(pattern, sizeof pattern, images[i], runtime, job) == 0)
			stop_servers(pattern, uid, prove_image_server);
	/* The job's plans, and the locks its servers could not take back on their way out (a
	 * server stopped just now takes its own; one killed with the job's cgroup takes none). */
	static const char *const leftovers[] = { "%s/plan-%u-*", "%s/step-%u.*.lock", "%s/named-%u-*.plan", "%s/named-%u-*.lock" };
	for (size_t i = 0; i < sizeof leftovers / sizeof *leftovers; i++)
		if (format(pattern, sizeof pattern, leftovers[i], runtime, job) == 0)
			remove_matching(pattern);
	/* --container-save's overlay directories that a killed step left (save.c removes its own). */
	glob_t g;
	if (format(pattern, sizeof pattern, "%s/step-%u.*.save", runtime, job) == 0) {
		if (glob(pattern, GLOB_NOSORT | GLOB_ONLYDIR, NULL, &g) == 0)
			for (size_t i = 0; i < g.gl_pathc; i++)
				remove_tree(g.gl_pathv[i]);
		globfree(&g);
	}
	/* The job's instances: ended with their step, but one killed with its cgroup left them. */
	snprintf(jobs, sizeof jobs, "%u", job);
	char *argv[] = { conf.helper, "--instance-stop-job", (char *)runtime, jobs, NULL };
	run(argv, environ, NULL, 0);
}

/* The epilog's cleanup, in a child that has become the job's user: the paths and the pid
 * files it reads are the user's to write, so root must not act on them. It acts only in a
 * runtime directory proven the user's (trusted.h): the plugin's, and those the job's servers
 * and instances linked from there (plantext.h, RUNTIME_ELSEWHERE); and on the user's own files
 * in stage_dir. */
static noreturn void clean_up_as(uid_t uid, gid_t gid, uint32_t job)
{
	if (setgroups(0, NULL) != 0 || setresgid(gid, gid, gid) != 0 || setresuid(uid, uid, uid) != 0)
		_exit(1);
	/* Nothing of slurmd's goes on to the helper it runs, which the user may trace. */
	close_range(3, ~0U, 0);
	char runtime[sizeof ((struct task *)0)->runtime], pattern[PATH_MAX];
	if (*conf.stage_dir && format(pattern, sizeof pattern, "%s/berth-%u-%u-*", conf.stage_dir, job, (unsigned)uid) == 0)
		remove_matching(pattern); /* in a sticky directory only one's own files go */
	if (expand_runtime(runtime, sizeof runtime, uid) != 0)
		_exit(0);
	clear_job_in(runtime, uid, job);
	glob_t g;
	char jobs[16];
	snprintf(jobs, sizeof jobs, "%u", job);
	if (format(pattern, sizeof pattern, "%s/elsewhere-%s-*", runtime, jobs) == 0 && glob(pattern, GLOB_NOSORT, NULL, &g) == 0) {
		for (size_t i = 0; i < g.gl_pathc && i < 16; i++) { /* a job uses a directory or two */
			char elsewhere[PATH_MAX];
			ssize_t len = readlink(g.gl_pathv[i], elsewhere, sizeof elsewhere - 1);
			if (len > 0 && elsewhere[0] == '/') {
				elsewhere[len] = '\0';
				clear_job_in(elsewhere, uid, job);
			}
			unlink(g.gl_pathv[i]);
		}
		globfree(&g);
	}
	_exit(0);
}

int slurm_spank_job_epilog(spank_t sp, int ac, char **av)
{
	uint32_t job;
	uid_t uid;
	gid_t gid;
	if (parse_args(ac, av) != 0)
		return -1;
	if (spank_get_item(sp, S_JOB_ID, &job) != ESPANK_SUCCESS || spank_get_item(sp, S_JOB_UID, &uid) != ESPANK_SUCCESS)
		return 0;
	struct passwd *pw = getpwuid(uid);
	if (spank_get_item(sp, S_JOB_GID, &gid) != ESPANK_SUCCESS)
		gid = pw ? pw->pw_gid : (gid_t)uid;
	pid_t pid = fork();
	if (pid == 0)
		clean_up_as(uid, gid, job);
	while (pid > 0 && waitpid(pid, NULL, 0) < 0 && errno == EINTR)
		;
	return 0;
}
