// Small helpers shared by the x86 kernels (kernels_x86.cc, kernels_amx.cc, kernels_vnni.cc).
#pragma once

#include <immintrin.h>

#include <cstdint>
#include <cstring>

namespace tl {
namespace {

// An f16 as f32 (F16C).
inline float f16(uint16_t h) { return _cvtsh_ss(h); }

// The f16 at p, at any alignment, as f32.
inline float f16_at(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return f16(h);
}

#if defined(__AVX512F__)
// The first n of 16 lanes (none for n ≤ 0, all for n ≥ 16).
inline __mmask16 lane_mask(int64_t n) { return n >= 16 ? 0xffff : n <= 0 ? 0 : static_cast<__mmask16>((1u << n) - 1); }
#endif

}  // namespace
}  // namespace tl
