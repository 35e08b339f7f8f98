/**
 * GGML's k-quant formats Q4_K, Q5_K, Q6_K and Q8_K: the reference TypeScript decoders and
 * encoders, and a weight matrix stored in them.
 *
 * Each format cuts a row into super-blocks of QK_K = 256 values. Q4_K to Q6_K split a
 * super-block into sub-blocks with small integer scales, which float16 super-block scales scale
 * in turn. Byte layout of one block (all values little-endian):
 *
 * - Q4_K, 144 bytes: f16 d @0, f16 dmin @2, 12 bytes of packed scales @4, 128 bytes of 4-bit q
 *   @16. Eight sub-blocks of 32 values, each with a 6-bit scale sc and a 6-bit min m:
 *   x = d·sc·q − dmin·m. The quants come in four 64-value chunks of 32 bytes; byte l of chunk c
 *   holds value 64c + l in its low nibble and value 64c + 32 + l in its high nibble, so the low
 *   nibbles are sub-block 2c and the high nibbles sub-block 2c + 1.
 * - Q5_K, 176 bytes: d @0, dmin @2 and the scales @4 as Q4_K, then 32 bytes qh @16 and 128 bytes
 *   of low nibbles @48 arranged as Q4_K's quants. Bit 2c of qh[l] is the fifth bit of value
 *   64c + l and bit 2c + 1 that of value 64c + 32 + l. x = d·sc·q − dmin·m, q in 0..31.
 * - Q6_K, 210 bytes: 128 bytes ql @0, 64 bytes qh @128, 16 int8 scales @192, f16 d @208.
 *   Sixteen sub-blocks of 16 values: x = d·sc·(q − 32), q in 0..63. Each 128-value half uses 64
 *   ql bytes and 32 qh bytes: value 32k + l of the half (k < 4, l < 32) takes its low four bits
 *   from ql[l + 32·(k mod 2)] (the low nibble for k < 2, the high one for k ≥ 2) and its high two
 *   bits from bits 2k and 2k + 1 of qh[l].
 * - Q8_K, 292 bytes: f32 d @0, 256 int8 q @4, then 16 int16 sums of each run of 16 q @260 (dot
 *   products with other k-quants use them); x = d·q.
 *
 * Q4_K and Q5_K pack their eight 6-bit scales and mins into 12 bytes: for sub-block j < 4 the
 * scale is the low six bits of byte j and the min those of byte j + 4; for j ≥ 4 the scale is the
 * low nibble of byte j + 4 with the top two bits of byte j − 4 above it, and the min is the high
 * nibble of byte j + 4 with the top two bits of byte j above it.
 *
 * The decoders give exactly the float32 values of ggml's dequantize_row_q*_K. In Q4_K to Q6_K a
 * float16 scale times integers of at most 12 bits is exact in float32; what remains (the
 * subtraction of Q4_K and Q5_K, Q8_K's one product) is a single operation, which double
 * arithmetic rounded to float32 gets exactly right.
 */
import { f16ToNumber, numberToF16 } from "./dtype.js";
import type { WeightMatrix } from "./weight.js";

export type KQuantDType = "q4_k" | "q5_k" | "q6_k" | "q8_k";

/** Values per super-block, for every k-quant format. */
export const QK_K = 256;
export const Q4_K_BLOCK_BYTES = 2 + 2 + 12 + QK_K / 2;
export const Q5_K_BLOCK_BYTES = 2 + 2 + 12 + QK_K / 8 + QK_K / 2;
export const Q6_K_BLOCK_BYTES = QK_K / 2 + QK_K / 4 + QK_K / 16 + 2;
export const Q8_K_BLOCK_BYTES = 4 + QK_K + 2 * (QK_K / 16);

const BLOCK_BYTES: Readonly<Record<KQuantDType, number>> = {
  q4_k: Q4_K_BLOCK_BYTES,
  q5_k: Q5_K_BLOCK_BYTES,
  q6_k: Q6_K_BLOCK_BYTES,
  q8_k: Q8_K_BLOCK_BYTES,
};

/** Bytes of `n` values (a multiple of 256) in the format. */
export function kQuantByteLength(dtype: KQuantDType, n: number): number {
  if (n % QK_K !== 0) throw new RangeError(`k-quant rows hold a multiple of ${QK_K} values, got ${n}`);
  return (n / QK_K) * BLOCK_BYTES[dtype];
}

// ---------------------------------------------------------------------------------------------
// Decoders

/** Sub-block j's 6-bit scale and min from the 12 packed bytes at `at` (Q4_K and Q5_K). */
function scaleMin(b: Uint8Array, at: number, j: number): [number, number] {
  if (j < 4) return [b[at + j] & 63, b[at + j + 4] & 63];
  return [(b[at + j + 4] & 0x0f) | ((b[at + j - 4] >> 6) << 4), (b[at + j + 4] >> 4) | ((b[at + j] >> 6) << 4)];
}

const f16At = (b: Uint8Array, at: number): number => f16ToNumber(b[at] | (b[at + 1] << 8));
/** A byte as an int8: the shifts sign-extend it. */
const int8 = (byte: number): number => (byte << 24) >> 24;

/** Decodes `blocks` (whole Q4_K blocks) into out[outOffset ..). */
export function dequantizeQ4_K(blocks: Uint8Array, out: Float32Array, outOffset = 0): void {
  for (let o = 0, y = outOffset; o + Q4_K_BLOCK_BYTES <= blocks.byteLength; o += Q4_K_BLOCK_BYTES) {
    const d = f16At(blocks, o);
    const dmin = f16At(blocks, o + 2);
    for (let c = 0; c < 4; c++) {
      const [sc1, m1] = scaleMin(blocks, o + 4, 2 * c);
      const [sc2, m2] = scaleMin(blocks, o + 4, 2 * c + 1);
      const d1 = d * sc1;
      const d2 = d * sc2;
      const q = o + 16 + 32 * c;
      for (let l = 0; l < 32; l++) out[y++] = d1 * (blocks[q + l] & 0x0f) - dmin * m1;
      for (let l = 0; l < 32; l++) out[y++] = d2 * (blocks[q + l] >> 4) - dmin * m2;
    }
  }
}

/** Decodes `blocks` (whole Q5_K blocks) into out[outOffset ..). */
export function dequantizeQ5_K(blocks: Uint8Array, out: Float32Array, outOffset = 0): void {
  for (let o = 0, y = outOffset; o + Q5_K_BLOCK_BYTES <= blocks.byteLength; o += Q5_K_BLOCK_BYTES) {
    const d = f16At(blocks, o);
    const dmin = f16At(blocks, o + 2);
    const qh = o + 16;
    for (let c = 0; c < 4; c++) {
      const [sc1, m1] = scaleMin(blocks, o + 4, 2 * c);
      const [sc2, m2] = scaleMin(blocks, o + 4, 2 * c + 1);
      const d1 = d * sc1;
      const d2 = d * sc2;
      const ql = o + 48 + 32 * c;
      for (let l = 0; l < 32; l++) out[y++] = d1 * ((blocks[ql + l] & 0x0f) | (((blocks[qh + l] >> (2 * c)) & 1) << 4)) - dmin * m1;
      for (let l = 0; l < 32; l++) out[y++] = d2 * ((blocks[ql + l] >> 4) | (((blocks[qh + l] >> (2 * c + 1)) & 1) << 4)) - dmin * m2;
    }
  }
}

/** Decodes `blocks` (whole Q6_K blocks) into out[outOffset ..). */
export function dequantizeQ6_K(blocks: Uint8Array, out: Float32Array, outOffset = 0): void {
  for (let o = 0, y = outOffset; o + Q6_K_BLOCK_BYTES <= blocks.byteLength; o += Q6_K_BLOCK_BYTES, y += QK_K) {
    const d = f16At(blocks, o + 208);
    for (let half = 0; half < 2; half++) {
      const ql = o + 64 * half;
      const qh = o + 128 + 32 * half;
      const sc = o + 192 + 8 * half;
      const base = y + 128 * half;
      for (let l = 0; l < 32; l++) {
        const h = blocks[qh + l];
        const lo = blocks[ql + l];
        const hi = blocks[ql + l + 32];
        // Value 32k + l of the half has scale 2k + l / 16.
        const s = sc + (l >> 4);
        out[base + l] = d * int8(blocks[s]) * (((lo & 0x0f) | ((h & 3) << 4)) - 32);
        out[base + l + 32] = d * int8(blocks[s + 2]) * (((hi & 0x0f) | (((h >> 2) & 3) << 4)) - 32);
        out[base + l + 64] = d * int8(blocks[s + 4]) * (((lo >> 4) | (((h >> 4) & 3) << 4)) - 32);
        out[base + l + 96] = d * int8(blocks[s + 6]) * (((hi >> 4) | (((h >> 6) & 3) << 4)) - 32);
      }
    }
  }
}

/** Decodes `blocks` (whole Q8_K blocks) into out[outOffset ..). */
export function dequantizeQ8_K(blocks: Uint8Array, out: Float32Array, outOffset = 0): void {
  const view = new DataView(blocks.buffer, blocks.byteOffset, blocks.byteLength);
  for (let o = 0, y = outOffset; o + Q8_K_BLOCK_BYTES <= blocks.byteLength; o += Q8_K_BLOCK_BYTES) {
    const d = view.getFloat32(o, true);
    for (let j = 0; j < QK_K; j++) out[y++] = d * view.getInt8(o + 4 + j);
  }
}

export function dequantizeK(dtype: KQuantDType, blocks: Uint8Array, out: Float32Array, outOffset = 0): void {
  switch (dtype) {
    case "q4_k":
      return dequantizeQ4_K(blocks, out, outOffset);
    case "q5_k":
      return dequantizeQ5_K(blocks, out, outOffset);
    case "q6_k":
      return dequantizeQ6_K(blocks, out, outOffset);
    case "q8_k":
      return dequantizeQ8_K(blocks, out, outOffset);
  }
}

// ---------------------------------------------------------------------------------------------
// Encoders

// Adding 1.5·2^52 leaves no fraction bits, so the float64 sum is v rounded to an integer,
// halves to even; several times faster than Math.round with a tie fix-up.
const ROUNDER = 1.5 * 2 ** 52;

/** Rounds to the nearest integer, halves to even, as ggml's nearest_int does (|v| < 2^51). */
export function nearestInt(v: number): number {
  return v + ROUNDER - ROUNDER;
}

function clamp(v: number, lo: number, hi: number): number {
  return v < lo ? lo : v > hi ? hi : v;
}

// The sub-block fits spread the values over the levels with the plain range-to-levels scale
// stretched by each of these many levels, fit the best scale (and offset) to each assignment by
// least squares, and keep the fit with the smallest squared error. llama.cpp searches the same
// way with 16 to 21 finer steps and error weights; on random data these 5 get within 1% of the
// error of 21 steps at a quarter of the cost, and 5% below a single unstretched fit.
const STRETCHES = [-0.8, -0.4, 0, 0.4, 0.8];

/**
 * Fits x[start .. start + n) ≈ scale·L − min with integers L in [0, nmax], min ≥ 0 and
 * scale ≥ 0 (Q4_K's and Q5_K's sub-block model); returns [scale, min].
 */
function fitScaleMin(x: Float32Array, start: number, n: number, nmax: number): [number, number] {
  let lo = 0; // the offset never goes above zero, so the min stays non-negative
  let hi = -Infinity;
  let sx = 0;
  let sxx = 0;
  for (let i = start; i < start + n; i++) {
    const v = x[i];
    if (v < lo) lo = v;
    if (v > hi) hi = v;
    sx += v;
    sxx += v * v;
  }
  if (!(hi > lo)) return [0, -lo];
  let best: [number, number] = [(hi - lo) / nmax, -lo];
  let bestError = Infinity;
  for (const stretch of STRETCHES) {
    const iscale = (nmax + stretch) / (hi - lo);
    let sl = 0;
    let sll = 0;
    let sxl = 0;
    for (let i = start; i < start + n; i++) {
      const l = clamp(nearestInt(iscale * (x[i] - lo)), 0, nmax);
      sl += l;
      sll += l * l;
      sxl += x[i] * l;
    }
    // Least squares for x ≈ a·L + b, with b clamped to ≤ 0.
    const det = n * sll - sl * sl;
    if (!(det > 0)) continue;
    let a = (n * sxl - sx * sl) / det;
    let b = (sll * sx - sl * sxl) / det;
    if (b > 0) {
      b = 0;
      a = sxl / sll;
    }
    if (!(a > 0)) continue;
    const error = a * a * sll + 2 * a * b * sl + n * b * b - 2 * a * sxl - 2 * b * sx + sxx;
    if (error < bestError) {
      bestError = error;
      best = [a, -b];
    }
  }
  return best;
}

/**
 * Fits x[start .. start + n) ≈ scale·L with integers L in [−32, 31] (Q6_K's sub-block model);
 * returns the scale, which is negative when the value of largest magnitude is positive, so that
 * value can take the level −32.
 */
function fitScale(x: Float32Array, start: number, n: number): number {
  let amax = 0;
  let max = 0;
  let sxx = 0;
  for (let i = start; i < start + n; i++) {
    const v = x[i];
    const a = v < 0 ? -v : v;
    if (a > amax) {
      amax = a;
      max = v;
    }
    sxx += v * v;
  }
  if (amax === 0) return 0;
  let best = max / -32;
  let bestError = Infinity;
  for (const stretch of STRETCHES) {
    const iscale = -(32 + stretch) / max;
    let sll = 0;
    let sxl = 0;
    for (let i = start; i < start + n; i++) {
      const l = clamp(nearestInt(iscale * x[i]), -32, 31);
      sll += l * l;
      sxl += x[i] * l;
    }
    if (sll === 0) continue;
    const error = sxx - (sxl * sxl) / sll;
    if (error < bestError) {
      bestError = error;
      best = sxl / sll;
    }
  }
  return best;
}

/**
 * Q4_K and Q5_K, which differ only in nmax (15 or 31) and in how the quants are packed. Each
 * sub-block of 32 gets a least-squares scale and min (fitScaleMin); the super-block's d and dmin
 * are the largest scale and min over 63, the 6-bit levels are the nearest multiples of those,
 * and the quants are computed again from the stored (float16-rounded) scales, as llama.cpp's
 * reference quantizer does.
 */
function quantizeScaleMinK(x: Float32Array, dtype: "q4_k" | "q5_k"): Uint8Array<ArrayBuffer> {
  const nmax = dtype === "q4_k" ? 15 : 31;
  const bytes = BLOCK_BYTES[dtype];
  const out = new Uint8Array(kQuantByteLength(dtype, x.length));
  const L = new Uint8Array(QK_K);
  const scales = new Float64Array(8);
  const mins = new Float64Array(8);
  for (let start = 0, o = 0; start < x.length; start += QK_K, o += bytes) {
    for (let j = 0; j < 8; j++) [scales[j], mins[j]] = fitScaleMin(x, start + 32 * j, 32, nmax);
    // Starting from +0 keeps an all-zero block's d and dmin +0 rather than −0.
    const maxScale = Math.max(0, ...scales);
    const maxMin = Math.max(0, ...mins);
    const inverseScale = maxScale > 0 ? 63 / maxScale : 0;
    const inverseMin = maxMin > 0 ? 63 / maxMin : 0;
    for (let j = 0; j < 8; j++) {
      const ls = Math.min(63, nearestInt(inverseScale * scales[j]));
      const lm = Math.min(63, nearestInt(inverseMin * mins[j]));
      if (j < 4) {
        out[o + 4 + j] = ls;
        out[o + 8 + j] = lm;
      } else {
        out[o + 8 + j] = (ls & 0x0f) | ((lm & 0x0f) << 4);
        out[o + j] |= (ls >> 4) << 6;
        out[o + 4 + j] |= (lm >> 4) << 6;
      }
    }
    const dBits = numberToF16(maxScale / 63);
    const dminBits = numberToF16(maxMin / 63);
    out[o] = dBits & 0xff;
    out[o + 1] = dBits >> 8;
    out[o + 2] = dminBits & 0xff;
    out[o + 3] = dminBits >> 8;
    const d = f16ToNumber(dBits);
    const dmin = f16ToNumber(dminBits);
    for (let j = 0; j < 8; j++) {
      const [sc, m] = scaleMin(out, o + 4, j);
      const step = d * sc;
      const offset = dmin * m;
      for (let i = 0; i < 32; i++) {
        L[32 * j + i] = step === 0 ? 0 : clamp(nearestInt((x[start + 32 * j + i] + offset) / step), 0, nmax);
      }
    }
    // Q5_K's fifth bits, then the low nibbles of both formats: chunk c's byte l holds values
    // 64c + l and 64c + 32 + l.
    const qs = dtype === "q4_k" ? o + 16 : o + 48;
    for (let c = 0; c < 4; c++) {
      for (let l = 0; l < 32; l++) {
        const a = L[64 * c + l];
        const b = L[64 * c + 32 + l];
        out[qs + 32 * c + l] = (a & 0x0f) | ((b & 0x0f) << 4);
        if (dtype === "q5_k") out[o + 16 + l] |= ((a >> 4) << (2 * c)) | ((b >> 4) << (2 * c + 1));
      }
    }
  }
  return out;
}

// Relative RMS errors below are measured on uniform and on Gaussian random data.

/** Q4_K: 4.5 bits per value; relative RMS error 5.5% (uniform), 7.1% (Gaussian); Q4_0's: 6.5%, 8.5%. */
export function quantizeQ4_K(x: Float32Array): Uint8Array<ArrayBuffer> {
  return quantizeScaleMinK(x, "q4_k");
}

/** Q5_K: 5.5 bits per value; relative RMS error 2.7% (uniform), 3.6% (Gaussian). */
export function quantizeQ5_K(x: Float32Array): Uint8Array<ArrayBuffer> {
  return quantizeScaleMinK(x, "q5_k");
}

/**
 * Q6_K: 6.5625 bits per value; relative RMS error 1.3% (uniform), 1.7% (Gaussian). Each
 * sub-block of 16 gets a least-squares scale (fitScale); the super-block's d maps the scale of
 * largest magnitude to the int8 −128, each scale becomes the nearest int8 multiple of d, and the
 * quants are computed again from the stored scales, as llama.cpp's reference quantizer does.
 */
export function quantizeQ6_K(x: Float32Array): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(kQuantByteLength("q6_k", x.length));
  const L = new Uint8Array(QK_K);
  const scales = new Float64Array(16);
  for (let start = 0, o = 0; start < x.length; start += QK_K, o += Q6_K_BLOCK_BYTES) {
    let maxScale = 0;
    for (let j = 0; j < 16; j++) {
      scales[j] = fitScale(x, start + 16 * j, 16);
      if (Math.abs(scales[j]) > Math.abs(maxScale)) maxScale = scales[j];
    }
    // An all-zero block stays all zero bytes: d = 0.
    if (maxScale === 0) continue;
    const iscale = -128 / maxScale;
    const dBits = numberToF16(1 / iscale);
    out[o + 208] = dBits & 0xff;
    out[o + 209] = dBits >> 8;
    const d = f16ToNumber(dBits);
    for (let j = 0; j < 16; j++) {
      const sc = Math.min(127, nearestInt(iscale * scales[j]));
      out[o + 192 + j] = sc & 0xff;
      const step = d * sc;
      for (let i = 0; i < 16; i++) {
        L[16 * j + i] = step === 0 ? 32 : clamp(nearestInt(x[start + 16 * j + i] / step), -32, 31) + 32;
      }
    }
    for (let half = 0; half < 2; half++) {
      const v = 128 * half;
      for (let l = 0; l < 32; l++) {
        const q0 = L[v + l];
        const q1 = L[v + l + 32];
        const q2 = L[v + l + 64];
        const q3 = L[v + l + 96];
        out[o + 64 * half + l] = (q0 & 0x0f) | ((q2 & 0x0f) << 4);
        out[o + 64 * half + l + 32] = (q1 & 0x0f) | ((q3 & 0x0f) << 4);
        out[o + 128 + 32 * half + l] = (q0 >> 4) | ((q1 >> 4) << 2) | ((q2 >> 4) << 4) | ((q3 >> 4) << 6);
      }
    }
  }
  return out;
}

const fround = Math.fround;

/**
 * Q8_K, following llama.cpp's quantize_row_q8_K_ref step for step in float32 arithmetic (so it
 * writes the same bytes): the value of largest magnitude maps to q = −127 through
 * iscale = −127 / max, q = min(127, nearest(iscale·x)), and d = 1 / iscale. Relative RMS error
 * 0.4% (uniform), 0.7% (Gaussian).
 */
export function quantizeQ8_K(x: Float32Array): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(kQuantByteLength("q8_k", x.length));
  const view = new DataView(out.buffer);
  for (let start = 0, o = 0; start < x.length; start += QK_K, o += Q8_K_BLOCK_BYTES) {
    let amax = 0;
    let max = 0;
    for (let j = 0; j < QK_K; j++) {
      const ax = Math.abs(x[start + j]);
      if (ax > amax) {
        amax = ax;
        max = x[start + j];
      }
    }
    // An all-zero block stays all zero bytes.
    if (amax === 0) continue;
    const iscale = fround(-127 / max);
    for (let j = 0; j < QK_K; j++) view.setInt8(o + 4 + j, Math.min(127, nearestInt(fround(iscale * x[start + j]))));
    for (let g = 0; g < QK_K / 16; g++) {
      let sum = 0;
      for (let j = 0; j < 16; j++) sum += view.getInt8(o + 4 + 16 * g + j);
      view.setInt16(o + 4 + QK_K + 2 * g, sum, true);
    }
    view.setFloat32(o, 1 / iscale, true);
  }
  return out;
}

export function quantizeK(dtype: KQuantDType, x: Float32Array): Uint8Array<ArrayBuffer> {
  switch (dtype) {
    case "q4_k":
      return quantizeQ4_K(x);
    case "q5_k":
      return quantizeQ5_K(x);
    case "q6_k":
      return quantizeQ6_K(x);
    case "q8_k":
      return quantizeQ8_K(x);
  }
}

/** A [rows, cols] matrix of k-quant blocks as GGUF stores it: row-major, cols / 256 blocks a row. */
export class KQuantWeight implements WeightMatrix {
  readonly rows: number;
  readonly cols: number;
  /** Bytes of one row. */
  readonly rowBytes: number;

  constructor(
    readonly dtype: KQuantDType,
    shape: readonly [number, number],
    /** The raw blocks, exactly rows · rowBytes long. */
    readonly data: Uint8Array,
  ) {
    [this.rows, this.cols] = shape;
    if (this.cols % QK_K !== 0)
      throw new RangeError(`a ${dtype} weight needs rows of a multiple of ${QK_K} values; shape [${shape}] has ${this.cols}`);
    this.rowBytes = kQuantByteLength(dtype, this.cols);
    if (data.byteLength !== this.rows * this.rowBytes) {
      throw new RangeError(`${dtype} weight of shape [${shape}] needs ${this.rows * this.rowBytes} bytes, got ${data.byteLength}`);
    }
  }

  get byteLength(): number {
    return this.data.byteLength;
  }

  /** Quantizes a row-major float32 [rows, cols] matrix. */
  static quantize(dtype: KQuantDType, shape: readonly [number, number], values: Float32Array): KQuantWeight {
    if (values.length !== shape[0] * shape[1])
      throw new RangeError(`shape [${shape}] needs ${shape[0] * shape[1]} values, got ${values.length}`);
    return new KQuantWeight(dtype, shape, quantizeK(dtype, values));
  }

  decodeRow(r: number, out: Float32Array, outOffset = 0): void {
    dequantizeK(this.dtype, this.data.subarray(r * this.rowBytes, (r + 1) * this.rowBytes), out, outOffset);
  }
}
