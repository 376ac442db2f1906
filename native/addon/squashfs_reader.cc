// berth.node: what Node cannot do well itself, observed from the Node process and never
// changing it (namespaces belong to berth-helper; see helper/main.c). Two things: layer
// decompression on the thread pool (decompress.cc), and here, reading an image's files without mounting it, so that opening an image (its metadata, an
// Apptainer image's environment scripts) and MPI and GPU binding (the image's C library and
// MPI) need no container. Images may be hostile: every read goes through common/squashfs.c,
// the helper's bounds-checked reader, and what cannot be read is an exception, never a crash.
//
//   const img = new SquashfsImage(path, offset);  // offset: where the squashfs starts (a SIF's partition)
//   img.lstat('/etc/ld.so.cache')          // {type, mode, size, target?} | null; symlinks not followed
//   img.read('/lib/x86_64-linux-gnu/libc.so.6')  // Buffer of a regular file
//   img.list('/.singularity.d/env')        // the names in a directory
//   img.close()
#include <napi.h>

#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <string>
#include <sys/stat.h>
#include <unistd.h>

extern "C" {
#include "../common/squashfs.h"
}

namespace {

// Reading more than this of one file is refused: nothing berth reads without a mount is larger.
constexpr uint64_t kMaxRead = 1ull << 30;

const char *TypeName(mode_t mode) {
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
      InstanceMethod("list", &SquashfsImage::List),
      InstanceMethod("close", &SquashfsImage::Close),
    });
    exports.Set("SquashfsImage", ctor);
    return exports;
  }

  explicit SquashfsImage(const Napi::CallbackInfo &info) : Napi::ObjectWrap<SquashfsImage>(info) {
    Napi::Env env = info.Env();
    if (info.Length() < 1 || !info[0].IsString() || (info.Length() > 1 && !info[1].IsNumber())) {
      Napi::TypeError::New(env, "SquashfsImage(path, offset?)").ThrowAsJavaScriptException();
      return;
    }
    path_ = info[0].As<Napi::String>().Utf8Value();
    double offset = info.Length() > 1 ? info[1].As<Napi::Number>().DoubleValue() : 0;
    fd_ = open(path_.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd_ < 0) {
      Napi::Error::New(env, path_ + ": " + strerror(errno)).ThrowAsJavaScriptException();
      return;
    }
    struct stat st;
    const char *bad = nullptr;
    if (offset < 0 || fstat(fd_, &st) != 0 || offset > static_cast<double>(st.st_size)) {
      bad = "its squashfs lies outside the file";
    } else if (sqfs_init(&fs_, fd_, static_cast<size_t>(offset)) != SQFS_OK) {
      bad = "not a squashfs image berth can read";
    } else if ((bad = sq_bad_super(&fs_, st.st_size - static_cast<off_t>(offset))) != nullptr) {
      sqfs_destroy(&fs_);
    }
    if (bad) {
      close(fd_);
      fd_ = -1;
      Napi::Error::New(env, path_ + ": " + bad).ThrowAsJavaScriptException();
    }
  }

  ~SquashfsImage() override { Release(); }

 private:
  Napi::Error Damaged(Napi::Env env, const std::string &what, int r) {
    return Napi::Error::New(env, path_ + ": cannot read " + what + " (" + strerror(-r) + "; a damaged image?)");
  }

  // Looks an absolute path up without following symlinks; false when it does not exist.
  bool Lookup(const Napi::CallbackInfo &info, sqfs_inode *inode, std::string *p) {
    Napi::Env env = info.Env();
    if (fd_ < 0) throw Napi::Error::New(env, "SquashfsImage is closed");
    if (info.Length() < 1 || !info[0].IsString()) throw Napi::TypeError::New(env, "expected a path");
    *p = info[0].As<Napi::String>().Utf8Value();
    int r = sq_inode(&fs_, inode, sqfs_inode_root(&fs_));
    if (r < 0) throw Damaged(env, "its root directory", r);
    size_t start = 0;
    while (start < p->size()) {
      size_t end = p->find('/', start);
      if (end == std::string::npos) end = p->size();
      std::string name = p->substr(start, end - start);
      start = end + 1;
      if (name.empty() || name == ".") continue;
      if (!S_ISDIR(inode->base.mode)) return false;
      struct sq_entry e;
      r = sq_lookup(&fs_, inode, name.c_str(), &e);
      if (r == 0 || r == -ENOENT) return false;
      if (r < 0 || (r = sq_inode(&fs_, inode, e.inode)) < 0) throw Damaged(env, *p, r);
    }
    return true;
  }

  Napi::Value Lstat(const Napi::CallbackInfo &info) {
    Napi::Env env = info.Env();
    sqfs_inode inode;
    std::string p;
    if (!Lookup(info, &inode, &p)) return env.Null();
    Napi::Object out = Napi::Object::New(env);
    out.Set("type", TypeName(inode.base.mode));
    out.Set("mode", static_cast<double>(inode.base.mode & 07777));
    out.Set("size", S_ISREG(inode.base.mode) ? static_cast<double>(inode.xtra.reg.file_size) : 0.0);
    if (S_ISLNK(inode.base.mode)) {
      char target[PATH_MAX];
      int r = sq_readlink(&fs_, &inode, target, sizeof target);
      if (r < 0) throw Damaged(env, p, r);
      out.Set("target", std::string(target));
    }
    return out;
  }

  Napi::Value Read(const Napi::CallbackInfo &info) {
    Napi::Env env = info.Env();
    sqfs_inode inode;
    std::string p;
    if (!Lookup(info, &inode, &p)) throw Napi::Error::New(env, path_ + ": no " + p + " in the image");
    if (!S_ISREG(inode.base.mode)) throw Napi::Error::New(env, path_ + ": " + p + " is not a regular file");
    uint64_t size = inode.xtra.reg.file_size;
    if (size > kMaxRead) throw Napi::Error::New(env, path_ + ": " + p + " is too large to read without mounting the image");
    Napi::Buffer<char> buf = Napi::Buffer<char>::New(env, static_cast<size_t>(size));
    size_t got = 0;
    int r = size > 0 ? sq_read(&fs_, &inode, 0, static_cast<size_t>(size), buf.Data(), &got) : 0;
    if (r < 0 || got != size) throw Damaged(env, p, r < 0 ? r : -EIO);
    return buf;
  }

  Napi::Value List(const Napi::CallbackInfo &info) {
    Napi::Env env = info.Env();
    sqfs_inode inode;
    std::string p;
    if (!Lookup(info, &inode, &p)) return env.Null();
    sqfs_dir dir;
    int r = sq_dir_open(&fs_, &inode, &dir);
    if (r == -ENOTDIR) return env.Null();
    if (r < 0) throw Damaged(env, p, r);
    Napi::Array names = Napi::Array::New(env);
    struct sq_entry e;
    uint32_t n = 0;
    while ((r = sq_dir_next(&fs_, &dir, &e)) > 0)
      if (e.valid) names.Set(n++, std::string(e.name, e.len));
    if (r < 0) throw Damaged(env, p, r);
    return names;
  }

  Napi::Value Close(const Napi::CallbackInfo &info) {
    Release();
    return info.Env().Undefined();
  }

  void Release() {
    if (fd_ >= 0) {
      sqfs_destroy(&fs_);
      close(fd_);
      fd_ = -1;
    }
  }

  std::string path_;
  int fd_ = -1;
  sqfs fs_{};
};

}  // namespace

void InitDecompressor(Napi::Env env, Napi::Object exports);  // decompress.cc
void InitPipe(Napi::Env env, Napi::Object exports);          // pipe.cc
void InitFiles(Napi::Env env, Napi::Object exports);         // files.cc

static Napi::Object InitAll(Napi::Env env, Napi::Object exports) {
  InitDecompressor(env, exports);
  InitPipe(env, exports);
  InitFiles(env, exports);
  return SquashfsImage::Init(env, exports);
}

NODE_API_MODULE(berth, InitAll)
