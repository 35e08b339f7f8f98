#include "paged_attention.h"

#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

#include "flash_attention.h"

namespace tl {

namespace {

// Round-to-nearest-even f32 -> IEEE half bits, saturating to infinity; NaN stays NaN. The same
// steps as numberToF16 in src/tensor/dtype.ts, so both sides store the same bits.
uint16_t f32_to_f16(float x) {
  uint32_t b;
  std::memcpy(&b, &x, 4);
  const uint32_t sign = (b >> 16) & 0x8000;
  const int exp = static_cast<int>((b >> 23) & 0xff);
  uint32_t mant = b & 0x7fffff;
  if (exp == 0xff) return static_cast<uint16_t>(sign | 0x7c00 | (mant ? 0x200 : 0));
  int e = exp - 127 + 15;
  if (e >= 0x1f) return static_cast<uint16_t>(sign | 0x7c00);
  if (e <= 0) {
    if (e < -10) return static_cast<uint16_t>(sign);
    mant |= 0x800000;
    const int shift = 14 - e;
    const uint32_t half = 1u << (shift - 1);
    uint32_t h = mant >> shift;
    const uint32_t rest = mant & ((1u << shift) - 1);
    if (rest > half || (rest == half && (h & 1))) h++;
    return static_cast<uint16_t>(sign | h);
  }
  uint32_t h = mant >> 13;
  const uint32_t rest = mant & 0x1fff;
  if (rest > 0x1000 || (rest == 0x1000 && (h & 1))) {
    h++;
    if (h == 0x400) {
      h = 0;
      e++;
      if (e >= 0x1f) return static_cast<uint16_t>(sign | 0x7c00);
    }
  }
  return static_cast<uint16_t>(sign | (static_cast<uint32_t>(e) << 10) | h);
}

// Round-to-nearest-even f32 -> bfloat16 bits, NaN kept quiet (as numberToBf16).
uint16_t f32_to_bf16(float x) {
  uint32_t b;
  std::memcpy(&b, &x, 4);
  if ((b & 0x7fffffff) > 0x7f800000) return static_cast<uint16_t>((b >> 16) | 0x40);
  return static_cast<uint16_t>((b + 0x7fff + ((b >> 16) & 1)) >> 16);
}

// Query rows and heads per job share each tile of keys; at most this many (row, head) pairs.
constexpr int64_t kMaxFlashRows = 256;
constexpr int64_t kMaxQueryRows = 16;

std::string seq_error(int64_t s, const std::string& what) { return "pagedAttention: sequence " + std::to_string(s) + ": " + what; }

void check(const PagedAttentionArgs& a) {
  const PagedKV& c = a.kv;
  if (c.Hkv < 1 || a.H < 1 || a.H % c.Hkv != 0)
    throw ArgumentError("pagedAttention: H (" + std::to_string(a.H) + ") must be a positive multiple of Hkv (" + std::to_string(c.Hkv) +
                        ")");
  if (a.H / c.Hkv > kMaxFlashRows)
    throw ArgumentError("pagedAttention: at most " + std::to_string(kMaxFlashRows) + " query heads per kv head");
  if (c.D < 1 || c.block_size < 1) throw ArgumentError("pagedAttention: D and blockSize must be at least 1");
  std::vector<uint8_t> taken(a.rows, 0);
  for (int64_t s = 0; s < a.num_seqs; s++) {
    const int64_t q_start = a.seqs[4 * s], q_len = a.seqs[4 * s + 1], kv_len = a.seqs[4 * s + 2], table_start = a.seqs[4 * s + 3];
    if (q_len < 1 || kv_len < q_len)
      throw ArgumentError(seq_error(s, "need kvLen >= qLen >= 1, got qLen " + std::to_string(q_len) + ", kvLen " + std::to_string(kv_len)));
    if (q_start < 0 || q_start + q_len > a.rows)
      throw ArgumentError(seq_error(s, "query rows " + std::to_string(q_start) + " .. " + std::to_string(q_start + q_len - 1) +
                                           " are outside q and out (" + std::to_string(a.rows) + " rows)"));
    const int64_t used = (kv_len + c.block_size - 1) / c.block_size;
    if (table_start < 0 || table_start + used > a.table_len)
      throw ArgumentError(seq_error(s, "its " + std::to_string(used) + " blocks from tableStart " + std::to_string(table_start) +
                                           " run past the block tables (" + std::to_string(a.table_len) + " entries)"));
    for (int64_t i = table_start; i < table_start + used; i++) {
      if (a.tables[i] < 0 || a.tables[i] >= c.blocks)
        throw ArgumentError(seq_error(s, "block id " + std::to_string(a.tables[i]) + " at blockTables[" + std::to_string(i) +
                                             "] is outside the cache (" + std::to_string(c.blocks) + " blocks)"));
    }
    // Two sequences writing the same rows of out would race.
    for (int64_t r = q_start; r < q_start + q_len; r++) {
      if (taken[r]) throw ArgumentError(seq_error(s, "query row " + std::to_string(r) + " belongs to an earlier sequence too"));
      taken[r] = 1;
    }
  }
}

// Keys (and values) [j0, j0 + n) of one sequence and kv head as f32 rows [n, D]: pointers into
// the cache where the tile is one f32 run, else converted or copied into kt and vt, block by block.
void load_tile(const PagedKV& c, const int32_t* table, int64_t kvh, int64_t j0, int64_t n, const IsaKernels& k, float* kt, float* vt,
               const float** keys, const float** values) {
  const int64_t D = c.D, bs = c.block_size;
  auto at = [&](int64_t p) { return ((table[p / bs] * c.Hkv + kvh) * bs + p % bs) * D; };
  if (c.type == KV_F32 && (j0 + n - 1) / bs == j0 / bs) {
    *keys = static_cast<const float*>(c.k) + at(j0);
    *values = static_cast<const float*>(c.v) + at(j0);
    return;
  }
  for (int64_t p = j0; p < j0 + n;) {
    const int64_t run = std::min(j0 + n, (p / bs + 1) * bs) - p;  // keys left in p's block
    const int64_t src = at(p), dst = (p - j0) * D;
    if (c.type == KV_F32) {
      std::memcpy(kt + dst, static_cast<const float*>(c.k) + src, run * D * sizeof(float));
      std::memcpy(vt + dst, static_cast<const float*>(c.v) + src, run * D * sizeof(float));
    } else {
      auto widen = c.type == KV_F16 ? k.widen_f16 : k.widen_bf16;
      widen(static_cast<const uint16_t*>(c.k) + src, kt + dst, run * D);
      widen(static_cast<const uint16_t*>(c.v) + src, vt + dst, run * D);
    }
    p += run;
  }
  *keys = kt;
  *values = vt;
}

}  // namespace

void store_kv(const PagedKV& c, const float* k, const float* v, const int32_t* slots, int64_t T) {
  const int64_t capacity = c.blocks * c.block_size;
  for (int64_t t = 0; t < T; t++) {
    if (slots[t] < 0 || slots[t] >= capacity)
      throw ArgumentError("storeKV: slot " + std::to_string(slots[t]) + " of token " + std::to_string(t) + " is outside the cache (" +
                          std::to_string(capacity) + " slots)");
  }
  const int64_t D = c.D, bs = c.block_size;
  for (int64_t t = 0; t < T; t++) {
    const int64_t block = slots[t] / bs, offset = slots[t] % bs;
    for (int64_t h = 0; h < c.Hkv; h++) {
      const float* ks = k + (t * c.Hkv + h) * D;
      const float* vs = v + (t * c.Hkv + h) * D;
      const int64_t dst = ((block * c.Hkv + h) * bs + offset) * D;
      if (c.type == KV_F32) {
        std::memcpy(static_cast<float*>(c.k) + dst, ks, D * sizeof(float));
        std::memcpy(static_cast<float*>(c.v) + dst, vs, D * sizeof(float));
      } else {
        uint16_t* kd = static_cast<uint16_t*>(c.k) + dst;
        uint16_t* vd = static_cast<uint16_t*>(c.v) + dst;
        const bool f16 = c.type == KV_F16;
        for (int64_t d = 0; d < D; d++) {
          kd[d] = f16 ? f32_to_f16(ks[d]) : f32_to_bf16(ks[d]);
          vd[d] = f16 ? f32_to_f16(vs[d]) : f32_to_bf16(vs[d]);
        }
      }
    }
  }
}

void paged_attention(Context& ctx, const PagedAttentionArgs& a) {
  check(a);
  const PagedKV& c = a.kv;
  const int64_t G = a.H / c.Hkv, D = c.D;
  // Query rows per job: as many as keep (rows × heads of the group) within kMaxFlashRows.
  const int64_t rows_per_job = std::min(kMaxQueryRows, std::max<int64_t>(1, kMaxFlashRows / G));
  // Jobs of sequence s: first_job[s] .. first_job[s + 1] − 1, kv head fastest.
  std::vector<int64_t> first_job(a.num_seqs + 1, 0);
  for (int64_t s = 0; s < a.num_seqs; s++)
    first_job[s + 1] = first_job[s] + c.Hkv * ((a.seqs[4 * s + 1] + rows_per_job - 1) / rows_per_job);
  const IsaKernels& k = ctx.kernels();
  ctx.pool().parallel_for(first_job[a.num_seqs], [&](int64_t job, int worker) {
    const int64_t s = std::upper_bound(first_job.begin(), first_job.end(), job) - first_job.begin() - 1;
    const int32_t* seq = a.seqs + 4 * s;
    const int64_t q_start = seq[0], q_len = seq[1], kv_len = seq[2];
    const int32_t* table = a.tables + seq[3];
    const int64_t local = job - first_job[s];
    const int64_t kvh = local % c.Hkv;
    const int64_t i0 = local / c.Hkv * rows_per_job, i1 = std::min(q_len, i0 + rows_per_job);
    FlashRow rows[kMaxFlashRows];
    int64_t count = 0;
    for (int64_t i = i0; i < i1; i++) {
      for (int64_t g = 0; g < G; g++) {
        const int64_t at = ((q_start + i) * a.H + kvh * G + g) * D;
        flash_start(rows[count++], a.q + at, a.out + at, kv_len - q_len + i, D);
      }
    }
    float* buffer = ctx.worker_buffer(worker, 0, 2 * kKeyTile * D + kKeyTile);
    float* kt = buffer;
    float* vt = buffer + kKeyTile * D;
    float* scores = buffer + 2 * kKeyTile * D;
    const int64_t end = kv_len - q_len + i1;  // one past the last key any row of the job sees
    for (int64_t j0 = 0; j0 < end; j0 += kKeyTile) {
      const int64_t n = std::min(kKeyTile, end - j0);
      const float *keys, *values;
      load_tile(c, table, kvh, j0, n, k, kt, vt, &keys, &values);
      flash_tile(k, rows, count, keys, values, j0, n, D, a.scale, scores);
    }
    flash_finish(rows, count, D);
  });
}

}  // namespace tl
