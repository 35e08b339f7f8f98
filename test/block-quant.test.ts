import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { Random } from "../src/generation/random.js";
import {
  BlockQuantWeight,
  Q4_0_BLOCK_BYTES,
  Q8_0_BLOCK_BYTES,
  QUANT_BLOCK_SIZE,
  dequantize,
  dequantizeQ4_0,
  dequantizeQ8_0,
  quantize,
  quantizeQ4_0,
  quantizeQ8_0,
  type BlockQuantDType,
} from "../src/tensor/block-quant.js";
import { f16ToNumber, numberToF16 } from "../src/tensor/dtype.js";

/** One block of 32 values, the given ones first and zeros after. */
function block(values: Record<number, number>): Float32Array {
  const x = new Float32Array(QUANT_BLOCK_SIZE);
  for (const [i, v] of Object.entries(values)) x[Number(i)] = v;
  return x;
}

function decode(dtype: BlockQuantDType, bytes: Uint8Array): Float32Array {
  const out = new Float32Array((bytes.byteLength / (dtype === "q8_0" ? Q8_0_BLOCK_BYTES : Q4_0_BLOCK_BYTES)) * QUANT_BLOCK_SIZE);
  dequantize(dtype, bytes, out);
  return out;
}

/** Blocks of seeded uniform values in [-scale, scale), a different scale per block, plus edge-case blocks. */
function testData(seed: number): Float32Array {
  const rng = new Random(seed);
  const blocks: Float32Array[] = [];
  for (const scale of [1, 1e-3, 37, 0.25, 5e3]) {
    blocks.push(Float32Array.from({ length: QUANT_BLOCK_SIZE }, () => (rng.next() * 2 - 1) * scale));
  }
  blocks.push(new Float32Array(QUANT_BLOCK_SIZE)); // all zero: d = 0
  blocks.push(new Float32Array(QUANT_BLOCK_SIZE).fill(-3)); // constant
  blocks.push(block({ 0: -1, 5: 1, 9: 0.97, 20: -0.5 })); // both signs at the largest magnitude
  const x = new Float32Array(blocks.length * QUANT_BLOCK_SIZE);
  blocks.forEach((b, i) => x.set(b, i * QUANT_BLOCK_SIZE));
  return x;
}

describe("block sizes", () => {
  test("Q8_0 blocks are 34 bytes and Q4_0 blocks 18, for 32 values each", () => {
    assert.equal(QUANT_BLOCK_SIZE, 32);
    assert.equal(Q8_0_BLOCK_BYTES, 34);
    assert.equal(Q4_0_BLOCK_BYTES, 18);
    assert.equal(quantizeQ8_0(new Float32Array(96)).byteLength, 3 * 34);
    assert.equal(quantizeQ4_0(new Float32Array(96)).byteLength, 3 * 18);
  });

  test("a length that is not whole blocks is refused", () => {
    assert.throws(() => quantizeQ8_0(new Float32Array(33)), RangeError);
    assert.throws(() => quantizeQ4_0(new Float32Array(16)), RangeError);
  });
});

describe("hand-built blocks decode to hand-computed values", () => {
  test("Q8_0: x = d·q with q a signed byte", () => {
    const bytes = new Uint8Array(Q8_0_BLOCK_BYTES);
    bytes.set([0x00, 0x38]); // d = 0.5 as little-endian float16
    bytes.set([0x80, 0x7f, 0xff, 0x02], 2); // q = -128, 127, -1, 2, then zeros
    const x = decode("q8_0", bytes);
    assert.deepEqual(Array.from(x.subarray(0, 5)), [-64, 63.5, -0.5, 1, 0]);
  });

  test("Q4_0: byte j holds element j in its low nibble and element j + 16 in its high nibble; x = d·(q − 8)", () => {
    const bytes = new Uint8Array(Q4_0_BLOCK_BYTES).fill(0x99); // q = 9 everywhere
    bytes.set([0x00, 0xc0]); // d = -2
    bytes[2] = 0x1f; // element 0: q = 15, element 16: q = 1
    bytes[2 + 15] = 0xa0; // element 15: q = 0, element 31: q = 10
    const x = decode("q4_0", bytes);
    assert.equal(x[0], -14);
    assert.equal(x[16], 14);
    assert.equal(x[15], 16);
    assert.equal(x[31], -4);
    assert.equal(x[1], -2);
    assert.equal(x[17], -2);
  });

  test("decoding writes at the offset and leaves the rest of the output alone", () => {
    const bytes = quantizeQ8_0(block({ 0: 127, 1: -1 }));
    const out = new Float32Array(QUANT_BLOCK_SIZE + 3).fill(9);
    dequantizeQ8_0(bytes, out, 2);
    assert.deepEqual(Array.from(out.subarray(0, 5)), [9, 9, 127, -1, 0]);
    assert.equal(out[QUANT_BLOCK_SIZE + 2], 9);
    const out4 = new Float32Array(QUANT_BLOCK_SIZE + 1).fill(9);
    dequantizeQ4_0(quantizeQ4_0(block({ 0: -8 })), out4, 1);
    assert.deepEqual([out4[0], out4[1]], [9, -8]);
  });
});

describe("quantizers follow llama.cpp's reference rules", () => {
  test("Q8_0: d = amax / 127 and q rounds halves away from zero", () => {
    const bytes = quantizeQ8_0(block({ 0: 127, 1: 2.5, 2: -2.5, 3: 0.5, 4: -0.5, 5: 1.4999, 6: -127, 7: 3.5 }));
    assert.equal(f16ToNumber(bytes[0] | (bytes[1] << 8)), 1);
    const q = Array.from(new Int8Array(bytes.buffer, 2, 8));
    assert.deepEqual(q, [127, 3, -3, 1, -1, 1, -127, 4]);
  });

  test("Q8_0: q comes from the float32 scale, which is then stored as float16", () => {
    // amax = 1 gives d = 1/127, which float16 rounds down by 0.006%: 126.497·d is q = 126 with
    // the float32 scale but would be 127 with the float16 one.
    const bytes = quantizeQ8_0(block({ 0: 1, 1: 0.5, 2: 126.497 / 127 }));
    assert.equal(bytes[0] | (bytes[1] << 8), numberToF16(1 / 127));
    assert.deepEqual(Array.from(new Int8Array(bytes.buffer, 2, 3)), [127, 64, 126]);
  });

  test("Q4_0: d = max / −8 for the signed value of largest magnitude, q = min(15, trunc(x/d + 8.5))", () => {
    const bytes = quantizeQ4_0(block({ 0: -8, 1: 7.5, 3: 0.5, 4: -0.5, 5: 0.49, 6: -7.6, 16: 3, 17: -3 }));
    assert.equal(f16ToNumber(bytes[0] | (bytes[1] << 8)), 1);
    // q: element 0 → 0, 1 → 15 (16 clamped), 2 → 8, 3 → 9, 4 → 8 (truncation, not rounding), 5 → 8,
    // 6 → 0, 16 → 11, 17 → 5, the rest (zeros) → 8.
    const expected = new Array<number>(16).fill(0x88);
    expected.splice(0, 7, 0xb0, 0x5f, 0x88, 0x89, 0x88, 0x88, 0x80);
    assert.deepEqual(Array.from(bytes.subarray(2)), expected);
  });

  test("Q4_0: on a magnitude tie the first value sets the sign of d", () => {
    const first = quantizeQ4_0(block({ 0: 8, 1: -8 }));
    const second = quantizeQ4_0(block({ 0: -8, 1: 8 }));
    assert.equal(f16ToNumber(first[0] | (first[1] << 8)), -1);
    assert.equal(f16ToNumber(second[0] | (second[1] << 8)), 1);
    // The first value is exact; the opposite one is clamped to q = 15, one step short.
    assert.deepEqual(Array.from(decode("q4_0", first).subarray(0, 2)), [8, -7]);
    assert.deepEqual(Array.from(decode("q4_0", second).subarray(0, 2)), [-8, 7]);
  });

  test("an all-zero block has d = 0 (−0 for Q4_0, as 0 / −8 is in C) and decodes to zeros", () => {
    const q8 = quantize("q8_0", new Float32Array(QUANT_BLOCK_SIZE));
    const q4 = quantize("q4_0", new Float32Array(QUANT_BLOCK_SIZE));
    assert.equal(q8[0] | (q8[1] << 8), 0x0000);
    assert.equal(q4[0] | (q4[1] << 8), 0x8000);
    assert.ok(decode("q8_0", q8).every((v) => v === 0));
    assert.ok(decode("q4_0", q4).every((v) => v === 0));
  });
});

describe("round trips stay within the format's error bound", () => {
  const x = testData(7);

  /** Per block: the float32 scale d the quantizer computes and the float16 scale it stores. */
  function scales(dtype: BlockQuantDType, b: number): { d: number; stored: number } {
    const values = x.subarray(b * QUANT_BLOCK_SIZE, (b + 1) * QUANT_BLOCK_SIZE);
    let max = 0;
    for (const v of values) if (Math.abs(v) > Math.abs(max)) max = v;
    const d = Math.abs(dtype === "q8_0" ? Math.fround(Math.abs(max) / 127) : Math.fround(max / -8));
    return { d, stored: Math.abs(f16ToNumber(numberToF16(d))) };
  }

  // Q8_0: q = round(x/d) leaves |x − q·d| ≤ d/2; decoding with the float16 scale d16 adds
  // |q|·|d − d16| ≤ 127·|d − d16| (about 0.06·d, float16 being good to 2^-11).
  test("Q8_0: |x − x̂| ≤ d/2 + 127·|d − d16| in every block", () => {
    const y = decode("q8_0", quantizeQ8_0(x));
    for (let b = 0; b * QUANT_BLOCK_SIZE < x.length; b++) {
      const { d, stored } = scales("q8_0", b);
      const bound = d / 2 + 127 * Math.abs(d - stored) + 1e-6 * d;
      for (let j = b * QUANT_BLOCK_SIZE; j < (b + 1) * QUANT_BLOCK_SIZE; j++) {
        assert.ok(Math.abs(x[j] - y[j]) <= bound, `block ${b}, element ${j}: |${x[j]} − ${y[j]}| > ${bound}`);
      }
    }
  });

  // Q4_0: with |d| = amax/8, x/d lies in [−8, 8] and q − 8 = x/d rounded half up, so the error is
  // ≤ |d|/2, except where x/d ≥ 7.5 (the opposite sign to max, near amax): q = 16 is clamped to
  // 15 and the error reaches |d|. The float16 scale adds |q − 8|·|d − d16| ≤ 8·|d − d16|.
  test("Q4_0: |x − x̂| ≤ |d|/2 + 8·|d − d16|, or |d| + 8·|d − d16| where q is clamped", () => {
    const y = decode("q4_0", quantizeQ4_0(x));
    let clamped = 0;
    for (let b = 0; b * QUANT_BLOCK_SIZE < x.length; b++) {
      const { d, stored } = scales("q4_0", b);
      const slack = 8 * Math.abs(d - stored) + 1e-6 * d;
      let max = 0;
      for (let j = b * QUANT_BLOCK_SIZE; j < (b + 1) * QUANT_BLOCK_SIZE; j++) if (Math.abs(x[j]) > Math.abs(max)) max = x[j];
      for (let j = b * QUANT_BLOCK_SIZE; j < (b + 1) * QUANT_BLOCK_SIZE; j++) {
        const clamps = (-8 * x[j]) / max >= 7.5;
        if (clamps) clamped++;
        const bound = (clamps ? d : d / 2) + slack;
        assert.ok(Math.abs(x[j] - y[j]) <= bound, `block ${b}, element ${j}: |${x[j]} − ${y[j]}| > ${bound}`);
      }
    }
    assert.ok(clamped > 0, "the data should exercise the clamped case");
  });

  test("decoding and re-encoding quantized values gives the same bytes", () => {
    for (const dtype of ["q8_0", "q4_0"] as const) {
      const bytes = quantize(dtype, x);
      assert.deepEqual(quantize(dtype, decode(dtype, bytes)), bytes, dtype);
    }
  });
});

describe("BlockQuantWeight", () => {
  const rows = 3;
  const cols = 64;
  const values = testData(11).subarray(0, rows * cols);

  for (const dtype of ["q8_0", "q4_0"] as const) {
    test(`${dtype}: decodeRow gives each row's blocks, decoded, at the offset`, () => {
      const w = BlockQuantWeight.quantize(dtype, [rows, cols], values);
      assert.equal(w.dtype, dtype);
      assert.deepEqual([w.rows, w.cols], [rows, cols]);
      assert.equal(w.data.byteLength, rows * (cols / 32) * (dtype === "q8_0" ? 34 : 18));
      const all = decode(dtype, quantize(dtype, values));
      for (let r = 0; r < rows; r++) {
        const out = new Float32Array(cols + 1);
        w.decodeRow(r, out, 1);
        assert.deepEqual(out.subarray(1), all.subarray(r * cols, (r + 1) * cols), `row ${r}`);
      }
    });
  }

  test("the data must be exactly rows × blocks per row, and cols whole blocks", () => {
    assert.throws(() => new BlockQuantWeight("q8_0", [2, 32], new Uint8Array(34)), /needs 68 bytes, got 34/);
    assert.throws(() => new BlockQuantWeight("q4_0", [1, 48], new Uint8Array(27)), /multiple of 32/);
  });
});

describe("BlockQuantWeight row layout", () => {
  for (const dtype of ["q8_0", "q4_0"] as const) {
    test(`${dtype}: regrouping rows in place keeps every decoded value and puts scales after quants`, () => {
      const [rows, cols] = [3, 96];
      const values = Float32Array.from({ length: rows * cols }, (_, i) => Math.sin(i * 0.37) * (1 + (i % 7)));
      const w = BlockQuantWeight.quantize(dtype, [rows, cols], values);
      const before = new Float32Array(rows * cols);
      for (let r = 0; r < rows; r++) w.decodeRow(r, before, r * cols);
      const blocksCopy = w.data.slice();
      w.useRowLayout();
      assert.equal(w.layout, "rows");
      assert.notDeepEqual(w.data, blocksCopy);
      const after = new Float32Array(rows * cols);
      for (let r = 0; r < rows; r++) w.decodeRow(r, after, r * cols);
      assert.deepEqual(after, before);
      // Row 1's first scale sits right after its quants, and equals block 0's scale in GGUF order.
      const quantBytes = dtype === "q8_0" ? cols : cols / 2;
      assert.equal(w.data[w.rowBytes + quantBytes], blocksCopy[w.rowBytes]);
      assert.equal(w.data[w.rowBytes + quantBytes + 1], blocksCopy[w.rowBytes + 1]);
      const regrouped = w.data.slice();
      w.useRowLayout();
      assert.deepEqual(w.data, regrouped, "a second call is a no-op");
    });
  }
});
