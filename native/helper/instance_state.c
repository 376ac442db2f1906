/* Instances' state, and the commands that only read or end it (berth-helper --instance-list,
 * --instance-stop). An instance lives in RUNTIME/instances/NAME/, a directory of the caller's
 * inside the proven runtime directory (SECURITY.md: a private directory, mode 0700, refused
 * when someone else made it):
 *
 *   plan    the instance's launch plan, as berth sent it (exec instance:// reads its env, cwd)
 *   log     the command's stdout and stderr
 *   state   pid and start time of the command and of its monitor, start, job, image, its image server's socket
 *   exit    the command's status, once it ended on its own
 *   ../.lock  flock: a start, a stop and the removal of a dead instance take turns
 *
 * A pid is never believed for itself: a process is the instance's only when it is the caller's
 * and started at the recorded time (/proc/PID/stat), checked after a pidfd to it is held, so
 * the pid cannot have been reused in between, and it is signalled only through that pidfd. */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "helper.h"
#include "instance.h"
#include "../common/plantext.h"
#include "../common/trusted.h"

static int name_char(char c, int first)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || (!first && (c == '.' || c == '_' || c == '-'));
}

void check_instance_name(const char *name)
{
	size_t n = strlen(name);
	int ok = n > 0 && n <= INSTANCE_NAME_MAX;
	for (size_t i = 0; ok && i < n; i++)
		ok = name_char(name[i], i == 0);
	if (!ok)
		fail("invalid instance name '%.*s': use 1 to %d letters, digits, '.', '_' or '-', starting with a letter or a digit",
		     INSTANCE_NAME_MAX + 8, name, INSTANCE_NAME_MAX);
}

int open_instances(const char *runtime, int create)
{
	char path[4200], err[1024];
	if (format(path, sizeof path, "%s/instances", runtime) != 0)
		fail("the runtime directory %s is too long; set a shorter BERTH_RUNTIME_DIR", runtime);
	struct stat st;
	if (!create && lstat(path, &st) != 0 && errno == ENOENT)
		return -1;
	int fd = open_private_dir(path, getuid(), create, err, sizeof err);
	if (fd < 0)
		fail("cannot use the instances directory: %s; remove it, or set BERTH_RUNTIME_DIR to a directory of yours", err);
	return fd;
}

int open_instance(int instances, const char *name)
{
	int fd = openat(instances, name, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	struct stat st;
	if (fd < 0) {
		if (errno == ENOENT)
			return -1;
		fail_errno("cannot open the instance %s", name);
	}
	/* Inside a proven directory nobody else can have made it; checked anyway, it is cheap. */
	if (fstat(fd, &st) != 0 || st.st_uid != getuid() || (st.st_mode & 077))
		fail("the instance directory %s is not yours alone (owner uid %u, mode %04o); remove it", name, (unsigned)st.st_uid,
		     (unsigned)(st.st_mode & 07777));
	return fd;
}

/* A file of the instance's directory, as text (NUL-terminated); -1 when it is not there. */
static int read_small(int dir, const char *name, char *buf, size_t size)
{
	int fd = openat(dir, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
	if (fd < 0)
		return -1;
	struct stat st;
	ssize_t n = -1;
	if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && st.st_uid == getuid())
		n = read(fd, buf, size - 1);
	close(fd);
	if (n < 0)
		return -1;
	buf[n] = '\0';
	return 0;
}

int read_state(int dir, struct instance_state *st)
{
	char buf[8192];
	memset(st, 0, sizeof *st);
	if (read_small(dir, "state", buf, sizeof buf) != 0)
		return -1;
	for (char *save = NULL, *line = strtok_r(buf, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		char *v = strchr(line, ' ');
		if (!v)
			continue;
		*v++ = '\0';
		if (strcmp(line, "pid") == 0) st->pid = (pid_t)strtol(v, NULL, 10);
		else if (strcmp(line, "start") == 0) st->start = strtoull(v, NULL, 10);
		else if (strcmp(line, "monitor") == 0) st->monitor = (pid_t)strtol(v, NULL, 10);
		else if (strcmp(line, "monitorstart") == 0) st->mstart = strtoull(v, NULL, 10);
		else if (strcmp(line, "started") == 0) st->started = strtoll(v, NULL, 10);
		else if (strcmp(line, "job") == 0) format(st->job, sizeof st->job, "%s", strcmp(v, "-") ? v : "");
		else if (strcmp(line, "image") == 0 || strcmp(line, "server") == 0) {
			char *path = plan_unescape(v);
			if (path && strcmp(path, "-") != 0)
				format(*line == 'i' ? st->image : st->server, sizeof st->image, "%s", path);
			free(path);
		}
	}
	return st->pid > 0 && st->monitor > 0 ? 0 : -1;
}

/* The image path, with the plan's escapes (plantext.h), so that it stays on its line. */
static void escaped(FILE *f, const char *s)
{
	if (!*s)
		fputc('-', f);
	for (; *s; s++)
		if (*s == ' ' || *s == '\t' || *s == '\n' || *s == '\\')
			fprintf(f, "\\%03o", (unsigned char)*s);
		else
			fputc(*s, f);
}

void write_state(int dir, const struct instance_state *st)
{
	/* Written aside and renamed: a reader sees the whole state or none. */
	int fd = openat(dir, "state.new", O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600);
	FILE *f = fd >= 0 ? fdopen(fd, "w") : NULL;
	if (!f)
		fail_errno("cannot write the instance's state");
	fprintf(f, "pid %d\nstart %llu\nmonitor %d\nmonitorstart %llu\nstarted %lld\njob %s\nimage ", (int)st->pid, st->start,
		(int)st->monitor, st->mstart, st->started, *st->job ? st->job : "-");
	escaped(f, st->image);
	fputs("\nserver ", f);
	escaped(f, st->server);
	fputc('\n', f);
	if (fclose(f) != 0 || renameat(dir, "state.new", dir, "state") != 0)
		fail_errno("cannot write the instance's state");
}

unsigned long long start_time(int proc)
{
	char buf[2048];
	if (read_small(proc, "stat", buf, sizeof buf) != 0)
		return 0;
	const char *p = stat_field(buf, 22);
	return p ? strtoull(p, NULL, 10) : 0;
}

/* Whether every uid of the process (real, effective, saved, fs) is the caller's. */
static int owned_by_caller(int proc)
{
	char buf[4096];
	if (read_small(proc, "status", buf, sizeof buf) != 0)
		return 0;
	const char *uid = strstr(buf, "\nUid:");
	unsigned r, e, s, f;
	if (!uid || sscanf(uid, "\nUid: %u %u %u %u", &r, &e, &s, &f) != 4)
		return 0;
	uid_t me = getuid();
	return r == me && e == me && s == me && f == me;
}

int prove(pid_t pid, unsigned long long start, struct proven *out)
{
	out->pidfd = out->proc = -1;
	if (pid <= 0 || start == 0)
		return -1;
	int pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
	if (pidfd < 0)
		return -1;
	char path[64];
	snprintf(path, sizeof path, "/proc/%d", (int)pid);
	/* Opened after the pidfd: if this is the recorded process, so is the pidfd's. */
	int proc = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (proc < 0 || start_time(proc) != start || !owned_by_caller(proc)) {
		close(pidfd);
		if (proc >= 0)
			close(proc);
		return -1;
	}
	out->pidfd = pidfd;
	out->proc = proc;
	return 0;
}

void unprove(struct proven *p)
{
	if (p->pidfd >= 0)
		close(p->pidfd);
	if (p->proc >= 0)
		close(p->proc);
	p->pidfd = p->proc = -1;
}

int exit_status(int dir)
{
	char buf[64];
	return read_small(dir, "exit", buf, sizeof buf) == 0 ? atoi(buf) : -1;
}

void remove_instance(int instances, const char *name)
{
	int fd = openat(instances, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
	for (struct dirent *e; d && (e = readdir(d));)
		if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
			unlinkat(dirfd(d), e->d_name, 0);
	if (d)
		closedir(d);
	if (unlinkat(instances, name, AT_REMOVEDIR) != 0 && errno != ENOENT)
		fail_errno("cannot remove the instance directory %s", name);
}

/* A JSON string (berth reads the list as JSON lines). */
static void json_string(const char *s)
{
	putchar('"');
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;
		if (c == '"' || c == '\\')
			printf("\\%c", c);
		else if (c < 0x20 || c == 0x7f)
			printf("\\u%04x", c);
		else
			putchar(c);
	}
	putchar('"');
}

/* berth-helper --instance-list RUNTIME: one JSON object per instance, for `berth instance list`. */
int instance_list_main(const char *runtime)
{
	check_runtime_dir(runtime);
	int instances = open_instances(runtime, 0);
	if (instances < 0)
		return 0;
	int fd = openat(instances, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
	if (!d)
		fail_errno("cannot list the instances directory");
	for (struct dirent *e; (e = readdir(d));) {
		if (e->d_name[0] == '.')
			continue;
		int dir = open_instance(instances, e->d_name);
		if (dir < 0)
			continue;
		struct instance_state st;
		struct proven cmd;
		int recorded = read_state(dir, &st) == 0;
		const char *status = !recorded ? "starting" : prove(st.pid, st.start, &cmd) == 0 ? "running" : "exited";
		if (strcmp(status, "running") == 0)
			unprove(&cmd);
		char log[PATH_MAX + sizeof "/instances//log" + NAME_MAX];
		xformat(log, sizeof log, "%s/instances/%s/log", runtime, e->d_name);
		printf("{\"name\":");
		json_string(e->d_name);
		printf(",\"status\":\"%s\",\"pid\":%d,\"started\":%lld,\"exitStatus\":", status, recorded ? (int)st.pid : 0, st.started);
		int code = exit_status(dir);
		code >= 0 ? printf("%d", code) : printf("null");
		printf(",\"job\":");
		json_string(st.job);
		printf(",\"image\":");
		json_string(st.image);
		printf(",\"log\":");
		json_string(log);
		printf("}\n");
		close(dir);
	}
	closedir(d);
	return fflush(stdout) == 0 ? 0 : BERTH_EXIT_SETUP;
}

/* Under the lock: the instances directory goes with the last instance, so that nothing stays
 * behind. A start waiting for the lock then finds its directory gone and makes a new one.
 * By directory fds: a monitor does this from inside the image server's user namespace, where
 * no path from / can be proven (root is not mapped there). */
void remove_if_last(int runtime, int instances)
{
	int fd = openat(instances, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
	int others = !d;
	for (struct dirent *e; d && (e = readdir(d));)
		others |= strcmp(e->d_name, ".") && strcmp(e->d_name, "..") && strcmp(e->d_name, ".lock");
	if (d)
		closedir(d);
	if (others)
		return;
	unlinkat(instances, ".lock", 0);
	unlinkat(runtime, "instances", AT_REMOVEDIR);
}

/* Waits up to `ms` for the process to end. */
static int ended_within(int pidfd, int ms)
{
	struct pollfd p = { .fd = pidfd, .events = POLLIN };
	int r;
	while ((r = poll(&p, 1, ms)) < 0 && errno == EINTR)
		;
	return r == 1;
}

/* The monitor records the command's end and leaves once the whole PID namespace is gone. */
#define MONITOR_GRACE_MS 10000

/* The instance `name` ended (the signal, SIGKILL after `timeout` seconds) and its directory
 * removed, under the instances directory's lock; -1 when there is none of that name. */
static int stop_instance(const char *name, int instances, long sig, long timeout)
{
	int dir = open_instance(instances, name);
	if (dir < 0)
		return -1;
	struct instance_state st;
	struct proven cmd = { -1, -1 }, monitor = { -1, -1 };
	if (read_state(dir, &st) == 0) {
		prove(st.pid, st.start, &cmd);
		prove(st.monitor, st.mstart, &monitor);
	}
	if (cmd.pidfd >= 0) {
		if (syscall(SYS_pidfd_send_signal, cmd.pidfd, (int)sig, NULL, 0) != 0 && errno != ESRCH)
			fail_errno("cannot signal the instance %s (pid %d)", name, (int)st.pid);
		if (!ended_within(cmd.pidfd, (int)timeout * 1000)) {
			if (sig != SIGKILL)
				fprintf(stderr, "berth: warning: the instance %s did not end within %ld s of signal %ld; killing it\n", name, timeout, sig);
			syscall(SYS_pidfd_send_signal, cmd.pidfd, SIGKILL, NULL, 0);
			ended_within(cmd.pidfd, MONITOR_GRACE_MS);
		}
	}
	/* The command's end ends its PID namespace; the monitor leaves once the kernel has emptied it. */
	if (monitor.pidfd >= 0 && !ended_within(monitor.pidfd, MONITOR_GRACE_MS)) {
		syscall(SYS_pidfd_send_signal, monitor.pidfd, SIGKILL, NULL, 0);
		ended_within(monitor.pidfd, MONITOR_GRACE_MS);
	}
	unprove(&cmd);
	unprove(&monitor);
	close(dir);
	remove_instance(instances, name);
	return 0;
}

/* The instances directory locked: a start of a name in progress holds the lock until it runs
 * or failed. -1 when there is no instances directory. */
static int lock_instances(const char *runtime, int *instances, int patient)
{
	check_runtime_dir(runtime);
	*instances = open_instances(runtime, 0);
	int lock = -1;
	/* The epilog's stop waits 5 s at most: any process of the user's could hold the lock. */
	for (int tries = 0; *instances >= 0 && lock < 0 && tries < (patient ? 1 : 50); tries++)
		if ((lock = lock_file_at(*instances, ".lock", !patient)) < 0 && !patient && errno == EWOULDBLOCK)
			nanosleep(&(struct timespec){ 0, 100 * 1000 * 1000 }, NULL);
	if (*instances >= 0 && lock < 0)
		fail_errno("cannot lock the instances directory");
	return lock;
}

static void unlock_instances(const char *runtime, int instances, int lock)
{
	char err[1024];
	int parent = open_private_dir(runtime, getuid(), 0, err, sizeof err);
	if (parent >= 0) {
		remove_if_last(parent, instances);
		close(parent);
	}
	close(lock);
}

/* berth-helper --instance-stop RUNTIME NAME SIGNAL TIMEOUT: the signal to the instance's command,
 * SIGKILL after TIMEOUT seconds, then the instance's directory removed. */
int instance_stop_main(const char *runtime, const char *name, const char *signal_arg, const char *timeout_arg)
{
	check_instance_name(name);
	char *end;
	long sig = strtol(signal_arg, &end, 10), timeout = 0;
	if (*end || sig <= 0 || sig >= NSIG)
		fail("--signal %s: not a signal number", signal_arg);
	timeout = strtol(timeout_arg, &end, 10);
	if (*end || timeout < 0 || timeout > 86400)
		fail("--timeout %s: not a number of seconds (0 to 86400)", timeout_arg);
	int instances, lock = lock_instances(runtime, &instances, 1);
	if (instances < 0 || stop_instance(name, instances, sig, timeout) != 0)
		fail("there is no instance named %s on this node; `berth instance list` shows yours", name);
	unlock_instances(runtime, instances, lock);
	return 0;
}

/* berth-helper --instance-stop-job RUNTIME JOB: every instance started in Slurm job JOB killed
 * and removed; the job epilog's, as the job's user. Under proctrack/cgroup a step's end kills
 * an instance of the step whole, its monitor with it, which then clears nothing. */
int instance_stop_job_main(const char *runtime, const char *job)
{
	int instances, lock = lock_instances(runtime, &instances, 0);
	if (instances < 0)
		return 0;
	int fd = openat(instances, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
	for (struct dirent *e; d && (e = readdir(d));) {
		struct instance_state st;
		int dir = e->d_name[0] == '.' ? -1 : open_instance(instances, e->d_name);
		int of_job = dir >= 0 && read_state(dir, &st) == 0 && strcmp(st.job, job) == 0;
		if (dir >= 0)
			close(dir);
		if (of_job)
			stop_instance(e->d_name, instances, SIGKILL, 0);
	}
	if (d)
		closedir(d);
	unlock_instances(runtime, instances, lock);
	return 0;
}
