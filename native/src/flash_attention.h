// Online-softmax ("flash") attention over tiles of keys: each query row keeps a running maximum,
// sum and weighted sum of values, so the scores of all its keys are never held at once, and a
// tile of keys and values, loaded once, serves every query row that sees it.
//
// Tiles start at multiples of kKeyTile in absolute key positions. A row at position p then meets
// keys 0 .. p in the same tiles, with the same tile lengths, whatever other rows share its pass
// and however its sequence was chunked: its result depends on its own q and keys alone.
#pragma once

#include <cstdint>

#include "kernels.h"

namespace tl {

constexpr int64_t kKeyTile = 64;

// Online-softmax state of one (query row, head) pair.
struct FlashRow {
  const float* q;  // [D]
  float* out;      // [D]: the weighted sum of values, normalised by flash_finish
  int64_t last;    // last key position it may see
  float max;
  float sum;
};

// Starts a row: out zeroed, nothing seen yet.
void flash_start(FlashRow& r, const float* q, float* out, int64_t last, int64_t D);

// Adds keys [j0, j0 + n) (keys and values [n, D]; j0 a multiple of kKeyTile, n ≤ kKeyTile) to
// every row that may see them. scores holds kKeyTile floats.
void flash_tile(const IsaKernels& k, FlashRow* rows, int64_t count, const float* keys, const float* values, int64_t j0, int64_t n,
                int64_t D, float scale, float* scores);

// out /= sum for every row.
void flash_finish(FlashRow* rows, int64_t count, int64_t D);

}  // namespace tl
