// x86 SIMD kernels, compiled twice: with -mavx2 -mfma -mf16c into namespace tl::avx2, and with
// the AVX-512 flags (F, BW, VL, DQ, VNNI) into tl::avx512. The AVX-512 build works on 16 floats
// per vector; the code below is shared, except the int8 matmuls: AVX2's are here, AVX-512's in
// kernels_vnni.cc (this file quantizes x for both).
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <type_traits>

#include "kernels.h"
#include "x86_util.h"

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
inline float hsum8(__m256 v) {
  return reduce8(v, [](__m128 a, __m128 b) { return _mm_add_ps(a, b); });
}

// ---- f32 vectors: 16 lanes with AVX-512, 8 with AVX2 ----
#if defined(__AVX512F__)
using V = __m512;
constexpr int VW = 16;
// Matmul tiles: up to kTileM rows of x by kTileN weight rows, with room in the 32 registers.
constexpr int kTileM = 4, kTileN = 4;
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
// Matmul tiles: up to kTileM rows of x by kTileN weight rows, within the 16 registers.
constexpr int kTileM = 4, kTileN = 3;
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
inline float vmaxall(V v) {
  return reduce8(v, [](__m128 a, __m128 b) { return _mm_max_ps(a, b); });
}
inline V vload_bf16(const uint16_t* p) {
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))), 16));
}
inline V vload_f16(const uint16_t* p) { return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))); }
// The first n (≤ 8) lanes from p, the rest zero. Whole vectors and the halves that affine
// scales with groups of 64 or 128 load take no detour through memory.
inline V vload_n(const float* p, int64_t n) {
  if (n == 8) return _mm256_loadu_ps(p);
  if (n == 4) return _mm256_zextps128_ps256(_mm_loadu_ps(p));
  if (n == 2) return _mm256_zextps128_ps256(_mm_castsi128_ps(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p))));
  if (n == 1) return _mm256_zextps128_ps256(_mm_load_ss(p));
  alignas(32) float b[8] = {};
  std::memcpy(b, p, n * sizeof(float));
  return _mm256_load_ps(b);
}
inline __m128i load_u16_n(const uint16_t* p, int64_t n) {
  if (n == 8) return _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  if (n == 4) return _mm_loadl_epi64(reinterpret_cast<const __m128i*>(p));
  if (n == 2) {
    int32_t v;
    std::memcpy(&v, p, 4);
    return _mm_cvtsi32_si128(v);
  }
  if (n == 1) return _mm_cvtsi32_si128(p[0]);
  alignas(16) uint16_t b[8] = {};
  std::memcpy(b, p, n * sizeof(uint16_t));
  return _mm_load_si128(reinterpret_cast<const __m128i*>(b));
}
inline V vload_f16_n(const uint16_t* p, int64_t n) { return _mm256_cvtph_ps(load_u16_n(p, n)); }
inline V vload_bf16_n(const uint16_t* p, int64_t n) {
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(load_u16_n(p, n)), 16));
}
using IV = __m256i;
inline V vcvt(IV v) { return _mm256_cvtepi32_ps(v); }
inline V vpermute(V v, IV lanes) { return _mm256_permutevar8x32_ps(v, lanes); }
inline IV vlane_index() { return _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7); }
inline IV vishr(IV v, int n) { return _mm256_srli_epi32(v, n); }
inline IV viadd(IV a, IV b) { return _mm256_add_epi32(a, b); }
inline IV viset1(int x) { return _mm256_set1_epi32(x); }
#endif

// How far ahead of the current position a weight row is prefetched (bytes).
constexpr int64_t kPrefetch = 4096;

// How far ahead to prefetch the weights of a tile of nr rows: whole tiles, at least kPrefetch
// bytes. Landing on the same column of a later row, the prefetch also finds that row's scales,
// which a fixed distance into long rows would pass by.
inline int64_t tiles_ahead(int64_t row_bytes, int nr) {
  const int64_t tile = row_bytes * nr;
  return (kPrefetch + tile - 1) / tile * tile;
}

inline void prefetch_at(const void* p, int64_t bytes) { _mm_prefetch(static_cast<const char*>(p) + bytes, _MM_HINT_T0); }

// What every tile of one matmul_rows call shares, worked out once per call.
struct TilePlan {
  int64_t row_bytes;
  int64_t ahead[kTileN + 1];  // tiles_ahead(row_bytes, nr) for tiles of nr rows
  // MLX affine weights only:
  int64_t groups = 0;                     // groups per row
  int shift = 0;                          // log2(blocks per group)
  int64_t param_bytes = 0;                // bytes per scale or bias
  int64_t params_ahead[kTileN + 1] = {};  // the parameters of the row ahead[nr] bytes on, in bytes from this row's
  explicit TilePlan(const Weight& w) : row_bytes(weight_row_bytes(w.type, w.cols)) {
    for (int nr = 1; nr <= kTileN; nr++) ahead[nr] = tiles_ahead(row_bytes, nr);
    if (is_affine(w.type)) {
      groups = w.cols / w.group_size;
      shift = w.group_size == 32 ? 0 : w.group_size == 64 ? 1 : 2;
      param_bytes = w.scale_type == S_F32 ? 4 : 2;
      for (int nr = 1; nr <= kTileN; nr++) params_ahead[nr] = ahead[nr] / row_bytes * groups * param_bytes;
    }
  }
};

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
void dense_tile(const MatmulTask& t, const TilePlan& plan, int64_t m0, int64_t n0) {
  const int64_t K = t.w->cols;
  const int64_t N = t.w->rows;
  const int64_t row_bytes = plan.row_bytes;
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

// ---- x quantized for the int8 kernels ----

#if defined(__AVX512F__)

// max |x| over one block of x.
inline float block_amax(const float* p) {
  return _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(_mm512_loadu_ps(p)), _mm512_abs_ps(_mm512_loadu_ps(p + 16))));
}

// One block of x quantized with scale d into q; sums gets Σq over each half of 16.
inline void quantize_block(const float* p, float d, int8_t* q, int sums[2]) {
  const __m512 id = _mm512_set1_ps(d != 0 ? 1.0f / d : 0.0f);
  const __m512i q0 = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_loadu_ps(p), id));  // nearest even
  const __m512i q1 = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_loadu_ps(p + 16), id));
  _mm_storeu_si128(reinterpret_cast<__m128i*>(q), _mm512_cvtsepi32_epi8(q0));
  _mm_storeu_si128(reinterpret_cast<__m128i*>(q + 16), _mm512_cvtsepi32_epi8(q1));
  sums[0] = _mm512_reduce_add_epi32(q0);
  sums[1] = _mm512_reduce_add_epi32(q1);
}

#else  // AVX2

inline float block_amax(const float* p) {
  const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
  __m256 amax = _mm256_setzero_ps();
  for (int j = 0; j < 4; j++) amax = _mm256_max_ps(amax, _mm256_and_ps(_mm256_loadu_ps(p + 8 * j), abs_mask));
  return reduce8(amax, [](__m128 a, __m128 b) { return _mm_max_ps(a, b); });
}

inline void quantize_block(const float* p, float d, int8_t* q, int sums[2]) {
  const __m256 id = _mm256_set1_ps(d != 0 ? 1.0f / d : 0.0f);
  __m256i qi[4];
  for (int j = 0; j < 4; j++) qi[j] = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(p + 8 * j), id));  // nearest even
  for (int h = 0; h < 2; h++) {
    const __m256i sum8 = _mm256_add_epi32(qi[2 * h], qi[2 * h + 1]);
    __m128i s4 = _mm_add_epi32(_mm256_castsi256_si128(sum8), _mm256_extracti128_si256(sum8, 1));
    s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0x4e));
    s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0xb1));
    sums[h] = _mm_cvtsi128_si32(s4);
  }
  // Pack 32 int32 -> 32 int8, undoing the lane interleaving of the pack instructions.
  const __m256i a = _mm256_packs_epi32(qi[0], qi[1]);
  const __m256i c = _mm256_packs_epi16(a, _mm256_packs_epi32(qi[2], qi[3]));
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(q), _mm256_permutevar8x32_epi32(c, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7)));
}

#endif

// What one vector load of weights holds: 32 (AVX2) or 64 (AVX-512) bytes of codes.
constexpr int64_t kUnitBytes = VW * 4;

// x order: natural for 8-bit codes and k-quants; for 4-bit codes it follows how one load of a
// unit's bytes unpacks into low and high nibbles. Q4_0 (blocks A, B, ...; byte j holds elements
// j and j + 16): [A0-15, B0-15, ..., A16-31, B16-31, ...]. MLX 4-bit (byte k holds elements 2k
// and 2k + 1): [the even elements of each block, then the odd ones].
// For k-quants the eight blocks of a super-block share one scale (as llama.cpp's Q8_K), so
// that the sub-block scales can apply to integer sums. s holds the code sums Σq: as they are for
// AVX-512, whose kernels correct offsets in int32, and times d for AVX2.
void quantize_x(int type, const float* x, int64_t K, int8_t* q, float* d, float* s) {
  const int64_t nb = K / kBlock;
  const bool four_bit = type == W_Q4_0 || type == W_AFFINE4;
  const int64_t span = is_kquant(type) ? kQK / kBlock : 1;  // blocks that share a scale
  constexpr int64_t ub = kUnitBytes / 16;                   // blocks per 4-bit unit
  // Zero the padding, and the missing blocks of a last partial unit, so that they add nothing.
  const int64_t written = four_bit ? nb / ub * ub * kBlock : K;
  std::memset(q + written, 0, (K + 127) / 128 * 128 - written);
  alignas(64) int8_t tmp[kBlock];
  for (int64_t b0 = 0; b0 < nb; b0 += span) {
    float amax = 0;
    for (int64_t b = b0; b < b0 + span; b++) amax = std::max(amax, block_amax(x + b * kBlock));
    const float db = amax / 127.0f;
#if defined(__AVX512F__)
    const float ds = 1.0f;
#else
    const float ds = db;
#endif
    for (int64_t b = b0; b < b0 + span; b++) {
      d[b] = db;
      int sums[2];
      quantize_block(x + b * kBlock, db, four_bit ? tmp : q + b * kBlock, sums);
      if (sums_per_block(type) == 2) {
        s[2 * b] = ds * static_cast<float>(sums[0]);
        s[2 * b + 1] = ds * static_cast<float>(sums[1]);
      } else {
        s[b] = ds * static_cast<float>(sums[0] + sums[1]);
      }
      int8_t* unit = q + b / ub * ub * kBlock;
      const int64_t slot = b % ub;
      if (type == W_Q4_0) {
        std::memcpy(unit + slot * 16, tmp, 16);
        std::memcpy(unit + ub * 16 + slot * 16, tmp + 16, 16);
      } else if (type == W_AFFINE4) {
        // The even elements, then the odd ones: each 128-bit half sorted by parity, then the halves' parts joined.
        const __m256i sorted = _mm256_shuffle_epi8(
            _mm256_loadu_si256(reinterpret_cast<const __m256i*>(tmp)),
            _mm256_setr_epi8(0, 2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7, 9, 11, 13, 15, 0, 2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7, 9, 11, 13, 15));
        const __m256i parts = _mm256_permute4x64_epi64(sorted, 0xd8);  // evens 0-7, evens 8-15, odds 0-7, odds 8-15
        _mm_storeu_si128(reinterpret_cast<__m128i*>(unit + slot * 16), _mm256_castsi256_si128(parts));
        _mm_storeu_si128(reinterpret_cast<__m128i*>(unit + ub * 16 + slot * 16), _mm256_extracti128_si256(parts, 1));
      }
    }
  }
}

#if !defined(__AVX512F__)

// Prefetches the lines of a block `bytes` long, `ahead` bytes on.
inline void prefetch_block(const uint8_t* p, int64_t bytes, int64_t ahead) {
  for (int64_t off = 0; off < bytes; off += 64) prefetch_at(p + off, ahead);
}

// ---- quantized weights (AVX2): int8 dot products per 32-value block, scaled per block ----
//
// A row of x is quantized per block of 32 (q, d, s = d·Σq). For weight block b of row n:
//   dot_b = Σ_j w_j x_j ≈ dw_b · dx_b · Σ_j qw_j qx_j
// Q8_0 / Q4_0 scale each block by its own f16 dw_b; MLX affine weights (w = scale·q + bias per
// group) by their group's scale, and add Σ_g bias_g · Σ_g x̂ (x as quantized, summed per group).
//
// A "unit" is what one vector load of weights holds: one block of 8-bit codes, two blocks of
// 4-bit codes. The dot-product instructions multiply unsigned
// by signed bytes, so some codes enter shifted (v = q + offset) and the tile subtracts
// offset · Σ_b dw_b · s_b.

template <int Type>
constexpr int64_t kUnitBlocks = kFourBit<Type> ? kUnitBytes / 16 : kUnitBytes / 32;

// vpmaddubsw saturates its pair sums at 16 bits: 8-bit codes enter signed, in [-128, 127]
// (MLX's unsigned ones shifted down by 128), with their sign moved onto x.
template <int Type>
constexpr float kOffset = Type == W_Q4_0      ? 8.0f
                          : Type == W_AFFINE8 ? -128.0f
                                              : 0.0f;

// Unit u of a row: 8-bit codes in v[0]; 4-bit codes' low nibbles in v[0], high nibbles in v[1].
// `blocks` (1 .. kUnitBlocks) are present.
template <int Type>
inline void unit_weights(const uint8_t* quants, int64_t u, int64_t blocks, IV v[2]) {
  const uint8_t* p = quants + u * kUnitBytes;
  if constexpr (kFourBit<Type>) {
    const __m256i raw = blocks == kUnitBlocks<Type> ? _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))
                                                    : _mm256_zextsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
    v[0] = _mm256_and_si256(raw, _mm256_set1_epi8(0x0f));
    v[1] = _mm256_and_si256(_mm256_srli_epi16(raw, 4), _mm256_set1_epi8(0x0f));
  } else {
    __m256i q = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
    if constexpr (Type == W_AFFINE8) q = _mm256_xor_si256(q, _mm256_set1_epi8(static_cast<char>(0x80)));
    v[0] = q;
  }
}

template <int Type>
inline IV unit_dot(const IV v[2], const int8_t* xq, int64_t u) {
  const int8_t* x = xq + u * kUnitBlocks<Type> * kBlock;
  const __m256i x0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x));
  __m256i pairs;
  if constexpr (kFourBit<Type>) {
    // Each pair sum is at most 2 · 15 · 127, so the two halves add without overflow in 16 bits.
    const __m256i x1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x + 32));
    pairs = _mm256_add_epi16(_mm256_maddubs_epi16(v[0], x0), _mm256_maddubs_epi16(v[1], x1));
  } else {
    // |q| is taken here, per row of x, rather than held: AVX2 has only 16 registers.
    pairs = _mm256_maddubs_epi16(_mm256_sign_epi8(v[0], v[0]), _mm256_sign_epi8(x0, v[0]));
  }
  return _mm256_madd_epi16(pairs, _mm256_set1_epi16(1));
}

// Unit p of a group's int32 lanes -> the block each falls in: lanes of an 8-bit unit split
// evenly over its blocks; a 4-bit unit's lanes likewise (one 16-byte half per block and nibble).
template <int Type>
inline IV unit_lanes(int64_t p) {
  constexpr int kLanesPerBlock = VW / kUnitBlocks<Type>;
  constexpr int kShift = kLanesPerBlock == 8 ? 3 : kLanesPerBlock == 4 ? 2 : 1;
  return viadd(vishr(vlane_index(), kShift), viset1(static_cast<int>(p * kUnitBlocks<Type>)));
}

// The scale of each lane of unit p, from the block scales s of its group.
template <int Type>
inline V unit_scale(const float* s, int64_t p, IV lanes) {
  if constexpr (kUnitBlocks<Type> == 1) return _mm256_broadcast_ss(s + p);
  return vpermute(vload(s), lanes);
}

// Affine scales or biases [at, at + n) (n ≤ VW) as f32 lanes, the rest zero.
inline V load_params(const Weight& w, const void* params, int64_t at, int64_t n) {
  switch (w.scale_type) {
    case S_F16:
      return vload_f16_n(static_cast<const uint16_t*>(params) + at, n);
    case S_BF16:
      return vload_bf16_n(static_cast<const uint16_t*>(params) + at, n);
    default:
      return vload_n(static_cast<const float*>(params) + at, n);
  }
}

// Where a tile's block scales come from: `at(r, g, n)` gives the scales of blocks [g, g + n) of
// its row r (n ≤ VW, lanes past n zero), prefetching those `ahead` rows on; where kBiases,
// `biases_at` gives the affine biases of those blocks' groups.

// Q8_0 / Q4_0 in the "rows" layout: each row's f16 scales follow its quants.
template <int Type, int NR>
struct RowScales {
  const uint16_t* d[NR];
  int64_t ahead;
  RowScales(const Weight& w, const TilePlan& plan, int64_t n0) : ahead(plan.ahead[NR]) {
    const int64_t quant_bytes = Type == W_Q8_0 ? w.cols : w.cols / 2;
    for (int r = 0; r < NR; r++) d[r] = reinterpret_cast<const uint16_t*>(w.data + (n0 + r) * plan.row_bytes + quant_bytes);
  }
  V at(int r, int64_t g, int64_t n) const {
    prefetch_at(d[r] + g, ahead);
    return vload_f16_n(d[r] + g, n);
  }
  static constexpr bool kBiases = false;
};

// MLX affine: one scale and one bias per group of 32, 64 or 128 columns (1, 2 or 4 blocks).
template <int Type, int NR>
struct GroupScales {
  const Weight& w;
  const TilePlan& plan;
  int64_t first[NR];  // index of each row's first group
  IV expand;          // block lane -> group lane
  GroupScales(const Weight& weight, const TilePlan& tile_plan, int64_t n0) : w(weight), plan(tile_plan) {
    for (int r = 0; r < NR; r++) first[r] = (n0 + r) * plan.groups;
    expand = vishr(vlane_index(), plan.shift);
  }
  V at(int r, int64_t g, int64_t n) const {
    const int64_t at = first[r] + (g >> plan.shift);
    prefetch_at(static_cast<const uint8_t*>(w.scales) + at * plan.param_bytes, plan.params_ahead[NR]);
    prefetch_at(static_cast<const uint8_t*>(w.biases) + at * plan.param_bytes, plan.params_ahead[NR]);
    return vpermute(load_params(w, w.scales, at, n >> plan.shift), expand);
  }
  // The biases of the groups of blocks [g, g + n), one lane per group.
  static constexpr bool kBiases = true;
  V biases_at(int r, int64_t g, int64_t n) const { return load_params(w, w.biases, first[r] + (g >> plan.shift), n >> plan.shift); }
};

template <int Type, int NR>
using BlockScales = std::conditional_t<Type == W_Q8_0 || Type == W_Q4_0, RowScales<Type, NR>, GroupScales<Type, NR>>;

// The pointers of an MR x NR tile, worked out once per tile.
template <int Type, int MR, int NR>
struct BlockTileRows {
  const uint8_t* wq[NR];
  const int8_t* xq[MR];
  const float* xd[MR];
  const float* xs[MR];
  const float* gsum[MR];
  BlockTileRows(const MatmulTask& t, const TilePlan& plan, int64_t m0, int64_t n0) {
    for (int r = 0; r < NR; r++) wq[r] = t.w->data + (n0 + r) * plan.row_bytes;
    for (int i = 0; i < MR; i++) {
      xq[i] = t.xq.q + (m0 + i) * t.xq.q_stride;
      xd[i] = t.xq.d + (m0 + i) * t.xq.b_stride;
      xs[i] = t.xq.s + (m0 + i) * t.xq.s_stride;
      gsum[i] = t.xq.gsum + (m0 + i) * t.xq.g_stride;
    }
  }
};

// Blocks [g, g + gb) of a tile: one vector of block scales. A full group (gb = VW, known when
// compiling) takes no branches on its size; only the last group of a row may be partial.
template <int Type, int MR, int NR, bool kFull>
inline void block_group(const TilePlan& plan, const BlockScales<Type, NR>& scales, const BlockTileRows<Type, MR, NR>& p, int64_t g,
                        int64_t gb, V (&acc)[MR][NR]) {
  using Scales = BlockScales<Type, NR>;
  constexpr int64_t ub = kUnitBlocks<Type>;
  const int64_t n = kFull ? VW : gb;
  alignas(64) float scale[MR][NR][VW];  // dw_b · dx_b for the blocks of the group
  V dw[NR];
  for (int r = 0; r < NR; r++) dw[r] = scales.at(r, g, n);
  for (int i = 0; i < MR; i++) {
    const V dx = kFull ? vload(p.xd[i] + g) : vload_n(p.xd[i] + g, n);
    for (int r = 0; r < NR; r++) vstore(scale[i][r], vmul(dw[r], dx));
  }
  // The offset correction −offset · Σ_b dw_b · s_b and the affine bias half Σ_g bias_g · Σ_g x̂
  // of these blocks join the same accumulators: only the sum of their lanes counts.
  if constexpr (kOffset<Type> != 0.0f) {
    for (int i = 0; i < MR; i++) {
      const V sx = vmul(kFull ? vload(p.xs[i] + g) : vload_n(p.xs[i] + g, n), vset1(-kOffset<Type>));
      for (int r = 0; r < NR; r++) acc[i][r] = vfmadd(dw[r], sx, acc[i][r]);
    }
  }
  if constexpr (Scales::kBiases) {
    V bw[NR];
    for (int r = 0; r < NR; r++) bw[r] = scales.biases_at(r, g, n);
    for (int i = 0; i < MR; i++) {
      const V gx = vload_n(p.gsum[i] + (g >> plan.shift), n >> plan.shift);
      for (int r = 0; r < NR; r++) acc[i][r] = vfmadd(bw[r], gx, acc[i][r]);
    }
  }
  const int64_t units = kFull ? VW / ub : (n + ub - 1) / ub;
  for (int64_t q = 0; q < units; q++) {
    const int64_t u = g / ub + q;  // unit index within the row
    IV wv[NR][2];
    for (int r = 0; r < NR; r++) {
      prefetch_at(p.wq[r] + u * kUnitBytes, plan.ahead[NR]);
      unit_weights<Type>(p.wq[r], u, kFull ? ub : std::min(ub, n - q * ub), wv[r]);
    }
    const IV lanes = unit_lanes<Type>(q);
    for (int i = 0; i < MR; i++)
      for (int r = 0; r < NR; r++)
        acc[i][r] = vfmadd(vcvt(unit_dot<Type>(wv[r], p.xq[i], u)), unit_scale<Type>(scale[i][r], q, lanes), acc[i][r]);
  }
}

template <int Type, int MR, int NR>
void block_tile(const MatmulTask& t, const TilePlan& plan, int64_t m0, int64_t n0) {
  const int64_t nb = t.w->cols / kBlock;
  const BlockScales<Type, NR> scales(*t.w, plan, n0);
  const BlockTileRows<Type, MR, NR> p(t, plan, m0, n0);
  V acc[MR][NR];
  for (int i = 0; i < MR; i++)
    for (int r = 0; r < NR; r++) acc[i][r] = vzero();
  int64_t g = 0;
  for (; g + VW <= nb; g += VW) block_group<Type, MR, NR, true>(plan, scales, p, g, VW, acc);
  if (g < nb) block_group<Type, MR, NR, false>(plan, scales, p, g, nb - g, acc);
  const int64_t N = t.w->rows;
  for (int i = 0; i < MR; i++)
    for (int r = 0; r < NR; r++) t.out[(m0 + i) * N + n0 + r] = vsum(acc[i][r]) + (t.bias ? t.bias[n0 + r] : 0.0f);
}
// ---- k-quants (GGUF super-blocks), with x quantized in natural order ----
//
// x has one scale per super-block, so each sub-block's products enter an int32 sum scaled by
// the sub-block's integer scale (vpmaddwd), and the float conversion and the d·dx scaling come
// once per super-block. Q4_K / Q5_K's 32-value sub-blocks are x blocks, their mins subtracted as
// Σ dmin·m·s_x; Q6_K's 16-value sub-blocks pair up in an x block, after q·qx − 32·qx.

// Q4_K (Q5 = false) and Q5_K.
template <bool Q5, int MR, int NR>
void k45_tile(const MatmulTask& t, const TilePlan& plan, int64_t m0, int64_t n0) {
  constexpr int64_t kBytes = Q5 ? kQ5KBytes : kQ4KBytes;
  const int64_t K = t.w->cols;
  const int64_t N = t.w->rows;
  const int64_t row_bytes = plan.row_bytes;
  const int64_t ahead = plan.ahead[NR];
  const __m256i low4 = _mm256_set1_epi8(0x0f);
  __m256 acc[MR][NR];
  for (int i = 0; i < MR; i++)
    for (int r = 0; r < NR; r++) acc[i][r] = _mm256_setzero_ps();
  for (int64_t sb = 0; sb < K / kQK; sb++) {
    const uint8_t* blk[NR];
    __m256i sc[NR];  // the 8 sub-block scales as int16, in both 128-bit lanes
    float d[NR];
    for (int r = 0; r < NR; r++) {
      blk[r] = t.w->data + (n0 + r) * row_bytes + sb * kBytes;
      prefetch_block(blk[r], kBytes, ahead);
      const __m128i sm = unpack_scale_min(blk[r] + 4);
      sc[r] = _mm256_broadcastsi128_si256(_mm_cvtepu8_epi16(sm));
      const uint16_t* dd = reinterpret_cast<const uint16_t*>(blk[r]);
      d[r] = f16(dd[0]);
      // The mins: acc −= dmin · m_j · s_j (only the sum of the lanes counts).
      const __m256 wmin = _mm256_mul_ps(_mm256_set1_ps(-f16(dd[1])), _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(sm, 8))));
      for (int i = 0; i < MR; i++)
        acc[i][r] = _mm256_fmadd_ps(wmin, _mm256_loadu_ps(t.xq.s + (m0 + i) * t.xq.s_stride + sb * 8), acc[i][r]);
    }
    __m256i isum[MR][NR];
    for (int i = 0; i < MR; i++)
      for (int r = 0; r < NR; r++) isum[i][r] = _mm256_setzero_si256();
    for (int c = 0; c < 4; c++) {
      // Chunk c: the low nibbles are sub-block 2c, the high ones 2c + 1; Q5_K adds bits 2c and 2c + 1 of qh.
      for (int r = 0; r < NR; r++) {
        const __m256i packed = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk[r] + (Q5 ? 48 : 16) + 32 * c));
        __m256i lo = _mm256_and_si256(packed, low4);
        __m256i hi = _mm256_and_si256(_mm256_srli_epi16(packed, 4), low4);
        if constexpr (Q5) {
          const __m256i qh = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk[r] + 16));
          const __m256i one = _mm256_set1_epi8(1);
          lo = _mm256_or_si256(lo, _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2 * c), one), 4));
          hi = _mm256_or_si256(hi, _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2 * c + 1), one), 4));
        }
        // Bytes 2j and 2j + 1 of each lane are scale j: spread over all sixteen int16 lanes.
        const __m256i sc_lo = _mm256_shuffle_epi8(sc[r], _mm256_set1_epi16(static_cast<int16_t>(0x0100 + 0x0202 * 2 * c)));
        const __m256i sc_hi = _mm256_shuffle_epi8(sc[r], _mm256_set1_epi16(static_cast<int16_t>(0x0100 + 0x0202 * (2 * c + 1))));
        for (int i = 0; i < MR; i++) {
          const int8_t* xq = t.xq.q + (m0 + i) * t.xq.q_stride + sb * kQK + 64 * c;
          // Pair sums are at most 2 · 31 · 127, times a scale of at most 63: far from overflow.
          const __m256i plo = _mm256_madd_epi16(_mm256_maddubs_epi16(lo, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xq))), sc_lo);
          const __m256i phi =
              _mm256_madd_epi16(_mm256_maddubs_epi16(hi, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xq + 32))), sc_hi);
          isum[i][r] = _mm256_add_epi32(isum[i][r], _mm256_add_epi32(plo, phi));
        }
      }
    }
    for (int i = 0; i < MR; i++) {
      const float dx = t.xq.d[(m0 + i) * t.xq.b_stride + sb * 8];
      for (int r = 0; r < NR; r++) acc[i][r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum[i][r]), _mm256_set1_ps(d[r] * dx), acc[i][r]);
    }
  }
  for (int i = 0; i < MR; i++)
    for (int r = 0; r < NR; r++) t.out[(m0 + i) * N + n0 + r] = hsum8(acc[i][r]) + (t.bias ? t.bias[n0 + r] : 0.0f);
}

template <int MR, int NR>
void q6k_tile(const MatmulTask& t, const TilePlan& plan, int64_t m0, int64_t n0) {
  const int64_t K = t.w->cols;
  const int64_t N = t.w->rows;
  const int64_t row_bytes = plan.row_bytes;
  const int64_t ahead = plan.ahead[NR];
  const __m256i thirty_two = _mm256_set1_epi8(32);
  const __m256i low4 = _mm256_set1_epi8(0x0f), bits45 = _mm256_set1_epi8(0x30);
  // Bytes 0-1 (int16 lane 0) to the low eight int16 lanes, bytes 2-3 to the high eight.
  const __m256i pair = _mm256_setr_epi8(0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3);
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
    __m256i isum[MR][NR];
    for (int i = 0; i < MR; i++)
      for (int r = 0; r < NR; r++) isum[i][r] = _mm256_setzero_si256();
    for (int half = 0; half < 2; half++) {
      // The eight scales of this half as int16, in both 128-bit lanes, so that one byte shuffle
      // per x block spreads scale 2k over the low eight lanes and 2k + 1 over the high eight.
      __m256i sc[NR];
      for (int r = 0; r < NR; r++)
        sc[r] = _mm256_broadcastsi128_si256(_mm_cvtepi8_epi16(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(blk[r] + 192 + 8 * half))));
      for (int k = 0; k < 4; k++) {
        // x block 4·half + k is values 32k + l (l < 32) of the half: low bits from
        // ql[l + 32·(k mod 2)] (nibble k / 2), high bits 2k and 2k + 1 of qh[l].
        const int j = 4 * half + k;
        const __m256i spread = _mm256_add_epi8(pair, _mm256_set1_epi8(static_cast<char>(4 * k)));  // scales 2k and 2k + 1
        __m256i offset[MR];
        for (int i = 0; i < MR; i++)
          offset[i] = _mm256_maddubs_epi16(
              thirty_two, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(t.xq.q + (m0 + i) * t.xq.q_stride + sb * kQK + 32 * j)));
        for (int r = 0; r < NR; r++) {
          const __m256i ql = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk[r] + 64 * half + 32 * (k % 2)));
          const __m256i qh = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk[r] + 128 + 32 * half));
          const __m256i lo = _mm256_and_si256(k / 2 ? _mm256_srli_epi16(ql, 4) : ql, low4);
          // Bits 2k and 2k + 1 of qh moved to bits 4 and 5.
          const __m256i hi = k < 2 ? _mm256_slli_epi16(qh, 4 - 2 * k) : k == 2 ? qh : _mm256_srli_epi16(qh, 2);
          const __m256i wv = _mm256_or_si256(lo, _mm256_and_si256(hi, bits45));
          const __m256i wsc = _mm256_shuffle_epi8(sc[r], spread);
          for (int i = 0; i < MR; i++) {
            const __m256i xv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(t.xq.q + (m0 + i) * t.xq.q_stride + sb * kQK + 32 * j));
            // 16-bit lanes 0-7 cover the first 16 values (scale 2k), lanes 8-15 the rest (2k + 1).
            isum[i][r] = _mm256_add_epi32(isum[i][r], _mm256_madd_epi16(_mm256_sub_epi16(_mm256_maddubs_epi16(wv, xv), offset[i]), wsc));
          }
        }
      }
    }
    for (int i = 0; i < MR; i++) {
      const float dx = t.xq.d[(m0 + i) * t.xq.b_stride + sb * 8];
      for (int r = 0; r < NR; r++) acc[i][r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum[i][r]), _mm256_set1_ps(d[r] * dx), acc[i][r]);
    }
  }
  for (int i = 0; i < MR; i++)
    for (int r = 0; r < NR; r++) t.out[(m0 + i) * N + n0 + r] = hsum8(acc[i][r]) + (t.bias ? t.bias[n0 + r] : 0.0f);
}

#endif

// Covers rows [n0, n1) x all M with tiles of up to kTileM x kTileN, narrower at the edges.
template <template <class, int, int> class Tile, class T>
struct Tiler {
  template <int MR>
  static void rows(const MatmulTask& t, const TilePlan& plan, int64_t m0, int64_t n0, int64_t n1) {
    int64_t n = n0;
    for (; n + kTileN <= n1; n += kTileN) Tile<T, MR, kTileN>::run(t, plan, m0, n);
    for (; n < n1; n++) Tile<T, MR, 1>::run(t, plan, m0, n);
  }
  template <int MR>
  static void rest(const MatmulTask& t, const TilePlan& plan, int64_t m, int64_t n0, int64_t n1) {
    if constexpr (MR > 0) {
      if (t.M - m == MR)
        rows<MR>(t, plan, m, n0, n1);
      else
        rest<MR - 1>(t, plan, m, n0, n1);
    }
  }
  static void run(const MatmulTask& t, int64_t n0, int64_t n1) {
    const TilePlan plan(*t.w);
    int64_t m = 0;
    for (; m + kTileM <= t.M; m += kTileM) rows<kTileM>(t, plan, m, n0, n1);
    rest<kTileM - 1>(t, plan, m, n0, n1);
  }
};

template <class L, int MR, int NR>
struct DenseTile {
  static void run(const MatmulTask& t, const TilePlan& plan, int64_t m0, int64_t n0) { dense_tile<L, MR, NR>(t, plan, m0, n0); }
};
#if !defined(__AVX512F__)
template <class Q, int MR, int NR>
struct BlockTile {
  static void run(const MatmulTask& t, const TilePlan& plan, int64_t m0, int64_t n0) { block_tile<Q::kType, MR, NR>(t, plan, m0, n0); }
};
struct Q8_0 {
  static constexpr int kType = W_Q8_0;
};
struct Q4_0 {
  static constexpr int kType = W_Q4_0;
};
struct Affine4 {
  static constexpr int kType = W_AFFINE4;
};
struct Affine8 {
  static constexpr int kType = W_AFFINE8;
};
template <class Q, int MR, int NR>
struct KQuantTile {
  static void run(const MatmulTask& t, const TilePlan& plan, int64_t m0, int64_t n0) {
    if constexpr (Q::kType == W_Q6_K)
      q6k_tile<MR, NR>(t, plan, m0, n0);
    else
      k45_tile<Q::kType == W_Q5_K, MR, NR>(t, plan, m0, n0);
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

#endif

void matmul_rows(const MatmulTask& t, int64_t n0, int64_t n1) {
  switch (t.w->type) {
    case W_F32:
      Tiler<DenseTile, LoadF32>::run(t, n0, n1);
      break;
    case W_BF16:
      Tiler<DenseTile, LoadBF16>::run(t, n0, n1);
      break;
    case W_F16:
      Tiler<DenseTile, LoadF16>::run(t, n0, n1);
      break;
#if defined(__AVX512F__)
    default:
      // The int8 types, on the kernels that share their float steps with the strips and tiles.
      vnni::matmul_rows(t, n0, n1);
      break;
#else
    case W_Q8_0:
      Tiler<BlockTile, Q8_0>::run(t, n0, n1);
      break;
    case W_Q4_0:
      Tiler<BlockTile, Q4_0>::run(t, n0, n1);
      break;
    case W_AFFINE4:
      Tiler<BlockTile, Affine4>::run(t, n0, n1);
      break;
    case W_AFFINE8:
      Tiler<BlockTile, Affine8>::run(t, n0, n1);
      break;
    case W_Q4_K:
      Tiler<KQuantTile, Q4_K>::run(t, n0, n1);
      break;
    case W_Q5_K:
      Tiler<KQuantTile, Q5_K>::run(t, n0, n1);
      break;
    case W_Q6_K:
      Tiler<KQuantTile, Q6_K>::run(t, n0, n1);
      break;
    default:
      break;
#endif
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

inline V silu_mul_vector(V g, V u) {
  const V e = vexp(vsub(vzero(), g));
#if defined(__AVX512F__)
  return vmul(_mm512_div_ps(g, vadd(vset1(1.0f), e)), u);
#else
  return vmul(_mm256_div_ps(g, vadd(vset1(1.0f), e)), u);
#endif
}

void silu_mul(float* out, const float* gate, const float* up, int64_t n) {
  int64_t i = 0;
  for (; i + VW <= n; i += VW) vstore(out + i, silu_mul_vector(vload(gate + i), vload(up + i)));
  if (i < n) {
    // The tail through the same vector code, so an element's value does not depend on where
    // the caller's piece of the row ends.
    alignas(64) float g[VW] = {}, u[VW] = {}, o[VW];
    std::memcpy(g, gate + i, (n - i) * sizeof(float));
    std::memcpy(u, up + i, (n - i) * sizeof(float));
    vstore(o, silu_mul_vector(vload(g), vload(u)));
    std::memcpy(out + i, o, (n - i) * sizeof(float));
  }
}

void widen_f16(const uint16_t* src, float* dst, int64_t n) {
  int64_t i = 0;
  for (; i + VW <= n; i += VW) vstore(dst + i, vload_f16(src + i));
  for (; i < n; i++) dst[i] = f16(src[i]);
}

void widen_bf16(const uint16_t* src, float* dst, int64_t n) {
  int64_t i = 0;
  for (; i + VW <= n; i += VW) vstore(dst + i, vload_bf16(src + i));
  for (; i < n; i++) dst[i] = bf16_to_f32(src[i]);
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

// a[k] -> lane k of the result: the sum of a[k]'s lanes, for VW vectors at once. Each step adds
// vectors pairwise after interleaving them, halving the vectors and doubling what each lane sums.
inline V sum_lanes(V a[VW]) {
#if defined(__AVX512F__)
  V b[8], c[4], d[2];
  // b[i]: within each 128-bit lane, partial sums of a[2i] and a[2i + 1] at positions (0, 2) and (1, 3).
  for (int i = 0; i < 8; i++) b[i] = _mm512_add_ps(_mm512_unpacklo_ps(a[2 * i], a[2 * i + 1]), _mm512_unpackhi_ps(a[2 * i], a[2 * i + 1]));
  // c[i]: within each 128-bit lane, one partial sum of each of a[4i] .. a[4i + 3].
  for (int i = 0; i < 4; i++) {
    const __m512d x = _mm512_castps_pd(b[2 * i]), y = _mm512_castps_pd(b[2 * i + 1]);
    c[i] = _mm512_add_ps(_mm512_castpd_ps(_mm512_unpacklo_pd(x, y)), _mm512_castpd_ps(_mm512_unpackhi_pd(x, y)));
  }
  // Then the four 128-bit lanes: pairs of them, twice.
  for (int i = 0; i < 2; i++)
    d[i] = _mm512_add_ps(_mm512_shuffle_f32x4(c[2 * i], c[2 * i + 1], 0x88), _mm512_shuffle_f32x4(c[2 * i], c[2 * i + 1], 0xdd));
  return _mm512_add_ps(_mm512_shuffle_f32x4(d[0], d[1], 0x88), _mm512_shuffle_f32x4(d[0], d[1], 0xdd));
#else
  V b[4], c[2];
  for (int i = 0; i < 4; i++) b[i] = _mm256_add_ps(_mm256_unpacklo_ps(a[2 * i], a[2 * i + 1]), _mm256_unpackhi_ps(a[2 * i], a[2 * i + 1]));
  for (int i = 0; i < 2; i++) {
    const __m256d x = _mm256_castps_pd(b[2 * i]), y = _mm256_castps_pd(b[2 * i + 1]);
    c[i] = _mm256_add_ps(_mm256_castpd_ps(_mm256_unpacklo_pd(x, y)), _mm256_castpd_ps(_mm256_unpackhi_pd(x, y)));
  }
  return _mm256_add_ps(_mm256_permute2f128_ps(c[0], c[1], 0x20), _mm256_permute2f128_ps(c[0], c[1], 0x31));
#endif
}

// VW keys at a time, each with its own accumulator, reduced together by sum_lanes; the rest four
// at a time, where four independent accumulation chains share each load of q.
void scores(const float* q, const float* keys, int64_t n, int64_t D, float* s) {
  int64_t j = 0;
  const int64_t Dv = D / VW * VW;
  for (; Dv > 0 && j + VW <= n; j += VW) {
    const float* k = keys + j * D;
    V a[VW];
    for (int i = 0; i < VW; i++) a[i] = vzero();
    for (int64_t d = 0; d < Dv; d += VW) {
      const V qv = vload(q + d);
      for (int i = 0; i < VW; i++) a[i] = vfmadd(qv, vload(k + i * D + d), a[i]);
    }
    vstore(s + j, sum_lanes(a));
    for (int64_t d = Dv; d < D; d++)
      for (int i = 0; i < VW; i++) s[j + i] += q[d] * k[i * D + d];
  }
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
    V y0 = vmul(vload(y + d), vc), y1 = vmul(vload(y + d + VW), vc), y2 = vmul(vload(y + d + 2 * VW), vc),
      y3 = vmul(vload(y + d + 3 * VW), vc);
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
  static const IsaKernels k{"avx512",          avx512::matmul_rows,  avx512::quantize_x, avx512::dot,
                            avx512::scores,    avx512::softmax_tile, avx512::accumulate, avx512::silu_mul,
                            avx512::widen_f16, avx512::widen_bf16};
  return k;
}
#else
const IsaKernels& avx2_kernels() {
  static const IsaKernels k{"avx2",           avx2::matmul_rows, avx2::quantize_x, avx2::dot,       avx2::scores, avx2::softmax_tile,
                            avx2::accumulate, avx2::silu_mul,    avx2::widen_f16,  avx2::widen_bf16};
  return k;
}
#endif

}  // namespace tl
