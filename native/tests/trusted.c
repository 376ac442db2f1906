/* Unit tests of native/common/trusted.c: what open_private_dir, open_safe_dir and
 * open_owned_file accept and refuse, in a private directory made under /tmp (root's, sticky) by
 * whoever runs them. A second user is played by the uid argument (a uid that owns nothing
 * here) and by file modes, so the tests need no real second user and no root. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../common/trusted.h"
#include "check.h"

#define OTHER_UID 4242424 /* owns nothing on this machine */

static char base[256];

static const char *at(const char *rel)
{
	static char bufs[4][PATH_MAX];
	static int next;
	char *out = bufs[next++ % 4];
	if (format(out, PATH_MAX, "%s/%s", base, rel) != 0)
		exit(2);
	return out;
}

static void mkdir_mode(const char *path, mode_t mode)
{
	if (mkdir(path, mode) != 0 || chmod(path, mode) != 0) {
		perror(path);
		exit(2);
	}
}

static void make_file(const char *path, mode_t mode)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_EXCL, mode);
	if (fd < 0 || write(fd, "x\n", 2) != 2 || fchmod(fd, mode) != 0 || close(fd) != 0) {
		perror(path);
		exit(2);
	}
}

/* The fd's result, closed; err's message is kept for checks on the reason. */
static int accepted(int fd)
{
	if (fd >= 0)
		close(fd);
	return fd >= 0;
}

static void test_private_dir(void)
{
	char err[1024];
	uid_t me = getuid();

	mkdir_mode(at("private"), 0700);
	CHECK(accepted(open_private_dir(at("private"), me, 0, err, sizeof err)), "open_private_dir: a 0700 directory of the user's is accepted");
	CHECK(accepted(open_private_dir(at("private/"), me, 0, err, sizeof err)), "open_private_dir: a trailing slash is the same directory");

	mkdir_mode(at("open"), 0755);
	CHECK(!accepted(open_private_dir(at("open"), me, 0, err, sizeof err)) && strstr(err, "is open to others"),
	      "open_private_dir: mode 0755 is refused as open to others");

	CHECK(!accepted(open_private_dir(base, OTHER_UID, 0, err, sizeof err)) && strstr(err, "belongs to someone else"),
	      "open_private_dir: a directory asked for another uid is refused as someone else's");

	if (symlink("private", at("link")) != 0)
		perror("symlink");
	CHECK(!accepted(open_private_dir(at("link"), me, 0, err, sizeof err)) && strstr(err, "is a symbolic link"),
	      "open_private_dir: a symlink as the last component is refused");

	mkdir_mode(at("private/sub"), 0700);
	CHECK(accepted(open_private_dir(at("link/sub"), me, 0, err, sizeof err)),
	      "open_private_dir: a symlink on the way that the user owns is followed");

	if (me == 0) {
		/* As root, root's links are trusted for anyone: hand the link to another uid instead. */
		if (lchown(at("link"), OTHER_UID, OTHER_UID) != 0)
			perror("lchown");
		CHECK(!accepted(open_private_dir(at("link/sub"), me, 0, err, sizeof err)) && strstr(err, "symbolic link made by uid"),
		      "open_private_dir: a symlink on the way that another uid made is refused");
	}

	struct stat st;
	CHECK(accepted(open_private_dir(at("private/made"), me, 1, err, sizeof err)) && stat(at("private/made"), &st) == 0 &&
		      S_ISDIR(st.st_mode) && (st.st_mode & 07777) == 0700,
	      "open_private_dir: a missing directory is created, mode 0700");
	CHECK(!accepted(open_private_dir(at("private/absent"), me, 0, err, sizeof err)) && strstr(err, "No such file"),
	      "open_private_dir: a missing directory without create is refused");

	make_file(at("private/file"), 0600);
	CHECK(!accepted(open_private_dir(at("private/file"), me, 0, err, sizeof err)) && strstr(err, "is not a directory"),
	      "open_private_dir: a file is not a directory");
	CHECK(!accepted(open_private_dir("relative/dir", me, 0, err, sizeof err)), "open_private_dir: a relative path is refused");
}

static void test_safe_dir(void)
{
	char err[1024];
	uid_t me = getuid();

	CHECK(accepted(open_safe_dir(at("open"), me, err, sizeof err)), "open_safe_dir: a 0755 directory of the user's is safe to pass");

	mkdir_mode(at("shared"), 0777);
	mkdir_mode(at("shared/in"), 0700);
	CHECK(!accepted(open_safe_dir(at("shared/in"), me, err, sizeof err)) && strstr(err, "someone other than root"),
	      "open_safe_dir: a world-writable directory on the way is refused");

	mkdir_mode(at("sticky"), 01777);
	mkdir_mode(at("sticky/in"), 0700);
	CHECK(accepted(open_safe_dir(at("sticky/in"), me, err, sizeof err)), "open_safe_dir: a sticky world-writable directory on the way is passed");

	CHECK(!accepted(open_safe_dir(at("private/../private"), me, err, sizeof err)) && strstr(err, "contains '..'"),
	      "open_safe_dir: '..' is refused");
	CHECK(!accepted(open_private_dir(at("private/.."), me, 0, err, sizeof err)), "open_private_dir: '..' as the last component is refused");

	char longpath[PATH_MAX + 64];
	memset(longpath, 'a', sizeof longpath - 1);
	longpath[0] = '/';
	longpath[sizeof longpath - 1] = '\0';
	char big[2 * PATH_MAX]; /* the message quotes the whole path */
	CHECK(!accepted(open_safe_dir(longpath, me, big, sizeof big)) && strstr(big, "is too long"),
	      "open_safe_dir: a path longer than PATH_MAX is refused, not truncated");
	CHECK(!accepted(open_private_dir(longpath, me, 1, big, sizeof big)) && strstr(big, "is too long"),
	      "open_private_dir: a path longer than PATH_MAX is refused, not truncated");
	CHECK(!accepted(open_owned_file(longpath, me, big, sizeof big)) && errno == EPERM && strstr(big, "is too long"),
	      "open_owned_file: a path longer than PATH_MAX is refused, not truncated");

	char small[8];
	CHECK(!accepted(open_safe_dir(at("private/../x"), me, small, sizeof small)) && strlen(small) == sizeof small - 1,
	      "open_safe_dir: a message longer than err is cut to fit, terminated");
}

static void test_owned_file(void)
{
	char err[1024];
	uid_t me = getuid();

	make_file(at("private/plan"), 0600);
	int fd = open_owned_file(at("private/plan"), me, err, sizeof err);
	char buf[4] = "";
	CHECK(fd >= 0 && read(fd, buf, sizeof buf) == 2 && buf[0] == 'x' && !(fcntl(fd, F_GETFL) & O_NONBLOCK),
	      "open_owned_file: a 0600 file of the user's is opened for reading, blocking again");
	if (fd >= 0)
		close(fd);

	make_file(at("open/plan"), 0644);
	CHECK(accepted(open_owned_file(at("open/plan"), me, err, sizeof err)), "open_owned_file: a 0644 file in a 0755 directory of the user's is accepted");

	make_file(at("private/writable"), 0620);
	CHECK(!accepted(open_owned_file(at("private/writable"), me, err, sizeof err)) && errno == EPERM,
	      "open_owned_file: a group-writable file is refused with EPERM");

	CHECK(!accepted(open_owned_file(at("private/plan"), OTHER_UID, err, sizeof err)) && errno == EPERM,
	      "open_owned_file: a file asked for another uid is refused with EPERM");

	if (link(at("private/plan"), at("private/second")) != 0)
		perror("link");
	CHECK(!accepted(open_owned_file(at("private/plan"), me, err, sizeof err)) && errno == EPERM && strstr(err, "2 names"),
	      "open_owned_file: a file with two hard links is refused");

	make_file(at("private/target"), 0600);
	if (symlink("target", at("private/symlink")) != 0)
		perror("symlink");
	CHECK(!accepted(open_owned_file(at("private/symlink"), me, err, sizeof err)) && errno == EPERM && strstr(err, "is a symbolic link"),
	      "open_owned_file: a symlink to a file of the user's is refused");

	if (mkfifo(at("private/fifo"), 0600) != 0)
		perror("mkfifo");
	alarm(10); /* a hang is a failure: SIGALRM ends the test */
	CHECK(!accepted(open_owned_file(at("private/fifo"), me, err, sizeof err)) && errno == EPERM,
	      "open_owned_file: a FIFO is refused without hanging");
	alarm(0);

	CHECK(!accepted(open_owned_file(at("private/none"), me, err, sizeof err)) && errno == ENOENT,
	      "open_owned_file: a missing file is ENOENT");
	CHECK(!accepted(open_owned_file(at("private"), me, err, sizeof err)) && errno == EPERM,
	      "open_owned_file: a directory is refused with EPERM");
}

static void test_format(void)
{
	char out[6];
	CHECK(format(out, sizeof out, "%s", "abcde") == 0 && strcmp(out, "abcde") == 0, "format: an exact fit is not truncation");
	CHECK(format(out, sizeof out, "%s", "abcdef") == -1, "format: one byte too many is truncation");
}

int main(void)
{
	umask(022);
	if (!mkdtemp(strcpy(base, "/tmp/berth-ctest-trusted.XXXXXX"))) {
		perror("mkdtemp");
		return 2;
	}
	test_private_dir();
	test_safe_dir();
	test_owned_file();
	test_format();
	char rm[sizeof base + 16];
	snprintf(rm, sizeof rm, "rm -rf '%s'", base);
	if (system(rm) != 0)
		fprintf(stderr, "could not remove %s\n", base);
	return checks_done("trusted");
}
