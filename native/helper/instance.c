/* Instances (Apptainer's): a named container of the user's on this node that runs detached, and
 * that `berth exec instance://NAME` joins. berth-helper --instance-start takes the plan on fd 3
 * and forks a monitor that is nobody's child; the monitor joins (or starts) the image server as
 * any container does, and forks the container's init into a PID namespace of its own, which
 * builds the root and runs the command as PID 2 with stdout and stderr in the instance's log.
 * The command tells the monitor it is about to exec (a message on a socket with SO_PASSCRED,
 * which gives its pid as the host sees it) and whether the exec failed (a byte on a pipe that
 * a successful exec closes). Only then does the monitor record the instance's state and let
 * the starting helper return; every error before that reaches the user's terminal, and the
 * instance's directory is removed. The monitor then waits for the init, records the command's
 * status and leaves: the command's end ends the PID namespace, so nothing of it remains.
 * Under Slurm it also ends the instance, and removes it, when the slurmstepd it was started
 * under ends (the step, or the batch script's: the job). Joining is instance_join.c's; the
 * state directory, list and stop are instance_state.c's. */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "helper.h"
#include "instance.h"
#include "../common/plantext.h"
#include "../common/trusted.h"

/* Far above any real plan (a few KiB), low enough that a runaway writer is refused. */
#define PLAN_TEXT_MAX (4 << 20)

/* The plan on fd 3, whole: the instance's directory keeps it as it came. */
static char *read_plan_text(size_t *len)
{
	size_t cap = 65536, n = 0;
	char *buf = malloc(cap);
	for (;;) {
		if (!buf)
			fail("out of memory");
		if (n == cap) {
			if (cap >= PLAN_TEXT_MAX)
				fail("the launch plan is longer than %d bytes", PLAN_TEXT_MAX);
			buf = realloc(buf, cap *= 2);
			continue;
		}
		ssize_t r = read(3, buf + n, cap - n);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			fail_errno("cannot read the launch plan from fd 3");
		if (r == 0)
			break;
		n += (size_t)r;
	}
	close(3);
	*len = n;
	return buf;
}

struct start {
	struct plan *p;
	int runtime, instances, dir, log, lock; /* directory fds: the runtime directory, instances, this one */
	int stepd;       /* under Slurm, a pidfd of the slurmstepd it was started under, or -1 */
	int creds[2];    /* the command's "about to exec", carrying its pid as the host sees it */
	int execpipe[2]; /* a byte when its exec failed; EOF when it succeeded */
};

/* In the command's process, just before it execs (run_as_init_then). */
static void prepare_command(void *ctx)
{
	struct start *s = ctx;
	close(s->creds[0]);
	close(s->execpipe[0]);
	if (send(s->creds[1], "r", 1, MSG_NOSIGNAL) != 1)
		_exit(BERTH_EXIT_SETUP);
	close(s->creds[1]);
	if (dup2(s->log, STDOUT_FILENO) < 0 || dup2(s->log, STDERR_FILENO) < 0)
		_exit(BERTH_EXIT_SETUP);
	if (s->p->nargv == 0) {
		/* No command (an Apptainer image without a startscript): this process only holds the
		 * instance's namespaces for `exec instance://` to join, until it is stopped. */
		close(s->execpipe[1]);
		for (;;)
			pause();
	}
}

/* The container's init, PID 1 of the instance's namespace: builds the root, then runs the command. */
static noreturn void init_instance(struct start *s, const struct server_paths *sp, int server, const char *base)
{
	close(s->creds[0]);
	close(s->execpipe[0]);
	close(s->lock); /* flock belongs to the open file: a copy here would hold it for the instance's life */
	close(s->instances);
	close(s->dir);
	close(s->runtime);
	if (s->stepd >= 0)
		close(s->stepd);
	enter_container_root(s->p, sp, server, base, 0); /* a fuse-overlayfs it starts ends with the namespace */
	if (s->p->fakeroot)
		lock_mounts();
	/* Set up: from here on, what goes wrong is the command's, and goes to its log. */
	dup2(s->log, STDERR_FILENO);
	int command_only[] = { s->creds[1], s->execpipe[1] };
	run_as_init_then(s->p, prepare_command, s, command_only, 2);
}

/* The pid of the process that sent the message, in this process's PID namespace; 0 at EOF. */
static pid_t sender_pid(int sock)
{
	char byte, ctl[CMSG_SPACE(sizeof(struct ucred))];
	struct iovec iov = { .iov_base = &byte, .iov_len = 1 };
	struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl, .msg_controllen = sizeof ctl };
	ssize_t n;
	while ((n = recvmsg(sock, &msg, 0)) < 0 && errno == EINTR)
		;
	struct cmsghdr *c = n == 1 ? CMSG_FIRSTHDR(&msg) : NULL;
	if (!c || c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_CREDENTIALS)
		return 0;
	struct ucred cred;
	memcpy(&cred, CMSG_DATA(c), sizeof cred);
	return cred.pid;
}

/* The log so far, onto stderr (the report pipe): why the command could not start. */
static void copy_log(int dir)
{
	int fd = openat(dir, "log", O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	char buf[4096];
	ssize_t n;
	while (fd >= 0 && (n = read(fd, buf, sizeof buf)) > 0)
		if (write(STDERR_FILENO, buf, (size_t)n) != n)
			break;
	if (fd >= 0)
		close(fd);
}

static unsigned long long start_of(pid_t pid)
{
	char path[64];
	snprintf(path, sizeof path, "/proc/%d", (int)pid);
	int proc = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	unsigned long long t = proc >= 0 ? start_time(proc) : 0;
	if (proc >= 0)
		close(proc);
	return t;
}

/* Seconds the command has to end after SIGTERM when its Slurm job ended, before SIGKILL. */
#define JOB_END_GRACE_MS 10000

/* Waits for the init (the instance's end) and, under Slurm, for the slurmstepd it was started
 * under: when that ends, so does the instance (SIGTERM, which the init passes on, then
 * SIGKILL). Returns the init's wait status. */
static int wait_for_init(pid_t init, int stepd, int *job_ended)
{
	int initfd = (int)syscall(SYS_pidfd_open, init, 0);
	struct pollfd fds[2] = { { .fd = initfd, .events = POLLIN }, { .fd = stepd, .events = POLLIN } };
	while (initfd >= 0 && stepd >= 0) {
		if (poll(fds, 2, -1) < 0) {
			if (errno == EINTR)
				continue; /* a signal forwarded to the init */
			break;
		}
		if (fds[0].revents)
			break;
		if (fds[1].revents) {
			*job_ended = 1;
			kill(init, SIGTERM);
			if (poll(fds, 1, JOB_END_GRACE_MS) != 1)
				kill(init, SIGKILL);
			break;
		}
	}
	int status = 0;
	while (waitpid(init, &status, 0) < 0)
		if (errno != EINTR)
			_exit(BERTH_EXIT_SETUP);
	return status;
}

/* Under Slurm, the nearest slurmstepd above this process (root's, so named): the step the
 * instance was started in. proctrack/linuxproc and pgid follow a job's processes by their
 * parents, and the monitor, nobody's child, has left that tree, so Slurm alone might leave the
 * instance running after the job; the monitor ends it when this process ends. -1 if none. */
static int enclosing_stepd(void)
{
	if (!getenv("SLURM_JOB_ID"))
		return -1;
	pid_t pid = getppid();
	for (int hops = 0; pid > 1 && hops < 64; hops++) {
		char path[64], buf[4096];
		snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
		int fd = open(path, O_RDONLY | O_CLOEXEC);
		ssize_t n = fd >= 0 ? read(fd, buf, sizeof buf - 1) : -1;
		if (fd >= 0)
			close(fd);
		if (n <= 0)
			return -1;
		buf[n] = '\0';
		char *open_paren = strchr(buf, '('), *close_paren = strrchr(buf, ')');
		const char *parent = stat_field(buf, 4);
		struct stat st;
		snprintf(path, sizeof path, "/proc/%d", (int)pid);
		if (!open_paren || !close_paren || !parent || stat(path, &st) != 0)
			return -1;
		*close_paren = '\0';
		if (strcmp(open_paren + 1, "slurmstepd") == 0 && st.st_uid == 0)
			return (int)syscall(SYS_pidfd_open, pid, 0);
		int ppid = 0;
		if (sscanf(parent, "%d", &ppid) != 1)
			return -1;
		pid = ppid;
	}
	return -1;
}

/* The monitor: nobody's child, outside the instance's PID namespace. Its stderr is the report
 * pipe until the command runs. */
static noreturn void monitor(struct start *s)
{
	struct plan *p = s->p;
	setsid();
	int devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
	if (devnull < 0 || dup2(devnull, STDIN_FILENO) < 0 || dup2(devnull, STDOUT_FILENO) < 0)
		fail_errno("cannot open /dev/null");
	prepare_network(p); /* before any namespace is joined: pasta runs in the host's; it ends with this monitor */
	struct server_paths sp;
	int server = attach_image(p, &sp);
	enter_isolation(p); /* IPC, UTS, network: the init and every command joined later share them */
	/* Should the image server end under it, the guard says so in the log. */
	ask_to_be_watched_on(server, s->log, -1);
	char base[CONTAINER_BASE_MAX];
	name_container(&sp, base); /* named by the process the server follows: this one */
	int on = 1;
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, s->creds) != 0 || pipe2(s->execpipe, O_CLOEXEC) != 0 ||
	    setsockopt(s->creds[0], SOL_SOCKET, SO_PASSCRED, &on, sizeof on) != 0)
		fail_errno("cannot create the channel to the instance's command");
	p->exec_report = s->execpipe[1];
	/* A PID namespace of its own: stopping the command ends every process of the instance. */
	if (unshare(CLONE_NEWPID) != 0)
		fail_errno("cannot create the instance's PID namespace");
	pid_t init = fork_tied();
	if (init == 0)
		init_instance(s, &sp, server, base);
	close(s->creds[1]);
	close(s->execpipe[1]);
	close(server);
	pid_t cmd = sender_pid(s->creds[0]);
	char byte;
	ssize_t failed = cmd > 0 ? read(s->execpipe[0], &byte, 1) : 0;
	if (cmd <= 0 || failed == 1) {
		copy_log(s->dir);
		waitpid(init, NULL, 0);
		_exit(BERTH_EXIT_SETUP); /* the starting helper removes the directory */
	}
	struct instance_state st = { .pid = cmd, .start = start_of(cmd), .monitor = getpid(), .mstart = start_of(getpid()), .started = time(NULL) };
	const char *job = getenv("SLURM_JOB_ID");
	format(st.job, sizeof st.job, "%s", job ? job : "");
	format(st.image, sizeof st.image, "%s", p->image);
	format(st.server, sizeof st.server, "%s", sp.sock);
	write_state(s->dir, &st);
	close(s->lock);
	forward_signals(init);
	dup2(devnull, STDERR_FILENO); /* EOF on the report pipe: the instance runs */
	int job_ended = 0, status = wait_for_init(init, s->stepd, &job_ended);
	if (job_ended) {
		/* Nobody is left to stop it: what the instance leaves goes now. */
		int lock = lock_file_at(s->instances, ".lock", 0);
		remove_instance(s->instances, p->instance);
		remove_if_last(s->runtime, s->instances);
		if (lock >= 0)
			close(lock);
		_exit(0);
	}
	int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
	int fd = openat(s->dir, "exit", O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (fd >= 0) {
		dprintf(fd, "%d\n", code);
		close(fd);
	}
	_exit(0);
}

/* The monitor is a daemon: of the descriptors the caller gave berth (a pipe whose reader waits
 * for EOF, a terminal) it keeps none, and neither do the instance's processes. */
static void close_other_fds(const struct start *s)
{
	int keep[] = { s->runtime, s->instances, s->dir, s->log, s->lock, s->stepd };
	DIR *d = opendir("/proc/self/fd");
	if (!d)
		fail_errno("cannot list the open file descriptors");
	int mine = dirfd(d);
	for (struct dirent *e; (e = readdir(d));) {
		int fd = atoi(e->d_name), kept = fd <= STDERR_FILENO || fd == mine || e->d_name[0] == '.';
		for (size_t i = 0; i < sizeof keep / sizeof *keep; i++)
			kept |= fd == keep[i];
		if (!kept)
			close(fd);
	}
	closedir(d);
}

static void write_new_file(int dir, const char *name, const char *text, size_t len)
{
	int fd = openat(dir, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (fd < 0 || write(fd, text, len) != (ssize_t)len)
		fail_errno("cannot write %s in the instance's directory", name);
	close(fd);
}

/* Under the lock: makes INSTANCES/NAME, unless an instance of that name runs. */
static int make_instance_dir(int instances, const char *name)
{
	if (mkdirat(instances, name, 0700) != 0) {
		if (errno != EEXIST)
			fail_errno("cannot create the instance directory %s", name);
		int dir = open_instance(instances, name);
		struct instance_state st;
		struct proven cmd;
		if (dir >= 0 && read_state(dir, &st) == 0 && prove(st.pid, st.start, &cmd) == 0)
			fail("an instance named %s is already running on this node (pid %d); stop it first: berth instance stop %s", name,
			     (int)st.pid, name);
		/* One that has ended (or a start that was killed): its directory, log included, goes. */
		if (dir >= 0)
			close(dir);
		remove_instance(instances, name);
		if (mkdirat(instances, name, 0700) != 0)
			fail_errno("cannot create the instance directory %s", name);
	}
	return open_instance(instances, name);
}

int instance_start_main(void)
{
	size_t len;
	char *text = read_plan_text(&len);
	struct plan p;
	plan_read(memfd_of(text, len), &p);
	if (!p.instance)
		fail("the launch plan names no instance");
	check_instance_name(p.instance);
	if (access(p.image, R_OK) != 0)
		fail_errno("cannot read the image %s", p.image);
	check_runtime_dir(p.runtime);
	char err[1024];
	/* Kept open: the monitor removes the instances directory by it from inside the image server's namespaces. */
	struct start s = { .p = &p, .lock = -1, .runtime = open_private_dir(p.runtime, getuid(), 0, err, sizeof err) };
	if (s.runtime < 0)
		fail("cannot use the runtime directory: %s", err);
	note_job_runtime(p.runtime); /* in a job: its epilog clears what a killed instance leaves */
	/* A stop that removed the last instance takes the instances directory with it: once more then. */
	for (int tries = 0; s.lock < 0 && tries < 3; tries++) {
		s.instances = open_instances(p.runtime, 1);
		if ((s.lock = lock_file_at(s.instances, ".lock", 0)) < 0 && errno != ENOENT)
			fail_errno("cannot lock the instances directory");
		if (s.lock < 0)
			close(s.instances);
	}
	if (s.lock < 0)
		fail("cannot lock the instances directory: it keeps vanishing");
	s.dir = make_instance_dir(s.instances, p.instance);
	write_new_file(s.dir, "plan", text, len);
	s.log = openat(s.dir, "log", O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_APPEND | O_CLOEXEC, 0600);
	s.stepd = enclosing_stepd();
	int report[2];
	if (s.log < 0 || pipe2(report, O_CLOEXEC) != 0)
		fail_errno("cannot create the instance's log");
	if (fork_orphan() == 0) {
		close(report[0]);
		if (dup2(report[1], STDERR_FILENO) < 0)
			_exit(BERTH_EXIT_SETUP);
		close(report[1]);
		close_other_fds(&s);
		monitor(&s);
	}
	close(report[1]);
	char msg[8192];
	ssize_t n, total = 0;
	while ((n = read(report[0], msg + total, sizeof msg - 1 - (size_t)total)) > 0 || (n < 0 && errno == EINTR))
		total += n > 0 ? n : 0;
	msg[total] = '\0';
	struct instance_state st;
	if (total > 0 || read_state(s.dir, &st) != 0) {
		/* Everything that wrote there has ended; nothing of the instance is left but this. */
		remove_instance(s.instances, p.instance);
		remove_if_last(s.runtime, s.instances);
		if (total > 0)
			fputs(msg, stderr);
		else
			fprintf(stderr, "berth: error: the instance %s ended before its command started\n", p.instance);
		if (total > 0 && strncmp(msg, "berth: error:", 13) != 0)
			fprintf(stderr, "berth: error: the instance %s could not start its command (above)\n", p.instance);
		return BERTH_EXIT_SETUP;
	}
	return 0;
}
