/**
 * MLX's affine quantization (mlx.core.quantize with mode "affine", the layout mlx-lm stores
 * quantized checkpoints in): the reference TypeScript quantizer and dequantizer, and a weight
 * matrix stored in it.
 *
 * A row of `cols` values is cut into groups of `groupSize` consecutive values. Each group has a
 * scale s and a bias b, stored in the model's float type, and each value an unsigned code q of
 * `bits` bits, with w ≈ s·q + b. The codes of a row form one little-endian bit stream over 32-bit
 * words: code j occupies bits [j·bits, (j+1)·bits), so with 3, 5 or 6 bits a code can straddle two
 * words. groupSize · bits is a multiple of 32, so every group (and row) fills whole words.
 */
import { bf16ToNumber, f16ToNumber, numberToBf16, numberToF16 } from "./dtype.js";
import type { DenseDType, WeightMatrix } from "./weight.js";

/** The bit widths and group sizes MLX's affine mode supports. */
export const AFFINE_BITS: readonly number[] = [2, 3, 4, 5, 6, 8];
export const AFFINE_GROUP_SIZES: readonly number[] = [32, 64, 128];

export interface AffineParams {
  readonly bits: number;
  readonly groupSize: number;
}

/** Throws a RangeError naming the unsupported value. */
export function checkAffineParams({ bits, groupSize }: AffineParams): void {
  if (!AFFINE_BITS.includes(bits)) throw new RangeError(`affine quantization supports ${AFFINE_BITS.join(", ")} bits, not ${bits}`);
  if (!AFFINE_GROUP_SIZES.includes(groupSize)) {
    throw new RangeError(`affine quantization supports group sizes ${AFFINE_GROUP_SIZES.join(", ")}, not ${groupSize}`);
  }
}

/** Packed codes with their per-group scales and biases, the latter in `scaleDType`. */
export interface AffineQuantized {
  readonly scaleDType: DenseDType;
  readonly packed: Uint32Array;
  /** f32 values, or the raw 16-bit patterns for bf16/f16. */
  readonly scales: Float32Array | Uint16Array;
  readonly biases: Float32Array | Uint16Array;
}

/** Packs `bits`-bit codes into the little-endian bit stream (whole words; the tail is zero). */
export function packCodes(codes: ArrayLike<number>, bits: number): Uint32Array {
  const words = new Uint32Array(Math.ceil((codes.length * bits) / 32));
  for (let j = 0; j < codes.length; j++) {
    const pos = j * bits;
    const w = pos >>> 5;
    const shift = pos & 31;
    words[w] |= codes[j] << shift;
    if (shift + bits > 32) words[w + 1] |= codes[j] >>> (32 - shift);
  }
  return words;
}

/** Code j of the bit stream in `words`. */
export function unpackCode(words: Uint32Array, bits: number, j: number): number {
  const pos = j * bits;
  const w = pos >>> 5;
  const shift = pos & 31;
  let v = words[w] >>> shift;
  if (shift + bits > 32) v |= words[w + 1] << (32 - shift);
  return v & ((1 << bits) - 1);
}

const fround = Math.fround;
const EPS = fround(1e-7);

/**
 * Rounds a float32 value half to even, as C's rint does in the default rounding mode: adding
 * 1.5·2⁵² leaves a double no fraction bits, so the addition itself rounds (to even). From 2²³
 * up, float32 values are whole already.
 */
const RINT_MAGIC = 1.5 * 2 ** 52;
function rint(x: number): number {
  return Math.abs(x) < 2 ** 23 ? x + RINT_MAGIC - RINT_MAGIC : x;
}

function storeScale(dtype: DenseDType, x: number): number {
  return dtype === "f32" ? x : dtype === "bf16" ? numberToBf16(x) : numberToF16(x);
}

function loadScale(dtype: DenseDType, data: Float32Array | Uint16Array, i: number): number {
  return dtype === "f32" ? data[i] : dtype === "bf16" ? bf16ToNumber(data[i]) : f16ToNumber(data[i]);
}

function newScaleArray(dtype: DenseDType, n: number): Float32Array | Uint16Array {
  return dtype === "f32" ? new Float32Array(n) : new Uint16Array(n);
}

/**
 * Quantizes `values` (whole groups) step for step as MLX's CPU quantizer does, in float32:
 * - s₀ = max((max − min) / (2^bits − 1), 1e-7); the edge is whichever of min and max has the
 *   larger magnitude (max on a tie), and s₀ is negated when the edge is max, so the edge has
 *   code 0 and codes grow toward the other end (the docs' formula is the case edge = min);
 * - q₀ = rint(edge / s₀); when q₀ ≠ 0, s = edge / q₀ and b = edge, which makes 0.0 exactly
 *   representable (code −q₀); otherwise s = s₀ and b = 0;
 * - q = clamp(rint((w − b) / s), 0, 2^bits − 1), with s and b then rounded to `scaleDType`.
 *
 * Before that last rounding, |w − (s·q + b)| ≤ |s|/2 for every code below 2^bits − 1. Snapping s
 * can stretch the range so the far end's exact code reaches 2^bits, so values clamped to the top
 * code are within |s|.
 */
export function quantizeAffine(values: Float32Array, params: AffineParams & { scaleDType?: DenseDType }): AffineQuantized {
  checkAffineParams(params);
  const { bits, groupSize } = params;
  const scaleDType = params.scaleDType ?? "f32";
  if (values.length % groupSize !== 0)
    throw new RangeError(`affine quantization takes whole groups of ${groupSize} values, got ${values.length}`);
  const groups = values.length / groupSize;
  const top = 2 ** bits - 1;
  const scales = newScaleArray(scaleDType, groups);
  const biases = newScaleArray(scaleDType, groups);
  const codes = new Uint8Array(values.length);
  for (let g = 0; g < groups; g++) {
    const start = g * groupSize;
    let min = Infinity;
    let max = -Infinity;
    for (let j = 0; j < groupSize; j++) {
      const v = values[start + j];
      if (v < min) min = v;
      if (v > max) max = v;
    }
    const edgeIsMin = Math.abs(min) > Math.abs(max);
    const step = Math.max(fround(fround(max - min) / top), EPS);
    let scale = edgeIsMin ? step : -step;
    const edge = edgeIsMin ? min : max;
    const q0 = rint(fround(edge / scale));
    let bias = 0;
    if (q0 !== 0) {
      scale = fround(edge / q0);
      bias = edge;
    }
    for (let j = 0; j < groupSize; j++) {
      const q = rint(fround(fround(values[start + j] - bias) / scale));
      codes[start + j] = Math.min(Math.max(q, 0), top);
    }
    scales[g] = storeScale(scaleDType, scale);
    biases[g] = storeScale(scaleDType, bias);
  }
  return { scaleDType, packed: packCodes(codes, bits), scales, biases };
}

/** Decodes every value of `q`: w = s·q + b per group. */
export function dequantizeAffine(
  q: AffineQuantized,
  params: AffineParams,
  out = new Float32Array(q.scales.length * params.groupSize),
): Float32Array {
  const { bits, groupSize } = params;
  for (let g = 0; g < q.scales.length; g++) {
    const s = loadScale(q.scaleDType, q.scales, g);
    const b = loadScale(q.scaleDType, q.biases, g);
    for (let j = g * groupSize; j < (g + 1) * groupSize; j++) out[j] = s * unpackCode(q.packed, bits, j) + b;
  }
  return out;
}

/**
 * A [rows, cols] matrix in MLX's affine layout: `packed` is [rows, cols · bits / 32] words,
 * `scales` and `biases` are [rows, cols / groupSize] in their stored float type. Decoding a row
 * is also the embedding lookup, so the same weight serves as an embedding and a tied LM head.
 */
export class AffineQuantWeight implements WeightMatrix {
  readonly rows: number;
  readonly cols: number;
  readonly dtype: string;
  readonly bits: number;
  readonly groupSize: number;
  readonly scaleDType: DenseDType;
  readonly packed: Uint32Array;
  readonly scales: Float32Array | Uint16Array;
  readonly biases: Float32Array | Uint16Array;
  /** Words and groups per row. */
  readonly rowWords: number;
  readonly rowGroups: number;

  get byteLength(): number {
    return this.packed.byteLength + this.scales.byteLength + this.biases.byteLength;
  }

  constructor(params: AffineParams, shape: readonly [number, number], data: AffineQuantized) {
    checkAffineParams(params);
    ({ bits: this.bits, groupSize: this.groupSize } = params);
    [this.rows, this.cols] = shape;
    ({ scaleDType: this.scaleDType, packed: this.packed, scales: this.scales, biases: this.biases } = data);
    this.dtype = `affine${this.bits}`;
    if (this.cols % this.groupSize !== 0) {
      throw new RangeError(`an affine weight's rows hold whole groups of ${this.groupSize} values, got ${this.cols} columns`);
    }
    this.rowWords = (this.cols * this.bits) / 32;
    this.rowGroups = this.cols / this.groupSize;
    if (this.packed.length !== this.rows * this.rowWords) {
      throw new RangeError(
        `${this.dtype} weight of shape [${shape}] needs ${this.rows * this.rowWords} packed words, got ${this.packed.length}`,
      );
    }
    for (const [what, a] of [
      ["scales", this.scales],
      ["biases", this.biases],
    ] as const) {
      if (a.length !== this.rows * this.rowGroups) {
        throw new RangeError(
          `${this.dtype} weight of shape [${shape}] with group size ${this.groupSize} needs ${this.rows * this.rowGroups} ${what}, got ${a.length}`,
        );
      }
      if ((this.scaleDType === "f32") !== a instanceof Float32Array)
        throw new TypeError(`${this.scaleDType} ${what} given the wrong array type`);
    }
  }

  /** Quantizes a row-major float32 [rows, cols] matrix. */
  static quantize(
    params: AffineParams & { scaleDType?: DenseDType },
    shape: readonly [number, number],
    values: Float32Array,
  ): AffineQuantWeight {
    if (values.length !== shape[0] * shape[1])
      throw new RangeError(`shape [${shape}] needs ${shape[0] * shape[1]} values, got ${values.length}`);
    return new AffineQuantWeight(params, shape, quantizeAffine(values, params));
  }

  decodeRow(r: number, out: Float32Array, outOffset = 0): void {
    const { bits, groupSize } = this;
    const words = this.packed.subarray(r * this.rowWords, (r + 1) * this.rowWords);
    for (let g = 0; g < this.rowGroups; g++) {
      const s = loadScale(this.scaleDType, this.scales, r * this.rowGroups + g);
      const b = loadScale(this.scaleDType, this.biases, r * this.rowGroups + g);
      for (let j = g * groupSize; j < (g + 1) * groupSize; j++) out[outOffset + j] = s * unpackCode(words, bits, j) + b;
    }
  }
}
