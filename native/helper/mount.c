/* Builds the container's root from the plan, in the container process's own mount namespace:
 * a kernel overlay of the image (read-only FUSE mount) under a small tmpfs, so that mount
 * points, passwd entries and --writable-tmpfs need no write access to the image; then the
 * plan's ops in order; then pivot_root. Targets are looked up and created inside the root only
 * (rootpath.c), so a symlink in the image can never point a mount, or a file the helper makes,
 * at the host; a bind's flags (ro, nosuid, nodev, noexec) hold for its submounts too (mounttree.c). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/capability.h>
#include <sys/prctl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <signal.h>
#include <sys/statfs.h>
#include <sys/wait.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "root.h"

/* Opens the target as O_PATH, creating it (and its parents) as a directory or empty file if
 * the op allows. Returns -1 when it is missing and the op says skip. */
static int target_fd(const struct root *r, const struct op *op, enum node kind)
{
	int fd = open_in_root(r->fd, op->target, O_PATH, 0);
	if (fd >= 0)
		return fd;
	if (errno != ENOENT)
		op_fail(op, "cannot open");
	if (op->missing == MISSING_SKIP)
		return -1;
	if (op->missing == MISSING_FAIL) {
		errno = ENOENT;
		op_fail(op, "cannot mount on");
	}
	if ((fd = open_creating(r, op, op->target, kind, NULL)) < 0)
		op_fail(op, "cannot create");
	return fd;
}

static const struct { const char *name; unsigned long flag; } FLAGS[] = {
	{ "ro", MS_RDONLY }, { "nosuid", MS_NOSUID }, { "nodev", MS_NODEV },
	{ "noexec", MS_NOEXEC }, { "rbind", MS_REC }, { "rw", 0 },
};

/* Splits "ro,nosuid,mode=755" into mount flags and data ("mode=755"). Unknown words fail. */
static unsigned long parse_options(const struct op *op, char *data, size_t datalen)
{
	unsigned long flags = 0;
	char *buf = strdup(op->options); /* all of them: a cut list could lose "ro" */
	if (!buf)
		fail("out of memory");
	data[0] = '\0';
	for (char *save = NULL, *w = strtok_r(buf, ",", &save); w; w = strtok_r(NULL, ",", &save)) {
		size_t i;
		for (i = 0; i < sizeof FLAGS / sizeof *FLAGS && strcmp(w, FLAGS[i].name); i++)
			;
		if (i < sizeof FLAGS / sizeof *FLAGS) {
			flags |= FLAGS[i].flag;
		} else if (!strncmp(w, "mode=", 5) || !strncmp(w, "size=", 5)) {
			xformat(data + strlen(data), datalen - strlen(data), "%s%s", *data ? "," : "", w);
		} else {
			fail("unknown mount option '%s' for %s (%s)", w, op->target, op->origin);
		}
	}
	free(buf);
	return flags;
}

static void do_bind(const struct root *r, const struct op *op)
{
	struct stat st;
	if (stat(op->source, &st) != 0) {
		if (op->missing == MISSING_SKIP)
			return;
		fail_errno("cannot bind %s to %s (%s)", op->source, op->target, op->origin);
	}
	char data[256], where[64];
	unsigned long flags = parse_options(op, data, sizeof data);
	int fd = target_fd(r, op, S_ISDIR(st.st_mode) ? NODE_DIR : NODE_FILE);
	if (fd < 0)
		return;
	snprintf(where, sizeof where, "/proc/self/fd/%d", fd);
	if (mount(op->source, where, NULL, MS_BIND | (flags & MS_REC), NULL) != 0)
		fail_errno("cannot bind %s to %s (%s)", op->source, op->target, op->origin);
	close(fd);
	unsigned long extra = flags & ~MS_REC;
	if (!extra)
		return;
	/* The fd still names the directory under the new mount: look the target up again. */
	if ((fd = open_in_root(r->fd, op->target, O_PATH, 0)) < 0)
		op_fail(op, "cannot open");
	restrict_tree(op, fd, extra);
	close(fd);
}

/* A tmpfs, or (OP_PROC) the /proc of the PID namespace this process is PID 1 of (pidns.c). */
static void do_tmpfs(struct root *r, const struct op *op)
{
	char data[256], where[64];
	unsigned long flags = parse_options(op, data, sizeof data);
	int fd = target_fd(r, op, NODE_DIR);
	if (fd < 0)
		return;
	snprintf(where, sizeof where, "/proc/self/fd/%d", fd);
	const char *type = op->kind == OP_PROC ? "proc" : "tmpfs";
	if (mount(type, where, type, flags, *data ? data : NULL) != 0)
		op_fail(op, op->kind == OP_PROC ? "cannot mount the container's own /proc on" : "cannot mount a tmpfs on");
	close(fd);
	if ((fd = open_in_root(r->fd, op->target, O_PATH, 0)) < 0)
		op_fail(op, "cannot open");
	add_own(r, fd);
	close(fd);
}

static void do_symlink(const struct root *r, const struct op *op)
{
	int fd = open_creating(r, op, op->target, NODE_SYMLINK, op->source);
	if (fd < 0)
		op_fail(op, "cannot create symlink");
	close(fd);
}

/* The file a line goes into, open for reading and writing: a regular file of the container's own
 * (an image's /etc/passwd that is a FIFO would hang the start; one that is a symlink into a host
 * directory bound in, /tmp or your home, would have berth write there). */
static int open_line_file(const struct root *r, const struct op *op)
{
	int fd = open_in_root(r->fd, op->target, O_PATH, 0);
	if (fd < 0 && errno == ENOENT && op->missing == MISSING_CREATE) {
		close(target_fd(r, op, NODE_FILE));
		fd = open_in_root(r->fd, op->target, O_PATH, 0);
	}
	if (fd < 0) {
		if (op->missing == MISSING_SKIP)
			return -1;
		op_fail(op, "cannot open");
	}
	struct stat st;
	if (fstat(fd, &st) != 0)
		op_fail(op, "cannot stat");
	if (!S_ISREG(st.st_mode))
		fail("cannot add a line to %s (%s): the image has something else than a regular file there", op->target, op->origin);
	if (!is_own(r, fd))
		fail("cannot add a line to %s (%s): a symlink in the image leads it out of the container's own files, into a "
		     "directory bound from the host; berth writes nothing there", op->target, op->origin);
	char where[64];
	snprintf(where, sizeof where, "/proc/self/fd/%d", fd);
	int rw = open(where, O_RDWR | O_NOCTTY | O_NONBLOCK | O_CLOEXEC); /* this very file, not its path again */
	if (rw < 0)
		op_fail(op, "cannot open");
	close(fd);
	return rw;
}

/* Appends `line` to a text file (passwd, group) unless a line already starts with the key. */
static void do_line(const struct root *r, const struct op *op)
{
	int fd = open_line_file(r, op);
	if (fd < 0)
		return;
	FILE *f = fdopen(fd, "r+");
	if (!f)
		op_fail(op, "cannot open");
	char *text = NULL;
	size_t cap = 0, keylen = strlen(op->options);
	ssize_t n;
	int last_newline = 1;
	while ((n = getline(&text, &cap, f)) > 0) {
		if (!strncmp(text, op->options, keylen)) {
			fclose(f);
			free(text);
			return;
		}
		last_newline = text[n - 1] == '\n';
	}
	fprintf(f, "%s%s\n", last_newline ? "" : "\n", op->source);
	if (fclose(f) != 0)
		op_fail(op, "cannot write");
	free(text);
}

#define FUSE_SUPER_MAGIC 0x65735546

/* An exec by a non-root uid drops every capability, even in our own user namespace; an
 * ambient CAP_SYS_ADMIN (meaningful in this namespace only) lets fuse-overlayfs mount. */
static void keep_sys_admin_across_exec(void)
{
	struct __user_cap_header_struct hdr = { .version = _LINUX_CAPABILITY_VERSION_3, .pid = 0 };
	struct __user_cap_data_struct data[2];
	if (syscall(SYS_capget, &hdr, data) != 0)
		fail_errno("cannot read capabilities");
	data[CAP_TO_INDEX(CAP_SYS_ADMIN)].inheritable |= CAP_TO_MASK(CAP_SYS_ADMIN);
	if (syscall(SYS_capset, &hdr, data) != 0 || prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, CAP_SYS_ADMIN, 0, 0) != 0)
		fail_errno("cannot pass CAP_SYS_ADMIN on to fuse-overlayfs");
}

/* Kernels before 5.11 (RHEL 8's 4.18 among them) refuse overlayfs in a user namespace;
 * fuse-overlayfs does the same in user space. It runs as an orphan (not the container's
 * child, so a shell's `wait` never waits for it) and the image server stops it when the
 * container's process ends. Returns its pid once its mount is up. */
static pid_t start_fuse_overlayfs(const char *opts, const char *root)
{
	pid_t pid = fork_orphan();
	if (pid == 0) {
		keep_sys_admin_across_exec();
		int devnull = open("/dev/null", O_RDWR);
		dup2(devnull, STDIN_FILENO);
		dup2(devnull, STDOUT_FILENO);
		execlp("fuse-overlayfs", "fuse-overlayfs", "-f", "-o", opts, root, (char *)NULL);
		_exit(127);
	}
	for (int i = 0; i < 500; i++) { /* up to 5 s */
		struct statfs st;
		if (statfs(root, &st) == 0 && st.f_type == FUSE_SUPER_MAGIC)
			return pid;
		if (kill(pid, 0) != 0)
			break;
		usleep(10000);
	}
	kill(pid, SIGKILL);
	fail("this kernel refuses overlayfs in a user namespace (Linux 5.11 or newer allows it), and fuse-overlayfs "
	     "did not start in its place: install fuse-overlayfs (apt-get install fuse-overlayfs)");
}

void bind_image_dir(const char *dir, const char *mountpoint)
{
	/* Opened once and bound through its descriptor: the path is looked up once, and not
	 * recursively, so nothing mounted below the directory comes along. */
	int fd = open(dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		fail_errno("cannot open the image directory %s", dir);
	char src[64];
	snprintf(src, sizeof src, "/proc/self/fd/%d", fd);
	if (mount(src, mountpoint, NULL, MS_BIND, NULL) != 0)
		fail_errno("cannot bind the image directory %s", dir);
	close(fd);
	int m = open(mountpoint, O_PATH | O_DIRECTORY | O_CLOEXEC);
	/* Read-only, nosuid, nodev like a squashfs image: the directory may be anyone's. */
	unsigned long flags = MS_RDONLY | MS_NOSUID | MS_NODEV;
	if (m < 0 || mount(NULL, mountpoint, NULL, MS_BIND | MS_REMOUNT | flags | mount_flags(m), NULL) != 0 ||
	    (mount_flags(m) & flags) != flags)
		fail_errno("cannot make the image directory %s read-only, nosuid and nodev", dir);
	close(m);
}

/* A directory of the persistent overlay (--overlay DIR): made if missing, and opened only as
 * the directory it is (no symlink followed), so that what the overlay writes goes there. Kept
 * open (not close-on-exec, for fuse-overlayfs) until the overlay is mounted. */
static int overlay_subdir(int dir, const char *name, const char *overlay)
{
	if (mkdirat(dir, name, 0755) != 0 && errno != EEXIST)
		fail_errno("cannot create %s/%s for the overlay", overlay, name);
	int fd = openat(dir, name, O_PATH | O_DIRECTORY | O_NOFOLLOW);
	if (fd < 0)
		fail_errno("cannot open %s/%s as a directory (a symlink there is refused)", overlay, name);
	return fd;
}

/* --overlay DIR: DIR must be the caller's own and no one else's to write (berth checked it
 * too; checked again here, on what is opened): another user's files in it would be the root's. */
static int open_overlay_dir(const char *overlay)
{
	int fd = open(overlay, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	struct stat st;
	if (fd < 0 || fstat(fd, &st) != 0)
		fail_errno("cannot open the overlay directory %s", overlay);
	if (st.st_uid != getuid() || (st.st_mode & 022))
		fail("the overlay directory %s is not yours alone (owner %u, mode %04o); use a directory only you can write",
		     overlay, (unsigned)st.st_uid, (unsigned)(st.st_mode & 07777));
	return fd;
}

pid_t build_root(const struct plan *p, const struct server_paths *sp, const char *base)
{
	const char *lower = sp->mnt;
	const char *hidden[] = { sp->work, sp->mnt };
	/* Sized by their inputs (helper.h): a container's base, the server's mount, the words between. */
	char upper[CONTAINER_BASE_MAX + 8], work[CONTAINER_BASE_MAX + 8], root[CONTAINER_BASE_MAX + 8];
	char opts[sizeof sp->mnt + sizeof upper + sizeof work + 64];
	xformat(upper, sizeof upper, "%s/upper", base);
	xformat(work, sizeof work, "%s/work", base);
	xformat(root, sizeof root, "%s/root", base);
	const char *dirs[] = { base, upper, work, root };
	for (size_t i = 0; i < 4; i++)
		if (mkdir(dirs[i], 0755) != 0)
			fail_errno("cannot create %s", dirs[i]);
	int kept[2] = { -1, -1 };
	if (p->overlay) {
		/* The changes go to DIR/upper, and outlive the container; DIR/work is overlayfs's own. */
		int dir = open_overlay_dir(p->overlay);
		kept[0] = overlay_subdir(dir, "upper", p->overlay);
		kept[1] = overlay_subdir(dir, "work", p->overlay);
		close(dir);
		xformat(upper, sizeof upper, "/proc/self/fd/%d", kept[0]);
		xformat(work, sizeof work, "/proc/self/fd/%d", kept[1]);
	}
	xformat(opts, sizeof opts, "lowerdir=%s,upperdir=%s,workdir=%s", lower, upper, work);
	/* userxattr (Linux 5.11+) keeps overlay's own bookkeeping in user.* xattrs, which an
	 * unprivileged mounter may write; older kernels do not know it and need no such option. */
	char with_userxattr[sizeof opts + sizeof ",userxattr"];
	xformat(with_userxattr, sizeof with_userxattr, "%s,userxattr", opts);
	pid_t overlay = 0;
	if (getenv("BERTH_FORCE_FUSE_OVERLAYFS") ||
	    (mount("overlay", root, "overlay", MS_NOSUID | MS_NODEV, with_userxattr) != 0 &&
	     mount("overlay", root, "overlay", MS_NOSUID | MS_NODEV, opts) != 0))
		overlay = start_fuse_overlayfs(opts, root);
	for (size_t i = 0; i < 2; i++)
		if (kept[i] >= 0)
			close(kept[i]);
	struct root r = { .fd = open(root, O_PATH | O_DIRECTORY | O_CLOEXEC) };
	if (r.fd < 0)
		fail_errno("cannot open %s", root);
	add_own(&r, r.fd);
	for (size_t i = 0; i < p->nops; i++) {
		const struct op *op = &p->ops[i];
		switch (op->kind) {
		case OP_BIND: do_bind(&r, op); break;
		case OP_TMPFS:
		case OP_PROC: do_tmpfs(&r, op); break;
		case OP_SYMLINK: do_symlink(&r, op); break;
		case OP_MKDIR: close(target_fd(&r, op, NODE_DIR)); break;
		case OP_LINE: do_line(&r, op); break;
		case OP_VERIFY: break; /* verify.c, once the root is complete */
		}
	}
	close(r.fd);
	/* A network namespace of its own sees its own interfaces in /sys/class/net, as the kernel
	 * shows them to a sysfs mounted in it (the bound one is the host's): what UCX, MPI and
	 * NCCL discover must be what is there. */
	if (p->net != NET_HOST) {
		char sys[sizeof root + sizeof "/sys"];
		xformat(sys, sizeof sys, "%s/sys", root);
		if (mount("sysfs", sys, "sysfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) != 0)
			fail_errno("cannot mount the /sys of the container's network namespace");
	}
	/* When the runtime directory lies under a bound host directory (/tmp, $HOME), the rbind
	 * brought the image server's mounts in, this very root among them: take those copies out. */
	for (size_t i = 0; i < sizeof hidden / sizeof *hidden; i++) {
		char copy[sizeof root + SERVER_PATH_MAX];
		xformat(copy, sizeof copy, "%s%s", root, hidden[i]);
		umount2(copy, MNT_DETACH | UMOUNT_NOFOLLOW); /* EINVAL where nothing was brought in */
	}
	/* pivot_root(".", "."): the old root ends up on top of the new one, then goes. */
	if (chdir(root) != 0 || syscall(SYS_pivot_root, ".", ".") != 0)
		fail_errno("cannot pivot_root into %s", root);
	if (umount2(".", MNT_DETACH) != 0 || chdir("/") != 0)
		fail_errno("cannot detach the host's root");
	if (!p->writable && !p->overlay && mount(NULL, "/", NULL, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV, NULL) != 0)
		fail_errno("cannot make the container's root read-only");
	return overlay;
}
