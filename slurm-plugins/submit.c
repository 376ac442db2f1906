/* On the submitting node (srun, sbatch): refuse what cannot work before the job queues, pin a
 * docker:// tag to a digest, and stage the image to the nodes with sbcast. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include "spank_berth.h"

/* In srun, once the job has its nodes and before the tasks start: with stage_dir= set by the
 * site, the image goes to each node's local storage through Slurm's own sbcast, so that the
 * nodes read their own disks and not the shared file system. Once per job: a later step finds
 * it there ("File exists"). A registry image is pulled here first, into the cache. */
int slurm_spank_local_user_init(spank_t sp, int ac, char **av)
{
	(void)ac, (void)av;
	uint32_t job;
	char image[IMAGE_MAX], dest[STAGED_MAX], file[IMAGE_MAX], jobs[16], out[IMAGE_MAX];
	if (!req.image || spank_get_item(sp, S_JOB_ID, &job) != ESPANK_SUCCESS)
		return 0;
	if (job_image(sp, image) != 0)
		return -1;
	if (!staged_path(sp, dest, job, getuid(), image))
		return 0;
	memcpy(file, image, sizeof file);
	struct stat st;
	int source = strncmp(image, "docker://", 9) == 0 || strncmp(image, "oci:", 4) == 0 || strncmp(image, "docker-archive:", 15) == 0;
	/* A name that is no file here, nor a path: a `berth build -t` name, which berth finds in the cache. */
	int built = !source && image[0] != '/' && image[0] != '.' && stat(file, &st) != 0 && errno == ENOENT;
	if (source || built) {
		/* Pulled or converted into the cache first; quiet (the job's stderr is no place for
		 * progress bars). --print-path is the contract: the path on one line, nothing else. */
		char *pull[] = { conf.berth, "pull", "--print-path", image, NULL };
		if (run(pull, environ, out, sizeof out) != 0)
			return -1; /* berth printed why */
		size_t len = strcspn(out, "\n");
		if (out[0] != '/' || out[len] != '\n' || out[len + 1] || len >= sizeof file) {
			slurm_error("berth: berth pull --print-path did not say where it put %s", image);
			return -1;
		}
		memcpy(file, out, len);
		file[len] = '\0';
	} else if (stat(file, &st) != 0 || access(file, R_OK) != 0) {
		slurm_error("berth: error: cannot read the image %s: %s", file, strerror(errno)); /* the tests and users match "berth: error:" */
		return -1;
	} else if (S_ISDIR(st.st_mode)) {
		/* sbcast copies one file: a root directory runs from where it is (a shared file system). */
		slurm_info("berth: %s is a directory: it runs in place, not staged to the nodes", file);
		return 0;
	}
	snprintf(jobs, sizeof jobs, "%u", job);
	char *argv[] = { "sbcast", "--jobid", jobs, file, dest, NULL };
	int status = run_capturing(argv, environ, out, sizeof out, 1);
	if (status != 0 && status != 17 /* EEXIST: staged by an earlier step */) {
		slurm_error("berth: staging %s to %s on the job's nodes with sbcast failed: %s", file, dest, out);
		return -1;
	}
	return 0;
}

/* The job's staging token, drawn once (an sbatch's sruns keep their job's): the staged file's
 * name is then one that no other user can know ahead of the job and plant. */
static int stage_token(void)
{
	const char *have = getenv("BERTH_CONTAINER_STAGE_TOKEN");
	if (!*conf.stage_dir || (have && *have))
		return 0;
	unsigned char bytes[16];
	char hex[33];
	if (getrandom(bytes, sizeof bytes, 0) != (ssize_t)sizeof bytes) {
		slurm_error("berth: cannot draw a staging token: %s", strerror(errno));
		return -1;
	}
	for (size_t i = 0; i < sizeof bytes; i++)
		sprintf(hex + 2 * i, "%02x", bytes[i]);
	setenv("BERTH_CONTAINER_STAGE_TOKEN", hex, 1); /* srun and sbatch pass it to the job */
	return 0;
}

/* At submission: refuse what cannot work before the job queues, and pin a docker:// tag. */
int slurm_spank_init_post_opt(spank_t sp, int ac, char **av)
{
	(void)ac, (void)av;
	if (spank_remote(sp))
		return 0;
	if (from_environment(sp) != 0)
		return -1;
	/* Drawn in every sbatch and salloc too, image or not: the sruns of the job share it. */
	if (stage_token() != 0)
		return -1;
	if (!req.image)
		return 0;
	if (req.network && strcmp(req.network, "none") != 0 && strcmp(req.network, "host") != 0) {
		slurm_error("berth: --container-network=%s: a step takes none (a loopback only) or host (the default); user-mode networking is one node's, so run that service with berth exec --network user in the job", req.network);
		return -1;
	}
	if (check_save_path() != 0)
		return -1;
	if (strncmp(req.image, "docker://", 9) != 0 || strchr(req.image, '@'))
		return 0;
	/* Pinned already by an enclosing sbatch for this very reference? */
	const char *pinned = getenv("BERTH_CONTAINER_IMAGE_RESOLVED");
	size_t n = strlen(req.image);
	if (pinned && strncmp(pinned, req.image, n) == 0 && pinned[n] == '=')
		return 0;
	char out[4096];
	char *argv[] = { conf.berth, "resolve", req.image, NULL };
	if (run(argv, environ, out, sizeof out) != 0)
		return -1; /* berth printed why */
	out[strcspn(out, "\n")] = '\0';
	char value[2 * IMAGE_MAX];
	if (format(value, sizeof value, "%s=%s", req.image, out) != 0) {
		slurm_error("berth: --container-image=%.64s...: the reference and its digest are too long", req.image);
		return -1;
	}
	setenv("BERTH_CONTAINER_IMAGE_RESOLVED", value, 1); /* srun and sbatch pass it to the job */
	return 0;
}
