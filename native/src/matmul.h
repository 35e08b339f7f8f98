// Matmuls of activations by stored weights, planned for a context: x quantized once per weight
// type (or packed once for the AMX tiles), each weight's rows cut into jobs for the threads, and
// the kernels chosen by the context's ISA and batch invariance.
//
// Batch invariance: out[m, n] must not depend on the other rows of x. The one-row kernels
// (matmul_rows) order out[m, n]'s sums by K alone, whatever M, the tile height or the jobs' rows,
// and x is quantized row by row. For the int8 weight types the VNNI strips make each output with
// the same integer sums and the same float steps as the one-row kernels (int8_recipe.h), so
// prompts use them in either mode. With ctx.batch_invariant() nothing else runs; otherwise
// prompts may also use the AMX bf16 tiles, whose sums depend on where a row sits in the batch.
#pragma once

#include <cstdint>

#include "context.h"
#include "kernels.h"

namespace tl {

struct MatmulOut {
  const Weight* w;
  float* out;
  const float* bias;
};
constexpr int kMaxMatmuls = 4;

// The kernels a matmul runs on: the one-row kernels, the VNNI strips and AMX int8 tiles (int8
// weights on AVX-512 and AMX, with the one-row kernels' bits) or the AMX bf16 tiles (f16 and
// bf16 weights, without batch invariance).
enum class Kernel { kRows, kVnniStrips, kAmxInt8, kAmxBf16 };

// The kernel that matmul, matmul_many and swiglu use for M rows of x by weights of `type`.
Kernel matmul_kernel(const Context& ctx, int type, int64_t M);
// "rows", "vnni-strips", "amx-int8" or "amx-bf16".
const char* kernel_name(Kernel k);

// out[M, N] = x[M, K] · wᵀ + bias
void matmul(Context& ctx, float* out, const float* x, int64_t M, const Weight& w, const float* bias);

// Several matmuls of one x (as the q, k and v projections): x is quantized once per weight type
// and all their rows are one job for the threads.
void matmul_many(Context& ctx, const float* x, int64_t M, const MatmulOut* outs, int n);

// out[M, N] = silu(x · gateᵀ + gate bias) ⊙ (x · upᵀ + up bias), the gated half of a SwiGLU MLP,
// computed a few rows of N at a time so that neither product is ever held whole. The out
// pointers of gate and up are not used; both weights are [N, K].
void swiglu(Context& ctx, float* out, const float* x, int64_t M, const MatmulOut& gate, const MatmulOut& up);

}  // namespace tl
