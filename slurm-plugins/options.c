/* The plugin's options (pyxis's, plus berth's own) and their BERTH_CONTAINER_* variables,
 * its plugstack.conf arguments, and slurm_spank_init, which every context calls first. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "spank_berth.h"

SPANK_PLUGIN(berth, 1);

enum { O_IMAGE = 1, O_MOUNTS, O_WORKDIR, O_ENV, O_WRITABLE, O_READONLY, O_HOME, O_NO_HOME, O_REMAP, O_NO_REMAP,
       O_ENTRYPOINT, O_NO_ENTRYPOINT, O_NAME, O_SAVE, O_MPI, O_GPUS, O_RDMA, O_NO_RDMA, O_STAGE, O_NO_STAGE };

struct request req = { .writable = -1, .home = -1, .remap = -1, .entrypoint = -1, .mpi = -1, .rdma = -1, .stage = -1 };
struct plugstack conf = { "berth", "berth-helper", "/tmp/berth-%U", "", 0, 1 };

static int set_switch(int *field, int value, const char *yes, const char *no)
{
	if (*field != -1 && *field != value) {
		slurm_error("berth: --%s and --%s contradict each other; give one of them", yes, no);
		return -1;
	}
	*field = value;
	return 0;
}

static int set_string(char **field, const char *value, const char *name)
{
	if (!value || !*value) {
		slurm_error("berth: --%s needs a value", name);
		return -1;
	}
	free(*field);
	*field = strdup(value);
	return 0;
}

static int option(int val, const char *arg, int remote)
{
	(void)remote;
	switch (val) {
	case O_IMAGE: return set_string(&req.image, arg, "container-image");
	case O_MOUNTS: return set_string(&req.mounts, arg, "container-mounts");
	case O_WORKDIR: return set_string(&req.workdir, arg, "container-workdir");
	case O_ENV: return set_string(&req.env, arg, "container-env");
	case O_NAME: return set_string(&req.name, arg, "container-name");
	case O_SAVE: return set_string(&req.save, arg, "container-save");
	case O_GPUS: return set_string(&req.gpus, arg, "container-gpus");
	case O_WRITABLE: return set_switch(&req.writable, 1, "container-writable", "container-readonly");
	case O_READONLY: return set_switch(&req.writable, 0, "container-writable", "container-readonly");
	case O_HOME: return set_switch(&req.home, 1, "container-mount-home", "no-container-mount-home");
	case O_NO_HOME: return set_switch(&req.home, 0, "container-mount-home", "no-container-mount-home");
	case O_REMAP: return set_switch(&req.remap, 1, "container-remap-root", "no-container-remap-root");
	case O_NO_REMAP: return set_switch(&req.remap, 0, "container-remap-root", "no-container-remap-root");
	case O_ENTRYPOINT: return set_switch(&req.entrypoint, 1, "container-entrypoint", "no-container-entrypoint");
	case O_NO_ENTRYPOINT: return set_switch(&req.entrypoint, 0, "container-entrypoint", "no-container-entrypoint");
	case O_MPI: return set_switch(&req.mpi, 1, "container-mpi", "no-container-mpi");
	case O_RDMA: return set_switch(&req.rdma, 1, "container-rdma", "no-container-rdma");
	case O_NO_RDMA: return set_switch(&req.rdma, 0, "container-rdma", "no-container-rdma");
	case O_STAGE: return set_switch(&req.stage, 1, "container-stage", "no-container-stage");
	case O_NO_STAGE: return set_switch(&req.stage, 0, "container-stage", "no-container-stage");
	}
	return -1;
}

static struct spank_option options[] = {
	{ "container-image", "[docker://]IMAGE", "run the step in a berth container of IMAGE (a squashfs file, or a registry reference) [BERTH_CONTAINER_IMAGE]", 1, O_IMAGE, option },
	{ "container-mounts", "SRC:DST[:ro|rw],...", "bind host paths into the container [BERTH_CONTAINER_MOUNTS]", 1, O_MOUNTS, option },
	{ "container-workdir", "PATH", "working directory inside the container [BERTH_CONTAINER_WORKDIR]", 1, O_WORKDIR, option },
	{ "container-env", "NAME[,NAME...]", "host variables that keep their host value inside [BERTH_CONTAINER_ENV]", 1, O_ENV, option },
	{ "container-writable", NULL, "make the container's root writable (changes vanish with the container) [BERTH_CONTAINER_WRITABLE=1]", 0, O_WRITABLE, option },
	{ "container-readonly", NULL, "keep the container's root read-only (the default) [BERTH_CONTAINER_WRITABLE=0]", 0, O_READONLY, option },
	{ "container-mount-home", NULL, "bind $HOME (the default) [BERTH_CONTAINER_MOUNT_HOME=1]", 0, O_HOME, option },
	{ "no-container-mount-home", NULL, "do not bind $HOME [BERTH_CONTAINER_MOUNT_HOME=0]", 0, O_NO_HOME, option },
	{ "container-remap-root", NULL, "be root inside (still only your own privileges) [BERTH_CONTAINER_REMAP_ROOT=1]", 0, O_REMAP, option },
	{ "no-container-remap-root", NULL, "be yourself inside (the default) [BERTH_CONTAINER_REMAP_ROOT=0]", 0, O_NO_REMAP, option },
	{ "container-entrypoint", NULL, "run the image's entrypoint once when the step's container starts (default: plugstack's execute_entrypoint) [BERTH_CONTAINER_ENTRYPOINT=1]", 0, O_ENTRYPOINT, option },
	{ "no-container-entrypoint", NULL, "do not run the image's entrypoint [BERTH_CONTAINER_ENTRYPOINT=0]", 0, O_NO_ENTRYPOINT, option },
	{ "container-name", "NAME", "a named container that later steps of the job join [BERTH_CONTAINER_NAME]", 1, O_NAME, option },
	{ "container-save", "PATH", "save the container as an image: not supported yet [BERTH_CONTAINER_SAVE]", 1, O_SAVE, option },
	{ "container-mpi", NULL, "replace the image's MPICH-ABI MPI with the node's [BERTH_CONTAINER_MPI=1]", 0, O_MPI, option },
	{ "container-gpus", "all|none|LIST", "GPUs with the node's driver (default: the step's) [BERTH_CONTAINER_GPUS]", 1, O_GPUS, option },
	{ "container-rdma", NULL, "bind the node's InfiniBand/RDMA stack (default: where there is one) [BERTH_CONTAINER_RDMA=1]", 0, O_RDMA, option },
	{ "no-container-rdma", NULL, "do not bind the node's RDMA stack [BERTH_CONTAINER_RDMA=0]", 0, O_NO_RDMA, option },
	{ "container-stage", NULL, "copy the image to node-local storage with sbcast (the default where the site set stage_dir) [BERTH_CONTAINER_STAGE=1]", 0, O_STAGE, option },
	{ "no-container-stage", NULL, "run the image from where it is, not staged [BERTH_CONTAINER_STAGE=0]", 0, O_NO_STAGE, option },
};

int parse_args(int ac, char **av)
{
	for (int i = 0; i < ac; i++) {
		const char *eq = strchr(av[i], '=');
		size_t klen = eq ? (size_t)(eq - av[i]) : strlen(av[i]);
		const char *v = eq ? eq + 1 : "";
#define KEY(k) (klen == strlen(k) && strncmp(av[i], k, klen) == 0)
		if (KEY("berth")) snprintf(conf.berth, sizeof conf.berth, "%s", v);
		else if (KEY("helper")) snprintf(conf.helper, sizeof conf.helper, "%s", v);
		else if (KEY("runtime_dir")) snprintf(conf.runtime, sizeof conf.runtime, "%s", v);
		else if (KEY("stage_dir")) snprintf(conf.stage_dir, sizeof conf.stage_dir, "%s", v);
		else if (KEY("execute_entrypoint")) conf.execute_entrypoint = atoi(v);
		else if (KEY("sbatch_support")) conf.sbatch_support = atoi(v);
		else {
			slurm_error("berth: unknown argument '%s' in plugstack.conf; the arguments are berth=PATH, helper=PATH, runtime_dir=DIR (%%U: the uid), stage_dir=DIR, execute_entrypoint=0|1, sbatch_support=0|1", av[i]);
			return -1;
		}
#undef KEY
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
	for (size_t i = 0; i < sizeof options / sizeof *options; i++)
		if (spank_option_register(sp, &options[i]) != ESPANK_SUCCESS)
			return -1;
	return 0;
}

const char *variable(spank_t sp, const char *name)
{
	static char buf[8192];
	if (!spank_remote(sp))
		return getenv(name);
	return spank_getenv(sp, name, buf, sizeof buf) == ESPANK_SUCCESS ? buf : NULL;
}

/* Each option's variable, read where the command line did not give the option. */
static const struct { char **field; const char *name; } STRING_VARS[] = {
	{ &req.image, "BERTH_CONTAINER_IMAGE" }, { &req.mounts, "BERTH_CONTAINER_MOUNTS" },
	{ &req.workdir, "BERTH_CONTAINER_WORKDIR" }, { &req.env, "BERTH_CONTAINER_ENV" },
	{ &req.name, "BERTH_CONTAINER_NAME" }, { &req.save, "BERTH_CONTAINER_SAVE" }, { &req.gpus, "BERTH_CONTAINER_GPUS" },
};
static const struct { int *field; const char *name; } SWITCH_VARS[] = {
	{ &req.writable, "BERTH_CONTAINER_WRITABLE" }, { &req.home, "BERTH_CONTAINER_MOUNT_HOME" },
	{ &req.remap, "BERTH_CONTAINER_REMAP_ROOT" }, { &req.entrypoint, "BERTH_CONTAINER_ENTRYPOINT" },
	{ &req.mpi, "BERTH_CONTAINER_MPI" }, { &req.rdma, "BERTH_CONTAINER_RDMA" }, { &req.stage, "BERTH_CONTAINER_STAGE" },
};

void from_environment(spank_t sp)
{
	const char *v;
	for (size_t i = 0; i < sizeof STRING_VARS / sizeof *STRING_VARS; i++)
		if (!*STRING_VARS[i].field && (v = variable(sp, STRING_VARS[i].name)) && *v)
			*STRING_VARS[i].field = strdup(v);
	for (size_t i = 0; i < sizeof SWITCH_VARS / sizeof *SWITCH_VARS; i++)
		if (*SWITCH_VARS[i].field == -1 && (v = variable(sp, SWITCH_VARS[i].name)) && *v)
			*SWITCH_VARS[i].field = strcmp(v, "0") != 0;
}

/* The image this job runs: the one given, with a docker:// tag pinned at submission. */
void job_image(spank_t sp, char *out, size_t size)
{
	snprintf(out, size, "%s", req.image);
	const char *pinned = variable(sp, "BERTH_CONTAINER_IMAGE_RESOLVED");
	size_t n = strlen(req.image);
	if (pinned && strncmp(pinned, req.image, n) == 0 && pinned[n] == '=')
		snprintf(out, size, "%s", pinned + n + 1);
}

/* Where sbcast puts a job's image on each node: named by the job and the image (a file's name,
 * or a registry image's digest), so that every step of the job finds the one copy. */
int staged_path(char *out, size_t size, uint32_t job, const char *image)
{
	if (!*conf.stage_dir || req.stage == 0)
		return 0;
	const char *at = strstr(image, "@sha256:");
	if (strncmp(image, "docker://", 9) == 0 && !at)
		return 0;
	if (at)
		snprintf(out, size, "%s/berth-%u-%s.sqsh", conf.stage_dir, job, at + 8);
	else
		snprintf(out, size, "%s/berth-%u-%s", conf.stage_dir, job, strrchr(image, '/') ? strrchr(image, '/') + 1 : image);
	return 1;
}

void expand_runtime(char *out, size_t size, uid_t uid)
{
	const char *at = strstr(conf.runtime, "%U");
	if (at)
		snprintf(out, size, "%.*s%u%s", (int)(at - conf.runtime), conf.runtime, (unsigned)uid, at + 2);
	else
		snprintf(out, size, "%s", conf.runtime);
}
