// x86 SIMD kernels, compiled twice: with -mavx2 -mfma -mf16c into namespace tl::avx2, and with
// the AVX-512 flags (F, BW, VL, DQ, VNNI) into tl::avx512. The AVX-512 build works on 16 floats
// per vector and uses VNNI's vpdpbusd for int8 dot products; the code below is shared.
#include <immintrin.h>

#include <algorithm>
#include <cstring>

#include "kernels.h"



#if defined(__AVX512F__)
#define TL_NS avx512
#else
#define TL_NS avx2
#endif

namespace tl {
namespace TL_NS {
namespace {

// ---- f32 vectors: 16 lanes with AVX-512, 8 with AVX2 ----
#if defined(__AVX512F__)
using V = __m512;
constexpr int VW = 16;
inline V vzero() { return _mm512_setzero_ps(); }
inline V vload(const float* p) { return _mm512_loadu_ps(p); }
inline void vstore(float* p, V v) { _mm512_storeu_ps(p, v); }
inline V vset1(float x) { return _mm512_set1_ps(x); }
inline V vfmadd(V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); }
inline V vmul(V a, V b) { return _mm512_mul_ps(a, b); }
inline float vsum(V v) { return _mm512_reduce_add_ps(v); }
inline V vload_bf16(const uint16_t* p) {
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))), 16));
}
inline V vload_f16(const uint16_t* p) { return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))); }
#else
using V = __m256;
constexpr int VW = 8;
inline V vzero() { return _mm256_setzero_ps(); }
inline V vload(const float* p) { return _mm256_loadu_ps(p); }
inline void vstore(float* p, V v) { _mm256_storeu_ps(p, v); }
inline V vset1(float x) { return _mm256_set1_ps(x); }
inline V vfmadd(V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); }
inline V vmul(V a, V b) { return _mm256_mul_ps(a, b); }
inline float vsum(V v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}
inline V vload_bf16(const uint16_t* p) {
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))), 16));
}
inline V vload_f16(const uint16_t* p) { return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))); }
#endif

inline float f16(uint16_t h) { return _cvtsh_ss(h); }

inline void prefetch(const void* p) { _mm_prefetch(static_cast<const char*>(p), _MM_HINT_T0); }

// How far ahead of the current position a weight row is prefetched (bytes).
constexpr int64_t kPrefetch = 4096;

// ---- dense weights (f32, f16, bf16): an MR x NR tile of outputs, K in vector steps ----

struct LoadF32 {
  static V load(const uint8_t* row, int64_t k) { return vload(reinterpret_cast<const float*>(row) + k); }
  static float scalar(const uint8_t* row, int64_t k) { return reinterpret_cast<const float*>(row)[k]; }
  static constexpr int kBytes = 4;
};
struct LoadBF16 {
  static V load(const uint8_t* row, int64_t k) { return vload_bf16(reinterpret_cast<const uint16_t*>(row) + k); }
  static float scalar(const uint8_t* row, int64_t k) {
    const uint32_t bits = static_cast<uint32_t>(reinterpret_cast<const uint16_t*>(row)[k]) << 16;
    float f;
    std::memcpy(&f, &bits, 4);
    return f;
  }
  static constexpr int kBytes = 2;
};
struct LoadF16 {
  static V load(const uint8_t* row, int64_t k) { return vload_f16(reinterpret_cast<const uint16_t*>(row) + k); }
  static float scalar(const uint8_t* row, int64_t k) { return f16(reinterpret_cast<const uint16_t*>(row)[k]); }
  static constexpr int kBytes = 2;
};

template <class L, int MR, int NR>
void dense_tile(const MatmulTask& t, int64_t m0, int64_t n0) {
  const int64_t K = t.w->cols;
  const int64_t N = t.w->rows;
  const int64_t row_bytes = K * L::kBytes;
  const uint8_t* w[NR];
  const float* x[MR];
  for (int r = 0; r < NR; r++) w[r] = t.w->data + (n0 + r) * row_bytes;
  for (int i = 0; i < MR; i++) x[i] = t.x + (m0 + i) * K;
  V acc[MR][NR];
  for (int i = 0; i < MR; i++)
    for (int r = 0; r < NR; r++) acc[i][r] = vzero();
  int64_t k = 0;
  for (; k + VW <= K; k += VW) {
    if ((k * L::kBytes) % 64 == 0)
      for (int r = 0; r < NR; r++) prefetch(w[r] + k * L::kBytes + kPrefetch);
    V wv[NR];
    for (int r = 0; r < NR; r++) wv[r] = L::load(w[r], k);
    for (int i = 0; i < MR; i++) {
      const V xv = vload(x[i] + k);
      for (int r = 0; r < NR; r++) acc[i][r] = vfmadd(xv, wv[r], acc[i][r]);
    }
  }
  for (int i = 0; i < MR; i++) {
    for (int r = 0; r < NR; r++) {
      float s = vsum(acc[i][r]);
      for (int64_t kk = k; kk < K; kk++) s += x[i][kk] * L::scalar(w[r], kk);
      t.out[(m0 + i) * N + n0 + r] = s + (t.bias ? t.bias[n0 + r] : 0.0f);
    }
  }
}

// ---- quantized weights: int8 dot products per block of 32, scaled per block ----

// 32 weights of a Q8_0 block as int8.
inline __m256i q8_0_values(const BlockQ8_0* b) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b->qs)); }
// 32 weights of a Q4_0 block as int8 in [-8, 7]: low nibbles are elements 0-15, high nibbles 16-31.
inline __m256i q4_0_values(const BlockQ4_0* b) {
  const __m128i packed = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b->qs));
  const __m128i lo = _mm_and_si128(packed, _mm_set1_epi8(0x0f));
  const __m128i hi = _mm_and_si128(_mm_srli_epi16(packed, 4), _mm_set1_epi8(0x0f));
  return _mm256_sub_epi8(_mm256_set_m128i(hi, lo), _mm256_set1_epi8(8));
}

// Eight partial sums of w·x over one block (signed int8 both), as floats.
inline __m256 block_dot(__m256i w, __m256i x) {
  // vpdpbusd / vpmaddubsw take one unsigned operand: move w's sign onto x.
  const __m256i aw = _mm256_sign_epi8(w, w);
  const __m256i sx = _mm256_sign_epi8(x, w);
#if defined(__AVX512VNNI__)
  const __m256i s32 = _mm256_dpbusd_epi32(_mm256_setzero_si256(), aw, sx);
#else
  const __m256i s32 = _mm256_madd_epi16(_mm256_maddubs_epi16(aw, sx), _mm256_set1_epi16(1));
#endif
  return _mm256_cvtepi32_ps(s32);
}

inline float hsum8(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

struct Q8_0 {
  using Block = BlockQ8_0;
  static __m256i values(const Block* b) { return q8_0_values(b); }
};
struct Q4_0 {
  using Block = BlockQ4_0;
  static __m256i values(const Block* b) { return q4_0_values(b); }
};

template <class Q, int MR, int NR>
void quant_tile(const MatmulTask& t, int64_t m0, int64_t n0) {
  using Block = typename Q::Block;
  const int64_t K = t.w->cols;
  const int64_t N = t.w->rows;
  const int64_t nb = K / kBlock;
  const Block* w[NR];
  const BlockQ8A* x[MR];
  for (int r = 0; r < NR; r++) w[r] = reinterpret_cast<const Block*>(t.w->data) + (n0 + r) * nb;
  for (int i = 0; i < MR; i++) x[i] = t.xq + (m0 + i) * nb;
  __m256 acc[MR][NR];
  for (int i = 0; i < MR; i++)
    for (int r = 0; r < NR; r++) acc[i][r] = _mm256_setzero_ps();
  for (int64_t b = 0; b < nb; b++) {
    if ((b * sizeof(Block)) % 64 < sizeof(Block))
      for (int r = 0; r < NR; r++) prefetch(reinterpret_cast<const uint8_t*>(w[r] + b) + kPrefetch);
    __m256i wv[NR];
    float wd[NR];
    for (int r = 0; r < NR; r++) {
      wv[r] = Q::values(w[r] + b);
      wd[r] = f16(w[r][b].d);
    }
    for (int i = 0; i < MR; i++) {
      const __m256i xv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x[i][b].qs));
      const float xd = x[i][b].d;
      for (int r = 0; r < NR; r++) acc[i][r] = _mm256_fmadd_ps(block_dot(wv[r], xv), _mm256_set1_ps(wd[r] * xd), acc[i][r]);
    }
  }
  for (int i = 0; i < MR; i++)
    for (int r = 0; r < NR; r++) t.out[(m0 + i) * N + n0 + r] = hsum8(acc[i][r]) + (t.bias ? t.bias[n0 + r] : 0.0f);
}

// Covers rows [n0, n1) x all M with tiles of up to 4 x 4, falling back to narrower tiles at the edges.
template <template <class, int, int> class Tile, class T>
struct Tiler {
  template <int MR>
  static void rows(const MatmulTask& t, int64_t m0, int64_t n0, int64_t n1) {
    int64_t n = n0;
    for (; n + 4 <= n1; n += 4) Tile<T, MR, 4>::run(t, m0, n);
    for (; n < n1; n++) Tile<T, MR, 1>::run(t, m0, n);
  }
  static void run(const MatmulTask& t, int64_t n0, int64_t n1) {
    int64_t m = 0;
    for (; m + 4 <= t.M; m += 4) rows<4>(t, m, n0, n1);
    switch (t.M - m) {
      case 3: rows<3>(t, m, n0, n1); break;
      case 2: rows<2>(t, m, n0, n1); break;
      case 1: rows<1>(t, m, n0, n1); break;
      default: break;
    }
  }
};

template <class L, int MR, int NR>
struct DenseTile {
  static void run(const MatmulTask& t, int64_t m0, int64_t n0) { dense_tile<L, MR, NR>(t, m0, n0); }
};
template <class Q, int MR, int NR>
struct QuantTile {
  static void run(const MatmulTask& t, int64_t m0, int64_t n0) { quant_tile<Q, MR, NR>(t, m0, n0); }
};

void matmul_rows(const MatmulTask& t, int64_t n0, int64_t n1) {
  switch (t.w->type) {
    case W_F32: Tiler<DenseTile, LoadF32>::run(t, n0, n1); break;
    case W_BF16: Tiler<DenseTile, LoadBF16>::run(t, n0, n1); break;
    case W_F16: Tiler<DenseTile, LoadF16>::run(t, n0, n1); break;
    case W_Q8_0: Tiler<QuantTile, Q8_0>::run(t, n0, n1); break;
    case W_Q4_0: Tiler<QuantTile, Q4_0>::run(t, n0, n1); break;
    default: break;
  }
}

void quantize_q8a(const float* x, BlockQ8A* out, int64_t k) {
  for (int64_t i = 0; i < k / kBlock; i++) {
    const float* p = x + i * kBlock;
    __m256 v[4];
    __m256 amax = _mm256_setzero_ps();
    const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    for (int j = 0; j < 4; j++) {
      v[j] = _mm256_loadu_ps(p + 8 * j);
      amax = _mm256_max_ps(amax, _mm256_and_ps(v[j], abs_mask));
    }
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(amax), _mm256_extractf128_ps(amax, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    m = _mm_max_ss(m, _mm_movehdup_ps(m));
    const float d = _mm_cvtss_f32(m) / 127.0f;
    const __m256 id = _mm256_set1_ps(d != 0 ? 1.0f / d : 0.0f);
    out[i].d = d;
    __m256i q[4];
    for (int j = 0; j < 4; j++) q[j] = _mm256_cvtps_epi32(_mm256_mul_ps(v[j], id));  // rounds to nearest even
    // Pack 32 int32 -> 32 int8, undoing the lane interleaving of the pack instructions.
    const __m256i a = _mm256_packs_epi32(q[0], q[1]);
    const __m256i b = _mm256_packs_epi32(q[2], q[3]);
    const __m256i c = _mm256_packs_epi16(a, b);
    const __m256i ordered = _mm256_permutevar8x32_epi32(c, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out[i].qs), ordered);
  }
}

float dot(const float* a, const float* b, int64_t n) {
  V acc0 = vzero(), acc1 = vzero();
  int64_t i = 0;
  for (; i + 2 * VW <= n; i += 2 * VW) {
    acc0 = vfmadd(vload(a + i), vload(b + i), acc0);
    acc1 = vfmadd(vload(a + i + VW), vload(b + i + VW), acc1);
  }
  for (; i + VW <= n; i += VW) acc0 = vfmadd(vload(a + i), vload(b + i), acc0);
  float s = vsum(acc0) + vsum(acc1);
  for (; i < n; i++) s += a[i] * b[i];
  return s;
}

void scale_add(float* y, float a, const float* x, float b, int64_t n) {
  const V va = vset1(a), vb = vset1(b);
  int64_t i = 0;
  for (; i + VW <= n; i += VW) vstore(y + i, vfmadd(vload(x + i), vb, vmul(vload(y + i), va)));
  for (; i < n; i++) y[i] = y[i] * a + x[i] * b;
}

}  // namespace
}  // namespace TL_NS

#if defined(__AVX512F__)
const IsaKernels& avx512_kernels() {
  static const IsaKernels k{"avx512", avx512::matmul_rows, avx512::quantize_q8a, avx512::dot, avx512::scale_add};
  return k;
}
#else
const IsaKernels& avx2_kernels() {
  static const IsaKernels k{"avx2", avx2::matmul_rows, avx2::quantize_q8a, avx2::dot, avx2::scale_add};
  return k;
}
#endif

}  // namespace tl
