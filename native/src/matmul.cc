#include "matmul.h"

#include <algorithm>
#include <cmath>

namespace tl {

namespace {

// Many small chunks of rows (multiples of `tile`, the rows a kernel takes at once) so threads
// balance dynamically.
int64_t row_chunk(const Context& ctx, int64_t rows, int64_t tile) {
  const int threads = ctx.threads();
  const int64_t r = (rows + threads * 8 - 1) / (threads * 8);
  return std::max<int64_t>(tile, (r + tile - 1) / tile * tile);
}

// Weight rows the one-row kernels take at once for w.
int64_t row_tile(const Context& ctx, const Weight& w) {
#if defined(TL_X86)
  if (ctx.vnni_int8() && is_int8_type(w.type)) return vnni::kRowTile;
#endif
  (void)ctx;
  (void)w;
  return 4;
}

#if defined(TL_X86)

// From this many rows of x on, decoding f16 / bf16 weights for the bf16 tiles costs less than it
// saves. f32 weights stay on the f32 kernels: they are the precise reference.
constexpr int64_t kAmxMinRows = 16;

// From this many rows of x on, rearranging a strip of weights for the VNNI strips costs less than
// it saves over the one-row kernels, and (with AMX) decoding a strip for the AMX int8 tiles less
// than it saves over the VNNI strips. Measured on a Xeon with AMX (Sapphire Rapids), one thread,
// a [1024, 4096] weight: the one-row kernels of k-quants are the slowest per row of x, MLX's
// the fastest.
inline int64_t strip_min_rows(int type) {
  switch (type) {
    case W_Q4_K:
    case W_Q5_K:
      return 4;
    case W_Q8_0:
    case W_Q6_K:
      return 6;
    case W_Q4_0:
      return 8;
    default:
      return 12;
  }
}
inline int64_t amx_int8_min_rows(int type) { return type == W_Q4_K || type == W_Q5_K ? 16 : type == W_Q6_K ? 8 : 12; }

// x [M, K] packed for the bf16 tiles, each of its parts part_stride values long.
const uint16_t* pack_for_tiles(Context& ctx, const float* x, int64_t M, int64_t K, int64_t* part_stride) {
  const int64_t blocks = (M + amx::kTokens - 1) / amx::kTokens;
  *part_stride = blocks * amx::kTokens * amx::padded_k(K);
  uint16_t* xb = ctx.packed_x(amx::kParts * *part_stride);
  const int64_t stride = *part_stride;
  ctx.pool().parallel_for(blocks, [&](int64_t b) { amx::pack_x(x, M, K, b, stride, xb); });
  return xb;
}

#endif

}  // namespace

Kernel matmul_kernel(const Context& ctx, int type, int64_t M) {
#if defined(TL_X86)
  if (is_int8_type(type)) {
    if (ctx.amx_int8() && M >= amx_int8_min_rows(type)) return Kernel::kAmxInt8;
    if (ctx.vnni_int8() && M >= strip_min_rows(type)) return Kernel::kVnniStrips;
  } else if (ctx.amx_tiles() && M >= kAmxMinRows && type != W_F32) {
    return Kernel::kAmxBf16;
  }
#else
  (void)ctx;
  (void)type;
  (void)M;
#endif
  return Kernel::kRows;
}

const char* kernel_name(Kernel k) {
  switch (k) {
    case Kernel::kVnniStrips:
      return "vnni-strips";
    case Kernel::kAmxBf16:
      return "amx-bf16";
    case Kernel::kAmxInt8:
      return "amx-int8";
    default:
      return "rows";
  }
}

namespace {

// x quantized for w's kernels into b, described by the returned QuantX. Each row on its own,
// so a row's codes and scales never depend on the others.
QuantX quantize_for(Context& ctx, const float* x, int64_t M, const Weight& w, QuantBuffers& b) {
  const IsaKernels& k = ctx.kernels();
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
    // The bias of a group meets x as quantized (Σ_b d_b · Σ q_b), not the exact sum: then the
    // rounding error of the whole product is Σ w · (x̂ − x) with w ≈ zero-mean, as it is for the
    // signed types, instead of scale · q · (x̂ − x) with the codes all of one sign (about twice
    // the error on trained weights). The codes are remade from x as quantize_x makes them.
    const float* dm = b.d.data() + m * nb;
    float* gm = b.g.data() + m * groups;
    for (int64_t g = 0; g < groups; g++) {
      float sum = 0;
      for (int64_t blk = g * w.group_size / kBlock; blk < (g + 1) * w.group_size / kBlock; blk++) {
        const float id = dm[blk] != 0 ? 1.0f / dm[blk] : 0.0f;
        int32_t codes = 0;
        for (int64_t j = blk * kBlock; j < (blk + 1) * kBlock; j++) codes += static_cast<int32_t>(std::nearbyint(xm[j] * id));
        sum = std::fma(static_cast<float>(codes), dm[blk], sum);
      }
      gm[g] = sum;
    }
  };
  // A prompt's rows are quantized by all threads; one row is not worth waking them for.
  if (M >= 8)
    ctx.pool().parallel_for(M, [&](int64_t m) { quantize_row(m); });
  else
    for (int64_t m = 0; m < M; m++) quantize_row(m);
  return {b.q.data(), b.d.data(), b.s.data(), stride, nb, ns, b.g.data(), groups};
}

#if defined(TL_X86)
// x quantized as xq, rearranged for the AMX int8 tiles into b, 16 rows per job.
amx::TileX tile_x_for(Context& ctx, const QuantX& xq, int64_t M, const Weight& w, QuantBuffers& b) {
  const int64_t blocks = (M + amx::kTokens - 1) / amx::kTokens;
  const int64_t stride = amx::tile_x_stride(w.cols), nb = w.cols / kBlock, groups = is_affine(w.type) ? w.cols / w.group_size : 0;
  if (static_cast<int64_t>(b.tile_q.size()) < blocks * stride) b.tile_q.resize(blocks * stride);
  if (static_cast<int64_t>(b.tile_d.size()) < blocks * nb * 16) b.tile_d.resize(blocks * nb * 16);
  if (static_cast<int64_t>(b.tile_g.size()) < blocks * groups * 16) b.tile_g.resize(blocks * groups * 16);
  const amx::TileX out{b.tile_q.data(), b.tile_d.data(), b.tile_g.data(), stride, nb, groups};
  ctx.pool().parallel_for(blocks, [&](int64_t block) { amx::pack_tile_x(xq, w.type, M, w.cols, block, out); });
  return out;
}
#endif

// What matmul_many and swiglu prepare for their weights before the threads start: x quantized
// once per weight type (or packed once for the tiles), and how each weight's rows are cut into jobs.
struct Plan {
  MatmulTask tasks[kMaxMatmuls];
  Kernel kernel[kMaxMatmuls] = {};
  int64_t rows_per_chunk[kMaxMatmuls] = {};
  const uint16_t* xb = nullptr;
  int64_t part_stride = 0;
#if defined(TL_X86)
  amx::TileX tile_x[kMaxMatmuls] = {};
#endif
  bool batched(int i) const { return kernel[i] != Kernel::kRows; }
};

Plan plan_for(Context& ctx, const float* x, int64_t M, const MatmulOut* outs, int n) {
  const IsaKernels& k = ctx.kernels();
  Plan p;
  for (int i = 0; i < n; i++) p.kernel[i] = matmul_kernel(ctx, outs[i].w->type, M);
#if defined(TL_X86)
  // Weights on the bf16 tiles share x packed once.
  if (std::find(p.kernel, p.kernel + n, Kernel::kAmxBf16) != p.kernel + n)
    p.xb = pack_for_tiles(ctx, x, M, outs[0].w->cols, &p.part_stride);
#endif
  for (int i = 0; i < n; i++) {
    const Weight& w = *outs[i].w;
    p.tasks[i] = {&w, x, {}, M, outs[i].bias, outs[i].out};
    if (is_int8_type(w.type) && k.quantize_x) {
      int same = -1;
      for (int j = 0; j < i && same < 0; j++) {
        if (p.tasks[j].xq.q && outs[j].w->type == w.type) same = j;
      }
      p.tasks[i].xq = same >= 0 ? p.tasks[same].xq : quantize_for(ctx, x, M, w, ctx.quant(i));
#if defined(TL_X86)
      if (p.kernel[i] == Kernel::kAmxInt8) {
        int packed = -1;
        for (int j = 0; j < i && packed < 0; j++) {
          if (p.kernel[j] == Kernel::kAmxInt8 && outs[j].w->type == w.type) packed = j;
        }
        p.tile_x[i] = packed >= 0 ? p.tile_x[packed] : tile_x_for(ctx, p.tasks[i].xq, M, w, ctx.quant(i));
      }
#endif
    }
    switch (p.kernel[i]) {
#if defined(TL_X86)
      case Kernel::kAmxBf16:
        p.rows_per_chunk[i] = amx::kStrip;
        break;
      case Kernel::kVnniStrips:
        p.rows_per_chunk[i] = vnni::kStrip;
        break;
      case Kernel::kAmxInt8:
        p.rows_per_chunk[i] = amx::kInt8Strip;
        break;
#endif
      default:
        p.rows_per_chunk[i] = row_chunk(ctx, w.rows, row_tile(ctx, w));
    }
  }
  return p;
}

// Rows [n0, n1) of t, which is plan p's task i or that task over a view of its weight's rows.
void run_rows(const Context& ctx, const Plan& p, int i, const MatmulTask& t, int64_t n0, int64_t n1) {
  switch (p.kernel[i]) {
#if defined(TL_X86)
    case Kernel::kAmxBf16:
      for (int64_t n = n0; n < n1; n += amx::kStrip) amx::matmul_strip(t, p.xb, p.part_stride, n);
      return;
    case Kernel::kVnniStrips:
      for (int64_t n = n0; n < n1; n += vnni::kStrip) vnni::matmul_strip(t, n);
      return;
    case Kernel::kAmxInt8:
      for (int64_t n = n0; n < n1; n += amx::kInt8Strip) amx::matmul_int8_strip(t, p.tile_x[i], n);
      return;
#endif
    default:
      ctx.kernels().matmul_rows(t, n0, n1);
  }
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

void matmul(Context& ctx, float* out, const float* x, int64_t M, const Weight& w, const float* bias) {
  const MatmulOut o{&w, out, bias};
  matmul_many(ctx, x, M, &o, 1);
}

void matmul_many(Context& ctx, const float* x, int64_t M, const MatmulOut* outs, int n) {
  if (M == 0) return;
  // One task per weight, and all their rows one job for the threads.
  const Plan p = plan_for(ctx, x, M, outs, n);
  int64_t first_chunk[kMaxMatmuls + 1] = {0};
  for (int i = 0; i < n; i++) first_chunk[i + 1] = first_chunk[i] + (outs[i].w->rows + p.rows_per_chunk[i] - 1) / p.rows_per_chunk[i];
  ctx.pool().parallel_for(first_chunk[n], [&](int64_t c) {
    int i = 0;
    while (c >= first_chunk[i + 1]) i++;
    const int64_t n0 = (c - first_chunk[i]) * p.rows_per_chunk[i];
    run_rows(ctx, p, i, p.tasks[i], n0, std::min(outs[i].w->rows, n0 + p.rows_per_chunk[i]));
  });
}

void swiglu(Context& ctx, float* out, const float* x, int64_t M, const MatmulOut& gate, const MatmulOut& up) {
  if (M == 0) return;
  const MatmulOut outs[2] = {gate, up};
  const Plan p = plan_for(ctx, x, M, outs, 2);
  const int64_t N = gate.w->rows;
  // Each job takes the same rows of both weights: several strips or tiles, whose kernels read
  // ahead within the job's rows, or as many rows as the per-thread buffers hold. Where a job's
  // rows start changes no result: the row kernels and silu_mul compute each element alone.
  const bool batched = p.batched(0) || p.batched(1);
  const int64_t tile = std::max(row_tile(ctx, *gate.w), row_tile(ctx, *up.w));
  const int64_t chunk = batched ? kSwigluStripRows
                                : std::min(std::max(p.rows_per_chunk[0], p.rows_per_chunk[1]),
                                           std::max<int64_t>(tile, kSwigluBufferFloats / M / tile * tile));
  const IsaKernels& k = ctx.kernels();
  ctx.pool().parallel_for((N + chunk - 1) / chunk, [&](int64_t c, int worker) {
    const int64_t n0 = c * chunk;
    const int64_t rows = std::min(chunk, N - n0);
    float* g = ctx.worker_buffer(worker, 0, M * chunk);
    float* u = ctx.worker_buffer(worker, 1, M * chunk);
    const Weight wg = row_view(*gate.w, n0, rows), wu = row_view(*up.w, n0, rows);
    MatmulTask tg = p.tasks[0], tu = p.tasks[1];
    tg.w = &wg;
    tu.w = &wu;
    tg.bias = gate.bias ? gate.bias + n0 : nullptr;
    tu.bias = up.bias ? up.bias + n0 : nullptr;
    tg.out = g;
    tu.out = u;
    run_rows(ctx, p, 0, tg, 0, rows);
    run_rows(ctx, p, 1, tu, 0, rows);
    for (int64_t m = 0; m < M; m++) k.silu_mul(out + m * N + n0, g + m * rows, u + m * rows, rows);
  });
}

}  // namespace tl
