import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { Random } from "../src/generation/random.js";
import { Embedding } from "../src/layers/embedding.js";
import { Linear } from "../src/layers/linear.js";
import {
  AFFINE_BITS,
  AFFINE_GROUP_SIZES,
  AffineQuantWeight,
  dequantizeAffine,
  packCodes,
  quantizeAffine,
  unpackCode,
  type AffineQuantized,
} from "../src/tensor/affine-quant.js";
import { bf16ToNumber, f16ToNumber } from "../src/tensor/dtype.js";
import { Tensor } from "../src/tensor/tensor.js";
import { DenseWeight, weightToTensor, type DenseDType } from "../src/tensor/weight.js";
import { assertClose, randomTensor } from "./support/numeric.js";

const hex = (words: Uint32Array): string[] => [...words].map((w) => "0x" + w.toString(16).padStart(8, "0"));

describe("bit packing (a little-endian bit stream over 32-bit words)", () => {
  test("4 bits: the first code takes the 4 lowest bits", () => {
    assert.deepEqual(hex(packCodes([1, 2, 3, 4, 5, 6, 7, 8], 4)), ["0x87654321"]);
    const words = Uint32Array.of(0x87654321, 0x0000000f);
    assert.deepEqual(
      [...Array(9).keys()].map((j) => unpackCode(words, 4, j)),
      [1, 2, 3, 4, 5, 6, 7, 8, 15],
    );
  });

  test("8 bits: four codes per word, lowest byte first", () => {
    assert.deepEqual(hex(packCodes([0x11, 0x22, 0x33, 0x44, 0xff], 8)), ["0x44332211", "0x000000ff"]);
    assert.equal(unpackCode(Uint32Array.of(0x44332211), 8, 2), 0x33);
  });

  test("2 bits: sixteen codes per word", () => {
    assert.deepEqual(hex(packCodes([3, 0, 1, 2, ...Array(12).fill(0)], 2)), ["0x00000093"]);
  });

  test("3 bits: code 10 straddles words, low two bits at the top of word 0", () => {
    const codes = Array(32).fill(0);
    codes[10] = 0b101;
    assert.deepEqual(hex(packCodes(codes, 3)), ["0x40000000", "0x00000001", "0x00000000"]);
    assert.equal(unpackCode(Uint32Array.of(0x40000000, 1, 0), 3, 10), 0b101);
    // Within a word's bytes this is MLX's 3-bit layout: code 2 is byte 0's top two bits and byte 1's lowest bit.
    codes.fill(0);
    codes[2] = 0b111;
    assert.deepEqual(hex(packCodes(codes, 3).subarray(0, 1)), ["0x000001c0"]);
  });

  test("6 bits: code 5 straddles words", () => {
    const codes = Array(16).fill(0);
    codes[5] = 0b111110;
    assert.deepEqual(hex(packCodes(codes, 6)), ["0x80000000", "0x0000000f", "0x00000000"]);
    assert.equal(unpackCode(Uint32Array.of(0x80000000, 0xf, 0), 6, 5), 0b111110);
  });

  for (const bits of AFFINE_BITS) {
    test(`${bits} bits: random codes survive pack and unpack`, () => {
      const rng = new Random(bits);
      const codes = Array.from({ length: 128 }, () => rng.nextUint32() % 2 ** bits);
      const words = packCodes(codes, bits);
      assert.equal(words.length, (128 * bits) / 32);
      assert.deepEqual(
        codes.map((_, j) => unpackCode(words, bits, j)),
        codes,
      );
    });
  }
});

function scaleAt(q: AffineQuantized, which: "scales" | "biases", g: number): number {
  const v = q[which][g];
  return q.scaleDType === "f32" ? v : q.scaleDType === "bf16" ? bf16ToNumber(v) : f16ToNumber(v);
}

/** Relative rounding of float32 scales and biases to the stored type, doubled for slack. */
const STORAGE_ROUNDING: Record<DenseDType, number> = { f32: 0, bf16: 2 ** -8, f16: 2 ** -10 };

/**
 * The worst |w − ŵ| / bound over `values`, where the bound is derived from MLX's rules: |s|/2 for
 * codes below the top, |s| for the top code (the far end of the range can be clamped), plus what
 * rounding s and b to the stored type adds (q·|s| and |b| times its relative error), plus float32
 * arithmetic slack. Returns a ratio, so ≤ 1 means within the bound.
 */
function worstErrorRatio(values: Float32Array, q: AffineQuantized, bits: number, groupSize: number): number {
  const decoded = dequantizeAffine(q, { bits, groupSize });
  const top = 2 ** bits - 1;
  const u = STORAGE_ROUNDING[q.scaleDType];
  let worst = 0;
  for (let i = 0; i < values.length; i++) {
    const g = Math.floor(i / groupSize);
    const s = Math.abs(scaleAt(q, "scales", g));
    const b = Math.abs(scaleAt(q, "biases", g));
    const code = unpackCode(q.packed, bits, i);
    const base = (code === top ? 1 : 0.5) * s * (1 + u);
    const bound = base + code * s * u + b * u + 1e-6 * (Math.abs(values[i]) + b + top * s);
    worst = Math.max(worst, Math.abs(values[i] - decoded[i]) / bound);
  }
  return worst;
}

describe("quantizeAffine follows MLX's rules", () => {
  test("the edge of larger magnitude is the bias: min with a positive scale, max with a negative one", () => {
    const up = quantizeAffine(Float32Array.of(-1, 0.5, ...Array(30).fill(0)), { bits: 4, groupSize: 32 });
    assert.equal(scaleAt(up, "biases", 0), -1);
    assert.ok(Math.abs(scaleAt(up, "scales", 0) - 0.1) < 1e-6);
    assert.deepEqual(
      [0, 1, 2].map((j) => unpackCode(up.packed, 4, j)),
      [0, 15, 10],
    );

    const down = quantizeAffine(Float32Array.of(1, -0.5, ...Array(30).fill(0)), { bits: 4, groupSize: 32 });
    assert.equal(scaleAt(down, "biases", 0), 1);
    assert.ok(Math.abs(scaleAt(down, "scales", 0) + 0.1) < 1e-6);
    assert.deepEqual(
      [0, 1, 2].map((j) => unpackCode(down.packed, 4, j)),
      [0, 15, 10],
    );
  });

  test("the scale snaps so the edge / scale is a whole number, which can clamp the far end by up to a whole step", () => {
    // s₀ = 1.95 / 15 = 0.13; edge / s₀ = −7.7 rounds to −8, so s = 1/8 and 0.95 needs code 15.6.
    const q = quantizeAffine(Float32Array.of(-1, 0.95, ...Array(30).fill(0)), { bits: 4, groupSize: 32 });
    assert.equal(scaleAt(q, "scales", 0), 0.125);
    assert.equal(unpackCode(q.packed, 4, 1), 15);
    const decoded = dequantizeAffine(q, { bits: 4, groupSize: 32 });
    assert.equal(decoded[0], -1); // the edge is exact
    assert.equal(decoded[2], 0); // so is zero: code 8
    const err = Math.abs(decoded[1] - 0.95);
    assert.ok(err > 0.125 / 2 && err <= 0.125, `error ${err} is between s/2 and s`);
  });

  test("halves round to even, as rint does", () => {
    // min −1.875, max 0: s = 1/8 and b = −1.875, all exact; −0.9375 is 7.5 steps up, −1.0625 is 6.5.
    const q = quantizeAffine(Float32Array.of(-1.875, -0.9375, -1.0625, ...Array(29).fill(0)), { bits: 4, groupSize: 32 });
    assert.equal(scaleAt(q, "scales", 0), 0.125);
    assert.equal(scaleAt(q, "biases", 0), -1.875);
    assert.deepEqual(
      [0, 1, 2, 3].map((j) => unpackCode(q.packed, 4, j)),
      [0, 8, 6, 15],
    );
  });

  test("all-zero and constant groups decode exactly, however large the constant", () => {
    const x = new Float32Array(96);
    x.fill(-0.375, 32, 64);
    x.fill(3e8, 64);
    for (const bits of [2, 4, 8]) {
      const q = quantizeAffine(x, { bits, groupSize: 32 });
      assert.deepEqual([...dequantizeAffine(q, { bits, groupSize: 32 })], [...x]);
    }
  });

  for (const bits of AFFINE_BITS)
    for (const groupSize of AFFINE_GROUP_SIZES) {
      test(`${bits} bits, groups of ${groupSize}: every value is within the derived bound, and codes below the top within |s|/2`, () => {
        const x = randomTensor([16 * groupSize], bits * 1000 + groupSize).toFloat32Array();
        // Groups of very different magnitudes and one sign only.
        for (let i = 0; i < x.length; i++) x[i] *= [1, 1e-3, 40, 0.02][Math.floor(i / groupSize) % 4];
        for (let i = 5 * groupSize; i < 6 * groupSize; i++) x[i] = Math.abs(x[i]) + 0.5;
        const q = quantizeAffine(x, { bits, groupSize });
        assert.equal(q.packed.length, (x.length * bits) / 32);
        assert.equal(q.scales.length, 16);
        const ratio = worstErrorRatio(x, q, bits, groupSize);
        assert.ok(ratio <= 1, `worst error is ${ratio.toFixed(3)} × the bound`);
        // The bound is tight enough to matter: errors use a good part of it.
        assert.ok(ratio > 0.5, `worst error is only ${ratio.toFixed(3)} × the bound`);
      });
    }

  for (const scaleDType of ["bf16", "f16"] as const) {
    test(`scales and biases stored as ${scaleDType} keep that type and stay within the bound with their rounding`, () => {
      const x = randomTensor([4 * 64], 7, 3).toFloat32Array();
      const q = quantizeAffine(x, { bits: 8, groupSize: 64, scaleDType });
      assert.ok(q.scales instanceof Uint16Array && q.biases instanceof Uint16Array);
      assert.ok(worstErrorRatio(x, q, 8, 64) <= 1);
    });
  }

  test("parameters MLX does not support are refused", () => {
    assert.throws(() => quantizeAffine(new Float32Array(64), { bits: 7, groupSize: 64 }), /supports 2, 3, 4, 5, 6, 8 bits, not 7/);
    assert.throws(() => quantizeAffine(new Float32Array(64), { bits: 4, groupSize: 16 }), /group sizes 32, 64, 128, not 16/);
    assert.throws(() => quantizeAffine(new Float32Array(48), { bits: 4, groupSize: 32 }), /whole groups of 32/);
  });
});

describe("AffineQuantWeight", () => {
  const rows = 6;
  const cols = 96;
  const values = randomTensor([rows, cols], 42, 0.5);

  test("decodes each row as dequantizeAffine does, named by its bits", () => {
    for (const bits of [3, 4, 8]) {
      const w = AffineQuantWeight.quantize({ bits, groupSize: 32 }, [rows, cols], values.toFloat32Array());
      assert.equal(w.dtype, `affine${bits}`);
      assert.equal(w.packed.length, (rows * cols * bits) / 32);
      const all = dequantizeAffine(w, w);
      assert.deepEqual([...weightToTensor(w).toFloat32Array()], [...all]);
      const row = new Float32Array(cols + 2);
      w.decodeRow(4, row, 2);
      assert.deepEqual([...row.subarray(2)], [...all.subarray(4 * cols, 5 * cols)]);
    }
  });

  test("keeps 16-bit scales and biases as they are stored", () => {
    const q = quantizeAffine(values.toFloat32Array(), { bits: 4, groupSize: 32, scaleDType: "bf16" });
    const w = new AffineQuantWeight({ bits: 4, groupSize: 32 }, [rows, cols], q);
    assert.equal(w.scales, q.scales);
    assert.equal(w.biases, q.biases);
    assert.equal(w.scaleDType, "bf16");
  });

  test("rejects shapes and arrays that do not fit", () => {
    const q = quantizeAffine(values.toFloat32Array(), { bits: 4, groupSize: 32 });
    assert.throws(() => new AffineQuantWeight({ bits: 4, groupSize: 32 }, [rows + 1, cols], q), /needs 84 packed words, got 72/);
    assert.throws(() => new AffineQuantWeight({ bits: 8, groupSize: 32 }, [rows / 2, cols], q), /needs 9 scales, got 18/);
    assert.throws(() => new AffineQuantWeight({ bits: 4, groupSize: 64 }, [rows, cols], q), /whole groups of 64 values, got 96 columns/);
    assert.throws(() => new AffineQuantWeight({ bits: 4, groupSize: 32 }, [rows, cols], { ...q, scaleDType: "bf16" }), /wrong array type/);
    assert.throws(() => new AffineQuantWeight({ bits: 1, groupSize: 32 }, [rows, cols], q), /not 1/);
  });

  test("as an embedding, a lookup is the row; as a tied LM head, logits match the dequantized matrix", () => {
    const V = 40;
    const E = 64;
    const table = randomTensor([V, E], 3);
    const w = AffineQuantWeight.quantize({ bits: 4, groupSize: 64 }, [V, E], table.toFloat32Array());
    const dense = DenseWeight.fromTensor(weightToTensor(w));
    const embed = new Embedding(w);
    const ids = [[7, 0, 39]];
    assertClose(embed.forward(ids), new Embedding(dense).forward(ids), 0, "embedding rows");
    const h = randomTensor([1, 2, E], 9);
    const logits = embed.asLinear(h);
    assert.deepEqual(logits.shape, [1, 2, V]);
    assertClose(logits, new Linear(dense).forward(h), 1e-5, "tied head logits");
    assert.throws(() => embed.forward([[V]]), /outside the vocabulary/);
  });

  test("a Linear layer runs on it like on any weight", () => {
    const w = AffineQuantWeight.quantize({ bits: 8, groupSize: 32 }, [rows, cols], values.toFloat32Array());
    const x = new Tensor(randomTensor([2, cols], 5).toFloat32Array(), [2, cols]);
    assertClose(new Linear(w).forward(x), new Linear(DenseWeight.fromTensor(values)).forward(x), 0.02, "8-bit linear");
  });
});
