/**
 * Batch invariance of the native matmuls: on a batch-invariant context, row r of matmul,
 * matmulMany and swiglu is the same bits whether x has 1 row or r is one of 5, 6, 7, 9, 16, 37
 * or 64, for every weight type and every instruction set this CPU has, on 1 and 2 threads. Those
 * sizes put a row in every tile height of the one-row kernels (4 + 1, 2 and 3 rows at the end)
 * and past the thresholds where prompts of int8 weights switch to the VNNI strips and the AMX
 * int8 tiles (in both modes); swiglu's wide weight makes its per-thread row chunks depend on M.
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import {
  NativeWeightType,
  nativeKernels,
  nativeUnavailableReason,
  type NativeAddon,
  type NativeContext,
  type NativeWeight,
} from "../src/kernels/native.js";
import { randomTensor } from "./support/numeric.js";
import { WEIGHT_TYPES, bitDifferences, randomNativeWeight } from "./support/native-weights.js";

const addon = nativeKernels();
const skip = addon ? false : `native kernels unavailable: ${nativeUnavailableReason()}`;
const isas = addon ? addon.availableIsas() : [];
const SIZES = [5, 6, 7, 9, 16, 37, 64];
const MAX_M = 64;

/** Row r of each output, computed with x's row r alone (M = 1). */
function oneRowAtATime(K: number, x: Float32Array, widths: number[], run: (x: Float32Array, outs: Float32Array[]) => void): Float32Array[] {
  const full = widths.map((N) => new Float32Array(MAX_M * N));
  for (let r = 0; r < MAX_M; r++) {
    const outs = widths.map((N) => new Float32Array(N));
    run(x.subarray(r * K, (r + 1) * K), outs);
    outs.forEach((o, i) => full[i].set(o, r * widths[i]));
  }
  return full;
}

/** Asserts that running M rows at once gives each row's one-row bits, for every size. */
function assertRowsInvariant(
  what: string,
  K: number,
  widths: number[],
  ctx: NativeContext,
  reference: NativeContext,
  run: (ctx: NativeContext, x: Float32Array, M: number, outs: Float32Array[]) => void,
): void {
  const x = randomTensor([MAX_M, K], K + widths[0], 2).toFloat32Array();
  const expected = oneRowAtATime(K, x, widths, (row, outs) => run(reference, row, 1, outs));
  for (const M of SIZES) {
    const outs = widths.map((N) => new Float32Array(M * N).fill(NaN));
    run(ctx, x.subarray(0, M * K), M, outs);
    outs.forEach((out, i) => {
      const diff = bitDifferences(out, expected[i].subarray(0, M * widths[i]));
      assert.equal(
        diff.length,
        0,
        `${what}, output ${i}, M=${M}: ${diff.length} values differ from the one-row run, first row ${Math.floor(diff[0] / widths[i])}`,
      );
    });
  }
}

const matmulOf = (w: NativeWeight) => (ctx: NativeContext, x: Float32Array, M: number, outs: Float32Array[]) =>
  ctx.matmul(outs[0], x, M, w, null);

for (const isa of isas) {
  describe(`batch invariance (${isa})`, { skip }, () => {
    const a = addon as NativeAddon;
    // One-row references come from a 1-thread context; each size runs on 1 and on 2 threads.
    const reference = a.createContext({ isa, threads: 1 });
    const contexts = [reference, a.createContext({ isa, threads: 2 })];

    for (const type of WEIGHT_TYPES) {
      test(`matmul with ${type} weights: a row's bits do not depend on M or the thread count`, () => {
        // 1280 columns: 40 blocks of 32, so the VNNI strips pack a strip in pieces, the last one short.
        for (const K of [512, 1280]) {
          const w = randomNativeWeight(type, 70, K, 3);
          const bias = randomTensor([70], 4).toFloat32Array();
          for (const ctx of contexts) {
            assert.equal(ctx.info().batchInvariant, true);
            assertRowsInvariant(`${type}, K=${K}, ${ctx.info().threads} threads`, K, [70], ctx, reference, (c, x, M, outs) =>
              c.matmul(outs[0], x, M, w, bias),
            );
          }
        }
      });

      test(`swiglu with ${type} weights: a row's bits do not depend on M, the row chunks or the thread count`, () => {
        // 2100 rows: on one thread, 64 rows of x fill the per-thread buffers at 256 rows per chunk,
        // where fewer rows take 264, so chunks (and silu_mul's tails) start in different places.
        const K = 256;
        const N = 2100;
        const gate = randomNativeWeight(type, N, K, 5);
        const up = randomNativeWeight(type, N, K, 6);
        const gateBias = randomTensor([N], 7, 4).toFloat32Array();
        for (const ctx of contexts) {
          assertRowsInvariant(`${type}, ${ctx.info().threads} threads`, K, [N], ctx, reference, (c, x, M, outs) =>
            c.swiglu(outs[0], x, M, gate, gateBias, up, null),
          );
        }
      });
    }

    test("matmulMany, with one type and with mixed types: a row's bits do not depend on M or the thread count", () => {
      const K = 512;
      const groups: NativeWeight[][] = [
        ...WEIGHT_TYPES.map((t, i) => [
          randomNativeWeight(t, 70, K, 10 + i),
          randomNativeWeight(t, 33, K, 30 + i),
          randomNativeWeight(t, 17, K, 50 + i),
        ]),
        [
          randomNativeWeight("q8_0", 40, K, 1),
          randomNativeWeight("q4_k", 24, K, 2),
          randomNativeWeight("bf16", 9, K, 3),
          randomNativeWeight("affine4", 21, K, 4),
        ],
      ];
      for (const weights of groups) {
        const widths = weights.map((w) => w.rows);
        const biases = weights.map((w, i) => (i % 2 === 0 ? randomTensor([w.rows], i).toFloat32Array() : null));
        for (const ctx of contexts) {
          assertRowsInvariant(
            `types ${weights.map((w) => w.type)}, ${ctx.info().threads} threads`,
            K,
            widths,
            ctx,
            reference,
            (c, x, M, outs) => c.matmulMany(x, M, outs, weights, biases),
          );
        }
      }
    });
  });
}

// The checks above are of the batched kernels, not only the one-row ones: a batch-invariant
// context runs prompts of int8 weights on the AMX int8 tiles or, on AVX-512 (and for some sizes
// beside AMX), the VNNI strips, at the sizes tested; each kernel from some number of rows on.
const INT8_TYPES = new Set(["q8_0", "q4_0", "affine4", "affine8", "q4_k", "q5_k", "q6_k"]);
const KERNEL_ORDER = ["rows", "vnni-strips", "amx-int8"];

for (const isa of isas) {
  test(`native-kernel-plan (${isa}): which kernel a matmul of M rows runs`, { skip }, () => {
    const a = addon as NativeAddon;
    const prompt = isa === "amx" ? "amx-int8" : isa === "avx512" ? "vnni-strips" : "rows";
    for (const invariant of [true, false]) {
      const ctx = a.createContext({ isa, threads: 2, batchInvariant: invariant });
      for (const type of WEIGHT_TYPES) {
        const kernels = Array.from({ length: 256 }, (_, i) => ctx.matmulKernel(NativeWeightType[type], i + 1));
        const what = `${type}${invariant ? "" : " without batch invariance"}`;
        assert.equal(kernels[0], "rows", `${what}, M = 1`);
        if (INT8_TYPES.has(type)) {
          // rows, then the strips, then the AMX tiles: each from some M on, in both modes.
          const ranks = kernels.map((k) => KERNEL_ORDER.indexOf(k));
          assert.ok(
            ranks.every((r, i) => r >= 0 && (i === 0 || r >= ranks[i - 1])),
            `${what}: ${kernels.join(",")}`,
          );
          for (const M of [16, 37, 64, 256]) assert.equal(kernels[M - 1], prompt, `${what}, M = ${M}`);
        } else {
          const batched = isa === "amx" && !invariant && type !== "f32" ? "amx-bf16" : "rows";
          for (const M of [16, 37, 64, 256]) assert.equal(kernels[M - 1], batched, `${what}, M = ${M}`);
        }
      }
      assert.throws(() => ctx.matmulKernel(99, 1), /unknown weight type 99/);
    }
  });
}

// The check above can see a difference: without batch invariance, prompts of f16 or bf16 weights
// run on AMX bf16 tiles, which order their sums differently from the one-row kernels. (The int8
// types' batched kernels keep the one-row bits, so they run in both modes: native-kernel-plan.)
test(
  "without batch invariance, the AMX bf16 tiles give rows other bits than one-row runs",
  { skip: skip || (isas.includes("amx") ? false : "no AMX") },
  () => {
    const a = addon as NativeAddon;
    const ctx = a.createContext({ isa: "amx", threads: 1, batchInvariant: false });
    assert.equal(ctx.info().batchInvariant, false);
    const K = 512;
    const w = randomNativeWeight("bf16", 70, K, 3);
    assert.throws(
      () => assertRowsInvariant("bf16 without batch invariance", K, [70], ctx, ctx, matmulOf(w)),
      /values differ from the one-row run/,
    );
  },
);
