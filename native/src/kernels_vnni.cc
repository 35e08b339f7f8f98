// Batched matmuls (prefill) of block-quantized weights (GGML Q8_0, Q4_0, Q4_K, Q5_K, Q6_K and
// MLX affine) on AVX-512 VNNI, compiled with the AVX-512 kernels.
//
// The per-row tiles of kernels_x86.cc hold the blocks of one weight row in a vector's lanes, so
// every unit of weights costs, besides its vpdpbusd, a conversion, a permute of block scales and
// a multiply-add for each row of x. Here the sixteen int32 lanes are sixteen weight rows instead:
// one vpdpbusd takes four values of each row against four values of x broadcast to every lane,
// and after eight of them a block's 32 products sit whole in each lane. Per block and row of x
// that is eight vpdpbusd, one conversion, one multiply (the sixteen rows' scales by x's) and one
// multiply-add, with nothing to unpack. The weights must be laid out for it: a strip of sixteen
// rows is rearranged once, 4-bit codes unpacked to bytes, and then read by every row of x.
#include <immintrin.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "kernels.h"
#include "transpose16.h"
#include "x86_util.h"

namespace tl {
namespace vnni {
namespace {

// A strip, group after group. A group is one block (32 values, one block of x) for GGML types
// and 1, 2 or 4 blocks for MLX affine weights. It holds the group's corrections e (kCorrections
// vectors of 16 f32, one lane per row), then its blocks, each its scales dw (kSubs vectors of 16
// f32) and its codes: 8 steps of 16 rows x 4 unsigned bytes. Step s of row r holds the four
// codes of that row which x's four values at x_step(s) multiply; with two scales per block
// (Q6_K's 16-value sub-blocks), steps 0-3 take the first and 4-7 the second.
constexpr int64_t kCodeBytes = 8 * 64;

template <int Type>
constexpr int kSubs = Type == W_Q6_K ? 2 : 1;
template <int Type>
constexpr int kCorrections = Type == W_Q6_K ? 2 : 1;
template <int Type>
constexpr int64_t kBlockBytes = 64 * kSubs<Type> + kCodeBytes;
template <int Type>
constexpr bool kAffine = Type == W_AFFINE4 || Type == W_AFFINE8;

template <int Type>
struct StripLayout {
  uint8_t* base;
  int64_t blocks_per_group;
  int64_t group_bytes() const { return 64 * kCorrections<Type> + blocks_per_group * kBlockBytes<Type>; }
  uint8_t* group(int64_t g) const { return base + g * group_bytes(); }
  // Block k of group g: the multiply loop's address, without dividing.
  uint8_t* block(int64_t g, int64_t k) const { return group(g) + 64 * kCorrections<Type> + k * kBlockBytes<Type>; }
  uint8_t* block(int64_t b) const { return block(b / blocks_per_group, b % blocks_per_group); }
  static uint8_t* codes(uint8_t* block, int s) { return block + 64 * kSubs<Type> + 64 * s; }
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

// vpdpbusd takes the weights as unsigned bytes: Q8_0's codes enter shifted by 128, Q4_0's are
// q + 8 already, Q6_K's q + 32. The shift comes back out as a correction −offset · dw · s_x.
template <int Type>
constexpr float kOffset = Type == W_Q8_0   ? 128.0f
                          : Type == W_Q4_0 ? 8.0f
                          : Type == W_Q6_K ? 32.0f
                                           : 0.0f;

// Bytes [at, at + n) (n ≤ 64) of rows n0 .. n0 + 15 of w, transposed: v[j] then holds each row's
// bytes at + 4j .. at + 4j + 3 in its lane, zeros past n and for rows past the weight's end.
inline void load_transposed(const Weight& w, int64_t n0, int64_t rows, int64_t row_bytes, int64_t at, int64_t n, __m512i v[16]) {
  const __mmask64 mask = n >= 64 ? ~0ull : (1ull << n) - 1;
  for (int64_t r = 0; r < 16; r++)
    v[r] = r < rows ? _mm512_maskz_loadu_epi8(mask, w.data + (n0 + r) * row_bytes + at) : _mm512_setzero_si512();
  transpose16(v);
}

inline void store(uint8_t* p, __m512i v) { _mm512_storeu_si512(p, v); }
inline void store(uint8_t* p, const float* v) { std::memcpy(p, v, 64); }

inline __m512i nibble(__m512i v, int high) { return _mm512_and_si512(_mm512_srli_epi16(v, 4 * high), _mm512_set1_epi8(0x0f)); }
// The bits of each byte of v from `bit` on, under `mask`, moved up to bit `to`.
inline __m512i bits(__m512i v, int bit, int mask, int to) {
  return _mm512_slli_epi16(_mm512_and_si512(_mm512_srli_epi16(v, bit), _mm512_set1_epi8(static_cast<char>(mask))), to);
}

// The codes of Q8_0, Q4_0 and MLX rows, which hold all their codes first: 64 bytes of every row
// at a time, 2 blocks of 8-bit codes or 4 of 4-bit ones.
template <int Type>
void pack_block_codes(const Weight& w, int64_t n0, int64_t rows, int64_t row_bytes, const StripLayout<Type>& strip) {
  const int64_t nb = w.cols / kBlock;
  const int64_t quant_bytes = kFourBit<Type> ? w.cols / 2 : w.cols;
  constexpr int kDwordsPerBlock = kFourBit<Type> ? 4 : 8;
  for (int64_t c = 0; c < quant_bytes; c += 64) {
    __m512i v[16];
    load_transposed(w, n0, rows, row_bytes, c, std::min<int64_t>(64, quant_bytes - c), v);
    for (int j = 0; j < 16; j++) {
      const int64_t b = c / (4 * kDwordsPerBlock) + j / kDwordsPerBlock;
      if (b >= nb) break;
      const int s = j % kDwordsPerBlock;
      if constexpr (kFourBit<Type>) {
        store(strip.codes(b, s), nibble(v[j], 0));
        store(strip.codes(b, s + 4), nibble(v[j], 1));
      } else if constexpr (Type == W_Q8_0) {
        store(strip.codes(b, s), _mm512_xor_si512(v[j], _mm512_set1_epi8(static_cast<char>(0x80))));
      } else {
        store(strip.codes(b, s), v[j]);
      }
    }
  }
}

// The codes of Q4_K / Q5_K super-block sb: its 32-byte chunk c holds sub-block 2c in the low
// nibbles and 2c + 1 in the high ones; Q5_K's fifth bits are bits 2c and 2c + 1 of qh.
template <int Type>
void pack_k45_codes(const Weight& w, int64_t n0, int64_t rows, int64_t row_bytes, int64_t sb, const StripLayout<Type>& strip) {
  constexpr bool kQ5 = Type == W_Q5_K;
  const int64_t at = sb * (kQ5 ? kQ5KBytes : kQ4KBytes);
  __m512i qh[16];
  if constexpr (kQ5) load_transposed(w, n0, rows, row_bytes, at + 16, 32, qh);
  for (int half = 0; half < 2; half++) {
    __m512i v[16];
    load_transposed(w, n0, rows, row_bytes, at + (kQ5 ? 48 : 16) + 64 * half, 64, v);
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
void pack_q6k_codes(const Weight& w, int64_t n0, int64_t rows, int64_t row_bytes, int64_t sb, const StripLayout<W_Q6_K>& strip) {
  const int64_t at = sb * kQ6KBytes;
  for (int half = 0; half < 2; half++) {
    __m512i ql[16], qh[16];
    load_transposed(w, n0, rows, row_bytes, at + 64 * half, 64, ql);
    load_transposed(w, n0, rows, row_bytes, at + 128 + 32 * half, 32, qh);
    for (int k = 0; k < 4; k++)
      for (int s = 0; s < 8; s++)
        store(strip.codes(sb * 8 + 4 * half + k, s), _mm512_or_si512(nibble(ql[8 * (k % 2) + s], k / 2), bits(qh[s], 2 * k, 3, 4)));
  }
}

// Rows [n0, n0 + 16) of w rearranged into `strip`; rows past the weight's end are zeros.
template <int Type>
void pack_strip(const Weight& w, int64_t n0, const StripLayout<Type>& strip) {
  const int64_t K = w.cols;
  const int64_t nb = K / kBlock;
  const int64_t rows = std::min<int64_t>(16, w.rows - n0);
  const int64_t row_bytes = weight_row_bytes(w.type, K);
  alignas(64) float dw[kSubs<Type>][16] = {}, e[kCorrections<Type>][16] = {};
  // Stores the scales in dw and corrections in e of block b (and of its group).
  auto put = [&](int64_t b) {
    for (int i = 0; i < kSubs<Type>; i++) store(strip.block(b) + 64 * i, dw[i]);
    if (b % strip.blocks_per_group == 0)
      for (int i = 0; i < kCorrections<Type>; i++) store(strip.group(b / strip.blocks_per_group) + 64 * i, e[i]);
  };

  if constexpr (Type == W_Q4_K || Type == W_Q5_K) {
    // w = d · sc · q − dmin · m per sub-block of 32: the mins meet s_x.
    const int64_t bytes = Type == W_Q5_K ? kQ5KBytes : kQ4KBytes;
    for (int64_t sb = 0; sb < K / kQK; sb++) {
      pack_k45_codes<Type>(w, n0, rows, row_bytes, sb, strip);
      float d[16], dmin[16];
      for (int64_t r = 0; r < rows; r++) {
        d[r] = f16_at(w.data + (n0 + r) * row_bytes + sb * bytes);
        dmin[r] = f16_at(w.data + (n0 + r) * row_bytes + sb * bytes + 2);
      }
      for (int j = 0; j < 8; j++) {
        for (int64_t r = 0; r < rows; r++) {
          int sc, m;
          kquant_scale_min(w.data + (n0 + r) * row_bytes + sb * bytes + 4, j, &sc, &m);
          dw[0][r] = d[r] * static_cast<float>(sc);
          e[0][r] = -dmin[r] * static_cast<float>(m);
        }
        put(sb * 8 + j);
      }
    }
  } else if constexpr (Type == W_Q6_K) {
    // w = d · sc · (q − 32) per sub-block of 16: two per block of x.
    for (int64_t sb = 0; sb < K / kQK; sb++) {
      pack_q6k_codes(w, n0, rows, row_bytes, sb, strip);
      for (int j = 0; j < 8; j++) {
        for (int64_t r = 0; r < rows; r++) {
          const uint8_t* blk = w.data + (n0 + r) * row_bytes + sb * kQ6KBytes;
          const float d = f16_at(blk + 208);
          const int8_t* sc = reinterpret_cast<const int8_t*>(blk + 192 + 2 * j);
          for (int i = 0; i < 2; i++) {
            dw[i][r] = d * static_cast<float>(sc[i]);
            e[i][r] = -kOffset<Type> * dw[i][r];
          }
        }
        put(sb * 8 + j);
      }
    }
  } else if constexpr (kAffine<Type>) {
    // w = scale · q + bias per group: the bias meets the exact sum of x over the group.
    pack_block_codes<Type>(w, n0, rows, row_bytes, strip);
    const int64_t groups = nb / strip.blocks_per_group;
    for (int64_t g = 0; g < groups; g++) {
      for (int64_t r = 0; r < rows; r++) {
        dw[0][r] = affine_param(w, w.scales, (n0 + r) * groups + g);
        e[0][r] = affine_param(w, w.biases, (n0 + r) * groups + g);
      }
      for (int64_t k = 0; k < strip.blocks_per_group; k++) put(g * strip.blocks_per_group + k);
    }
  } else {
    // Q8_0, Q4_0: each row's f16 block scales follow its codes.
    pack_block_codes<Type>(w, n0, rows, row_bytes, strip);
    const int64_t quant_bytes = kFourBit<Type> ? K / 2 : K;
    for (int64_t b = 0; b < nb; b++) {
      for (int64_t r = 0; r < rows; r++) {
        dw[0][r] = f16_at(w.data + (n0 + r) * row_bytes + quant_bytes + 2 * b);
        e[0][r] = -kOffset<Type> * dw[0][r];
      }
      put(b);
    }
  }
}

// Brings a range of weights into cache two lines per step, while the strip before it is
// multiplied: packing then reads from cache instead of waiting on memory.
struct Prefetcher {
  const char* at;
  const char* end;
  void step() {
    if (at >= end) return;
    _mm_prefetch(at, _MM_HINT_T0);
    _mm_prefetch(at + 64, _MM_HINT_T0);
    at += 128;
  }
};

inline __m512i broadcast4(const int8_t* p) {
  int32_t v;
  std::memcpy(&v, p, 4);
  return _mm512_set1_epi32(v);
}

// Eight vpdpbusd over steps [first, first + n) of a block: the int32 sums of 16 rows.
template <int Type>
inline __m512i dot_steps(const __m512i c[8], const int8_t* x, int first, int n) {
  __m512i d = _mm512_dpbusd_epi32(_mm512_setzero_si512(), c[first], broadcast4(x + x_step<Type>(first)));
  for (int s = first + 1; s < first + n; s++) d = _mm512_dpbusd_epi32(d, c[s], broadcast4(x + x_step<Type>(s)));
  return d;
}

// Rows [m0, m0 + MR) of x against a packed strip: one accumulator per row of x, its lanes the
// strip's sixteen weight rows.
template <int Type, int MR>
void rows_of_x(const MatmulTask& t, const StripLayout<Type>& strip, int64_t m0, int64_t n0, Prefetcher& ahead) {
  const QuantX& xq = t.xq;
  const int64_t bpg = strip.blocks_per_group;
  const int64_t groups = t.w->cols / kBlock / bpg;
  const int8_t* xs[MR];
  const float* xd[MR];
  // What the corrections multiply: s_x per block, the exact sum of x per MLX group, or s_x per
  // 16 values for Q6_K.
  const float* xt[MR];
  for (int i = 0; i < MR; i++) {
    xs[i] = xq.q + (m0 + i) * xq.q_stride;
    xd[i] = xq.d + (m0 + i) * xq.b_stride;
    xt[i] = kAffine<Type> ? xq.gsum + (m0 + i) * xq.g_stride : xq.s + (m0 + i) * xq.s_stride;
  }
  __m512 acc[MR];
  for (int i = 0; i < MR; i++) acc[i] = _mm512_setzero_ps();
  for (int64_t g = 0; g < groups; g++) {
    for (int64_t k = 0; k < bpg; k++) {
      const int64_t b = g * bpg + k;
      uint8_t* block = strip.block(g, k);
      const float* dw = reinterpret_cast<const float*>(block);
      ahead.step();
      __m512i c[8];
      for (int s = 0; s < 8; s++) c[s] = _mm512_loadu_si512(StripLayout<Type>::codes(block, s));
      const int64_t at = x_block<Type>(b);
      if constexpr (kSubs<Type> == 1) {
        const __m512 scale = _mm512_loadu_ps(dw);
        for (int i = 0; i < MR; i++) {
          const __m512i d = dot_steps<Type>(c, xs[i] + at, 0, 8);
          acc[i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(d), _mm512_mul_ps(scale, _mm512_set1_ps(xd[i][b])), acc[i]);
        }
      } else {
        const __m512 scale0 = _mm512_loadu_ps(dw), scale1 = _mm512_loadu_ps(dw + 16);
        for (int i = 0; i < MR; i++) {
          const __m512i d0 = dot_steps<Type>(c, xs[i] + at, 0, 4), d1 = dot_steps<Type>(c, xs[i] + at, 4, 4);
          const __m512 dx = _mm512_set1_ps(xd[i][b]);
          acc[i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(d0), _mm512_mul_ps(scale0, dx), acc[i]);
          acc[i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(d1), _mm512_mul_ps(scale1, dx), acc[i]);
        }
      }
    }
    const float* e = reinterpret_cast<const float*>(strip.group(g));
    for (int j = 0; j < kCorrections<Type>; j++) {
      const __m512 ej = _mm512_loadu_ps(e + 16 * j);
      for (int i = 0; i < MR; i++) acc[i] = _mm512_fmadd_ps(ej, _mm512_set1_ps(xt[i][g * kCorrections<Type> + j]), acc[i]);
    }
  }
  const int64_t N = t.w->rows;
  const __mmask16 mask = lane_mask(N - n0);
  const __m512 bias = t.bias ? _mm512_maskz_loadu_ps(mask, t.bias + n0) : _mm512_setzero_ps();
  for (int i = 0; i < MR; i++) _mm512_mask_storeu_ps(t.out + (m0 + i) * N + n0, mask, _mm512_add_ps(acc[i], bias));
}

// Rows of x per pass over the strip: eight accumulators and eight code vectors leave registers
// for the rest, and eight independent vpdpbusd chains hide their latency.
constexpr int kRowsOfX = 8;

template <int Type, int MR>
void rest_of_x(const MatmulTask& t, const StripLayout<Type>& strip, int64_t m, int64_t n0, Prefetcher& ahead) {
  if constexpr (MR > 0) {
    if (t.M - m == MR)
      rows_of_x<Type, MR>(t, strip, m, n0, ahead);
    else
      rest_of_x<Type, MR - 1>(t, strip, m, n0, ahead);
  }
}

template <int Type>
void strip(const MatmulTask& t, int64_t n0) {
  const Weight& w = *t.w;
  thread_local std::vector<uint8_t> buffer;
  StripLayout<Type> layout{nullptr, kAffine<Type> ? w.group_size / kBlock : 1};
  buffer.resize(w.cols / kBlock / layout.blocks_per_group * layout.group_bytes());
  layout.base = buffer.data();
  pack_strip<Type>(w, n0, layout);
  // The pool hands out strips in order, so the next two are this thread's or another's next.
  const int64_t row_bytes = weight_row_bytes(Type, w.cols);
  const char* rows = reinterpret_cast<const char*>(w.data);
  Prefetcher ahead{rows + std::min(w.rows, n0 + kStrip) * row_bytes, rows + std::min(w.rows, n0 + 3 * kStrip) * row_bytes};
  int64_t m = 0;
  for (; m + kRowsOfX <= t.M; m += kRowsOfX) rows_of_x<Type, kRowsOfX>(t, layout, m, n0, ahead);
  rest_of_x<Type, kRowsOfX - 1>(t, layout, m, n0, ahead);
}

}  // namespace

void matmul_strip(const MatmulTask& t, int64_t n0) {
  switch (t.w->type) {
    case W_Q8_0:
      strip<W_Q8_0>(t, n0);
      break;
    case W_Q4_0:
      strip<W_Q4_0>(t, n0);
      break;
    case W_AFFINE4:
      strip<W_AFFINE4>(t, n0);
      break;
    case W_AFFINE8:
      strip<W_AFFINE8>(t, n0);
      break;
    case W_Q4_K:
      strip<W_Q4_K>(t, n0);
      break;
    case W_Q5_K:
      strip<W_Q5_K>(t, n0);
      break;
    case W_Q6_K:
      strip<W_Q6_K>(t, n0);
      break;
    default:
      break;
  }
}

}  // namespace vnni
}  // namespace tl
