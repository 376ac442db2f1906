/* Running berth, the helper and sbcast from the plugin, as the calling user. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "spank_berth.h"

int run_capturing(char *const argv[], char *const env[], char *out, size_t outsize, int with_stderr)
{
	int pipefd[2] = { -1, -1 };
	if (out && pipe2(pipefd, O_CLOEXEC) != 0)
		return -1;
	pid_t pid = fork();
	if (pid < 0)
		return -1;
	if (pid == 0) {
		if (out) {
			dup2(pipefd[1], STDOUT_FILENO);
			if (with_stderr)
				dup2(pipefd[1], STDERR_FILENO);
		} else
			dup2(STDERR_FILENO, STDOUT_FILENO);
		execvpe(argv[0], argv, env);
		fprintf(stderr, "berth: error: cannot run %s: %s (set berth= and helper= in plugstack.conf)\n", argv[0], strerror(errno));
		_exit(127);
	}
	size_t len = 0;
	if (out) {
		close(pipefd[1]);
		ssize_t got;
		while ((got = read(pipefd[0], out + len, outsize - 1 - len)) > 0 && (len += (size_t)got) < outsize - 1)
			;
		out[len] = '\0';
		close(pipefd[0]);
	}
	int status;
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

int run(char *const argv[], char *const env[], char *out, size_t outsize)
{
	return run_capturing(argv, env, out, outsize, 0);
}

char **berth_env(spank_t sp, const char *runtime)
{
	char **jobenv = NULL;
	if (spank_get_item(sp, S_JOB_ENV, &jobenv) != ESPANK_SUCCESS || !jobenv)
		return NULL;
	size_t n = 0;
	while (jobenv[n])
		n++;
	static const char name[] = "BERTH_RUNTIME_DIR=";
	/* One block, freed at once: the array, then the one string of its own after it. */
	char **env = malloc((n + 2) * sizeof *env + sizeof name + strlen(runtime));
	if (!env)
		return NULL;
	char *rt = (char *)(env + n + 2);
	memcpy(rt, name, sizeof name - 1);
	memcpy(rt + sizeof name - 1, runtime, strlen(runtime) + 1);
	size_t m = 0;
	for (size_t i = 0; i < n; i++)
		if (strncmp(jobenv[i], name, sizeof name - 1) != 0)
			env[m++] = jobenv[i];
	env[m++] = rt;
	env[m] = NULL;
	return env;
}
