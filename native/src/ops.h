// The operations the TypeScript side calls: each splits its work over the thread pool and runs
// the best kernels for this CPU.
#pragma once

#include <cstddef>
#include <cstdint>

#include "kernels.h"

namespace tl {

void set_threads(int threads);
int get_threads();
const char* isa_name();
// Selects the kernels: "auto" (the best this CPU has), "amx" (AVX-512 with batched matmuls on
// AMX tiles), "avx512", "avx2" or "scalar".
// Returns false if that set is not available here.
bool set_isa(const char* name);

// out[M, N] = x[M, K] · wᵀ + bias
void matmul(float* out, const float* x, int64_t M, const Weight& w, const float* bias);

// Several matmuls of one x (as the q, k and v projections): x is quantized once per weight type
// and all their rows are one job for the threads.
struct MatmulOut {
  const Weight* w;
  float* out;
  const float* bias;
};
constexpr int kMaxMatmuls = 4;
void matmul_many(const float* x, int64_t M, const MatmulOut* outs, int n);

// out[M, N] = silu(x · gateᵀ + gate bias) ⊙ (x · upᵀ + up bias), the gated half of a SwiGLU MLP,
// computed a few rows of N at a time so that neither product is ever held whole. The out
// pointers of gate and up are not used; both weights are [N, K].
void swiglu(float* out, const float* x, int64_t M, const MatmulOut& gate, const MatmulOut& up);

// Causal attention of L new query rows against S cached positions (the last L are the new ones).
// q, out: [L, H, D]; k, v: [H_kv, capacity, D].
struct AttentionArgs {
  const float* q;
  const float* k;
  const float* v;
  float* out;
  int64_t L, S, H, Hkv, D, capacity;
  float scale;
};
void attention(const AttentionArgs& a);

// out[r] = x[r] / sqrt(mean(x[r]²) + eps) * w, for each of `rows` rows of n.
void rms_norm(float* out, const float* x, const float* w, int64_t rows, int64_t n, float eps);

// Rotates x [L, heads, D] in place for positions offset .. offset + L - 1.
void rope(float* x, int64_t L, int64_t heads, int64_t D, int64_t offset, double theta, bool traditional);

// Gives the pages wholly inside [data, data + bytes) back to the system: they read as zeros
// until written again, when they are faulted back in. For buffers whose contents are dead.
void release_pages(void* data, size_t bytes);
// release_pages for the kernels' own buffers that grow with the rows of x (quantized or packed
// x), once a batch is done.
void release_batch_buffers();

// Reads n floats with every thread and returns their sum: a probe of streaming-read bandwidth.
double read_probe(const float* data, int64_t n);

}  // namespace tl
