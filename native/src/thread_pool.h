// A pool of worker threads for data-parallel kernels.
//
// A job is split into many small chunks that threads claim one at a time, so a thread that the
// OS takes away (the machine may be shared) delays only its current chunk, never a fixed half
// of the work. The calling thread works too. Idle workers spin briefly for the next job (kernels
// come in quick succession during a forward pass), then sleep on a condition variable.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <thread>
#include <vector>

namespace tl {

class ThreadPool {
 public:
  using ChunkFn = void (*)(void* ctx, int64_t chunk);

  explicit ThreadPool(int threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int threads() const { return static_cast<int>(workers_.size()) + 1; }

  // Runs fn(ctx, i) for i in [0, chunks), returning when all are done.
  void run(int64_t chunks, ChunkFn fn, void* ctx);

  template <class F>
  void parallel_for(int64_t chunks, F&& f) {
    run(
        chunks, [](void* c, int64_t i) { (*static_cast<F*>(c))(i); }, &f);
  }

 private:
  void worker_loop();
  // Claims and runs chunks of job `gen` until none are left.
  void work(uint64_t gen);

  std::vector<std::thread> workers_;
  // Job generation in the high 32 bits, next unclaimed chunk in the low 32 bits: a claim is one
  // compare-and-swap, and a thread holding an older generation can never claim a newer job's chunk.
  // Each of the three below on its own cache line: the claims, the count of finished chunks (which
  // the caller polls) and the job itself (read by every claim) would otherwise evict each other
  // from the other thread's cache at every chunk.
  alignas(64) std::atomic<uint64_t> state_{0};
  alignas(64) std::atomic<int64_t> done_{0};
  alignas(64) std::atomic<int64_t> chunks_{0};
  std::atomic<ChunkFn> fn_{nullptr};
  std::atomic<void*> ctx_{nullptr};
  uint64_t gen_ = 0;

  std::mutex mu_;
  std::condition_variable cv_;
  std::atomic<int> sleepers_{0};
  std::atomic<bool> stop_{false};
};

}  // namespace tl
