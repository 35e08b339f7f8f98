/**
 * The kernel interface on the C++ addon: one engine context (threads, instruction set, scratch,
 * RoPE tables) per loaded model, and weights passed to C++ in their stored type without copies.
 */
import { AffineQuantWeight } from "../tensor/affine-quant.js";
import { BlockQuantWeight } from "../tensor/block-quant.js";
import { KQuantWeight } from "../tensor/k-quant.js";
import type { WeightMatrix } from "../tensor/weight.js";
import type { Kernels, KvArray, KvDtype } from "./kernels.js";
import { NativeScaleType, NativeWeightType, type NativeAddon, type NativeContext, type NativeWeight } from "./native.js";

const KV_TYPE: Record<KvDtype, number> = { f32: 0, f16: 1, bf16: 2 };

/** The native view of a weight matrix, or an error naming a storage type the kernels lack. */
export function toNativeWeight(w: WeightMatrix, addon: NativeAddon): NativeWeight {
  if (w instanceof AffineQuantWeight && (w.bits === 4 || w.bits === 8)) {
    const { buffer, byteOffset, byteLength } = w.packed;
    return {
      type: w.bits === 4 ? NativeWeightType.affine4 : NativeWeightType.affine8,
      data: new Uint8Array(buffer, byteOffset, byteLength),
      rows: w.rows,
      cols: w.cols,
      scales: w.scales,
      biases: w.biases,
      scaleType: NativeScaleType[w.scaleDType],
      groupSize: w.groupSize,
    };
  }
  if (w instanceof KQuantWeight && w.dtype !== "q8_k") {
    // The kernels read GGUF's super-blocks as they are.
    return { type: NativeWeightType[w.dtype], data: w.data, rows: w.rows, cols: w.cols };
  }
  if (w instanceof BlockQuantWeight) {
    // GGUF files load in the row layout already; a matrix in GGUF's block order gets a copy, never a change in place.
    w = w.inRowLayout((dtype, data, rows, cols) => addon.regroupRows(NativeWeightType[dtype], data, rows, cols));
  }
  const type = (NativeWeightType as Record<string, number>)[w.dtype];
  const data = (w as { data?: unknown }).data;
  if (type === undefined || !(data instanceof Float32Array || data instanceof Uint16Array || data instanceof Uint8Array)) {
    throw new Error(`the native backend has no kernel for ${w.dtype} weights; use --backend ts`);
  }
  return { type, data, rows: w.rows, cols: w.cols };
}

export class NativeKernels implements Kernels<NativeWeight> {
  readonly name = "native";
  readonly context: NativeContext;

  constructor(
    private readonly addon: NativeAddon,
    opts: { threads?: number; isa?: string; batchInvariant?: boolean } = {},
  ) {
    this.context = addon.createContext(opts);
  }

  prepare(w: WeightMatrix): NativeWeight {
    return toNativeWeight(w, this.addon);
  }

  matmul(out: Float32Array, x: Float32Array, M: number, w: NativeWeight, bias: Float32Array | null): void {
    this.context.matmul(out, x, M, w, bias);
  }

  matmulMany(
    x: Float32Array,
    M: number,
    outs: readonly Float32Array[],
    ws: readonly NativeWeight[],
    biases: readonly (Float32Array | null)[],
  ): void {
    this.context.matmulMany(x, M, outs, ws, biases);
  }

  swiglu(
    out: Float32Array,
    x: Float32Array,
    M: number,
    gate: NativeWeight,
    gateBias: Float32Array | null,
    up: NativeWeight,
    upBias: Float32Array | null,
  ): void {
    this.context.swiglu(out, x, M, gate, gateBias, up, upBias);
  }

  rmsNorm(out: Float32Array, x: Float32Array, weight: Float32Array, rows: number, n: number, eps: number): void {
    this.context.rmsNorm(out, x, weight, rows, n, eps);
  }

  rope(x: Float32Array, T: number, heads: number, D: number, positions: Int32Array, theta: number, traditional: boolean): void {
    this.context.rope(x, T, heads, D, positions, theta, traditional);
  }

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
  ): void {
    this.context.storeKV(kCache, vCache, KV_TYPE[dtype], k, v, slots, T, Hkv, D, blockSize);
  }

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
  ): void {
    this.context.pagedAttention(out, q, kCache, vCache, KV_TYPE[dtype], seqs, blockTables, H, Hkv, D, blockSize, scale);
  }

  releaseScratch(buffers: readonly Float32Array[]): void {
    this.context.releaseScratch(buffers);
  }

  info(): { isa: string; threads: number } {
    const { isa, threads } = this.context.info();
    return { isa, threads };
  }
}
