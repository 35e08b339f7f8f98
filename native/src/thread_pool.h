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
#include <type_traits>
#include <vector>

namespace tl {

class ThreadPool {
 public:
  // `worker` is 0 for the calling thread and 1 .. threads() - 1 for the pool's own, so that a
  // job can give each thread a scratch buffer of its own.
  using ChunkFn = void (*)(void* ctx, int64_t chunk, int worker);

  explicit ThreadPool(int threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int threads() const { return static_cast<int>(workers_.size()) + 1; }

  // Runs fn(ctx, i, worker) for i in [0, chunks), returning when all are done.
  void run(int64_t chunks, ChunkFn fn, void* ctx);

  // f(i) or f(i, worker) for i in [0, chunks).
  template <class F>
  void parallel_for(int64_t chunks, F&& f) {
    using Fn = std::remove_reference_t<F>;
    run(
        chunks,
        [](void* c, int64_t i, int worker) {
          if constexpr (std::is_invocable_v<Fn&, int64_t, int>)
            (*static_cast<Fn*>(c))(i, worker);
          else
            (*static_cast<Fn*>(c))(i);
        },
        &f);
  }

 private:
  void worker_loop(int worker);
  // Claims and runs chunks of job `gen` until none are left.
  void work(uint64_t gen, int worker);

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
