/* Shared by berth-helper and the SPANK plugin: the plan's text form (src/plan/serialize.ts)
 * and joining a Slurm step's container. Nothing here exits the process: the plugin runs inside
 * slurmstepd's task and must report errors, not die. */
#ifndef BERTH_PLANTEXT_H
#define BERTH_PLANTEXT_H

#include <stddef.h>
#include <sys/types.h>

#define PLAN_HEADER "# berth-plan v1"

/* A field of a plan line with its \ooo escapes undone ("-" is empty); malloc'd, NULL if out of memory. */
char *plan_unescape(const char *s);

/* flock(LOCK_EX) on a lock file that its holder may unlink: retried until the file held is
 * the one at the path. Created 0600 where missing, never through a symlink, and only a regular
 * file is locked (EINVAL otherwise; a FIFO there does not hold the open). Returns the fd,
 * close-on-exec, or -1 with errno set (EWOULDBLOCK when nonblock). */
int lock_file(const char *path, int nonblock);
/* The same, relative to a directory fd: a server that no longer sees the path (a step server
 * inside its container) still locks by the directory it opened before. */
int lock_file_at(int dirfd, const char *path, int nonblock);
/* lock_file, of a file `owner` owns only (EPERM otherwise, before any wait: another user could
 * hold theirs for ever), where the directory is one others may write (a sticky cache). */
int lock_file_owned(const char *path, uid_t owner, int nonblock);

/* Where a Slurm step's container lives on this node, under the user's runtime directory:
 * one per step, or per job and --container-name. */
int step_dir(char *out, size_t size, const char *runtime, const char *job, const char *step, const char *name, const char *node); /* -1: too long */

/* Image servers are shared within a scope: none outside Slurm, slurm-JOB within a job (its
 * steps and its containers on a node find the image warm; the job's epilog stops them). A
 * process that a numbered step's cgroup holds (proctrack/cgroup) would start a server that
 * dies with that step, under the containers of the job's other steps: its scope is
 * slurm-JOB.STEP, unless `kept` (berth's plugin moves the job's servers out of a step's cgroup
 * v1 trees as the step ends, and says so in each task's environment: KEPT_BY_PLUGIN).
 * `job_scope` writes slurm-JOB for the job a step directory (step_dir) belongs to;
 * `step_scope` writes slurm-JOB.STEP when /proc/self/cgroup's text names such a step's
 * cgroup. Each returns 0, or -1 (not a step directory, no step's cgroup, too long); step_scope
 * -2 for a step's cgroup whose scope would be too long. */
int job_scope(char *out, size_t size, const char *stepdir);
int step_scope(char *out, size_t size, const char *cgroups, int kept);
/* Set by berth's plugin in every task, to its runtime directory for the job's user. A job's
 * server or instance in another runtime directory (a `berth exec` with BERTH_RUNTIME_DIR of its
 * own) leaves a link to it there, RUNTIME_ELSEWHERE (the job, a hash of the directory), so
 * that the job's epilog, which knows the plugin's directory only, clears it too: under
 * proctrack/cgroup the job's end kills them, and they clear nothing themselves. */
#define KEPT_BY_PLUGIN "BERTH_SLURM_KEEPS_SERVERS"
#define RUNTIME_ELSEWHERE "elsewhere-%s-%08x"
/* Whether a server listens at the socket `sock`: 1, 0 (a killed one leaves a socket nobody
 * answers), or -1 when the path is too long to be a socket's. */
int socket_answers(const char *sock);

/* The first size-1 bytes of /proc/PID/NAME (cmdline's NULs kept), always NUL-terminated;
 * their count, or -1. */
ssize_t read_proc(pid_t pid, const char *name, char *buf, size_t size);

/* Field n (3 or more: 3 is the state, 4 the parent, 22 the start time) of a /proc/PID/stat
 * line, or NULL where the line has none: counted after the command name (field 2, in
 * parentheses), which may itself hold spaces and ')'. */
const char *stat_field(const char *stat, int n);

/* Sends `len` bytes of `data` with the descriptors `fds` (SCM_RIGHTS): the one way berth passes
 * descriptors between its processes. Returns what sendmsg returns. */
ssize_t send_with_fds(int sock, const void *data, size_t len, const int *fds, size_t n, int flags);

/* The answer to a "watch" (a container asking its server to have it watched): one byte, 'w'
 * when the guard has it, 'n' when it could not be told. Waits up to WATCH_ANSWER_MS; returns
 * the byte, 0 when the server closed the connection, -1 when nothing came. */
#define WATCH_ANSWER_MS 30000
int watch_answer(int sock);

/* The one way a server (an image server, a step's container) hands its namespaces to a client
 * of its own user, over SCM_RIGHTS: its user namespace first, then its mount namespace and the
 * IPC, UTS and network namespaces it has of its own (never the host's: joining those from inside
 * the user namespace is refused by the kernel, and the caller has them already). */
#define NS_MAX 8
void send_namespaces(int sock, const int *fds, size_t n);
/* The client's side: receives them and joins each right after the user namespace that owns it
 * (the user namespaces from the caller's own down to the server's: a --fakeroot container's
 * mounts are in a nested one, its IPC, UTS and network namespaces in the image server's).
 * Returns 0, or -1 with a message in err and errno ECONNREFUSED (nothing came: the server is
 * shutting down) or EPERM (they could not be joined). */
int receive_namespaces(int sock, const char *what, char *err, size_t errsize);

/* Joins the container served at SOCK (its namespaces, as the step server hands them out):
 * afterwards this process sees the container's root. Returns 0, or -1 with a message in err
 * (ENOENT-like failures: errno ECONNREFUSED / ENOENT, the caller may start one). */
int join_container(const char *sock, char *err, size_t errsize);

/* Joins the step's container at SOCK, calling start(ctx) to have it started when none answers,
 * or when the one there is leaving just now: JOIN_TRIES tries in all, the one retry policy of
 * every task that joins a step. Returns 0, or -1 with a message in err. */
#define JOIN_TRIES 5
int join_step(const char *sock, int (*start)(void *ctx), void *ctx, char *err, size_t errsize);

/* What a task of a Slurm step takes from the step's plan besides its namespaces: the environment
 * changes (`env NAME=VALUE` lines set, `unset NAME` lines remove; the task keeps the rest of its
 * own, its rank and PMI), the working directory (`cwd`) and the Slurm variables the plan was made
 * from (`input`, src/plan/contract.ts). */
struct step_env {
	char **set, **unset, **inputs;
	size_t nset, nunset, ninputs;
	char *cwd;
};
/* Reads them from the plan text on fd, which it closes. Returns 0, or -1 with a message in err. */
int read_step_env(int fd, struct step_env *e, char *err, size_t errsize);
void free_step_env(struct step_env *e);
/* Whether each of the plan's inputs is one of BERTH_STEP_PLAN_INPUTS (native/contract.h), the
 * variables the plugin keys its cached plans by: a plan from a berth that reads another would go
 * stale silently. 0, or -1 with a message in err. */
int step_inputs_known(const struct step_env *e, char *err, size_t errsize);

/* Setting and removing a variable where the task's environment lives: slurmstepd's for the
 * plugin (spank_setenv), the process's own for berth-helper --join (setenv). 0 on success. */
struct env_ops {
	int (*set)(void *ctx, const char *name, const char *value);
	int (*unset)(void *ctx, const char *name);
	void *ctx;
};
/* The plan's changes through ops: every removal, then every NAME=VALUE set. 0, or -1 with a message. */
int apply_step_env(const struct step_env *e, const struct env_ops *ops, char *err, size_t errsize);
/* The one join path of the plugin's tasks and `berth srun`'s: join_step, then the plan's
 * environment changes (removals first), the working directory inside the container and
 * no_new_privs. Returns 0, or -1 with a message in err; the caller then execs the command. */
int enter_step(const char *sock, int (*start)(void *ctx), void *ctx, const struct step_env *e, const struct env_ops *ops, char *err,
	       size_t errsize);

/* Whether the process at the other end of a connected unix socket is this process's user. A
 * server of another user would hand us its namespaces: its root, its binaries (and root, who
 * may enter anyone's user namespace, would run them). */
int peer_is_self(int sock);

/* FNV-1a of a string, chained from h (start with FNV1A_BASIS): keys for stamps and plan files. */
#define FNV1A_BASIS 0xcbf29ce484222325ULL
unsigned long long fnv1a(unsigned long long h, const char *s);

#endif
