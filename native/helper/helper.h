/* berth-helper: runs one container from a launch plan computed by berth (src/plan). It is not
 * setuid and has no capabilities: everything privileged happens inside a user namespace. */
#ifndef BERTH_HELPER_H
#define BERTH_HELPER_H

#include <limits.h>
#include <stddef.h>
#include <sys/types.h>
#include <stdnoreturn.h>

#include "../contract.h"

enum op_kind { OP_BIND, OP_TMPFS, OP_PROC, OP_SYMLINK, OP_MKDIR, OP_LINE, OP_VERIFY };
enum if_missing { MISSING_FAIL, MISSING_SKIP, MISSING_CREATE };

struct op {
	enum op_kind kind;
	char *source;  /* bind: host path; symlink: link target; line: the line; verify: the loader */
	char *target;  /* path inside the container */
	char *options; /* comma list, see mount.c */
	enum if_missing missing;
	char *origin;  /* why this op exists, quoted in errors */
};

struct plan {
	char *image;
	int image_is_dir; /* an unpacked root directory, bound read-only, instead of a squashfs file */
	unsigned long long image_offset; /* where the squashfs starts in the file (a SIF's partition) */
	char *scope;  /* containers share an image server only within one scope (a Slurm job) */
	unsigned linger; /* seconds an idle image server waits for the next container */
	unsigned joblinger; /* in a Slurm job (in_job): instead, while the job lives on the node */
	int in_job;
	char *runtime; /* base directory for this run's private directory */
	int fakeroot;
	int fake_syscalls; /* berth build's RUN: chown, set*id, setgroups faked (seccomp.c) */
	int has_user; /* --user: the container runs as user_uid:user_gid in a nested user namespace */
	unsigned user_uid, user_gid;
	int writable;
	char *overlay; /* --overlay DIR: the root's changes go to DIR/upper and stay, or NULL */
	int pidns; /* a PID namespace of its own (pidns.c) */
	int ipcns; /* an IPC namespace of its own (isolate.c) */
	char *hostname; /* a UTS namespace of its own with this hostname, or NULL */
	enum net { NET_HOST, NET_NONE, NET_USER } net; /* the host's network, a loopback only, or pasta's */
	char *pasta; /* NET_USER: the pasta to run */
	char **publish; /* NET_USER: pasta -t specs, HOST_PORT:CONTAINER_PORT */
	size_t npublish;
	char *cwd;
	char *path; /* PATH used to find argv[0] inside the container */
	char **env;
	size_t nenv;
	int env_defaulted; /* no env line: env is PATH=BERTH_DEFAULT_PATH alone, the plan's default, not a change */
	char **argv;
	size_t nargv;
	char **unset; /* a step plan: host variables a task must not keep (its env lines are additions) */
	size_t nunset;
	unsigned steplinger; /* seconds a step's container waits for the next task */
	char **init; /* a step's container runs this once when it starts (the image's entrypoint) */
	size_t ninit;
	struct op *ops;
	size_t nops;
	char *instance; /* berth instance start, exec instance://: the instance's name */
	char *cgroup; /* --memory, --cpus, --pids-limit: the cgroup (a host path) to run in, or NULL */
	/* Not in the plan text: where a failed exec writes a byte, so that an instance's monitor
	 * tells a command that could not start from one that runs (instance.c); -1 for none. */
	int exec_report;
};

/* plan.c */
void plan_read(int fd, struct plan *p);

/* userns.c: the one user-namespace set-up, unshare_userns: a new user and mount namespace in
 * which inner_uid and inner_gid are the caller's. 0, or -1 with errno and *failed NULL when
 * unshare refused, else the /proc file that could not be written (berth doctor's probe says
 * which; the rest die with the reason). */
int unshare_userns(unsigned inner_uid, unsigned inner_gid, const char **failed);
void enter_user_namespace(int fakeroot);
/* --user: a nested user namespace mapping uid:gid inside to the caller, entered just before exec. */
void become_user(unsigned uid, unsigned gid);
/* A user namespace nested in the current one, mapping the caller to itself: every mount of the
 * container becomes locked (mount_namespaces(7)), so even a --fakeroot container, root with
 * every capability, can no longer remount a read-only bind writable or unmount what covers. */
void lock_mounts(void);

/* pidns.c: forks into a new PID namespace; returns in the child (its PID 1), while the parent
 * waits and exits as the container does. run_as_init runs the command as PID 2 and reaps. */
void enter_pid_namespace(void);
noreturn void run_as_init(const struct plan *p);
/* The same, calling prepare(ctx) in the command's process just before it execs (an instance's
 * log, its report to the monitor; instance.c); command_fds are the command's alone, closed in
 * the init once the command is forked. */
noreturn void run_as_init_then(const struct plan *p, void (*prepare)(void *ctx), void *ctx, const int *command_fds, size_t nfds);
/* The pieces (an instance's monitor and `exec instance://` use them apart): a fork whose child
 * dies with this process (PR_SET_PDEATHSIG); passing on the signals berth forwards; waiting
 * for the child and exiting as it did. */
pid_t fork_tied(void);
void forward_signals(pid_t to);
/* The dispositions from before forward_signals back (a nohup's ignored SIGHUP stays ignored);
 * returns the last SIGTERM, SIGINT, SIGHUP or SIGQUIT received meanwhile, or 0. */
int stop_forwarding(void);
noreturn void exit_as(pid_t child);

/* isolate.c: prepare_network forks, before any namespace is joined, what --net user needs on
 * the host's side; enter_isolation, in the image server's user namespace, makes the IPC, UTS
 * and network namespaces the plan asks for and sets them up. */
void prepare_network(const struct plan *p);
void enter_isolation(const struct plan *p);

/* fuse.c: mounts the image at mountpoint and serves it, one request per fuse_pump(). */
struct fuse_session;
struct fuse_session *fuse_mount_image(const char *image, unsigned long long offset, const char *mountpoint);
/* mount.c: a directory image, bound read-only at mountpoint in place of a FUSE mount. */
void bind_image_dir(const char *dir, const char *mountpoint);
/* Serves the mount from `threads` threads, each with the image opened again; returns a pipe
 * that becomes readable when the mount is gone. */
int fuse_serve_in_threads(struct fuse_session *se, unsigned threads);

/* server.c: finds or starts the image server and joins its namespaces. */
/* A server's paths: PATH_MAX, the longest path the kernel takes, and room for what is appended
 * to the runtime directory (img-KEY, named-JOB-NAME-NODE, /sock). Each is made with format()
 * (trusted.h): one that does not fit is refused, never truncated. */
#define SERVER_PATH_MAX (PATH_MAX + 200)
struct server_paths {
	char lock[SERVER_PATH_MAX], dir[SERVER_PATH_MAX], sock[SERVER_PATH_MAX], mnt[SERVER_PATH_MAX], work[SERVER_PATH_MAX];
	int dirfd, parentfd; /* dir and its parent, for cleaning up from anywhere */
	char scope[64];      /* an image server's (key_paths): '', slurm-JOB or slurm-JOB.STEP */
};
int attach_image(const struct plan *p, struct server_paths *sp); /* returns the server connection */
/* In a Slurm job under berth's plugin: `runtime`, when not the plugin's own, linked from there
 * for the job's epilog (plantext.h, RUNTIME_ELSEWHERE). */
void note_job_runtime(const char *runtime);
/* A container, once joined: its stderr and berth's note channel (`note`, or -1) go to the
 * server's guard, which stops it with a message there if the server ends under it (guard.c). */
void ask_to_be_watched(int sock, int note);
/* The same, with `err` instead of stderr as the container's stderr (an instance's log). */
void ask_to_be_watched_on(int sock, int err, int note);
/* A command joined to a running instance: watched by the guard of the instance's image server
 * (its socket `server`, as the instance's state recorded it, in `runtime`), as the instance is.
 * -1, unwatched, where no server answers there (an instance of an older berth). */
int watch_as_instance(const char *runtime, const char *server);
void report_overlay(int sock, pid_t overlay);
/* A step server: each task's "watch" is passed on to the image server on `sock` (kept open). */
void watch_tasks_through(int sock);
/* Shared with step.c: a server's directory fds, its socket, its life, and its start. */
void open_server_dirs(struct server_paths *sp);
int listen_on(const char *path);
/* own: NULL, or the /proc/self/ns paths of the namespaces it made of its own (a step's IPC, UTS,
 * network), handed out with its user and mount namespaces. */
noreturn void serve(const struct server_paths *sp, struct fuse_session *se, int gone, int listener, unsigned linger, int anchor, const char *const *own);
/* Unmounts se (when given) and removes the server's directory and, holding `lock`, its lock. */
noreturn void shut_down(const struct server_paths *sp, struct fuse_session *se, int lock);
/* A server's becoming a daemon, the one way for image and step servers: daemon_begin in the
 * process start_detached forked (its own session, stderr the report pipe, nothing else of the
 * starting helper's kept), daemon_ready once it serves (stdio /dev/null, which is EOF on the
 * report pipe without a message: the starter returns; SIGPIPE ignored). */
void daemon_begin(int report, const char *title); /* title: what ps shows for it (set_title), or NULL */
void daemon_ready(void);
typedef void (*become_fn)(const struct plan *p, const struct server_paths *sp, int report); /* never returns */
/* Starts a server that is nobody's child; returns when it is ready, exits with its error if it failed. */
void start_detached(const struct plan *p, const struct server_paths *sp, become_fn become);

/* guard.c: an image server runs as the child of its guard, which stops the server's
 * containers with a message when the server ends under them. start_guard returns in the
 * server, with the channel on which it tells the guard its socket and each container. */
int start_guard(const char *image, const struct server_paths *sp);
void guard_listening(int guard, const char *sock);
int guard_watch(int guard, int pidfd, const int *fds, size_t nfds); /* fds: stderr, note; 0, or -1: not told */

/* step.c: Slurm steps. One container per step (or named container) and node, served like an
 * image: the first task starts it, every task joins it. */
int step_server_main(const char *planfile, const char *stepdir); /* --step-server */
noreturn void join_main(char **argv);                            /* --join -- CMD... */
void install_fake_syscalls(void); /* seccomp.c */
noreturn void exec_in_container(const struct plan *p);           /* lib.c: chdir, no_new_privs, exec */

/* mount.c: builds the root at base/root from the image served at sp->mnt, then pivots into
 * it. Returns the pid of a fuse-overlayfs it had to start (kernels without overlay in a user
 * namespace), or 0. */
pid_t build_root(const struct plan *p, const struct server_paths *sp, const char *base);

/* container.c: the start-up sequence of every container once joined to its image server
 * (`server`, closed here): a mount namespace of its own, the root built at base and pivoted
 * into, the libraries verified. report: tell the server about a fuse-overlayfs to end (not
 * when a PID namespace ends it). drop_to_plan_user, just before the command: --fakeroot's
 * locked mounts (lock_mounts), or --user's uid and gid (become_user). */
void enter_container_root(const struct plan *p, const struct server_paths *sp, int server, const char *base, int report);
/* Where in the server's work directory a container builds its root: c-PID, named by the
 * process the server follows (in a PID namespace, the one outside, so called before it). */
#define CONTAINER_BASE_MAX (sizeof ((struct server_paths *)0)->work + sizeof "/c-" + 10)
void name_container(const struct server_paths *sp, char base[CONTAINER_BASE_MAX]);
void drop_to_plan_user(const struct plan *p);

/* verify.c: checks the plan's injected libraries inside the finished root (after pivot_root),
 * unless an earlier container of this image server already did; `statedir` is the server's
 * directory, opened before the pivot. */
void verify_libraries(const struct plan *p, int statedir);

/* instance.c, instance_join.c, instance_state.c: berth instance start|stop|list, exec instance://NAME */
int instance_start_main(void);                 /* --instance-start (the plan on fd 3) */
noreturn void instance_join_main(int plan_fd); /* --instance-join (the plan on fd 3) */
int instance_list_main(const char *runtime);   /* --instance-list RUNTIME */
int instance_stop_main(const char *runtime, const char *name, const char *signal, const char *timeout);
int instance_stop_job_main(const char *runtime, const char *job);

/* cgroup.c: the plan's cgroup, checked and its cgroup.procs opened as the caller (before any
 * namespace); cgroup_enter moves this process (and so all it forks) into it. */
int cgroup_open(const char *path);
void cgroup_enter(int procs, const char *path);

/* main.c: a container of its own from the plan on plan_fd; note: berth's note channel, or -1. */
noreturn void run_container(int plan_fd, int note);
/* launch.c: berth-helper --launch SCRIPT ARGS..., the `berth` command (dist/berth.cjs execs it). */
noreturn void launch_main(char **argv);

/* probe.c: berth-helper --probe, for berth doctor */
int probe(void);

/* lib.c */
void check_runtime_dir(const char *base);
/* A plan file, opened only when it is the caller's own and no one else could have written it. */
int open_plan_file(const char *path);
noreturn void fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
noreturn void fail_errno(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* snprintf into a buffer sized for its inputs, dying rather than truncating (a cut path could
 * name another file): for the paths and mount options the helper builds. */
void xformat(char *out, size_t size, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Forks a process that is nobody's child (its parent exits at once): it may outlive this one,
 * and a container shell's `wait` never waits for it. Returns 0 in it, its pid here. */
pid_t fork_orphan(void);
/* What ps shows for this process from now on, written over its own argv (main keeps where
 * that is): a server forked from `berth exec IMAGE CMD...` would otherwise show that command
 * line, to every user, for as long as it lingers. */
void keep_argv(int argc, char **argv);
void set_title(const char *title);
/* A plan text held in memory, as a descriptor plan_read reads (close-on-exec). */
int memfd_of(const char *text, size_t len);

#endif
