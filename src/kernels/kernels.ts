/**
 * The one kernel interface the engine's forward pass is written against. Two implementations:
 * ts-kernels.ts (plain TypeScript, the fallback and each native kernel's oracle) and
 * native-kernels.ts (the C++ addon). Every op works in place on caller-owned typed arrays.
 *
 * Paged KV cache, one layer: K and V each [blocks, H_kv, blockSize, D] in the cache's dtype
 * (f32 values, or the raw bits of f16 / bf16). A sequence's key at position p lives in block
 * blockTable[⌊p / blockSize⌋] at offset p mod blockSize.
 */
import type { WeightMatrix } from "../tensor/weight.js";

export type KvDtype = "f32" | "f16" | "bf16";

/** One layer's paged K or V storage. */
export type KvArray = Float32Array | Uint16Array;

/**
 * The sequences of one attention call, 4 int32 each: qStart, qLen, kvLen, tableStart. Query row
 * qStart + i (i < qLen) sits at position kvLen − qLen + i and sees keys 0 … that position.
 */
export const SEQ_FIELDS = 4;

export interface Kernels<W = unknown> {
  readonly name: "ts" | "native";
  /** The form of a weight matrix this kernel set multiplies by; the matrix itself is never changed. */
  prepare(w: WeightMatrix): W;
  /** out[M, N] = x[M, K] · wᵀ + bias */
  matmul(out: Float32Array, x: Float32Array, M: number, w: W, bias: Float32Array | null): void;
  /** outs[i] = x · ws[i]ᵀ + biases[i] for up to 4 weights of the same K (q, k, v). */
  matmulMany(x: Float32Array, M: number, outs: readonly Float32Array[], ws: readonly W[], biases: readonly (Float32Array | null)[]): void;
  /** out[M, N] = silu(x · gateᵀ + gateBias) ⊙ (x · upᵀ + upBias). */
  swiglu(out: Float32Array, x: Float32Array, M: number, gate: W, gateBias: Float32Array | null, up: W, upBias: Float32Array | null): void;
  /** RMSNorm of `rows` rows of n features; out may be x. */
  rmsNorm(out: Float32Array, x: Float32Array, weight: Float32Array, rows: number, n: number, eps: number): void;
  /** Rotates x [T, heads, D] in place, row t by the angles of positions[t]. */
  rope(x: Float32Array, T: number, heads: number, D: number, positions: Int32Array, theta: number, traditional: boolean): void;
  /** Writes k, v [T, H_kv, D] into one layer's cache, token t at slot slots[t] (block · blockSize + offset). */
  storeKV(
    kCache: KvArray,
    vCache: KvArray,
    dtype: KvDtype,
    k: Float32Array,
    v: Float32Array,
    slots: Int32Array,
    T: number,
    Hkv: number,
    D: number,
    blockSize: number,
  ): void;
  /** out, q: [T, H, D]; causal attention of each sequence's query rows against its own paged K/V (see SEQ_FIELDS). */
  pagedAttention(
    out: Float32Array,
    q: Float32Array,
    kCache: KvArray,
    vCache: KvArray,
    dtype: KvDtype,
    seqs: Int32Array,
    blockTables: Int32Array,
    H: number,
    Hkv: number,
    D: number,
    blockSize: number,
    scale: number,
  ): void;
  /** Gives the pages of dead activation buffers back to the system (a no-op where it cannot). */
  releaseScratch(buffers: readonly Float32Array[]): void;
  /** Instruction set and threads, for messages. */
  info(): { isa: string; threads: number };
}

/** Bytes of one stored K or V value. */
export function kvDtypeBytes(dtype: KvDtype): number {
  return dtype === "f32" ? 4 : 2;
}
