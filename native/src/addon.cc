// N-API bindings. Every array argument is a typed array whose memory the kernels read or write
// in place: nothing is copied between JavaScript and C++. The module itself holds no state: the
// stateless functions are exported as they are, and createContext returns an object (a
// NativeContext) that owns threads and buffers and whose methods are the ops. The addon is
// context-aware, so it loads in worker threads too, each with its own contexts.
#include <napi.h>

#include <algorithm>
#include <initializer_list>
#include <iterator>
#include <limits>
#include <memory>
#include <new>
#include <string>

#if defined(__GLIBC__)
#include <malloc.h>
#endif

#include "context.h"
#include "kernels.h"
#include "matmul.h"
#include "memory.h"
#include "norm_rope.h"
#include "paged_attention.h"

namespace {

using tl::Weight;

// a · b · ... for sizes from JavaScript, or a RangeError where the product would overflow.
int64_t product(Napi::Env env, std::initializer_list<int64_t> factors) {
  int64_t p = 1;
  for (int64_t f : factors) {
    if (__builtin_mul_overflow(p, f, &p)) throw Napi::RangeError::New(env, "sizes are too large");
  }
  return p;
}

Napi::TypedArray typed_array(const Napi::Value& v, const char* what) {
  if (!v.IsTypedArray()) throw Napi::TypeError::New(v.Env(), std::string(what) + " must be a typed array");
  return v.As<Napi::TypedArray>();
}

template <class T>
T* data_of(const Napi::Value& v, const char* what, int64_t min_bytes) {
  auto a = typed_array(v, what);
  if (static_cast<int64_t>(a.ByteLength()) < min_bytes) {
    throw Napi::RangeError::New(
        v.Env(), std::string(what) + " is too small: " + std::to_string(a.ByteLength()) + " bytes, need " + std::to_string(min_bytes));
  }
  return reinterpret_cast<T*>(static_cast<uint8_t*>(a.ArrayBuffer().Data()) + a.ByteOffset());
}

// A typed array of one element type (Float32Array, Int32Array, Uint16Array) with at least
// min_elements; *length gets its length.
template <class T>
T* array_of(const Napi::Value& v, napi_typedarray_type type, const char* type_name, const char* what, int64_t min_elements,
            int64_t* length = nullptr) {
  auto a = typed_array(v, what);
  if (a.TypedArrayType() != type) throw Napi::TypeError::New(v.Env(), std::string(what) + " must be a " + type_name);
  if (static_cast<int64_t>(a.ElementLength()) < min_elements) {
    throw Napi::RangeError::New(v.Env(), std::string(what) + " is too small: " + std::to_string(a.ElementLength()) + " elements, need " +
                                             std::to_string(min_elements));
  }
  if (length) *length = static_cast<int64_t>(a.ElementLength());
  return reinterpret_cast<T*>(static_cast<uint8_t*>(a.ArrayBuffer().Data()) + a.ByteOffset());
}

float* f32_array(const Napi::Value& v, const char* what, int64_t min_elements, int64_t* length = nullptr) {
  return array_of<float>(v, napi_float32_array, "Float32Array", what, min_elements, length);
}
int32_t* i32_array(const Napi::Value& v, const char* what, int64_t min_elements, int64_t* length = nullptr) {
  return array_of<int32_t>(v, napi_int32_array, "Int32Array", what, min_elements, length);
}

// A whole number in [0, max]: 2^32 for sizes and counts, which no array here exceeds.
int64_t int_arg(const Napi::CallbackInfo& info, size_t i, const char* what, double max = 4294967296.0) {
  if (!info[i].IsNumber()) throw Napi::TypeError::New(info.Env(), std::string(what) + " must be a number");
  const double d = info[i].As<Napi::Number>().DoubleValue();
  if (!(d >= 0 && d <= max) || d != static_cast<double>(static_cast<int64_t>(d)))
    throw Napi::RangeError::New(info.Env(), std::string(what) + " must be a whole number from 0 to " +
                                                std::to_string(static_cast<int64_t>(max)) + ", got " + info[i].ToString().Utf8Value());
  return static_cast<int64_t>(d);
}

float float_arg(const Napi::CallbackInfo& info, size_t i, const char* what) {
  if (!info[i].IsNumber()) throw Napi::TypeError::New(info.Env(), std::string(what) + " must be a number");
  return info[i].As<Napi::Number>().FloatValue();
}

bool is_null(const Napi::Value& v) { return v.IsNull() || v.IsUndefined(); }

// weight: { type, data, rows, cols } (+ groupSize, scaleType, scales, biases for affine types)
Weight weight_arg(const Napi::Value& v) {
  Napi::Env env = v.Env();
  if (!v.IsObject()) throw Napi::TypeError::New(env, "weight must be an object");
  auto o = v.As<Napi::Object>();
  Weight w{};
  w.type = o.Get("type").As<Napi::Number>().Int32Value();
  w.rows = o.Get("rows").As<Napi::Number>().Int64Value();
  w.cols = o.Get("cols").As<Napi::Number>().Int64Value();
  if (w.rows < 0 || w.cols < 0 || w.rows > (int64_t{1} << 32) || w.cols > (int64_t{1} << 32))
    throw Napi::RangeError::New(env, "weight rows and cols must be from 0 to 2^32");
  const int64_t row_bytes = tl::weight_row_bytes(w.type, w.cols);
  if (row_bytes < 0) throw Napi::TypeError::New(env, "unknown weight type " + std::to_string(w.type));
  if (tl::is_int8_type(w.type) && w.cols % tl::kBlock != 0) {
    throw Napi::RangeError::New(env, "quantized weights need a column count that is a multiple of 32");
  }
  if (tl::is_kquant(w.type) && w.cols % tl::kQK != 0) {
    throw Napi::RangeError::New(env, "k-quant weights need a column count that is a multiple of 256");
  }
  w.data = data_of<const uint8_t>(o.Get("data"), "weight data", product(env, {row_bytes, w.rows}));
  if (tl::is_affine(w.type)) {
    w.group_size = o.Get("groupSize").As<Napi::Number>().Int64Value();
    w.scale_type = o.Get("scaleType").As<Napi::Number>().Int32Value();
    if (w.group_size != 32 && w.group_size != 64 && w.group_size != 128)
      throw Napi::RangeError::New(env, "affine group size must be 32, 64 or 128");
    if (w.cols % w.group_size != 0) throw Napi::RangeError::New(env, "affine weights need whole groups per row");
    if (w.scale_type < tl::S_F32 || w.scale_type > tl::S_BF16) throw Napi::TypeError::New(env, "unknown affine scale type");
    const int64_t param_bytes = product(env, {w.rows, w.cols / w.group_size, w.scale_type == tl::S_F32 ? 4 : 2});
    w.scales = data_of<const uint8_t>(o.Get("scales"), "weight scales", param_bytes);
    w.biases = data_of<const uint8_t>(o.Get("biases"), "weight biases", param_bytes);
  }
  return w;
}

// One layer's K/V cache arrays of kvType, as [blocks, Hkv, blockSize, D].
tl::PagedKV kv_arg(const Napi::CallbackInfo& info, size_t k_at, size_t v_at, int64_t kv_type, int64_t Hkv, int64_t D, int64_t block_size,
                   const char* op) {
  Napi::Env env = info.Env();
  tl::PagedKV c{};
  c.type = static_cast<int>(kv_type);
  c.Hkv = Hkv;
  c.D = D;
  c.block_size = block_size;
  if (Hkv < 1 || D < 1 || block_size < 1) throw Napi::RangeError::New(env, std::string(op) + ": Hkv, D and blockSize must be at least 1");
  int64_t k_len = 0, v_len = 0;
  if (kv_type == tl::KV_F32) {
    c.k = f32_array(info[k_at], "kCache", 0, &k_len);
    c.v = f32_array(info[v_at], "vCache", 0, &v_len);
  } else if (kv_type == tl::KV_F16 || kv_type == tl::KV_BF16) {
    c.k = array_of<uint16_t>(info[k_at], napi_uint16_array, "Uint16Array (f16 and bf16 caches)", "kCache", 0, &k_len);
    c.v = array_of<uint16_t>(info[v_at], napi_uint16_array, "Uint16Array (f16 and bf16 caches)", "vCache", 0, &v_len);
  } else {
    throw Napi::RangeError::New(env, std::string(op) + ": kvType must be 0 (f32), 1 (f16) or 2 (bf16), got " + std::to_string(kv_type));
  }
  const int64_t per_block = product(env, {Hkv, block_size, D});
  if (k_len != v_len || k_len % per_block != 0) {
    throw Napi::RangeError::New(
        env, std::string(op) + ": kCache and vCache must be the same whole number of blocks of Hkv × blockSize × D = " +
                 std::to_string(per_block) + " values (got " + std::to_string(k_len) + " and " + std::to_string(v_len) + ")");
  }
  c.blocks = k_len / per_block;
  return c;
}

Napi::Object type_table(Napi::Env env, const tl::TypeName* names, size_t n) {
  auto o = Napi::Object::New(env);
  for (size_t i = 0; i < n; i++) o.Set(names[i].name, names[i].id);
  return o;
}

Napi::Value WeightTypes(const Napi::CallbackInfo& info) {
  return type_table(info.Env(), tl::kWeightTypeNames, sizeof(tl::kWeightTypeNames) / sizeof(tl::kWeightTypeNames[0]));
}

Napi::Value ScaleTypes(const Napi::CallbackInfo& info) {
  return type_table(info.Env(), tl::kScaleTypeNames, sizeof(tl::kScaleTypeNames) / sizeof(tl::kScaleTypeNames[0]));
}

Napi::Value AvailableIsas(const Napi::CallbackInfo& info) {
  const auto names = tl::available_isas();
  auto a = Napi::Array::New(info.Env(), names.size());
  for (uint32_t i = 0; i < names.size(); i++) a.Set(i, names[i]);
  return a;
}

// regroupRows(type, data, rows, cols): GGUF blocks -> "rows" layout, in place
Napi::Value RegroupRows(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const int type = static_cast<int>(int_arg(info, 0, "type"));
  if (type != tl::W_Q8_0 && type != tl::W_Q4_0) throw Napi::TypeError::New(env, "regroupRows takes Q8_0 or Q4_0 weights");
  const int64_t rows = int_arg(info, 2, "rows");
  const int64_t cols = int_arg(info, 3, "cols");
  if (cols % tl::kBlock != 0) throw Napi::RangeError::New(env, "cols must be a multiple of 32");
  tl::regroup_rows(type, data_of<uint8_t>(info[1], "data", product(env, {rows, tl::weight_row_bytes(type, cols)})), rows, cols);
  return env.Undefined();
}

// mapFile(path, offset, length): see map_file; null where the range cannot be mapped.
Napi::Value MapFile(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsString()) throw Napi::TypeError::New(env, "path must be a string");
  // Files (and offsets into them) may pass 4 GB; a map itself may not (see map_file).
  const int64_t offset = int_arg(info, 1, "offset", 9007199254740991.0);
  const int64_t length = int_arg(info, 2, "length", 9007199254740991.0);
  tl::Mapping m;
  if (!tl::map_file(info[0].As<Napi::String>().Utf8Value().c_str(), offset, length, &m)) return env.Null();
  return Napi::ArrayBuffer::New(
      env, m.data, m.bytes,
      [](Napi::Env, void* p, size_t* n) {
        tl::unmap_file(p, *n);
        delete n;
      },
      new size_t(m.bytes));
}

// The object createContext returns: one tl::Context, and the ops as its methods.
class ContextWrap : public Napi::ObjectWrap<ContextWrap> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "NativeContext",
                       {
                           InstanceMethod<&ContextWrap::Info>("info"),
                           InstanceMethod<&ContextWrap::MatmulKernel>("matmulKernel"),
                           InstanceMethod<&ContextWrap::Matmul>("matmul"),
                           InstanceMethod<&ContextWrap::MatmulMany>("matmulMany"),
                           InstanceMethod<&ContextWrap::Swiglu>("swiglu"),
                           InstanceMethod<&ContextWrap::RmsNorm>("rmsNorm"),
                           InstanceMethod<&ContextWrap::Rope>("rope"),
                           InstanceMethod<&ContextWrap::StoreKV>("storeKV"),
                           InstanceMethod<&ContextWrap::PagedAttention>("pagedAttention"),
                           InstanceMethod<&ContextWrap::ReleaseScratch>("releaseScratch"),
                           InstanceMethod<&ContextWrap::ReadProbe>("readProbe"),
                       });
  }

  // new NativeContext({ threads?, isa?, batchInvariant? })
  explicit ContextWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<ContextWrap>(info) {
    Napi::Env env = info.Env();
    tl::ContextOptions opts;
    if (!is_null(info[0])) {
      if (!info[0].IsObject()) throw Napi::TypeError::New(env, "createContext takes an options object");
      auto o = info[0].As<Napi::Object>();
      const Napi::Value threads = o.Get("threads"), isa = o.Get("isa"), invariant = o.Get("batchInvariant");
      if (!threads.IsUndefined()) {
        const double t = threads.IsNumber() ? threads.As<Napi::Number>().DoubleValue() : -1;
        if (!(t >= 0 && t <= 256) || t != static_cast<int>(t))
          throw Napi::RangeError::New(env, "threads must be 1 to 256 (0 for one per core), got " + threads.ToString().Utf8Value());
        opts.threads = static_cast<int>(t);
      }
      if (!isa.IsUndefined()) {
        if (!isa.IsString()) throw Napi::TypeError::New(env, "isa must be a string");
        opts.isa = isa.As<Napi::String>().Utf8Value();
      }
      if (!invariant.IsUndefined()) {
        if (!invariant.IsBoolean()) throw Napi::TypeError::New(env, "batchInvariant must be a boolean");
        opts.batch_invariant = invariant.As<Napi::Boolean>().Value();
      }
    }
    try {
      ctx_ = std::make_unique<tl::Context>(opts);
    } catch (const tl::ArgumentError& e) {
      throw Napi::RangeError::New(env, e.what());
    }
  }

 private:
  // Runs an op, turning the C++ side's argument errors into RangeErrors.
  template <class F>
  Napi::Value guarded(const Napi::CallbackInfo& info, F&& f) {
    try {
      f();
    } catch (const tl::ArgumentError& e) {
      throw Napi::RangeError::New(info.Env(), e.what());
    } catch (const std::bad_alloc&) {
      throw Napi::Error::New(info.Env(), "out of memory");
    }
    return info.Env().Undefined();
  }

  Napi::Value Info(const Napi::CallbackInfo& info) {
    auto o = Napi::Object::New(info.Env());
    o.Set("isa", ctx_->isa_name());
    o.Set("threads", ctx_->threads());
    o.Set("batchInvariant", ctx_->batch_invariant());
    return o;
  }

  // matmulKernel(type, M): the name of the kernel a matmul of M rows by weights of this type runs
  Napi::Value MatmulKernel(const Napi::CallbackInfo& info) {
    const int64_t type = int_arg(info, 0, "type");
    if (std::none_of(std::begin(tl::kWeightTypeNames), std::end(tl::kWeightTypeNames), [&](const tl::TypeName& t) { return t.id == type; }))
      throw Napi::RangeError::New(info.Env(), "unknown weight type " + std::to_string(type));
    return Napi::String::New(info.Env(), tl::kernel_name(tl::matmul_kernel(*ctx_, static_cast<int>(type), int_arg(info, 1, "M"))));
  }

  // matmul(out, x, M, weight, bias | null)
  Napi::Value Matmul(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    const Weight w = weight_arg(info[3]);
    const int64_t M = int_arg(info, 2, "M");
    float* out = f32_array(info[0], "out", product(env, {M, w.rows}));
    const float* x = f32_array(info[1], "x", product(env, {M, w.cols}));
    const float* bias = is_null(info[4]) ? nullptr : f32_array(info[4], "bias", w.rows);
    return guarded(info, [&] { tl::matmul(*ctx_, out, x, M, w, bias); });
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
      throw Napi::RangeError::New(env,
                                  "matmulMany takes 1 to " + std::to_string(tl::kMaxMatmuls) + " weights, with as many outs and biases");
    }
    Weight w[tl::kMaxMatmuls];
    tl::MatmulOut o[tl::kMaxMatmuls];
    for (uint32_t i = 0; i < n; i++) {
      w[i] = weight_arg(weights.Get(i));
      if (w[i].cols != w[0].cols) throw Napi::RangeError::New(env, "matmulMany needs weights with the same column count");
      const Napi::Value b = biases.Get(i);
      o[i] = {&w[i], f32_array(outs.Get(i), "out", product(env, {M, w[i].rows})), is_null(b) ? nullptr : f32_array(b, "bias", w[i].rows)};
    }
    const float* x = f32_array(info[0], "x", product(env, {M, w[0].cols}));
    return guarded(info, [&] { tl::matmul_many(*ctx_, x, M, o, static_cast<int>(n)); });
  }

  // swiglu(out, x, M, gate, gateBias | null, up, upBias | null)
  Napi::Value Swiglu(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    const int64_t M = int_arg(info, 2, "M");
    const Weight gate = weight_arg(info[3]), up = weight_arg(info[5]);
    if (gate.rows != up.rows || gate.cols != up.cols)
      throw Napi::RangeError::New(env, "swiglu needs gate and up weights of the same shape");
    auto bias_of = [&](size_t i, const char* what) { return is_null(info[i]) ? nullptr : f32_array(info[i], what, gate.rows); };
    const tl::MatmulOut g{&gate, nullptr, bias_of(4, "gate bias")}, u{&up, nullptr, bias_of(6, "up bias")};
    float* out = f32_array(info[0], "out", product(env, {M, gate.rows}));
    const float* x = f32_array(info[1], "x", product(env, {M, gate.cols}));
    return guarded(info, [&] { tl::swiglu(*ctx_, out, x, M, g, u); });
  }

  // rmsNorm(out, x, weight, rows, n, eps)
  Napi::Value RmsNorm(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    const int64_t rows = int_arg(info, 3, "rows");
    const int64_t n = int_arg(info, 4, "n");
    float* out = f32_array(info[0], "out", product(env, {rows, n}));
    const float* x = f32_array(info[1], "x", product(env, {rows, n}));
    const float* w = f32_array(info[2], "weight", n);
    const float eps = float_arg(info, 5, "eps");
    return guarded(info, [&] { tl::rms_norm(*ctx_, out, x, w, rows, n, eps); });
  }

  // rope(x, T, heads, D, positions, theta, traditional)
  Napi::Value Rope(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    const int64_t T = int_arg(info, 1, "T");
    const int64_t heads = int_arg(info, 2, "heads");
    const int64_t D = int_arg(info, 3, "D");
    if (D % 2 != 0) throw Napi::RangeError::New(env, "RoPE needs an even head dim");
    float* x = f32_array(info[0], "x", product(env, {T, heads, D}));
    const int32_t* positions = i32_array(info[4], "positions", T);
    for (int64_t t = 0; t < T; t++) {
      if (positions[t] < 0) throw Napi::RangeError::New(env, "rope: positions[" + std::to_string(t) + "] is negative");
    }
    if (!info[5].IsNumber()) throw Napi::TypeError::New(env, "theta must be a number");
    const double theta = info[5].As<Napi::Number>().DoubleValue();
    const bool traditional = info[6].ToBoolean().Value();
    return guarded(info, [&] { tl::rope(*ctx_, x, T, heads, D, positions, theta, traditional); });
  }

  // storeKV(kCache, vCache, kvType, k, v, slots, T, Hkv, D, blockSize)
  Napi::Value StoreKV(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    const int64_t kv_type = int_arg(info, 2, "kvType");
    const int64_t T = int_arg(info, 6, "T");
    const int64_t Hkv = int_arg(info, 7, "Hkv");
    const int64_t D = int_arg(info, 8, "D");
    const int64_t block_size = int_arg(info, 9, "blockSize");
    const tl::PagedKV c = kv_arg(info, 0, 1, kv_type, Hkv, D, block_size, "storeKV");
    const int64_t values = product(env, {T, Hkv, D});
    const float* k = f32_array(info[3], "k", values);
    const float* v = f32_array(info[4], "v", values);
    const int32_t* slots = i32_array(info[5], "slots", T);
    return guarded(info, [&] { tl::store_kv(c, k, v, slots, T); });
  }

  // pagedAttention(out, q, kCache, vCache, kvType, seqs, blockTables, H, Hkv, D, blockSize, scale)
  Napi::Value PagedAttention(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    const int64_t kv_type = int_arg(info, 4, "kvType");
    const int64_t H = int_arg(info, 7, "H");
    const int64_t Hkv = int_arg(info, 8, "Hkv");
    const int64_t D = int_arg(info, 9, "D");
    const int64_t block_size = int_arg(info, 10, "blockSize");
    tl::PagedAttentionArgs a{};
    a.kv = kv_arg(info, 2, 3, kv_type, Hkv, D, block_size, "pagedAttention");
    a.H = H;
    a.scale = float_arg(info, 11, "scale");
    if (H < 1) throw Napi::RangeError::New(env, "pagedAttention: H must be at least 1");
    const int64_t row = product(env, {H, D});
    int64_t out_len = 0, q_len = 0, seqs_len = 0;
    a.out = f32_array(info[0], "out", 0, &out_len);
    a.q = f32_array(info[1], "q", 0, &q_len);
    if (out_len != q_len) throw Napi::RangeError::New(env, "pagedAttention: out and q must be the same length");
    const auto at = [](const float* p) { return reinterpret_cast<uintptr_t>(p); };
    if (at(a.out) < at(a.q + q_len) && at(a.q) < at(a.out + out_len))
      throw Napi::RangeError::New(env, "pagedAttention: out and q must not overlap");
    a.rows = q_len / row;
    a.seqs = i32_array(info[5], "seqs", 0, &seqs_len);
    if (seqs_len % 4 != 0) throw Napi::RangeError::New(env, "pagedAttention: seqs holds 4 int32 per sequence");
    a.num_seqs = seqs_len / 4;
    a.tables = i32_array(info[6], "blockTables", 0, &a.table_len);
    return guarded(info, [&] { tl::paged_attention(*ctx_, a); });
  }

  // releaseScratch(buffers[]): the buffers' pages and the context's batch buffers back to the system
  Napi::Value ReleaseScratch(const Napi::CallbackInfo& info) {
    if (!info[0].IsArray()) throw Napi::TypeError::New(info.Env(), "buffers must be an array of typed arrays");
    const auto buffers = info[0].As<Napi::Array>();
    for (uint32_t i = 0; i < buffers.Length(); i++) {
      const Napi::Value b = buffers.Get(i);
      if (!b.IsTypedArray()) throw Napi::TypeError::New(info.Env(), "buffers must be an array of typed arrays");
      tl::release_pages(data_of<uint8_t>(b, "buffer", 0), b.As<Napi::TypedArray>().ByteLength());
    }
    ctx_->release_scratch();
    return info.Env().Undefined();
  }

  // readProbe(data): sums a Float32Array with every thread of the context (a bandwidth probe)
  Napi::Value ReadProbe(const Napi::CallbackInfo& info) {
    int64_t n = 0;
    const float* data = f32_array(info[0], "data", 0, &n);
    return Napi::Number::New(info.Env(), tl::read_probe(*ctx_, data, n));
  }

  std::unique_ptr<tl::Context> ctx_;
};

// createContext(opts?)
Napi::Value CreateContext(const Napi::CallbackInfo& info) { return info.Env().GetInstanceData<Napi::FunctionReference>()->New({info[0]}); }

Napi::Object Init(Napi::Env env, Napi::Object exports) {
#if defined(__GLIBC__)
  // glibc raises its mmap threshold to the size of each large block freed (up to 32 MiB); blocks
  // below it then come from the heap and stay resident after they are freed. Array buffers are
  // such blocks: a fixed threshold returns a freed load-time buffer or scratch to the system.
  mallopt(M_MMAP_THRESHOLD, 128 * 1024);
#endif
  // The context class per environment (main thread or worker), freed with it.
  env.SetInstanceData(new Napi::FunctionReference(Napi::Persistent(ContextWrap::Define(env))));
  exports.Set("weightTypes", Napi::Function::New(env, WeightTypes));
  exports.Set("scaleTypes", Napi::Function::New(env, ScaleTypes));
  exports.Set("availableIsas", Napi::Function::New(env, AvailableIsas));
  exports.Set("createContext", Napi::Function::New(env, CreateContext));
  exports.Set("regroupRows", Napi::Function::New(env, RegroupRows));
  exports.Set("mapFile", Napi::Function::New(env, MapFile));
  return exports;
}

}  // namespace

NODE_API_MODULE(tiny_llm_native, Init)
