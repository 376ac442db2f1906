/* Unit tests of native/helper/plan.c's plan_read, linked with the helper's library (lib.c) for
 * fail(): a well-formed plan read into struct plan, and malformed ones, each read in a forked
 * child that must exit with BERTH_EXIT_SETUP and say why on stderr, as the helper does. */
#define _GNU_SOURCE
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../helper/helper.h"
#include "../common/plantext.h"
#include "check.h"

/* A pipe holding text, its write end closed: what berth hands the helper on fd 3. */
static int plan_fd(const char *text)
{
	int p[2];
	if (pipe(p) != 0 || write(p[1], text, strlen(text)) != (ssize_t)strlen(text)) {
		perror("pipe");
		exit(2);
	}
	close(p[1]);
	return p[0];
}

static void test_happy(void)
{
	struct plan p;
	plan_read(plan_fd(PLAN_HEADER "\n"
				      "# a comment\n"
				      "\n"
				      "image /home/u/img\\040one.sqsh\n"
				      "runtime /run/user/1000/berth\n"
				      "cwd /\n"
				      "path /usr/bin:/bin\n"
				      "linger 30\n"
				      "userns root\n"
				      "pidns 1\n"
				      "arg echo\n"
				      "arg -\n"
				      "arg a\\040b\n"
				      "op bind /opt/ompi /opt/ompi ro,x-create=dir skip mpi:\\040host\\040Open\\040MPI\n"
				      "op tmpfs - /tmp - create -\n"),
		  &p);
	CHECK(strcmp(p.image, "/home/u/img one.sqsh") == 0 && strcmp(p.runtime, "/run/user/1000/berth") == 0 &&
		      strcmp(p.cwd, "/") == 0 && strcmp(p.path, "/usr/bin:/bin") == 0,
	      "plan_read: image, runtime, cwd and path, unescaped");
	CHECK(p.linger == 30 && p.fakeroot == 1 && p.pidns == 1 && p.writable == 0, "plan_read: linger, userns root, pidns, writable's default");
	CHECK(p.nargv == 3 && strcmp(p.argv[0], "echo") == 0 && strcmp(p.argv[1], "") == 0 && strcmp(p.argv[2], "a b") == 0 && !p.argv[3],
	      "plan_read: args in order, '-' empty, NULL-terminated");
	CHECK(strcmp(p.scope, "") == 0, "plan_read: no scope is the empty scope");
	CHECK(!p.instance && p.exec_report == -1, "plan_read: no instance, and no exec report unless the helper sets one");
	CHECK(p.nenv == 1 && strcmp(p.env[0], "PATH=" BERTH_DEFAULT_PATH) == 0 && !p.env[1] && p.env_defaulted, "plan_read: no env gives the default PATH, said");
	CHECK(p.nops == 2 && p.ops[0].kind == OP_BIND && strcmp(p.ops[0].source, "/opt/ompi") == 0 && strcmp(p.ops[0].options, "ro,x-create=dir") == 0 &&
		      p.ops[0].missing == MISSING_SKIP && strcmp(p.ops[0].origin, "mpi: host Open MPI") == 0,
	      "plan_read: a bind op with its options, if-missing and origin");
	CHECK(p.ops[1].kind == OP_TMPFS && strcmp(p.ops[1].source, "") == 0 && strcmp(p.ops[1].target, "/tmp") == 0 && p.ops[1].missing == MISSING_CREATE,
	      "plan_read: a tmpfs op with empty fields");

	struct plan inst;
	plan_read(plan_fd(PLAN_HEADER "\nimage i\nruntime r\ncwd /\npath /bin\ninstance web-1\n"), &inst);
	CHECK(inst.instance && strcmp(inst.instance, "web-1") == 0 && inst.nargv == 0, "plan_read: an instance's name; no command (it holds its namespaces)");

	struct plan cg;
	plan_read(plan_fd(PLAN_HEADER "\nimage i\nruntime r\ncwd /\npath /bin\ncgroup /sys/fs/cgroup/u\\040x/berth-1-0a0b0c0d\n"), &cg);
	CHECK(cg.cgroup && strcmp(cg.cgroup, "/sys/fs/cgroup/u x/berth-1-0a0b0c0d") == 0, "plan_read: the container's cgroup, unescaped");

	struct plan step;
	plan_read(plan_fd(PLAN_HEADER "\nimage i\nruntime r\ncwd /\npath /bin\nunset SECRET\nsteplinger 2\ninput SLURM_JOB_ID\ninput SLURM_STEP_GPUS\n"), &step);
	CHECK(step.steplinger == 2 && step.nunset == 1 && strcmp(step.unset[0], "SECRET") == 0,
	      "plan_read: a step's plan with its inputs (the plugin's key, #18), read and otherwise ignored");

	struct plan q;
	plan_read(plan_fd(PLAN_HEADER "\nimage i\nruntime r\ncwd /\npath /bin\nenv A=1\nscope job-1\n"), &q);
	CHECK(q.nenv == 1 && strcmp(q.env[0], "A=1") == 0 && !q.env_defaulted && strcmp(q.scope, "job-1") == 0 && q.nargv == 0 && q.nops == 0,
	      "plan_read: a given env replaces the default PATH, scope kept");
	CHECK(!q.in_job, "plan_read: no joblinger, not in a job");

	struct plan job;
	plan_read(plan_fd(PLAN_HEADER "\nimage i\nruntime r\ncwd /\npath /bin\nscope slurm-7\nlinger 10\njoblinger 0\n"), &job);
	CHECK(job.in_job && job.joblinger == 0 && job.linger == 10, "plan_read: a job's linger, 0 too (leave at once)");
}

/* plan_read of text in a child: its exit status, and whether its stderr holds `want`. */
static int refused_with(const char *text, const char *want)
{
	int err[2];
	if (pipe(err) != 0)
		exit(2);
	fflush(stdout);
	pid_t pid = fork();
	if (pid == 0) {
		dup2(err[1], 2);
		struct plan p;
		plan_read(plan_fd(text), &p);
		_exit(0);
	}
	close(err[1]);
	char msg[4096];
	size_t len = 0;
	ssize_t r;
	while (len < sizeof msg - 1 && (r = read(err[0], msg + len, sizeof msg - 1 - len)) > 0)
		len += (size_t)r;
	msg[len] = '\0';
	close(err[0]);
	int status;
	waitpid(pid, &status, 0);
	int ok = WIFEXITED(status) && WEXITSTATUS(status) == BERTH_EXIT_SETUP && strstr(msg, want);
	if (!ok)
		printf("     status %d, stderr: %s\n", status, msg);
	return ok;
}

#define BASE PLAN_HEADER "\nimage i\nruntime r\ncwd /\npath /bin\n"

static void test_malformed(void)
{
	CHECK(refused_with(BASE "op bogus /a /b - fail -\n", "berth: error: plan line 6: unknown op 'bogus'\n"),
	      "plan_read: an unknown op exits 125 naming line and op");
	CHECK(refused_with(BASE "op bind /a /b - maybe -\n", "plan line 6: unknown if-missing 'maybe'"), "plan_read: an unknown if-missing exits 125");
	CHECK(refused_with(BASE "op bind /a b - fail -\n", "plan line 6: target 'b' is not absolute"), "plan_read: a relative target exits 125");
	CHECK(refused_with(BASE "op bind /a /b - fail\n", "plan line 6: an op has 6 fields, not 5"), "plan_read: an op short of a field exits 125");
	CHECK(refused_with(BASE "colour blue\n", "plan line 6: unknown directive 'colour'"), "plan_read: an unknown directive exits 125");
	CHECK(refused_with(BASE "cwd / /\n", "plan line 6: 'cwd' takes one value"), "plan_read: a directive with two values exits 125");
	CHECK(refused_with(BASE "op a b c d e f g h\n", "plan line 6 has too many fields"), "plan_read: too many fields exits 125");
	CHECK(refused_with("# berth-plan v2\n", "does not start with '# berth-plan v1'"), "plan_read: another version's header exits 125");
	CHECK(refused_with(BASE "cgroup berth-1\n", "plan line 6: the cgroup 'berth-1' is not an absolute path"), "plan_read: a relative cgroup exits 125");
	CHECK(refused_with(BASE "cgroup /c\nsteplinger 2\n", "names a cgroup for a Slurm step"), "plan_read: a step's plan with a cgroup exits 125 (fail closed)");
	CHECK(refused_with(BASE "instance web\ncgroup /c\n", "names a cgroup for an instance"), "plan_read: an instance's plan with a cgroup exits 125 (fail closed)");
	CHECK(refused_with("", "the launch plan is empty"), "plan_read: an empty plan exits 125");
	CHECK(refused_with(PLAN_HEADER "\nimage i\n", "lacks image, runtime, cwd or path"), "plan_read: a plan without runtime exits 125");
}

int main(void)
{
	test_happy();
	test_malformed();
	return checks_done("plan");
}
