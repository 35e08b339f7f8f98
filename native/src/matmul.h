// Matmuls of activations by stored weights, planned for a context: x quantized once per weight
// type (or packed once for the AMX tiles), each weight's rows cut into jobs for the threads, and
// the kernels chosen by the context's ISA and batch invariance.
//
// Batch invariance: with ctx.batch_invariant() every row of x goes through the one-row kernels
// (matmul_rows), whose sums for out[m, n] are ordered by K alone, whatever M, the tile height or
// the jobs' rows; x is quantized row by row. Row m of out is then the same bits however many
// other rows share the call. Otherwise prompts use the AMX tiles or VNNI strips, whose order
// depends on where a row sits in the batch.
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
