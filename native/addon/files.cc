// File calls Node lacks, for the conversion's output and the cache's locks.
//
//   linkFd(fd, path)   names the unnamed (O_TMPFILE) file open at fd: linkat(2) of
//                      /proc/self/fd/FD with AT_SYMLINK_FOLLOW, the one way an unprivileged
//                      process can (AT_EMPTY_PATH needs CAP_DAC_READ_SEARCH)
//   tryLock(path)      an exclusive flock(2) on path (created 0600 if need be, never through a
//                      symlink, only ever a regular file of the caller's, made 0600): its fd,
//                      close-on-exec, or null while another holds it. Closing the fd, or the
//                      process's death however it dies, releases it.
//
// Both throw an Error whose code is the errno's name (EEXIST, ENOSPC, EACCES, ...), or
// ELOCKFILE for a lock path that is not a regular file of the caller's. They stand in for GNU
// `ln -L` and flock(1), whose every call forked the whole Node process (and, for a lock, a
// shell and a cat beside it). The lock is the helper's and the plugin's own (common/plantext.c).
#include <napi.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fcntl.h>
#include <string>
#include <sys/stat.h>
#include <unistd.h>
#include <uv.h>

extern "C" {
#include "../common/plantext.h"
}

namespace {

[[noreturn]] void ThrowErrno(Napi::Env env, int e, const char *call, const std::string &path) {
  Napi::Error err = Napi::Error::New(env, std::string(strerror(e)) + ", " + call + " '" + path + "'");
  err.Set("code", Napi::String::New(env, uv_err_name(-e)));
  throw err;
}

[[noreturn]] void ThrowLockRefused(Napi::Env env, const std::string &why, const std::string &path) {
  Napi::Error err = Napi::Error::New(env, why + ", lock '" + path + "'");
  err.Set("code", Napi::String::New(env, "ELOCKFILE"));
  throw err;
}

Napi::Value LinkFd(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  if (info.Length() < 2 || !info[0].IsNumber() || !info[1].IsString()) throw Napi::TypeError::New(env, "linkFd(fd, path)");
  char proc[64];
  snprintf(proc, sizeof proc, "/proc/self/fd/%d", info[0].As<Napi::Number>().Int32Value());
  std::string target = info[1].As<Napi::String>().Utf8Value();
  if (linkat(AT_FDCWD, proc, AT_FDCWD, target.c_str(), AT_SYMLINK_FOLLOW) != 0) ThrowErrno(env, errno, "link", target);
  return env.Undefined();
}

Napi::Value TryLock(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsString()) throw Napi::TypeError::New(env, "tryLock(path)");
  std::string path = info[0].As<Napi::String>().Utf8Value();
  int fd = lock_file_owned(path.c_str(), geteuid(), 1);
  if (fd < 0) {
    int e = errno;
    struct stat st;
    if (e == EWOULDBLOCK) return env.Null();
    if (e == EINVAL) ThrowLockRefused(env, "not a regular file", path);
    // Another user's file (EPERM from the owner check, or EACCES from its mode) is told as that.
    if ((e == EPERM || e == EACCES) && lstat(path.c_str(), &st) == 0 && st.st_uid != geteuid())
      ThrowLockRefused(env, "owned by uid " + std::to_string(st.st_uid) + ", not by you", path);
    ThrowErrno(env, e, "lock", path);
  }
  // One of the user's own that others may open (flock(1) made them 0644, under umask 022) is
  // made the user's alone, as a new one is.
  struct stat st;
  if (fstat(fd, &st) == 0 && (st.st_mode & 077) && fchmod(fd, 0600) != 0) {
    int e = errno;
    close(fd);
    ThrowErrno(env, e, "chmod", path);
  }
  return Napi::Number::New(env, fd);
}

}  // namespace

void InitFiles(Napi::Env env, Napi::Object exports) {
  exports.Set("linkFd", Napi::Function::New(env, LinkFd, "linkFd"));
  exports.Set("tryLock", Napi::Function::New(env, TryLock, "tryLock"));
}
