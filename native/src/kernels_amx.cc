// Batched matmuls on AMX tiles (Intel Sapphire Rapids and later), compiled with AVX-512,
// AVX512-BF16, AMX-BF16 and AMX-INT8: f16 and bf16 weights on bf16 tiles (without batch
// invariance), and int8 weights on int8 tiles, whose results keep the one-row kernels' bits.
//
// bf16 tiles: one tile product multiplies a 16 x 32 bf16 block of weights by a 32 x 16 bf16
// block of x and accumulates 16 x 16 f32 sums, an order of magnitude more work per instruction
// than vpdpbusd. Weights are decoded to bf16 a strip of rows at a time, so the decode cost is
// shared by all rows of x: this pays off for prefill (many rows), while decode (one row) keeps
// the one-row kernels, which read the weights in their stored form. The product
// C[n][m] = Σ_k W[n][k] · x[m][k] takes the weights as tile A (16 rows of 32 values, read
// straight from the decoded strip) and x as tile B, which wants k in pairs: row kk of B holds
// (x[m][2kk], x[m][2kk + 1]) for m = 0..15. pack_x writes x in exactly that order. bf16 keeps 8
// significant bits; the users of f16 and bf16 weights expect f32 accuracy, so x is split into
// three bf16 parts x0 + x1 + x2 (24 bits, as f32) and f16 weights into w0 + w1 (exact: f16 has
// 11 bits); the products w0·(x0 + x1 + x2) + w1·(x0 + x1) leave out only terms near 2^-26. The
// sums' order depends on where a row of x sits among the 16 of its tile.
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
namespace amx {
namespace {

// 16 floats from a and 16 from b as 32 bf16 (round to nearest even).
inline __m512i to_bf16(__m512 a, __m512 b) { return reinterpret_cast<__m512i>(_mm512_cvtne2ps_pbh(b, a)); }

// bf16 of what rounding a and b to `hi` left out, which then takes that part out of a and b.
inline __m512i next_part(__m512& a, __m512& b, __m512i hi) {
  a = _mm512_sub_ps(a, _mm512_cvtpbh_ps(reinterpret_cast<__m256bh>(_mm512_castsi512_si256(hi))));
  b = _mm512_sub_ps(b, _mm512_cvtpbh_ps(reinterpret_cast<__m256bh>(_mm512_extracti64x4_epi64(hi, 1))));
  return to_bf16(a, b);
}

// A strip keeps each tile's 16 rows x 32 values together (1 KB), so a tile loads from one place.
constexpr int64_t kTile = 16 * 32;

// Row n of w (f16 or bf16) as bf16, values 32c .. 32c + 31 at dst + c · kTile, zeros past K;
// for f16 weights also what that rounding leaves out, at lo likewise.
void decode_bf16(const Weight& w, int64_t n, uint16_t* dst, uint16_t* lo) {
  const int64_t K = w.cols;
  const uint16_t* p = reinterpret_cast<const uint16_t*>(w.data + n * weight_row_bytes(w.type, K));
  for (int64_t k = 0; k < K; k += 32) {
    if (w.type == W_BF16) {
      _mm512_storeu_si512(dst + k / 32 * kTile, _mm512_maskz_loadu_epi16(K - k >= 32 ? ~0u : (1u << (K - k)) - 1, p + k));
      continue;
    }
    __m512 a = _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(lane_mask(K - k), p + k));
    __m512 b = _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(lane_mask(K - k - 16), p + k + 16));
    const __m512i hi = to_bf16(a, b);
    _mm512_storeu_si512(dst + k / 32 * kTile, hi);
    _mm512_storeu_si512(lo + k / 32 * kTile, next_part(a, b, hi));
  }
}

struct alignas(64) TileConfig {
  uint8_t palette;
  uint8_t start_row;
  uint8_t reserved[14];
  uint16_t colsb[16];
  uint8_t rows[16];
};

// Every tile is 16 rows of 64 bytes: 0-1 accumulate, 2-3 hold weights, 4-6 the parts of x.
void configure_tiles() {
  TileConfig c{};
  c.palette = 1;
  for (int i = 0; i < 8; i++) {
    c.colsb[i] = 64;
    c.rows[i] = 16;
  }
  _tile_loadconfig(&c);
}

// Writes C tile [n][m] (in `c`, 16 x 16, 64-byte aligned) to out rows m0.. and columns n0..,
// adding the bias.
void store_tile(const MatmulTask& t, const float* c, int64_t m0, int64_t n0) {
  const int64_t N = t.w->rows;
  if (n0 >= N || m0 >= t.M) return;
  __m512i r[16];
  for (int i = 0; i < 16; i++) r[i] = _mm512_load_si512(c + 16 * i);
  transpose16(r);
  const __mmask16 mask = lane_mask(N - n0);
  const __m512 bias = t.bias ? _mm512_maskz_loadu_ps(mask, t.bias + n0) : _mm512_setzero_ps();
  for (int64_t m = 0; m < std::min<int64_t>(16, t.M - m0); m++)
    _mm512_mask_storeu_ps(t.out + (m0 + m) * N + n0, mask, _mm512_add_ps(_mm512_castsi512_ps(r[m]), bias));
}

// Writes a block of x against both halves of a strip: accumulators stored to c[0] and c[1].
void store_tiles(const MatmulTask& t, const float (*c)[256], int64_t m0, int64_t n0) {
  store_tile(t, c[0], m0, n0);
  store_tile(t, c[1], m0, n0 + 16);
}

}  // namespace

void pack_x(const float* x, int64_t M, int64_t K, int64_t block, int64_t part_stride, uint16_t* xb) {
  const int64_t Kp = padded_k(K);
  for (int64_t k = 0; k < Kp; k += 32) {
    // Row m: x[m][k..k+32) as 16 bf16 pairs; transposed, vector j is pair row k/2 + j.
    __m512i r[kParts][16];
    for (int64_t m = 0; m < kTokens; m++) {
      const int64_t row = block * kTokens + m;
      const float* p = x + row * K + k;
      __m512 a = row < M ? _mm512_maskz_loadu_ps(lane_mask(K - k), p) : _mm512_setzero_ps();
      __m512 b = row < M ? _mm512_maskz_loadu_ps(lane_mask(K - k - 16), p + 16) : _mm512_setzero_ps();
      r[0][m] = to_bf16(a, b);
      for (int part = 1; part < kParts; part++) r[part][m] = next_part(a, b, r[part - 1][m]);
    }
    for (int part = 0; part < kParts; part++) {
      uint16_t* out = xb + part * part_stride + block * kTokens * Kp;
      transpose16(r[part]);
      for (int j = 0; j < 16; j++) _mm512_storeu_si512(out + (k / 2 + j) * 32, r[part][j]);
    }
  }
}

void matmul_strip(const MatmulTask& t, const uint16_t* xb, int64_t part_stride, int64_t n0) {
  const Weight& w = *t.w;
  const int64_t Kp = padded_k(w.cols);
  const bool w_lo = w.type == W_F16;
  thread_local std::vector<uint16_t> strip, strip_lo;
  strip.resize(kStrip * Kp);
  strip_lo.resize(w_lo ? kStrip * Kp : 0);
  // Rows 0-15 of the strip are tiles' rows in its first half, rows 16-31 in its second.
  for (int64_t r = 0; r < kStrip; r++) {
    const int64_t at = (r / 16) * 16 * Kp + (r % 16) * 32;
    uint16_t* dst = strip.data() + at;
    uint16_t* dst_lo = w_lo ? strip_lo.data() + at : nullptr;
    if (n0 + r < w.rows) {
      decode_bf16(w, n0 + r, dst, dst_lo);
      continue;
    }
    for (int64_t c = 0; c < Kp / 32; c++) {
      std::fill(dst + c * kTile, dst + c * kTile + 32, 0);
      if (dst_lo) std::fill(dst_lo + c * kTile, dst_lo + c * kTile + 32, 0);
    }
  }
  configure_tiles();
  const uint16_t* w0 = strip.data();
  const uint16_t* w1 = strip.data() + 16 * Kp;
  const uint16_t* l0 = strip_lo.data();
  const uint16_t* l1 = strip_lo.data() + 16 * Kp;
  alignas(64) float c[2][256];
  // w0·(x0 + x1 + x2) (+ w1·(x0 + x1) for f16), one block of x at a time.
  for (int64_t b = 0; b < (t.M + kTokens - 1) / kTokens; b++) {
    const uint16_t* x0 = xb + b * kTokens * Kp;
    const uint16_t* x1 = x0 + part_stride;
    const uint16_t* x2 = x1 + part_stride;
    _tile_zero(0);
    _tile_zero(1);
    for (int64_t k = 0; k < Kp; k += 32) {
      _tile_loadd(2, w0 + k * 16, 64);
      _tile_loadd(3, w1 + k * 16, 64);
      _tile_loadd(4, x0 + k * 16, 64);
      _tile_loadd(5, x1 + k * 16, 64);
      _tile_loadd(6, x2 + k * 16, 64);
      _tile_dpbf16ps(0, 2, 4);
      _tile_dpbf16ps(1, 3, 4);
      _tile_dpbf16ps(0, 2, 5);
      _tile_dpbf16ps(1, 3, 5);
      _tile_dpbf16ps(0, 2, 6);
      _tile_dpbf16ps(1, 3, 6);
      if (w_lo) {
        _tile_loadd(2, l0 + k * 16, 64);
        _tile_loadd(3, l1 + k * 16, 64);
        _tile_dpbf16ps(0, 2, 4);
        _tile_dpbf16ps(1, 3, 4);
        _tile_dpbf16ps(0, 2, 5);
        _tile_dpbf16ps(1, 3, 5);
      }
    }
    _tile_stored(0, c[0], 64);
    _tile_stored(1, c[1], 64);
    store_tiles(t, c, b * kTokens, n0);
  }
  // Back to the initial state, so the OS need not save 8 KB of tiles at each context switch.
  _tile_release();
}

// ---- int8 weights on AMX-INT8 tiles ----
//
// One tile product of 16 weight rows by 16 rows of x per 32-value block (tdpbssd / tdpbusd: the
// weights as signed or unsigned bytes, x signed) leaves each output's exact integer dot in
// int32, and the float steps of int8_recipe.h run on the stored tile, a weight row per vector
// and the rows of x in its lanes. K-quants fold their sub-block scales into the weights: the
// products sc · q (Q6_K: sc · (q − 32)), 13 bits with the sign, split into a low byte (unsigned)
// and a high byte (signed), each a tile product over the whole super-block, give the
// super-block's Σ_j sc_j · dot_j as lo + 256 · hi; Q4_K / Q5_K's mins m_j, spread over their
// sub-block's values, give Σ_j m_j · Σqx_j the same way. Integer sums are the same integers
// however they are formed, so each output gets the one-row kernels' bits.
//
// x comes packed by pack_tile_x: per block, 8 rows of 64 bytes, row k holding values 4k .. 4k + 3
// of each of the 16 rows of x (tile B's layout); weights are decoded a strip at a time into tile
// A's layout (one weight row per tile row).

namespace {

template <int Type>
constexpr bool kTileKQuant = Type == W_Q4_K || Type == W_Q5_K || Type == W_Q6_K;
template <int Type>
constexpr bool kTileAffine = Type == W_AFFINE4 || Type == W_AFFINE8;
template <int Type>
constexpr bool kTileFourBit = Type == W_Q4_0 || Type == W_AFFINE4;

// Block types: tiles 0-1 accumulate, 2 and 4 hold weights (16 rows x 32 bytes), 3 and 5 x (8 rows
// x 64 bytes). K-quants: 0-2 accumulate (low bytes, high bytes, mins), 3-5 weights, 6 x, all
// 16 rows x 64 bytes.
void configure_int8_tiles(bool kquant) {
  TileConfig c{};
  c.palette = 1;
  for (int i = 0; i < 7; i++) {
    c.colsb[i] = kquant || (i != 2 && i != 4) ? 64 : 32;
    c.rows[i] = kquant || (i != 3 && i != 5) ? 16 : 8;
  }
  _tile_loadconfig(&c);
}

constexpr int64_t kTileBlockBytes = 16 * kBlock;  // one block of 16 rows, weights or x

// A strip's weights as the tiles take them, with their scales one lane per weight row.
// Block types: block b's 16 rows x 32 codes at a + 512 b; dw (Q8_0, Q4_0: per block) or scale
// and bias (MLX: per group), 16 floats each. K-quants: per super-block, four 64-value chunks,
// each its planes (low bytes, high bytes, mins for Q4_K / Q5_K) of 16 rows x 64 bytes; d and
// dmin per super-block.
struct TileWeights {
  AlignedVector<uint8_t> a;
  // Block types: where tile A of block b starts (codes + b · block_step) and its row stride:
  // the decoded codes in `a`, or for Q8_0 the weight's own rows.
  const uint8_t* codes = nullptr;
  int64_t block_step = 0, stride = 0;
  std::vector<float> scale, bias;
  AlignedVector<float> acc;  // k-quants: the accumulators of every 16 rows of x (16 x 16 each)
};

// v at least n long; with fewer than 16 rows in the strip, all zeros (the missing rows' lanes
// must hold numbers, though they are never stored).
template <class V>
void prepare(V& v, size_t n, bool zero) {
  if (v.size() < n) v.resize(n);
  if (zero) std::fill(v.begin(), v.begin() + n, typename V::value_type{});
}

template <int Type>
constexpr int kPlanes = Type == W_Q6_K ? 2 : 3;

// Codes of 64 values of a k-quant row (chunk c of super-block blk, natural order) as bytes.
template <int Type>
inline __m512i kquant_codes(const uint8_t* blk, int c) {
  const __m512i low4 = _mm512_set1_epi8(0x0f);
  if constexpr (Type == W_Q6_K) {
    // Value 32k + l of half h: low bits in ql[64h + 32 (k % 2) + l] (nibble k / 2), top bits 2k, 2k + 1 of qh[32h + l].
    const int half = c / 2, hi = c % 2;
    const __m512i ql = _mm512_loadu_si512(blk + 64 * half);
    const __m256i qh = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + 128 + 32 * half));
    const __m512i qh2 = _mm512_srli_epi16(_mm512_inserti64x4(_mm512_castsi256_si512(qh), _mm256_srli_epi16(qh, 2), 1), 4 * hi);
    return _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(ql, 4 * hi), low4),
                           _mm512_slli_epi16(_mm512_and_si512(qh2, _mm512_set1_epi8(3)), 4));
  } else {
    // Chunk c: sub-block 2c in the low nibbles of 32 bytes, 2c + 1 in the high ones; Q5_K's fifth bits in qh.
    constexpr bool kQ5 = Type == W_Q5_K;
    const __m256i packed = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + (kQ5 ? 48 : 16) + 32 * c));
    __m256i lo = _mm256_and_si256(packed, _mm256_set1_epi8(0x0f));
    __m256i hi = _mm256_and_si256(_mm256_srli_epi16(packed, 4), _mm256_set1_epi8(0x0f));
    if constexpr (kQ5) {
      const __m256i qh = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + 16));
      const __m256i one = _mm256_set1_epi8(1);
      lo = _mm256_or_si256(lo, _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2 * c), one), 4));
      hi = _mm256_or_si256(hi, _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2 * c + 1), one), 4));
    }
    return _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
  }
}

// The products of 64 codes (bytes, less `offset`) by their scales (words: the scale of bytes
// 2i and 2i + 1), at most 13 bits, as their low bytes at lo and their high bytes at hi. The even
// and odd bytes are multiplied in separate words, so no byte leaves its place.
inline void scaled_bytes(__m512i q, __m512i scales, int offset, uint8_t* lo, uint8_t* hi) {
  const __m512i low = _mm512_set1_epi16(0xff), off = _mm512_set1_epi16(static_cast<int16_t>(offset));
  const __m512i even = _mm512_mullo_epi16(_mm512_sub_epi16(_mm512_and_si512(q, low), off), scales);
  const __m512i odd = _mm512_mullo_epi16(_mm512_sub_epi16(_mm512_srli_epi16(q, 8), off), scales);
  // (even & 0xff) | (odd << 8) and (even >> 8) | (odd & 0xff00): vpternlog 0xca is a ? b : c,
  // with a the low byte of every word.
  _mm512_storeu_si512(lo, _mm512_ternarylogic_epi32(low, even, _mm512_slli_epi16(odd, 8), 0xca));
  _mm512_storeu_si512(hi, _mm512_ternarylogic_epi32(low, _mm512_srli_epi16(even, 8), odd, 0xca));
}

// Rows [n0, n0 + 16) of w decoded into tw; rows past the weight's end are zeros.
template <int Type>
void decode_tile_weights(const Weight& w, int64_t n0, TileWeights& tw) {
  const int64_t K = w.cols, nb = K / kBlock;
  const int64_t rows = std::min<int64_t>(16, w.rows - n0);
  const int64_t row_bytes = weight_row_bytes(Type, K);
  if constexpr (kTileKQuant<Type>) {
    const int64_t sbs = K / kQK;
    constexpr int64_t kBytes = Type == W_Q4_K ? kQ4KBytes : Type == W_Q5_K ? kQ5KBytes : kQ6KBytes;
    prepare(tw.a, sbs * 4 * kPlanes<Type> * 1024, rows < 16);
    prepare(tw.scale, sbs * 16, rows < 16);
    prepare(tw.bias, sbs * 16, rows < 16);
    for (int64_t r = 0; r < rows; r++) {
      for (int64_t sb = 0; sb < sbs; sb++) {
        const uint8_t* blk = w.data + (n0 + r) * row_bytes + sb * kBytes;
        // The sub-block scales (and Q4_K / Q5_K's mins, words 8-15) as words.
        __m512i sc;
        if constexpr (Type == W_Q6_K) {
          sc = _mm512_castsi256_si512(_mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(blk + 192))));
          tw.scale[sb * 16 + r] = f16_at(blk + 208);
        } else {
          sc = _mm512_castsi256_si512(_mm256_cvtepu8_epi16(unpack_scale_min(blk + 4)));
          tw.scale[sb * 16 + r] = f16_at(blk);
          tw.bias[sb * 16 + r] = f16_at(blk + 2);
        }
        for (int c = 0; c < 4; c++) {
          uint8_t* plane = tw.a.data() + (sb * 4 + c) * kPlanes<Type> * 1024 + r * 64;
          // Word i of the chunk holds values 2i and 2i + 1: Q4_K / Q5_K sub-block 2c + i / 16,
          // Q6_K sub-block 4c + i / 8.
          const __m512i first = _mm512_set1_epi16(static_cast<int16_t>(Type == W_Q6_K ? 4 * c : 2 * c));
          const __m512i word = _mm512_srli_epi16(_mm512_set_epi16(31, 30, 29, 28, 27, 26, 25, 24, 23, 22, 21, 20, 19, 18, 17, 16, 15, 14,
                                                                  13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0),
                                                 Type == W_Q6_K ? 3 : 4);
          const __m512i which = _mm512_add_epi16(first, word);
          scaled_bytes(kquant_codes<Type>(blk, c), _mm512_permutexvar_epi16(which, sc), Type == W_Q6_K ? 32 : 0, plane, plane + 1024);
          if constexpr (Type != W_Q6_K) {
            const __m512i m = _mm512_permutexvar_epi16(_mm512_add_epi16(which, _mm512_set1_epi16(8)), sc);
            _mm512_storeu_si512(plane + 2048, _mm512_or_si512(m, _mm512_slli_epi16(m, 8)));
          }
        }
      }
    }
    return;
  }
  // Q8_0's codes are bytes already: a whole strip's tiles load them in place. (MLX 8-bit rows
  // are often 4 KB apart, which puts the sixteen rows in the same cache sets: those are copied.)
  const bool in_place = Type == W_Q8_0 && rows == 16;
  if (in_place) {
    tw.codes = w.data + n0 * row_bytes;
    tw.block_step = kBlock;
    tw.stride = row_bytes;
  } else {
    prepare(tw.a, nb * kTileBlockBytes, rows < 16);
    tw.codes = tw.a.data();
    tw.block_step = kTileBlockBytes;
    tw.stride = kBlock;
  }
  const int64_t params = kTileAffine<Type> ? K / w.group_size : nb;
  prepare(tw.scale, params * 16, rows < 16);
  prepare(tw.bias, kTileAffine<Type> ? params * 16 : 0, rows < 16);
  for (int64_t r = 0; r < rows; r++) {
    const uint8_t* row = w.data + (n0 + r) * row_bytes;
    for (int64_t b = 0; b < nb; b++) {
      uint8_t* dst = tw.a.data() + b * kTileBlockBytes + r * 32;
      if constexpr (kTileFourBit<Type>) {
        // A block's 16 bytes: the low nibbles, then the high ones (Q4_0: elements 0-15, 16-31;
        // MLX: the even elements, the odd ones), as quantize_x orders x.
        const __m128i bytes = _mm_loadu_si128(reinterpret_cast<const __m128i*>(row + 16 * b));
        __m128i lo = _mm_and_si128(bytes, _mm_set1_epi8(0x0f)), hi = _mm_and_si128(_mm_srli_epi16(bytes, 4), _mm_set1_epi8(0x0f));
        if constexpr (Type == W_Q4_0) {
          lo = _mm_sub_epi8(lo, _mm_set1_epi8(8));
          hi = _mm_sub_epi8(hi, _mm_set1_epi8(8));
        }
        _mm_storeu_si128(reinterpret_cast<__m128i*>(dst), lo);
        _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + 16), hi);
      } else if (!in_place) {
        std::memcpy(dst, row + 32 * b, 32);
      }
    }
    if constexpr (kTileAffine<Type>) {
      for (int64_t g = 0; g < params; g++) {
        tw.scale[g * 16 + r] = affine_param(w, w.scales, (n0 + r) * params + g);
        tw.bias[g * 16 + r] = affine_param(w, w.biases, (n0 + r) * params + g);
      }
    } else {
      const int64_t quant_bytes = kTileFourBit<Type> ? K / 2 : K;
      for (int64_t b = 0; b < nb; b++) tw.scale[b * 16 + r] = f16_at(row + quant_bytes + 2 * b);
    }
  }
}

inline __m512i c_row(const int32_t* c, int n) { return _mm512_load_si512(c + 16 * n); }

// How many blocks (or super-blocks) after its tile product a stored tile's float steps run, and
// the stored tiles kept for that.
constexpr int64_t kLag = 3;
constexpr int64_t kRing = kLag + 1;

// The sixteen accumulators of a strip's weight rows, lanes: rows of x. Every loop over them is
// unrolled, so that they stay in registers across the tile stores (which clobber memory).
struct Acc {
  __m512 v[16];
  Acc() {
#pragma GCC unroll 16
    for (int n = 0; n < 16; n++) v[n] = _mm512_setzero_ps();
  }
  void store(const MatmulTask& t, int64_t m0, int64_t n0) const {
    alignas(64) float out[256];
#pragma GCC unroll 16
    for (int n = 0; n < 16; n++) _mm512_store_ps(out + 16 * n, v[n]);
    store_tile(t, out, m0, n0);
  }
};

// One 16-row block of x (block xb of x) against a strip of block-type weights.
template <int Type>
void block_tiles(const MatmulTask& t, const TileX& x, int64_t xb, const TileWeights& tw, int64_t n0) {
  const int64_t nb = t.w->cols / kBlock;
  // log2 of the blocks per group (MLX groups are 32, 64 or 128 values).
  const int shift = kTileAffine<Type> ? (t.w->group_size == 32 ? 0 : t.w->group_size == 64 ? 1 : 2) : 0;
  const int8_t* bx = x.codes + xb * x.block_stride;
  const float* dx = x.d + xb * x.nb * 16;
  const float* gsum = x.gsum + xb * x.groups * 16;
  const uint8_t* a = tw.codes;
  const int64_t step = tw.block_step, stride = tw.stride;
  const float* scale = tw.scale.data();
  const float* bias = tw.bias.data();
  alignas(64) int32_t c[kRing][256];
  Acc acc;
  // Each tile is stored kLag blocks before its float steps read it back: vector loads of a tile
  // just stored wait for the store to retire.
  for (int64_t b = 0; b < nb + kLag; b++) {
    if (b < nb) {
      if (b % 2 == 0) {
        _tile_zero(0);
        _tile_loadd(2, a + b * step, stride);
        _tile_loadd(3, bx + b * kTileBlockBytes, 64);
        if constexpr (kTileAffine<Type>)
          _tile_dpbusd(0, 2, 3);
        else
          _tile_dpbssd(0, 2, 3);
        _tile_stored(0, c[b % kRing], 64);
      } else {
        _tile_zero(1);
        _tile_loadd(4, a + b * step, stride);
        _tile_loadd(5, bx + b * kTileBlockBytes, 64);
        if constexpr (kTileAffine<Type>)
          _tile_dpbusd(1, 4, 5);
        else
          _tile_dpbssd(1, 4, 5);
        _tile_stored(1, c[b % kRing], 64);
      }
    }
    if (b < kLag) continue;
    const int64_t done = b - kLag;
    const int32_t* cb = c[done % kRing];
    const __m512 dxb = _mm512_loadu_ps(dx + 16 * done);
    const float* dw = scale + 16 * (done >> shift);
#pragma GCC unroll 16
    for (int n = 0; n < 16; n++) acc.v[n] = scale_step(acc.v[n], c_row(cb, n), _mm512_set1_ps(dw[n]), dxb);
    if constexpr (kTileAffine<Type>) {
      if (((done + 1) & ((int64_t{1} << shift) - 1)) == 0) {
        const int64_t g = done >> shift;
        const __m512 gx = _mm512_loadu_ps(gsum + 16 * g);
#pragma GCC unroll 16
        for (int n = 0; n < 16; n++) acc.v[n] = bias_step(acc.v[n], _mm512_set1_ps(bias[16 * g + n]), gx);
      }
    }
  }
  acc.store(t, xb * kTokens, n0);
}

// Every 16-row block of x against a strip of k-quant weights, super-block by super-block (so
// that its weight planes stay in L1 while every block of x takes them): the planes' tile
// products over the super-block's four chunks, then, kLag products later, the float steps into
// that block of x's accumulators.
template <int Type>
void kquant_tiles(const MatmulTask& t, const TileX& x, TileWeights& tw, int64_t n0) {
  const int64_t xbs = (t.M + kTokens - 1) / kTokens, sbs = t.w->cols / kQK;
  prepare(tw.acc, xbs * 256, true);
  const uint8_t* a = tw.a.data();
  const float* scale = tw.scale.data();
  const float* scale_min = tw.bias.data();
  float* accs = tw.acc.data();
  alignas(64) int32_t c[kRing][3][256];
  const int64_t steps = sbs * xbs;
  for (int64_t i = 0; i < steps + kLag; i++) {
    if (i < steps) {
      const int64_t sb = i / xbs;
      const int8_t* bx = x.codes + (i % xbs) * x.block_stride + sb * 8 * kTileBlockBytes;
      _tile_zero(0);
      _tile_zero(1);
      if constexpr (Type != W_Q6_K) _tile_zero(2);
      for (int ch = 0; ch < 4; ch++) {
        const uint8_t* planes = a + (sb * 4 + ch) * kPlanes<Type> * 1024;
        _tile_loadd(6, bx + 2 * ch * kTileBlockBytes, 64);
        _tile_loadd(3, planes, 64);
        _tile_loadd(4, planes + 1024, 64);
        _tile_dpbusd(0, 3, 6);
        if constexpr (Type == W_Q6_K) {
          _tile_dpbssd(1, 4, 6);
        } else {
          _tile_dpbusd(1, 4, 6);
          _tile_loadd(5, planes + 2048, 64);
          _tile_dpbusd(2, 5, 6);
        }
      }
      _tile_stored(0, c[i % kRing][0], 64);
      _tile_stored(1, c[i % kRing][1], 64);
      if constexpr (Type != W_Q6_K) _tile_stored(2, c[i % kRing][2], 64);
    }
    if (i < kLag) continue;
    const int64_t done = i - kLag, sb = done / xbs, xb = done % xbs;
    const int32_t(*cs)[256] = c[done % kRing];
    const __m512 dxs = _mm512_loadu_ps(x.d + xb * x.nb * 16 + 16 * 8 * sb);
    const float* d = scale + 16 * sb;
    const float* dmin = scale_min + 16 * sb;
    float* acc = accs + xb * 256;
#pragma GCC unroll 16
    for (int n = 0; n < 16; n++) {
      const __m512i isum = _mm512_add_epi32(c_row(cs[0], n), _mm512_slli_epi32(c_row(cs[1], n), 8));
      __m512 v = scale_step(_mm512_loadu_ps(acc + 16 * n), isum, _mm512_set1_ps(d[n]), dxs);
      if constexpr (Type != W_Q6_K) v = min_step(v, c_row(cs[2], n), _mm512_set1_ps(dmin[n]), dxs);
      _mm512_storeu_ps(acc + 16 * n, v);
    }
  }
  for (int64_t xb = 0; xb < xbs; xb++) store_tile(t, accs + xb * 256, xb * kTokens, n0);
}

// This thread's decoded strip (kept between calls, so it is allocated once). Not inlined: the
// caller then holds a plain reference instead of asking for the thread's copy at every use.
__attribute__((noinline)) TileWeights& thread_tile_weights() {
  thread_local TileWeights tw;
  return tw;
}

template <int Type>
void int8_strip(const MatmulTask& t, const TileX& x, int64_t n0) {
  TileWeights& tw = thread_tile_weights();
  decode_tile_weights<Type>(*t.w, n0, tw);
  configure_int8_tiles(kTileKQuant<Type>);
  if constexpr (kTileKQuant<Type>) {
    kquant_tiles<Type>(t, x, tw, n0);
  } else {
    for (int64_t xb = 0; xb < (t.M + kTokens - 1) / kTokens; xb++) block_tiles<Type>(t, x, xb, tw, n0);
  }
  _tile_release();
}

}  // namespace

void pack_tile_x(const QuantX& xq, int type, int64_t M, int64_t K, int64_t block, const TileX& out) {
  const int64_t nb = K / kBlock;
  int8_t* codes = out.codes + block * out.block_stride;
  const bool four_bit = type == W_Q4_0 || type == W_AFFINE4;
  // 64 bytes of each row at `at`, transposed: v[j] holds bytes 4j .. 4j + 3 of the 16 rows.
  auto load = [&](int64_t at, __m512i v[16]) {
    for (int64_t m = 0; m < kTokens; m++) {
      const int64_t row = block * kTokens + m;
      v[m] = row < M ? _mm512_loadu_si512(xq.q + row * xq.q_stride + at) : _mm512_setzero_si512();
    }
    transpose16(v);
  };
  __m512i v[16], w[16];
  if (four_bit) {
    // Units of four blocks: their low-nibble halves, then their high-nibble halves (x_block).
    for (int64_t u = 0; u < (nb + 3) / 4; u++) {
      load(128 * u, v);
      load(128 * u + 64, w);
      for (int j = 0; j < 4; j++)
        for (int k = 0; k < 4; k++) {
          _mm512_storeu_si512(codes + (4 * u + j) * kTileBlockBytes + 64 * k, v[4 * j + k]);
          _mm512_storeu_si512(codes + (4 * u + j) * kTileBlockBytes + 64 * (4 + k), w[4 * j + k]);
        }
    }
  } else {
    for (int64_t u = 0; u < (nb + 1) / 2; u++) {
      load(64 * u, v);
      for (int j = 0; j < 16; j++) _mm512_storeu_si512(codes + u * 2 * kTileBlockBytes + 64 * j, v[j]);
    }
  }
  float* d = out.d + block * out.nb * 16;
  float* g = out.gsum + block * out.groups * 16;
  for (int64_t m = 0; m < kTokens; m++) {
    const int64_t row = block * kTokens + m;
    for (int64_t b = 0; b < nb; b++) d[16 * b + m] = row < M ? xq.d[row * xq.b_stride + b] : 0.0f;
    for (int64_t j = 0; j < out.groups; j++) g[16 * j + m] = row < M ? xq.gsum[row * xq.g_stride + j] : 0.0f;
  }
}

void matmul_int8_strip(const MatmulTask& t, const TileX& x, int64_t n0) {
  switch (t.w->type) {
    case W_Q8_0:
      return int8_strip<W_Q8_0>(t, x, n0);
    case W_Q4_0:
      return int8_strip<W_Q4_0>(t, x, n0);
    case W_AFFINE4:
      return int8_strip<W_AFFINE4>(t, x, n0);
    case W_AFFINE8:
      return int8_strip<W_AFFINE8>(t, x, n0);
    case W_Q4_K:
      return int8_strip<W_Q4_K>(t, x, n0);
    case W_Q5_K:
      return int8_strip<W_Q5_K>(t, x, n0);
    case W_Q6_K:
      return int8_strip<W_Q6_K>(t, x, n0);
    default:
      return;
  }
}

}  // namespace amx
}  // namespace tl
