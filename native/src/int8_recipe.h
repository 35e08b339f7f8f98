// The float steps of every AVX-512 matmul of int8-quantized weights (Q8_0, Q4_0, MLX affine,
// Q4_K, Q5_K, Q6_K): the one-row kernels and the VNNI strips (kernels_vnni.cc) and the AMX int8
// tiles (kernels_amx.cc) all make out[m, n] with exactly these operations, in this order, so a
// row of x gets the same bits from each of them, whatever M is and wherever the row sits.
//
// The integer part is exact: a block's codes times x's codes summed in int32 is one integer
// however the products are grouped, and so is a k-quant super-block's Σ_j sc_j · dot_j. What
// could differ is the float part, fixed here per weight type. For output (m, n), with x row m
// quantized per block b (codes qx, scale dx_b, code sums Σqx) and acc starting at +0:
//
//   Q8_0, Q4_0   per block b in order:  acc = fma(float(isum_b), dw_b · dx_b, acc)
//                isum_b = Σ qw · qx, with Q4_0's qw = q − 8
//   MLX affine   per group g in order:  per block b of g in order:
//                                         acc = fma(float(isum_b), scale_g · dx_b, acc)
//                                       then acc = fma(bias_g, Σ_g x̂, acc)     (x̂ = x as quantized)
//                isum_b = Σ q · qx, q the unsigned code
//   Q4_K, Q5_K   per super-block in order:  acc = fma(float(isum), d · dx, acc)
//                                           acc = fnmadd(float(imin), dmin · dx, acc)
//                isum = Σ_j sc_j · Σ q · qx over the eight sub-blocks j, imin = Σ_j m_j · Σqx_j
//   Q6_K         per super-block in order:  acc = fma(float(isum), d · dx, acc)
//                isum = Σ_j sc_j · Σ (q − 32) · qx over the sixteen sub-blocks j
//   all          out = acc + bias_n (+ 0 without a bias)
//
// Each step is one IEEE operation on one lane (or a scalar), so it makes the same bits in a
// vector whose lanes are weight rows, one whose lanes are rows of x, or a scalar.
#pragma once

#include <immintrin.h>

namespace tl {
namespace {

// acc + float(isum) · (dw · dx): one block, or one super-block's scaled sums.
inline __m512 scale_step(__m512 acc, __m512i isum, __m512 dw, __m512 dx) {
  return _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum), _mm512_mul_ps(dw, dx), acc);
}
inline float scale_step(float acc, int32_t isum, float dw, float dx) {
  return _mm_cvtss_f32(_mm_fmadd_ss(_mm_set_ss(static_cast<float>(isum)), _mm_set_ss(dw * dx), _mm_set_ss(acc)));
}

// acc − float(imin) · (dmin · dx): a Q4_K / Q5_K super-block's mins.
inline __m512 min_step(__m512 acc, __m512i imin, __m512 dmin, __m512 dx) {
  return _mm512_fnmadd_ps(_mm512_cvtepi32_ps(imin), _mm512_mul_ps(dmin, dx), acc);
}
inline float min_step(float acc, int32_t imin, float dmin, float dx) {
  return _mm_cvtss_f32(_mm_fnmadd_ss(_mm_set_ss(static_cast<float>(imin)), _mm_set_ss(dmin * dx), _mm_set_ss(acc)));
}

// acc + bias · gsum: an MLX affine group's biases against the sum of x as quantized over the group.
inline __m512 bias_step(__m512 acc, __m512 bias, __m512 gsum) { return _mm512_fmadd_ps(bias, gsum, acc); }

}  // namespace
}  // namespace tl
