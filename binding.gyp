{
  "target_defaults": {
    "cflags_cc": ["-std=c++17", "-O3", "-fPIC"],
    "cflags_cc!": ["-fno-exceptions", "-fno-rtti"],
    "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
    "defines": ["NAPI_VERSION=8", "NAPI_CPP_EXCEPTIONS"]
  },
  "targets": [
    {
      "target_name": "tiny_llm_native",
      "sources": [
        "native/src/addon.cc",
        "native/src/context.cc",
        "native/src/cpu_features.cc",
        "native/src/flash_attention.cc",
        "native/src/kernels_scalar.cc",
        "native/src/matmul.cc",
        "native/src/memory.cc",
        "native/src/norm_rope.cc",
        "native/src/paged_attention.cc",
        "native/src/thread_pool.cc"
      ],
      "conditions": [
        ["target_arch=='x64'", {
          "defines": ["TL_X86"],
          "dependencies": ["kernels_avx2", "kernels_avx512", "kernels_amx"]
        }]
      ]
    }
  ],
  "conditions": [
    ["target_arch=='x64'", {
      "targets": [
        {
          "target_name": "kernels_avx2",
          "type": "static_library",
          "sources": ["native/src/kernels_x86.cc"],
          "defines": ["TL_X86"],
          "cflags_cc": ["-mavx2", "-mfma", "-mf16c"]
        },
        {
          "target_name": "kernels_avx512",
          "type": "static_library",
          "sources": ["native/src/kernels_x86.cc", "native/src/kernels_vnni.cc"],
          "defines": ["TL_X86"],
          "cflags_cc": ["-mavx2", "-mfma", "-mf16c", "-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq", "-mavx512vnni", "-Wno-maybe-uninitialized", "-Wno-uninitialized"]
        },
        {
          "target_name": "kernels_amx",
          "type": "static_library",
          "sources": ["native/src/kernels_amx.cc"],
          "defines": ["TL_X86"],
          "cflags_cc": ["-mavx2", "-mfma", "-mf16c", "-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq", "-mavx512bf16", "-mamx-tile", "-mamx-bf16", "-mamx-int8", "-Wno-maybe-uninitialized", "-Wno-uninitialized"]
        }
      ]
    }]
  ]
}
