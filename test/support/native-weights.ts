/**
 * Random weights of every storage type the native kernels take, as NativeWeight views, made with
 * the TypeScript encoders (so tests need nothing from the model code that wraps the kernels).
 */
import { NativeScaleType, NativeWeightType, type NativeWeight, type NativeWeightTypeName } from "../../src/kernels/native.js";
import { AffineQuantWeight } from "../../src/tensor/affine-quant.js";
import { BlockQuantWeight } from "../../src/tensor/block-quant.js";
import { numberToBf16, numberToF16 } from "../../src/tensor/dtype.js";
import { KQuantWeight } from "../../src/tensor/k-quant.js";
import { randomTensor } from "./numeric.js";

/** Every weight type, in NativeWeightType's order. */
export const WEIGHT_TYPES = Object.keys(NativeWeightType) as NativeWeightTypeName[];

/** A random [N, K] weight of `type` (K a multiple of 256 suits every type). */
export function randomNativeWeight(type: NativeWeightTypeName, N: number, K: number, seed: number): NativeWeight {
  const values = randomTensor([N, K], seed).toFloat32Array();
  switch (type) {
    case "f32":
      return { type: NativeWeightType.f32, data: values, rows: N, cols: K };
    case "f16":
      return { type: NativeWeightType.f16, data: Uint16Array.from(values, numberToF16), rows: N, cols: K };
    case "bf16":
      return { type: NativeWeightType.bf16, data: Uint16Array.from(values, numberToBf16), rows: N, cols: K };
    case "q8_0":
    case "q4_0": {
      const w = BlockQuantWeight.quantize(type, [N, K], values);
      w.useRowLayout();
      return { type: NativeWeightType[type], data: w.data, rows: N, cols: K };
    }
    case "q4_k":
    case "q5_k":
    case "q6_k":
      return { type: NativeWeightType[type], data: KQuantWeight.quantize(type, [N, K], values).data, rows: N, cols: K };
    case "affine4":
    case "affine8": {
      const bits = type === "affine4" ? 4 : 8;
      const w = AffineQuantWeight.quantize({ bits, groupSize: 64, scaleDType: "f16" }, [N, K], values);
      const { buffer, byteOffset, byteLength } = w.packed;
      return {
        type: NativeWeightType[type],
        data: new Uint8Array(buffer, byteOffset, byteLength),
        rows: N,
        cols: K,
        scales: w.scales,
        biases: w.biases,
        scaleType: NativeScaleType[w.scaleDType],
        groupSize: w.groupSize,
      };
    }
  }
}

/** Indices of the elements where a and b differ as bits (NaN equal to NaN of the same bits). */
export function bitDifferences(a: Float32Array, b: Float32Array): number[] {
  const ua = new Uint32Array(a.buffer, a.byteOffset, a.length);
  const ub = new Uint32Array(b.buffer, b.byteOffset, b.length);
  const out: number[] = [];
  for (let i = 0; i < Math.max(a.length, b.length); i++) if (ua[i] !== ub[i]) out.push(i);
  return out;
}
