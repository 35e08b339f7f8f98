// Which instruction sets this CPU offers, read once at run time: the addon is built with code
// for several, and picks the best one the machine actually has.
#pragma once

namespace tl {

struct CpuFeatures {
  bool avx2 = false;    // with FMA and F16C
  bool avx512 = false;  // F, BW, VL, DQ, VNNI (the set the AVX-512 kernels are compiled for)
  bool amx = false;     // AVX-512 plus AMX-BF16 and AMX-INT8 tiles and AVX512-BF16, and the OS lets us use the tiles
};

const CpuFeatures& cpu_features();

}  // namespace tl
