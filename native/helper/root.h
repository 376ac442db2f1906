/* berth-helper's view of the container root it builds (mount.c, rootpath.c, mounttree.c). */
#ifndef BERTH_ROOT_H
#define BERTH_ROOT_H

#include <sys/types.h>

#include "helper.h"

/* The root being built. `own` are the filesystems that are the container's own (the overlay over
 * the image, the plan's tmpfs mounts): a path that went through a symlink may create things only
 * there, never in a host directory bound in (see may_create). */
struct root {
	int fd;
	size_t nown;
	int own[64]; /* mount ids: overlayfs gives a file the st_dev of the layer it comes from */
};

enum node { NODE_DIR, NODE_FILE, NODE_SYMLINK };

/* rootpath.c */
noreturn void op_fail(const struct op *op, const char *what); /* "WHAT TARGET (ORIGIN): errno" */
int open_in_root(int rootfd, const char *path, int flags, mode_t mode);
int is_own(const struct root *r, int fd);
void add_own(struct root *r, int fd); /* the mount fd is on becomes one of the container's own */
/* Opens target inside the root (O_PATH), creating what is missing; -1 with errno. */
int open_creating(const struct root *r, const struct op *op, const char *target, enum node kind, const char *link);

/* mounttree.c */
int mount_id(int fd);
/* The MS_* flags of the mount fd is on: a bind's remount must repeat those the kernel locked. */
unsigned long mount_flags(int fd);
/* Adds flags (MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC) to the mount at fd and all below it. */
void restrict_tree(const struct op *op, int fd, unsigned long flags);

#endif
