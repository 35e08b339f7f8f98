#include "flash_attention.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

namespace tl {

void flash_start(FlashRow& r, const float* q, float* out, int64_t last, int64_t D) {
  std::memset(out, 0, D * sizeof(float));
  r = {q, out, last, -std::numeric_limits<float>::infinity(), 0.0f};
}

void flash_tile(const IsaKernels& k, FlashRow* rows, int64_t count, const float* keys, const float* values, int64_t j0, int64_t n,
                int64_t D, float scale, float* scores) {
  for (int64_t i = 0; i < count; i++) {
    FlashRow& r = rows[i];
    const int64_t seen = std::min(n, r.last + 1 - j0);
    if (seen <= 0) continue;
    k.scores(r.q, keys, seen, D, scores);
    float tile_sum;
    const float tile_max = k.softmax_tile(scores, seen, scale, r.max, &tile_sum);
    // Rescale what was accumulated under the old maximum, then add this tile.
    const float correction = std::exp(r.max - tile_max);
    k.accumulate(r.out, correction, values, scores, seen, D);
    r.max = tile_max;
    r.sum = r.sum * correction + tile_sum;
  }
}

void flash_finish(FlashRow* rows, int64_t count, int64_t D) {
  for (int64_t i = 0; i < count; i++) {
    const float inv = 1.0f / rows[i].sum;
    for (int64_t d = 0; d < D; d++) rows[i].out[d] *= inv;
  }
}

}  // namespace tl
