#include "thread_pool.h"

#include <chrono>

#if defined(__x86_64__)
#include <immintrin.h>
#define TL_PAUSE() _mm_pause()
#else
#define TL_PAUSE() std::this_thread::yield()
#endif

namespace tl {

namespace {
// Long enough to bridge the gap between two kernels of one forward pass, short enough that an
// idle engine costs nothing.
constexpr auto kSpin = std::chrono::microseconds(200);
constexpr uint64_t kChunkMask = 0xffffffffu;
}  // namespace

ThreadPool::ThreadPool(int threads) {
  for (int i = 1; i < threads; i++) workers_.emplace_back([this, i] { worker_loop(i); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_.store(true);
  }
  cv_.notify_all();
  for (auto& t : workers_) t.join();
}

void ThreadPool::run(int64_t chunks, ChunkFn fn, void* ctx) {
  if (chunks <= 0) return;
  if (workers_.empty() || chunks == 1) {
    for (int64_t i = 0; i < chunks; i++) fn(ctx, i, 0);
    return;
  }
  // Close the previous job before touching its fields: a worker that still holds its generation
  // must not claim a chunk index that only the new job's larger count makes valid.
  state_.store((gen_ & kChunkMask) << 32 | kChunkMask);
  fn_.store(fn, std::memory_order_relaxed);
  ctx_.store(ctx, std::memory_order_relaxed);
  chunks_.store(chunks, std::memory_order_relaxed);
  done_.store(0, std::memory_order_relaxed);
  const uint64_t gen = ++gen_ & kChunkMask;
  state_.store(gen << 32);  // seq_cst: publishes the job, and orders against sleepers_ below
  if (sleepers_.load() > 0) {
    { std::lock_guard<std::mutex> lock(mu_); }
    cv_.notify_all();
  }
  work(gen, 0);
  int spins = 0;
  while (done_.load(std::memory_order_acquire) < chunks) {
    if (++spins > 1000)
      std::this_thread::yield();
    else
      TL_PAUSE();
  }
}

void ThreadPool::work(uint64_t gen, int worker) {
  uint64_t s = state_.load(std::memory_order_acquire);
  for (;;) {
    if ((s >> 32) != gen) return;
    const int64_t chunk = static_cast<int64_t>(s & kChunkMask);
    if (chunk >= chunks_.load(std::memory_order_relaxed)) return;
    if (state_.compare_exchange_weak(s, s + 1, std::memory_order_acq_rel)) {
      fn_.load(std::memory_order_relaxed)(ctx_.load(std::memory_order_relaxed), chunk, worker);
      done_.fetch_add(1, std::memory_order_release);
      s = state_.load(std::memory_order_acquire);
    }
  }
}

void ThreadPool::worker_loop(int worker) {
  uint64_t seen = 0;
  for (;;) {
    auto start = std::chrono::steady_clock::now();
    int spins = 0;
    uint64_t gen;
    while ((gen = state_.load(std::memory_order_acquire) >> 32) == seen) {
      if (stop_.load(std::memory_order_relaxed)) return;
      if (++spins % 256 == 0 && std::chrono::steady_clock::now() - start > kSpin) {
        std::unique_lock<std::mutex> lock(mu_);
        sleepers_.fetch_add(1);
        cv_.wait(lock, [&] { return stop_.load() || (state_.load() >> 32) != seen; });
        sleepers_.fetch_sub(1);
        if (stop_.load()) return;
        start = std::chrono::steady_clock::now();
      }
      TL_PAUSE();
    }
    seen = gen;
    work(gen, worker);
  }
}

}  // namespace tl
