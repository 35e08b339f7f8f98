// Batched matmuls on AMX tiles (Intel Sapphire Rapids and later), compiled with AVX-512, AVX512-BF16
// and AMX-BF16. One tile product multiplies a 16 x 32 bf16 block of weights by a 32 x 16 bf16
// block of x and accumulates 16 x 16 f32 sums, an order of magnitude more work per instruction
// than vpdpbusd. Weights of every type are decoded to bf16 a strip of rows at a time, so the
// decode cost is shared by all rows of x: this pays off for prefill (many rows), while decode
// (one row) keeps the integer kernels, which read the weights in their stored form.
//
// The product C[n][m] = Σ_k W[n][k] · x[m][k] takes the weights as tile A (16 rows of 32 values,
// read straight from the decoded strip) and x as tile B, which wants k in pairs: row kk of B
// holds (x[m][2kk], x[m][2kk + 1]) for m = 0..15. pack_x writes x in exactly that order.
//
// bf16 keeps 8 significant bits. For quantized weights that is finer than the int8 activations
// of the integer kernels. For f16 and bf16 weights, whose users expect f32 accuracy, x is split
// into three bf16 parts x0 + x1 + x2 (24 bits, as f32) and f16 weights into w0 + w1 (exact: f16
// has 11 bits); the products w0·(x0 + x1 + x2) + w1·(x0 + x1) leave out only terms near 2^-26.
#include <immintrin.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "kernels.h"
#include "transpose16.h"
#include "x86_util.h"

namespace tl {
namespace amx {
namespace {

// 16 floats from a and 16 from b as 32 bf16 (round to nearest even).
inline __m512i to_bf16(__m512 a, __m512 b) { return reinterpret_cast<__m512i>(_mm512_cvtne2ps_pbh(b, a)); }

// n (<= 32) floats as bf16 into dst[0..32), zeros past n.
inline void store_bf16(uint16_t* dst, const float* src, int64_t n) {
  const __m512 lo = _mm512_maskz_loadu_ps(lane_mask(n), src), hi = _mm512_maskz_loadu_ps(lane_mask(n - 16), src + 16);
  _mm512_storeu_si512(dst, to_bf16(lo, hi));
}

// bf16 of what rounding a and b to `hi` left out, which then takes that part out of a and b.
inline __m512i next_part(__m512& a, __m512& b, __m512i hi) {
  a = _mm512_sub_ps(a, _mm512_cvtpbh_ps(reinterpret_cast<__m256bh>(_mm512_castsi512_si256(hi))));
  b = _mm512_sub_ps(b, _mm512_cvtpbh_ps(reinterpret_cast<__m256bh>(_mm512_extracti64x4_epi64(hi, 1))));
  return to_bf16(a, b);
}

// A strip keeps each tile's 16 rows x 32 values together (1 KB), so a tile loads from one place.
constexpr int64_t kTile = 16 * 32;

// Row n of w as bf16, values 32c .. 32c + 31 at dst + c · kTile, zeros past K; for f16 weights
// also what that rounding leaves out, at lo likewise. `scratch` holds K floats.
void decode_bf16(const Weight& w, int64_t n, uint16_t* dst, uint16_t* lo, float* scratch) {
  const int64_t K = w.cols;
  const uint8_t* row = w.data + n * weight_row_bytes(w.type, K);
  switch (w.type) {
    case W_BF16:
      for (int64_t k = 0; k < K; k += 32) {
        const __mmask32 m = K - k >= 32 ? ~0u : (1u << (K - k)) - 1;
        _mm512_storeu_si512(dst + k / 32 * kTile, _mm512_maskz_loadu_epi16(m, row + 2 * k));
      }
      return;
    case W_F16: {
      const uint16_t* p = reinterpret_cast<const uint16_t*>(row);
      for (int64_t k = 0; k < K; k += 32) {
        __m512 a = _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(lane_mask(K - k), p + k));
        __m512 b = _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(lane_mask(K - k - 16), p + k + 16));
        const __m512i hi = to_bf16(a, b);
        _mm512_storeu_si512(dst + k / 32 * kTile, hi);
        _mm512_storeu_si512(lo + k / 32 * kTile, next_part(a, b, hi));
      }
      return;
    }
    case W_F32:
      for (int64_t k = 0; k < K; k += 32) store_bf16(dst + k / 32 * kTile, reinterpret_cast<const float*>(row) + k, K - k);
      return;
    case W_Q8_0: {
      const int8_t* q = reinterpret_cast<const int8_t*>(row);
      const uint16_t* d = reinterpret_cast<const uint16_t*>(row + K);
      for (int64_t b = 0; b < K / kBlock; b++) {
        const __m512 scale = _mm512_set1_ps(f16(d[b]));
        const __m512 lo = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(q + 32 * b))));
        const __m512 hi = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(q + 32 * b + 16))));
        _mm512_storeu_si512(dst + b * kTile, to_bf16(_mm512_mul_ps(lo, scale), _mm512_mul_ps(hi, scale)));
      }
      return;
    }
    case W_Q4_0: {
      // Byte j of a block: element j in the low nibble, j + 16 in the high one; value d · (q − 8).
      const uint16_t* d = reinterpret_cast<const uint16_t*>(row + K / 2);
      const __m512i eight = _mm512_set1_epi32(8), low4 = _mm512_set1_epi32(0x0f);
      for (int64_t b = 0; b < K / kBlock; b++) {
        const __m512 scale = _mm512_set1_ps(f16(d[b]));
        const __m512i bytes = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(row + 16 * b)));
        const __m512 lo = _mm512_cvtepi32_ps(_mm512_sub_epi32(_mm512_and_si512(bytes, low4), eight));
        const __m512 hi = _mm512_cvtepi32_ps(_mm512_sub_epi32(_mm512_srli_epi32(bytes, 4), eight));
        _mm512_storeu_si512(dst + b * kTile, to_bf16(_mm512_mul_ps(lo, scale), _mm512_mul_ps(hi, scale)));
      }
      return;
    }
    case W_AFFINE8:
    case W_AFFINE4: {
      // Groups are 32, 64 or 128 values, so one block of 32 lies in one group.
      const int64_t groups = K / w.group_size;
      const __m512i low4 = _mm512_set1_epi32(0x0f);
      const __m512i even = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
      const __m512i odd = _mm512_add_epi32(even, _mm512_set1_epi32(8));
      for (int64_t k = 0; k < K; k += kBlock) {
        const int64_t g = n * groups + k / w.group_size;
        const __m512 scale = _mm512_set1_ps(affine_param(w, w.scales, g)), bias = _mm512_set1_ps(affine_param(w, w.biases, g));
        __m512i q0, q1;
        if (w.type == W_AFFINE8) {
          q0 = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(row + k)));
          q1 = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(row + k + 16)));
        } else {
          // Byte j holds element 2j (low nibble) and 2j + 1: interleave the two halves.
          const __m512i bytes = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(row + k / 2)));
          const __m512i lo = _mm512_and_si512(bytes, low4), hi = _mm512_srli_epi32(bytes, 4);
          q0 = _mm512_permutex2var_epi32(lo, even, hi);
          q1 = _mm512_permutex2var_epi32(lo, odd, hi);
        }
        _mm512_storeu_si512(dst + k / 32 * kTile, to_bf16(_mm512_fmadd_ps(_mm512_cvtepi32_ps(q0), scale, bias),
                                                          _mm512_fmadd_ps(_mm512_cvtepi32_ps(q1), scale, bias)));
      }
      return;
    }
    default:
      decode_row(w, n, scratch);
      for (int64_t k = 0; k < K; k += 32) store_bf16(dst + k / 32 * kTile, scratch + k, K - k);
      return;
  }
}

struct alignas(64) TileConfig {
  uint8_t palette;
  uint8_t start_row;
  uint8_t reserved[14];
  uint16_t colsb[16];
  uint8_t rows[16];
};

// Every tile is 16 rows of 64 bytes. One product per step: 0-3 accumulate C, 4-5 hold weights,
// 6-7 x. Split products: 0-1 accumulate, 2-3 hold weights, 4-6 the parts of x.
void configure_tiles() {
  TileConfig c{};
  c.palette = 1;
  for (int i = 0; i < 8; i++) {
    c.colsb[i] = 64;
    c.rows[i] = 16;
  }
  _tile_loadconfig(&c);
}

// Writes C tile [n][m] (in `c`, 16 x 16) to out rows m0.. and columns n0.., adding the bias.
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

void pack_x(const float* x, int64_t M, int64_t K, int64_t block, int parts, int64_t part_stride, uint16_t* xb) {
  const int64_t Kp = padded_k(K);
  for (int64_t k = 0; k < Kp; k += 32) {
    // Row m: x[m][k..k+32) as 16 bf16 pairs; transposed, vector j is pair row k/2 + j.
    __m512i r[3][16];
    for (int64_t m = 0; m < kTokens; m++) {
      const int64_t row = block * kTokens + m;
      const float* p = x + row * K + k;
      __m512 a = row < M ? _mm512_maskz_loadu_ps(lane_mask(K - k), p) : _mm512_setzero_ps();
      __m512 b = row < M ? _mm512_maskz_loadu_ps(lane_mask(K - k - 16), p + 16) : _mm512_setzero_ps();
      r[0][m] = to_bf16(a, b);
      for (int part = 1; part < parts; part++) r[part][m] = next_part(a, b, r[part - 1][m]);
    }
    for (int part = 0; part < parts; part++) {
      uint16_t* out = xb + part * part_stride + block * kTokens * Kp;
      transpose16(r[part]);
      for (int j = 0; j < 16; j++) _mm512_storeu_si512(out + (k / 2 + j) * 32, r[part][j]);
    }
  }
}

void matmul_strip(const MatmulTask& t, const uint16_t* xb, int parts, int64_t part_stride, int64_t n0) {
  const Weight& w = *t.w;
  const int64_t Kp = padded_k(w.cols);
  const bool w_lo = w.type == W_F16;
  thread_local std::vector<uint16_t> strip, strip_lo;
  thread_local std::vector<float> scratch;
  strip.resize(kStrip * Kp);
  strip_lo.resize(w_lo ? kStrip * Kp : 0);
  scratch.resize(w.cols);
  // Rows 0-15 of the strip are tiles' rows in its first half, rows 16-31 in its second.
  for (int64_t r = 0; r < kStrip; r++) {
    const int64_t at = (r / 16) * 16 * Kp + (r % 16) * 32;
    uint16_t* dst = strip.data() + at;
    uint16_t* dst_lo = w_lo ? strip_lo.data() + at : nullptr;
    if (n0 + r < w.rows) {
      decode_bf16(w, n0 + r, dst, dst_lo, scratch.data());
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
  const int64_t blocks = (t.M + kTokens - 1) / kTokens;
  alignas(64) float c[4][256];
  if (parts == 1) {
    // One product per tile step. Two blocks of x at a time against both halves of the strip:
    // four accumulators, and each tile loaded serves two products.
    for (int64_t b = 0; b < blocks; b += 2) {
      const bool two = b + 1 < blocks;
      const uint16_t* x0 = xb + b * kTokens * Kp;
      const uint16_t* x1 = x0 + kTokens * Kp;
      _tile_zero(0);
      _tile_zero(1);
      _tile_zero(2);
      _tile_zero(3);
      for (int64_t k = 0; k < Kp; k += 32) {
        _tile_loadd(4, w0 + k * 16, 64);
        _tile_loadd(5, w1 + k * 16, 64);
        _tile_loadd(6, x0 + k * 16, 64);
        _tile_dpbf16ps(0, 4, 6);
        _tile_dpbf16ps(1, 5, 6);
        if (two) {
          _tile_loadd(7, x1 + k * 16, 64);
          _tile_dpbf16ps(2, 4, 7);
          _tile_dpbf16ps(3, 5, 7);
        }
      }
      _tile_stored(0, c[0], 64);
      _tile_stored(1, c[1], 64);
      _tile_stored(2, c[2], 64);
      _tile_stored(3, c[3], 64);
      store_tiles(t, c, b * kTokens, n0);
      if (two) store_tiles(t, c + 2, (b + 1) * kTokens, n0);
    }
  } else {
    // w0·(x0 + x1 + x2) (+ w1·(x0 + x1) for f16), one block of x at a time.
    const uint16_t* l0 = strip_lo.data();
    const uint16_t* l1 = strip_lo.data() + 16 * Kp;
    for (int64_t b = 0; b < blocks; b++) {
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
  }
  // Back to the initial state, so the OS need not save 8 KB of tiles at each context switch.
  _tile_release();
}

}  // namespace amx
}  // namespace tl
