// Attention over a paged KV cache: every sequence's keys and values live in fixed-size blocks of
// one shared pool, found through the sequence's block table, so sequences grow, end and share
// the pool without copying. Many sequences, each with its own query rows and cache length, run
// in one call; a query row's result is the same bits whatever else runs beside it.
#pragma once

#include <cstdint>

#include "context.h"

namespace tl {

// How K and V are stored: the numbers are shared with the TypeScript side.
enum KvType : int { KV_F32 = 0, KV_F16 = 1, KV_BF16 = 2 };

// One layer's cache: K and V each [blocks, H_kv, block_size, D] in `type` (f16 and bf16 as raw bits).
struct PagedKV {
  void* k;
  void* v;
  int type;
  int64_t blocks, Hkv, block_size, D;
};

// Writes k, v ([T, H_kv, D] f32) into the cache: token t to block slots[t] / block_size, offset
// slots[t] % block_size, rounded to nearest even for f16 and bf16 (as src/tensor/dtype.ts).
// Throws ArgumentError for a slot outside the cache.
void store_kv(const PagedKV& c, const float* k, const float* v, const int32_t* slots, int64_t T);

// Each sequence is 4 int32: qStart, qLen, kvLen, tableStart. Its query rows qStart .. qStart +
// qLen − 1 sit at positions kvLen − qLen .. kvLen − 1 and attend causally to its keys; key p is
// in block tables[tableStart + p / block_size] at offset p % block_size. Query head h reads kv
// head h / (H / H_kv).
struct PagedAttentionArgs {
  float* out;      // [rows, H, D]
  const float* q;  // [rows, H, D]
  int64_t rows;    // query rows q and out hold
  PagedKV kv;
  const int32_t* seqs;
  int64_t num_seqs;
  const int32_t* tables;
  int64_t table_len;
  int64_t H;
  float scale;
};

// Throws ArgumentError, before reading anything, for any sequence or block id outside the
// arrays given; then computes out for every sequence's query rows on the context's threads.
void paged_attention(Context& ctx, const PagedAttentionArgs& a);

}  // namespace tl
