// Memory the kernels do not compute on: pages given back, files mapped, a bandwidth probe.
#pragma once

#include <cstddef>
#include <cstdint>
#include <new>
#include <vector>

namespace tl {

class Context;

// Gives the pages wholly inside [data, data + bytes) back to the system: they read as zeros
// until written again, when they are faulted back in. For buffers whose contents are dead.
void release_pages(void* data, size_t bytes);

// Bytes [offset, offset + length) of a file as a private (copy-on-write) memory map, so they are
// read from the page cache on first use rather than copied, and in-place rewrites (regroupRows)
// copy only the pages they touch. The map starts at the page that holds `offset`: the bytes
// begin bytes − length into it. False where the range cannot be mapped.
struct Mapping {
  void* data = nullptr;
  size_t bytes = 0;
};
bool map_file(const char* path, int64_t offset, int64_t length, Mapping* out);
void unmap_file(void* data, size_t bytes);

// An allocator of 64-byte-aligned memory, for buffers that tiles load whole cache lines of (a
// tile row across two lines loads at half speed).
template <class T>
struct CacheLineAllocator {
  using value_type = T;
  CacheLineAllocator() = default;
  template <class U>
  CacheLineAllocator(const CacheLineAllocator<U>&) {}
  T* allocate(size_t n) { return static_cast<T*>(::operator new(n * sizeof(T), std::align_val_t{64})); }
  void deallocate(T* p, size_t) { ::operator delete(p, std::align_val_t{64}); }
  bool operator==(const CacheLineAllocator&) const { return true; }
  bool operator!=(const CacheLineAllocator&) const { return false; }
};
template <class T>
using AlignedVector = std::vector<T, CacheLineAllocator<T>>;

// Reads n floats with every thread of the context and returns their sum: a probe of
// streaming-read bandwidth.
double read_probe(Context& ctx, const float* data, int64_t n);

}  // namespace tl
