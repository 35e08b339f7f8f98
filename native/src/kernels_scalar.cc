// Portable kernels: plain loops that any C++17 compiler vectorises as it can. They are the
// fallback on CPUs without the x86 extensions (and on ARM), and they define what the SIMD
// kernels must compute.
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
    case W_F32: return cols * 4;
    case W_F16:
    case W_BF16: return cols * 2;
    case W_Q8_0: return cols / kBlock * static_cast<int64_t>(sizeof(BlockQ8_0));
    case W_Q4_0: return cols / kBlock * static_cast<int64_t>(sizeof(BlockQ4_0));
    default: return -1;
  }
}

namespace {

float bf16_to_f32(uint16_t b) {
  const uint32_t bits = static_cast<uint32_t>(b) << 16;
  float out;
  std::memcpy(&out, &bits, 4);
  return out;
}

// One weight row decoded to f32.
void decode_row(const Weight& w, int64_t n, float* out) {
  const uint8_t* row = w.data + n * weight_row_bytes(w.type, w.cols);
  const int64_t K = w.cols;
  switch (w.type) {
    case W_F32: std::memcpy(out, row, K * 4); break;
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
      const BlockQ8_0* b = reinterpret_cast<const BlockQ8_0*>(row);
      for (int64_t i = 0; i < K / kBlock; i++) {
        const float d = f16_to_f32(b[i].d);
        for (int j = 0; j < kBlock; j++) out[i * kBlock + j] = d * b[i].qs[j];
      }
      break;
    }
    case W_Q4_0: {
      const BlockQ4_0* b = reinterpret_cast<const BlockQ4_0*>(row);
      for (int64_t i = 0; i < K / kBlock; i++) {
        const float d = f16_to_f32(b[i].d);
        for (int j = 0; j < kBlock / 2; j++) {
          out[i * kBlock + j] = d * ((b[i].qs[j] & 0x0f) - 8);
          out[i * kBlock + j + kBlock / 2] = d * ((b[i].qs[j] >> 4) - 8);
        }
      }
      break;
    }
  }
}

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

void quantize_q8a(const float* x, BlockQ8A* out, int64_t k) {
  for (int64_t i = 0; i < k / kBlock; i++) {
    float amax = 0;
    for (int j = 0; j < kBlock; j++) amax = std::fmax(amax, std::fabs(x[i * kBlock + j]));
    const float d = amax / 127.0f;
    const float id = d != 0 ? 1.0f / d : 0.0f;
    out[i].d = d;
    for (int j = 0; j < kBlock; j++) out[i].qs[j] = static_cast<int8_t>(std::lrintf(x[i * kBlock + j] * id));
  }
}

float dot(const float* a, const float* b, int64_t n) {
  float acc = 0;
  for (int64_t i = 0; i < n; i++) acc += a[i] * b[i];
  return acc;
}

void scale_add(float* y, float a, const float* x, float b, int64_t n) {
  for (int64_t i = 0; i < n; i++) y[i] = y[i] * a + x[i] * b;
}

}  // namespace

const IsaKernels& scalar_kernels() {
  static const IsaKernels k{"scalar", matmul_rows, quantize_q8a, dot, scale_add};
  return k;
}

}  // namespace tl
