/**
 * GGML block-quantized formats Q8_0 and Q4_0: the reference TypeScript encoders and decoders,
 * and a weight matrix stored in them.
 *
 * Both formats cut a row into blocks of 32 values and store one float16 scale `d` per block:
 * - Q8_0 (34 bytes): d, then 32 int8 q; x = d·q.
 * - Q4_0 (18 bytes): d, then 16 bytes of 4-bit q; byte j holds element j in its low nibble and
 *   element j + 16 in its high nibble; x = d·(q − 8).
 *
 * The quantizers follow llama.cpp's reference rules (quantize_row_q8_0_ref, quantize_row_q4_0_ref)
 * step for step in float32 arithmetic, so they produce the same bytes as llama.cpp.
 */
import { f16ToNumber, numberToF16 } from "./dtype.js";
import type { WeightMatrix } from "./weight.js";

export type BlockQuantDType = "q8_0" | "q4_0";

/** Values per block, for both formats. */
export const QUANT_BLOCK_SIZE = 32;
export const Q8_0_BLOCK_BYTES = 2 + QUANT_BLOCK_SIZE;
export const Q4_0_BLOCK_BYTES = 2 + QUANT_BLOCK_SIZE / 2;

export function blockBytes(dtype: BlockQuantDType): number {
  return dtype === "q8_0" ? Q8_0_BLOCK_BYTES : Q4_0_BLOCK_BYTES;
}

/** Bytes of `n` values (a multiple of 32) in the format. */
export function quantizedByteLength(dtype: BlockQuantDType, n: number): number {
  checkBlockMultiple(n);
  return (n / QUANT_BLOCK_SIZE) * blockBytes(dtype);
}

const fround = Math.fround;

/**
 * Q8_0: d = amax / 127 and q = round(x / d), rounding halves away from zero as C's roundf does.
 * As in llama.cpp, q is computed from the float32 scale before it is rounded to float16.
 */
export function quantizeQ8_0(x: Float32Array): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(quantizedByteLength("q8_0", x.length));
  const view = new DataView(out.buffer);
  for (let b = 0; b * QUANT_BLOCK_SIZE < x.length; b++) {
    const start = b * QUANT_BLOCK_SIZE;
    const o = b * Q8_0_BLOCK_BYTES;
    let amax = 0;
    for (let j = 0; j < QUANT_BLOCK_SIZE; j++) amax = Math.max(amax, Math.abs(x[start + j]));
    const d = fround(amax / 127);
    const id = d ? fround(1 / d) : 0;
    view.setUint16(o, numberToF16(d), true);
    for (let j = 0; j < QUANT_BLOCK_SIZE; j++) {
      const v = fround(x[start + j] * id);
      view.setInt8(o + 2 + j, Math.sign(v) * Math.round(Math.abs(v)));
    }
  }
  return out;
}

/**
 * Q4_0: d = max / −8, where max is the signed value of largest magnitude (the first one on a
 * tie), so that value maps to q = 0; then q = min(15, trunc(x / d + 8.5)).
 */
export function quantizeQ4_0(x: Float32Array): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(quantizedByteLength("q4_0", x.length));
  const view = new DataView(out.buffer);
  const half = QUANT_BLOCK_SIZE / 2;
  for (let b = 0; b * QUANT_BLOCK_SIZE < x.length; b++) {
    const start = b * QUANT_BLOCK_SIZE;
    const o = b * Q4_0_BLOCK_BYTES;
    let amax = 0;
    let max = 0;
    for (let j = 0; j < QUANT_BLOCK_SIZE; j++) {
      const v = x[start + j];
      if (amax < Math.abs(v)) {
        amax = Math.abs(v);
        max = v;
      }
    }
    const d = fround(max / -8);
    const id = d ? fround(1 / d) : 0;
    view.setUint16(o, numberToF16(d), true);
    const q = (v: number): number => Math.min(15, Math.trunc(fround(fround(v * id) + 8.5)));
    for (let j = 0; j < half; j++) out[o + 2 + j] = q(x[start + j]) | (q(x[start + half + j]) << 4);
  }
  return out;
}

/** Decodes `blocks` (whole Q8_0 blocks) into out[outOffset ..). */
export function dequantizeQ8_0(blocks: Uint8Array, out: Float32Array, outOffset = 0): void {
  for (let o = 0, k = outOffset; o < blocks.byteLength; o += Q8_0_BLOCK_BYTES) {
    const d = f16ToNumber(blocks[o] | (blocks[o + 1] << 8));
    // The shifts sign-extend the byte to an int8.
    for (let j = 0; j < QUANT_BLOCK_SIZE; j++) out[k++] = d * ((blocks[o + 2 + j] << 24) >> 24);
  }
}

/** Decodes `blocks` (whole Q4_0 blocks) into out[outOffset ..). */
export function dequantizeQ4_0(blocks: Uint8Array, out: Float32Array, outOffset = 0): void {
  const half = QUANT_BLOCK_SIZE / 2;
  for (let o = 0, k = outOffset; o < blocks.byteLength; o += Q4_0_BLOCK_BYTES, k += QUANT_BLOCK_SIZE) {
    const d = f16ToNumber(blocks[o] | (blocks[o + 1] << 8));
    for (let j = 0; j < half; j++) {
      const byte = blocks[o + 2 + j];
      out[k + j] = d * ((byte & 0x0f) - 8);
      out[k + half + j] = d * ((byte >> 4) - 8);
    }
  }
}

export function quantize(dtype: BlockQuantDType, x: Float32Array): Uint8Array<ArrayBuffer> {
  return dtype === "q8_0" ? quantizeQ8_0(x) : quantizeQ4_0(x);
}

export function dequantize(dtype: BlockQuantDType, blocks: Uint8Array, out: Float32Array, outOffset = 0): void {
  if (dtype === "q8_0") dequantizeQ8_0(blocks, out, outOffset);
  else dequantizeQ4_0(blocks, out, outOffset);
}

/**
 * How a row's bytes are arranged in memory:
 * - "blocks": as in GGUF files, one block after another (scale, then quants);
 * - "rows": the same bytes regrouped per row, all quants first (cols int8 for Q8_0, cols / 2
 *   packed bytes for Q4_0, each block's bytes in GGUF order) and then the cols / 32 float16
 *   scales. SIMD kernels load quants and scales as aligned-in-sequence vectors from this layout.
 * Both layouts take the same number of bytes, so a row can be regrouped in place.
 */
export type BlockLayout = "blocks" | "rows";

/** Regroups `rows` rows of GGUF blocks into the "rows" layout, in place. */
export type RowRegrouper = (dtype: BlockQuantDType, data: Uint8Array, rows: number, cols: number) => void;

/** The TypeScript regrouping; the native backend passes a faster one. */
export function regroupRows(dtype: BlockQuantDType, data: Uint8Array, rows: number, cols: number): void {
  const blocks = cols / QUANT_BLOCK_SIZE;
  const bytes = blockBytes(dtype);
  const quantBytes = bytes - 2;
  const rowBytes = blocks * bytes;
  const tmp = new Uint8Array(rowBytes);
  for (let r = 0; r < rows; r++) {
    const row = data.subarray(r * rowBytes, (r + 1) * rowBytes);
    for (let b = 0; b < blocks; b++) {
      tmp.set(row.subarray(b * bytes + 2, (b + 1) * bytes), b * quantBytes);
      tmp[blocks * quantBytes + 2 * b] = row[b * bytes];
      tmp[blocks * quantBytes + 2 * b + 1] = row[b * bytes + 1];
    }
    row.set(tmp);
  }
}

/** A [rows, cols] matrix of Q8_0 or Q4_0 blocks, row-major; each row is cols / 32 blocks. */
export class BlockQuantWeight implements WeightMatrix {
  readonly rows: number;
  readonly cols: number;
  /** Bytes of one row. */
  readonly rowBytes: number;
  private currentLayout: BlockLayout = "blocks";
  /** Decoding scratch for the "rows" layout: one row in GGUF block order. */
  private scratch?: Uint8Array;

  constructor(
    readonly dtype: BlockQuantDType,
    shape: readonly [number, number],
    /** The raw bytes, exactly rows · rowBytes long, in GGUF block layout. */
    readonly data: Uint8Array,
  ) {
    [this.rows, this.cols] = shape;
    this.rowBytes = quantizedByteLength(dtype, this.cols);
    if (data.byteLength !== this.rows * this.rowBytes) {
      throw new RangeError(`${dtype} weight of shape [${shape}] needs ${this.rows * this.rowBytes} bytes, got ${data.byteLength}`);
    }
  }

  /** Quantizes a row-major float32 [rows, cols] matrix. */
  static quantize(dtype: BlockQuantDType, shape: readonly [number, number], values: Float32Array): BlockQuantWeight {
    if (values.length !== shape[0] * shape[1])
      throw new RangeError(`shape [${shape}] needs ${shape[0] * shape[1]} values, got ${values.length}`);
    return new BlockQuantWeight(dtype, shape, quantize(dtype, values));
  }

  get byteLength(): number {
    return this.data.byteLength;
  }

  get layout(): BlockLayout {
    return this.currentLayout;
  }

  /** Switches `data` to the "rows" layout in place (once); decoding keeps working. */
  useRowLayout(regroup: RowRegrouper = regroupRows): void {
    if (this.currentLayout === "rows") return;
    regroup(this.dtype, this.data, this.rows, this.cols);
    this.currentLayout = "rows";
  }

  /** This matrix in the "rows" layout: itself if it is in it already, else a regrouped copy. */
  inRowLayout(regroup: RowRegrouper = regroupRows): BlockQuantWeight {
    if (this.currentLayout === "rows") return this;
    const copy = new BlockQuantWeight(this.dtype, [this.rows, this.cols], this.data.slice());
    copy.useRowLayout(regroup);
    return copy;
  }

  decodeRow(r: number, out: Float32Array, outOffset = 0): void {
    const row = this.data.subarray(r * this.rowBytes, (r + 1) * this.rowBytes);
    if (this.currentLayout === "blocks") {
      dequantize(this.dtype, row, out, outOffset);
      return;
    }
    // Put the row back in block order, then decode it as blocks.
    const blocks = this.cols / QUANT_BLOCK_SIZE;
    const bytes = blockBytes(this.dtype);
    const quantBytes = bytes - 2;
    const tmp = (this.scratch ??= new Uint8Array(this.rowBytes));
    for (let b = 0; b < blocks; b++) {
      tmp[b * bytes] = row[blocks * quantBytes + 2 * b];
      tmp[b * bytes + 1] = row[blocks * quantBytes + 2 * b + 1];
      tmp.set(row.subarray(b * quantBytes, (b + 1) * quantBytes), b * bytes + 2);
    }
    dequantize(this.dtype, tmp, out, outOffset);
  }
}

function checkBlockMultiple(n: number): void {
  if (n % QUANT_BLOCK_SIZE !== 0) throw new RangeError(`block-quantized rows hold a multiple of ${QUANT_BLOCK_SIZE} values, got ${n}`);
}
