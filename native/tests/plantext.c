/* Unit tests of the pure parts of native/common/plantext.c: plan_unescape (the plan's \ooo
 * escapes and "-" for an empty field, as src/plan/serialize.ts writes them), fnv1a's
 * terminator (keys of chained strings differ however the strings are cut), step_dir's
 * names and its refusal to truncate, and the one join path's pieces (#18): a step plan's
 * environment, working directory and inputs as read_step_env takes them, their application
 * (removals first), join_step's one retry policy, stat_field's counting of /proc/PID/stat, and lock_file's refusals. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../common/plantext.h"
#include "check.h"

static int unescapes_to(const char *in, const char *want)
{
	char *got = plan_unescape(in);
	int ok = got && strcmp(got, want) == 0;
	if (!ok)
		printf("     plan_unescape(\"%s\") gave \"%s\", not \"%s\"\n", in, got ? got : "(null)", want);
	free(got);
	return ok;
}

static void test_unescape(void)
{
	CHECK(unescapes_to("plain", "plain"), "plan_unescape: a field without escapes is unchanged");
	CHECK(unescapes_to("-", ""), "plan_unescape: '-' is the empty field");
	CHECK(unescapes_to("--", "--") && unescapes_to("a-", "a-"), "plan_unescape: '-' is empty only alone");
	CHECK(unescapes_to("a\\040b", "a b"), "plan_unescape: \\040 is a space");
	CHECK(unescapes_to("\\011\\012\\134", "\t\n\\"), "plan_unescape: \\011 \\012 \\134 are tab, newline, backslash");
	CHECK(unescapes_to("\\055", "-"), "plan_unescape: \\055 is a literal '-', not the empty field");
	CHECK(unescapes_to("\\377", "\377"), "plan_unescape: \\377 is the byte 0xff");
	CHECK(unescapes_to("\\400", "\\400"), "plan_unescape: \\4xx is no escape (first digit 0-3)");
	CHECK(unescapes_to("\\08x", "\\08x") && unescapes_to("\\0", "\\0") && unescapes_to("a\\", "a\\"),
	      "plan_unescape: a short or non-octal escape stays as written");
	CHECK(unescapes_to("\\134040", "\\040"), "plan_unescape: an escaped backslash does not start another escape");
}

static void test_fnv1a(void)
{
	unsigned long long ab_c = fnv1a(fnv1a(FNV1A_BASIS, "ab"), "c"), a_bc = fnv1a(fnv1a(FNV1A_BASIS, "a"), "bc");
	CHECK(ab_c != a_bc, "fnv1a: \"ab\"+\"c\" and \"a\"+\"bc\" differ (the terminator)");
	CHECK(fnv1a(FNV1A_BASIS, "") != FNV1A_BASIS, "fnv1a: the empty string still changes the hash");
	CHECK(fnv1a(fnv1a(FNV1A_BASIS, "x"), "") != fnv1a(FNV1A_BASIS, "x"), "fnv1a: an empty string chained on counts");
	CHECK(fnv1a(FNV1A_BASIS, "berth") == fnv1a(FNV1A_BASIS, "berth"), "fnv1a: the same string, the same hash");
	/* FNV-1a of "a" is 0xaf63dc4c8601ec8c; then the terminator byte 0xff. */
	CHECK(fnv1a(FNV1A_BASIS, "a") == (0xaf63dc4c8601ec8cULL ^ 0xff) * 0x100000001b3ULL,
	      "fnv1a: FNV-1a 64 of the string, then the byte 0xff");
}

static void test_step_dir(void)
{
	char out[64];
	CHECK(step_dir(out, sizeof out, "/run/user/1000/berth", "12", "3", NULL, "node1") == 0 &&
		      strcmp(out, "/run/user/1000/berth/step-12.3-node1") == 0,
	      "step_dir: a step's directory is step-JOB.STEP-NODE");
	CHECK(step_dir(out, sizeof out, "/r", "12", "3", "", "n") == 0 && strcmp(out, "/r/step-12.3-n") == 0,
	      "step_dir: an empty name is no name");
	CHECK(step_dir(out, sizeof out, "/r", "12", "3", "web", "n") == 0 && strcmp(out, "/r/named-12-web-n") == 0,
	      "step_dir: a named container's is named-JOB-NAME-NODE, across steps");
	size_t need = strlen("/r/step-12.3-n") + 1;
	CHECK(step_dir(out, need, "/r", "12", "3", NULL, "n") == 0, "step_dir: an exact fit is accepted");
	CHECK(step_dir(out, need - 1, "/r", "12", "3", NULL, "n") == -1, "step_dir: one byte short is -1, not a truncated path");
	char runtime[100];
	memset(runtime, 'r', sizeof runtime - 1);
	runtime[sizeof runtime - 1] = '\0';
	CHECK(step_dir(out, sizeof out, runtime, "1", "0", "name", "n") == -1, "step_dir: a named path too long is -1");
}

static void test_scopes(void)
{
	char out[64];
	CHECK(job_scope(out, sizeof out, "/r/step-12.3-node1") == 0 && strcmp(out, "slurm-12") == 0,
	      "job_scope: a step's directory belongs to its job");
	CHECK(job_scope(out, sizeof out, "/r/named-12-web-n-1") == 0 && strcmp(out, "slurm-12") == 0,
	      "job_scope: and a named container's");
	CHECK(job_scope(out, sizeof out, "/r/step-x.3-n") == -1 && job_scope(out, sizeof out, "/r/img-12") == -1 &&
		      job_scope(out, sizeof out, "/r/step-12") == -1,
	      "job_scope: anything else is no job's");
	CHECK(job_scope(out, 8, "/r/step-12.3-n") == -1 && job_scope(out, 9, "/r/step-12.3-n") == 0,
	      "job_scope: too long is -1, an exact fit is accepted");
	CHECK(step_scope(out, sizeof out, "0::/system.slice/slurmstepd.scope/job_42/step_0/user/task_0\n", 0) == 0 &&
		      strcmp(out, "slurm-42.0") == 0,
	      "step_scope: cgroup v2's step cgroup");
	const char *v1 = "12:pids:/\n4:freezer:/slurm/uid_1000/job_7/step_3\n1:name=systemd:/user.slice\n0::/\n";
	CHECK(step_scope(out, sizeof out, v1, 0) == 0 && strcmp(out, "slurm-7.3") == 0,
	      "step_scope: cgroup v1's freezer, at the end of its line");
	CHECK(step_scope(out, sizeof out, v1, 1) == -1, "step_scope: v1's step, where the plugin keeps the job's servers, is the job's");
	CHECK(step_scope(out, sizeof out, "0::/system.slice/slurmstepd.scope/job_42/step_0/user/task_0\n", 1) == 0,
	      "step_scope: v2's step is the step's even so (the plugin does not move from v2)");
	CHECK(step_scope(out, sizeof out, "4:freezer:/slurm/uid_1000/job_7/step_batch\n", 0) == -1 &&
		      step_scope(out, sizeof out, "0::/system.slice/slurmstepd.scope/job_7/step_extern/user/task_special\n", 0) == -1 &&
		      step_scope(out, sizeof out, "0::/job_7/step_interactive\n", 0) == -1,
	      "step_scope: the batch, extern and interactive steps last as long as the job: its scope");
	CHECK(step_scope(out, sizeof out, "0::/system.slice/slurmstepd.scope/job_42/step_1+2\n", 0) == 0 && strcmp(out, "slurm-42.1+2") == 0,
	      "step_scope: a heterogeneous job's component");
	CHECK(step_scope(out, sizeof out, "0::/user.slice/user-1000.slice/session-3.scope\n", 0) == -1 &&
		      step_scope(out, sizeof out, "0::/job_42/stepx\n", 0) == -1 && step_scope(out, sizeof out, "0::/job_/step_0\n", 0) == -1 &&
		      step_scope(out, sizeof out, "0::/job_42/step_0.x/\n", 0) == -1,
	      "step_scope: no step's cgroup is -1");
	CHECK(step_scope(out, 10, "0::/job_42/step_0\n", 0) == -2, "step_scope: a step's, too long, is -2 (not none)");
}

static int plan_fd(const char *text)
{
	int fd = memfd_create("plan", 0);
	if (fd < 0 || write(fd, text, strlen(text)) != (ssize_t)strlen(text) || lseek(fd, 0, SEEK_SET) != 0)
		return -1;
	return fd;
}

static void test_read_step_env(void)
{
	struct step_env e;
	char err[256] = "";
	const char *text = "# berth-plan v1\nimage /i\ncwd /w\\040d\nenv A=1\nenv B=x\\040y\nenv NOEQ\nunset SECRET\n"
			   "arg true\ninput SLURM_JOB_GPUS\nop bind / / - fail -\n";
	CHECK(read_step_env(plan_fd(text), &e, err, sizeof err) == 0, "read_step_env: a step plan is read");
	CHECK(e.nset == 2 && strcmp(e.set[0], "A=1") == 0 && strcmp(e.set[1], "B=x y") == 0,
	      "read_step_env: env NAME=VALUE lines are sets, unescaped; one without '=' sets nothing");
	CHECK(e.nunset == 1 && strcmp(e.unset[0], "SECRET") == 0, "read_step_env: unset lines are removals");
	CHECK(strcmp(e.cwd, "/w d") == 0, "read_step_env: cwd, unescaped");
	CHECK(e.ninputs == 1 && strcmp(e.inputs[0], "SLURM_JOB_GPUS") == 0, "read_step_env: input lines name the plan's inputs");
	CHECK(step_inputs_known(&e, err, sizeof err) == 0, "step_inputs_known: SLURM_JOB_GPUS is in native/contract.h");
	free_step_env(&e);
	CHECK(read_step_env(plan_fd("# berth-plan v1\nimage /i\n"), &e, err, sizeof err) == 0 && strcmp(e.cwd, "/") == 0 && e.nset == 0,
	      "read_step_env: no cwd line is /");
	free_step_env(&e);
	CHECK(read_step_env(plan_fd("# berth-plan v1\ninput SLURM_PROCID\n"), &e, err, sizeof err) == 0 &&
		      step_inputs_known(&e, err, sizeof err) == -1 && strstr(err, "SLURM_PROCID"),
	      "step_inputs_known: an input the plugin does not key by is refused, by name");
	free_step_env(&e);
	CHECK(read_step_env(-1, &e, err, sizeof err) == -1 && e.nset == 0, "read_step_env: an unreadable plan is -1 with a message");
}

/* A fake environment: each call appended to `log`, `fail_on` refused. */
struct fake_env {
	char log[256];
	const char *fail_on;
};
static int fake_set(void *ctx, const char *name, const char *value)
{
	struct fake_env *f = ctx;
	snprintf(f->log + strlen(f->log), sizeof f->log - strlen(f->log), "+%s=%s ", name, value);
	return f->fail_on && strcmp(f->fail_on, name) == 0 ? -1 : 0;
}
static int fake_unset(void *ctx, const char *name)
{
	struct fake_env *f = ctx;
	snprintf(f->log + strlen(f->log), sizeof f->log - strlen(f->log), "-%s ", name);
	return 0;
}

static void test_apply_step_env(void)
{
	char a[] = "A=1", b[] = "B=2=3", *set[] = { a, b }, *unset[] = { "X" }, err[256];
	struct step_env e = { .set = set, .nset = 2, .unset = unset, .nunset = 1, .cwd = "/" };
	struct fake_env f = { "", NULL };
	struct env_ops ops = { fake_set, fake_unset, &f };
	CHECK(apply_step_env(&e, &ops, err, sizeof err) == 0 && strcmp(f.log, "-X +A=1 +B=2=3 ") == 0,
	      "apply_step_env: removals first, then each NAME=VALUE split at its first '='");
	CHECK(strcmp(a, "A=1") == 0 && strcmp(b, "B=2=3") == 0, "apply_step_env: the plan's strings are left as they were");
	struct fake_env g = { "", "B" };
	ops.ctx = &g;
	CHECK(apply_step_env(&e, &ops, err, sizeof err) == -1 && strstr(err, "cannot set B"), "apply_step_env: a refused set is -1, named");
}

static int starts;
static int count_start(void *ctx)
{
	(void)ctx;
	starts++;
	return 0;
}
static int refuse_start(void *ctx)
{
	(void)ctx;
	starts++;
	return -1;
}

static void test_join_step(void)
{
	char err[256];
	starts = 0;
	CHECK(join_step("/nonexistent/berth-test/sock", count_start, NULL, err, sizeof err) == -1 && starts == JOIN_TRIES - 1,
	      "join_step: JOIN_TRIES joins, a start before each retry, then -1");
	CHECK(strstr(err, "no container is served at /nonexistent/berth-test/sock") != NULL, "join_step: the last failure is the message");
	starts = 0;
	CHECK(join_step("/nonexistent/berth-test/sock", refuse_start, NULL, err, sizeof err) == -1 && starts == 1 && strstr(err, "did not start"),
	      "join_step: a start that fails ends the tries at once");
	char longsock[200];
	memset(longsock, 's', sizeof longsock - 1);
	longsock[0] = '/';
	longsock[sizeof longsock - 1] = '\0';
	starts = 0;
	CHECK(join_step(longsock, count_start, NULL, err, sizeof err) == -1 && strstr(err, "too long"), "join_step: a socket path too long is said");
}

static void test_stat_field(void)
{
	/* A command name may hold spaces and ')': fields count from the last ')'. */
	const char *line = "4242 (a) b (c) S 17 4242 4242 0 -1 4194560 98 0 0 0 1 2 0 0 20 0 1 0 123456 999\n";
	const char *f;
	CHECK((f = stat_field(line, 3)) && *f == 'S', "stat_field: field 3 is the state, after a name holding ') ('");
	CHECK((f = stat_field(line, 4)) && strncmp(f, "17 ", 3) == 0, "stat_field: field 4 is the parent");
	CHECK((f = stat_field(line, 22)) && strncmp(f, "123456 ", 7) == 0, "stat_field: field 22 is the start time");
	CHECK(!stat_field(line, 2) && !stat_field(line, 40), "stat_field: none below 3 or past the line's end");
	CHECK(!stat_field("4242 (cut", 3) && !stat_field("4242 (x)", 3) && !stat_field("4242 (x) ", 3),
	      "stat_field: none in a line cut at or after the name");
}

static void test_lock_file(void)
{
	char dir[] = "/tmp/berth-lock-test-XXXXXX", file[64], fifo[64];
	if (!mkdtemp(dir))
		return;
	snprintf(file, sizeof file, "%s/a.lock", dir);
	snprintf(fifo, sizeof fifo, "%s/f.lock", dir);
	int fd = lock_file(file, 1);
	CHECK(fd >= 0, "lock_file: a new lock file is made and locked");
	int again = lock_file(file, 1);
	CHECK(again < 0 && errno == EWOULDBLOCK, "lock_file: held, a second open description gets EWOULDBLOCK");
	close(fd);
	CHECK((fd = lock_file_owned(file, getuid(), 1)) >= 0, "lock_file_owned: the caller's own file locks");
	close(fd);
	CHECK(lock_file_owned(file, getuid() + 1, 1) < 0 && errno == EPERM, "lock_file_owned: another owner's is refused (EPERM), not waited on");
	CHECK(mkfifo(fifo, 0600) == 0 && lock_file(fifo, 0) < 0 && errno == EINVAL, "lock_file: a FIFO is refused (EINVAL), and does not hold the open");
	unlink(file);
	unlink(fifo);
	rmdir(dir);
}

int main(void)
{
	test_unescape();
	test_lock_file();
	test_stat_field();
	test_fnv1a();
	test_step_dir();
	test_scopes();
	test_read_step_env();
	test_apply_step_env();
	test_join_step();
	return checks_done("plantext");
}
