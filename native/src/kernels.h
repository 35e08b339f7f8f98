// The compute kernels behind the native backend, and the per-instruction-set tables that
// hold them. Each table is filled by one translation unit compiled for that instruction set
// (kernels_scalar.cc portably; kernels_x86.cc once for AVX2 and once for AVX-512).
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

namespace tl {

// Weight storage types; the numbers are shared with the TypeScript side.
enum WeightType : int {
  W_F32 = 0,
  W_F16 = 1,
  W_BF16 = 2,
  W_Q8_0 = 3,
  W_Q4_0 = 4,
  W_AFFINE4 = 5,
  W_AFFINE8 = 6,
  W_Q4_K = 7,
  W_Q6_K = 8,
  W_Q5_K = 9
};

// MLX affine quantization (4 or 8 bits): codes packed little end first in each 32-bit word, so
// a 4-bit row's byte k holds element 2k (low nibble) and 2k + 1 (high nibble); per group of
// group_size columns w = scale * q + bias, scales and biases stored as f32, f16 or bf16.
enum ScaleType : int { S_F32 = 0, S_F16 = 1, S_BF16 = 2 };

// The names the TypeScript side knows these by (src/kernels/native.ts checks its own lists
// against these when it loads the addon).
struct TypeName {
  const char* name;
  int id;
};
constexpr TypeName kWeightTypeNames[] = {{"f32", W_F32},   {"f16", W_F16},         {"bf16", W_BF16},       {"q8_0", W_Q8_0},
                                         {"q4_0", W_Q4_0}, {"affine4", W_AFFINE4}, {"affine8", W_AFFINE8}, {"q4_k", W_Q4_K},
                                         {"q6_k", W_Q6_K}, {"q5_k", W_Q5_K}};
constexpr TypeName kScaleTypeNames[] = {{"f32", S_F32}, {"f16", S_F16}, {"bf16", S_BF16}};

inline bool is_affine(int type) { return type == W_AFFINE4 || type == W_AFFINE8; }
inline bool is_kquant(int type) { return type == W_Q4_K || type == W_Q5_K || type == W_Q6_K; }
inline bool is_int8_type(int type) { return type == W_Q8_0 || type == W_Q4_0 || is_affine(type) || is_kquant(type); }
// Types that store two 4-bit codes per byte.
template <int Type>
constexpr bool kFourBit = Type == W_Q4_0 || Type == W_AFFINE4;

constexpr int kBlock = 32;  // elements per quantization block (GGML Q8_0 / Q4_0)

// Quantized weights (GGML Q8_0 and Q4_0) are kept in the "rows" layout (see
// src/tensor/block-quant.ts): each row holds all its quants, then its cols / 32 float16 scales.
//   Q8_0: cols int8 q; x = d * q.
//   Q4_0: cols / 2 bytes; in each block's 16 bytes, byte j holds element j in its low nibble and
//         element j + 16 in its high nibble; x = d * (q - 8).
// regroup_rows turns GGUF's block-after-block layout into it, in place (same size).
void regroup_rows(int type, uint8_t* data, int64_t rows, int64_t cols);

// GGML k-quants (Q4_K, Q5_K, Q6_K) stay in GGUF's layout: each row is cols / 256 super-blocks,
// laid out as src/tensor/k-quant.ts describes.
constexpr int kQK = 256;  // values per k-quant super-block
constexpr int kQ4KBytes = 144;
constexpr int kQ5KBytes = 176;
constexpr int kQ6KBytes = 210;

// Sub-block j's 6-bit scale and min from the 12 packed scale bytes of a Q4_K / Q5_K super-block.
inline void kquant_scale_min(const uint8_t* s, int j, int* sc, int* m) {
  if (j < 4) {
    *sc = s[j] & 63;
    *m = s[j + 4] & 63;
  } else {
    *sc = (s[j + 4] & 0x0f) | ((s[j - 4] >> 6) << 4);
    *m = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
  }
}

// Activations quantized on the fly for the integer dot products, one row of x per K elements
// (padded to a multiple of 128 with zeros): q[k] ≈ x[k] / d[b] per block b of 32, and s = the sum
// of q over each block (for kernels that feed weights as unsigned bytes and correct the offset
// afterwards, and for k-quant mins), or over each 16 values for Q6_K, whose scales cover 16. The
// AVX-512 kernels keep s as the integer sums (exact in f32); AVX2's are times d[b]. For k-quant
// weights the eight blocks of a super-block share one d. Each instruction set may order q within
// a row as its kernel wants.
struct QuantX {
  int8_t* q;
  float* d;
  float* s;
  int64_t q_stride;  // elements between rows of q (K rounded up to 128)
  int64_t b_stride;  // blocks between rows of d
  int64_t s_stride;  // sums between rows of s
  float* gsum;       // affine weights: the sum of x as quantized (Σ_b d_b · Σ q_b) over each weight group, per row
  int64_t g_stride;  // groups between rows of gsum
};

// Sums in s per block of 32 for weights of `type` (see QuantX).
inline int64_t sums_per_block(int type) { return type == W_Q6_K ? 2 : 1; }

struct Weight {
  int type;
  const uint8_t* data;
  int64_t rows;  // output features (N)
  int64_t cols;  // input features (K)
  // Affine types only: [rows, cols / group_size] each.
  const void* scales = nullptr;
  const void* biases = nullptr;
  int scale_type = S_F32;
  int64_t group_size = 0;
};

// Scale or bias i of an affine weight as f32.
float affine_param(const Weight& w, const void* params, int64_t i);

int64_t weight_row_bytes(int type, int64_t cols);

// out[m * N + n] = dot(x[m], w[n]) + bias[n], for m in [0, M) and the rows n in [n0, n1).
struct MatmulTask {
  const Weight* w;
  const float* x;  // [M, K]
  QuantX xq;       // x quantized (quantized weight types only)
  int64_t M;
  const float* bias;  // [N] or null
  float* out;         // [M, N]
};

struct IsaKernels {
  const char* name;
  void (*matmul_rows)(const MatmulTask& t, int64_t n0, int64_t n1);
  // Quantizes one row of x for weights of `type`; null where matmul_rows needs no quantized x.
  void (*quantize_x)(int type, const float* x, int64_t K, int8_t* q, float* d, float* s);
  float (*dot)(const float* a, const float* b, int64_t n);
  // s[j] = q · keys[j] for the n rows of keys (D floats each): one tile of attention scores.
  void (*scores)(const float* q, const float* keys, int64_t n, int64_t D, float* s);
  // One tile of the online softmax: s *= scale, m = max(running_max, max s), s = e^(s − m),
  // *sum = Σ s; returns m.
  float (*softmax_tile)(float* s, int64_t n, float scale, float running_max, float* sum);
  // y = y · c + Σ_j p[j] · values[j] over the n rows of values (D floats each).
  void (*accumulate)(float* y, float c, const float* values, const float* p, int64_t n, int64_t D);
  // out = silu(gate) * up over n elements, each computed the same way wherever it falls in the
  // n (no separate path for a tail), so that how a caller cuts a row into pieces cannot change it.
  void (*silu_mul)(float* out, const float* gate, const float* up, int64_t n);
  // n f16 or bf16 values (raw bits) widened to f32, exactly: K/V cache tiles for attention.
  void (*widen_f16)(const uint16_t* src, float* dst, int64_t n);
  void (*widen_bf16)(const uint16_t* src, float* dst, int64_t n);
};

const IsaKernels& scalar_kernels();
#if defined(TL_X86)
const IsaKernels& avx2_kernels();
const IsaKernels& avx512_kernels();

// Batched matmuls (prefill) of f16 and bf16 weights on AMX bf16 tiles, in kernels_amx.cc: a
// strip of weight rows is decoded to bf16 once and multiplied by every 16-row block of x, which
// is packed beforehand in three bf16 parts.
namespace amx {
constexpr int64_t kTokens = 16;  // rows of x per tile
constexpr int64_t kStrip = 32;   // weight rows per call of matmul_strip
constexpr int kParts = 3;        // bf16 parts of x
// K rounded up to the 32 values of one tile step; pack_x writes kTokens * padded_k(K) values per block.
inline int64_t padded_k(int64_t K) { return (K + 31) / 32 * 32; }
// Packs rows [16·block, 16·block + 16) of x [M, K] (zeros past M) as the tile product wants them,
// each of its kParts parts part_stride values after the one before.
void pack_x(const float* x, int64_t M, int64_t K, int64_t block, int64_t part_stride, uint16_t* xb);
// t.out for weight rows [n0, n0 + kStrip), from x packed by pack_x.
void matmul_strip(const MatmulTask& t, const uint16_t* xb, int64_t part_stride, int64_t n0);

// Batched matmuls of int8 weights (every is_int8_type) on AMX-INT8 tiles, for prompts: a tile
// product of 16 weight rows by 16 rows of x per block (or k-quant super-block) leaves each
// output's integer dot whole, and int8_recipe.h's float steps follow, so each row gets the bits
// of the AVX-512 one-row kernels.
constexpr int64_t kInt8Strip = 16;  // weight rows per call of matmul_int8_strip
// x quantized by the AVX-512 quantize_x, rearranged per 16 rows of x (kTokens) for the tiles:
// codes (block_stride bytes per 16 rows), d (nb blocks) and MLX group sums (groups), 16 lanes each.
struct TileX {
  int8_t* codes;
  float* d;
  float* gsum;
  int64_t block_stride;
  int64_t nb;
  int64_t groups;
};
// Bytes of codes per 16 rows of x for K columns (blocks rounded up to four).
inline int64_t tile_x_stride(int64_t K) { return (K / kBlock + 3) / 4 * 4 * kTokens * kBlock; }
// Rows [16·block, 16·block + 16) of xq (zeros past M) into out.
void pack_tile_x(const QuantX& xq, int type, int64_t M, int64_t K, int64_t block, const TileX& out);
// t.out for weight rows [n0, n0 + kInt8Strip), from x packed by pack_tile_x.
void matmul_int8_strip(const MatmulTask& t, const TileX& x, int64_t n0);
}  // namespace amx

// Matmuls of block-quantized weights (every is_int8_type) on AVX-512 VNNI, in kernels_vnni.cc,
// with t.xq quantized by the AVX-512 kernels' quantize_x. Both kernels make each output with the
// float steps of int8_recipe.h, so a row of x gets the same bits from either (and from the AMX
// int8 tiles), whatever M is and wherever the row sits.
namespace vnni {
// One-row kernels: t.out for weight rows [n0, n1), every row of x on its own.
void matmul_rows(const MatmulTask& t, int64_t n0, int64_t n1);
constexpr int64_t kRowTile = 16;  // weight rows these kernels take at once (the rest one at a time)
// Strips, for prompts: sixteen weight rows in the lanes of a vector, rearranged once per strip
// and shared by every row of x.
constexpr int64_t kStrip = 16;  // weight rows per call of matmul_strip
// t.out for weight rows [n0, n0 + kStrip).
void matmul_strip(const MatmulTask& t, int64_t n0);
}  // namespace vnni
#endif

// Row n of w decoded to f32 (the portable definition of every weight type).
void decode_row(const Weight& w, int64_t n, float* out);

float f16_to_f32(uint16_t h);
inline float bf16_to_f32(uint16_t b) {
  const uint32_t bits = static_cast<uint32_t>(b) << 16;
  float out;
  std::memcpy(&out, &bits, 4);
  return out;
}

}  // namespace tl
