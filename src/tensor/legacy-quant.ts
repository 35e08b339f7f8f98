/**
 * GGML's other block formats of 32 values, Q4_1, Q5_0 and Q5_1: reference encoders and decoders,
 * and their exact re-encoding into formats the kernels multiply. llama.cpp writes Q5_0 and Q5_1
 * into Q4_K_M and Q5_K_M files for rows that are no whole number of 256-value super-blocks (as in
 * Qwen2-0.5B, 896 wide), so those downloads hold them.
 *
 * - Q4_1 (20 bytes): f16 d, f16 m, 16 bytes of 4-bit q (byte j: element j low, j + 16 high);
 *   x = d·q + m.
 * - Q5_0 (22 bytes): f16 d, 4 bytes qh (bit j: the fifth bit of element j), 16 bytes as Q4_1;
 *   x = d·(q − 16).
 * - Q5_1 (24 bytes): f16 d, f16 m, qh, 16 bytes; x = d·q + m.
 *
 * Re-encoded, with every value unchanged: Q5_0 as Q8_0 (q − 16 is an int8, the scale stays d);
 * Q4_1 and Q5_1 as MLX affine 4- and 8-bit with groups of 32 and f16 scales d and biases m.
 * Q4_1 keeps its size; Q5_0 and Q5_1 grow by half (34 and 36 bytes a block).
 *
 * The encoders follow llama.cpp's reference rules (quantize_row_q4_1_ref, _q5_0_ref, _q5_1_ref)
 * in float32 arithmetic.
 */
import { AffineQuantWeight, packCodes } from "./affine-quant.js";
import { BlockQuantWeight, Q8_0_BLOCK_BYTES, QUANT_BLOCK_SIZE } from "./block-quant.js";
import { f16ToNumber, numberToF16 } from "./dtype.js";

export type LegacyQuantDType = "q4_1" | "q5_0" | "q5_1";

export const LEGACY_BLOCK_BYTES: Readonly<Record<LegacyQuantDType, number>> = { q4_1: 20, q5_0: 22, q5_1: 24 };

const fround = Math.fround;
const HALF = QUANT_BLOCK_SIZE / 2;

/** Where a block's parts start: the scale, the min (or -1), the fifth bits (or -1), the nibbles. */
function layout(dtype: LegacyQuantDType): { m: number; qh: number; qs: number } {
  switch (dtype) {
    case "q4_1":
      return { m: 2, qh: -1, qs: 4 };
    case "q5_0":
      return { m: -1, qh: 2, qs: 6 };
    case "q5_1":
      return { m: 2, qh: 4, qs: 8 };
  }
}

/** The 32 codes of the block at byte o (0..15 or 0..31), in element order. */
function blockCodes(dtype: LegacyQuantDType, blocks: Uint8Array, o: number, codes: Uint8Array): void {
  const { qh, qs } = layout(dtype);
  const high = qh < 0 ? 0 : (blocks[o + qh] | (blocks[o + qh + 1] << 8) | (blocks[o + qh + 2] << 16) | (blocks[o + qh + 3] << 24)) >>> 0;
  for (let j = 0; j < HALF; j++) {
    const byte = blocks[o + qs + j];
    codes[j] = (byte & 0x0f) | (((high >>> j) & 1) << 4);
    codes[j + HALF] = (byte >> 4) | (((high >>> (j + HALF)) & 1) << 4);
  }
}

/** Decodes `blocks` (whole blocks of `dtype`) into out[outOffset ..). */
export function dequantizeLegacy(dtype: LegacyQuantDType, blocks: Uint8Array, out: Float32Array, outOffset = 0): void {
  const bytes = LEGACY_BLOCK_BYTES[dtype];
  const { m } = layout(dtype);
  const codes = new Uint8Array(QUANT_BLOCK_SIZE);
  for (let o = 0, k = outOffset; o < blocks.byteLength; o += bytes, k += QUANT_BLOCK_SIZE) {
    const d = f16ToNumber(blocks[o] | (blocks[o + 1] << 8));
    blockCodes(dtype, blocks, o, codes);
    if (m < 0) {
      for (let j = 0; j < QUANT_BLOCK_SIZE; j++) out[k + j] = d * (codes[j] - 16);
    } else {
      const min = f16ToNumber(blocks[o + m] | (blocks[o + m + 1] << 8));
      for (let j = 0; j < QUANT_BLOCK_SIZE; j++) out[k + j] = fround(d * codes[j]) + min;
    }
  }
}

/** Encodes x (a multiple of 32 values) in `dtype`. */
export function quantizeLegacy(dtype: LegacyQuantDType, x: Float32Array): Uint8Array<ArrayBuffer> {
  if (x.length % QUANT_BLOCK_SIZE !== 0) throw new RangeError(`${dtype} holds whole blocks of ${QUANT_BLOCK_SIZE} values, got ${x.length}`);
  const bytes = LEGACY_BLOCK_BYTES[dtype];
  const { m, qh, qs } = layout(dtype);
  const out = new Uint8Array((x.length / QUANT_BLOCK_SIZE) * bytes);
  const view = new DataView(out.buffer);
  const codes = new Uint8Array(QUANT_BLOCK_SIZE);
  for (let b = 0; b * QUANT_BLOCK_SIZE < x.length; b++) {
    const v = x.subarray(b * QUANT_BLOCK_SIZE, (b + 1) * QUANT_BLOCK_SIZE);
    const o = b * bytes;
    if (dtype === "q5_0") {
      // d = max / −16 for the signed value of largest magnitude, q = min(31, trunc(x / d + 16.5)).
      let amax = 0;
      let max = 0;
      for (const value of v) {
        if (amax < Math.abs(value)) {
          amax = Math.abs(value);
          max = value;
        }
      }
      const d = fround(max / -16);
      const id = d ? fround(1 / d) : 0;
      view.setUint16(o, numberToF16(d), true);
      v.forEach((value, j) => (codes[j] = Math.min(31, Math.trunc(fround(fround(value * id) + 16.5)))));
    } else {
      // d = (max − min) / (2^bits − 1), q = trunc((x − min) / d + 0.5), the min stored as m.
      let min = Infinity;
      let max = -Infinity;
      for (const value of v) {
        min = Math.min(min, value);
        max = Math.max(max, value);
      }
      const levels = dtype === "q4_1" ? 15 : 31;
      const d = fround((max - min) / levels);
      const id = d ? fround(1 / d) : 0;
      view.setUint16(o, numberToF16(d), true);
      view.setUint16(o + m, numberToF16(min), true);
      v.forEach((value, j) => (codes[j] = Math.min(levels, Math.trunc(fround(fround(fround(value - min) * id) + 0.5)))));
    }
    let high = 0;
    for (let j = 0; j < HALF; j++) {
      out[o + qs + j] = (codes[j] & 0x0f) | ((codes[j + HALF] & 0x0f) << 4);
      high |= ((codes[j] >> 4) << j) | ((codes[j + HALF] >> 4) << (j + HALF));
    }
    if (qh >= 0) view.setUint32(o + qh, high >>> 0, true);
  }
  return out;
}

/**
 * A [rows, cols] matrix stored in `dtype` (GGUF block layout), re-encoded exactly: Q5_0 as Q8_0,
 * Q4_1 and Q5_1 as MLX affine 4- and 8-bit weights with groups of 32.
 */
export function reencodeLegacy(
  dtype: LegacyQuantDType,
  shape: readonly [number, number],
  data: Uint8Array,
): BlockQuantWeight | AffineQuantWeight {
  const [rows, cols] = shape;
  const bytes = LEGACY_BLOCK_BYTES[dtype];
  const blocks = (rows * cols) / QUANT_BLOCK_SIZE;
  if (cols % QUANT_BLOCK_SIZE !== 0 || data.byteLength !== blocks * bytes) {
    throw new RangeError(
      `${dtype} weight of shape [${shape}] needs ${blocks * bytes} bytes in whole rows of blocks, got ${data.byteLength}`,
    );
  }
  const codes = new Uint8Array(QUANT_BLOCK_SIZE);
  if (dtype === "q5_0") {
    const out = new Uint8Array(blocks * Q8_0_BLOCK_BYTES);
    for (let b = 0; b < blocks; b++) {
      const o = b * bytes;
      const p = b * Q8_0_BLOCK_BYTES;
      out[p] = data[o];
      out[p + 1] = data[o + 1];
      blockCodes(dtype, data, o, codes);
      for (let j = 0; j < QUANT_BLOCK_SIZE; j++) out[p + 2 + j] = (codes[j] - 16) & 0xff;
    }
    return new BlockQuantWeight("q8_0", shape, out);
  }
  const bits = dtype === "q4_1" ? 4 : 8;
  const all = new Uint8Array(rows * cols);
  const scales = new Uint16Array(blocks);
  const biases = new Uint16Array(blocks);
  for (let b = 0; b < blocks; b++) {
    const o = b * bytes;
    scales[b] = data[o] | (data[o + 1] << 8);
    biases[b] = data[o + 2] | (data[o + 3] << 8);
    blockCodes(dtype, data, o, codes);
    all.set(codes, b * QUANT_BLOCK_SIZE);
  }
  return new AffineQuantWeight({ bits, groupSize: QUANT_BLOCK_SIZE }, shape, {
    scaleDType: "f16",
    packed: packCodes(all, bits),
    scales,
    biases,
  });
}
