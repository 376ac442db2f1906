/* berth-helper: executes one launch plan. Usage: berth-helper [PLAN_FILE] (default: the plan
 * on fd 3). It joins (or starts) the image server for the plan's image (server.c), takes a mount
 * namespace of its own, builds the container's root (mount.c), pivots into it, sets
 * no_new_privs and execs the command: the container is this very process, so its exit status,
 * signals and terminal are the job's own, with no process in between. Nothing is setuid.
 * Run as --launch (launch.c), it is the berth command itself, and becomes the container that
 * berth's Node program planned. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "helper.h"

/* berth's plan comes on a socket (Node's stdio pipe), which berth goes on reading: the image
 * server's guard tells berth there when it had to stop the container (src/runtime/helper.ts). */
static int note_channel(void)
{
	struct stat st;
	if (fstat(3, &st) != 0 || !S_ISSOCK(st.st_mode))
		return -1;
	return fcntl(3, F_DUPFD_CLOEXEC, 3);
}

int main(int argc, char **argv)
{
	keep_argv(argc, argv);
	if (argc == 2 && strcmp(argv[1], "--version") == 0) {
		printf("berth-helper %s\n", BERTH_VERSION); /* berth version compares it with its own */
		return 0;
	}
	if (argc == 2 && strcmp(argv[1], "--probe") == 0)
		return probe();
	if (argc == 4 && strcmp(argv[1], "--step-server") == 0)
		return step_server_main(argv[2], argv[3]);
	if (argc >= 4 && strcmp(argv[1], "--join") == 0 && strcmp(argv[2], "--") == 0)
		join_main(argv + 3);
	if (argc == 2 && strcmp(argv[1], "--instance-start") == 0)
		return instance_start_main();
	if (argc == 2 && strcmp(argv[1], "--instance-join") == 0)
		instance_join_main(3);
	if (argc >= 3 && strcmp(argv[1], "--launch") == 0)
		launch_main(argv + 2);
	if (argc == 3 && strcmp(argv[1], "--instance-list") == 0)
		return instance_list_main(argv[2]);
	if (argc == 6 && strcmp(argv[1], "--instance-stop") == 0)
		return instance_stop_main(argv[2], argv[3], argv[4], argv[5]);
	if (argc == 4 && strcmp(argv[1], "--instance-stop-job") == 0)
		return instance_stop_job_main(argv[2], argv[3]);
	if (argc > 2 || (argc == 2 && argv[1][0] == '-')) {
		fprintf(stderr, "usage: berth-helper [PLAN_FILE]   (default: the plan on fd 3)\n"
				"       berth-helper --step-server PLAN_FILE STEP_DIR   (the SPANK plugin's)\n"
				"       berth-helper --join -- COMMAND...   (a task of `berth srun`: the plan in $BERTH_STEP_PLAN)\n"
				"       berth-helper --launch SCRIPT ARGS...   (the berth command: runs berth, then the container it plans)\n"
				"       berth-helper --version\n"
				"       berth-helper --instance-start | --instance-join   (berth instance start, exec instance://: the plan on fd 3)\n"
				"       berth-helper --instance-list RUNTIME_DIR | --instance-stop RUNTIME_DIR NAME SIGNAL TIMEOUT\n"
				"       berth-helper --instance-stop-job RUNTIME_DIR JOB   (the SPANK plugin's job epilog)\n"
				"berth-helper is started by berth; see `berth plan --format helper IMAGE` for the plans it executes.\n");
		return BERTH_EXIT_SETUP;
	}
	int plan_fd = argc == 2 ? open_plan_file(argv[1]) : 3;
	int note = argc == 2 ? -1 : note_channel();
	/* The container is this process, berth's child: it must not outlive berth (a kill -9 of
	 * berth exec would otherwise leave it running, nobody's, with its image server). Checked
	 * after, in case berth died before the prctl. */
	pid_t parent = getppid();
	if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || getppid() != parent)
		fail("berth, which started this container, has ended; nothing was started");
	run_container(plan_fd, note);
}

noreturn void run_container(int plan_fd, int note)
{
	struct plan p;
	plan_read(plan_fd, &p);
	if (access(p.image, R_OK) != 0)
		fail_errno("cannot read the image %s", p.image);
	if (access("/dev/fuse", F_OK) != 0 && errno == ENOENT)
		fail("/dev/fuse does not exist on this node; an administrator must load the fuse module (modprobe fuse)");
	check_runtime_dir(p.runtime);
	int cgroup = p.cgroup ? cgroup_open(p.cgroup) : -1;

	prepare_network(&p); /* before any namespace is joined: pasta runs in the host's */
	struct server_paths sp;
	int server = attach_image(&p, &sp);
	if (cgroup >= 0)
		cgroup_enter(cgroup, p.cgroup); /* the server joined (or started) stays where it was */
	ask_to_be_watched(server, note);
	if (note >= 0)
		close(note);
	/* Named by this process, which the image server follows (in a PID namespace, the one outside). */
	char base[CONTAINER_BASE_MAX];
	name_container(&sp, base);
	enter_isolation(&p); /* IPC, UTS, network: what the plan asks for, before the PID namespace */
	if (p.pidns)
		enter_pid_namespace(); /* from here on, PID 1 of the container's own */
	/* In a PID namespace, a fuse-overlayfs ends with it: the kernel kills what PID 1 leaves. */
	enter_container_root(&p, &sp, server, base, !p.pidns);
	drop_to_plan_user(&p);
	if (p.pidns)
		run_as_init(&p);
	/* This process becomes the container: its exit status and signals are the job's own. */
	exec_in_container(&p);
}
