/* --container-save=PATH (pyxis's): when the step ends on its first node, what the step's
 * container changed there becomes a new image at PATH, through `berth commit --from-overlay`.
 *
 * The container's writable layer is a directory of the node's, in the user's runtime directory
 * (`berth plan --slurm-step --save-overlay RUNTIME/step-JOB.STEP-NODE.save`), instead of the
 * step server's tmpfs. When the last task of the step on a node has exited (task_exit, which
 * slurmstepd calls before it tells srun, so the image is there when srun returns), the step's
 * container is stopped and, on node 0 only (one file is wanted, and the nodes' changes may
 * differ), committed; then the directory goes, on every node.
 *
 * Never destroy user data (pyxis issue 151: `--container-save=./` deleted a home directory):
 * PATH is checked at submission and refused unless it names a file, new or existing, in an
 * existing directory; a directory (empty or not, through a symlink or not) is refused before
 * the job queues. berth commit writes a new file and renames it over PATH (an existing file is
 * replaced whole, or not at all, as pyxis users expect it replaced), and refuses a directory
 * itself too. Nothing is saved when a task of node 0 failed: a good image is not replaced by
 * one of a failed step. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <grp.h>
#include <limits.h>
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

/* At submission (srun, sbatch): PATH made absolute (the job gets it in
 * BERTH_CONTAINER_SAVE_RESOLVED) and refused unless it can only ever be a file. */
int check_save_path(void)
{
	if (!req.save)
		return 0;
	if (req.writable == 0) {
		slurm_error("berth: --container-save saves what the container changed, and --container-readonly forbids changes; give one of them");
		return -1;
	}
	if (req.name) {
		slurm_error("berth: --container-save with --container-name is not offered: a named container's changes span the job's steps; save from an unnamed step");
		return -1;
	}
	char path[PATH_MAX], cwd[PATH_MAX];
	size_t len = strlen(req.save);
	const char *last = strrchr(req.save, '/') ? strrchr(req.save, '/') + 1 : req.save;
	if (len == 0 || req.save[len - 1] == '/' || strcmp(last, ".") == 0 || strcmp(last, "..") == 0) {
		slurm_error("berth: --container-save=%s names a directory; name the image file to write, e.g. --container-save=%s%sapp.sqsh", req.save, req.save,
			    len && req.save[len - 1] == '/' ? "" : "/");
		return -1;
	}
	if (req.save[0] != '/' && !getcwd(cwd, sizeof cwd)) {
		slurm_error("berth: --container-save=%s: cannot read the working directory: %s", req.save, strerror(errno));
		return -1;
	}
	if (format(path, sizeof path, "%s%s%s", req.save[0] == '/' ? "" : cwd, req.save[0] == '/' ? "" : "/", req.save) != 0) {
		slurm_error("berth: --container-save=%s: the path is too long", req.save);
		return -1;
	}
	struct stat st;
	if (stat(path, &st) == 0 && !S_ISREG(st.st_mode)) {
		slurm_error("berth: --container-save=%s is %s; berth writes one image file and never replaces anything else: name a file, e.g. %s/app.sqsh", req.save,
			    S_ISDIR(st.st_mode) ? "a directory" : "not a regular file", S_ISDIR(st.st_mode) ? req.save : ".");
		return -1;
	}
	char parent[sizeof path];
	memcpy(parent, path, sizeof parent);
	*strrchr(parent, '/') = '\0';
	if (stat(*parent ? parent : "/", &st) != 0 || !S_ISDIR(st.st_mode)) {
		slurm_error("berth: --container-save=%s: %s is not a directory; create it first", req.save, parent);
		return -1;
	}
	setenv("BERTH_CONTAINER_SAVE_RESOLVED", path, 1); /* srun and sbatch pass it to the job */
	return 0;
}

/* Each directory opened up to its owner before it is read (overlayfs leaves its work/work mode
 * 0); nftw cannot read one that was closed when it got there, so again until none was. */
static int closed_dirs;
static int open_up(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
	(void)ftw;
	if ((type == FTW_D || type == FTW_DNR) && (st->st_mode & 0700) != 0700 && chmod(path, 0700) == 0 && type == FTW_DNR)
		closed_dirs++;
	return 0;
}

static int remove_entry(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
	(void)st, (void)type, (void)ftw;
	remove(path);
	return 0;
}

void remove_tree(const char *path)
{
	for (int pass = 0; pass < 16; pass++) {
		closed_dirs = 0;
		nftw(path, open_up, 16, FTW_PHYS | FTW_MOUNT);
		if (!closed_dirs)
			break;
	}
	nftw(path, remove_entry, 16, FTW_DEPTH | FTW_PHYS | FTW_MOUNT);
}

/* Stops the step's container on this node (its tasks are gone) and waits until it has left:
 * its overlay is then unmounted, and the directory holds only what it wrote. */
static void stop_step_server(const char *stepdir, uid_t uid)
{
	char pidfile[PATH_MAX], err[PATH_MAX + 256];
	int fd = format(pidfile, sizeof pidfile, "%s/pid", stepdir) == 0 ? open_owned_file(pidfile, uid, err, sizeof err) : -1;
	FILE *f = fd >= 0 ? fdopen(fd, "re") : NULL;
	int pid = 0;
	if (f && fscanf(f, "%d", &pid) == 1 && pid > 1) {
		int pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
		if (pidfd >= 0 && prove_step_server(pidfd, pid, uid, stepdir))
			syscall(SYS_pidfd_send_signal, pidfd, SIGTERM, NULL, 0);
		if (pidfd >= 0)
			close(pidfd);
	}
	if (f)
		fclose(f);
	struct stat st;
	for (int i = 0; i < 300 && stat(stepdir, &st) == 0; i++)
		nanosleep(&(struct timespec){ 0, 100000000 }, NULL);
}

/* As the job's user, in a child: its files are the user's to read and to write. */
static void save_as(spank_t sp, uid_t uid, gid_t gid, const char *stepdir, const char *overlay, const char *runtime, int commit)
{
	pid_t pid = fork();
	if (pid < 0) {
		slurm_error("berth: --container-save: cannot fork: %s", strerror(errno));
		return;
	}
	if (pid > 0) {
		while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
			;
		return;
	}
	if (setgroups(0, NULL) != 0 || setresgid(gid, gid, gid) != 0 || setresuid(uid, uid, uid) != 0)
		_exit(1);
	stop_step_server(stepdir, uid);
	char err[512];
	int dir = open_private_dir(runtime, uid, 0, err, sizeof err);
	if (dir < 0)
		_exit(0); /* nothing of ours to save or remove */
	close(dir);
	const char *target = variable(sp, "BERTH_CONTAINER_SAVE_RESOLVED");
	if (commit && (!target || *target != '/'))
		slurm_error("berth: --container-save: the job has no resolved path to save to (was the plugin loaded where the job was submitted?)");
	else if (commit) {
		char out[8192], **env = berth_env(sp, runtime);
		if (!env)
			_exit(1);
		/* --force replaces a file only (berth refuses a directory even so), by a rename. */
		char *argv[] = { conf.berth, "commit", "--from-overlay", (char *)overlay, "-o", (char *)target, "--force", "--quiet", NULL };
		if (run_capturing(argv, env, out, sizeof out, 1) != 0)
			slurm_error("berth: --container-save=%s failed, nothing was written there: %s", target, out);
	}
	remove_tree(overlay);
	_exit(0);
}

/* Once per node, when the step's last task there has exited. */
static unsigned exited, failed;

void save_at_task_exit(spank_t sp, const struct task *t, const char *stepdir)
{
	int status = 0;
	uint32_t local = 0, node = 1;
	exited++;
	if (spank_get_item(sp, S_TASK_EXIT_STATUS, &status) == ESPANK_SUCCESS && !(WIFEXITED(status) && WEXITSTATUS(status) == 0))
		failed++;
	if (spank_get_item(sp, S_JOB_LOCAL_TASK_COUNT, &local) != ESPANK_SUCCESS || exited < local)
		return;
	spank_get_item(sp, S_JOB_NODEID, &node);
	char overlay[PATH_MAX];
	if (format(overlay, sizeof overlay, "%s.save", stepdir) != 0)
		return;
	if (node == 0 && failed)
		slurm_error("berth: --container-save: not saved, a task of the step failed on the first node; the image at the path stays as it was");
	save_as(sp, t->uid, t->gid, stepdir, overlay, t->runtime, node == 0 && !failed);
}
