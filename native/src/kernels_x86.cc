// x86 SIMD kernels, compiled twice: with -mavx2 -mfma -mf16c into namespace tl::avx2, and with
// the AVX-512 flags (F, BW, VL, DQ, VNNI) into tl::avx512. The AVX-512 build works on 16 floats
// per vector and uses VNNI's vpdpbusd for int8 dot products; the code below is shared.
#include <immintrin.h>

#include <algorithm>
#include <cmath>
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

// The 8 lanes of v reduced by a lane-wise op on 128-bit halves (_mm_add_ps, _mm_max_ps).
template <class Op>
inline float reduce8(__m256 v, Op op) {
  __m128 s = op(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = op(s, _mm_movehl_ps(s, s));
  s = op(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}
inline float hsum8(__m256 v) { return reduce8(v, [](__m128 a, __m128 b) { return _mm_add_ps(a, b); }); }

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
inline V vmax(V a, V b) { return _mm512_max_ps(a, b); }
inline V vadd(V a, V b) { return _mm512_add_ps(a, b); }
inline V vsub(V a, V b) { return _mm512_sub_ps(a, b); }
inline float vsum(V v) { return _mm512_reduce_add_ps(v); }
inline float vmaxall(V v) { return _mm512_reduce_max_ps(v); }
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
inline float vsum(V v) { return hsum8(v); }
inline V vmax(V a, V b) { return _mm256_max_ps(a, b); }
inline V vadd(V a, V b) { return _mm256_add_ps(a, b); }
inline V vsub(V a, V b) { return _mm256_sub_ps(a, b); }
inline float vmaxall(V v) { return reduce8(v, [](__m128 a, __m128 b) { return _mm_max_ps(a, b); }); }
inline V vload_bf16(const uint16_t* p) {
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))), 16));
}
inline V vload_f16(const uint16_t* p) { return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))); }
#endif

inline float f16(uint16_t h) { return _cvtsh_ss(h); }

// How far ahead of the current position a weight row is prefetched (bytes).
constexpr int64_t kPrefetch = 4096;

// Σ_g bias_g · Σ_g x over row n's groups: the bias half of an affine dot product.
inline float affine_bias_term(const Weight& w, int64_t n, const float* gsum) {
  const int64_t groups = w.cols / w.group_size;
  float v = 0;
  for (int64_t g = 0; g < groups; g++) v += affine_param(w, w.biases, n * groups + g) * gsum[g];
  return v;
}

// How far ahead to prefetch the weights of a tile of nr rows: whole tiles, at least kPrefetch
// bytes. Landing on the same column of a later row, the prefetch also finds that row's scales,
// which a fixed distance into long rows would pass by.
inline int64_t tiles_ahead(int64_t row_bytes, int nr) {
  const int64_t tile = row_bytes * nr;
  return (kPrefetch + tile - 1) / tile * tile;
}

inline void prefetch_at(const void* p, int64_t bytes) { _mm_prefetch(static_cast<const char*>(p) + bytes, _MM_HINT_T0); }

// Prefetches the lines of a block `bytes` long, `ahead` bytes on.
inline void prefetch_block(const uint8_t* p, int64_t bytes, int64_t ahead) {
  for (int64_t off = 0; off < bytes; off += 64) prefetch_at(p + off, ahead);
}


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
      for (int r = 0; r < NR; r++) prefetch_at(w[r] + k * L::kBytes, kPrefetch);
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

// ---- quantized weights ("rows" layout): int8 dot products per block, scaled per block ----
//
// A row of x is quantized per block of 32 (q, d, s = d·Σq). For weight block b of row n:
//   dot_b = Σ_j w_j x_j ≈ dw_b · dx_b · Σ_j qw_j qx_j
// The dot-product instructions multiply unsigned by signed bytes. Q4_0's nibbles are unsigned
// already (qw = u − 8), and AVX-512 shifts Q8_0 weights to unsigned (u = qw + 128); both then
// correct with Σ_b dw_b · c · s_b (c = 8 or 128), one short dot product per row. AVX2 instead
// moves the weight's sign onto x (vpmaddubsw would saturate on the shifted values).

// NR rows of a Q8_0 / Q4_0 weight in the "rows" layout, from row n0: each row's quants, its f16
// scales after them, and how far ahead to prefetch both.
template <int Type, int NR>
struct QuantRows {
  static constexpr int64_t quant_bytes(int64_t values) { return Type == W_Q8_0 ? values : values / 2; }
  const uint8_t* q[NR];
  const uint16_t* d[NR];
  int64_t ahead;
  QuantRows(const Weight& w, int64_t n0) {
    const int64_t row_bytes = weight_row_bytes(Type, w.cols);
    ahead = tiles_ahead(row_bytes, NR);
    for (int r = 0; r < NR; r++) {
      q[r] = w.data + (n0 + r) * row_bytes;
      d[r] = reinterpret_cast<const uint16_t*>(q[r] + quant_bytes(w.cols));
    }
  }
};

// The eight 6-bit scales (bytes 0-7) and mins (bytes 8-15) of a Q4_K / Q5_K super-block, from
// its 12 packed bytes with word-wide masks instead of a loop per sub-block.
inline __m128i unpack_scale_min(const uint8_t* packed) {
  uint32_t w[3];
  std::memcpy(w, packed, 12);
  const uint32_t sc_lo = w[0] & 0x3f3f3f3f, m_lo = w[1] & 0x3f3f3f3f;
  const uint32_t sc_hi = (w[2] & 0x0f0f0f0f) | (((w[0] >> 6) & 0x03030303) << 4);
  const uint32_t m_hi = ((w[2] >> 4) & 0x0f0f0f0f) | (((w[1] >> 6) & 0x03030303) << 4);
  return _mm_setr_epi32(static_cast<int>(sc_lo), static_cast<int>(sc_hi), static_cast<int>(m_lo), static_cast<int>(m_hi));
}

#if defined(__AVX512VNNI__)

constexpr int kGroup = 16;  // blocks per group: one vector of scales

// x order for 4-bit weights follows how one 64-byte load of four blocks' nibbles unpacks into
// low and high halves. Q4_0 (blocks A-D): [A0-15, B0-15, C0-15, D0-15, A16-31, ..., D16-31].
// MLX 4-bit (elements 2k, 2k + 1 share byte k): [the 64 even elements of the four, then the 64 odd].
void quantize_x(int type, const float* x, int64_t K, int8_t* q, float* d, float* s) {
  const int64_t nb = K / kBlock;
  const bool four_bit = type == W_Q4_0 || type == W_AFFINE4;
  // Zero the padding of the last group of four (or 64 values) so that missing blocks add nothing.
  const int64_t padded = (K + 127) / 128 * 128;
  std::memset(q + (four_bit ? nb / 4 * 128 : K), 0, padded - (four_bit ? nb / 4 * 128 : K));
  alignas(64) int8_t tmp[kBlock];
  for (int64_t b = 0; b < nb; b++) {
    const float* p = x + b * kBlock;
    __m512 v0 = _mm512_loadu_ps(p), v1 = _mm512_loadu_ps(p + 16);
    const float amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(v0), _mm512_abs_ps(v1)));
    const float db = amax / 127.0f;
    const __m512 id = _mm512_set1_ps(db != 0 ? 1.0f / db : 0.0f);
    const __m512i q0 = _mm512_cvtps_epi32(_mm512_mul_ps(v0, id));
    const __m512i q1 = _mm512_cvtps_epi32(_mm512_mul_ps(v1, id));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(tmp), _mm512_cvtsepi32_epi8(q0));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(tmp + 16), _mm512_cvtsepi32_epi8(q1));
    d[b] = db;
    s[b] = db * static_cast<float>(_mm512_reduce_add_epi32(_mm512_add_epi32(q0, q1)));
    int8_t* quad = q + (b / 4) * 128;
    const int64_t slot = b % 4;
    if (type == W_Q4_0) {
      std::memcpy(quad + slot * 16, tmp, 16);
      std::memcpy(quad + 64 + slot * 16, tmp + 16, 16);
    } else if (type == W_AFFINE4) {
      for (int j = 0; j < kBlock; j++) quad[(j % 2) * 64 + slot * 16 + j / 2] = tmp[j];
    } else {
      std::memcpy(q + b * kBlock, tmp, kBlock);
    }
  }
}

// A unit is what one 64-byte load of weights holds: two blocks of 8-bit codes, or four of 4-bit.
template <int Type>
constexpr bool kFourBit = Type == W_Q4_0 || Type == W_AFFINE4;
template <int Type>
constexpr int64_t kUnitBlocks = kFourBit<Type> ? 4 : 2;

// Unit u of a row as unsigned bytes: 8-bit codes (Q8_0 shifted by 128) in v[0]; 4-bit codes'
// low nibbles in v[0], high nibbles in v[1]. `blocks` (1 .. kUnitBlocks) are present.
template <int Type>
inline void unit_weights(const uint8_t* quants, int64_t u, int64_t blocks, __m512i v[2]) {
  const __mmask64 mask = blocks == kUnitBlocks<Type> ? ~0ull : (1ull << (blocks * (kFourBit<Type> ? 16 : 32))) - 1;
  const __m512i raw = _mm512_maskz_loadu_epi8(mask, quants + u * 64);
  if constexpr (Type == W_Q8_0) {
    v[0] = _mm512_xor_si512(raw, _mm512_set1_epi8(static_cast<char>(0x80)));
  } else if constexpr (Type == W_AFFINE8) {
    v[0] = raw;
  } else {
    v[0] = _mm512_and_si512(raw, _mm512_set1_epi8(0x0f));
    v[1] = _mm512_and_si512(_mm512_srli_epi16(raw, 4), _mm512_set1_epi8(0x0f));
  }
}

// Σ weight·x over unit u, as 16 int32 lanes (both nibble halves summed: their lanes fall in the
// same blocks). x is quantize_x's order: 64 values per 8-bit unit, 128 per 4-bit unit.
template <int Type>
inline __m512i unit_dot(const __m512i v[2], const int8_t* xq, int64_t u) {
  if constexpr (kFourBit<Type>) {
    const __m512i lo = _mm512_dpbusd_epi32(_mm512_setzero_si512(), v[0], _mm512_loadu_si512(xq + u * 128));
    return _mm512_dpbusd_epi32(lo, v[1], _mm512_loadu_si512(xq + u * 128 + 64));
  } else {
    return _mm512_dpbusd_epi32(_mm512_setzero_si512(), v[0], _mm512_loadu_si512(xq + u * 64));
  }
}

// Lane -> block within a group of 16 for unit p of the group: 8-bit lanes 0-7 are the unit's
// first block, 8-15 its second; 4-bit lanes 4j..4j+3 are its block j.
template <int Type>
inline __m512i unit_lanes(int64_t p) {
  const __m512i lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  return _mm512_add_epi32(_mm512_srli_epi32(lane, kFourBit<Type> ? 2 : 3), _mm512_set1_epi32(static_cast<int>(p * kUnitBlocks<Type>)));
}

template <int Type, int MR, int NR>
void quant_tile(const MatmulTask& t, int64_t m0, int64_t n0) {
  constexpr float kOffset = Type == W_Q8_0 ? 128.0f : 8.0f;
  const int64_t K = t.w->cols;
  const int64_t N = t.w->rows;
  const int64_t nb = K / kBlock;
  const QuantRows<Type, NR> rows(*t.w, n0);
  const auto& wq = rows.q;
  const auto& wd = rows.d;
  const int64_t ahead = rows.ahead;
  const int8_t* xq[MR];
  const float* xd[MR];
  const float* xs[MR];
  for (int i = 0; i < MR; i++) {
    xq[i] = t.xq.q + (m0 + i) * t.xq.q_stride;
    xd[i] = t.xq.d + (m0 + i) * t.xq.b_stride;
    xs[i] = t.xq.s + (m0 + i) * t.xq.b_stride;
  }
  __m512 acc[MR][NR];
  for (int i = 0; i < MR; i++)
    for (int r = 0; r < NR; r++) acc[i][r] = _mm512_setzero_ps();
  alignas(64) float scale[MR][NR][kGroup];
  for (int64_t g = 0; g < nb; g += kGroup) {
    const int64_t gb = std::min<int64_t>(kGroup, nb - g);
    const __mmask16 bmask = static_cast<__mmask16>((1u << gb) - 1);
    __m512 dw[NR];
    for (int r = 0; r < NR; r++) {
      prefetch_at(wd[r] + g, ahead);
      dw[r] = _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(bmask, wd[r] + g));
    }
    for (int i = 0; i < MR; i++) {
      const __m512 dx = _mm512_maskz_loadu_ps(bmask, xd[i] + g);
      for (int r = 0; r < NR; r++) _mm512_store_ps(scale[i][r], _mm512_mul_ps(dw[r], dx));
    }
    constexpr int64_t ub = kUnitBlocks<Type>;
    for (int64_t p = 0; p * ub < gb; p++) {
      const int64_t u = g / ub + p;  // unit index within the row
      __m512i wv[NR][2];
      for (int r = 0; r < NR; r++) {
        prefetch_at(wq[r] + u * 64, ahead);
        unit_weights<Type>(wq[r], u, std::min(ub, gb - p * ub), wv[r]);
      }
      const __m512i lanes = unit_lanes<Type>(p);
      for (int i = 0; i < MR; i++) {
        for (int r = 0; r < NR; r++) {
          const __m512i dotp = unit_dot<Type>(wv[r], xq[i], u);
          acc[i][r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dotp), _mm512_permutexvar_ps(lanes, _mm512_load_ps(scale[i][r])), acc[i][r]);
        }
      }
    }
  }
  // The offset correction Σ_b dw_b · s_b, in a second short pass so that the main loop keeps
  // all its accumulators in registers.
  __m512 cor[MR][NR];
  for (int i = 0; i < MR; i++)
    for (int r = 0; r < NR; r++) cor[i][r] = _mm512_setzero_ps();
  for (int64_t g = 0; g < nb; g += kGroup) {
    const __mmask16 bmask = static_cast<__mmask16>((1u << std::min<int64_t>(kGroup, nb - g)) - 1);
    __m512 dw[NR];
    for (int r = 0; r < NR; r++) dw[r] = _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(bmask, wd[r] + g));
    for (int i = 0; i < MR; i++) {
      const __m512 sx = _mm512_maskz_loadu_ps(bmask, xs[i] + g);
      for (int r = 0; r < NR; r++) cor[i][r] = _mm512_fmadd_ps(dw[r], sx, cor[i][r]);
    }
  }
  for (int i = 0; i < MR; i++)
    for (int r = 0; r < NR; r++) {
      const float v = _mm512_reduce_add_ps(acc[i][r]) - kOffset * _mm512_reduce_add_ps(cor[i][r]);
      t.out[(m0 + i) * N + n0 + r] = v + (t.bias ? t.bias[n0 + r] : 0.0f);
    }
}

// 16 affine scales (or biases) starting at group g, as f32; lanes past `mask` are zero.
inline __m512 affine_params16(const Weight& w, const void* params, int64_t g, __mmask16 mask) {
  switch (w.scale_type) {
    case S_F16: return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(mask, static_cast<const uint16_t*>(params) + g));
    case S_BF16:
      return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(mask, static_cast<const uint16_t*>(params) + g)), 16));
    default: return _mm512_maskz_loadu_ps(mask, static_cast<const float*>(params) + g);
  }
}

// MLX affine rows: Σ_b scale_g(b) · dx_b · Σ q·qx over the 32-element blocks, plus Σ_g bias_g · Σ_g x.
template <int Type, int MR, int NR>
void affine_tile(const MatmulTask& t, int64_t m0, int64_t n0) {
  const Weight& w = *t.w;
  const int64_t K = w.cols;
  const int64_t N = w.rows;
  const int64_t nb = K / kBlock;
  const int64_t groups = K / w.group_size;
  const int shift = w.group_size == 32 ? 0 : w.group_size == 64 ? 1 : 2;  // log2(blocks per group)
  const int64_t row_bytes = weight_row_bytes(Type, K);
  const int64_t ahead = tiles_ahead(row_bytes, NR);
  // The scales and biases of the row `ahead` bytes on, in bytes from this row's.
  const int64_t params_ahead = ahead / row_bytes * groups * (w.scale_type == S_F32 ? 4 : 2);
  const __m512i expand = _mm512_srli_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15), shift);
  const uint8_t* wq[NR];
  for (int r = 0; r < NR; r++) wq[r] = w.data + (n0 + r) * row_bytes;
  __m512 acc[MR][NR];
  for (int i = 0; i < MR; i++)
    for (int r = 0; r < NR; r++) acc[i][r] = _mm512_setzero_ps();
  alignas(64) float scale[MR][NR][kGroup];
  for (int64_t g = 0; g < nb; g += kGroup) {
    const int64_t gb = std::min<int64_t>(kGroup, nb - g);
    const __mmask16 bmask = static_cast<__mmask16>((1u << gb) - 1);
    const __mmask16 gmask = static_cast<__mmask16>((1u << (gb >> shift)) - 1);
    __m512 sw[NR];
    for (int r = 0; r < NR; r++) {
      const int64_t at = (n0 + r) * groups + (g >> shift);
      prefetch_at(static_cast<const uint8_t*>(w.scales) + at * (w.scale_type == S_F32 ? 4 : 2), params_ahead);
      prefetch_at(static_cast<const uint8_t*>(w.biases) + at * (w.scale_type == S_F32 ? 4 : 2), params_ahead);
      sw[r] = _mm512_permutexvar_ps(expand, affine_params16(w, w.scales, at, gmask));
    }
    for (int i = 0; i < MR; i++) {
      const __m512 dx = _mm512_maskz_loadu_ps(bmask, t.xq.d + (m0 + i) * t.xq.b_stride + g);
      for (int r = 0; r < NR; r++) _mm512_store_ps(scale[i][r], _mm512_mul_ps(sw[r], dx));
    }
    constexpr int64_t ub = kUnitBlocks<Type>;
    for (int64_t p = 0; p * ub < gb; p++) {
      const int64_t u = g / ub + p;
      __m512i wv[NR][2];
      for (int r = 0; r < NR; r++) {
        prefetch_at(wq[r] + u * 64, ahead);
        unit_weights<Type>(wq[r], u, std::min(ub, gb - p * ub), wv[r]);
      }
      const __m512i lanes = unit_lanes<Type>(p);
      for (int i = 0; i < MR; i++) {
        const int8_t* xq = t.xq.q + (m0 + i) * t.xq.q_stride;
        for (int r = 0; r < NR; r++) {
          const __m512i dotp = unit_dot<Type>(wv[r], xq, u);
          acc[i][r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dotp), _mm512_permutexvar_ps(lanes, _mm512_load_ps(scale[i][r])), acc[i][r]);
        }
      }
    }
  }
  for (int i = 0; i < MR; i++) {
    const float* gsum = t.xq.gsum + (m0 + i) * t.xq.g_stride;
    for (int r = 0; r < NR; r++) {
      // The bias half, Σ_g bias_g · Σ_g x, sixteen groups at a time.
      __m512 bt = _mm512_setzero_ps();
      for (int64_t gi = 0; gi < groups; gi += 16) {
        const __mmask16 m = static_cast<__mmask16>((1u << std::min<int64_t>(16, groups - gi)) - 1);
        bt = _mm512_fmadd_ps(affine_params16(w, w.biases, (n0 + r) * groups + gi, m), _mm512_maskz_loadu_ps(m, gsum + gi), bt);
      }
      const float v = _mm512_reduce_add_ps(acc[i][r]) + _mm512_reduce_add_ps(bt);
      t.out[(m0 + i) * N + n0 + r] = v + (t.bias ? t.bias[n0 + r] : 0.0f);
    }
  }
}

// ---- k-quants (GGUF super-blocks), with x quantized in natural order ----
//
// Each 64-value chunk of a super-block becomes one vector of unsigned weights against 64 x
// values, and vpdpbusd's 16 lanes (4 values each) are scaled per lane: by d·sc·dx for the
// sub-block and x block the lane falls in. Q4_K / Q5_K subtract their mins as Σ dmin·m·s_x per
// sub-block (a sub-block is one x block); Q6_K's q − 32 subtracts 32·Σqx, which is shared by rows.

// Each vpdpbusd lane (4 values) -> the sub-block it falls in: `first` plus lane >> shift.
inline __m512i chunk_lanes(int first, int shift) {
  return _mm512_add_epi32(_mm512_set1_epi32(first), _mm512_srli_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15), shift));
}

// Q4_K (Q5 = false) and Q5_K.
template <bool Q5, int MR, int NR>
void k45_tile(const MatmulTask& t, int64_t m0, int64_t n0) {
  constexpr int64_t kBytes = Q5 ? kQ5KBytes : kQ4KBytes;
  const int64_t K = t.w->cols;
  const int64_t N = t.w->rows;
  const int64_t row_bytes = weight_row_bytes(Q5 ? W_Q5_K : W_Q4_K, K);
  const int64_t ahead = tiles_ahead(row_bytes, NR);
  __m512 acc[MR][NR];
  __m256 cor[MR][NR];
  for (int i = 0; i < MR; i++)
    for (int r = 0; r < NR; r++) {
      acc[i][r] = _mm512_setzero_ps();
      cor[i][r] = _mm256_setzero_ps();
    }
  alignas(64) float scale[MR][NR][16];
  for (int64_t sb = 0; sb < K / kQK; sb++) {
    const uint8_t* blk[NR];
    __m256 wsc[NR];
    for (int r = 0; r < NR; r++) {
      blk[r] = t.w->data + (n0 + r) * row_bytes + sb * kBytes;
      prefetch_block(blk[r], kBytes, ahead);
      const __m128i sm = unpack_scale_min(blk[r] + 4);
      const uint16_t* dd = reinterpret_cast<const uint16_t*>(blk[r]);
      wsc[r] = _mm256_mul_ps(_mm256_set1_ps(f16(dd[0])), _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(sm)));
      const __m256 wmin = _mm256_mul_ps(_mm256_set1_ps(f16(dd[1])), _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(sm, 8))));
      for (int i = 0; i < MR; i++) cor[i][r] = _mm256_fmadd_ps(wmin, _mm256_loadu_ps(t.xq.s + (m0 + i) * t.xq.b_stride + sb * 8), cor[i][r]);
    }
    for (int i = 0; i < MR; i++) {
      const __m256 dx = _mm256_loadu_ps(t.xq.d + (m0 + i) * t.xq.b_stride + sb * 8);
      for (int r = 0; r < NR; r++) _mm256_store_ps(scale[i][r], _mm256_mul_ps(wsc[r], dx));
    }
    for (int c = 0; c < 4; c++) {
      // Chunk c: the low nibbles are sub-block 2c, the high ones 2c + 1; Q5_K adds bits 2c and 2c + 1 of qh.
      __m512i wv[NR];
      for (int r = 0; r < NR; r++) {
        const __m256i packed = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk[r] + (Q5 ? 48 : 16) + 32 * c));
        __m256i lo = _mm256_and_si256(packed, _mm256_set1_epi8(0x0f));
        __m256i hi = _mm256_and_si256(_mm256_srli_epi16(packed, 4), _mm256_set1_epi8(0x0f));
        if constexpr (Q5) {
          const __m256i qh = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk[r] + 16));
          const __m256i one = _mm256_set1_epi8(1);
          lo = _mm256_or_si256(lo, _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2 * c), one), 4));
          hi = _mm256_or_si256(hi, _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2 * c + 1), one), 4));
        }
        wv[r] = _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
      }
      const __m512i lanes = chunk_lanes(2 * c, 3);
      for (int i = 0; i < MR; i++) {
        const __m512i xv = _mm512_loadu_si512(t.xq.q + (m0 + i) * t.xq.q_stride + sb * kQK + 64 * c);
        for (int r = 0; r < NR; r++) {
          const __m512i dotp = _mm512_dpbusd_epi32(_mm512_setzero_si512(), wv[r], xv);
          acc[i][r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dotp), _mm512_permutexvar_ps(lanes, _mm512_load_ps(scale[i][r])), acc[i][r]);
        }
      }
    }
  }
  for (int i = 0; i < MR; i++)
    for (int r = 0; r < NR; r++)
      t.out[(m0 + i) * N + n0 + r] = _mm512_reduce_add_ps(acc[i][r]) - hsum8(cor[i][r]) + (t.bias ? t.bias[n0 + r] : 0.0f);
}

template <int MR, int NR>
void q6k_tile(const MatmulTask& t, int64_t m0, int64_t n0) {
  const int64_t K = t.w->cols;
  const int64_t N = t.w->rows;
  const int64_t row_bytes = weight_row_bytes(W_Q6_K, K);
  const int64_t ahead = tiles_ahead(row_bytes, NR);
  __m512 acc[MR][NR];
  for (int i = 0; i < MR; i++)
    for (int r = 0; r < NR; r++) acc[i][r] = _mm512_setzero_ps();
  alignas(64) float scale[MR][NR][16];
  const __m512i thirty_two = _mm512_set1_epi8(32);
  const __m512i low4 = _mm512_set1_epi8(0x0f), low2 = _mm512_set1_epi8(3);
  for (int64_t sb = 0; sb < K / kQK; sb++) {
    const uint8_t* blk[NR];
    __m512 wsc[NR];
    for (int r = 0; r < NR; r++) {
      blk[r] = t.w->data + (n0 + r) * row_bytes + sb * kQ6KBytes;
      prefetch_block(blk[r], kQ6KBytes, ahead);
      const float d = f16(*reinterpret_cast<const uint16_t*>(blk[r] + 208));
      wsc[r] = _mm512_mul_ps(_mm512_set1_ps(d), _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(blk[r] + 192)))));
    }
    for (int i = 0; i < MR; i++) {
      // Sub-block j (16 values) lies in x block j / 2.
      const __m512 dx = _mm512_permutexvar_ps(chunk_lanes(0, 1), _mm512_castps256_ps512(_mm256_loadu_ps(t.xq.d + (m0 + i) * t.xq.b_stride + sb * 8)));
      for (int r = 0; r < NR; r++) _mm512_store_ps(scale[i][r], _mm512_mul_ps(wsc[r], dx));
    }
    for (int half = 0; half < 2; half++) {
      // A half's chunk 0 is values 0-63 (low nibbles of ql, qh bits 0-3), chunk 1 values 64-127 (high nibbles, bits 4-7).
      __m512i wv[NR][2];
      for (int r = 0; r < NR; r++) {
        const __m512i ql = _mm512_loadu_si512(blk[r] + 64 * half);
        const __m256i qh = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk[r] + 128 + 32 * half));
        const __m512i qh2 = _mm512_inserti64x4(_mm512_castsi256_si512(qh), _mm256_srli_epi16(qh, 2), 1);
        wv[r][0] = _mm512_or_si512(_mm512_and_si512(ql, low4), _mm512_slli_epi16(_mm512_and_si512(qh2, low2), 4));
        wv[r][1] = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(ql, 4), low4), _mm512_slli_epi16(_mm512_and_si512(_mm512_srli_epi16(qh2, 4), low2), 4));
      }
      for (int cc = 0; cc < 2; cc++) {
        const int c = 2 * half + cc;
        const __m512i lanes = chunk_lanes(4 * c, 2);
        for (int i = 0; i < MR; i++) {
          const __m512i xv = _mm512_loadu_si512(t.xq.q + (m0 + i) * t.xq.q_stride + sb * kQK + 64 * c);
          const __m512i offset = _mm512_dpbusd_epi32(_mm512_setzero_si512(), thirty_two, xv);
          for (int r = 0; r < NR; r++) {
            const __m512i dotp = _mm512_sub_epi32(_mm512_dpbusd_epi32(_mm512_setzero_si512(), wv[r][cc], xv), offset);
            acc[i][r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dotp), _mm512_permutexvar_ps(lanes, _mm512_load_ps(scale[i][r])), acc[i][r]);
          }
        }
      }
    }
  }
  for (int i = 0; i < MR; i++)
    for (int r = 0; r < NR; r++) t.out[(m0 + i) * N + n0 + r] = _mm512_reduce_add_ps(acc[i][r]) + (t.bias ? t.bias[n0 + r] : 0.0f);
}


#else  // AVX2

// x order: natural, except for MLX 4-bit weights, whose 16 packed bytes per block unpack into the
// block's even elements (low nibbles) and odd elements (high nibbles): [evens, odds] per block.
void quantize_x(int type, const float* x, int64_t K, int8_t* q, float* d, float* s) {
  const int64_t nb = K / kBlock;
  const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
  for (int64_t b = 0; b < nb; b++) {
    const float* p = x + b * kBlock;
    __m256 v[4];
    __m256 amax = _mm256_setzero_ps();
    for (int j = 0; j < 4; j++) {
      v[j] = _mm256_loadu_ps(p + 8 * j);
      amax = _mm256_max_ps(amax, _mm256_and_ps(v[j], abs_mask));
    }
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(amax), _mm256_extractf128_ps(amax, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    m = _mm_max_ss(m, _mm_movehdup_ps(m));
    const float db = _mm_cvtss_f32(m) / 127.0f;
    const __m256 id = _mm256_set1_ps(db != 0 ? 1.0f / db : 0.0f);
    __m256i qi[4];
    for (int j = 0; j < 4; j++) qi[j] = _mm256_cvtps_epi32(_mm256_mul_ps(v[j], id));  // nearest even
    const __m256i sum32 = _mm256_add_epi32(_mm256_add_epi32(qi[0], qi[1]), _mm256_add_epi32(qi[2], qi[3]));
    __m128i s4 = _mm_add_epi32(_mm256_castsi256_si128(sum32), _mm256_extracti128_si256(sum32, 1));
    s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0x4e));
    s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0xb1));
    d[b] = db;
    s[b] = db * static_cast<float>(_mm_cvtsi128_si32(s4));
    // Pack 32 int32 -> 32 int8, undoing the lane interleaving of the pack instructions.
    const __m256i a = _mm256_packs_epi32(qi[0], qi[1]);
    const __m256i c = _mm256_packs_epi16(a, _mm256_packs_epi32(qi[2], qi[3]));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(q + b * kBlock), _mm256_permutevar8x32_epi32(c, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7)));
    if (type == W_AFFINE4) {
      alignas(32) int8_t tmp[kBlock];
      std::memcpy(tmp, q + b * kBlock, kBlock);
      for (int j = 0; j < kBlock; j++) q[b * kBlock + (j % 2) * 16 + j / 2] = tmp[j];
    }
  }
}

// Eight partial sums of one block's weights · x, as int32.
template <int Type>
inline __m256i block_dot(const uint8_t* quants, int64_t b, __m256i x) {
  if constexpr (Type == W_AFFINE8) {
    // Unsigned 8-bit codes would saturate vpmaddubsw: widen both sides to 16 bits.
    const __m256i w = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(quants + b * kBlock));
    const __m256i lo = _mm256_madd_epi16(_mm256_cvtepu8_epi16(_mm256_castsi256_si128(w)), _mm256_cvtepi8_epi16(_mm256_castsi256_si128(x)));
    const __m256i hi = _mm256_madd_epi16(_mm256_cvtepu8_epi16(_mm256_extracti128_si256(w, 1)), _mm256_cvtepi8_epi16(_mm256_extracti128_si256(x, 1)));
    return _mm256_add_epi32(lo, hi);
  } else if constexpr (Type == W_Q8_0) {
    const __m256i w = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(quants + b * kBlock));
    const __m256i prod = _mm256_maddubs_epi16(_mm256_sign_epi8(w, w), _mm256_sign_epi8(x, w));
    return _mm256_madd_epi16(prod, _mm256_set1_epi16(1));
  } else {
    const __m128i packed = _mm_loadu_si128(reinterpret_cast<const __m128i*>(quants + b * kBlock / 2));
    const __m128i lo = _mm_and_si128(packed, _mm_set1_epi8(0x0f));
    const __m128i hi = _mm_and_si128(_mm_srli_epi16(packed, 4), _mm_set1_epi8(0x0f));
    return _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_set_m128i(hi, lo), x), _mm256_set1_epi16(1));
  }
}

template <int Type, int MR, int NR>
void quant_tile(const MatmulTask& t, int64_t m0, int64_t n0) {
  constexpr float kOffset = Type == W_Q8_0 ? 0.0f : 8.0f;
  const int64_t K = t.w->cols;
  const int64_t N = t.w->rows;
  const int64_t nb = K / kBlock;
  const QuantRows<Type, NR> rows(*t.w, n0);
  const auto& wq = rows.q;
  const auto& wd = rows.d;
  const int64_t ahead = rows.ahead;
  __m256 acc[MR][NR];
  float cor[MR][NR] = {};
  for (int i = 0; i < MR; i++)
    for (int r = 0; r < NR; r++) acc[i][r] = _mm256_setzero_ps();
  for (int64_t b = 0; b < nb; b++) {
    for (int r = 0; r < NR; r++) {
      prefetch_at(wq[r] + QuantRows<Type, NR>::quant_bytes(b * kBlock), ahead);
      if (b % 32 == 0) prefetch_at(wd[r] + b, ahead);  // a line of scales
    }
    float dw[NR];
    for (int r = 0; r < NR; r++) dw[r] = f16(wd[r][b]);
    for (int i = 0; i < MR; i++) {
      const int64_t m = m0 + i;
      const __m256i xv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(t.xq.q + m * t.xq.q_stride + b * kBlock));
      const float dx = t.xq.d[m * t.xq.b_stride + b];
      const float sx = t.xq.s[m * t.xq.b_stride + b];
      for (int r = 0; r < NR; r++) {
        acc[i][r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(block_dot<Type>(wq[r], b, xv)), _mm256_set1_ps(dw[r] * dx), acc[i][r]);
        if constexpr (Type == W_Q4_0) cor[i][r] += dw[r] * sx;
      }
    }
  }
  for (int i = 0; i < MR; i++)
    for (int r = 0; r < NR; r++)
      t.out[(m0 + i) * N + n0 + r] = hsum8(acc[i][r]) - kOffset * cor[i][r] + (t.bias ? t.bias[n0 + r] : 0.0f);
}

template <int Type, int MR, int NR>
void affine_tile(const MatmulTask& t, int64_t m0, int64_t n0) {
  const Weight& w = *t.w;
  const int64_t K = w.cols;
  const int64_t N = w.rows;
  const int64_t nb = K / kBlock;
  const int64_t groups = K / w.group_size;
  const int64_t blocks_per_group = w.group_size / kBlock;
  const int64_t row_bytes = weight_row_bytes(Type, K);
  const uint8_t* wq[NR];
  for (int r = 0; r < NR; r++) wq[r] = w.data + (n0 + r) * row_bytes;
  __m256 acc[MR][NR];
  for (int i = 0; i < MR; i++)
    for (int r = 0; r < NR; r++) acc[i][r] = _mm256_setzero_ps();
  float sw[NR] = {};
  for (int64_t b = 0; b < nb; b++) {
    if (b % blocks_per_group == 0)
      for (int r = 0; r < NR; r++) sw[r] = affine_param(w, w.scales, (n0 + r) * groups + b / blocks_per_group);
    for (int i = 0; i < MR; i++) {
      const int64_t m = m0 + i;
      const __m256i xv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(t.xq.q + m * t.xq.q_stride + b * kBlock));
      const float dx = t.xq.d[m * t.xq.b_stride + b];
      for (int r = 0; r < NR; r++) acc[i][r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(block_dot<Type>(wq[r], b, xv)), _mm256_set1_ps(sw[r] * dx), acc[i][r]);
    }
  }
  for (int i = 0; i < MR; i++) {
    const float* gsum = t.xq.gsum + (m0 + i) * t.xq.g_stride;
    for (int r = 0; r < NR; r++) {
      float v = hsum8(acc[i][r]);
      v += affine_bias_term(w, n0 + r, gsum);
      t.out[(m0 + i) * N + n0 + r] = v + (t.bias ? t.bias[n0 + r] : 0.0f);
    }
  }
}

// ---- k-quants (GGUF super-blocks), with x quantized in natural order ----
//
// One x block (32 values) at a time against unsigned weights: Q4_K / Q5_K's 32-value sub-blocks
// are x blocks, scaled by d·sc·dx, their mins subtracted as Σ dmin·m·s_x. Q6_K's two 16-value
// sub-blocks per x block enter as 16-bit integer scales in vpmaddwd, after q·qx − 32·qx.

// Q4_K (Q5 = false) and Q5_K.
template <bool Q5, int MR, int NR>
void k45_tile(const MatmulTask& t, int64_t m0, int64_t n0) {
  constexpr int64_t kBytes = Q5 ? kQ5KBytes : kQ4KBytes;
  const int64_t K = t.w->cols;
  const int64_t N = t.w->rows;
  const int64_t row_bytes = weight_row_bytes(Q5 ? W_Q5_K : W_Q4_K, K);
  const int64_t ahead = tiles_ahead(row_bytes, NR);
  const __m256i ones = _mm256_set1_epi16(1), low4 = _mm256_set1_epi8(0x0f);
  __m256 acc[MR][NR], cor[MR][NR];
  for (int i = 0; i < MR; i++)
    for (int r = 0; r < NR; r++) acc[i][r] = cor[i][r] = _mm256_setzero_ps();
  for (int64_t sb = 0; sb < K / kQK; sb++) {
    const uint8_t* blk[NR];
    alignas(32) float wsc[NR][8];
    for (int r = 0; r < NR; r++) {
      blk[r] = t.w->data + (n0 + r) * row_bytes + sb * kBytes;
      prefetch_block(blk[r], kBytes, ahead);
      const __m128i sm = unpack_scale_min(blk[r] + 4);
      const uint16_t* dd = reinterpret_cast<const uint16_t*>(blk[r]);
      _mm256_store_ps(wsc[r], _mm256_mul_ps(_mm256_set1_ps(f16(dd[0])), _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(sm))));
      const __m256 wmin = _mm256_mul_ps(_mm256_set1_ps(f16(dd[1])), _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(sm, 8))));
      for (int i = 0; i < MR; i++) cor[i][r] = _mm256_fmadd_ps(wmin, _mm256_loadu_ps(t.xq.s + (m0 + i) * t.xq.b_stride + sb * 8), cor[i][r]);
    }
    for (int c = 0; c < 4; c++) {
      // Chunk c: the low nibbles are sub-block 2c, the high ones 2c + 1; Q5_K adds bits 2c and 2c + 1 of qh.
      __m256i wv[NR][2];
      for (int r = 0; r < NR; r++) {
        const __m256i packed = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk[r] + (Q5 ? 48 : 16) + 32 * c));
        wv[r][0] = _mm256_and_si256(packed, low4);
        wv[r][1] = _mm256_and_si256(_mm256_srli_epi16(packed, 4), low4);
        if constexpr (Q5) {
          const __m256i qh = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk[r] + 16));
          const __m256i one = _mm256_set1_epi8(1);
          wv[r][0] = _mm256_or_si256(wv[r][0], _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2 * c), one), 4));
          wv[r][1] = _mm256_or_si256(wv[r][1], _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2 * c + 1), one), 4));
        }
      }
      for (int h = 0; h < 2; h++) {
        const int j = 2 * c + h;
        for (int i = 0; i < MR; i++) {
          const int64_t m = m0 + i;
          const __m256i xv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(t.xq.q + m * t.xq.q_stride + sb * kQK + 32 * j));
          const float dx = t.xq.d[m * t.xq.b_stride + sb * 8 + j];
          for (int r = 0; r < NR; r++) {
            const __m256i dotp = _mm256_madd_epi16(_mm256_maddubs_epi16(wv[r][h], xv), ones);
            acc[i][r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dotp), _mm256_set1_ps(wsc[r][j] * dx), acc[i][r]);
          }
        }
      }
    }
  }
  for (int i = 0; i < MR; i++)
    for (int r = 0; r < NR; r++) t.out[(m0 + i) * N + n0 + r] = hsum8(acc[i][r]) - hsum8(cor[i][r]) + (t.bias ? t.bias[n0 + r] : 0.0f);
}

template <int MR, int NR>
void q6k_tile(const MatmulTask& t, int64_t m0, int64_t n0) {
  const int64_t K = t.w->cols;
  const int64_t N = t.w->rows;
  const int64_t row_bytes = weight_row_bytes(W_Q6_K, K);
  const int64_t ahead = tiles_ahead(row_bytes, NR);
  const __m256i thirty_two = _mm256_set1_epi8(32);
  const __m256i low4 = _mm256_set1_epi8(0x0f), low2 = _mm256_set1_epi8(3);
  __m256 acc[MR][NR];
  for (int i = 0; i < MR; i++)
    for (int r = 0; r < NR; r++) acc[i][r] = _mm256_setzero_ps();
  for (int64_t sb = 0; sb < K / kQK; sb++) {
    const uint8_t* blk[NR];
    float d[NR];
    for (int r = 0; r < NR; r++) {
      blk[r] = t.w->data + (n0 + r) * row_bytes + sb * kQ6KBytes;
      prefetch_block(blk[r], kQ6KBytes, ahead);
      d[r] = f16(*reinterpret_cast<const uint16_t*>(blk[r] + 208));
    }
    for (int j = 0; j < 8; j++) {
      // x block j is values 32k + l (l < 32) of half j / 4, k = j % 4: low bits from
      // ql[l + 32·(k mod 2)] (nibble k / 2), high bits 2k and 2k + 1 of qh[l], scales 2k and 2k + 1.
      const int half = j / 4, k = j % 4;
      __m256i wv[NR], wsc[NR];
      for (int r = 0; r < NR; r++) {
        const __m256i ql = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk[r] + 64 * half + 32 * (k % 2)));
        const __m256i qh = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk[r] + 128 + 32 * half));
        const __m256i lo = _mm256_and_si256(_mm256_srli_epi16(ql, 4 * (k / 2)), low4);
        wv[r] = _mm256_or_si256(lo, _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2 * k), low2), 4));
        const int8_t* sc = reinterpret_cast<const int8_t*>(blk[r] + 192 + 8 * half + 2 * k);
        wsc[r] = _mm256_set_m128i(_mm_set1_epi16(sc[1]), _mm_set1_epi16(sc[0]));
      }
      for (int i = 0; i < MR; i++) {
        const int64_t m = m0 + i;
        const __m256i xv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(t.xq.q + m * t.xq.q_stride + sb * kQK + 32 * j));
        const __m256i offset = _mm256_maddubs_epi16(thirty_two, xv);
        const float dx = t.xq.d[m * t.xq.b_stride + sb * 8 + j];
        for (int r = 0; r < NR; r++) {
          // 16-bit lanes 0-7 cover the first 16 values (scale 2k), lanes 8-15 the rest (2k + 1).
          const __m256i dotp = _mm256_madd_epi16(_mm256_sub_epi16(_mm256_maddubs_epi16(wv[r], xv), offset), wsc[r]);
          acc[i][r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dotp), _mm256_set1_ps(d[r] * dx), acc[i][r]);
        }
      }
    }
  }
  for (int i = 0; i < MR; i++)
    for (int r = 0; r < NR; r++) t.out[(m0 + i) * N + n0 + r] = hsum8(acc[i][r]) + (t.bias ? t.bias[n0 + r] : 0.0f);
}

#endif


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
  static void run(const MatmulTask& t, int64_t m0, int64_t n0) { quant_tile<Q::kType, MR, NR>(t, m0, n0); }
};
struct Q8_0 {
  static constexpr int kType = W_Q8_0;
};
struct Q4_0 {
  static constexpr int kType = W_Q4_0;
};
template <class Q, int MR, int NR>
struct AffineTile {
  static void run(const MatmulTask& t, int64_t m0, int64_t n0) { affine_tile<Q::kType, MR, NR>(t, m0, n0); }
};
struct Affine4 {
  static constexpr int kType = W_AFFINE4;
};
struct Affine8 {
  static constexpr int kType = W_AFFINE8;
};
template <class Q, int MR, int NR>
struct KQuantTile {
  static void run(const MatmulTask& t, int64_t m0, int64_t n0) {
    if constexpr (Q::kType == W_Q6_K) q6k_tile<MR, NR>(t, m0, n0);
    else k45_tile<Q::kType == W_Q5_K, MR, NR>(t, m0, n0);
  }
};
struct Q4_K {
  static constexpr int kType = W_Q4_K;
};
struct Q5_K {
  static constexpr int kType = W_Q5_K;
};
struct Q6_K {
  static constexpr int kType = W_Q6_K;
};

void matmul_rows(const MatmulTask& t, int64_t n0, int64_t n1) {
  switch (t.w->type) {
    case W_F32: Tiler<DenseTile, LoadF32>::run(t, n0, n1); break;
    case W_BF16: Tiler<DenseTile, LoadBF16>::run(t, n0, n1); break;
    case W_F16: Tiler<DenseTile, LoadF16>::run(t, n0, n1); break;
    case W_Q8_0: Tiler<QuantTile, Q8_0>::run(t, n0, n1); break;
    case W_Q4_0: Tiler<QuantTile, Q4_0>::run(t, n0, n1); break;
    case W_AFFINE4: Tiler<AffineTile, Affine4>::run(t, n0, n1); break;
    case W_AFFINE8: Tiler<AffineTile, Affine8>::run(t, n0, n1); break;
    case W_Q4_K: Tiler<KQuantTile, Q4_K>::run(t, n0, n1); break;
    case W_Q5_K: Tiler<KQuantTile, Q5_K>::run(t, n0, n1); break;
    case W_Q6_K: Tiler<KQuantTile, Q6_K>::run(t, n0, n1); break;
    default: break;
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

// e^x for a vector: x = n·ln2 + r with |r| <= ln2/2, e^r by a degree-6 polynomial (relative
// error about 2e-7), and 2^n put into the exponent bits. Inputs are clamped to the range where
// the result is a normal float, which is all silu needs (it saturates long before).
inline V vexp(V x) {
#if defined(__AVX512F__)
  x = _mm512_max_ps(_mm512_min_ps(x, vset1(88.0f)), vset1(-87.0f));
  const V n = _mm512_roundscale_ps(vmul(x, vset1(1.44269504088896341f)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
#else
  x = _mm256_max_ps(_mm256_min_ps(x, vset1(88.0f)), vset1(-87.0f));
  const V n = _mm256_round_ps(vmul(x, vset1(1.44269504088896341f)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
#endif
  const V r = vfmadd(n, vset1(-0.693145751953125f), vfmadd(n, vset1(-1.428606765330187045e-06f), x));
  V p = vset1(1.0f / 720);
  p = vfmadd(p, r, vset1(1.0f / 120));
  p = vfmadd(p, r, vset1(1.0f / 24));
  p = vfmadd(p, r, vset1(1.0f / 6));
  p = vfmadd(p, r, vset1(0.5f));
  p = vfmadd(p, r, vset1(1.0f));
  p = vfmadd(p, r, vset1(1.0f));
#if defined(__AVX512F__)
  return _mm512_scalef_ps(p, n);
#else
  const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
#endif
}

void silu_mul(float* out, const float* gate, const float* up, int64_t n) {
  const V one = vset1(1.0f);
  int64_t i = 0;
  for (; i + VW <= n; i += VW) {
    const V g = vload(gate + i);
    const V e = vexp(vsub(vzero(), g));
#if defined(__AVX512F__)
    vstore(out + i, vmul(_mm512_div_ps(g, vadd(one, e)), vload(up + i)));
#else
    vstore(out + i, vmul(_mm256_div_ps(g, vadd(one, e)), vload(up + i)));
#endif
  }
  for (; i < n; i++) out[i] = gate[i] / (1.0f + std::exp(-gate[i])) * up[i];
}

// One tile of the online softmax: s *= scale; m = max(running_max, max s); s = e^(s − m); *sum = Σ s.
float softmax_tile(float* s, int64_t n, float scale, float running_max, float* sum) {
  const V vs = vset1(scale);
  V m = vset1(running_max);
  int64_t j = 0;
  for (; j + VW <= n; j += VW) {
    const V x = vmul(vload(s + j), vs);
    vstore(s + j, x);
    m = vmax(m, x);
  }
  float max = vmaxall(m);
  for (; j < n; j++) max = std::max(max, s[j] *= scale);
  const V vm = vset1(max);
  V acc = vzero();
  j = 0;
  for (; j + VW <= n; j += VW) {
    const V e = vexp(vsub(vload(s + j), vm));
    vstore(s + j, e);
    acc = vadd(acc, e);
  }
  float total = vsum(acc);
  for (; j < n; j++) total += s[j] = std::exp(s[j] - max);
  *sum = total;
  return max;
}

// Four keys at a time: four independent accumulation chains share each load of q.
void scores(const float* q, const float* keys, int64_t n, int64_t D, float* s) {
  int64_t j = 0;
  for (; j + 4 <= n; j += 4) {
    const float* k = keys + j * D;
    V a0 = vzero(), a1 = vzero(), a2 = vzero(), a3 = vzero();
    int64_t d = 0;
    for (; d + VW <= D; d += VW) {
      const V qv = vload(q + d);
      a0 = vfmadd(qv, vload(k + d), a0);
      a1 = vfmadd(qv, vload(k + D + d), a1);
      a2 = vfmadd(qv, vload(k + 2 * D + d), a2);
      a3 = vfmadd(qv, vload(k + 3 * D + d), a3);
    }
    float t[4] = {vsum(a0), vsum(a1), vsum(a2), vsum(a3)};
    for (; d < D; d++)
      for (int i = 0; i < 4; i++) t[i] += q[d] * k[i * D + d];
    for (int i = 0; i < 4; i++) s[j + i] = t[i];
  }
  for (; j < n; j++) s[j] = dot(q, keys + j * D, D);
}

// y stays in registers, up to four vectors at a time, while every value row is added in.
void accumulate(float* y, float c, const float* values, const float* p, int64_t n, int64_t D) {
  const V vc = vset1(c);
  int64_t d = 0;
  for (; d + 4 * VW <= D; d += 4 * VW) {
    V y0 = vmul(vload(y + d), vc), y1 = vmul(vload(y + d + VW), vc), y2 = vmul(vload(y + d + 2 * VW), vc), y3 = vmul(vload(y + d + 3 * VW), vc);
    for (int64_t j = 0; j < n; j++) {
      const V pj = vset1(p[j]);
      const float* v = values + j * D + d;
      y0 = vfmadd(vload(v), pj, y0);
      y1 = vfmadd(vload(v + VW), pj, y1);
      y2 = vfmadd(vload(v + 2 * VW), pj, y2);
      y3 = vfmadd(vload(v + 3 * VW), pj, y3);
    }
    vstore(y + d, y0);
    vstore(y + d + VW, y1);
    vstore(y + d + 2 * VW, y2);
    vstore(y + d + 3 * VW, y3);
  }
  for (; d + VW <= D; d += VW) {
    V y0 = vmul(vload(y + d), vc);
    for (int64_t j = 0; j < n; j++) y0 = vfmadd(vload(values + j * D + d), vset1(p[j]), y0);
    vstore(y + d, y0);
  }
  for (; d < D; d++) {
    float acc = y[d] * c;
    for (int64_t j = 0; j < n; j++) acc += p[j] * values[j * D + d];
    y[d] = acc;
  }
}

}  // namespace
}  // namespace TL_NS

#if defined(__AVX512F__)
const IsaKernels& avx512_kernels() {
  static const IsaKernels k{"avx512", avx512::matmul_rows, avx512::quantize_x, avx512::dot, avx512::scores, avx512::softmax_tile, avx512::accumulate, avx512::silu_mul};
  return k;
}
#else
const IsaKernels& avx2_kernels() {
  static const IsaKernels k{"avx2", avx2::matmul_rows, avx2::quantize_x, avx2::dot, avx2::scores, avx2::softmax_tile, avx2::accumulate, avx2::silu_mul};
  return k;
}
#endif

}  // namespace tl
