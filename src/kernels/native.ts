/**
 * The native kernel backend (C++ in native/, built by node-gyp during `npm install`), loaded if
 * it built. The addon's few module functions are stateless; the ops are methods of a
 * NativeContext, which owns its threads, instruction set and buffers. Every op works in place on
 * typed arrays: no copies cross the boundary.
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

/** The addon's module-level functions: stateless, the same in every thread that loads it. */
export interface NativeAddon {
  /** The weight storage types the C++ side knows, by name: must equal NativeWeightType (checked at load). */
  weightTypes(): Record<string, number>;
  /** The affine scale types the C++ side knows, by name: must equal NativeScaleType (checked at load). */
  scaleTypes(): Record<string, number>;
  /** The instruction sets this CPU offers the kernels, best first (e.g. ["amx", "avx512", "avx2", "scalar"]). */
  availableIsas(): string[];
  /**
   * An engine context: its own threads (threads 1..256; 0 or absent: one per core), one instruction
   * set (isa: one of availableIsas(), or "auto"/absent for the best) and its own buffers. With
   * batchInvariant (the default) a row's result is the same bits whatever else is in its batch:
   * prompts of int8 weights run on batched kernels that keep the one-row kernels' bits (VNNI
   * strips), the rest on the one-row kernels; without it prompts may also use AMX bf16 tiles.
   * Throws for an unknown or unavailable isa, naming the available ones.
   */
  createContext(opts?: { threads?: number; isa?: string; batchInvariant?: boolean }): NativeContext;
  /** Regroups Q8_0 / Q4_0 weights from GGUF blocks into the "rows" layout, in place. */
  regroupRows(type: number, data: Uint8Array, rows: number, cols: number): void;
  /**
   * Bytes [offset, offset + length) of a file as a private copy-on-write memory map (writes stay
   * in this process), or null where they cannot be mapped. The map starts at a page boundary: the
   * bytes begin byteLength − length into the buffer. It lives as long as the buffer or a view.
   */
  mapFile(path: string, offset: number, length: number): ArrayBuffer | null;
}

/** The ops, run on one context's threads and kernels. Every array is read or written in place. */
export interface NativeContext {
  info(): { isa: string; threads: number; batchInvariant: boolean };
  /**
   * The kernel a matmul (or matmulMany, swiglu) of M rows by weights of `type` (a NativeWeightType)
   * runs on this context: "rows" (the one-row kernels), "vnni-strips" (int8 weights on AVX-512,
   * batch-invariant) or "amx-bf16" (AMX tiles, only without batch invariance).
   */
  matmulKernel(type: number, M: number): string;
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
  /** RMSNorm of `rows` rows of n features; out may be x. */
  rmsNorm(out: Float32Array, x: Float32Array, weight: Float32Array, rows: number, n: number, eps: number): void;
  /** x [T, heads, D] rotated in place, row t at position positions[t]. */
  rope(x: Float32Array, T: number, heads: number, D: number, positions: Int32Array, theta: number, traditional: boolean): void;
  /**
   * Writes k, v ([T, H_kv, D] f32) into one layer's paged cache: token t into block
   * floor(slots[t] / blockSize), offset slots[t] % blockSize. K and V caches are each
   * [numBlocks, H_kv, blockSize, D] of kvType: 0 = f32 (Float32Array), 1 = f16, 2 = bf16
   * (Uint16Array of raw bits, rounded to nearest even as src/tensor/dtype.ts rounds).
   */
  storeKV(
    kCache: Float32Array | Uint16Array,
    vCache: Float32Array | Uint16Array,
    kvType: number,
    k: Float32Array,
    v: Float32Array,
    slots: Int32Array,
    T: number,
    Hkv: number,
    D: number,
    blockSize: number,
  ): void;
  /**
   * Causal attention of each sequence's new query rows against its own paged K/V. q, out:
   * [T, H, D]. seqs: 4 int32 per sequence: qStart, qLen, kvLen, tableStart. Query row qStart + i
   * (0 <= i < qLen) sits at position kvLen − qLen + i and attends to keys 0 … that position; key p
   * lives in block blockTables[tableStart + floor(p / blockSize)] at offset p % blockSize. Query
   * head h uses kv head floor(h / (H / H_kv)). A row's result is the same bits whatever other
   * sequences run beside it, however its sequence's prompt was chunked, and on any thread count.
   */
  pagedAttention(
    out: Float32Array,
    q: Float32Array,
    kCache: Float32Array | Uint16Array,
    vCache: Float32Array | Uint16Array,
    kvType: number,
    seqs: Int32Array,
    blockTables: Int32Array,
    H: number,
    Hkv: number,
    D: number,
    blockSize: number,
    scale: number,
  ): void;
  /**
   * Gives the pages of these buffers, and of the context's own buffers sized for a batch of rows,
   * back to the system: they read as zeros until written again, when they are faulted back in.
   * For activation buffers between prompts.
   */
  releaseScratch(buffers: readonly Float32Array[]): void;
  /** Sums the array with every thread of the context: a probe of streaming-read bandwidth. */
  readProbe(data: Float32Array): number;
}

/** How a paged KV cache stores K and V, numbered as in native/src/paged_attention.h. */
export const NativeKvType = { f32: 0, f16: 1, bf16: 2 } as const;

/**
 * Where the addon's type tables differ from NativeWeightType / NativeScaleType, one line naming
 * the first differing entry; undefined when they agree. The two lists live on both sides of the
 * boundary, and this is what keeps them from drifting apart.
 */
export function typeTableMismatch(addon: Pick<NativeAddon, "weightTypes" | "scaleTypes">): string | undefined {
  const tables: [string, Record<string, number>, Record<string, number>][] = [
    ["weight", NativeWeightType, addon.weightTypes()],
    ["scale", NativeScaleType, addon.scaleTypes()],
  ];
  for (const [kind, ours, theirs] of tables) {
    for (const name of new Set([...Object.keys(ours), ...Object.keys(theirs)])) {
      if (ours[name] !== theirs[name]) {
        const side = (v: number | undefined): string => (v === undefined ? "absent" : String(v));
        return `${kind} type "${name}" is ${side(ours[name])} in src/kernels/native.ts but ${side(theirs[name])} in the addon`;
      }
    }
  }
  return undefined;
}

/** Where node-gyp puts the addon; TINY_LLM_ADDON points elsewhere (tests use it to simulate a failed build). */
const addonPath = process.env.TINY_LLM_ADDON ?? fileURLToPath(new URL("../../../build/Release/tiny_llm_native.node", import.meta.url));

let loaded: NativeAddon | undefined;
let loadError: string | undefined;

/** The native addon, or undefined when it did not build here or does not match (see nativeUnavailableReason). */
export function nativeKernels(): NativeAddon | undefined {
  if (loaded || loadError) return loaded;
  if (!existsSync(addonPath)) {
    loadError = `${addonPath} was not built (npm install builds it with node-gyp and a C++17 compiler)`;
    return undefined;
  }
  let addon: NativeAddon;
  try {
    addon = createRequire(import.meta.url)(addonPath) as NativeAddon;
  } catch (err) {
    loadError = `${addonPath} could not be loaded: ${(err as Error).message}`;
    return undefined;
  }
  const mismatch = typeof addon.weightTypes === "function" ? typeTableMismatch(addon) : "it has no type tables (an older build?)";
  if (mismatch) {
    loadError = `${addonPath} does not match this TypeScript build: ${mismatch} (rebuild with npm run build:native)`;
    return undefined;
  }
  loaded = addon;
  return loaded;
}

export function nativeUnavailableReason(): string | undefined {
  nativeKernels();
  return loadError;
}
