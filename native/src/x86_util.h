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

// The eight 6-bit scales (bytes 0-7) and mins (bytes 8-15) of a Q4_K / Q5_K super-block, from
// its 12 packed bytes (words w0, w1, w2): scales 0-3 and mins 0-3 are the low 6 bits of w0 and
// w1; scales 4-7 are w2's low nibbles with w0's top 2 bits above, mins 4-7 w2's high nibbles
// with w1's top 2 bits. `packed` must have 4 readable bytes after the 12.
inline __m128i unpack_scale_min(const uint8_t* packed) {
  const __m128i w = _mm_loadu_si128(reinterpret_cast<const __m128i*>(packed));  // w0, w1, w2, -
  const __m128i lo = _mm_and_si128(w, _mm_set1_epi32(0x3f3f3f3f));              // scales 0-3, mins 0-3
  const __m128i w2 = _mm_srlv_epi32(_mm_shuffle_epi32(w, 0xaa), _mm_setr_epi32(0, 4, 0, 0));
  const __m128i top = _mm_slli_epi32(_mm_and_si128(_mm_srli_epi32(w, 6), _mm_set1_epi32(0x03030303)), 4);
  const __m128i hi = _mm_or_si128(_mm_and_si128(w2, _mm_set1_epi32(0x0f0f0f0f)), top);  // scales 4-7, mins 4-7
  return _mm_unpacklo_epi32(lo, hi);
}

#if defined(__AVX512F__)
// The first n of 16 lanes (none for n ≤ 0, all for n ≥ 16).
inline __mmask16 lane_mask(int64_t n) { return n >= 16 ? 0xffff : n <= 0 ? 0 : static_cast<__mmask16>((1u << n) - 1); }
#endif

}  // namespace
}  // namespace tl
