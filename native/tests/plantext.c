/* Unit tests of the pure parts of native/common/plantext.c: plan_unescape (the plan's \ooo
 * escapes and "-" for an empty field, as src/plan/serialize.ts writes them), fnv1a's
 * terminator (keys of chained strings differ however the strings are cut) and step_dir's
 * names and its refusal to truncate. */
#define _GNU_SOURCE
#include <stdlib.h>
#include <string.h>

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

int main(void)
{
	test_unescape();
	test_fnv1a();
	test_step_dir();
	return checks_done("plantext");
}
