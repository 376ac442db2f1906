// The pipe that carries the merged tar to tar2sqfs. libuv makes a child's stdio "pipe" a
// socketpair, whose writes go through socket buffers of about 200 KiB (net.core.wmem_default),
// so every MiB berth writes costs several wake-ups of tar2sqfs and of berth; a pipe(7) sized to
// a MiB with F_SETPIPE_SZ (fcntl(2)) takes a whole batch of the merged tar (convert.ts) at once.
//
//   pipe(bytes) -> [readFd, writeFd, size]   both ends close-on-exec
//
// A pipe that cannot grow (bytes over /proc/sys/fs/pipe-max-size, or the user's pipe pages
// spent: pipe(7), EPERM) still works at its own size, which `size` tells.
#include <napi.h>

#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <string>
#include <unistd.h>

namespace {

Napi::Value Pipe(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsNumber()) throw Napi::TypeError::New(env, "pipe(bytes)");
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0) throw Napi::Error::New(env, std::string("pipe2: ") + strerror(errno));
  int size = fcntl(fds[1], F_GETPIPE_SZ);
  int grown = fcntl(fds[1], F_SETPIPE_SZ, info[0].As<Napi::Number>().Int32Value());
  if (grown > 0) size = grown;
  Napi::Array out = Napi::Array::New(env, 3);
  out.Set(0u, Napi::Number::New(env, fds[0]));
  out.Set(1u, Napi::Number::New(env, fds[1]));
  out.Set(2u, Napi::Number::New(env, size));
  return out;
}

}  // namespace

void InitPipe(Napi::Env env, Napi::Object exports) { exports.Set("pipe", Napi::Function::New(env, Pipe, "pipe")); }
