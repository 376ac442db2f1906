/* berth-helper: runs one container from a launch plan computed by berth (src/plan). It is not
 * setuid and has no capabilities: everything privileged happens inside a user namespace. */
#ifndef BERTH_HELPER_H
#define BERTH_HELPER_H

#include <stddef.h>
#include <stdnoreturn.h>

#include "../exit_codes.h"

enum op_kind { OP_BIND, OP_TMPFS, OP_SYMLINK, OP_MKDIR, OP_LINE };
enum if_missing { MISSING_FAIL, MISSING_SKIP, MISSING_CREATE };

struct op {
	enum op_kind kind;
	char *source;  /* bind: host path; symlink: link target; line: the line */
	char *target;  /* path inside the container */
	char *options; /* comma list, see mount.c */
	enum if_missing missing;
	char *origin;  /* why this op exists, quoted in errors */
};

struct plan {
	char *image;
	char *runtime; /* base directory for this run's private directory */
	int fakeroot;
	int writable;
	char *cwd;
	char *path; /* PATH used to find argv[0] inside the container */
	char **env;
	size_t nenv;
	char **argv;
	size_t nargv;
	struct op *ops;
	size_t nops;
};

/* plan.c */
void plan_read(int fd, struct plan *p);

/* userns.c */
void enter_user_namespace(int fakeroot);

/* fuse.c: mounts the image at mountpoint; returns the session for fuse_serve(). */
struct fuse_session;
struct fuse_session *fuse_mount_image(const char *image, const char *mountpoint);
int fuse_session_fd_of(struct fuse_session *se);
void fuse_serve(struct fuse_session *se);
void fuse_stop(struct fuse_session *se);
void fuse_finish(struct fuse_session *se); /* unmount and free */

/* mount.c */
void build_root(const struct plan *p, const char *rundir);

/* main.c */
noreturn void fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
noreturn void fail_errno(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
extern int helper_exit_status;

#endif
