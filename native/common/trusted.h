/* Shared by berth-helper and the SPANK plugin: proving that a path is one no other user can
 * prepare (SECURITY.md). A shared node is hostile: /tmp, scratch and stage directories are
 * writable by everyone, so a directory or file is trusted for who owns it and who could have
 * changed it, never for its name. Nothing here exits: the plugin must report, not die. */
#ifndef BERTH_TRUSTED_H
#define BERTH_TRUSTED_H

#include <stddef.h>
#include <sys/types.h>

/* Opens DIR and proves it private to uid: every directory on the way from / is owned by root
 * or uid and writable by no one else unless sticky (so no one else can rename or replace what
 * follows it), a symlink on the way is followed only when root or uid owns it, and DIR itself
 * is a real directory (never a symlink) owned by uid with mode 0700. With create, a missing DIR
 * is made (0700) in its parent first. Once proven, paths below DIR are safe to use by name: no
 * one else can change anything on them. Returns an O_PATH fd, or -1 with a message in err. */
int open_private_dir(const char *path, uid_t uid, int create, char *err, size_t errsize);

/* Opens DIR, proven only safe to pass (the rule for the directories on the way above): an
 * O_PATH fd, or -1 with a message in err. */
int open_safe_dir(const char *path, uid_t uid, char *err, size_t errsize);

/* Opens the regular file PATH for reading, proven to be uid's: its directory chain as above
 * (the directory itself may be shared but then sticky), the file itself never a symlink, owned
 * by uid and writable by no one else. Returns a read-only fd, or -1 with a message in err and
 * errno ENOENT (nothing there) or EPERM (something there that is not to be trusted). */
int open_owned_file(const char *path, uid_t uid, char *err, size_t errsize);

/* snprintf that reports truncation: 0, or -1 when `out` was too small. */
int format(char *out, size_t size, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

#endif
