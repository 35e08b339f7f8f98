/**
 * The native kernel backend (C++ in native/, built by node-gyp during `npm install`), loaded if
 * it built. Every function works in place on typed arrays: no copies cross the boundary.
 */
import { existsSync } from "node:fs";
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";

/** Weight storage types, numbered as in native/src/kernels.h. */
export const NativeWeightType = { f32: 0, f16: 1, bf16: 2, q8_0: 3, q4_0: 4, affine4: 5, affine8: 6, q4_k: 7, q6_k: 8, q5_k: 9 } as const;
/** Storage types of affine scales and biases, numbered as in native/src/kernels.h. */
export const NativeScaleType = { f32: 0, f16: 1, bf16: 2 } as const;
export type NativeWeightTypeName = keyof typeof NativeWeightType;

export interface NativeWeight {
  type: number;
  data: Float32Array | Uint16Array | Uint8Array;
  /** Output features (N). */
  rows: number;
  /** Input features (K). */
  cols: number;
  /** Affine types: per-group scales and biases ([rows, cols / groupSize]) in their stored type. */
  scales?: Float32Array | Uint16Array;
  biases?: Float32Array | Uint16Array;
  scaleType?: number;
  groupSize?: number;
}

export interface NativeKernels {
  /** out[M, N] = x[M, K] · wᵀ + bias */
  matmul(out: Float32Array, x: Float32Array, M: number, w: NativeWeight, bias: Float32Array | null): void;
  /**
   * outs[i] = x · weights[i]ᵀ + biases[i] for up to 4 weights with the same K, as one job for
   * the threads (x quantized once per weight type).
   */
  matmulMany(
    x: Float32Array,
    M: number,
    outs: readonly Float32Array[],
    weights: readonly NativeWeight[],
    biases: readonly (Float32Array | null)[],
  ): void;
  /**
   * Causal attention of L new query rows (positions S - L .. S - 1) against the cache.
   * out, q: [L, H, D]; k, v: [H_kv, capacity, D].
   */
  attention(
    out: Float32Array,
    q: Float32Array,
    k: Float32Array,
    v: Float32Array,
    L: number,
    S: number,
    H: number,
    Hkv: number,
    D: number,
    capacity: number,
    scale: number,
  ): void;
  /** RMSNorm of `rows` rows of n features; out may be x. */
  rmsNorm(out: Float32Array, x: Float32Array, weight: Float32Array, rows: number, n: number, eps: number): void;
  /** Rotates x [L, heads, D] in place for positions offset .. offset + L - 1. */
  rope(x: Float32Array, L: number, heads: number, D: number, offset: number, theta: number, traditional: boolean): void;
  /**
   * out[M, N] = silu(x · gateᵀ + gateBias) ⊙ (x · upᵀ + upBias) for gate and up weights of one
   * shape [N, K]: the gated half of a SwiGLU MLP, made a few rows of N at a time, so neither
   * product is ever held whole.
   */
  swiglu(
    out: Float32Array,
    x: Float32Array,
    M: number,
    gate: NativeWeight,
    gateBias: Float32Array | null,
    up: NativeWeight,
    upBias: Float32Array | null,
  ): void;
  /**
   * Gives the pages of these buffers, and of the kernels' own buffers sized for a batch of rows,
   * back to the system: they read as zeros until written again, when they are faulted back in.
   * For activation buffers between prompts.
   */
  releaseScratch(buffers: readonly Float32Array[]): void;
  /** Regroups Q8_0 / Q4_0 weights from GGUF blocks into the "rows" layout, in place. */
  regroupRows(type: number, data: Uint8Array, rows: number, cols: number): void;
  /**
   * Bytes [offset, offset + length) of a file as a private copy-on-write memory map (writes stay
   * in this process), or null where they cannot be mapped. The map starts at a page boundary: the
   * bytes begin byteLength − length into the buffer. It lives as long as the buffer or a view.
   */
  mapFile(path: string, offset: number, length: number): ArrayBuffer | null;
  /** Sums the array with every thread: a probe of streaming-read bandwidth. */
  readProbe(data: Float32Array): number;
  /** Sets the thread count (0 = one per core); returns the count in use. */
  setThreads(threads: number): number;
  /** Selects "auto", "avx512", "avx2" or "scalar" kernels; false if this CPU lacks them. */
  setIsa(isa: string): boolean;
  info(): { isa: string; threads: number };
}

/** Where node-gyp puts the addon; TINY_LLM_ADDON points elsewhere (tests use it to simulate a failed build). */
const addonPath = process.env.TINY_LLM_ADDON ?? fileURLToPath(new URL("../../../build/Release/tiny_llm_native.node", import.meta.url));

let loaded: NativeKernels | undefined;
let loadError: string | undefined;

/** The native kernels, or undefined when the addon did not build here (see nativeUnavailableReason). */
export function nativeKernels(): NativeKernels | undefined {
  if (loaded || loadError) return loaded;
  if (!existsSync(addonPath)) {
    loadError = `${addonPath} was not built (npm install builds it with node-gyp and a C++17 compiler)`;
    return undefined;
  }
  try {
    loaded = createRequire(import.meta.url)(addonPath) as NativeKernels;
  } catch (err) {
    loadError = `${addonPath} could not be loaded: ${(err as Error).message}`;
  }
  return loaded;
}

export function nativeUnavailableReason(): string | undefined {
  nativeKernels();
  return loadError;
}
