#include "memory.h"

#include <algorithm>
#include <vector>

#if !defined(_WIN32)
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#endif

#include "context.h"

namespace tl {

void release_pages(void* data, size_t bytes) {
#if defined(_WIN32)
  (void)data;
  (void)bytes;
#else
  // Only the pages wholly inside the buffer: the ones at its ends may hold other allocations.
  const uintptr_t page = static_cast<uintptr_t>(sysconf(_SC_PAGESIZE));
  const uintptr_t begin = (reinterpret_cast<uintptr_t>(data) + page - 1) / page * page;
  const uintptr_t end = (reinterpret_cast<uintptr_t>(data) + bytes) / page * page;
  if (end > begin) madvise(reinterpret_cast<void*>(begin), end - begin, MADV_DONTNEED);
#endif
}

bool map_file(const char* path, int64_t offset, int64_t length, Mapping* out) {
#if defined(_WIN32)
  (void)path;
  (void)offset;
  (void)length;
  (void)out;
  return false;
#else
  const int64_t page = sysconf(_SC_PAGESIZE);
  const int64_t start = offset / page * page;
  const size_t bytes = static_cast<size_t>(offset - start + length);
  // JavaScript takes array buffers of up to 2^32 bytes from native memory.
  if (length == 0 || bytes > (size_t{1} << 32)) return false;
  const int fd = open(path, O_RDONLY);
  if (fd < 0) return false;
  struct stat st {};
  void* data = MAP_FAILED;
  if (fstat(fd, &st) == 0 && offset + length <= st.st_size) data = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, start);
  close(fd);
  if (data == MAP_FAILED) return false;
  madvise(data, bytes, MADV_WILLNEED);  // start reading ahead
  out->data = data;
  out->bytes = bytes;
  return true;
#endif
}

void unmap_file(void* data, size_t bytes) {
#if !defined(_WIN32)
  munmap(data, bytes);
#else
  (void)data;
  (void)bytes;
#endif
}

double read_probe(Context& ctx, const float* data, int64_t n) {
  constexpr int64_t kChunk = 1 << 16;
  const int64_t chunks = (n + kChunk - 1) / kChunk;
  std::vector<double> sums(chunks);
  const std::vector<float> one(kChunk, 1.0f);  // read by every thread; stays in cache
  const IsaKernels& k = ctx.kernels();
  // dot(x, 1-vector) streams x with the same vector loads the matmul kernels use.
  ctx.pool().parallel_for(chunks, [&](int64_t c) {
    const int64_t i0 = c * kChunk;
    sums[c] = k.dot(data + i0, one.data(), std::min(kChunk, n - i0));
  });
  double total = 0;
  for (double s : sums) total += s;
  return total;
}

}  // namespace tl
