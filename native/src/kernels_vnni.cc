// Batched matmuls (prefill) of 8- and 4-bit block weights (GGML Q8_0 and Q4_0, MLX affine) on
// AVX-512 VNNI, compiled with the AVX-512 kernels.
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

namespace tl {
namespace vnni {
namespace {

// A strip, group after group (a group is one block for Q8_0 and Q4_0, and 1, 2 or 4 blocks for
// MLX affine weights): the group's correction e (16 f32, one per row), then each block's scales
// dw (16 f32), then its codes: 8 steps of 16 rows x 4 unsigned bytes. Step s of row r holds the
// four codes of that row which x's four values at x_step(s) multiply.
constexpr int64_t kCodeBytes = 8 * 64;
constexpr int64_t kBlockBytes = 64 + kCodeBytes;

inline int64_t group_bytes(int64_t blocks_per_group) { return 64 + blocks_per_group * kBlockBytes; }

template <int Type>
constexpr bool kFourBit = Type == W_Q4_0 || Type == W_AFFINE4;

// Where block b starts in a row of x as the AVX-512 quantize_x orders it: natural for 8-bit
// codes; for 4-bit codes in units of four blocks, the low-nibble halves of the four (Q4_0's
// first 16 elements, MLX's even ones), then their high-nibble halves.
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
// q + 8 already, and MLX codes are unsigned. The shift comes back out as offset · dw · s_x.
template <int Type>
constexpr float kOffset = Type == W_Q8_0 ? 128.0f : Type == W_Q4_0 ? 8.0f : 0.0f;

// MLX scales or biases [at, at + n) as f32 into out.
void params_f32(const Weight& w, const void* params, int64_t at, int64_t n, float* out) {
  const uint16_t* p16 = static_cast<const uint16_t*>(params) + at;
  const float* p32 = static_cast<const float*>(params) + at;
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 m = n - i >= 16 ? 0xffff : static_cast<__mmask16>((1u << (n - i)) - 1);
    __m512 v;
    switch (w.scale_type) {
      case S_F16: v = _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, p16 + i)); break;
      case S_BF16: v = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, p16 + i)), 16)); break;
      default: v = _mm512_maskz_loadu_ps(m, p32 + i); break;
    }
    _mm512_mask_storeu_ps(out + i, m, v);
  }
}

// Rows [n0, n0 + 16) of w rearranged into `strip`; rows past the weight's end are zeros.
template <int Type>
void pack_strip(const Weight& w, int64_t n0, int64_t blocks_per_group, uint8_t* strip) {
  const int64_t K = w.cols;
  const int64_t nb = K / kBlock;
  const int64_t rows = std::min<int64_t>(16, w.rows - n0);
  const int64_t row_bytes = weight_row_bytes(w.type, K);
  const int64_t quant_bytes = kFourBit<Type> ? K / 2 : K;
  const int64_t gb = group_bytes(blocks_per_group);
  auto block_at = [&](int64_t b) { return strip + (b / blocks_per_group) * gb + 64 + (b % blocks_per_group) * kBlockBytes; };

  // 64 bytes of every row at a time, transposed: vector j then holds each row's bytes 4j..4j+3.
  for (int64_t c = 0; c < quant_bytes; c += 64) {
    const __mmask64 mask = quant_bytes - c >= 64 ? ~0ull : (1ull << (quant_bytes - c)) - 1;
    __m512i v[16];
    for (int64_t r = 0; r < 16; r++) v[r] = r < rows ? _mm512_maskz_loadu_epi8(mask, w.data + (n0 + r) * row_bytes + c) : _mm512_setzero_si512();
    transpose16(v);
    constexpr int kBytesPerBlock = kFourBit<Type> ? 16 : 32;
    constexpr int kDwordsPerBlock = kBytesPerBlock / 4;
    for (int j = 0; j < 16; j++) {
      const int64_t b = c / kBytesPerBlock + j / kDwordsPerBlock;
      if (b >= nb) break;
      uint8_t* codes = block_at(b) + 64;
      const int s = j % kDwordsPerBlock;
      if constexpr (kFourBit<Type>) {
        const __m512i low4 = _mm512_set1_epi8(0x0f);
        _mm512_storeu_si512(codes + s * 64, _mm512_and_si512(v[j], low4));
        _mm512_storeu_si512(codes + (s + 4) * 64, _mm512_and_si512(_mm512_srli_epi16(v[j], 4), low4));
      } else if constexpr (Type == W_Q8_0) {
        _mm512_storeu_si512(codes + s * 64, _mm512_xor_si512(v[j], _mm512_set1_epi8(static_cast<char>(0x80))));
      } else {
        _mm512_storeu_si512(codes + s * 64, v[j]);
      }
    }
  }

  const int64_t groups = nb / blocks_per_group;
  thread_local std::vector<float> scales, biases;
  if constexpr (Type == W_AFFINE4 || Type == W_AFFINE8) {
    scales.resize(rows * groups);
    biases.resize(rows * groups);
    for (int64_t r = 0; r < rows; r++) {
      params_f32(w, w.scales, (n0 + r) * groups, groups, scales.data() + r * groups);
      params_f32(w, w.biases, (n0 + r) * groups, groups, biases.data() + r * groups);
    }
  }
  alignas(64) float dw[16] = {}, e[16] = {};
  for (int64_t g = 0; g < groups; g++) {
    if constexpr (Type == W_AFFINE4 || Type == W_AFFINE8) {
      // w = scale · q + bias: the bias meets the exact sum of x over the group.
      for (int64_t r = 0; r < rows; r++) {
        dw[r] = scales[r * groups + g];
        e[r] = biases[r * groups + g];
      }
    } else {
      for (int64_t r = 0; r < rows; r++) {
        const uint16_t* d = reinterpret_cast<const uint16_t*>(w.data + (n0 + r) * row_bytes + quant_bytes);
        dw[r] = _cvtsh_ss(d[g]);
        e[r] = -kOffset<Type> * dw[r];
      }
    }
    uint8_t* group = strip + g * gb;
    std::memcpy(group, e, 64);
    for (int64_t k = 0; k < blocks_per_group; k++) std::memcpy(group + 64 + k * kBlockBytes, dw, 64);
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

// Rows [m0, m0 + MR) of x against a packed strip: one accumulator per row of x, its lanes the
// strip's sixteen weight rows.
template <int Type, int MR>
void rows_of_x(const MatmulTask& t, const uint8_t* strip, int64_t blocks_per_group, int64_t m0, int64_t n0, Prefetcher& ahead) {
  constexpr bool kAffine = Type == W_AFFINE4 || Type == W_AFFINE8;
  const QuantX& xq = t.xq;
  const int64_t groups = t.w->cols / kBlock / blocks_per_group;
  const int64_t gb = group_bytes(blocks_per_group);
  const int8_t* xs[MR];
  const float* xd[MR];
  const float* xt[MR];  // what e multiplies: s_x per block, or the sum of x per affine group
  for (int i = 0; i < MR; i++) {
    xs[i] = xq.q + (m0 + i) * xq.q_stride;
    xd[i] = xq.d + (m0 + i) * xq.b_stride;
    xt[i] = kAffine ? xq.gsum + (m0 + i) * xq.g_stride : xq.s + (m0 + i) * xq.b_stride;
  }
  __m512 acc[MR];
  for (int i = 0; i < MR; i++) acc[i] = _mm512_setzero_ps();
  for (int64_t g = 0; g < groups; g++) {
    const uint8_t* group = strip + g * gb;
    for (int64_t k = 0; k < blocks_per_group; k++) {
      const int64_t b = g * blocks_per_group + k;
      const uint8_t* block = group + 64 + k * kBlockBytes;
      const __m512 dw = _mm512_loadu_ps(reinterpret_cast<const float*>(block));
      ahead.step();
      __m512i c[8];
      for (int s = 0; s < 8; s++) c[s] = _mm512_loadu_si512(block + 64 + s * 64);
      const int64_t at = x_block<Type>(b);
      for (int i = 0; i < MR; i++) {
        const int8_t* x = xs[i] + at;
        __m512i d = _mm512_dpbusd_epi32(_mm512_setzero_si512(), c[0], broadcast4(x + x_step<Type>(0)));
        for (int s = 1; s < 8; s++) d = _mm512_dpbusd_epi32(d, c[s], broadcast4(x + x_step<Type>(s)));
        acc[i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(d), _mm512_mul_ps(dw, _mm512_set1_ps(xd[i][b])), acc[i]);
      }
    }
    const __m512 e = _mm512_loadu_ps(reinterpret_cast<const float*>(group));
    for (int i = 0; i < MR; i++) acc[i] = _mm512_fmadd_ps(e, _mm512_set1_ps(xt[i][g]), acc[i]);
  }
  const int64_t N = t.w->rows;
  const __mmask16 mask = N - n0 >= 16 ? 0xffff : static_cast<__mmask16>((1u << (N - n0)) - 1);
  const __m512 bias = t.bias ? _mm512_maskz_loadu_ps(mask, t.bias + n0) : _mm512_setzero_ps();
  for (int i = 0; i < MR; i++) _mm512_mask_storeu_ps(t.out + (m0 + i) * N + n0, mask, _mm512_add_ps(acc[i], bias));
}

// Rows of x per pass over the strip: eight accumulators and eight code vectors leave registers
// for the rest, and eight independent vpdpbusd chains hide their latency.
constexpr int kRowsOfX = 8;

template <int Type, int MR>
void rest_of_x(const MatmulTask& t, const uint8_t* strip, int64_t blocks_per_group, int64_t m, int64_t n0, Prefetcher& ahead) {
  if constexpr (MR > 0) {
    if (t.M - m == MR) rows_of_x<Type, MR>(t, strip, blocks_per_group, m, n0, ahead);
    else rest_of_x<Type, MR - 1>(t, strip, blocks_per_group, m, n0, ahead);
  }
}

template <int Type>
void strip(const MatmulTask& t, int64_t n0) {
  const Weight& w = *t.w;
  const int64_t blocks_per_group = is_affine(Type) ? w.group_size / kBlock : 1;
  thread_local std::vector<uint8_t> buffer;
  buffer.resize(w.cols / kBlock / blocks_per_group * group_bytes(blocks_per_group));
  pack_strip<Type>(w, n0, blocks_per_group, buffer.data());
  // The pool hands out strips in order, so the next two are this thread's or another's next.
  const int64_t row_bytes = weight_row_bytes(Type, w.cols);
  const char* rows = reinterpret_cast<const char*>(w.data);
  Prefetcher ahead{rows + std::min(w.rows, n0 + kStrip) * row_bytes, rows + std::min(w.rows, n0 + 3 * kStrip) * row_bytes};
  int64_t m = 0;
  for (; m + kRowsOfX <= t.M; m += kRowsOfX) rows_of_x<Type, kRowsOfX>(t, buffer.data(), blocks_per_group, m, n0, ahead);
  rest_of_x<Type, kRowsOfX - 1>(t, buffer.data(), blocks_per_group, m, n0, ahead);
}

}  // namespace

void matmul_strip(const MatmulTask& t, int64_t n0) {
  switch (t.w->type) {
    case W_Q8_0: strip<W_Q8_0>(t, n0); break;
    case W_Q4_0: strip<W_Q4_0>(t, n0); break;
    case W_AFFINE4: strip<W_AFFINE4>(t, n0); break;
    case W_AFFINE8: strip<W_AFFINE8>(t, n0); break;
    default: break;
  }
}

}  // namespace vnni
}  // namespace tl
