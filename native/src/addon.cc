// N-API bindings. Every array argument is a typed array whose memory the kernels read or write
// in place: nothing is copied between JavaScript and C++.
#include <napi.h>

#include <string>

#if defined(__GLIBC__)
#include <malloc.h>
#endif

#if !defined(_WIN32)
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#endif

#include "kernels.h"
#include "ops.h"

namespace {

using tl::Weight;

template <class T>
T* data_of(const Napi::Value& v, const char* what, size_t min_bytes) {
  if (!v.IsTypedArray()) throw Napi::TypeError::New(v.Env(), std::string(what) + " must be a typed array");
  auto a = v.As<Napi::TypedArray>();
  if (a.ByteLength() < min_bytes) {
    throw Napi::RangeError::New(
        v.Env(), std::string(what) + " is too small: " + std::to_string(a.ByteLength()) + " bytes, need " + std::to_string(min_bytes));
  }
  return reinterpret_cast<T*>(static_cast<uint8_t*>(a.ArrayBuffer().Data()) + a.ByteOffset());
}

int64_t int_arg(const Napi::CallbackInfo& info, size_t i, const char* what) {
  if (!info[i].IsNumber()) throw Napi::TypeError::New(info.Env(), std::string(what) + " must be a number");
  const int64_t v = info[i].As<Napi::Number>().Int64Value();
  if (v < 0) throw Napi::RangeError::New(info.Env(), std::string(what) + " must be >= 0");
  return v;
}

// weight: { type, data, rows, cols }
Weight weight_arg(const Napi::Value& v) {
  Napi::Env env = v.Env();
  if (!v.IsObject()) throw Napi::TypeError::New(env, "weight must be an object");
  auto o = v.As<Napi::Object>();
  Weight w{};
  w.type = o.Get("type").As<Napi::Number>().Int32Value();
  w.rows = o.Get("rows").As<Napi::Number>().Int64Value();
  w.cols = o.Get("cols").As<Napi::Number>().Int64Value();
  const int64_t row_bytes = tl::weight_row_bytes(w.type, w.cols);
  if (row_bytes < 0) throw Napi::TypeError::New(env, "unknown weight type " + std::to_string(w.type));
  if (tl::is_int8_type(w.type) && w.cols % tl::kBlock != 0) {
    throw Napi::RangeError::New(env, "quantized weights need a column count that is a multiple of 32");
  }
  if (tl::is_kquant(w.type) && w.cols % tl::kQK != 0) {
    throw Napi::RangeError::New(env, "k-quant weights need a column count that is a multiple of 256");
  }
  w.data = data_of<const uint8_t>(o.Get("data"), "weight data", static_cast<size_t>(row_bytes * w.rows));
  if (tl::is_affine(w.type)) {
    w.group_size = o.Get("groupSize").As<Napi::Number>().Int64Value();
    w.scale_type = o.Get("scaleType").As<Napi::Number>().Int32Value();
    if (w.group_size != 32 && w.group_size != 64 && w.group_size != 128)
      throw Napi::RangeError::New(env, "affine group size must be 32, 64 or 128");
    if (w.cols % w.group_size != 0) throw Napi::RangeError::New(env, "affine weights need whole groups per row");
    if (w.scale_type < tl::S_F32 || w.scale_type > tl::S_BF16) throw Napi::TypeError::New(env, "unknown affine scale type");
    const size_t param_bytes = static_cast<size_t>(w.rows * (w.cols / w.group_size) * (w.scale_type == tl::S_F32 ? 4 : 2));
    w.scales = data_of<const uint8_t>(o.Get("scales"), "weight scales", param_bytes);
    w.biases = data_of<const uint8_t>(o.Get("biases"), "weight biases", param_bytes);
  }
  return w;
}

// matmul(out, x, M, weight, bias | null)
Napi::Value Matmul(const Napi::CallbackInfo& info) {
  const Weight w = weight_arg(info[3]);
  const int64_t M = int_arg(info, 2, "M");
  float* out = data_of<float>(info[0], "out", M * w.rows * 4);
  const float* x = data_of<const float>(info[1], "x", M * w.cols * 4);
  const float* bias = info[4].IsNull() || info[4].IsUndefined() ? nullptr : data_of<const float>(info[4], "bias", w.rows * 4);
  tl::matmul(out, x, M, w, bias);
  return info.Env().Undefined();
}

// matmulMany(x, M, outs[], weights[], biases[] (entries may be null))
Napi::Value MatmulMany(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const int64_t M = int_arg(info, 1, "M");
  if (!info[2].IsArray() || !info[3].IsArray() || !info[4].IsArray())
    throw Napi::TypeError::New(env, "outs, weights and biases must be arrays");
  const auto outs = info[2].As<Napi::Array>(), weights = info[3].As<Napi::Array>(), biases = info[4].As<Napi::Array>();
  const uint32_t n = weights.Length();
  if (n == 0 || n > tl::kMaxMatmuls || outs.Length() != n || biases.Length() != n) {
    throw Napi::RangeError::New(env, "matmulMany takes 1 to " + std::to_string(tl::kMaxMatmuls) + " weights, with as many outs and biases");
  }
  Weight w[tl::kMaxMatmuls];
  tl::MatmulOut o[tl::kMaxMatmuls];
  for (uint32_t i = 0; i < n; i++) {
    w[i] = weight_arg(weights.Get(i));
    if (w[i].cols != w[0].cols) throw Napi::RangeError::New(env, "matmulMany needs weights with the same column count");
    const Napi::Value b = biases.Get(i);
    o[i] = {&w[i], data_of<float>(outs.Get(i), "out", M * w[i].rows * 4),
            b.IsNull() || b.IsUndefined() ? nullptr : data_of<const float>(b, "bias", w[i].rows * 4)};
  }
  tl::matmul_many(data_of<const float>(info[0], "x", M * w[0].cols * 4), M, o, static_cast<int>(n));
  return env.Undefined();
}

// attention(out, q, k, v, L, S, H, Hkv, D, capacity, scale)
Napi::Value Attention(const Napi::CallbackInfo& info) {
  tl::AttentionArgs a{};
  a.L = int_arg(info, 4, "L");
  a.S = int_arg(info, 5, "S");
  a.H = int_arg(info, 6, "H");
  a.Hkv = int_arg(info, 7, "Hkv");
  a.D = int_arg(info, 8, "D");
  a.capacity = int_arg(info, 9, "capacity");
  a.scale = info[10].As<Napi::Number>().FloatValue();
  if (a.Hkv == 0 || a.H % a.Hkv != 0) throw Napi::RangeError::New(info.Env(), "H must be a multiple of Hkv");
  if (a.L > a.S || a.S > a.capacity || a.L == 0) throw Napi::RangeError::New(info.Env(), "need 0 < L <= S <= capacity");
  const size_t qbytes = a.L * a.H * a.D * 4;
  const size_t kvbytes = a.Hkv * a.capacity * a.D * 4;
  a.out = data_of<float>(info[0], "out", qbytes);
  a.q = data_of<const float>(info[1], "q", qbytes);
  a.k = data_of<const float>(info[2], "k", kvbytes);
  a.v = data_of<const float>(info[3], "v", kvbytes);
  tl::attention(a);
  return info.Env().Undefined();
}

// rmsNorm(out, x, weight, rows, n, eps)
Napi::Value RmsNorm(const Napi::CallbackInfo& info) {
  const int64_t rows = int_arg(info, 3, "rows");
  const int64_t n = int_arg(info, 4, "n");
  tl::rms_norm(data_of<float>(info[0], "out", rows * n * 4), data_of<const float>(info[1], "x", rows * n * 4),
               data_of<const float>(info[2], "weight", n * 4), rows, n, info[5].As<Napi::Number>().FloatValue());
  return info.Env().Undefined();
}

// rope(x, L, heads, D, offset, theta, traditional)
Napi::Value Rope(const Napi::CallbackInfo& info) {
  const int64_t L = int_arg(info, 1, "L");
  const int64_t heads = int_arg(info, 2, "heads");
  const int64_t D = int_arg(info, 3, "D");
  if (D % 2 != 0) throw Napi::RangeError::New(info.Env(), "RoPE needs an even head dim");
  tl::rope(data_of<float>(info[0], "x", L * heads * D * 4), L, heads, D, int_arg(info, 4, "offset"),
           info[5].As<Napi::Number>().DoubleValue(), info[6].ToBoolean().Value());
  return info.Env().Undefined();
}

// swiglu(out, x, M, gate, gateBias | null, up, upBias | null)
Napi::Value Swiglu(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const int64_t M = int_arg(info, 2, "M");
  const Weight gate = weight_arg(info[3]), up = weight_arg(info[5]);
  if (gate.rows != up.rows || gate.cols != up.cols) throw Napi::RangeError::New(env, "swiglu needs gate and up weights of the same shape");
  auto bias_of = [&](size_t i, const char* what) {
    return info[i].IsNull() || info[i].IsUndefined() ? nullptr : data_of<const float>(info[i], what, gate.rows * 4);
  };
  const tl::MatmulOut g{&gate, nullptr, bias_of(4, "gate bias")}, u{&up, nullptr, bias_of(6, "up bias")};
  tl::swiglu(data_of<float>(info[0], "out", M * gate.rows * 4), data_of<const float>(info[1], "x", M * gate.cols * 4), M, g, u);
  return env.Undefined();
}

// releaseScratch(buffers[]): the buffers' pages and the kernels' batch buffers back to the system
Napi::Value ReleaseScratch(const Napi::CallbackInfo& info) {
  if (!info[0].IsArray()) throw Napi::TypeError::New(info.Env(), "buffers must be an array of typed arrays");
  const auto buffers = info[0].As<Napi::Array>();
  for (uint32_t i = 0; i < buffers.Length(); i++) {
    const Napi::Value b = buffers.Get(i);
    if (!b.IsTypedArray()) throw Napi::TypeError::New(info.Env(), "buffers must be an array of typed arrays");
    tl::release_pages(data_of<uint8_t>(b, "buffer", 0), b.As<Napi::TypedArray>().ByteLength());
  }
  tl::release_batch_buffers();
  return info.Env().Undefined();
}

// readProbe(data): sums a Float32Array with every thread (a bandwidth probe)
Napi::Value ReadProbe(const Napi::CallbackInfo& info) {
  if (!info[0].IsTypedArray()) throw Napi::TypeError::New(info.Env(), "data must be a Float32Array");
  const size_t n = info[0].As<Napi::TypedArray>().ElementLength();
  return Napi::Number::New(info.Env(), tl::read_probe(data_of<const float>(info[0], "data", n * 4), static_cast<int64_t>(n)));
}

// regroupRows(type, data, rows, cols): GGUF blocks -> "rows" layout, in place
Napi::Value RegroupRows(const Napi::CallbackInfo& info) {
  const int type = static_cast<int>(int_arg(info, 0, "type"));
  if (type != tl::W_Q8_0 && type != tl::W_Q4_0) throw Napi::TypeError::New(info.Env(), "regroupRows takes Q8_0 or Q4_0 weights");
  const int64_t rows = int_arg(info, 2, "rows");
  const int64_t cols = int_arg(info, 3, "cols");
  if (cols % tl::kBlock != 0) throw Napi::RangeError::New(info.Env(), "cols must be a multiple of 32");
  tl::regroup_rows(type, data_of<uint8_t>(info[1], "data", rows * tl::weight_row_bytes(type, cols)), rows, cols);
  return info.Env().Undefined();
}

// mapFile(path, offset, length): bytes [offset, offset + length) of a file as an ArrayBuffer over
// a private (copy-on-write) memory map, so they are read from the page cache on first use rather
// than copied into fresh memory, and in-place rewrites (regroupRows) copy only the pages they
// touch. The map starts at the page that holds `offset`: the bytes begin byteLength − length
// into the buffer. null where the range cannot be mapped.
Napi::Value MapFile(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsString()) throw Napi::TypeError::New(env, "path must be a string");
  const int64_t offset = int_arg(info, 1, "offset");
  const int64_t length = int_arg(info, 2, "length");
#if defined(_WIN32)
  return env.Null();
#else
  const int64_t page = sysconf(_SC_PAGESIZE);
  const int64_t start = offset / page * page;
  const size_t bytes = static_cast<size_t>(offset - start + length);
  // JavaScript takes array buffers of up to 2^32 bytes from native memory.
  if (length == 0 || bytes > (size_t{1} << 32)) return env.Null();
  const int fd = open(info[0].As<Napi::String>().Utf8Value().c_str(), O_RDONLY);
  if (fd < 0) return env.Null();
  struct stat st {};
  void* data = MAP_FAILED;
  if (fstat(fd, &st) == 0 && offset + length <= st.st_size) data = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, start);
  close(fd);
  if (data == MAP_FAILED) return env.Null();
  madvise(data, bytes, MADV_WILLNEED);  // start reading ahead
  return Napi::ArrayBuffer::New(
      env, data, bytes,
      [](Napi::Env, void* p, size_t* n) {
        munmap(p, *n);
        delete n;
      },
      new size_t(bytes));
#endif
}

Napi::Value SetThreads(const Napi::CallbackInfo& info) {
  tl::set_threads(static_cast<int>(int_arg(info, 0, "threads")));
  return Napi::Number::New(info.Env(), tl::get_threads());
}

Napi::Value SetIsa(const Napi::CallbackInfo& info) {
  return Napi::Boolean::New(info.Env(), tl::set_isa(info[0].As<Napi::String>().Utf8Value().c_str()));
}

Napi::Value Info(const Napi::CallbackInfo& info) {
  auto o = Napi::Object::New(info.Env());
  o.Set("isa", tl::isa_name());
  o.Set("threads", tl::get_threads());
  return o;
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
#if defined(__GLIBC__)
  // glibc raises its mmap threshold to the size of each large block freed (up to 32 MiB); blocks
  // below it then come from the heap and stay resident after they are freed. Array buffers are
  // such blocks: a fixed threshold returns a freed load-time buffer or scratch to the system.
  mallopt(M_MMAP_THRESHOLD, 128 * 1024);
#endif
  exports.Set("matmul", Napi::Function::New(env, Matmul));
  exports.Set("attention", Napi::Function::New(env, Attention));
  exports.Set("rmsNorm", Napi::Function::New(env, RmsNorm));
  exports.Set("rope", Napi::Function::New(env, Rope));
  exports.Set("swiglu", Napi::Function::New(env, Swiglu));
  exports.Set("releaseScratch", Napi::Function::New(env, ReleaseScratch));
  exports.Set("regroupRows", Napi::Function::New(env, RegroupRows));
  exports.Set("readProbe", Napi::Function::New(env, ReadProbe));
  exports.Set("mapFile", Napi::Function::New(env, MapFile));
  exports.Set("setThreads", Napi::Function::New(env, SetThreads));
  exports.Set("setIsa", Napi::Function::New(env, SetIsa));
  exports.Set("matmulMany", Napi::Function::New(env, MatmulMany));
  exports.Set("info", Napi::Function::New(env, Info));
  return exports;
}

}  // namespace

NODE_API_MODULE(tiny_llm_native, Init)
