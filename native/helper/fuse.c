/* Serves the squashfs image through FUSE from inside this process, with squashfuse's
 * low-level library (as Charliecloud's ch-run does), so no other program has to be found or
 * started. squashfuse 0.1.x keeps unlocked caches, so no two threads may share one opened
 * image: each serving thread has its own (fuse_serve_in_threads), on the same file, and the
 * data and fragment blocks they decompress are shared (squashfs.c); the kernel hands each
 * request to one of the threads reading /dev/fuse. The kernel's page cache (files
 * are opened with keep_cache, entries never expire) serves repeats.
 *
 * Every file is shown as owned by the container's own user (the caller, or root with
 * --fakeroot), as squashfuse 0.5's -o uid,gid does: the image's owners are mostly root, which
 * an unprivileged user namespace cannot map, and an unmapped owner would leave the user unable
 * to create mount points, passwd entries or --writable-tmpfs files in the overlay. The image is
 * the user's own file, so this reveals nothing, and nosuid keeps setuid bits inert.
 *
 * The image may be hostile or damaged: every read of it goes through squashfs.c, which bounds
 * what libsquashfuse does not, and a request for what cannot be read gets EIO, not a crash. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <squashfuse/ll.h>

#include "helper.h"
#include "../common/squashfs.h"

#define FOREVER 1e9 /* seconds: a read-only image never changes under the kernel's caches */

static uid_t owner_uid;
static gid_t owner_gid;

/* The image as fuse_mount_image opened it (the session's userdata), and as this thread opened
 * it again (each serving thread its own). */
static sqfs_ll *mounted_ll;
static off_t mounted_size; /* the squashfs's bytes in the file, as sq_bad_super checked them */
static __thread sqfs_ll *thread_ll;

static sqfs_ll *ll_of(fuse_req_t req)
{
	return thread_ll ? thread_ll : fuse_req_userdata(req);
}

/* The inode the kernel numbered `ino`: squashfuse's 64-bit numbering makes the number the
 * inode's reference, which lookup checked; it is checked again on every use (sq_inode), as the
 * file could have changed since. Replies the error itself, as sqfs_ll_iget does. */
static sqfs *iget(fuse_req_t req, fuse_ino_t ino, sqfs_inode *inode)
{
	sqfs_ll *ll = ll_of(req);
	int r = sq_inode(&ll->fs, inode, ll->ino_sqfs(ll, ino));
	if (r < 0) {
		fuse_reply_err(req, -r);
		return NULL;
	}
	return &ll->fs;
}

static void owned(struct stat *st, fuse_ino_t ino)
{
	st->st_ino = ino;
	st->st_uid = owner_uid;
	st->st_gid = owner_gid;
}

static void op_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	(void)fi;
	sqfs_inode inode;
	struct stat st;
	sqfs *fs = iget(req, ino, &inode);
	if (!fs)
		return;
	sq_stat(fs, &inode, &st);
	owned(&st, ino);
	fuse_reply_attr(req, &st, FOREVER);
}

static void op_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	sqfs_inode dir, inode;
	struct sq_entry e;
	struct fuse_entry_param ep;
	memset(&ep, 0, sizeof ep);
	sqfs *fs = iget(req, parent, &dir);
	if (!fs)
		return;
	int r = sq_lookup(fs, &dir, name, &e);
	if (r == 0) {
		/* A negative entry (inode 0) with a timeout: the kernel remembers the miss, which
		 * matters for Python's and the loader's long search paths. */
		ep.entry_timeout = FOREVER;
		fuse_reply_entry(req, &ep);
		return;
	}
	if (r < 0 || (r = sq_inode(fs, &inode, e.inode)) < 0) {
		fuse_reply_err(req, -r);
		return;
	}
	sqfs_ll *ll = ll_of(req);
	sqfs_dir_entry entry = { .inode = e.inode, .inode_number = e.number };
	ep.ino = ll->ino_register(ll, &entry);
	sq_stat(fs, &inode, &ep.attr);
	owned(&ep.attr, ep.ino);
	ep.attr_timeout = ep.entry_timeout = FOREVER;
	fuse_reply_entry(req, &ep);
}

/* Where the kernel allows it (5.1+), files are opened without a message to this process at
 * all: an import of numpy opens hundreds of files, and each open and release would otherwise
 * be a round trip to this server. The kernel keeps the page cache as with
 * keep_cache. Reads then find the inode from its number rather than from open()'s handle. */
static int no_open;
/* Directories the same way (5.1+): no opendir or releasedir, and the kernel then keeps each
 * directory's listing in its cache (FOPEN_CACHE_DIR, its default without opendir), so the
 * second container's Python lists sys.path from the kernel, not through this server. */
static int no_opendir;

static void op_init(void *userdata, struct fuse_conn_info *conn)
{
	(void)userdata;
	if (conn->capable & FUSE_CAP_NO_OPEN_SUPPORT) {
		conn->want |= FUSE_CAP_NO_OPEN_SUPPORT;
		no_open = 1;
	}
	if (conn->capable & FUSE_CAP_NO_OPENDIR_SUPPORT) {
		conn->want |= FUSE_CAP_NO_OPENDIR_SUPPORT;
		no_opendir = 1;
	}
	/* Symlinks read once (4.20+): /lib64 -> usr/lib64 and the like lie on every path the loader
	 * and Python resolve. */
	if (conn->capable & FUSE_CAP_CACHE_SYMLINKS)
		conn->want |= FUSE_CAP_CACHE_SYMLINKS;
}

static void op_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	if (fi->flags & (O_WRONLY | O_RDWR)) {
		fuse_reply_err(req, EROFS);
		return;
	}
	if (no_open) {
		fuse_reply_err(req, ENOSYS); /* "opens need no message": asked once */
		return;
	}
	sqfs_inode *inode = malloc(sizeof *inode);
	if (!inode) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	if (!iget(req, ino, inode)) {
		free(inode);
		return;
	}
	if (!S_ISREG(inode->base.mode)) {
		free(inode);
		fuse_reply_err(req, EISDIR);
		return;
	}
	fi->fh = (uintptr_t)inode;
	fi->keep_cache = 1;
	fuse_reply_open(req, fi);
}

static void op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi)
{
	sqfs_inode found, *inode = (sqfs_inode *)(uintptr_t)fi->fh;
	sqfs *fs = &ll_of(req)->fs;
	if (!inode && !(fs = iget(req, ino, inode = &found)))
		return;
	static __thread char *buf;
	static __thread size_t cap;
	if (size > cap) {
		free(buf);
		if (!(buf = malloc(size))) {
			cap = 0;
			fuse_reply_err(req, ENOMEM);
			return;
		}
		cap = size;
	}
	size_t got;
	int r = sq_read(fs, inode, off, size, buf, &got);
	if (r < 0)
		fuse_reply_err(req, -r);
	else
		fuse_reply_buf(req, buf, got);
}

static void op_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	(void)ino;
	free((sqfs_inode *)(uintptr_t)fi->fh);
	fuse_reply_err(req, 0);
}

static void op_readlink(fuse_req_t req, fuse_ino_t ino)
{
	sqfs_inode inode;
	char target[PATH_MAX];
	sqfs *fs = iget(req, ino, &inode);
	if (!fs)
		return;
	int r = sq_readlink(fs, &inode, target, sizeof target);
	if (r < 0)
		fuse_reply_err(req, -r);
	else
		fuse_reply_readlink(req, target);
}

/* An open directory: its inode, and where the last readdir stopped, so that listing a large
 * directory reads it once rather than from its start at every call. */
struct open_dir {
	sqfs_inode inode;
	sqfs_dir dir;
};

static void op_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	if (no_opendir) {
		fuse_reply_err(req, ENOSYS); /* "opendirs need no message": asked once */
		return;
	}
	struct open_dir *d = malloc(sizeof *d);
	if (!d) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	sqfs *fs = iget(req, ino, &d->inode);
	int r = fs ? sq_dir_open(fs, &d->inode, &d->dir) : 0;
	if (!fs || r < 0) {
		if (r < 0)
			fuse_reply_err(req, -r);
		free(d);
		return;
	}
	fi->fh = (uintptr_t)d;
	fi->keep_cache = 1;
	fi->cache_readdir = 1; /* 4.20+: the listing is kept, as without opendir */
	fuse_reply_open(req, fi);
}

/* Without opendir a readdir names only the directory and an offset: where recent replies
 * stopped is kept here, for any thread, so a large directory is still read once rather than
 * from its start at every call. Plain positions in the image, which never changes. */
#define DIR_CURSORS 16
static struct dir_cursor {
	fuse_ino_t ino; /* 0: empty */
	sqfs_dir dir;
} dir_cursors[DIR_CURSORS];
static unsigned next_cursor;
static pthread_mutex_t cursors_lock = PTHREAD_MUTEX_INITIALIZER;

static void cursor_take(fuse_ino_t ino, off_t off, struct open_dir *d)
{
	pthread_mutex_lock(&cursors_lock);
	for (size_t i = 0; i < DIR_CURSORS; i++)
		if (dir_cursors[i].ino == ino && dir_cursors[i].dir.offset == off && off != 0) {
			d->dir = dir_cursors[i].dir;
			dir_cursors[i].ino = 0;
			break;
		}
	pthread_mutex_unlock(&cursors_lock);
}

static void cursor_keep(fuse_ino_t ino, const struct open_dir *d)
{
	pthread_mutex_lock(&cursors_lock);
	dir_cursors[next_cursor++ % DIR_CURSORS] = (struct dir_cursor){ ino, d->dir };
	pthread_mutex_unlock(&cursors_lock);
}

/* Moves d->dir to `off`, an offset this server handed out (an entry's end), if not there. */
static int seek_dir(sqfs *fs, struct open_dir *d, off_t off)
{
	struct sq_entry e;
	if (off == d->dir.offset && off != 0)
		return 0;
	int r = sq_dir_open(fs, &d->inode, &d->dir);
	while (r >= 0 && d->dir.offset < off)
		if ((r = sq_dir_next(fs, &d->dir, &e)) == 0)
			r = -EINVAL;
	return r < 0 ? r : d->dir.offset == off ? 0 : -EINVAL;
}

/* Entries up to `size` bytes. An entry that cannot be read, or whose name Linux cannot have,
 * ends the reply before it; asked for again, it is EIO: a listing shows what can be read. */
static void op_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi)
{
	sqfs_ll *ll = ll_of(req);
	struct open_dir *d = (struct open_dir *)(uintptr_t)fi->fh, unopened;
	if (!d) {
		d = &unopened;
		if (!iget(req, ino, &d->inode))
			return;
		d->dir.offset = -1; /* seek_dir starts at the beginning unless a cursor is found */
		cursor_take(ino, off, d);
	}
	char *buf = malloc(size);
	size_t used = 0;
	int r = buf ? seek_dir(&ll->fs, d, off) : -ENOMEM;
	while (r >= 0) {
		sqfs_dir before = d->dir;
		struct sq_entry e;
		if ((r = sq_dir_next(&ll->fs, &d->dir, &e)) <= 0 || !e.valid) {
			r = r == 0 ? 0 : -EIO;
			d->dir = before; /* the next call starts here, and meets the same entry */
			break;
		}
		sqfs_dir_entry entry = { .inode = e.inode, .inode_number = e.number };
		struct stat st = { .st_ino = ll->ino_fuse_num(ll, &entry), .st_mode = sq_entry_mode(&e) };
		size_t esize = fuse_add_direntry(req, buf + used, size - used, e.name, &st, d->dir.offset);
		if (esize > size - used) {
			d->dir = before;
			break;
		}
		used += esize;
	}
	if (d == &unopened && r >= 0 && used > 0)
		cursor_keep(ino, d);
	if (r < 0 && used == 0)
		fuse_reply_err(req, -r);
	else
		fuse_reply_buf(req, buf, used);
	free(buf);
}

static void op_releasedir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	(void)ino;
	free((struct open_dir *)(uintptr_t)fi->fh);
	fuse_reply_err(req, 0);
}

static void reply_xattr(fuse_req_t req, ssize_t r, const char *buf, size_t size)
{
	if (r < 0)
		fuse_reply_err(req, (int)-r);
	else if (size == 0)
		fuse_reply_xattr(req, (size_t)r);
	else
		fuse_reply_buf(req, buf, (size_t)r);
}

/* An image without a single xattr (most: squashfs says so in its superblock) answers that it
 * has none at all, once: the kernel then stops asking. Otherwise overlayfs asks for its
 * metacopy and opaque attributes at every lookup of a file or directory in a new container,
 * each a round trip to this server. */
static bool no_xattrs(fuse_req_t req)
{
	if (sq_has_xattrs(&ll_of(req)->fs))
		return false;
	fuse_reply_err(req, ENOSYS);
	return true;
}

static void op_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name, size_t size)
{
	if (no_xattrs(req))
		return;
	sqfs_inode inode;
	sqfs *fs = iget(req, ino, &inode);
	char *buf = size ? malloc(size) : NULL;
	if (fs && size && !buf)
		fuse_reply_err(req, ENOMEM);
	else if (fs)
		reply_xattr(req, sq_getxattr(fs, &inode, name, buf, size), buf, size);
	free(buf);
}

static void op_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size)
{
	if (no_xattrs(req))
		return;
	sqfs_inode inode;
	sqfs *fs = iget(req, ino, &inode);
	char *buf = size ? malloc(size) : NULL;
	if (fs && size && !buf)
		fuse_reply_err(req, ENOMEM);
	else if (fs)
		reply_xattr(req, sq_listxattr(fs, &inode, buf, size), buf, size);
	free(buf);
}

/* Everything that reads the image is squashfs.c's; the library's own ops only where they read
 * nothing of it (forget, statfs: the superblock's counts, create: EROFS). */
static struct fuse_lowlevel_ops ops = {
	.init = op_init,
	.lookup = op_lookup,
	.forget = sqfs_ll_op_forget,
	.getattr = op_getattr,
	.readlink = op_readlink,
	.open = op_open,
	.read = op_read,
	.release = op_release,
	.opendir = op_opendir,
	.readdir = op_readdir,
	.releasedir = op_releasedir,
	.statfs = stfs_ll_op_statfs,
	.getxattr = op_getxattr,
	.listxattr = op_listxattr,
	.create = sqfs_ll_op_create,
};

struct fuse_session *fuse_mount_image(const char *image, unsigned long long offset, const char *mountpoint)
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
	sqfs_ll *ll = sqfs_ll_open(image, (size_t)offset);
	if (!ll)
		fail("cannot read %s as a squashfs image (not squashfs, damaged, or compressed in a way this squashfuse "
		     "cannot read); convert it again with berth convert", image);
	struct stat st;
	/* At an offset (a SIF's partition), what follows it in the file is all the squashfs may use. */
	const char *bad = fstat(ll->fs.fd, &st) != 0		      ? "it cannot be examined"
			  : (unsigned long long)st.st_size < offset ? "it ends before its squashfs starts"
								    : sq_bad_super(&ll->fs, st.st_size - (off_t)offset);
	if (bad)
		fail("cannot serve %s: its squashfs superblock is damaged: %s; convert it again with berth convert", image, bad);
	mounted_size = st.st_size - (off_t)offset;
	char fsname[PATH_MAX + sizeof "fsname="];
	xformat(fsname, sizeof fsname, "fsname=%s", image);
	/* nosuid and nodev: nothing in the image may gain privilege or reach a device. */
	char *argv[] = { "berth-helper", "-o", "ro,nosuid,nodev,subtype=berth", "-o", fsname, NULL };
	struct fuse_args args = FUSE_ARGS_INIT(5, argv);
	mounted_ll = ll;
	struct fuse_session *se = fuse_session_new(&args, &ops, sizeof ops, ll);
	if (!se)
		fail("cannot start serving %s through FUSE", image);
	if (fuse_session_mount(se, mountpoint) != 0)
		fail("cannot mount %s through FUSE inside the user namespace (kernel older than 4.18?)", image);
	return se;
}

struct worker {
	struct fuse_session *se;
	sqfs_ll *ll;
	struct sq_shared *blocks; /* the data blocks all the threads share, or NULL */
	int gone;                 /* written to when the mount is gone */
};

static void *serve_requests(void *arg)
{
	struct worker *w = arg;
	thread_ll = w->ll;
	sq_share_blocks(w->blocks);
	struct fuse_buf buf = { 0 };
	for (;;) {
		int r = fuse_session_receive_buf(w->se, &buf);
		if (r == -EINTR || r == -EAGAIN)
			continue;
		if (r == -EMFILE || r == -ENFILE || r == -ENOMEM) {
			/* Out of descriptors or memory for a moment (libfuse's splice pipe): the request
			 * waits in the kernel's queue. Only the mount's end ends the thread. */
			nanosleep(&(struct timespec){ 0, 10 * 1000 * 1000 }, NULL);
			continue;
		}
		if (r <= 0)
			break;
		fuse_session_process_buf(w->se, &buf);
	}
	char byte = 0;
	if (write(w->gone, &byte, 1) < 0) {
		/* nothing more to do: the server's poll() also sees the pipe's end when it exits */
	}
	return NULL;
}

int fuse_serve_in_threads(struct fuse_session *se, unsigned threads)
{
	int gone[2];
	if (pipe2(gone, O_CLOEXEC) != 0)
		fail_errno("cannot make a pipe for the image's serving threads");
	/* Signals (SIGTERM, the guard's) are the main thread's: its poll() answers them. */
	sigset_t all, old;
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, &old);
	char again[64];
	xformat(again, sizeof again, "/proc/self/fd/%d", mounted_ll->fs.fd); /* the same file, never its path again */
	/* As many as can be had (a thread limit, memory): one is enough to serve. Each copy must be
	 * the image the first one checked (the file could have been rewritten meanwhile). */
	unsigned started = 0;
	/* What a cold start reads is decompressed once, by whichever thread asks first. */
	struct sq_shared *blocks = threads > 1 ? sq_shared_new() : NULL;
	for (unsigned i = 0; i < threads; i++) {
		struct worker *w = malloc(sizeof *w);
		pthread_t t;
		sqfs_ll *ll = !w ? NULL : i == 0 ? mounted_ll : sqfs_ll_open(again, mounted_ll->fs.offset);
		if (ll && ll != mounted_ll && (memcmp(&ll->fs.sb, &mounted_ll->fs.sb, sizeof ll->fs.sb) != 0 || sq_bad_super(&ll->fs, mounted_size)))
			ll = NULL; /* not freed: libsquashfuse 0.1 has no sqfs_ll_close of its own */
		if (!ll) {
			free(w);
			break;
		}
		*w = (struct worker){ se, ll, blocks, gone[1] };
		if (pthread_create(&t, NULL, serve_requests, w) != 0) {
			free(w);
			break;
		}
		pthread_detach(t);
		started++;
	}
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (started == 0)
		fail("cannot start a thread serving the image: %s", strerror(errno));
	return gone[0];
}
