// berth.node: what Node cannot do well itself, observed from the Node process and never
// changing it (namespaces belong to berth-helper; see helper/main.c). One thing so far:
// reading an image's files without mounting it, through libsquashfuse, so that MPI and GPU
// binding can check the image's C library and MPI before any container starts.
//
//   const img = new SquashfsImage(path);   // throws if the file is not a squashfs image
//   img.lstat('/etc/ld.so.cache')          // {type, size, target?} | null; symlinks not followed
//   img.read('/lib/x86_64-linux-gnu/libc.so.6')  // Buffer of a regular file
//   img.close()
#include <napi.h>

#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <string>
#include <sys/stat.h>
#include <unistd.h>

extern "C" {
#include <squashfuse/squashfuse.h>
}

namespace {

const char *TypeName(sqfs_mode_t mode) {
  switch (mode & S_IFMT) {
    case S_IFREG: return "file";
    case S_IFDIR: return "dir";
    case S_IFLNK: return "symlink";
    case S_IFCHR: return "char";
    case S_IFBLK: return "block";
    case S_IFIFO: return "fifo";
    default: return "socket";
  }
}

class SquashfsImage : public Napi::ObjectWrap<SquashfsImage> {
 public:
  static Napi::Object Init(Napi::Env env, Napi::Object exports) {
    Napi::Function ctor = DefineClass(env, "SquashfsImage", {
      InstanceMethod("lstat", &SquashfsImage::Lstat),
      InstanceMethod("read", &SquashfsImage::Read),
      InstanceMethod("close", &SquashfsImage::Close),
    });
    exports.Set("SquashfsImage", ctor);
    return exports;
  }

  explicit SquashfsImage(const Napi::CallbackInfo &info) : Napi::ObjectWrap<SquashfsImage>(info) {
    Napi::Env env = info.Env();
    if (info.Length() != 1 || !info[0].IsString()) {
      Napi::TypeError::New(env, "SquashfsImage(path)").ThrowAsJavaScriptException();
      return;
    }
    path_ = info[0].As<Napi::String>().Utf8Value();
    fd_ = open(path_.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd_ < 0) {
      Napi::Error::New(env, path_ + ": " + strerror(errno)).ThrowAsJavaScriptException();
      return;
    }
    if (sqfs_init(&fs_, fd_, 0) != SQFS_OK) {
      close(fd_);
      fd_ = -1;
      Napi::Error::New(env, path_ + ": not a squashfs image libsquashfuse can read").ThrowAsJavaScriptException();
      return;
    }
  }

  ~SquashfsImage() override { Release(); }

 private:
  void Release() {
    if (fd_ >= 0) {
      sqfs_destroy(&fs_);
      close(fd_);
      fd_ = -1;
    }
  }

  // Looks a path up without following symlinks; false when it does not exist.
  bool Lookup(const Napi::CallbackInfo &info, sqfs_inode *inode) {
    Napi::Env env = info.Env();
    if (fd_ < 0) throw Napi::Error::New(env, "SquashfsImage is closed");
    if (info.Length() < 1 || !info[0].IsString()) throw Napi::TypeError::New(env, "expected a path");
    std::string p = info[0].As<Napi::String>().Utf8Value();
    bool found = false;
    if (sqfs_inode_get(&fs_, inode, sqfs_inode_root(&fs_)) != SQFS_OK ||
        sqfs_lookup_path(&fs_, inode, p.c_str(), &found) != SQFS_OK) {
      throw Napi::Error::New(env, path_ + ": cannot read " + p + " (damaged image?)");
    }
    return found;
  }

  Napi::Value Lstat(const Napi::CallbackInfo &info) {
    Napi::Env env = info.Env();
    sqfs_inode inode;
    if (!Lookup(info, &inode)) return env.Null();
    Napi::Object out = Napi::Object::New(env);
    out.Set("type", TypeName(inode.base.mode));
    out.Set("mode", static_cast<double>(inode.base.mode & 07777));
    out.Set("size", S_ISREG(inode.base.mode) ? static_cast<double>(inode.xtra.reg.file_size) : 0.0);
    if (S_ISLNK(inode.base.mode)) {
      size_t size = 0;
      if (sqfs_readlink(&fs_, &inode, nullptr, &size) != SQFS_OK) throw Napi::Error::New(env, "cannot read a symlink");
      std::string target(size + 1, '\0');
      size += 1;
      if (sqfs_readlink(&fs_, &inode, &target[0], &size) != SQFS_OK) throw Napi::Error::New(env, "cannot read a symlink");
      target.resize(strlen(target.c_str()));
      out.Set("target", target);
    }
    return out;
  }

  Napi::Value Read(const Napi::CallbackInfo &info) {
    Napi::Env env = info.Env();
    sqfs_inode inode;
    std::string p = info[0].IsString() ? info[0].As<Napi::String>().Utf8Value() : "";
    if (!Lookup(info, &inode)) throw Napi::Error::New(env, path_ + ": no " + p + " in the image");
    if (!S_ISREG(inode.base.mode)) throw Napi::Error::New(env, path_ + ": " + p + " is not a regular file");
    sqfs_off_t size = static_cast<sqfs_off_t>(inode.xtra.reg.file_size);
    Napi::Buffer<char> buf = Napi::Buffer<char>::New(env, static_cast<size_t>(size));
    sqfs_off_t got = size;
    if (size > 0 && (sqfs_read_range(&fs_, &inode, 0, &got, buf.Data()) != SQFS_OK || got != size)) {
      throw Napi::Error::New(env, path_ + ": cannot read " + p + " (damaged image?)");
    }
    return buf;
  }

  Napi::Value Close(const Napi::CallbackInfo &info) {
    Release();
    return info.Env().Undefined();
  }

  std::string path_;
  int fd_ = -1;
  sqfs fs_{};
};

Napi::Object InitAll(Napi::Env env, Napi::Object exports) { return SquashfsImage::Init(env, exports); }

}  // namespace

NODE_API_MODULE(berth, InitAll)
