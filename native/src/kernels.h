// The compute kernels behind the native backend, and the per-instruction-set tables that
// hold them. Each table is filled by one translation unit compiled for that instruction set
// (kernels_scalar.cc portably; kernels_x86.cc once for AVX2 and once for AVX-512).
#pragma once

#include <cstddef>
#include <cstdint>

namespace tl {

// Weight storage types; the numbers are shared with the TypeScript side.
enum WeightType : int { W_F32 = 0, W_F16 = 1, W_BF16 = 2, W_Q8_0 = 3, W_Q4_0 = 4 };

constexpr int kBlock = 32;  // elements per quantization block (GGML Q8_0 / Q4_0)

// GGML Q8_0: x = d * q.
struct BlockQ8_0 {
  uint16_t d;  // f16
  int8_t qs[kBlock];
};
// GGML Q4_0: x = d * (q - 8); byte j holds element j (low nibble) and element j + 16 (high nibble).
struct BlockQ4_0 {
  uint16_t d;  // f16
  uint8_t qs[kBlock / 2];
};
static_assert(sizeof(BlockQ8_0) == 34 && sizeof(BlockQ4_0) == 18, "GGML block layouts are packed");

// Activations quantized on the fly for the integer dot products: x ≈ d * q per block of 32.
struct BlockQ8A {
  float d;
  int8_t qs[kBlock];
};

struct Weight {
  int type;
  const uint8_t* data;
  int64_t rows;  // output features (N)
  int64_t cols;  // input features (K)
};

int64_t weight_row_bytes(int type, int64_t cols);

// out[m * N + n] = dot(x[m], w[n]) + bias[n], for m in [0, M) and the rows n in [n0, n1).
struct MatmulTask {
  const Weight* w;
  const float* x;      // [M, K]
  const BlockQ8A* xq;  // x quantized, [M, K / 32] (quantized weight types only)
  int64_t M;
  const float* bias;   // [N] or null
  float* out;          // [M, N]
};

struct IsaKernels {
  const char* name;
  void (*matmul_rows)(const MatmulTask& t, int64_t n0, int64_t n1);
  void (*quantize_q8a)(const float* x, BlockQ8A* out, int64_t k);
  float (*dot)(const float* a, const float* b, int64_t n);
  // y = y * a + x * b
  void (*scale_add)(float* y, float a, const float* x, float b, int64_t n);
};

const IsaKernels& scalar_kernels();
#if defined(TL_X86)
const IsaKernels& avx2_kernels();
const IsaKernels& avx512_kernels();
#endif

float f16_to_f32(uint16_t h);

}  // namespace tl
