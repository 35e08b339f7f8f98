// Portable kernels: plain loops that any C++17 compiler vectorises as it can. They are the
// fallback on CPUs without the x86 extensions (and on ARM), and they define what the SIMD
// kernels must compute.
#include <algorithm>
#include <cmath>
#include <cstring>

#include "kernels.h"

namespace tl {

float f16_to_f32(uint16_t h) {
  const uint32_t sign = (h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1f;
  const uint32_t mant = h & 0x3ffu;
  uint32_t bits;
  if (exp == 0) {
    // Zero or subnormal: value = mant * 2^-24.
    float v = std::ldexp(static_cast<float>(mant), -24);
    std::memcpy(&bits, &v, 4);
    bits |= sign;
  } else if (exp == 0x1f) {
    bits = sign | 0x7f800000u | (mant << 13);
  } else {
    bits = sign | ((exp + 112) << 23) | (mant << 13);
  }
  float out;
  std::memcpy(&out, &bits, 4);
  return out;
}

int64_t weight_row_bytes(int type, int64_t cols) {
  switch (type) {
    case W_F32:
      return cols * 4;
    case W_F16:
    case W_BF16:
      return cols * 2;
    case W_Q8_0:
      return cols + cols / kBlock * 2;
    case W_Q4_0:
      return cols / 2 + cols / kBlock * 2;
    case W_AFFINE4:
      return cols / 2;
    case W_AFFINE8:
      return cols;
    case W_Q4_K:
      return cols / kQK * kQ4KBytes;
    case W_Q5_K:
      return cols / kQK * kQ5KBytes;
    case W_Q6_K:
      return cols / kQK * kQ6KBytes;
    default:
      return -1;
  }
}

float affine_param(const Weight& w, const void* params, int64_t i) {
  switch (w.scale_type) {
    case S_F16:
      return f16_to_f32(static_cast<const uint16_t*>(params)[i]);
    case S_BF16: {
      const uint32_t bits = static_cast<uint32_t>(static_cast<const uint16_t*>(params)[i]) << 16;
      float f;
      std::memcpy(&f, &bits, 4);
      return f;
    }
    default:
      return static_cast<const float*>(params)[i];
  }
}

void regroup_rows(int type, uint8_t* data, int64_t rows, int64_t cols) {
  const int64_t blocks = cols / kBlock;
  const int64_t quant_bytes = type == W_Q8_0 ? kBlock : kBlock / 2;
  const int64_t block_bytes = quant_bytes + 2;
  const int64_t row_bytes = blocks * block_bytes;
  uint8_t* tmp = new uint8_t[row_bytes];
  for (int64_t r = 0; r < rows; r++) {
    uint8_t* row = data + r * row_bytes;
    for (int64_t b = 0; b < blocks; b++) {
      std::memcpy(tmp + b * quant_bytes, row + b * block_bytes + 2, quant_bytes);
      std::memcpy(tmp + blocks * quant_bytes + 2 * b, row + b * block_bytes, 2);
    }
    std::memcpy(row, tmp, row_bytes);
  }
  delete[] tmp;
}

void decode_row(const Weight& w, int64_t n, float* out) {
  const uint8_t* row = w.data + n * weight_row_bytes(w.type, w.cols);
  const int64_t K = w.cols;
  switch (w.type) {
    case W_F32:
      std::memcpy(out, row, K * 4);
      break;
    case W_F16: {
      const uint16_t* p = reinterpret_cast<const uint16_t*>(row);
      for (int64_t k = 0; k < K; k++) out[k] = f16_to_f32(p[k]);
      break;
    }
    case W_BF16: {
      const uint16_t* p = reinterpret_cast<const uint16_t*>(row);
      for (int64_t k = 0; k < K; k++) out[k] = bf16_to_f32(p[k]);
      break;
    }
    case W_Q8_0: {
      const int8_t* q = reinterpret_cast<const int8_t*>(row);
      const uint16_t* d = reinterpret_cast<const uint16_t*>(row + K);
      for (int64_t k = 0; k < K; k++) out[k] = f16_to_f32(d[k / kBlock]) * q[k];
      break;
    }
    case W_AFFINE4:
    case W_AFFINE8: {
      const int64_t groups = K / w.group_size;
      for (int64_t g = 0; g < groups; g++) {
        const float scale = affine_param(w, w.scales, n * groups + g);
        const float bias = affine_param(w, w.biases, n * groups + g);
        for (int64_t k = g * w.group_size; k < (g + 1) * w.group_size; k++) {
          const int q = w.type == W_AFFINE8 ? row[k] : (row[k / 2] >> (4 * (k % 2))) & 0x0f;
          out[k] = scale * q + bias;
        }
      }
      break;
    }
    case W_Q4_0: {
      const uint16_t* d = reinterpret_cast<const uint16_t*>(row + K / 2);
      for (int64_t b = 0; b < K / kBlock; b++) {
        const float scale = f16_to_f32(d[b]);
        const uint8_t* q = row + b * kBlock / 2;
        for (int j = 0; j < kBlock / 2; j++) {
          out[b * kBlock + j] = scale * ((q[j] & 0x0f) - 8);
          out[b * kBlock + j + kBlock / 2] = scale * ((q[j] >> 4) - 8);
        }
      }
      break;
    }
    case W_Q4_K:
    case W_Q5_K: {
      // Every product is exact in f32, so each value rounds once, as the reference's does.
      const bool q5 = w.type == W_Q5_K;
      for (int64_t sb = 0; sb < K / kQK; sb++) {
        const uint8_t* blk = row + sb * (q5 ? kQ5KBytes : kQ4KBytes);
        const float d = f16_to_f32(blk[0] | blk[1] << 8);
        const float dmin = f16_to_f32(blk[2] | blk[3] << 8);
        const uint8_t* qh = blk + 16;
        const uint8_t* ql = blk + (q5 ? 48 : 16);
        float* y = out + sb * kQK;
        for (int c = 0; c < 4; c++) {
          int sc1, m1, sc2, m2;
          kquant_scale_min(blk + 4, 2 * c, &sc1, &m1);
          kquant_scale_min(blk + 4, 2 * c + 1, &sc2, &m2);
          const float d1 = d * sc1, d2 = d * sc2, min1 = dmin * m1, min2 = dmin * m2;
          for (int l = 0; l < 32; l++) {
            const uint8_t b = ql[32 * c + l];
            const int h1 = q5 ? ((qh[l] >> (2 * c)) & 1) << 4 : 0;
            const int h2 = q5 ? ((qh[l] >> (2 * c + 1)) & 1) << 4 : 0;
            y[64 * c + l] = d1 * ((b & 0x0f) | h1) - min1;
            y[64 * c + 32 + l] = d2 * ((b >> 4) | h2) - min2;
          }
        }
      }
      break;
    }
    case W_Q6_K: {
      for (int64_t sb = 0; sb < K / kQK; sb++) {
        const uint8_t* blk = row + sb * kQ6KBytes;
        const float d = f16_to_f32(blk[208] | blk[209] << 8);
        for (int half = 0; half < 2; half++) {
          const uint8_t* ql = blk + 64 * half;
          const uint8_t* qh = blk + 128 + 32 * half;
          const int8_t* sc = reinterpret_cast<const int8_t*>(blk + 192 + 8 * half);
          float* y = out + sb * kQK + 128 * half;
          for (int l = 0; l < 32; l++) {
            // Value 32k + l of the half: low bits from ql, high bits 2k and 2k + 1 of qh[l], scale 2k + l / 16.
            for (int k = 0; k < 4; k++) {
              const int lo = (ql[l + 32 * (k % 2)] >> (4 * (k / 2))) & 0x0f;
              const int q = lo | (((qh[l] >> (2 * k)) & 3) << 4);
              y[32 * k + l] = d * sc[2 * k + l / 16] * (q - 32);
            }
          }
        }
      }
      break;
    }
  }
}

namespace {

void matmul_rows(const MatmulTask& t, int64_t n0, int64_t n1) {
  const int64_t K = t.w->cols;
  const int64_t N = t.w->rows;
  float row[16384];
  float* wrow = K <= 16384 ? row : new float[K];
  for (int64_t n = n0; n < n1; n++) {
    decode_row(*t.w, n, wrow);
    const float b = t.bias ? t.bias[n] : 0.0f;
    for (int64_t m = 0; m < t.M; m++) {
      const float* x = t.x + m * K;
      float acc = 0;
      for (int64_t k = 0; k < K; k++) acc += x[k] * wrow[k];
      t.out[m * N + n] = acc + b;
    }
  }
  if (wrow != row) delete[] wrow;
}

float dot(const float* a, const float* b, int64_t n) {
  float acc = 0;
  for (int64_t i = 0; i < n; i++) acc += a[i] * b[i];
  return acc;
}

void scores(const float* q, const float* keys, int64_t n, int64_t D, float* s) {
  for (int64_t j = 0; j < n; j++) s[j] = dot(q, keys + j * D, D);
}

float softmax_tile(float* s, int64_t n, float scale, float running_max, float* sum) {
  float max = running_max;
  for (int64_t j = 0; j < n; j++) max = std::max(max, s[j] *= scale);
  float total = 0;
  for (int64_t j = 0; j < n; j++) total += s[j] = std::exp(s[j] - max);
  *sum = total;
  return max;
}

void accumulate(float* y, float c, const float* values, const float* p, int64_t n, int64_t D) {
  for (int64_t d = 0; d < D; d++) {
    float acc = y[d] * c;
    for (int64_t j = 0; j < n; j++) acc += p[j] * values[j * D + d];
    y[d] = acc;
  }
}

void silu_mul(float* out, const float* gate, const float* up, int64_t n) {
  for (int64_t i = 0; i < n; i++) out[i] = gate[i] / (1.0f + std::exp(-gate[i])) * up[i];
}

void widen_f16(const uint16_t* src, float* dst, int64_t n) {
  for (int64_t i = 0; i < n; i++) dst[i] = f16_to_f32(src[i]);
}

void widen_bf16(const uint16_t* src, float* dst, int64_t n) {
  for (int64_t i = 0; i < n; i++) dst[i] = bf16_to_f32(src[i]);
}

}  // namespace

const IsaKernels& scalar_kernels() {
  static const IsaKernels k{"scalar", matmul_rows, nullptr, dot, scores, softmax_tile, accumulate, silu_mul, widen_f16, widen_bf16};
  return k;
}

}  // namespace tl
