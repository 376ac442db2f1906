/* The plugin's options (pyxis's, plus berth's own) with their BERTH_CONTAINER_* variables, from
 * one table; its plugstack.conf arguments, from another; and slurm_spank_init, which every
 * context calls first. Switches read as pyxis reads them: 1/true/yes/y or 0/false/no/n, any
 * case; anything else is an error that names the option and the value. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "spank_berth.h"

SPANK_PLUGIN(berth, 1);

/* berth version reads this from the .so file (loading a SPANK plugin needs slurmstepd), to
 * tell a plugin of another build apart. BERTH_VERSION comes from package.json (Makefile). */
__attribute__((used)) static const char version_marker[] = "berth-spank-plugin-version " BERTH_VERSION;

struct request req = { .writable = -1, .home = -1, .remap = -1, .entrypoint = -1, .mpi = -1, .rdma = -1, .stage = -1, .ipc = -1 };
struct plugstack conf = { "berth", "berth-helper", "/run/berth/%U", "", 0, 1 };

/* An option sets a string, or a switch to `value`; `variable` is read where the command line
 * did not give the option (a switch's pair shares the one variable, on its "yes" side). */
static const struct option_def {
	const char *name, *arg, *help, *variable;
	char **string;
	int *field, value;
} OPTIONS[] = {
	{ "container-image", "[docker://]IMAGE", "run the step in a berth container of IMAGE (a squashfs file, or a registry reference)", "BERTH_CONTAINER_IMAGE", &req.image, NULL, 0 },
	{ "container-mounts", "SRC:DST[:ro|rw],...", "bind host paths into the container", "BERTH_CONTAINER_MOUNTS", &req.mounts, NULL, 0 },
	{ "container-workdir", "PATH", "working directory inside the container", "BERTH_CONTAINER_WORKDIR", &req.workdir, NULL, 0 },
	{ "container-env", "NAME[,NAME...]", "host variables that keep their host value inside", "BERTH_CONTAINER_ENV", &req.env, NULL, 0 },
	{ "container-writable", NULL, "make the container's root writable (changes vanish with the container)", "BERTH_CONTAINER_WRITABLE", NULL, &req.writable, 1 },
	{ "container-readonly", NULL, "keep the container's root read-only (the default)", NULL, NULL, &req.writable, 0 },
	{ "container-mount-home", NULL, "bind $HOME (the default)", "BERTH_CONTAINER_MOUNT_HOME", NULL, &req.home, 1 },
	{ "no-container-mount-home", NULL, "do not bind $HOME", NULL, NULL, &req.home, 0 },
	{ "container-remap-root", NULL, "be root inside (still only your own privileges)", "BERTH_CONTAINER_REMAP_ROOT", NULL, &req.remap, 1 },
	{ "no-container-remap-root", NULL, "be yourself inside (the default)", NULL, NULL, &req.remap, 0 },
	{ "container-entrypoint", NULL, "run the image's entrypoint once when the step's container starts (default: plugstack's execute_entrypoint)", "BERTH_CONTAINER_ENTRYPOINT", NULL, &req.entrypoint, 1 },
	{ "no-container-entrypoint", NULL, "do not run the image's entrypoint", NULL, NULL, &req.entrypoint, 0 },
	{ "container-name", "NAME", "a named container that later steps of the job join", "BERTH_CONTAINER_NAME", &req.name, NULL, 0 },
	{ "container-save", "PATH", "when the step ends, save what its container changed on the first node as a new image file at PATH (an existing file is replaced; a directory is refused)", "BERTH_CONTAINER_SAVE", &req.save, NULL, 0 },
	{ "container-ipc", NULL, "an IPC namespace of the step's own on each node, shared by its tasks there", "BERTH_CONTAINER_IPC", NULL, &req.ipc, 1 },
	{ "container-hostname", "NAME", "a UTS namespace of the step's own on each node, with this hostname", "BERTH_CONTAINER_HOSTNAME", &req.hostname, NULL, 0 },
	{ "container-network", "none", "none: a network namespace of the step's own on each node, with a loopback only", "BERTH_CONTAINER_NETWORK", &req.network, NULL, 0 },
	{ "container-mpi", NULL, "replace the image's MPICH-ABI MPI with the node's", "BERTH_CONTAINER_MPI", NULL, &req.mpi, 1 },
	{ "container-gpus", "all|none|LIST", "GPUs with the node's driver (default: the step's)", "BERTH_CONTAINER_GPUS", &req.gpus, NULL, 0 },
	{ "container-rdma", NULL, "bind the node's InfiniBand/RDMA stack (default: where there is one)", "BERTH_CONTAINER_RDMA", NULL, &req.rdma, 1 },
	{ "no-container-rdma", NULL, "do not bind the node's RDMA stack", NULL, NULL, &req.rdma, 0 },
	{ "container-stage", NULL, "copy the image to node-local storage with sbcast (the default where the site set stage_dir)", "BERTH_CONTAINER_STAGE", NULL, &req.stage, 1 },
	{ "no-container-stage", NULL, "run the image from where it is, not staged", NULL, NULL, &req.stage, 0 },
};
#define NOPTIONS (sizeof OPTIONS / sizeof *OPTIONS)

int parse_bool(const char *v)
{
	static const char *const yes[] = { "1", "true", "yes", "y" }, *const no[] = { "0", "false", "no", "n" };
	for (size_t i = 0; i < 4; i++) {
		if (strcasecmp(v, yes[i]) == 0)
			return 1;
		if (strcasecmp(v, no[i]) == 0)
			return 0;
	}
	return -1;
}

/* The other side of a switch: the entry that sets the same field to the other value. */
static const struct option_def *pair_of(const struct option_def *o)
{
	for (size_t i = 0; i < NOPTIONS; i++)
		if (OPTIONS[i].field == o->field && &OPTIONS[i] != o)
			return &OPTIONS[i];
	return o;
}

static int set_option(const struct option_def *o, const char *arg)
{
	if (o->string) {
		if (!arg || !*arg) {
			slurm_error("berth: --%s needs a value", o->name);
			return -1;
		}
		free(*o->string);
		*o->string = strdup(arg);
		return 0;
	}
	if (*o->field != -1 && *o->field != o->value) {
		const struct option_def *yes = o->value ? o : pair_of(o), *no = o->value ? pair_of(o) : o;
		slurm_error("berth: --%s and --%s contradict each other; give one of them", yes->name, no->name);
		return -1;
	}
	*o->field = o->value;
	return 0;
}

static int option(int val, const char *arg, int remote)
{
	(void)remote;
	return val >= 0 && (size_t)val < NOPTIONS ? set_option(&OPTIONS[val], arg) : -1;
}

/* plugstack.conf's arguments. */
static const struct {
	const char *key;
	char *string; /* a path, of sizeof conf.berth */
	int *flag;
} ARGUMENTS[] = {
	{ "berth", conf.berth, NULL }, { "helper", conf.helper, NULL }, { "runtime_dir", conf.runtime, NULL },
	{ "stage_dir", conf.stage_dir, NULL }, { "execute_entrypoint", NULL, &conf.execute_entrypoint },
	{ "sbatch_support", NULL, &conf.sbatch_support },
};

int parse_args(int ac, char **av)
{
	for (int i = 0; i < ac; i++) {
		const char *eq = strchr(av[i], '=');
		size_t klen = eq ? (size_t)(eq - av[i]) : strlen(av[i]), k;
		const char *v = eq ? eq + 1 : "";
		for (k = 0; k < sizeof ARGUMENTS / sizeof *ARGUMENTS; k++)
			if (klen == strlen(ARGUMENTS[k].key) && strncmp(av[i], ARGUMENTS[k].key, klen) == 0)
				break;
		if (k == sizeof ARGUMENTS / sizeof *ARGUMENTS) {
			slurm_error("berth: unknown argument '%s' in plugstack.conf; the arguments are berth=PATH, helper=PATH, runtime_dir=DIR (%%U: the uid), stage_dir=DIR, execute_entrypoint=0|1, sbatch_support=0|1", av[i]);
			return -1;
		}
		if (ARGUMENTS[k].string && (format(ARGUMENTS[k].string, sizeof conf.berth, "%s", v) != 0 || (*v && *v != '/' && k >= 2))) {
			slurm_error("berth: %s in plugstack.conf: '%s' is not an absolute path of under %zu bytes", ARGUMENTS[k].key, v, sizeof conf.berth);
			return -1;
		}
		if (ARGUMENTS[k].flag && (*ARGUMENTS[k].flag = parse_bool(v)) < 0) {
			slurm_error("berth: %s in plugstack.conf: invalid value '%s'; use 1/true/yes or 0/false/no", ARGUMENTS[k].key, v);
			return -1;
		}
	}
	return 0;
}

int slurm_spank_init(spank_t sp, int ac, char **av)
{
	if (parse_args(ac, av) != 0)
		return -1;
	if (spank_context() == S_CTX_ALLOCATOR && !conf.sbatch_support)
		return 0;
	/* Registered here, not as a static table: sbatch and salloc see only registered options. */
	static struct spank_option registered[NOPTIONS];
	for (size_t i = 0; i < NOPTIONS; i++) {
		const struct option_def *o = &OPTIONS[i];
		const char *var = o->variable ? o->variable : pair_of(o)->variable;
		char *usage = NULL;
		if (asprintf(&usage, "%s [%s%s]", o->help, var, o->string ? "" : o->value ? "=1" : "=0") < 0)
			return -1;
		registered[i] = (struct spank_option){ (char *)o->name, (char *)o->arg, usage, o->arg ? 1 : 0, (int)i, option };
		if (spank_option_register(sp, &registered[i]) != ESPANK_SUCCESS)
			return -1;
	}
	return 0;
}

const char *variable(spank_t sp, const char *name)
{
	static char buf[8192];
	if (!spank_remote(sp))
		return getenv(name);
	return spank_getenv(sp, name, buf, sizeof buf) == ESPANK_SUCCESS ? buf : NULL;
}

void vcomplain(int remote, const char *fmt, va_list ap)
{
	char msg[8192]; /* a message quoting a path or two; longer is cut, being only a message */
	vsnprintf(msg, sizeof msg, fmt, ap);
	/* In a task, slurm_error reaches only slurmd's log: the job's stderr is where users look. */
	if (remote) {
		fprintf(stderr, "berth: error: %s\n", msg);
		fflush(stderr);
	} else {
		slurm_error("berth: %s", msg);
	}
}

void complain(spank_t sp, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vcomplain(spank_remote(sp), fmt, ap);
	va_end(ap);
}

int from_environment(spank_t sp)
{
	const char *v;
	for (size_t i = 0; i < NOPTIONS; i++) {
		const struct option_def *o = &OPTIONS[i];
		if (!o->variable || !(v = variable(sp, o->variable)) || !*v)
			continue;
		if (o->string && !*o->string)
			*o->string = strdup(v);
		if (o->field && *o->field == -1 && (*o->field = parse_bool(v)) < 0) {
			complain(sp, "%s=%s: invalid value; use 1/true/yes or 0/false/no", o->variable, v);
			return -1;
		}
	}
	return 0;
}

/* The image this job runs: the one given, with a docker:// tag pinned at submission. */
int job_image(spank_t sp, char out[IMAGE_MAX])
{
	const char *pinned = variable(sp, "BERTH_CONTAINER_IMAGE_RESOLVED");
	size_t n = strlen(req.image);
	const char *image = pinned && strncmp(pinned, req.image, n) == 0 && pinned[n] == '=' ? pinned + n + 1 : req.image;
	if (format(out, IMAGE_MAX, "%s", image) == 0)
		return 0;
	complain(sp, "--container-image: %.64s... is too long (at most %d bytes)", image, IMAGE_MAX - 1);
	return -1;
}

/* Where sbcast puts a job's image on each node: named by the job, its user, a random token
 * drawn at submission (so that no one can plant a file there ahead of the job: job ids are
 * sequential) and the image (a file's name, or a registry image's digest), so that every step
 * of the job finds the one copy. The file is then believed only when it is the user's. */
int staged_path(spank_t sp, char out[STAGED_MAX], uint32_t job, uid_t uid, const char *image)
{
	if (!*conf.stage_dir || req.stage == 0)
		return 0;
	/* Only a registry image is named by its digest: a file's path may hold "@sha256:" too. */
	const char *at = strncmp(image, "docker://", 9) == 0 ? strstr(image, "@sha256:") : NULL, *token = variable(sp, "BERTH_CONTAINER_STAGE_TOKEN");
	if ((strncmp(image, "docker://", 9) == 0 && !at) || !token || strspn(token, "0123456789abcdef") != strlen(token) || !*token)
		return 0;
	const char *name = at ? at + 8 : strrchr(image, '/') ? strrchr(image, '/') + 1 : image;
	/* The whole reference hashed in too: two images of one job with the same file name
	 * (run/a.sqsh, old/a.sqsh) must not find each other's copy. FNV-1a: a name, not a check. */
	unsigned long long hash = fnv1a(FNV1A_BASIS, image);
	return format(out, STAGED_MAX, "%s/berth-%u-%u-%s-%016llx-%s%s", conf.stage_dir, job, (unsigned)uid, token, hash, name, at ? ".sqsh" : "") == 0;
}

int expand_runtime(char *out, size_t size, uid_t uid)
{
	const char *at = strstr(conf.runtime, "%U");
	int rv = at ? format(out, size, "%.*s%u%s", (int)(at - conf.runtime), conf.runtime, (unsigned)uid, at + 2)
		    : format(out, size, "%s", conf.runtime);
	for (size_t len = strlen(out); len > 1 && out[len - 1] == '/';)
		out[--len] = '\0'; /* the plan's runtime line must name it as the helper will see it */
	return rv;
}
