/* Serves the squashfs image through FUSE from inside this process, with squashfuse's
 * low-level library (as Charliecloud's ch-run does), so no other program has to be found or
 * started. squashfuse 0.1.x keeps unlocked caches, so requests are served by one thread; the
 * kernel's page cache (files are opened with keep_cache, entries never expire) serves repeats.
 *
 * Every file is shown as owned by the container's own user (the caller, or root with
 * --fakeroot), as squashfuse 0.5's -o uid,gid does: the image's owners are mostly root, which
 * an unprivileged user namespace cannot map, and an unmapped owner would leave the user unable
 * to create mount points, passwd entries or --writable-tmpfs files in the overlay. The image is
 * the user's own file, so this reveals nothing, and nosuid keeps setuid bits inert. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <squashfuse/ll.h>

#include "helper.h"

/* In libsquashfuse but not in its installed headers. */
sqfs_err sqfs_stat(sqfs *fs, sqfs_inode *inode, struct stat *st);

#define FOREVER 1e9 /* seconds: a read-only image never changes under the kernel's caches */

static uid_t owner_uid;
static gid_t owner_gid;

static void op_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	(void)fi;
	sqfs_ll_i lli;
	struct stat st;
	if (sqfs_ll_iget(req, &lli, ino))
		return; /* it has replied already */
	if (sqfs_stat(&lli.ll->fs, &lli.inode, &st)) {
		fuse_reply_err(req, ENOENT);
		return;
	}
	st.st_ino = ino;
	st.st_uid = owner_uid;
	st.st_gid = owner_gid;
	fuse_reply_attr(req, &st, FOREVER);
}

static void op_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	sqfs_ll_i lli;
	sqfs_name namebuf;
	sqfs_dir_entry entry;
	sqfs_inode inode;
	bool found;
	if (sqfs_ll_iget(req, &lli, parent))
		return;
	if (!S_ISDIR(lli.inode.base.mode)) {
		fuse_reply_err(req, ENOTDIR);
		return;
	}
	sqfs_dentry_init(&entry, namebuf);
	if (sqfs_dir_lookup(&lli.ll->fs, &lli.inode, name, strlen(name), &entry, &found)) {
		fuse_reply_err(req, EIO);
		return;
	}
	struct fuse_entry_param e;
	memset(&e, 0, sizeof e);
	if (!found) {
		/* A negative entry (inode 0) with a timeout: the kernel remembers the miss, which
		 * matters for Python's and the loader's long search paths. */
		e.entry_timeout = FOREVER;
		fuse_reply_entry(req, &e);
		return;
	}
	if (sqfs_inode_get(&lli.ll->fs, &inode, sqfs_dentry_inode(&entry))) {
		fuse_reply_err(req, ENOENT);
		return;
	}
	if (sqfs_stat(&lli.ll->fs, &inode, &e.attr)) {
		fuse_reply_err(req, EIO);
		return;
	}
	e.ino = lli.ll->ino_register(lli.ll, &entry);
	e.attr.st_ino = e.ino;
	e.attr.st_uid = owner_uid;
	e.attr.st_gid = owner_gid;
	e.attr_timeout = e.entry_timeout = FOREVER;
	fuse_reply_entry(req, &e);
}

/* Where the kernel allows it (5.1+), files are opened without a message to this process at
 * all: an import of numpy opens hundreds of files, and each open and release would otherwise
 * be a round trip through this single thread. The kernel keeps the page cache as with
 * keep_cache. Reads then find the inode from its number rather than from open()'s handle. */
static int no_open;

static void op_init(void *userdata, struct fuse_conn_info *conn)
{
	(void)userdata;
	if (conn->capable & FUSE_CAP_NO_OPEN_SUPPORT) {
		conn->want |= FUSE_CAP_NO_OPEN_SUPPORT;
		no_open = 1;
	}
}

static void op_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	if (no_open && !(fi->flags & (O_WRONLY | O_RDWR)))
		fuse_reply_err(req, ENOSYS); /* "opens need no message": asked once */
	else
		sqfs_ll_op_open(req, ino, fi);
}

static void op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi)
{
	if (fi->fh) {
		sqfs_ll_op_read(req, ino, size, off, fi);
		return;
	}
	sqfs_ll_i lli;
	if (sqfs_ll_iget(req, &lli, ino))
		return;
	static char *buf;
	static size_t cap;
	if (size > cap) {
		free(buf);
		if (!(buf = malloc(size))) {
			cap = 0;
			fuse_reply_err(req, ENOMEM);
			return;
		}
		cap = size;
	}
	sqfs_off_t got = (sqfs_off_t)size;
	if (sqfs_read_range(&lli.ll->fs, &lli.inode, off, &got, buf))
		fuse_reply_err(req, EIO);
	else
		fuse_reply_buf(req, buf, (size_t)got);
}

static void op_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	if (fi->fh)
		sqfs_ll_op_release(req, ino, fi);
	else
		fuse_reply_err(req, 0);
}

static struct fuse_lowlevel_ops ops = {
	.init = op_init,
	.lookup = op_lookup,
	.forget = sqfs_ll_op_forget,
	.getattr = op_getattr,
	.readlink = sqfs_ll_op_readlink,
	.open = op_open,
	.read = op_read,
	.release = op_release,
	.opendir = sqfs_ll_op_opendir,
	.readdir = sqfs_ll_op_readdir,
	.releasedir = sqfs_ll_op_releasedir,
	.statfs = stfs_ll_op_statfs,
	.getxattr = sqfs_ll_op_getxattr,
	.listxattr = sqfs_ll_op_listxattr,
	.create = sqfs_ll_op_create,
};

struct fuse_session *fuse_mount_image(const char *image, const char *mountpoint)
{
	/* Called inside the user namespace: these are the container's own ids. */
	owner_uid = getuid();
	owner_gid = getgid();
	if (access("/dev/fuse", F_OK) != 0)
		fail("/dev/fuse does not exist on this node; an administrator must load the fuse module (modprobe fuse)");
	int probe = open("/dev/fuse", O_RDWR | O_CLOEXEC);
	if (probe < 0)
		fail_errno("cannot open /dev/fuse; an administrator must make it usable by all users (chmod 0666 /dev/fuse, "
			   "the default on most distributions)");
	close(probe);
	sqfs_ll *ll = sqfs_ll_open(image, 0);
	if (!ll)
		fail("cannot read %s as a squashfs image (not squashfs, damaged, or compressed in a way this squashfuse "
		     "cannot read); convert it again with berth convert", image);
	char fsname[4096 + 16];
	snprintf(fsname, sizeof fsname, "fsname=%s", image);
	/* nosuid and nodev: nothing in the image may gain privilege or reach a device. */
	char *argv[] = { "berth-helper", "-o", "ro,nosuid,nodev,subtype=berth", "-o", fsname, NULL };
	struct fuse_args args = FUSE_ARGS_INIT(5, argv);
	struct fuse_session *se = fuse_session_new(&args, &ops, sizeof ops, ll);
	if (!se)
		fail("cannot start serving %s through FUSE", image);
	if (fuse_session_mount(se, mountpoint) != 0)
		fail("cannot mount %s through FUSE inside the user namespace (kernel older than 4.18?)", image);
	return se;
}

int fuse_session_fd_of(struct fuse_session *se)
{
	return fuse_session_fd(se);
}

int fuse_pump(struct fuse_session *se)
{
	static struct fuse_buf buf;
	int r = fuse_session_receive_buf(se, &buf);
	if (r == -EINTR || r == -EAGAIN)
		return 0;
	if (r <= 0)
		return -1;
	fuse_session_process_buf(se, &buf);
	return 0;
}

void fuse_finish(struct fuse_session *se)
{
	fuse_session_unmount(se);
	fuse_session_destroy(se);
}
