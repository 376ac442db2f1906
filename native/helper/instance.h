/* What the instance files share (instance_state.c: the state directory, proving an instance's
 * processes, list and stop; instance.c: start and the monitor; instance_join.c: exec instance://). */
#ifndef BERTH_INSTANCE_H
#define BERTH_INSTANCE_H

#include <sys/types.h>

/* The longest name: short enough for any path under the runtime directory, long enough for a
 * descriptive one ("jupyter-gpu-2"). */
#define INSTANCE_NAME_MAX 64

/* RUNTIME/instances/NAME/state, written (atomically) once the instance's command runs. */
struct instance_state {
	pid_t pid;                   /* the instance's command, as the host sees it */
	unsigned long long start;    /* its start time (/proc/PID/stat field 22): with the pid, it */
	pid_t monitor;               /* the helper outside that waits for it and records its end */
	unsigned long long mstart;
	long long started;           /* seconds since the epoch */
	char job[64];                /* SLURM_JOB_ID at start, or "" */
	char image[4096];
	char server[4096];           /* its image server's socket, which a joined command asks to be watched by */
};

/* A process proven to be the one recorded: a pidfd (to signal and wait for) and its /proc
 * directory (to read and to open its namespaces), both the same process. */
struct proven {
	int pidfd, proc;
};

void check_instance_name(const char *name);
/* RUNTIME/instances, proven the caller's (mode 0700); -1 when it does not exist and !create. */
int open_instances(const char *runtime, int create);
/* INSTANCES/NAME, the caller's own directory; -1 when there is none. */
int open_instance(int instances, const char *name);
/* 0 when the state file was read; -1 when there is none (an instance not yet, or never, running). */
int read_state(int dir, struct instance_state *st);
void write_state(int dir, const struct instance_state *st);
int prove(pid_t pid, unsigned long long start, struct proven *out);
void unprove(struct proven *p);
unsigned long long start_time(int proc);
/* Removes INSTANCES/NAME and everything in it. */
void remove_instance(int instances, const char *name);
/* Under the lock: removes the instances directory (and its lock) when no instance is left. */
void remove_if_last(int runtime, int instances);
/* The status recorded by the monitor when the command ended, or -1. */
int exit_status(int dir);

#endif
