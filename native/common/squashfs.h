/* squashfs.c: reading a squashfs image that may be hostile or corrupt, for the helper's fuse.c and
 * the addon. Every function returns 0 (or a count) on success and -errno on failure. */
#ifndef BERTH_SQUASHFS_H
#define BERTH_SQUASHFS_H

#include <limits.h>
#include <stddef.h>
#include <sys/stat.h>
#include <sys/types.h>

#include <squashfuse/squashfuse.h>

/* A directory entry, its name checked: `valid` is 0 for a name Linux cannot have (longer than
 * NAME_MAX, with '/' or NUL in it, "." or ".."), which is then not in `name`. */
struct sq_entry {
	sqfs_inode_id inode;
	sqfs_inode_num number;
	int type; /* the entry's squashfs type, as the image claims it */
	size_t len;
	int valid;
	char name[NAME_MAX + 1];
};

/* NULL if the superblock is one the rest can work with, else what is wrong with it. */
const char *sq_bad_super(const sqfs *fs, off_t file_size);
int sq_inode(sqfs *fs, sqfs_inode *inode, sqfs_inode_id id);
void sq_stat(const sqfs *fs, const sqfs_inode *inode, struct stat *st);
mode_t sq_entry_mode(const struct sq_entry *e);

int sq_dir_open(sqfs *fs, const sqfs_inode *inode, sqfs_dir *dir);
int sq_dir_next(sqfs *fs, sqfs_dir *dir, struct sq_entry *e); /* 1: an entry, 0: the end */
int sq_lookup(sqfs *fs, const sqfs_inode *dir, const char *name, struct sq_entry *e); /* 1: found, 0: not */

int sq_read(sqfs *fs, sqfs_inode *inode, off_t start, size_t size, char *buf, size_t *got);

/* Data and fragment blocks decompressed once for every thread that shares them: the image
 * server's serving threads each open the image (libsquashfuse 0.1's caches are unlocked), and
 * would otherwise each decompress what a cold start reads. `sq_share_blocks` makes the calling
 * thread's reads use (and fill) `shared`, which must only ever hold blocks of one image; NULL,
 * or no call, leaves the reads to each opened image's own cache. */
struct sq_shared;
struct sq_shared *sq_shared_new(void); /* NULL: no memory */
void sq_share_blocks(struct sq_shared *shared);
int sq_readlink(sqfs *fs, const sqfs_inode *inode, char *buf, size_t cap);

/* Whether the image holds any xattr at all. */
int sq_has_xattrs(const sqfs *fs);
/* getxattr(2) and listxattr(2): the value's (or the list's) size, copied into buf when cap
 * allows (cap 0 asks for the size only); -ERANGE when it does not fit. */
ssize_t sq_getxattr(sqfs *fs, const sqfs_inode *inode, const char *name, char *buf, size_t cap);
ssize_t sq_listxattr(sqfs *fs, const sqfs_inode *inode, char *buf, size_t cap);

#endif
