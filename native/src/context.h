// An engine context: what a loaded model's kernels keep between calls. Its own threads, the
// instruction set they run, whether results must not depend on the batch, and the buffers that
// grow with a batch. Nothing lives in process globals, so two contexts (two models, or two
// worker threads) share no state. A context is used by one JavaScript thread at a time.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels.h"
#include "memory.h"
#include "thread_pool.h"

namespace tl {

// An argument the caller got wrong (a size, an index, an unknown name): the addon turns it into
// a JavaScript RangeError with this one-line message.
struct ArgumentError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Instruction sets this CPU offers the kernels, best first: "amx", "avx512", "avx2", "scalar".
std::vector<std::string> available_isas();

struct ContextOptions {
  int threads = 0;           // 0: one per core
  std::string isa = "auto";  // "auto": the best of available_isas()
  bool batch_invariant = true;
};

// x quantized for one weight type of a matmul (see QuantX), kept so decode allocates nothing.
struct QuantBuffers {
  std::vector<int8_t> q;
  std::vector<float> d, s, g;
  // The same rearranged for the AMX int8 tiles (amx::TileX).
  AlignedVector<int8_t> tile_q;
  std::vector<float> tile_d, tile_g;
};

// cos and sin of each position's angles, [position][cos: D/2, sin: D/2], filled by rope.cc:
// every layer, and q and k, rotate by the same angles at a position.
struct RopeTable {
  double theta = 0;
  int64_t D = 0;
  int64_t positions = 0;
  std::vector<float> cs;
};

class Context {
 public:
  // Throws ArgumentError for a thread count outside 0..256 or an ISA this CPU lacks.
  explicit Context(const ContextOptions& opts);

  const IsaKernels& kernels() const { return *kernels_; }
  const std::string& isa_name() const { return isa_; }
  bool batch_invariant() const { return batch_invariant_; }
  // The AMX bf16 tiles (f16 and bf16 weights) order a row's sums by where it sits in the batch:
  // only allowed when results need not be batch-invariant.
  bool amx_tiles() const { return amx_ && !batch_invariant_; }
  // The AVX-512 VNNI int8 kernels (with the AVX-512 kernels, so also beside AMX): one-row
  // kernels and strips that give a row the same bits, so prompts may use the strips either way.
  bool vnni_int8() const;
  // The AMX int8 tiles, which give a row the same bits as the VNNI kernels: either way.
  bool amx_int8() const { return amx_; }
  ThreadPool& pool() { return pool_; }
  int threads() const { return pool_.threads(); }

  // Quantized x for matmul_many's weights, one set per weight.
  QuantBuffers& quant(int i);
  // x packed for the AMX tiles, at least n values.
  uint16_t* packed_x(int64_t n);
  RopeTable& rope_table() { return rope_; }
  // At least n floats for pool thread `worker`, slot 0 or 1, kept between calls.
  float* worker_buffer(int worker, int slot, int64_t n);

  // Gives the pages of every buffer above back to the system (they are refilled when next used).
  void release_scratch();

 private:
  std::string isa_;  // checked before any thread starts
  ThreadPool pool_;
  const IsaKernels* kernels_;
  bool amx_;
  bool batch_invariant_;
  std::vector<QuantBuffers> quant_;
  std::vector<uint16_t> packed_x_;
  RopeTable rope_;
  std::vector<std::vector<float>> worker_buffers_;  // [worker * 2 + slot]
};

}  // namespace tl
