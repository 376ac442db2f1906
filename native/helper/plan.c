/* Reads a launch plan: the text that src/plan/serialize.ts writes, one directive per line,
 * fields separated by one space, with space, tab, newline and backslash escaped as \ooo (the
 * fstab convention), and "-" for an empty field. The whole plan is read and checked before
 * anything is touched, so a bad plan never leaves a half-built container. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "helper.h"
#include "../common/plantext.h"

#define MAX_FIELDS 8

static char *unescape(const char *s)
{
	char *out = plan_unescape(s);
	if (!out)
		fail("out of memory");
	return out;
}

static void push(char ***list, size_t *n, char *item)
{
	char **grown = realloc(*list, (*n + 2) * sizeof **list);
	if (!grown)
		fail("out of memory");
	grown[(*n)++] = item;
	grown[*n] = NULL; /* argv and envp are NULL-terminated */
	*list = grown;
}

static const struct { const char *name; enum op_kind kind; } OP_KINDS[] = {
	{ "bind", OP_BIND }, { "tmpfs", OP_TMPFS }, { "proc", OP_PROC }, { "symlink", OP_SYMLINK },
	{ "mkdir", OP_MKDIR }, { "line", OP_LINE }, { "verify", OP_VERIFY },
};
static const struct { const char *name; enum if_missing value; } MISSING[] = {
	{ "fail", MISSING_FAIL }, { "skip", MISSING_SKIP }, { "create", MISSING_CREATE },
};

static void parse_op(struct plan *p, char **f, int n, int lineno)
{
	if (n != 7)
		fail("plan line %d: an op has 6 fields, not %d", lineno, n - 1);
	struct op op = { 0 };
	size_t i;
	for (i = 0; i < sizeof OP_KINDS / sizeof *OP_KINDS && strcmp(f[1], OP_KINDS[i].name); i++)
		;
	if (i == sizeof OP_KINDS / sizeof *OP_KINDS)
		fail("plan line %d: unknown op '%s'", lineno, f[1]);
	op.kind = OP_KINDS[i].kind;
	for (i = 0; i < sizeof MISSING / sizeof *MISSING && strcmp(f[5], MISSING[i].name); i++)
		;
	if (i == sizeof MISSING / sizeof *MISSING)
		fail("plan line %d: unknown if-missing '%s'", lineno, f[5]);
	op.missing = MISSING[i].value;
	op.source = unescape(f[2]);
	op.target = unescape(f[3]);
	op.options = unescape(f[4]);
	op.origin = unescape(f[6]);
	if (op.target[0] != '/')
		fail("plan line %d: target '%s' is not absolute", lineno, op.target);
	struct op *grown = realloc(p->ops, (p->nops + 1) * sizeof *grown);
	if (!grown)
		fail("out of memory");
	grown[p->nops++] = op;
	p->ops = grown;
}

/* squashfs (a file, the default) or directory (an unpacked root). */
static int parse_format(const char *v, int lineno)
{
	if (strcmp(v, "squashfs") == 0)
		return 0;
	if (strcmp(v, "directory") == 0)
		return 1;
	fail("plan line %d: unknown image format '%s'", lineno, v);
}

static unsigned long long parse_offset(const char *v, int lineno)
{
	char *end;
	errno = 0;
	unsigned long long n = strtoull(v, &end, 10);
	if (errno || end == v || *end || *v == '-')
		fail("plan line %d: the image offset '%s' is not a number", lineno, v);
	return n;
}

static char *parse_absolute(char *v, const char *what, int lineno)
{
	if (v[0] != '/')
		fail("plan line %d: the %s '%s' is not an absolute path", lineno, what, v);
	return v;
}

/* RFC 1123 labels, as sethostname and every resolver will take them. */
static char *parse_hostname(char *v, int lineno)
{
	size_t n = strlen(v);
	const char *alnum = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
	if (n == 0 || n > 64 || strspn(v, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.") != n || !strchr(alnum, v[0]) || !strchr(alnum, v[n - 1]))
		fail("plan line %d: '%s' is not a hostname", lineno, v);
	return v;
}

static enum net parse_net(const char *v, int lineno)
{
	if (strcmp(v, "host") == 0)
		return NET_HOST;
	if (strcmp(v, "none") == 0)
		return NET_NONE;
	if (strcmp(v, "user") == 0)
		return NET_USER;
	fail("plan line %d: unknown network '%s'", lineno, v);
}

/* HOST_PORT:CONTAINER_PORT, each 1-65535: what pasta's -t takes, and nothing else reaches it. */
static char *parse_publish(char *v, int lineno)
{
	unsigned a, b;
	int end = 0;
	if (sscanf(v, "%5u:%5u%n", &a, &b, &end) != 2 || v[end] || !a || !b || a > 65535 || b > 65535 || strspn(v, "0123456789:") != strlen(v))
		fail("plan line %d: '%s' is not HOST_PORT:CONTAINER_PORT", lineno, v);
	return v;
}

/* A uid or gid of --user: a decimal number below (uid_t)-1, which means "none" to the kernel. */
static unsigned parse_id(const char *v, int lineno)
{
	char *end;
	errno = 0;
	unsigned long id = strtoul(v, &end, 10);
	if (errno || end == v || *end || v[0] == '-' || id >= 4294967295UL)
		fail("plan line %d: '%s' is not a uid or gid", lineno, v);
	return (unsigned)id;
}

void plan_read(int fd, struct plan *p)
{
	FILE *in = fdopen(fd, "r");
	if (!in)
		fail_errno("cannot read the launch plan from fd %d", fd);
	char *line = NULL;
	size_t cap = 0;
	ssize_t len;
	int lineno = 0, step = 0;
	memset(p, 0, sizeof *p);
	p->exec_report = -1;
	while ((len = getline(&line, &cap, in)) >= 0) {
		lineno++;
		if (len > 0 && line[len - 1] == '\n')
			line[--len] = '\0';
		if (lineno == 1) {
			if (strcmp(line, PLAN_HEADER) != 0)
				fail("the launch plan does not start with '%s': berth and berth-helper are from different versions", PLAN_HEADER);
			continue;
		}
		if (len == 0 || line[0] == '#')
			continue;
		char *f[MAX_FIELDS];
		int n = 0;
		for (char *save = NULL, *tok = strtok_r(line, " ", &save); tok; tok = strtok_r(NULL, " ", &save)) {
			if (n == MAX_FIELDS)
				fail("plan line %d has too many fields", lineno);
			f[n++] = tok;
		}
		if (n == 0)
			continue;
		const char *key = f[0];
		if (strcmp(key, "op") == 0) {
			parse_op(p, f, n, lineno);
			continue;
		}
		if (strcmp(key, "user") == 0) {
			if (n != 3)
				fail("plan line %d: 'user' takes a uid and a gid", lineno);
			p->has_user = 1;
			p->user_uid = parse_id(f[1], lineno);
			p->user_gid = parse_id(f[2], lineno);
			continue;
		}
		if (n != 2)
			fail("plan line %d: '%s' takes one value", lineno, key);
		char *v = unescape(f[1]);
		if (strcmp(key, "image") == 0) p->image = v;
		else if (strcmp(key, "imageformat") == 0) p->image_is_dir = parse_format(v, lineno);
		else if (strcmp(key, "imageoffset") == 0) p->image_offset = parse_offset(v, lineno);
		else if (strcmp(key, "scope") == 0) p->scope = v;
		else if (strcmp(key, "linger") == 0) p->linger = (unsigned)strtoul(v, NULL, 10);
		else if (strcmp(key, "joblinger") == 0) p->joblinger = (unsigned)strtoul(v, NULL, 10), p->in_job = 1;
		else if (strcmp(key, "runtime") == 0) p->runtime = v;
		else if (strcmp(key, "userns") == 0) p->fakeroot = strcmp(v, "root") == 0;
		else if (strcmp(key, "fake_syscalls") == 0) p->fake_syscalls = strcmp(v, "1") == 0;
		else if (strcmp(key, "writable") == 0) p->writable = strcmp(v, "1") == 0;
		else if (strcmp(key, "overlay") == 0) p->overlay = parse_absolute(v, "overlay directory", lineno);
		else if (strcmp(key, "pidns") == 0) p->pidns = strcmp(v, "1") == 0;
		else if (strcmp(key, "ipcns") == 0) p->ipcns = strcmp(v, "1") == 0;
		else if (strcmp(key, "hostname") == 0) p->hostname = parse_hostname(v, lineno);
		else if (strcmp(key, "net") == 0) p->net = parse_net(v, lineno);
		else if (strcmp(key, "pasta") == 0) p->pasta = v;
		else if (strcmp(key, "publish") == 0) push(&p->publish, &p->npublish, parse_publish(v, lineno));
		else if (strcmp(key, "cwd") == 0) p->cwd = v;
		else if (strcmp(key, "path") == 0) p->path = v;
		else if (strcmp(key, "env") == 0) push(&p->env, &p->nenv, v);
		else if (strcmp(key, "arg") == 0) push(&p->argv, &p->nargv, v);
		else if (strcmp(key, "unset") == 0) push(&p->unset, &p->nunset, v);
		else if (strcmp(key, "init") == 0) push(&p->init, &p->ninit, v);
		else if (strcmp(key, "instance") == 0) p->instance = v;
		else if (strcmp(key, "cgroup") == 0) p->cgroup = parse_absolute(v, "cgroup", lineno);
		else if (strcmp(key, "steplinger") == 0) p->steplinger = (unsigned)strtoul(v, NULL, 10), step = 1;
		else if (strcmp(key, "input") == 0) free(v); /* what the plugin keys step plans by (plantext.h), nothing to do here */
		else fail("plan line %d: unknown directive '%s'", lineno, key);
	}
	free(line);
	fclose(in);
	if (lineno == 0)
		fail("the launch plan is empty");
	if (!p->image || !p->runtime || !p->cwd || !p->path)
		fail("the launch plan lacks image, runtime, cwd or path");
	if (!p->scope)
		p->scope = strdup("");
	if (p->net == NET_USER && (!p->pasta || p->pasta[0] != '/'))
		fail("the launch plan asks for user-mode networking without the absolute path of pasta");
	if (p->npublish && p->net != NET_USER)
		fail("the launch plan publishes ports without user-mode networking");
	/* Only a lone container's start (main.c) enters a cgroup: fail closed, never run unlimited. */
	if (p->cgroup && (step || p->instance))
		fail("the launch plan names a cgroup for %s, which berth-helper does not put in one", step ? "a Slurm step" : "an instance");
	if (!p->env) {
		push(&p->env, &p->nenv, strdup("PATH=" BERTH_DEFAULT_PATH)); /* src/plan/contract.ts */
		p->env_defaulted = 1;
	}
}
