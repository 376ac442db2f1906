// Names an unnamed (O_TMPFILE) inode: linkat(2) of /proc/self/fd/FD with AT_SYMLINK_FOLLOW, the
// one way an unprivileged process can (AT_EMPTY_PATH needs CAP_DAC_READ_SEARCH). Node's fs.link
// cannot, and running GNU `ln -L` for it cost a fork of the whole Node process at the end of
// every conversion.
//
//   linkFd(fd, path)   throws an Error whose code is the errno's name (EEXIST, ENOSPC, ...)
#include <napi.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fcntl.h>
#include <string>
#include <unistd.h>

namespace {

const char *ErrnoName(int e) {
  switch (e) {
    case EEXIST: return "EEXIST";
    case ENOSPC: return "ENOSPC";
    case EDQUOT: return "EDQUOT";
    case EACCES: return "EACCES";
    case EPERM: return "EPERM";
    case ENOENT: return "ENOENT";
    case EXDEV: return "EXDEV";
    case EROFS: return "EROFS";
    case EMLINK: return "EMLINK";
    case EIO: return "EIO";
    default: return "EUNKNOWN";
  }
}

Napi::Value LinkFd(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  if (info.Length() < 2 || !info[0].IsNumber() || !info[1].IsString()) throw Napi::TypeError::New(env, "linkFd(fd, path)");
  char proc[64];
  snprintf(proc, sizeof proc, "/proc/self/fd/%d", info[0].As<Napi::Number>().Int32Value());
  std::string target = info[1].As<Napi::String>().Utf8Value();
  if (linkat(AT_FDCWD, proc, AT_FDCWD, target.c_str(), AT_SYMLINK_FOLLOW) != 0) {
    int e = errno;
    Napi::Error err = Napi::Error::New(env, std::string(strerror(e)) + ", link '" + target + "'");
    err.Set("code", Napi::String::New(env, ErrnoName(e)));
    throw err;
  }
  return env.Undefined();
}

}  // namespace

void InitLink(Napi::Env env, Napi::Object exports) { exports.Set("linkFd", Napi::Function::New(env, LinkFd, "linkFd")); }
