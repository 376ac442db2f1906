// Layer decompression off Node's main thread: gzip by ISA-L's inflate (several times zlib's
// speed) and zstd by libzstd, each step run on libuv's thread pool so that decompression,
// Node's tar parsing and tar2sqfs's compressors use every core at once. The digests of the
// stream as stored (the blob's) and as decompressed (the diff_id's) are computed there too, in
// the same pass, by OpenSSL's libcrypto: hashing 400 MB cost Node's main thread a quarter of a
// second in bench/convert, time the tar parser then waited for.
//
//   const d = new Decompressor('gzip' | 'zstd', inputAlgorithm | null, outputAlgorithm | null);
//   d.step(input | null, last, (err, out, more) => ...)
//   d.digests() -> [inputHex | null, outputHex | null], once the last step is done
//
// A step consumes the input given (and any left from before) until either it is used up
// (more = false: give the next chunk) or kOutput bytes came out (more = true: call again with
// null, once the output was taken, which is how back-pressure reaches a zip bomb). With `last`,
// the stream must end exactly where the input does: a cut stream, bytes after it that are not
// another gzip member or zstd frame, a bad checksum or a damaged block are each an error with
// the reason, never a shorter output.
#include <napi.h>

#include <cstdlib>
#include <cstring>
#include <mutex>
#include <sys/mman.h>
#include <string>
#include <vector>

#include <isa-l/igzip_lib.h>
#include <openssl/evp.h>
#include <zstd.h>
#include <zstd_errors.h>

namespace {

constexpr size_t kOutput = 2u << 20;

// Blocks of 2 MiB: with 1 MiB, twice the steps, each a round trip through Node's event loop and
// a write into tar2sqfs's pipe. With the next step started ahead (layer-stream.ts), they took
// berth's own pipeline (tar2sqfs left out) from 1.19 to 1.10 s on the bench image.
//
// Output blocks are reused once Node lets go of them: each fresh block is a fresh mapping, and
// faulting in hundreds of MB of new pages cost a third as much as inflating them. They are
// mapped here rather than taken from malloc, whose per-thread arenas (one for each of libuv's
// pool threads) kept what Node freed, and doubled the peak memory of a large conversion.
class BlockPool {
 public:
  static uint8_t *Take() {
    {
      std::lock_guard<std::mutex> hold(mu_);
      if (!free_.empty()) {
        uint8_t *p = free_.back();
        free_.pop_back();
        return p;
      }
    }
    void *p = mmap(nullptr, kOutput, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    return p == MAP_FAILED ? nullptr : static_cast<uint8_t *>(p);
  }

  static void Give(uint8_t *p) {
    if (!p) return;
    {
      std::lock_guard<std::mutex> hold(mu_);
      if (free_.size() < kKept) {
        free_.push_back(p);
        return;
      }
    }
    munmap(p, kOutput);
  }

 private:
  // At most 64 MiB held back for reuse. A block comes back only when V8 collects the last
  // Buffer over it, so a few dozen MiB are out at a peak (numpy bench image): keeping only 16 MiB
  // made a third of the blocks fresh mappings, whose page faults cost inflate ~0.25 s on the
  // 640 MB image. The pool never holds more than were out at once, so the peak RSS stays.
  static constexpr size_t kKept = (64u << 20) / kOutput;
  static inline std::mutex mu_;
  static inline std::vector<uint8_t *> free_;
};

// One running digest ('sha256' or 'sha512', the algorithms berth verifies: src/image/digest.ts).
class Hasher {
 public:
  bool Start(const std::string &algorithm) {
    const EVP_MD *md = algorithm == "sha256" ? EVP_sha256() : algorithm == "sha512" ? EVP_sha512() : nullptr;
    ctx_ = md ? EVP_MD_CTX_new() : nullptr;
    return ctx_ && EVP_DigestInit_ex(ctx_, md, nullptr) == 1;
  }
  ~Hasher() { EVP_MD_CTX_free(ctx_); }
  bool active() const { return ctx_ != nullptr; }
  void Update(const uint8_t *p, size_t n) {
    if (ctx_ && n > 0 && EVP_DigestUpdate(ctx_, p, n) != 1) failed_ = true;
  }
  // The hex digest; the hash is finished by the first call.
  std::string Hex() {
    if (ctx_ && hex_.empty() && !failed_) {
      unsigned char md[EVP_MAX_MD_SIZE];
      unsigned int len = 0;
      if (EVP_DigestFinal_ex(ctx_, md, &len) != 1) return "";
      static const char digits[] = "0123456789abcdef";
      for (unsigned int i = 0; i < len; i++) hex_ += digits[md[i] >> 4], hex_ += digits[md[i] & 15];
    }
    return hex_;
  }

 private:
  EVP_MD_CTX *ctx_ = nullptr;
  bool failed_ = false;
  std::string hex_;
};

class Decompressor : public Napi::ObjectWrap<Decompressor> {
 public:
  static void Init(Napi::Env env, Napi::Object exports) {
    exports.Set("Decompressor", DefineClass(env, "Decompressor", {InstanceMethod("step", &Decompressor::Step), InstanceMethod("digests", &Decompressor::Digests)}));
  }

  explicit Decompressor(const Napi::CallbackInfo &info) : Napi::ObjectWrap<Decompressor>(info) {
    std::string kind = info.Length() > 0 && info[0].IsString() ? info[0].As<Napi::String>().Utf8Value() : "";
    if (kind == "gzip") {
      gzip_ = true;
      StartMember();
    } else if (kind == "zstd") {
      zstd_ = ZSTD_createDStream();
      if (!zstd_) throw Napi::Error::New(info.Env(), "out of memory");
    } else {
      throw Napi::TypeError::New(info.Env(), "Decompressor('gzip' | 'zstd', inputAlgorithm, outputAlgorithm)");
    }
    for (size_t i = 1; i <= 2; i++) {
      if (info.Length() <= i || info[i].IsNull() || info[i].IsUndefined()) continue;
      std::string algorithm = info[i].IsString() ? info[i].As<Napi::String>().Utf8Value() : "";
      if (!(i == 1 ? in_hash_ : out_hash_).Start(algorithm)) throw Napi::TypeError::New(info.Env(), "unknown digest algorithm: " + algorithm);
    }
  }

  ~Decompressor() override {
    if (zstd_) ZSTD_freeDStream(zstd_);
  }

  // Runs on a pool thread; one step at a time per object (the caller waits for each).
  // Returns the bytes produced into out; sets error_ and more_.
  size_t Run(uint8_t *out, size_t cap) {
    more_ = false;
    in_hash_.Update(in_ + in_len_ - unhashed_, unhashed_);  // the input just given
    unhashed_ = 0;
    size_t n = gzip_ ? RunGzip(out, cap) : RunZstd(out, cap);
    out_hash_.Update(out, n);
    return n;
  }

  // The input being read: the caller's Buffer itself (held by input_ref_ until it is used up;
  // a stream's writer does not touch a chunk it wrote, and the JS side takes the next one only
  // then), or, where a few bytes of the last one were left over, those and it joined in kept_.
  // Copying every input into one vector cost the main thread a memcpy of the whole blob.
  const uint8_t *in_ = nullptr;
  size_t in_len_ = 0;
  std::vector<uint8_t> kept_;
  Napi::Reference<Napi::Buffer<uint8_t>> input_ref_;
  size_t unhashed_ = 0;  // the last bytes of the input, given since the last step
  size_t pos_ = 0;

  // On the main thread, once a step used the input up: Node may have its Buffer back.
  void DropInput() {
    if (pos_ < in_len_) return;
    input_ref_.Reset();
    kept_.clear();
    in_ = nullptr;
    in_len_ = pos_ = 0;
  }
  bool last_ = false;
  bool busy_ = false;
  bool more_ = false;
  std::string error_;

 private:
  Napi::Value Step(const Napi::CallbackInfo &info);
  Napi::Value Digests(const Napi::CallbackInfo &info);

  void StartMember() {
    isal_inflate_init(&gz_);
    gz_.crc_flag = ISAL_GZIP;  // the header parsed, the CRC-32 and length checked
    in_member_ = false;
  }

  size_t RunGzip(uint8_t *out, size_t cap) {
    size_t produced = 0;
    for (;;) {
      size_t left = in_len_ - pos_;
      if (!in_member_) {
        // Between members: nothing more, or the start of another member (as gzip -d reads them).
        if (left == 0) {
          if (last_ && !started_) error_ = "unexpected end of file (the stream is empty)";
          return produced;
        }
        // Zero bytes after the last member are padding (tape blocks), as gzip -d and zlib read them.
        while (started_ && pos_ < in_len_ && in_[pos_] == 0) pos_++, padded_ = true;
        left = in_len_ - pos_;
        if (left == 0) return produced;
        if (padded_) {
          error_ = "trailing garbage after the end of the gzip stream";
          return produced;
        }
        if (left < 2 && !last_) {
          Keep();
          return produced;
        }
        if (left < 2 || in_[pos_] != 0x1f || in_[pos_ + 1] != 0x8b) {
          error_ = started_ ? "trailing garbage after the end of the gzip stream" : "incorrect header check (not a gzip stream)";
          return produced;
        }
        in_member_ = started_ = true;
      }
      const size_t before_in = pos_, before_out = produced;
      gz_.next_in = const_cast<uint8_t *>(in_ + pos_);
      gz_.avail_in = static_cast<uint32_t>(left);
      gz_.next_out = out + produced;
      gz_.avail_out = static_cast<uint32_t>(cap - produced);
      int rc = isal_inflate(&gz_);
      pos_ = static_cast<size_t>(gz_.next_in - in_);
      produced = static_cast<size_t>(gz_.next_out - out);
      if (rc != ISAL_DECOMP_OK) {
        error_ = GzipError(rc);
        return produced;
      }
      if (gz_.block_state == ISAL_BLOCK_FINISH) {
        StartMember();  // the checksum and length matched; another member may follow
        continue;
      }
      if (produced == cap) {
        more_ = true;
        return produced;
      }
      if (gz_.avail_in > 0) {
        // Stopped at a boundary with input left: go on, unless nothing moved (never loop idle).
        if (pos_ == before_in && produced == before_out) {
          error_ = "inflate made no progress";
          return produced;
        }
        continue;
      }
      // The input is used up (ISA-L keeps any partial symbol in its own state).
      if (last_) error_ = "unexpected end of file (the stream is cut short)";
      return produced;
    }
  }

  size_t RunZstd(uint8_t *out, size_t cap) {
    ZSTD_inBuffer in{in_, in_len_, pos_};
    ZSTD_outBuffer o{out, cap, 0};
    for (;;) {
      const size_t before_in = in.pos, before_out = o.pos;
      size_t rc = ZSTD_decompressStream(zstd_, &o, &in);
      if (ZSTD_isError(rc)) {
        error_ = ZSTD_getErrorName(rc);
        if (ZSTD_getErrorCode(rc) == ZSTD_error_prefix_unknown) error_ = started_ ? "trailing garbage after the end of the zstd stream" : "unknown format (not a zstd stream)";
        break;
      }
      if (in.pos > pos_) started_ = true;
      // A call that moved nothing (a frame ended exactly at the last step's full output) keeps
      // the verdict: zstd then answers with the size of the next frame's header it would like.
      if (in.pos != before_in || o.pos != before_out) frame_done_ = rc == 0;
      pos_ = in.pos;
      if (o.pos == cap) {
        more_ = true;
        break;
      }
      if (in.pos == in.size) {
        // Everything given was read and, with room left in the output, flushed.
        if (last_ && !frame_done_) error_ = "premature end (the stream is cut short)";
        if (last_ && !started_) error_ = "premature end (the stream is empty)";
        break;
      }
    }
    return o.pos;
  }

  // Keeps the unread tail for the next step.
  void Keep() {
    std::vector<uint8_t> tail(in_ + pos_, in_ + in_len_);
    kept_.swap(tail);
    in_ = kept_.data();
    in_len_ = kept_.size();
    pos_ = 0;
  }

  static std::string GzipError(int rc) {
    switch (rc) {
      case ISAL_INVALID_BLOCK: return "invalid deflate block";
      case ISAL_INVALID_SYMBOL: return "invalid deflate code";
      case ISAL_INVALID_LOOKBACK: return "invalid distance too far back";
      case ISAL_INVALID_WRAPPER: return "incorrect header check";
      case ISAL_UNSUPPORTED_METHOD: return "unknown compression method";
      case ISAL_INCORRECT_CHECKSUM: return "incorrect data check (CRC-32 or length)";
      case ISAL_NEED_DICT: return "a preset dictionary is needed";
      default: return "inflate error " + std::to_string(rc);
    }
  }

  bool gzip_ = false;
  inflate_state gz_{};
  bool in_member_ = false;
  bool started_ = false;
  bool padded_ = false;
  ZSTD_DStream *zstd_ = nullptr;
  bool frame_done_ = false;
  Hasher in_hash_, out_hash_;
};

class StepWorker : public Napi::AsyncWorker {
 public:
  StepWorker(Napi::Function cb, Decompressor *d, Napi::Object self)
      : Napi::AsyncWorker(cb), d_(d) {
    self_ = Napi::Persistent(self);  // the object lives until the step is done
  }

  ~StepWorker() override { BlockPool::Give(out_); }

  void Execute() override {
    out_ = BlockPool::Take();
    if (!out_) {
      d_->error_ = "out of memory";
      return;
    }
    len_ = d_->Run(out_, kOutput);
  }

  void OnOK() override {
    Napi::Env env = Env();
    d_->busy_ = false;
    d_->DropInput();
    if (!d_->error_.empty()) {
      Callback().Call({Napi::Error::New(env, d_->error_).Value()});
      return;
    }
    Napi::Value out = env.Null();
    if (len_ > 0) {
      // Handed to Node without a copy; the block goes back to the pool when Node frees it.
      out = Napi::Buffer<uint8_t>::New(env, out_, len_, [](Napi::Env, uint8_t *p) { BlockPool::Give(p); });
      out_ = nullptr;
    }
    Callback().Call({env.Null(), out, Napi::Boolean::New(env, d_->more_)});
  }

 private:
  Decompressor *d_;
  Napi::ObjectReference self_;
  uint8_t *out_ = nullptr;
  size_t len_ = 0;
};

Napi::Value Decompressor::Step(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  if (info.Length() < 3 || !info[2].IsFunction() || !(info[0].IsNull() || info[0].IsBuffer())) {
    throw Napi::TypeError::New(env, "step(input: Buffer | null, last: boolean, callback)");
  }
  if (busy_) throw Napi::Error::New(env, "a step is already running");
  if (!error_.empty()) throw Napi::Error::New(env, error_);
  if (info[0].IsBuffer()) {
    auto buf = info[0].As<Napi::Buffer<uint8_t>>();
    if (pos_ < in_len_ && more_) throw Napi::Error::New(env, "input given before the last step's output was all taken");
    if (pos_ < in_len_) {
      // The few bytes Keep() left (a gzip member's first two split between chunks) go first.
      std::vector<uint8_t> joined(in_ + pos_, in_ + in_len_);
      joined.insert(joined.end(), buf.Data(), buf.Data() + buf.Length());
      kept_.swap(joined);
      input_ref_.Reset();
      in_ = kept_.data();
      in_len_ = kept_.size();
    } else {
      input_ref_ = Napi::Persistent(buf);
      in_ = buf.Data();
      in_len_ = buf.Length();
    }
    pos_ = 0;
    unhashed_ = buf.Length();
  }
  last_ = info[1].ToBoolean();
  busy_ = true;
  (new StepWorker(info[2].As<Napi::Function>(), this, info.This().As<Napi::Object>()))->Queue();
  return env.Undefined();
}

// Valid once the last step is done (after an error too: which digest disagrees may be the
// better reason); the input's digest counts every byte given, the output's every byte given out.
Napi::Value Decompressor::Digests(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  if (busy_ || !last_) throw Napi::Error::New(env, "digests() before the last step is done");
  if (unhashed_ > 0) in_hash_.Update(in_ + in_len_ - unhashed_, unhashed_), unhashed_ = 0;
  auto hex = [&](Hasher &h) -> Napi::Value {
    if (!h.active()) return env.Null();
    std::string s = h.Hex();
    if (s.empty()) throw Napi::Error::New(env, "the digest could not be computed");
    return Napi::String::New(env, s);
  };
  Napi::Array out = Napi::Array::New(env, 2);
  out.Set(0u, hex(in_hash_));
  out.Set(1u, hex(out_hash_));
  return out;
}

}  // namespace

void InitDecompressor(Napi::Env env, Napi::Object exports) { Decompressor::Init(env, exports); }
