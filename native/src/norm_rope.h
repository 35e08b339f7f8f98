// RMSNorm and rotary position embeddings, row by row: each row's result depends on that row alone.
#pragma once

#include <cstdint>

#include "context.h"

namespace tl {

// out[r] = x[r] / sqrt(mean(x[r]²) + eps) * w, for each of `rows` rows of n; out may be x.
void rms_norm(Context& ctx, float* out, const float* x, const float* w, int64_t rows, int64_t n, float eps);

// Rotates x [T, heads, D] in place, row t by the angles of positions[t] (each >= 0). traditional:
// pairs (2i, 2i + 1); otherwise (i, i + D/2).
void rope(Context& ctx, float* x, int64_t T, int64_t heads, int64_t D, const int32_t* positions, double theta, bool traditional);

}  // namespace tl
