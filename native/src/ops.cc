#include "ops.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#if !defined(_WIN32)
#include <sys/mman.h>
#include <unistd.h>
#endif

#include "cpu_features.h"
#include "thread_pool.h"

namespace tl {

namespace {

std::unique_ptr<ThreadPool> g_pool;
const IsaKernels* g_kernels = nullptr;
bool g_amx = false;  // batched matmuls on AMX tiles (with the AVX-512 kernels for the rest)

ThreadPool& pool() {
  if (!g_pool) set_threads(0);
  return *g_pool;
}

const IsaKernels& best_kernels() {
#if defined(TL_X86)
  if (cpu_features().avx512) return avx512_kernels();
  if (cpu_features().avx2) return avx2_kernels();
#endif
  return scalar_kernels();
}

const IsaKernels& kernels() {
  if (!g_kernels) {
    g_kernels = &best_kernels();
#if defined(TL_X86)
    g_amx = cpu_features().amx;
#endif
  }
  return *g_kernels;
}

// Quantized activations, one set per weight of a matmul_many call, reused between calls so the
// decode loop allocates nothing.
struct QuantBuffers {
  std::vector<int8_t> q;
  std::vector<float> d, s, g;
};
std::vector<QuantBuffers> g_quant;

}  // namespace

void set_threads(int threads) {
  if (threads <= 0) threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  g_pool.reset();
  g_pool = std::make_unique<ThreadPool>(threads);
}

int get_threads() { return pool().threads(); }

const char* isa_name() {
  const char* name = kernels().name;
  return g_amx ? "amx" : name;
}

bool set_isa(const char* name) {
  const std::string n = name;
  kernels();
  if (n == "auto") {
    g_kernels = nullptr;
    kernels();
    return true;
  }
  if (n == "scalar") g_kernels = &scalar_kernels();
#if defined(TL_X86)
  else if (n == "avx2" && cpu_features().avx2)
    g_kernels = &avx2_kernels();
  else if (n == "avx512" && cpu_features().avx512)
    g_kernels = &avx512_kernels();
  else if (n == "amx" && cpu_features().amx)
    g_kernels = &avx512_kernels();
#endif
  else
    return false;
  g_amx = n == "amx";
  return true;
}

namespace {
int64_t row_chunk(int64_t rows) {
  // Many small chunks of rows (multiples of 4, the tile height) so threads balance dynamically.
  const int threads = pool().threads();
  const int64_t r = (rows + threads * 8 - 1) / (threads * 8);
  return std::max<int64_t>(4, (r + 3) / 4 * 4);
}
}  // namespace

#if defined(TL_X86)
namespace {

// From this many rows of x on, decoding weights to bf16 for the tiles costs less than it saves.
// f32 weights stay on the f32 kernels: they are the precise reference.
constexpr int64_t kAmxMinRows = 16;

std::vector<uint16_t> g_xb;  // x packed for the tiles

bool uses_tiles(const Weight& w, int64_t M) { return g_amx && M >= kAmxMinRows && w.type != W_F32; }

// From this many rows of x on, rearranging a strip of weights for the VNNI strip kernel costs
// less than it saves (measured on Zen 4: the per-row tiles unpack k-quants with fewer steps).
inline int64_t strip_min_rows(int type) { return is_kquant(type) ? 12 : 8; }

bool uses_strips(const IsaKernels& k, const Weight& w, int64_t M) {
  return !g_amx && &k == &avx512_kernels() && is_int8_type(w.type) && M >= strip_min_rows(w.type);
}

// x [M, K] packed for the tiles in `parts` parts, each part_stride values long.
const uint16_t* pack_for_tiles(const float* x, int64_t M, int64_t K, int parts, int64_t* part_stride) {
  const int64_t blocks = (M + amx::kTokens - 1) / amx::kTokens;
  *part_stride = blocks * amx::kTokens * amx::padded_k(K);
  if (static_cast<int64_t>(g_xb.size()) < parts * *part_stride) g_xb.resize(parts * *part_stride);
  uint16_t* xb = g_xb.data();
  const int64_t stride = *part_stride;
  pool().parallel_for(blocks, [&](int64_t b) { amx::pack_x(x, M, K, b, parts, stride, xb); });
  return xb;
}

}  // namespace
#endif

namespace {

// x quantized for w's kernels into b, described by the returned QuantX.
QuantX quantize_for(const IsaKernels& k, const float* x, int64_t M, const Weight& w, QuantBuffers& b) {
  const int64_t nb = w.cols / kBlock;
  const int64_t ns = nb * sums_per_block(w.type);
  const int64_t stride = (w.cols + 127) / 128 * 128;
  const int64_t groups = is_affine(w.type) ? w.cols / w.group_size : 0;
  if (static_cast<int64_t>(b.q.size()) < M * stride) b.q.resize(M * stride);
  if (static_cast<int64_t>(b.d.size()) < M * nb) b.d.resize(M * nb);
  if (static_cast<int64_t>(b.s.size()) < M * ns) b.s.resize(M * ns);
  if (static_cast<int64_t>(b.g.size()) < M * groups) b.g.resize(M * groups);
  auto quantize_row = [&](int64_t m) {
    const float* xm = x + m * w.cols;
    k.quantize_x(w.type, xm, w.cols, b.q.data() + m * stride, b.d.data() + m * nb, b.s.data() + m * ns);
    float* gm = b.g.data() + m * groups;
    for (int64_t g = 0; g < groups; g++) {
      // Eight running sums (group sizes are multiples of 8), which the compiler keeps in a vector.
      float part[8] = {};
      for (int64_t j = g * w.group_size; j < (g + 1) * w.group_size; j += 8)
        for (int u = 0; u < 8; u++) part[u] += xm[j + u];
      gm[g] = ((part[0] + part[1]) + (part[2] + part[3])) + ((part[4] + part[5]) + (part[6] + part[7]));
    }
  };
  // A prompt's rows are quantized by all threads; one row is not worth waking them for.
  if (M >= 8)
    pool().parallel_for(M, [&](int64_t m) { quantize_row(m); });
  else
    for (int64_t m = 0; m < M; m++) quantize_row(m);
  return {b.q.data(), b.d.data(), b.s.data(), stride, nb, ns, b.g.data(), groups};
}

}  // namespace

namespace {

// What matmul_many and swiglu prepare for their weights before the threads start: x quantized
// once per weight type (or packed once for the tiles), and how each weight's rows are cut into jobs.
struct Plan {
  MatmulTask tasks[kMaxMatmuls];
  bool tiles[kMaxMatmuls] = {};
  bool strips[kMaxMatmuls] = {};
  int64_t rows_per_chunk[kMaxMatmuls] = {};
  const uint16_t* xb = nullptr;
  int64_t part_stride = 0;
};

Plan plan_for(const float* x, int64_t M, const MatmulOut* outs, int n) {
  const IsaKernels& k = kernels();
  if (static_cast<int>(g_quant.size()) < n) g_quant.resize(n);
  Plan p;
#if defined(TL_X86)
  int parts = 0;
  for (int i = 0; i < n; i++) {
    p.tiles[i] = uses_tiles(*outs[i].w, M);
    p.strips[i] = uses_strips(k, *outs[i].w, M);
    if (p.tiles[i]) parts = std::max(parts, amx::x_parts(outs[i].w->type));
  }
  // Weights on the tiles share x packed once, in as many parts as the most demanding needs.
  if (parts > 0) p.xb = pack_for_tiles(x, M, outs[0].w->cols, parts, &p.part_stride);
#endif
  for (int i = 0; i < n; i++) {
    const Weight& w = *outs[i].w;
    p.tasks[i] = {&w, x, {}, M, outs[i].bias, outs[i].out};
    if (!p.tiles[i] && is_int8_type(w.type) && k.quantize_x) {
      int same = -1;
      for (int j = 0; j < i && same < 0; j++) {
        if (p.tasks[j].xq.q && outs[j].w->type == w.type) same = j;
      }
      p.tasks[i].xq = same >= 0 ? p.tasks[same].xq : quantize_for(k, x, M, w, g_quant[i]);
    }
#if defined(TL_X86)
    p.rows_per_chunk[i] = p.tiles[i] ? amx::kStrip : p.strips[i] ? vnni::kStrip : row_chunk(w.rows);
#else
    p.rows_per_chunk[i] = row_chunk(w.rows);
#endif
  }
  return p;
}

// Rows [n0, n1) of t, which is plan p's task i or that task over a view of its weight's rows.
void run_rows(const Plan& p, int i, const MatmulTask& t, int64_t n0, int64_t n1) {
#if defined(TL_X86)
  if (p.tiles[i]) {
    for (int64_t n = n0; n < n1; n += amx::kStrip) amx::matmul_strip(t, p.xb, amx::x_parts(t.w->type), p.part_stride, n);
    return;
  }
  if (p.strips[i]) {
    for (int64_t n = n0; n < n1; n += vnni::kStrip) vnni::matmul_strip(t, n);
    return;
  }
#else
  (void)p;
  (void)i;
#endif
  kernels().matmul_rows(t, n0, n1);
}

// Rows [n0, n0 + rows) of w as a weight of their own: every storage type keeps each row's bytes
// (and an affine row's scales and biases) together, rows one after another.
Weight row_view(const Weight& w, int64_t n0, int64_t rows) {
  Weight v = w;
  v.data = w.data + n0 * weight_row_bytes(w.type, w.cols);
  v.rows = rows;
  if (is_affine(w.type)) {
    const int64_t param_bytes = n0 * (w.cols / w.group_size) * (w.scale_type == S_F32 ? 4 : 2);
    v.scales = static_cast<const uint8_t*>(w.scales) + param_bytes;
    v.biases = static_cast<const uint8_t*>(w.biases) + param_bytes;
  }
  return v;
}

// Rows per swiglu job on the strip and tile kernels (a multiple of both strips).
constexpr int64_t kSwigluStripRows = 64;
// Floats per thread for each of swiglu's two row buffers, where the kernels leave the rows per job free.
constexpr int64_t kSwigluBufferFloats = 16384;

}  // namespace

void matmul(float* out, const float* x, int64_t M, const Weight& w, const float* bias) {
  const MatmulOut o{&w, out, bias};
  matmul_many(x, M, &o, 1);
}

void matmul_many(const float* x, int64_t M, const MatmulOut* outs, int n) {
  // One task per weight, and all their rows one job for the threads.
  const Plan p = plan_for(x, M, outs, n);
  int64_t first_chunk[kMaxMatmuls + 1] = {0};
  for (int i = 0; i < n; i++) first_chunk[i + 1] = first_chunk[i] + (outs[i].w->rows + p.rows_per_chunk[i] - 1) / p.rows_per_chunk[i];
  pool().parallel_for(first_chunk[n], [&](int64_t c) {
    int i = 0;
    while (c >= first_chunk[i + 1]) i++;
    const int64_t n0 = (c - first_chunk[i]) * p.rows_per_chunk[i];
    run_rows(p, i, p.tasks[i], n0, std::min(outs[i].w->rows, n0 + p.rows_per_chunk[i]));
  });
}

void swiglu(float* out, const float* x, int64_t M, const MatmulOut& gate, const MatmulOut& up) {
  if (M == 0) return;
  const MatmulOut outs[2] = {gate, up};
  const Plan p = plan_for(x, M, outs, 2);
  const int64_t N = gate.w->rows;
  // Each job takes the same rows of both weights: several strips or tiles, whose kernels read
  // ahead within the job's rows, or as many rows as the per-thread buffers hold.
  const bool batched = p.tiles[0] || p.strips[0] || p.tiles[1] || p.strips[1];
  const int64_t chunk =
      batched ? kSwigluStripRows
              : std::min(std::max(p.rows_per_chunk[0], p.rows_per_chunk[1]), std::max<int64_t>(4, kSwigluBufferFloats / M / 4 * 4));
  const IsaKernels& k = kernels();
  pool().parallel_for((N + chunk - 1) / chunk, [&](int64_t c) {
    thread_local std::vector<float> g, u;
    const int64_t n0 = c * chunk;
    const int64_t rows = std::min(chunk, N - n0);
    if (static_cast<int64_t>(g.size()) < M * rows) {
      g.resize(M * rows);
      u.resize(M * rows);
    }
    const Weight wg = row_view(*gate.w, n0, rows), wu = row_view(*up.w, n0, rows);
    MatmulTask tg = p.tasks[0], tu = p.tasks[1];
    tg.w = &wg;
    tu.w = &wu;
    tg.bias = gate.bias ? gate.bias + n0 : nullptr;
    tu.bias = up.bias ? up.bias + n0 : nullptr;
    tg.out = g.data();
    tu.out = u.data();
    run_rows(p, 0, tg, 0, rows);
    run_rows(p, 1, tu, 0, rows);
    for (int64_t m = 0; m < M; m++) k.silu_mul(out + m * N + n0, g.data() + m * rows, u.data() + m * rows, rows);
  });
}

namespace {

constexpr int64_t kKeyTile = 64;     // keys per tile of the online softmax
constexpr int64_t kQueryBlock = 16;  // query rows that share one pass over the keys

// Online-softmax state of one (query row, head) pair.
struct Row {
  const float* q;
  float* out;
  int64_t last;  // last key position it may see
  float max;
  float sum;
};

// One kv head and a block of query rows: every query head of the group, every row of the block,
// share each tile of K and V while it is in cache.
void attend_block(const AttentionArgs& a, int64_t kvh, int64_t l0, int64_t l1, std::vector<Row>& rows, std::vector<float>& scores) {
  const IsaKernels& k = kernels();
  const int64_t G = a.H / a.Hkv;
  const int64_t D = a.D;
  rows.clear();
  for (int64_t l = l0; l < l1; l++) {
    for (int64_t g = 0; g < G; g++) {
      const int64_t h = kvh * G + g;
      float* out = a.out + (l * a.H + h) * D;
      std::memset(out, 0, D * sizeof(float));
      rows.push_back({a.q + (l * a.H + h) * D, out, a.S - a.L + l, -std::numeric_limits<float>::infinity(), 0.0f});
    }
  }
  scores.resize(kKeyTile);
  const float* K = a.k + kvh * a.capacity * D;
  const float* Vv = a.v + kvh * a.capacity * D;
  const int64_t end = a.S - a.L + l1;  // one past the last key any row of the block sees
  for (int64_t j0 = 0; j0 < end; j0 += kKeyTile) {
    for (Row& r : rows) {
      const int64_t j1 = std::min(j0 + kKeyTile, r.last + 1);
      if (j1 <= j0) continue;
      const int64_t n = j1 - j0;
      k.scores(r.q, K + j0 * D, n, D, scores.data());
      float tile_sum;
      const float tile_max = k.softmax_tile(scores.data(), n, a.scale, r.max, &tile_sum);
      // Rescale what was accumulated under the old maximum, then add this tile.
      const float correction = std::exp(r.max - tile_max);
      k.accumulate(r.out, correction, Vv + j0 * D, scores.data(), n, D);
      r.max = tile_max;
      r.sum = r.sum * correction + tile_sum;
    }
  }
  for (Row& r : rows) {
    const float inv = 1.0f / r.sum;
    for (int64_t d = 0; d < D; d++) r.out[d] *= inv;
  }
}

}  // namespace

void attention(const AttentionArgs& a) {
  const int64_t blocks = (a.L + kQueryBlock - 1) / kQueryBlock;
  pool().parallel_for(a.Hkv * blocks, [&](int64_t c) {
    thread_local std::vector<Row> rows;
    thread_local std::vector<float> scores;
    const int64_t kvh = c % a.Hkv;
    const int64_t l0 = (c / a.Hkv) * kQueryBlock;
    attend_block(a, kvh, l0, std::min(a.L, l0 + kQueryBlock), rows, scores);
  });
}

void rms_norm(float* out, const float* x, const float* w, int64_t rows, int64_t n, float eps) {
  const IsaKernels& k = kernels();
  for (int64_t r = 0; r < rows; r++) {
    const float* xr = x + r * n;
    float* o = out + r * n;
    const float inv = 1.0f / std::sqrt(k.dot(xr, xr, n) / static_cast<float>(n) + eps);
    for (int64_t i = 0; i < n; i++) o[i] = xr[i] * inv * w[i];
  }
}

namespace {

// cos and sin of every position's angles, [position][cos: D/2, sin: D/2], kept across calls:
// every layer, and q and k, rotate by the same angles at a position.
struct RopeTable {
  double theta = 0;
  int64_t D = 0;
  int64_t positions = 0;
  std::vector<float> cs;

  const float* at(int64_t pos, int64_t D_, double theta_) {
    if (theta_ != theta || D_ != D) {
      theta = theta_;
      D = D_;
      positions = 0;
    }
    const int64_t half = D / 2;
    if (pos >= positions) {
      const int64_t grown = std::max(pos + 1, 2 * positions);
      cs.resize(grown * D);
      for (int64_t p = positions; p < grown; p++) {
        for (int64_t i = 0; i < half; i++) {
          const double angle = static_cast<double>(p) * std::pow(theta, -2.0 * static_cast<double>(i) / static_cast<double>(D));
          cs[p * D + i] = static_cast<float>(std::cos(angle));
          cs[p * D + half + i] = static_cast<float>(std::sin(angle));
        }
      }
      positions = grown;
    }
    return cs.data() + pos * D;
  }
};

RopeTable g_rope;

}  // namespace

void rope(float* x, int64_t L, int64_t heads, int64_t D, int64_t offset, double theta, bool traditional) {
  const int64_t half = D / 2;
  for (int64_t l = 0; l < L; l++) {
    const float* cs = g_rope.at(offset + l, D, theta);
    for (int64_t h = 0; h < heads; h++) {
      float* v = x + (l * heads + h) * D;
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

double read_probe(const float* data, int64_t n) {
  constexpr int64_t kChunk = 1 << 16;
  const int64_t chunks = (n + kChunk - 1) / kChunk;
  std::vector<double> sums(chunks);
  const IsaKernels& k = kernels();
  // dot(x, 1-vector) streams x with the same vector loads the matmul kernels use.
  pool().parallel_for(chunks, [&](int64_t c) {
    thread_local std::vector<float> one(kChunk, 1.0f);
    const int64_t i0 = c * kChunk;
    sums[c] = k.dot(data + i0, one.data(), std::min(kChunk, n - i0));
  });
  double total = 0;
  for (double s : sums) total += s;
  return total;
}

void release_pages(void* data, size_t bytes) {
#if defined(_WIN32)
  (void)data;
  (void)bytes;
#else
  // Only the pages wholly inside the buffer: the ones at its ends may hold other allocations.
  static const uintptr_t page = static_cast<uintptr_t>(sysconf(_SC_PAGESIZE));
  const uintptr_t begin = (reinterpret_cast<uintptr_t>(data) + page - 1) / page * page;
  const uintptr_t end = (reinterpret_cast<uintptr_t>(data) + bytes) / page * page;
  if (end > begin) madvise(reinterpret_cast<void*>(begin), end - begin, MADV_DONTNEED);
#endif
}

void release_batch_buffers() {
  for (QuantBuffers& b : g_quant) {
    release_pages(b.q.data(), b.q.size());
    release_pages(b.d.data(), b.d.size() * sizeof(float));
    release_pages(b.s.data(), b.s.size() * sizeof(float));
    release_pages(b.g.data(), b.g.size() * sizeof(float));
  }
#if defined(TL_X86)
  release_pages(g_xb.data(), g_xb.size() * sizeof(uint16_t));
#endif
}

}  // namespace tl
