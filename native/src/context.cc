#include "context.h"

#include <algorithm>
#include <thread>

#include "cpu_features.h"
#include "memory.h"

namespace tl {

namespace {

constexpr int kMaxThreads = 256;

// The kernels behind an available ISA name ("amx" runs the AVX-512 kernels beside its tiles).
const IsaKernels& kernels_for(const std::string& isa) {
#if defined(TL_X86)
  if (isa == "amx" || isa == "avx512") return avx512_kernels();
  if (isa == "avx2") return avx2_kernels();
#endif
  (void)isa;
  return scalar_kernels();
}

std::string join(const std::vector<std::string>& names) {
  std::string out;
  for (const std::string& n : names) out += (out.empty() ? "" : ", ") + n;
  return out;
}

int thread_count(int threads) {
  if (threads < 0 || threads > kMaxThreads)
    throw ArgumentError("threads must be 1 to " + std::to_string(kMaxThreads) + " (0 for one per core), got " + std::to_string(threads));
  if (threads == 0) threads = static_cast<int>(std::min<unsigned>(kMaxThreads, std::max(1u, std::thread::hardware_concurrency())));
  return threads;
}

std::string isa_choice(const std::string& isa) {
  const std::vector<std::string> here = available_isas();
  if (isa == "auto") return here.front();
  if (std::find(here.begin(), here.end(), isa) == here.end())
    throw ArgumentError("instruction set \"" + isa + "\" is not available on this CPU (available: " + join(here) + ")");
  return isa;
}

}  // namespace

std::vector<std::string> available_isas() {
  std::vector<std::string> names;
#if defined(TL_X86)
  const CpuFeatures& f = cpu_features();
  if (f.amx) names.push_back("amx");
  if (f.avx512) names.push_back("avx512");
  if (f.avx2) names.push_back("avx2");
#endif
  names.push_back("scalar");
  return names;
}

Context::Context(const ContextOptions& opts)
    : isa_(isa_choice(opts.isa)),
      pool_(thread_count(opts.threads)),
      kernels_(&kernels_for(isa_)),
      amx_(isa_ == "amx"),
      batch_invariant_(opts.batch_invariant),
      worker_buffers_(2 * pool_.threads()) {}

bool Context::vnni_int8() const {
#if defined(TL_X86)
  return kernels_ == &avx512_kernels();
#else
  return false;
#endif
}

QuantBuffers& Context::quant(int i) {
  if (static_cast<int>(quant_.size()) <= i) quant_.resize(i + 1);
  return quant_[i];
}

uint16_t* Context::packed_x(int64_t n) {
  if (static_cast<int64_t>(packed_x_.size()) < n) packed_x_.resize(n);
  return packed_x_.data();
}

float* Context::worker_buffer(int worker, int slot, int64_t n) {
  std::vector<float>& b = worker_buffers_[2 * worker + slot];
  if (static_cast<int64_t>(b.size()) < n) b.resize(n);
  return b.data();
}

void Context::release_scratch() {
  for (QuantBuffers& b : quant_) {
    release_pages(b.q.data(), b.q.size());
    release_pages(b.d.data(), b.d.size() * sizeof(float));
    release_pages(b.s.data(), b.s.size() * sizeof(float));
    release_pages(b.g.data(), b.g.size() * sizeof(float));
    release_pages(b.tile_q.data(), b.tile_q.size());
    release_pages(b.tile_d.data(), b.tile_d.size() * sizeof(float));
    release_pages(b.tile_g.data(), b.tile_g.size() * sizeof(float));
  }
  release_pages(packed_x_.data(), packed_x_.size() * sizeof(uint16_t));
  for (std::vector<float>& b : worker_buffers_) release_pages(b.data(), b.size() * sizeof(float));
}

}  // namespace tl
