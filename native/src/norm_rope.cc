#include "norm_rope.h"

#include <algorithm>
#include <cmath>
#include <vector>

namespace tl {

void rms_norm(Context& ctx, float* out, const float* x, const float* w, int64_t rows, int64_t n, float eps) {
  const IsaKernels& k = ctx.kernels();
  for (int64_t r = 0; r < rows; r++) {
    const float* xr = x + r * n;
    float* o = out + r * n;
    const float inv = 1.0f / std::sqrt(k.dot(xr, xr, n) / static_cast<float>(n) + eps);
    for (int64_t i = 0; i < n; i++) o[i] = xr[i] * inv * w[i];
  }
}

namespace {

// Positions the context's table keeps; rarer, later ones are computed per call, the same way,
// so a runaway position cannot grow the table without bound.
constexpr int64_t kRopeTablePositions = 1 << 17;

void angles(int64_t pos, int64_t D, double theta, float* cs) {
  const int64_t half = D / 2;
  for (int64_t i = 0; i < half; i++) {
    const double angle = static_cast<double>(pos) * std::pow(theta, -2.0 * static_cast<double>(i) / static_cast<double>(D));
    cs[i] = static_cast<float>(std::cos(angle));
    cs[half + i] = static_cast<float>(std::sin(angle));
  }
}

// cos and sin for pos from the table, grown by doubling; null past its reach.
const float* table_at(RopeTable& t, int64_t pos, int64_t D, double theta) {
  if (theta != t.theta || D != t.D) {
    t.theta = theta;
    t.D = D;
    t.positions = 0;
  }
  if (pos >= kRopeTablePositions) return nullptr;
  if (pos >= t.positions) {
    const int64_t grown = std::min(kRopeTablePositions, std::max(pos + 1, 2 * t.positions));
    t.cs.resize(grown * D);
    for (int64_t p = t.positions; p < grown; p++) angles(p, D, theta, t.cs.data() + p * D);
    t.positions = grown;
  }
  return t.cs.data() + pos * D;
}

}  // namespace

void rope(Context& ctx, float* x, int64_t T, int64_t heads, int64_t D, const int32_t* positions, double theta, bool traditional) {
  const int64_t half = D / 2;
  std::vector<float> own;
  for (int64_t t = 0; t < T; t++) {
    const float* cs = table_at(ctx.rope_table(), positions[t], D, theta);
    if (!cs) {
      own.resize(D);
      angles(positions[t], D, theta, own.data());
      cs = own.data();
    }
    for (int64_t h = 0; h < heads; h++) {
      float* v = x + (t * heads + h) * D;
      for (int64_t i = 0; i < half; i++) {
        float* a = traditional ? v + 2 * i : v + i;
        float* b = traditional ? a + 1 : a + half;
        const float x0 = *a, x1 = *b;
        *a = x0 * cs[i] - x1 * cs[half + i];
        *b = x1 * cs[i] + x0 * cs[half + i];
      }
    }
  }
}

}  // namespace tl
