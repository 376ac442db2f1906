/* At the job's end, on each node (slurmd, as root): what the job left goes. */
#define _GNU_SOURCE
#include <errno.h>
#include <glob.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <sys/wait.h>
#include <unistd.h>

#include "spank_berth.h"

static void remove_matching(const char *pattern)
{
	glob_t g;
	if (glob(pattern, 0, NULL, &g) == 0)
		for (size_t i = 0; i < g.gl_pathc; i++)
			unlink(g.gl_pathv[i]);
	globfree(&g);
}

/* The epilog's cleanup, in a child that has become the job's user: the paths and the pid
 * files it reads are the user's to write, so root must not act on them (a pid file could name
 * any process, a runtime directory could be a link to anywhere). */
static void clean_up_as(uid_t uid, gid_t gid, uint32_t job)
{
	if (setgroups(0, NULL) != 0 || setresgid(gid, gid, gid) != 0 || setresuid(uid, uid, uid) != 0)
		_exit(1);
	char runtime[1100], pattern[1300];
	expand_runtime(runtime, sizeof runtime, uid);
	if (*conf.stage_dir) {
		snprintf(pattern, sizeof pattern, "%s/berth-%u-*", conf.stage_dir, job);
		remove_matching(pattern);
	}
	snprintf(pattern, sizeof pattern, "%s/plan-%u-*", runtime, job);
	remove_matching(pattern);
	snprintf(pattern, sizeof pattern, "%s/named-%u-*/pid", runtime, job);
	glob_t g;
	if (glob(pattern, 0, NULL, &g) == 0) {
		for (size_t i = 0; i < g.gl_pathc; i++) {
			FILE *f = fopen(g.gl_pathv[i], "re");
			int pid = 0;
			if (f && fscanf(f, "%d", &pid) == 1 && pid > 1)
				kill(pid, SIGTERM); /* it removes its own directory */
			if (f)
				fclose(f);
		}
	}
	globfree(&g);
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
