// Matmuls of int8-quantized weights (GGML Q8_0, Q4_0, Q4_K, Q5_K, Q6_K and MLX affine) on
// AVX-512 VNNI, compiled with the AVX-512 kernels: the one-row kernels that every M can use,
// and the strips that prompts use. Both make each output with int8_recipe.h's float steps, so a
// row of x gets the same bits from either, and from the AMX int8 tiles.
//
// One-row kernels read the weights as stored. Q8_0, Q4_0 and MLX rows are taken sixteen at a
// time, 64 bytes of codes per row and step; each row's vpdpbusd lanes are reduced (exactly, in
// int32) and transposed so that a vector holds one block's integer dots of the sixteen rows, and
// the float steps run with the weight rows in the lanes. K-quants scale their sub-blocks in
// int32 (vpdpwssd), so a super-block ends in one integer per output, and their float steps run
// one output at a time.
//
// Strips hold sixteen weight rows in the int32 lanes too, but rearranged once so that one
// vpdpbusd takes four values of each row against four values of x broadcast to every lane: after
// eight of them a block's 32 products sit whole in each lane. Per block and row of x that is
// eight vpdpbusd and the float step, with nothing to unpack; the rearranging (4-bit codes
// unpacked to bytes, scales to f32 or int32 lanes) is shared by every row of x.
#include <immintrin.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "int8_recipe.h"
#include "kernels.h"
#include "memory.h"
#include "transpose16.h"
#include "x86_util.h"

namespace tl {
namespace vnni {
namespace {

template <int Type>
constexpr bool kAffine = Type == W_AFFINE4 || Type == W_AFFINE8;
template <int Type>
constexpr bool kK45 = Type == W_Q4_K || Type == W_Q5_K;

// vpdpbusd takes the weights as unsigned bytes: Q8_0's codes enter shifted by 128, Q4_0's are
// q + 8 already, Q6_K's q + 32. offset · Σqx comes back out of each integer dot.
template <int Type>
constexpr int kOffset = Type == W_Q8_0   ? 128
                        : Type == W_Q4_0 ? 8
                        : Type == W_Q6_K ? 32
                                         : 0;

// quantize_x's code sums (exact integers held in floats).
inline int code_sum(const float* s, int64_t i) { return static_cast<int>(s[i]); }

inline __m512i lanes_shifted(int first, int shift) {
  return _mm512_add_epi32(_mm512_set1_epi32(first),
                          _mm512_srli_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15), shift));
}

// Affine scales or biases [at, at + n) (n ≤ 16) as f32 lanes, the rest zero.
inline __m512 load_params(const Weight& w, const void* params, int64_t at, int64_t n) {
  const __mmask16 mask = lane_mask(n);
  switch (w.scale_type) {
    case S_F16:
      return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(mask, static_cast<const uint16_t*>(params) + at));
    case S_BF16:
      return _mm512_castsi512_ps(
          _mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(mask, static_cast<const uint16_t*>(params) + at)), 16));
    default:
      return _mm512_maskz_loadu_ps(mask, static_cast<const float*>(params) + at);
  }
}

inline void prefetch(const void* p, int64_t ahead) { _mm_prefetch(static_cast<const char*>(p) + ahead, _MM_HINT_T0); }

// ---- one-row kernels: Q8_0, Q4_0, MLX affine, sixteen weight rows in the lanes ----

constexpr int kTileX = 2;  // rows of x per pass over a tile

// A unit is 64 bytes of a row's codes: two blocks of 8-bit codes, four of 4-bit ones.
template <int Type>
constexpr int64_t kUnitBlocks = kFourBit<Type> ? 4 : 2;

// The codes of a unit as vpdpbusd's unsigned bytes: 8-bit codes in v[0], 4-bit codes' low
// nibbles in v[0] and high nibbles in v[1]. Bytes outside `mask` are zero.
template <int Type>
inline void unit_codes(const uint8_t* p, __mmask64 mask, __m512i v[2]) {
  const __m512i raw = _mm512_maskz_loadu_epi8(mask, p);
  if constexpr (Type == W_Q8_0) {
    v[0] = _mm512_xor_si512(raw, _mm512_set1_epi8(static_cast<char>(0x80)));
  } else if constexpr (Type == W_AFFINE8) {
    v[0] = raw;
  } else {
    v[0] = _mm512_and_si512(raw, _mm512_set1_epi8(0x0f));
    v[1] = _mm512_and_si512(_mm512_srli_epi16(raw, 4), _mm512_set1_epi8(0x0f));
  }
}

// Σ code · x in int32 lanes of four values, x at the unit's place in quantize_x's order: the
// 4-bit orders put a unit's low-nibble values first, then its high-nibble ones.
template <int Type>
inline __m512i unit_dot(const __m512i v[2], const int8_t* x) {
  const __m512i d = _mm512_dpbusd_epi32(_mm512_setzero_si512(), v[0], _mm512_loadu_si512(x));
  if constexpr (kFourBit<Type>) return _mm512_dpbusd_epi32(d, v[1], _mm512_loadu_si512(x + 64));
  return d;
}

// Four rows' unit dots -> lane 4q + k holds row k's sum over its lanes 4q .. 4q + 3.
inline __m512i reduce4(const __m512i d[4]) {
  const __m512i t0 = _mm512_add_epi32(_mm512_unpacklo_epi32(d[0], d[1]), _mm512_unpackhi_epi32(d[0], d[1]));
  const __m512i t1 = _mm512_add_epi32(_mm512_unpacklo_epi32(d[2], d[3]), _mm512_unpackhi_epi32(d[2], d[3]));
  return _mm512_add_epi32(_mm512_unpacklo_epi64(t0, t1), _mm512_unpackhi_epi64(t0, t1));
}

// reduce4 of rows 4j .. 4j + 3 in part[j] -> isum[g]: lane r holds row r's dot over block g of
// the unit (a 4-bit block is 128 bits of lanes, an 8-bit one 256).
template <int Type>
inline void unit_blocks(const __m512i part[4], __m512i isum[]) {
  const __m512i lo01 = _mm512_shuffle_i32x4(part[0], part[1], 0x44), hi01 = _mm512_shuffle_i32x4(part[0], part[1], 0xee);
  const __m512i lo23 = _mm512_shuffle_i32x4(part[2], part[3], 0x44), hi23 = _mm512_shuffle_i32x4(part[2], part[3], 0xee);
  const __m512i q0 = _mm512_shuffle_i32x4(lo01, lo23, 0x88), q1 = _mm512_shuffle_i32x4(lo01, lo23, 0xdd);
  const __m512i q2 = _mm512_shuffle_i32x4(hi01, hi23, 0x88), q3 = _mm512_shuffle_i32x4(hi01, hi23, 0xdd);
  if constexpr (kFourBit<Type>) {
    isum[0] = q0;
    isum[1] = q1;
    isum[2] = q2;
    isum[3] = q3;
  } else {
    isum[0] = _mm512_add_epi32(q0, q1);
    isum[1] = _mm512_add_epi32(q2, q3);
  }
}

// What every tile of one matmul_rows call shares.
struct RowsPlan {
  int64_t row_bytes;
  int64_t quant_bytes;  // codes per row
  int64_t nb;           // blocks per row
  int64_t units;        // units per row, the last maybe partial
  int64_t groups = 0;   // MLX: groups per row
  int shift = 0;        // MLX: log2(blocks per group)
  explicit RowsPlan(const Weight& w)
      : row_bytes(weight_row_bytes(w.type, w.cols)),
        quant_bytes(w.type == W_Q4_0 || w.type == W_AFFINE4 ? w.cols / 2 : w.cols),
        nb(w.cols / kBlock),
        units((quant_bytes + 63) / 64) {
    if (is_affine(w.type)) {
      groups = w.cols / w.group_size;
      shift = w.group_size == 32 ? 0 : w.group_size == 64 ? 1 : 2;
    }
  }
};

// Scales [c, c + 16) of a tile's rows (Q8_0 / Q4_0: per block; MLX: scales and biases per
// group) as vectors whose lanes are the rows; the next tile's are prefetched.
template <int Type>
void tile_scales(const Weight& w, const RowsPlan& p, const uint8_t* const rows[kRowTile], int64_t n0, int64_t tile_rows, int64_t c,
                 float (*scale)[16], float (*bias)[16]) {
  __m512i v[16], b[16];
  for (int r = 0; r < kRowTile; r++) {
    if constexpr (kAffine<Type>) {
      const int64_t row = n0 + std::min<int64_t>(r, tile_rows - 1), n = std::min<int64_t>(16, p.groups - c);
      v[r] = _mm512_castps_si512(load_params(w, w.scales, row * p.groups + c, n));
      b[r] = _mm512_castps_si512(load_params(w, w.biases, row * p.groups + c, n));
    } else {
      const uint8_t* d = rows[r] + p.quant_bytes + 2 * c;
      prefetch(d, kRowTile * p.row_bytes);
      v[r] = _mm512_castps_si512(_mm512_cvtph_ps(_mm256_maskz_loadu_epi16(lane_mask(p.nb - c), d)));
    }
  }
  transpose16(v);
  for (int k = 0; k < 16; k++) _mm512_store_si512(scale[k], v[k]);
  if constexpr (kAffine<Type>) {
    transpose16(b);
    for (int k = 0; k < 16; k++) _mm512_store_si512(bias[k], b[k]);
  }
}

// Outputs [n0, n0 + rows) (rows ≤ 16) of rows [m0, m0 + MR) of x.
template <int Type, int MR>
void rows_tile(const MatmulTask& t, const RowsPlan& p, int64_t m0, int64_t n0, int64_t rows) {
  const Weight& w = *t.w;
  constexpr int64_t ub = kUnitBlocks<Type>;
  // Lanes past `rows` repeat the last row: loads stay in the weight, and those lanes are not stored.
  const uint8_t* wr[kRowTile];
  for (int r = 0; r < kRowTile; r++) wr[r] = w.data + (n0 + std::min<int64_t>(r, rows - 1)) * p.row_bytes;
  const int8_t* xq[MR];
  const float *xd[MR], *xs[MR], *gsum[MR];
  for (int i = 0; i < MR; i++) {
    xq[i] = t.xq.q + (m0 + i) * t.xq.q_stride;
    xd[i] = t.xq.d + (m0 + i) * t.xq.b_stride;
    xs[i] = t.xq.s + (m0 + i) * t.xq.s_stride;
    gsum[i] = t.xq.gsum + (m0 + i) * t.xq.g_stride;
  }
  const int shift = p.shift;
  const int64_t group_blocks = int64_t{1} << shift;
  const int64_t ahead = kRowTile * p.row_bytes;  // the next tile's rows, same place
  alignas(64) float scale[16][16], bias[16][16];
  __m512 acc[MR];
  for (int i = 0; i < MR; i++) acc[i] = _mm512_setzero_ps();
  for (int64_t u = 0; u < p.units; u++) {
    const int64_t b0 = u * ub;
    if (b0 % (16 << shift) == 0) tile_scales<Type>(w, p, wr, n0, rows, b0 >> shift, scale, bias);
    const __mmask64 mask = u + 1 < p.units ? ~0ull : ~0ull >> (64 - (p.quant_bytes - 64 * u));
    __m512i part[MR][4];
    for (int j = 0; j < 4; j++) {
      __m512i v[4][2];
      for (int k = 0; k < 4; k++) {
        const uint8_t* at = wr[4 * j + k] + 64 * u;
        prefetch(at, ahead);
        unit_codes<Type>(at, mask, v[k]);
      }
      for (int i = 0; i < MR; i++) {
        __m512i d[4];
        for (int k = 0; k < 4; k++) d[k] = unit_dot<Type>(v[k], xq[i] + b0 * kBlock);
        part[i][j] = reduce4(d);
      }
    }
    for (int i = 0; i < MR; i++) {
      __m512i isum[ub];
      unit_blocks<Type>(part[i], isum);
      for (int64_t g = 0; g < ub && b0 + g < p.nb; g++) {
        const int64_t b = b0 + g;
        __m512i s = isum[g];
        if constexpr (kOffset<Type> != 0) s = _mm512_sub_epi32(s, _mm512_set1_epi32(kOffset<Type> * code_sum(xs[i], b)));
        acc[i] = scale_step(acc[i], s, _mm512_load_ps(scale[(b >> shift) & 15]), _mm512_set1_ps(xd[i][b]));
        if constexpr (kAffine<Type>) {
          if ((b + 1) % group_blocks == 0)
            acc[i] = bias_step(acc[i], _mm512_load_ps(bias[(b >> shift) & 15]), _mm512_set1_ps(gsum[i][b >> shift]));
        }
      }
    }
  }
  const int64_t N = w.rows;
  const __mmask16 mask = lane_mask(rows);
  const __m512 b = t.bias ? _mm512_maskz_loadu_ps(mask, t.bias + n0) : _mm512_setzero_ps();
  for (int i = 0; i < MR; i++) _mm512_mask_storeu_ps(t.out + (m0 + i) * N + n0, mask, _mm512_add_ps(acc[i], b));
}

template <int Type>
void block_rows(const MatmulTask& t, int64_t n0, int64_t n1) {
  const RowsPlan p(*t.w);
  for (int64_t n = n0; n < n1; n += kRowTile) {
    const int64_t rows = std::min(kRowTile, n1 - n);
    int64_t m = 0;
    for (; m + kTileX <= t.M; m += kTileX) rows_tile<Type, kTileX>(t, p, m, n, rows);
    if (m < t.M) rows_tile<Type, 1>(t, p, m, n, rows);
  }
}

// ---- one-row kernels: k-quants, MR x NR outputs per tile ----
//
// Each output's super-block ends in int32 vectors whose lanes sum to its isum (and imin); the
// tile's outputs are reduced together so that lane r · MR + i of one vector holds output (row of
// x i, weight row r), and the float steps run on that vector.

constexpr int kKTileM = 4, kKTileN = 4;

// The lanes of an MR x NR tile: lane l holds weight row l / MR and row of x l % MR (lanes past
// MR · NR repeat the last).
template <int MR, int NR>
struct KLanes {
  static constexpr int kCount = MR * NR;
  __m512i weight_row, x_row;
  KLanes() {
    const __m512i l =
        _mm512_min_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15), _mm512_set1_epi32(kCount - 1));
    alignas(64) int32_t lane[16];
    _mm512_store_si512(lane, l);
    alignas(64) int32_t r[16], i[16];
    for (int k = 0; k < 16; k++) {
      r[k] = lane[k] / MR;
      i[k] = lane[k] % MR;
    }
    weight_row = _mm512_load_si512(r);
    x_row = _mm512_load_si512(i);
  }
  // v[weight row] (or v[row of x]) spread over the lanes, from n ≤ 4 floats.
  static __m512 spread(const float* v, int n, __m512i index) {
    return _mm512_permutexvar_ps(index, _mm512_maskz_loadu_ps(lane_mask(n), v));
  }
};

// Vector k's int32 lanes summed into lane k, for n ≤ 16 vectors.
template <int kCount>
inline __m512i sum_lanes(const __m512i* a) {
  const __m512i zero = _mm512_setzero_si512();
  if constexpr (kCount <= 4) {
    __m512i v[4];
    for (int k = 0; k < 4; k++) v[k] = k < kCount ? a[k] : zero;
    const __m512i u = reduce4(v);  // lane 4q + k: vector k's sum over 128-bit lane q
    const __m512i w = _mm512_add_epi32(u, _mm512_shuffle_i32x4(u, u, 0x4e));
    return _mm512_add_epi32(w, _mm512_shuffle_i32x4(w, w, 0xb1));
  } else {
    __m512i b[8], c[4], d[2];
    for (int k = 0; k < 8; k++) {
      const __m512i x = 2 * k < kCount ? a[2 * k] : zero, y = 2 * k + 1 < kCount ? a[2 * k + 1] : zero;
      b[k] = _mm512_add_epi32(_mm512_unpacklo_epi32(x, y), _mm512_unpackhi_epi32(x, y));
    }
    for (int k = 0; k < 4; k++)
      c[k] = _mm512_add_epi32(_mm512_unpacklo_epi64(b[2 * k], b[2 * k + 1]), _mm512_unpackhi_epi64(b[2 * k], b[2 * k + 1]));
    for (int k = 0; k < 2; k++)
      d[k] = _mm512_add_epi32(_mm512_shuffle_i32x4(c[2 * k], c[2 * k + 1], 0x88), _mm512_shuffle_i32x4(c[2 * k], c[2 * k + 1], 0xdd));
    return _mm512_add_epi32(_mm512_shuffle_i32x4(d[0], d[1], 0x88), _mm512_shuffle_i32x4(d[0], d[1], 0xdd));
  }
}

// The rows of x of a tile and where their super-block scales and code sums are.
template <int MR>
struct KTileX {
  const int8_t* q[MR];
  const float* d[MR];
  const float* s[MR];
  KTileX(const MatmulTask& t, int64_t m0) {
    for (int i = 0; i < MR; i++) {
      q[i] = t.xq.q + (m0 + i) * t.xq.q_stride;
      d[i] = t.xq.d + (m0 + i) * t.xq.b_stride;
      s[i] = t.xq.s + (m0 + i) * t.xq.s_stride;
    }
  }
  // The rows' x scales of super-block sb, spread over the tile's lanes.
  template <int NR>
  __m512 dx(const KLanes<MR, NR>& lanes, int64_t sb) const {
    float v[MR];
    for (int i = 0; i < MR; i++) v[i] = d[i][sb * 8];
    return KLanes<MR, NR>::spread(v, MR, lanes.x_row);
  }
};

template <int MR, int NR>
void store_outputs(const MatmulTask& t, int64_t m0, int64_t n0, __m512 acc) {
  alignas(64) float v[16];
  _mm512_store_ps(v, acc);
  const int64_t N = t.w->rows;
  for (int i = 0; i < MR; i++)
    for (int r = 0; r < NR; r++) t.out[(m0 + i) * N + n0 + r] = v[r * MR + i] + (t.bias ? t.bias[n0 + r] : 0.0f);
}

// Q4_K and Q5_K: the sub-block scales multiply each vpdpbusd lane's dot (at most 4 · 31 · 127,
// an int16) in vpdpwssd; the mins meet x's code sums, in pairs, in vpdpwssd too.
template <int Type, int MR, int NR>
void k45_tile(const MatmulTask& t, int64_t row_bytes, int64_t m0, int64_t n0) {
  constexpr bool kQ5 = Type == W_Q5_K;
  constexpr int64_t kBytes = kQ5 ? kQ5KBytes : kQ4KBytes;
  const KTileX<MR> x(t, m0);
  const KLanes<MR, NR> lanes;
  const int64_t ahead = NR * row_bytes;
  // Pair k of a weight row's mins (or of a row of x's code sums) for lane l: lane 4 · row + k
  // of the rows' pairs.
  __m512i pair_of_w[4], pair_of_x[4];
  for (int k = 0; k < 4; k++) {
    pair_of_w[k] = _mm512_add_epi32(_mm512_slli_epi32(lanes.weight_row, 2), _mm512_set1_epi32(k));
    pair_of_x[k] = _mm512_add_epi32(_mm512_slli_epi32(lanes.x_row, 2), _mm512_set1_epi32(k));
  }
  __m512 acc = _mm512_setzero_ps();
  for (int64_t sb = 0; sb < t.w->cols / kQK; sb++) {
    const uint8_t* blk[NR];
    __m512i sc[NR];                         // lanes 0-7: the eight scales, 8-15: the mins, as int32
    __m512i mins = _mm512_setzero_si512();  // 128-bit lane r: row r's mins in pairs of words
    float d[NR], dmin[NR];
    for (int r = 0; r < NR; r++) {
      blk[r] = t.w->data + (n0 + r) * row_bytes + sb * kBytes;
      for (int64_t off = 0; off < kBytes; off += 64) prefetch(blk[r] + off, ahead);
      const __m128i sm = unpack_scale_min(blk[r] + 4);
      sc[r] = _mm512_cvtepu8_epi32(sm);
      mins = _mm512_mask_broadcast_i32x4(mins, static_cast<__mmask16>(0xf << (4 * r)), _mm_cvtepu8_epi16(_mm_srli_si128(sm, 8)));
      d[r] = f16_at(blk[r]);
      dmin[r] = f16_at(blk[r] + 2);
    }
    __m512i isum[MR * NR];
    for (int k = 0; k < MR * NR; k++) isum[k] = _mm512_setzero_si512();
    for (int c = 0; c < 4; c++) {
      // Chunk c: the low nibbles are sub-block 2c, the high ones 2c + 1; Q5_K adds bits 2c and 2c + 1 of qh.
      const __m512i scale_lanes = lanes_shifted(2 * c, 3);
      __m512i wv[NR];
      for (int r = 0; r < NR; r++) {
        const __m256i packed = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk[r] + (kQ5 ? 48 : 16) + 32 * c));
        __m256i lo = _mm256_and_si256(packed, _mm256_set1_epi8(0x0f));
        __m256i hi = _mm256_and_si256(_mm256_srli_epi16(packed, 4), _mm256_set1_epi8(0x0f));
        if constexpr (kQ5) {
          const __m256i qh = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk[r] + 16));
          const __m256i one = _mm256_set1_epi8(1);
          lo = _mm256_or_si256(lo, _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2 * c), one), 4));
          hi = _mm256_or_si256(hi, _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2 * c + 1), one), 4));
        }
        wv[r] = _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
      }
      for (int i = 0; i < MR; i++) {
        const __m512i xv = _mm512_loadu_si512(x.q[i] + sb * kQK + 64 * c);
        for (int r = 0; r < NR; r++) {
          const __m512i dot = _mm512_dpbusd_epi32(_mm512_setzero_si512(), wv[r], xv);
          isum[r * MR + i] = _mm512_dpwssd_epi32(isum[r * MR + i], dot, _mm512_permutexvar_epi32(scale_lanes, sc[r]));
        }
      }
    }
    __m512i sums = _mm512_setzero_si512();  // 128-bit lane i: row i's code sums in pairs of words
    for (int i = 0; i < MR; i++)
      sums = _mm512_mask_broadcast_i32x4(sums, static_cast<__mmask16>(0xf << (4 * i)),
                                         _mm256_cvtepi32_epi16(_mm256_cvtps_epi32(_mm256_loadu_ps(x.s[i] + sb * 8))));
    __m512i imin = _mm512_setzero_si512();
    for (int k = 0; k < 4; k++)
      imin = _mm512_dpwssd_epi32(imin, _mm512_permutexvar_epi32(pair_of_w[k], mins), _mm512_permutexvar_epi32(pair_of_x[k], sums));
    const __m512 dx = x.dx(lanes, sb);
    acc = scale_step(acc, sum_lanes<MR * NR>(isum), KLanes<MR, NR>::spread(d, NR, lanes.weight_row), dx);
    acc = min_step(acc, imin, KLanes<MR, NR>::spread(dmin, NR, lanes.weight_row), dx);
  }
  store_outputs<MR, NR>(t, m0, n0, acc);
}

// Q6_K: (q − 32) · qx per vpdpbusd lane (an int16) times the 16-value sub-block's scale in vpdpwssd.
template <int MR, int NR>
void q6k_tile(const MatmulTask& t, int64_t row_bytes, int64_t m0, int64_t n0) {
  const KTileX<MR> x(t, m0);
  const KLanes<MR, NR> lanes;
  const int64_t ahead = NR * row_bytes;
  const __m512i thirty_two = _mm512_set1_epi8(32);
  const __m512i low4 = _mm512_set1_epi8(0x0f), low2 = _mm512_set1_epi8(3);
  __m512 acc = _mm512_setzero_ps();
  for (int64_t sb = 0; sb < t.w->cols / kQK; sb++) {
    const uint8_t* blk[NR];
    __m512i sc[NR];  // the sixteen scales as int16 in int32 lanes (high halves zero)
    float d[NR];
    for (int r = 0; r < NR; r++) {
      blk[r] = t.w->data + (n0 + r) * row_bytes + sb * kQ6KBytes;
      for (int64_t off = 0; off < kQ6KBytes; off += 64) prefetch(blk[r] + off, ahead);
      sc[r] = _mm512_and_si512(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(blk[r] + 192))),
                               _mm512_set1_epi32(0xffff));
      d[r] = f16_at(blk[r] + 208);
    }
    __m512i isum[MR * NR];
    for (int k = 0; k < MR * NR; k++) isum[k] = _mm512_setzero_si512();
    for (int half = 0; half < 2; half++) {
      // A half's chunk 0 is values 0-63 (low nibbles of ql, qh bits 0-3), chunk 1 values 64-127 (high nibbles, bits 4-7).
      __m512i wv[NR][2];
      for (int r = 0; r < NR; r++) {
        const __m512i ql = _mm512_loadu_si512(blk[r] + 64 * half);
        const __m256i qh = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk[r] + 128 + 32 * half));
        const __m512i qh2 = _mm512_inserti64x4(_mm512_castsi256_si512(qh), _mm256_srli_epi16(qh, 2), 1);
        wv[r][0] = _mm512_or_si512(_mm512_and_si512(ql, low4), _mm512_slli_epi16(_mm512_and_si512(qh2, low2), 4));
        wv[r][1] = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(ql, 4), low4),
                                   _mm512_slli_epi16(_mm512_and_si512(_mm512_srli_epi16(qh2, 4), low2), 4));
      }
      for (int cc = 0; cc < 2; cc++) {
        const int c = 2 * half + cc;
        const __m512i scale_lanes = lanes_shifted(4 * c, 2);
        for (int i = 0; i < MR; i++) {
          const __m512i xv = _mm512_loadu_si512(x.q[i] + sb * kQK + 64 * c);
          const __m512i offset = _mm512_dpbusd_epi32(_mm512_setzero_si512(), thirty_two, xv);
          for (int r = 0; r < NR; r++) {
            const __m512i dot = _mm512_sub_epi32(_mm512_dpbusd_epi32(_mm512_setzero_si512(), wv[r][cc], xv), offset);
            isum[r * MR + i] = _mm512_dpwssd_epi32(isum[r * MR + i], dot, _mm512_permutexvar_epi32(scale_lanes, sc[r]));
          }
        }
      }
    }
    acc = scale_step(acc, sum_lanes<MR * NR>(isum), KLanes<MR, NR>::spread(d, NR, lanes.weight_row), x.dx(lanes, sb));
  }
  store_outputs<MR, NR>(t, m0, n0, acc);
}

template <int Type, int MR, int NR>
void kquant_tile(const MatmulTask& t, int64_t row_bytes, int64_t m0, int64_t n0) {
  if constexpr (Type == W_Q6_K)
    q6k_tile<MR, NR>(t, row_bytes, m0, n0);
  else
    k45_tile<Type, MR, NR>(t, row_bytes, m0, n0);
}

template <int Type, int MR>
void kquant_rows_of_x(const MatmulTask& t, int64_t row_bytes, int64_t m0, int64_t n0, int64_t n1) {
  int64_t n = n0;
  for (; n + kKTileN <= n1; n += kKTileN) kquant_tile<Type, MR, kKTileN>(t, row_bytes, m0, n);
  for (; n < n1; n++) kquant_tile<Type, MR, 1>(t, row_bytes, m0, n);
}

template <int Type, int MR>
void kquant_rest_of_x(const MatmulTask& t, int64_t row_bytes, int64_t m, int64_t n0, int64_t n1) {
  if constexpr (MR > 0) {
    if (t.M - m == MR)
      kquant_rows_of_x<Type, MR>(t, row_bytes, m, n0, n1);
    else
      kquant_rest_of_x<Type, MR - 1>(t, row_bytes, m, n0, n1);
  }
}

template <int Type>
void kquant_rows(const MatmulTask& t, int64_t n0, int64_t n1) {
  const int64_t row_bytes = weight_row_bytes(Type, t.w->cols);
  int64_t m = 0;
  for (; m + kKTileM <= t.M; m += kKTileM) kquant_rows_of_x<Type, kKTileM>(t, row_bytes, m, n0, n1);
  kquant_rest_of_x<Type, kKTileM - 1>(t, row_bytes, m, n0, n1);
}

// ---- strips ----

// A strip, group after group. A group is one block (32 values, one block of x) for Q8_0 and
// Q4_0, 1, 2 or 4 blocks for MLX affine weights and a super-block's 8 for k-quants. It holds the
// group's header (kHeader vectors of 16 lanes, one lane per row), then its blocks, each its
// scales (kBlockScales vectors) and its codes: 8 steps of 16 rows x 4 unsigned bytes. Step s of
// row r holds the four codes of that row which x's four values at x_step(s) multiply; with two
// scales per block (Q6_K's 16-value sub-blocks), steps 0-3 take the first and 4-7 the second.
//   Q8_0, Q4_0  block: dw (f32)
//   MLX         header: bias (f32); block: scale (f32)
//   Q4_K, Q5_K  header: d, dmin (f32), the mins in pairs (m_2k | m_2k+1 << 16, k = 0..3); block: sc (int32)
//   Q6_K        header: d (f32); block: the two sub-blocks' sc (int32)
constexpr int64_t kCodeBytes = 8 * 64;

template <int Type>
constexpr int kHeader = kK45<Type>                        ? 6
                        : kAffine<Type> || Type == W_Q6_K ? 1
                                                          : 0;
template <int Type>
constexpr int kBlockScales = Type == W_Q6_K ? 2 : 1;
template <int Type>
constexpr int64_t kBlockBytes = 64 * kBlockScales<Type> + kCodeBytes;

// Blocks per packed piece of a strip: Q6_K's 16 of them take 10 KiB.
constexpr int64_t kChunkBlocks = 16;

// A strip is packed and multiplied kChunkBlocks blocks at a time, from group `first` on, so that
// its buffer stays in L1 between the two.
template <int Type>
struct StripLayout {
  uint8_t* base;
  int64_t blocks_per_group;
  int64_t first = 0;
  int64_t group_bytes() const { return 64 * kHeader<Type> + blocks_per_group * kBlockBytes<Type>; }
  uint8_t* group(int64_t g) const { return base + (g - first) * group_bytes(); }
  // Block k of group g: the multiply loop's address, without dividing.
  uint8_t* block(int64_t g, int64_t k) const { return group(g) + 64 * kHeader<Type> + k * kBlockBytes<Type>; }
  // Block b of the strip; blocks_per_group is a power of two, and a division here would cost more
  // than packing the codes.
  uint8_t* block(int64_t b) const { return block(b >> __builtin_ctzll(blocks_per_group), b & (blocks_per_group - 1)); }
  static uint8_t* codes(uint8_t* block, int s) { return block + 64 * kBlockScales<Type> + 64 * s; }
  uint8_t* codes(int64_t b, int s) const { return codes(block(b), s); }
};

// Where block b starts in a row of x as the AVX-512 quantize_x orders it: natural for 8-bit
// codes and k-quants; for 4-bit codes in units of four blocks, the low-nibble halves of the four
// (Q4_0's first 16 elements, MLX's even ones), then their high-nibble halves.
template <int Type>
inline int64_t x_block(int64_t b) {
  return kFourBit<Type> ? (b >> 2) * 128 + (b & 3) * 16 : b * kBlock;
}

// Where step s of a block takes its four values of x, from x_block: 4-bit steps 0-3 are the
// low nibbles of the block's bytes 0-15, steps 4-7 their high nibbles.
template <int Type>
constexpr int64_t x_step(int s) {
  return kFourBit<Type> ? (s & 3) * 4 + (s >> 2) * 64 : s * 4;
}

// Bytes [at, at + n) (n ≤ 64) of the 16 rows from `first`, transposed: v[j] then holds each row's
// bytes at + 4j .. at + 4j + 3 in its lane, zeros past n and for rows past the weight's end.
inline void load_transposed(const uint8_t* first, int64_t rows, int64_t row_bytes, int64_t at, int64_t n, __m512i v[16]) {
  const __mmask64 mask = n >= 64 ? ~0ull : (1ull << n) - 1;
  for (int64_t r = 0; r < 16; r++) v[r] = r < rows ? _mm512_maskz_loadu_epi8(mask, first + r * row_bytes + at) : _mm512_setzero_si512();
  transpose16(v);
}

inline void store(uint8_t* p, __m512i v) { _mm512_storeu_si512(p, v); }
inline void store(uint8_t* p, __m512 v) { _mm512_storeu_ps(reinterpret_cast<float*>(p), v); }
inline void store(uint8_t* p, const float* v) { std::memcpy(p, v, 64); }
inline void store(uint8_t* p, const int32_t* v) { std::memcpy(p, v, 64); }

inline __m512i nibble(__m512i v, int high) { return _mm512_and_si512(_mm512_srli_epi16(v, 4 * high), _mm512_set1_epi8(0x0f)); }
// The bits of each byte of v from `bit` on, under `mask`, moved up to bit `to`.
inline __m512i bits(__m512i v, int bit, int mask, int to) {
  return _mm512_slli_epi16(_mm512_and_si512(_mm512_srli_epi16(v, bit), _mm512_set1_epi8(static_cast<char>(mask))), to);
}

// The codes of Q8_0, Q4_0 and MLX rows, which hold all their codes first: 64 bytes of every row
// at a time, 2 blocks of 8-bit codes or 4 of 4-bit ones.
// Blocks [b0, b1), b0 a multiple of four.
template <int Type>
void pack_block_codes(const Weight& w, int64_t n0, int64_t rows, int64_t row_bytes, int64_t b0, int64_t b1, StripLayout<Type> strip) {
  const uint8_t* const first = w.data + n0 * row_bytes;
  const int64_t quant_bytes = kFourBit<Type> ? w.cols / 2 : w.cols;
  constexpr int kDwordsPerBlock = kFourBit<Type> ? 4 : 8;
  for (int64_t c = b0 * kDwordsPerBlock * 4; c < std::min(quant_bytes, b1 * kDwordsPerBlock * 4); c += 64) {
    __m512i v[16];
    load_transposed(first, rows, row_bytes, c, std::min<int64_t>(64, quant_bytes - c), v);
    const int64_t blocks = std::min<int64_t>(16 / kDwordsPerBlock, b1 - c / (4 * kDwordsPerBlock));
    // Unrolled, so that v stays in registers.
#pragma GCC unroll 16
    for (int j = 0; j < 16; j++) {
      if (j / kDwordsPerBlock >= blocks) continue;
      uint8_t* block = strip.block(c / (4 * kDwordsPerBlock) + j / kDwordsPerBlock);
      const int s = j % kDwordsPerBlock;
      if constexpr (kFourBit<Type>) {
        store(strip.codes(block, s), nibble(v[j], 0));
        store(strip.codes(block, s + 4), nibble(v[j], 1));
      } else if constexpr (Type == W_Q8_0) {
        store(strip.codes(block, s), _mm512_xor_si512(v[j], _mm512_set1_epi8(static_cast<char>(0x80))));
      } else {
        store(strip.codes(block, s), v[j]);
      }
    }
  }
}

// The codes of Q4_K / Q5_K super-block sb: its 32-byte chunk c holds sub-block 2c in the low
// nibbles and 2c + 1 in the high ones; Q5_K's fifth bits are bits 2c and 2c + 1 of qh.
template <int Type>
void pack_k45_codes(const Weight& w, int64_t n0, int64_t rows, int64_t row_bytes, int64_t sb, StripLayout<Type> strip) {
  const uint8_t* const first = w.data + n0 * row_bytes;
  constexpr bool kQ5 = Type == W_Q5_K;
  const int64_t at = sb * (kQ5 ? kQ5KBytes : kQ4KBytes);
  __m512i qh[16];
  if constexpr (kQ5) load_transposed(first, rows, row_bytes, at + 16, 32, qh);
  for (int half = 0; half < 2; half++) {
    __m512i v[16];
    load_transposed(first, rows, row_bytes, at + (kQ5 ? 48 : 16) + 64 * half, 64, v);
    for (int j = 0; j < 16; j++) {
      const int c = 2 * half + j / 8, s = j % 8;
      __m512i lo = nibble(v[j], 0), hi = nibble(v[j], 1);
      if constexpr (kQ5) {
        lo = _mm512_or_si512(lo, bits(qh[s], 2 * c, 1, 4));
        hi = _mm512_or_si512(hi, bits(qh[s], 2 * c + 1, 1, 4));
      }
      store(strip.codes(sb * 8 + 2 * c, s), lo);
      store(strip.codes(sb * 8 + 2 * c + 1, s), hi);
    }
  }
}

// The codes of Q6_K super-block sb. In half h, value 32k + l (k = 0..3, l = 0..31) has its low
// four bits in ql[32 (k % 2) + l] (low nibble for k < 2) and its top two in bits 2k, 2k + 1 of
// qh[l]; the block of x 4h + k is those 32 values.
void pack_q6k_codes(const Weight& w, int64_t n0, int64_t rows, int64_t row_bytes, int64_t sb, StripLayout<W_Q6_K> strip) {
  const uint8_t* const first = w.data + n0 * row_bytes;
  const int64_t at = sb * kQ6KBytes;
  for (int half = 0; half < 2; half++) {
    __m512i ql[16], qh[16];
    load_transposed(first, rows, row_bytes, at + 64 * half, 64, ql);
    load_transposed(first, rows, row_bytes, at + 128 + 32 * half, 32, qh);
    for (int k = 0; k < 4; k++)
      for (int s = 0; s < 8; s++)
        store(strip.codes(sb * 8 + 4 * half + k, s), _mm512_or_si512(nibble(ql[8 * (k % 2) + s], k / 2), bits(qh[s], 2 * k, 3, 4)));
  }
}

// Groups [g0, g1) of rows [n0, n0 + 16) of w rearranged into `strip`; rows past the weight's end
// are zeros.
template <int Type>
void pack_strip(const Weight& w, int64_t n0, int64_t g0, int64_t g1, StripLayout<Type> strip) {
  const int64_t K = w.cols;
  const int64_t rows = std::min<int64_t>(16, w.rows - n0);
  const int64_t row_bytes = weight_row_bytes(w.type, K);
  const uint8_t* const first = w.data + n0 * row_bytes;
  auto row = [&](int64_t r) { return first + r * row_bytes; };

  if constexpr (kK45<Type>) {
    // w = d · sc · q − dmin · m per sub-block of 32.
    const int64_t bytes = Type == W_Q5_K ? kQ5KBytes : kQ4KBytes;
    for (int64_t sb = g0; sb < g1; sb++) {
      pack_k45_codes<Type>(w, n0, rows, row_bytes, sb, strip);
      alignas(64) float d[16] = {}, dmin[16] = {};
      alignas(64) int32_t sc[8][16] = {}, mins[4][16] = {};
      for (int64_t r = 0; r < rows; r++) {
        const uint8_t* blk = row(r) + sb * bytes;
        d[r] = f16_at(blk);
        dmin[r] = f16_at(blk + 2);
        int m[8];
        for (int j = 0; j < 8; j++) kquant_scale_min(blk + 4, j, &sc[j][r], &m[j]);
        for (int k = 0; k < 4; k++) mins[k][r] = m[2 * k] | m[2 * k + 1] << 16;
      }
      uint8_t* header = strip.group(sb);
      store(header, d);
      store(header + 64, dmin);
      for (int k = 0; k < 4; k++) store(header + 128 + 64 * k, mins[k]);
      for (int j = 0; j < 8; j++) store(strip.block(sb, j), sc[j]);
    }
  } else if constexpr (Type == W_Q6_K) {
    // w = d · sc · (q − 32) per sub-block of 16: two per block of x.
    for (int64_t sb = g0; sb < g1; sb++) {
      pack_q6k_codes(w, n0, rows, row_bytes, sb, strip);
      alignas(64) float d[16] = {};
      alignas(64) int32_t sc[16][16] = {};
      for (int64_t r = 0; r < rows; r++) {
        const uint8_t* blk = row(r) + sb * kQ6KBytes;
        d[r] = f16_at(blk + 208);
        for (int j = 0; j < 16; j++) sc[j][r] = reinterpret_cast<const int8_t*>(blk + 192)[j];
      }
      store(strip.group(sb), d);
      for (int j = 0; j < 8; j++) {
        store(strip.block(sb, j), sc[2 * j]);
        store(strip.block(sb, j) + 64, sc[2 * j + 1]);
      }
    }
  } else if constexpr (kAffine<Type>) {
    // w = scale · q + bias per group: the bias meets the sum of x as quantized over the group.
    const int64_t groups = K / kBlock / strip.blocks_per_group;
    pack_block_codes<Type>(w, n0, rows, row_bytes, g0 * strip.blocks_per_group, g1 * strip.blocks_per_group, strip);
    for (int64_t g = g0; g < g1; g++) {
      alignas(64) float scale[16] = {}, bias[16] = {};
      for (int64_t r = 0; r < rows; r++) {
        scale[r] = affine_param(w, w.scales, (n0 + r) * groups + g);
        bias[r] = affine_param(w, w.biases, (n0 + r) * groups + g);
      }
      store(strip.group(g), bias);
      for (int64_t k = 0; k < strip.blocks_per_group; k++) store(strip.block(g, k), scale);
    }
  } else {
    // Q8_0, Q4_0: each row's f16 block scales follow its codes, read sixteen blocks at a time:
    // lane r of v[j] holds row r's scales of blocks b + 2j (low half) and b + 2j + 1.
    pack_block_codes<Type>(w, n0, rows, row_bytes, g0, g1, strip);
    const int64_t quant_bytes = kFourBit<Type> ? K / 2 : K;
    for (int64_t b = g0; b < g1; b += 16) {
      __m512i v[16];
      load_transposed(first, rows, row_bytes, quant_bytes + 2 * b, 2 * std::min<int64_t>(16, g1 - b), v);
      for (int64_t k = 0; b + k < g1; k++)
        store(strip.block(b + k), _mm512_cvtph_ps(_mm512_cvtepi32_epi16(_mm512_srli_epi32(v[k / 2], 16 * (k % 2)))));
    }
  }
}

// Brings a range of weights into L2 while the strip before it is multiplied, spread over the
// strip's steps (one per block and pass over it) so that all of the range arrives: packing then
// reads from cache instead of waiting on memory.
struct Prefetcher {
  const char* at;
  const char* end;
  int64_t lines_per_step;
  Prefetcher(const char* from, const char* to, int64_t steps)
      : at(from), end(to), lines_per_step(std::max<int64_t>(1, ((to - from) / 64 + steps - 1) / std::max<int64_t>(1, steps))) {}
  void step() {
    for (int64_t i = 0; i < lines_per_step && at < end; i++, at += 64) _mm_prefetch(at, _MM_HINT_T1);
  }
};

inline __m512i broadcast4(const int8_t* p) {
  int32_t v;
  std::memcpy(&v, p, 4);
  return _mm512_set1_epi32(v);
}

// vpdpbusd over steps [first, first + n) of a block: the int32 dots of 16 rows.
template <int Type>
inline __m512i dot_steps(const __m512i c[8], const int8_t* x, int first, int n) {
  __m512i d = _mm512_dpbusd_epi32(_mm512_setzero_si512(), c[first], broadcast4(x + x_step<Type>(first)));
  for (int s = first + 1; s < first + n; s++) d = _mm512_dpbusd_epi32(d, c[s], broadcast4(x + x_step<Type>(s)));
  return d;
}

inline __m512 f32_at(const uint8_t* p) { return _mm512_loadu_ps(reinterpret_cast<const float*>(p)); }
inline __m512i i32_at(const uint8_t* p) { return _mm512_loadu_si512(p); }

// Rows [m0, m0 + MR) of x against groups [g0, g1) of a packed strip: one accumulator per row of
// x, its lanes the strip's sixteen weight rows, carried on in acc_mem (MR x 16 floats).
template <int Type, int MR>
void rows_of_x(const MatmulTask& t, const StripLayout<Type>& strip, int64_t m0, int64_t g0, int64_t g1, float* acc_mem, Prefetcher& ahead) {
  constexpr bool kKQuant = kK45<Type> || Type == W_Q6_K;
  const QuantX& xq = t.xq;
  const int64_t bpg = strip.blocks_per_group;
  const int8_t* xs[MR];
  const float *xd[MR], *sums[MR], *gsum[MR];
  for (int i = 0; i < MR; i++) {
    xs[i] = xq.q + (m0 + i) * xq.q_stride;
    xd[i] = xq.d + (m0 + i) * xq.b_stride;
    sums[i] = xq.s + (m0 + i) * xq.s_stride;
    gsum[i] = xq.gsum + (m0 + i) * xq.g_stride;
  }
  __m512 acc[MR];
  for (int i = 0; i < MR; i++) acc[i] = _mm512_load_ps(acc_mem + 16 * i);
  for (int64_t g = g0; g < g1; g++) {
    __m512i isum[MR];  // k-quants: the super-block's scaled integer dots
    if constexpr (kKQuant)
      for (int i = 0; i < MR; i++) isum[i] = _mm512_setzero_si512();
    for (int64_t k = 0; k < bpg; k++) {
      const int64_t b = g * bpg + k;
      uint8_t* block = strip.block(g, k);
      ahead.step();
      __m512i c[8];
      for (int s = 0; s < 8; s++) c[s] = _mm512_loadu_si512(StripLayout<Type>::codes(block, s));
      const int64_t at = x_block<Type>(b);
      if constexpr (kK45<Type>) {
        const __m512i sc = i32_at(block);
        for (int i = 0; i < MR; i++) isum[i] = _mm512_add_epi32(isum[i], _mm512_mullo_epi32(dot_steps<Type>(c, xs[i] + at, 0, 8), sc));
      } else if constexpr (Type == W_Q6_K) {
        const __m512i sc0 = i32_at(block), sc1 = i32_at(block + 64);
        for (int i = 0; i < MR; i++) {
          const __m512i d0 = _mm512_sub_epi32(dot_steps<Type>(c, xs[i] + at, 0, 4), _mm512_set1_epi32(32 * code_sum(sums[i], 2 * b)));
          const __m512i d1 = _mm512_sub_epi32(dot_steps<Type>(c, xs[i] + at, 4, 4), _mm512_set1_epi32(32 * code_sum(sums[i], 2 * b + 1)));
          isum[i] = _mm512_add_epi32(isum[i], _mm512_add_epi32(_mm512_mullo_epi32(d0, sc0), _mm512_mullo_epi32(d1, sc1)));
        }
      } else {
        const __m512 dw = f32_at(block);
        for (int i = 0; i < MR; i++) {
          __m512i d = dot_steps<Type>(c, xs[i] + at, 0, 8);
          if constexpr (kOffset<Type> != 0) d = _mm512_sub_epi32(d, _mm512_set1_epi32(kOffset<Type> * code_sum(sums[i], b)));
          acc[i] = scale_step(acc[i], d, dw, _mm512_set1_ps(xd[i][b]));
        }
      }
    }
    const uint8_t* header = strip.group(g);
    if constexpr (kAffine<Type>) {
      const __m512 bias = f32_at(header);
      for (int i = 0; i < MR; i++) acc[i] = bias_step(acc[i], bias, _mm512_set1_ps(gsum[i][g]));
    } else if constexpr (kK45<Type>) {
      const __m512 d = f32_at(header), dmin = f32_at(header + 64);
      for (int i = 0; i < MR; i++) {
        __m512i imin = _mm512_setzero_si512();
        for (int k = 0; k < 4; k++) {
          const int32_t pair = (code_sum(sums[i], 8 * g + 2 * k) & 0xffff) | code_sum(sums[i], 8 * g + 2 * k + 1) * 65536;
          imin = _mm512_dpwssd_epi32(imin, i32_at(header + 128 + 64 * k), _mm512_set1_epi32(pair));
        }
        const __m512 dx = _mm512_set1_ps(xd[i][8 * g]);
        acc[i] = min_step(scale_step(acc[i], isum[i], d, dx), imin, dmin, dx);
      }
    } else if constexpr (Type == W_Q6_K) {
      const __m512 d = f32_at(header);
      for (int i = 0; i < MR; i++) acc[i] = scale_step(acc[i], isum[i], d, _mm512_set1_ps(xd[i][8 * g]));
    }
  }
  for (int i = 0; i < MR; i++) _mm512_store_ps(acc_mem + 16 * i, acc[i]);
}

// Rows of x per pass over the strip: eight accumulators and eight code vectors leave registers
// for the rest, and eight independent vpdpbusd chains hide their latency.
constexpr int kRowsOfX = 8;

template <int Type, int MR>
void rest_of_x(const MatmulTask& t, const StripLayout<Type>& strip, int64_t m, int64_t g0, int64_t g1, float* acc_mem, Prefetcher& ahead) {
  if constexpr (MR > 0) {
    if (t.M - m == MR)
      rows_of_x<Type, MR>(t, strip, m, g0, g1, acc_mem, ahead);
    else
      rest_of_x<Type, MR - 1>(t, strip, m, g0, g1, acc_mem, ahead);
  }
}

template <int Type>
void strip(const MatmulTask& t, int64_t n0) {
  const Weight& w = *t.w;
  thread_local AlignedVector<uint8_t> buffer;
  thread_local AlignedVector<float> acc;
  StripLayout<Type> layout{nullptr, kAffine<Type> ? w.group_size / kBlock : kK45<Type> || Type == W_Q6_K ? kQK / kBlock : 1};
  const int64_t groups = w.cols / kBlock / layout.blocks_per_group;
  const int64_t chunk = std::max<int64_t>(1, kChunkBlocks / layout.blocks_per_group);
  buffer.resize(chunk * layout.group_bytes());
  layout.base = buffer.data();
  acc.assign(t.M * 16, 0.0f);
  // The pool hands out strips in order, so the next two are this thread's or another's next.
  const int64_t row_bytes = weight_row_bytes(Type, w.cols);
  const char* rows = reinterpret_cast<const char*>(w.data);
  const int64_t passes = (t.M + kRowsOfX - 1) / kRowsOfX;
  Prefetcher ahead(rows + std::min(w.rows, n0 + kStrip) * row_bytes, rows + std::min(w.rows, n0 + 3 * kStrip) * row_bytes,
                   passes * groups * layout.blocks_per_group);
  for (int64_t g0 = 0; g0 < groups; g0 += chunk) {
    const int64_t g1 = std::min(groups, g0 + chunk);
    layout.first = g0;
    pack_strip<Type>(w, n0, g0, g1, layout);
    int64_t m = 0;
    for (; m + kRowsOfX <= t.M; m += kRowsOfX) rows_of_x<Type, kRowsOfX>(t, layout, m, g0, g1, acc.data() + 16 * m, ahead);
    rest_of_x<Type, kRowsOfX - 1>(t, layout, m, g0, g1, acc.data() + 16 * m, ahead);
  }
  const int64_t N = w.rows;
  const __mmask16 mask = lane_mask(N - n0);
  const __m512 bias = t.bias ? _mm512_maskz_loadu_ps(mask, t.bias + n0) : _mm512_setzero_ps();
  for (int64_t m = 0; m < t.M; m++)
    _mm512_mask_storeu_ps(t.out + m * N + n0, mask, _mm512_add_ps(_mm512_load_ps(acc.data() + 16 * m), bias));
}

}  // namespace

void matmul_rows(const MatmulTask& t, int64_t n0, int64_t n1) {
  switch (t.w->type) {
    case W_Q8_0:
      return block_rows<W_Q8_0>(t, n0, n1);
    case W_Q4_0:
      return block_rows<W_Q4_0>(t, n0, n1);
    case W_AFFINE4:
      return block_rows<W_AFFINE4>(t, n0, n1);
    case W_AFFINE8:
      return block_rows<W_AFFINE8>(t, n0, n1);
    case W_Q4_K:
      return kquant_rows<W_Q4_K>(t, n0, n1);
    case W_Q5_K:
      return kquant_rows<W_Q5_K>(t, n0, n1);
    case W_Q6_K:
      return kquant_rows<W_Q6_K>(t, n0, n1);
    default:
      return;
  }
}

void matmul_strip(const MatmulTask& t, int64_t n0) {
  switch (t.w->type) {
    case W_Q8_0:
      return strip<W_Q8_0>(t, n0);
    case W_Q4_0:
      return strip<W_Q4_0>(t, n0);
    case W_AFFINE4:
      return strip<W_AFFINE4>(t, n0);
    case W_AFFINE8:
      return strip<W_AFFINE8>(t, n0);
    case W_Q4_K:
      return strip<W_Q4_K>(t, n0);
    case W_Q5_K:
      return strip<W_Q5_K>(t, n0);
    case W_Q6_K:
      return strip<W_Q6_K>(t, n0);
    default:
      return;
  }
}

}  // namespace vnni
}  // namespace tl
