/**
 * Weight matrices kept in the type they were stored in.
 *
 * A bf16 checkpoint stays bf16 in memory (half the bytes of f32); layers ask for one decoded
 * row at a time. Every storage format (dense or quantized) implements `WeightMatrix`, so the
 * layers that use weights do not care how they are stored.
 */
import { bf16ToF32, f16ToF32 } from "./dtype.js";
import { Tensor } from "./tensor.js";

export interface WeightMatrix {
  /** Output features (rows) and input features (columns): the matrix is [rows, cols]. */
  readonly rows: number;
  readonly cols: number;
  /** Storage type, for messages and for kernels that specialise on it. */
  readonly dtype: string;
  /** Bytes of the stored matrix (data, scales and biases). */
  readonly byteLength: number;
  /** Writes row r as float32 into out[outOffset .. outOffset + cols). */
  decodeRow(r: number, out: Float32Array, outOffset?: number): void;
}

export type DenseDType = "f32" | "bf16" | "f16";

export class DenseWeight implements WeightMatrix {
  readonly rows: number;
  readonly cols: number;

  constructor(
    readonly dtype: DenseDType,
    shape: readonly [number, number],
    /** f32 values, or the raw 16-bit patterns for bf16/f16. */
    readonly data: Float32Array | Uint16Array,
  ) {
    [this.rows, this.cols] = shape;
    if (data.length !== this.rows * this.cols) {
      throw new RangeError(`weight of shape [${shape}] needs ${this.rows * this.cols} values, got ${data.length}`);
    }
    if ((dtype === "f32") !== data instanceof Float32Array) throw new TypeError(`${dtype} weight given the wrong array type`);
  }

  get byteLength(): number {
    return this.data.byteLength;
  }

  static fromTensor(t: Tensor): DenseWeight {
    if (t.ndim !== 2) throw new RangeError(`a weight matrix is 2-d, got [${t.shape}]`);
    return new DenseWeight("f32", [t.shape[0], t.shape[1]], t.toFloat32Array());
  }

  decodeRow(r: number, out: Float32Array, outOffset = 0): void {
    const start = r * this.cols;
    const row = this.data.subarray(start, start + this.cols);
    if (this.dtype === "f32") out.set(row, outOffset);
    else if (this.dtype === "bf16") bf16ToF32(row as Uint16Array, out, outOffset);
    else f16ToF32(row as Uint16Array, out, outOffset);
  }
}

/** The whole matrix as a float32 tensor (for small weights and tests; a copy for 16-bit types). */
export function weightToTensor(w: WeightMatrix): Tensor {
  const out = new Float32Array(w.rows * w.cols);
  for (let r = 0; r < w.rows; r++) w.decodeRow(r, out, r * w.cols);
  return new Tensor(out, [w.rows, w.cols]);
}
