/**
 * Every native kernel against the week-1 TypeScript op on random inputs, for each instruction
 * set this CPU offers (AMX, AVX-512, AVX2, portable scalar), including awkward shapes. The
 * contexts here are not batch-invariant, so prompts-sized M reach the batched kernels (AMX tiles,
 * VNNI strips) as well as the one-row ones; native-batch-invariance.test.ts covers the other mode.
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
import { Linear } from "../src/layers/linear.js";
import { RMSNorm } from "../src/layers/rms-norm.js";
import { RoPE } from "../src/layers/rope.js";
import { numberToBf16, numberToF16 } from "../src/tensor/dtype.js";
import { mul, silu } from "../src/tensor/ops.js";
import { Tensor } from "../src/tensor/tensor.js";
import { toNativeWeight } from "../src/kernels/native-kernels.js";
import { AffineQuantWeight } from "../src/tensor/affine-quant.js";
import { BlockQuantWeight } from "../src/tensor/block-quant.js";
import { KQuantWeight } from "../src/tensor/k-quant.js";
import { DenseWeight, weightToTensor, type DenseDType, type WeightMatrix } from "../src/tensor/weight.js";
import { assertClose, randomTensor } from "./support/numeric.js";

const native = nativeKernels();
const skip = native ? false : `native kernels unavailable: ${nativeUnavailableReason()}`;
const isas = native ? native.availableIsas() : [];
/** A context on one ISA with the batched prompt kernels allowed. */
const contextFor = (isa: string, threads = 0): NativeContext =>
  (native as NativeAddon).createContext({ isa, threads, batchInvariant: false });

/** Relative tolerance for f32 kernels: they sum in a different order than the float64 reference. */
const F32_TOL = 1e-5;

function relClose(actual: Float32Array, expected: Float32Array, relTol: number, what: string): void {
  let scale = 0;
  for (const v of expected) scale = Math.max(scale, Math.abs(v));
  assertClose(new Tensor(actual, [actual.length]), new Tensor(expected, [expected.length]), relTol * Math.max(scale, 1), what);
}

/**
 * x as the int8 kernels quantize it, as float64: per span (a block of 32; a k-quant super-block of
 * 256) d = f32(amax / 127), codes round(f32(x · f32(1 / d))) with ties to even, value code · d.
 */
function quantizedX(xs: Float32Array, span: number): Float64Array {
  const out = new Float64Array(xs.length);
  for (let b = 0; b < xs.length; b += span) {
    let amax = 0;
    for (let j = b; j < b + span; j++) amax = Math.max(amax, Math.abs(xs[j]));
    const d = Math.fround(amax / 127);
    const id = d !== 0 ? Math.fround(1 / d) : 0;
    for (let j = b; j < b + span; j++) {
      const v = Math.fround(xs[j] * id);
      const r = Math.abs(v % 1) === 0.5 ? 2 * Math.round(v / 2) : Math.round(v);
      out[j] = r * d;
    }
  }
  return out;
}

/** Asserts |out − expected| ≤ bound(xs, wf, m, n) + slack for every output, with x and w as f32. */
function assertPerOutput(
  out: Float32Array,
  expected: Float32Array,
  x: Tensor,
  w: WeightMatrix,
  what: string,
  bound: (xs: Float32Array, wf: Float32Array, m: number, n: number, K: number) => number,
  slack: number,
): void {
  const [M, K] = x.shape;
  const N = w.rows;
  const xs = x.toFloat32Array();
  const wf = weightToTensor(w).toFloat32Array();
  for (let m = 0; m < M; m++) {
    for (let n = 0; n < N; n++) {
      const b = bound(xs, wf, m, n, K);
      const err = Math.abs(out[m * N + n] - expected[m * N + n]);
      assert.ok(err <= b + slack, `${what} [${m},${n}]: error ${err} > bound ${b}`);
    }
  }
}

/**
 * Quantized-weight kernels quantize x to int8 with one scale per `span` values (a block of 32; a
 * super-block of 256 for k-quants), which moves each x by at most amax/254 of its span: out[m, n]
 * may differ from the reference by Σ |w| · amax / 254. (With AMX, x and the decoded weights are
 * rounded to bf16 instead: at most 2^-8 of each product.)
 */
function assertWithinQuantBound(out: Float32Array, expected: Float32Array, x: Tensor, w: WeightMatrix, what: string, span = 32): void {
  const bound = (xs: Float32Array, wf: Float32Array, m: number, n: number, K: number): number => {
    let sum = 0;
    for (let b = 0; b < K / span; b++) {
      let amax = 0;
      for (let j = 0; j < span; j++) amax = Math.max(amax, Math.abs(xs[m * K + b * span + j]));
      for (let j = 0; j < span; j++) sum += (Math.abs(wf[n * K + b * span + j]) * amax) / 254;
    }
    return sum * 1.01;
  };
  assertPerOutput(out, expected, x, w, what, bound, 1e-4);
}

/**
 * With AMX, f16 and bf16 weights meet x split into three bf16 parts (24 significant bits) and
 * f16 weights are split exactly too; the terms left out are near 2^-26 of each product, so
 * out[m, n] may differ by Σ |w| · |x| / 2^20 (with room for f32 summation).
 */
function assertWithinSplitBf16Bound(out: Float32Array, expected: Float32Array, x: Tensor, w: WeightMatrix, what: string): void {
  const bound = (xs: Float32Array, wf: Float32Array, m: number, n: number, K: number): number => {
    let sum = 0;
    for (let k = 0; k < K; k++) sum += Math.abs(wf[n * K + k] * xs[m * K + k]) / 2 ** 20;
    return sum;
  };
  assertPerOutput(out, expected, x, w, what, bound, 1e-6);
}

function denseWeight(dtype: "f32" | "bf16" | "f16", t: Tensor): { ref: DenseWeight; native: NativeWeight } {
  const values = t.toFloat32Array();
  const data = dtype === "f32" ? values : Uint16Array.from(values, dtype === "bf16" ? numberToBf16 : numberToF16);
  const ref = new DenseWeight(dtype, [t.shape[0], t.shape[1]], data);
  return { ref, native: { type: NativeWeightType[dtype], data, rows: t.shape[0], cols: t.shape[1] } };
}

for (const isa of isas) {
  describe(`native kernels (${isa})`, { skip }, () => {
    const k = native ? contextFor(isa) : (undefined as unknown as NativeContext);
    const addon = native as NativeAddon;
    const useIsa = (): void => assert.equal(k.info().isa, isa);

    for (const dtype of ["f32", "bf16", "f16"] as const) {
      test(`matmul with ${dtype} weights equals Linear, for awkward shapes`, () => {
        useIsa();
        // [M, K, N]: one row, sizes off the vector width, tails in every dimension, a long K.
        for (const [M, K, N] of [
          [1, 64, 32],
          [1, 37, 5],
          [3, 100, 13],
          [5, 17, 9],
          [7, 129, 66],
          [1, 4099, 7],
          [16, 96, 40],
          [9, 37, 33],
          [33, 100, 70],
        ]) {
          const w = denseWeight(dtype, randomTensor([N, K], M * 1000 + K));
          const bias = randomTensor([N], 7);
          const x = randomTensor([M, K], K);
          const expected = new Linear(w.ref, bias).forward(x).toFloat32Array();
          const out = new Float32Array(M * N);
          k.matmul(out, x.toFloat32Array(), M, w.native, bias.toFloat32Array());
          const what = `${dtype} M=${M} K=${K} N=${N}`;
          if (isa === "amx" && dtype !== "f32") assertWithinSplitBf16Bound(out, expected, x, w.ref, what);
          else relClose(out, expected, F32_TOL * Math.sqrt(K), what);
        }
      });
    }

    for (const dtype of ["q8_0", "q4_0"] as const) {
      test(`matmul with ${dtype} weights equals Linear on the dequantized weights, within the activation-quantization bound`, () => {
        useIsa();
        // K from one block to a group tail with an odd block count, and a long K.
        for (const [M, K, N] of [
          [1, 32, 5],
          [1, 96, 9],
          [3, 544, 13],
          [6, 1024, 7],
          [1, 4128, 4],
          [17, 64, 33],
          [40, 96, 65],
          // Batched shapes: rows of x off the passes of 8 and N off the strips of 16 rows.
          [8, 160, 16],
          [19, 896, 21],
          [33, 4128, 3],
        ]) {
          const values = randomTensor([N, K], M * 100 + K).toFloat32Array();
          const ref = BlockQuantWeight.quantize(dtype, [N, K], values);
          const w = BlockQuantWeight.quantize(dtype, [N, K], values);
          w.useRowLayout((d, data, rows, cols) => addon.regroupRows(NativeWeightType[d], data, rows, cols));
          const x = randomTensor([M, K], K + 1, 3);
          const bias = randomTensor([N], 3);
          const expected = new Linear(ref, bias).forward(x).toFloat32Array();
          const out = new Float32Array(M * N);
          k.matmul(out, x.toFloat32Array(), M, { type: NativeWeightType[dtype], data: w.data, rows: N, cols: K }, bias.toFloat32Array());
          assertWithinQuantBound(out, expected, x, ref, `${dtype} M=${M} K=${K} N=${N}`);
        }
      });
    }

    for (const dtype of ["q4_k", "q5_k", "q6_k"] as const) {
      test(`matmul with ${dtype} weights equals Linear, within the activation-quantization bound`, () => {
        useIsa();
        // K from one super-block to a long K with an odd count; N off the tile width.
        for (const [M, K, N] of [
          [1, 256, 5],
          [3, 512, 7],
          [9, 256, 13],
          [1, 4096 + 256, 6],
          [3, 4096 + 256, 3],
          [9, 512, 1],
          [20, 512, 35],
          [13, 4096 + 256, 17],
        ]) {
          const w = KQuantWeight.quantize(dtype, [N, K], randomTensor([N, K], M * 100 + K).toFloat32Array());
          const x = randomTensor([M, K], K + 3, 3);
          const bias = randomTensor([N], 5);
          const expected = new Linear(w, bias).forward(x).toFloat32Array();
          const out = new Float32Array(M * N);
          k.matmul(out, x.toFloat32Array(), M, toNativeWeight(w, addon), bias.toFloat32Array());
          assertWithinQuantBound(out, expected, x, w, `${dtype} M=${M} K=${K} N=${N}`, 256);
        }
      });
    }

    test("matmul with MLX affine 4- and 8-bit weights equals Linear on the dequantized weights, within the activation-quantization bound", () => {
      useIsa();
      const cases: { bits: number; groupSize: number; M: number; K: number; N: number; scaleDType: DenseDType }[] = [
        { bits: 4, groupSize: 64, M: 1, K: 128, N: 5, scaleDType: "f16" },
        { bits: 4, groupSize: 32, M: 3, K: 96, N: 9, scaleDType: "bf16" },
        { bits: 8, groupSize: 128, M: 1, K: 512, N: 7, scaleDType: "f32" },
        { bits: 8, groupSize: 32, M: 17, K: 160, N: 6, scaleDType: "f16" },
        { bits: 4, groupSize: 128, M: 12, K: 1024, N: 11, scaleDType: "bf16" },
        { bits: 4, groupSize: 64, M: 40, K: 192, N: 37, scaleDType: "f16" },
        { bits: 4, groupSize: 128, M: 18, K: 384, N: 19, scaleDType: "f32" },
        { bits: 8, groupSize: 64, M: 9, K: 192, N: 33, scaleDType: "bf16" },
        { bits: 4, groupSize: 32, M: 16, K: 160, N: 16, scaleDType: "f16" },
      ];
      for (const { bits, groupSize, M, K, N, scaleDType } of cases) {
        const values = randomTensor([N, K], bits * 10 + K).toFloat32Array();
        const w = AffineQuantWeight.quantize({ bits, groupSize, scaleDType }, [N, K], values);
        const x = randomTensor([M, K], K + 7, 3);
        const expected = new Linear(w).forward(x).toFloat32Array();
        const out = new Float32Array(M * N);
        k.matmul(out, x.toFloat32Array(), M, toNativeWeight(w, addon), null);
        const xs = x.toFloat32Array();
        const wf = weightToTensor(w).toFloat32Array();
        const what = `affine${bits} g${groupSize} ${scaleDType} M=${M} K=${K} N=${N}`;
        for (let m = 0; m < M; m++) {
          for (let n = 0; n < N; n++) {
            // int8 x moves each element by at most amax/254 of its block; the kernels multiply it by
            // w (the bias meets x as quantized too), and the bf16 GEMM rounds w and x by 2^-9.
            let bound = 0;
            for (let b = 0; b < K / 32; b++) {
              let amax = 0;
              for (let j = 0; j < 32; j++) amax = Math.max(amax, Math.abs(xs[m * K + b * 32 + j]));
              for (let j = 0; j < 32; j++) {
                const kk = b * 32 + j;
                bound += (Math.abs(wf[n * K + kk]) * amax) / 254;
              }
            }
            const err = Math.abs(out[m * N + n] - expected[m * N + n]);
            assert.ok(err <= bound * 1.01 + 1e-4, `${what} [${m},${n}]: error ${err} > bound ${bound}`);
          }
        }
      }
    });

    test(
      "int8 matmuls equal the decoded weights times x as quantized, to f32 rounding",
      { skip: isa === "scalar" && "the scalar kernels keep x in f32" },
      () => {
        useIsa();
        // The exact sum Σ w · x̂ pins the recipe where the bounds above only bound it: a term that
        // meets x instead of x̂ (or the other way) is off by about 1e-2 of Σ |w · x|, this by 1e-7.
        // K = 576 ends 4-bit rows on a part of a unit; M = 1 runs the one-row kernels, 19 and 33
        // the batched ones; x has an outlier, as trained models' activations do.
        const weights: [string, (N: number, K: number, v: Float32Array) => WeightMatrix, number][] = [
          ["q8_0", (N, K, v) => BlockQuantWeight.quantize("q8_0", [N, K], v), 32],
          ["q4_0", (N, K, v) => BlockQuantWeight.quantize("q4_0", [N, K], v), 32],
          ["affine4 g32", (N, K, v) => AffineQuantWeight.quantize({ bits: 4, groupSize: 32, scaleDType: "f16" }, [N, K], v), 32],
          ["affine4 g64", (N, K, v) => AffineQuantWeight.quantize({ bits: 4, groupSize: 64, scaleDType: "bf16" }, [N, K], v), 32],
          ["affine8 g32", (N, K, v) => AffineQuantWeight.quantize({ bits: 8, groupSize: 32, scaleDType: "f16" }, [N, K], v), 32],
          ["q4_k", (N, K, v) => KQuantWeight.quantize("q4_k", [N, K], v), 256],
          ["q5_k", (N, K, v) => KQuantWeight.quantize("q5_k", [N, K], v), 256],
          ["q6_k", (N, K, v) => KQuantWeight.quantize("q6_k", [N, K], v), 256],
        ];
        for (const [name, make, span] of weights) {
          const shapes = [
            [1, 512],
            [1, 768],
            [19, 768],
            [33, 512],
            ...(span === 32
              ? [
                  [1, 576],
                  [19, 576],
                ]
              : []),
          ];
          for (const [rows, cols] of shapes) {
            const N = 21;
            const w = make(N, cols, randomTensor([N, cols], rows + cols).toFloat32Array());
            const x = randomTensor([rows, cols], cols + 11).toFloat32Array();
            x[5] = 40;
            x[(rows - 1) * cols + 100] = -60;
            const out = new Float32Array(rows * N);
            k.matmul(out, x, rows, toNativeWeight(w, addon), null);
            const wf = weightToTensor(w).toFloat32Array();
            for (let m = 0; m < rows; m++) {
              const xq = quantizedX(x.subarray(m * cols, (m + 1) * cols), span);
              for (let n = 0; n < N; n++) {
                let ref = 0;
                let size = 0;
                for (let j = 0; j < cols; j++) {
                  ref += wf[n * cols + j] * xq[j];
                  size += Math.abs(wf[n * cols + j] * x[m * cols + j]);
                }
                const err = Math.abs(out[m * N + n] - ref);
                assert.ok(err <= 1e-6 * size, `${name} M=${rows} K=${cols} [${m},${n}]: ${out[m * N + n]} against ${ref} (Σ|w·x| ${size})`);
              }
            }
          }
        }
      },
    );

    test("matmulMany gives each weight what matmul gives it, for shared and different weight types", () => {
      useIsa();
      const K = 128;
      const quantized = (dtype: "q8_0" | "q4_0", N: number, seed: number) => {
        const w = BlockQuantWeight.quantize(dtype, [N, K], randomTensor([N, K], seed).toFloat32Array());
        w.useRowLayout((d, data, rows, cols) => addon.regroupRows(NativeWeightType[d], data, rows, cols));
        return { type: NativeWeightType[dtype], data: w.data, rows: N, cols: K };
      };
      const weights = [
        quantized("q8_0", 40, 1),
        quantized("q4_0", 9, 2),
        quantized("q8_0", 17, 3),
        denseWeight("bf16", randomTensor([5, K], 4)).native,
      ];
      const biases = [randomTensor([40], 5).toFloat32Array(), null, randomTensor([17], 6).toFloat32Array(), null];
      for (const M of [1, 3, 20]) {
        const x = randomTensor([M, K], 7 + M).toFloat32Array();
        const outs = weights.map((w) => new Float32Array(M * w.rows));
        k.matmulMany(x, M, outs, weights, biases);
        weights.forEach((w, i) => {
          const one = new Float32Array(M * w.rows);
          k.matmul(one, x, M, w, biases[i]);
          assert.deepEqual(outs[i], one, `weight ${i}, M=${M}`);
        });
      }
      assert.throws(
        () =>
          k.matmulMany(
            new Float32Array(K),
            1,
            [new Float32Array(40), new Float32Array(4)],
            [weights[0], { ...denseWeight("f32", randomTensor([4, 64], 1)).native }],
            [null, null],
          ),
        /same column count/,
      );
      assert.throws(() => k.matmulMany(new Float32Array(K), 1, [], [], []), /1 to 4 weights/);
    });

    test("rmsNorm and rope (both layouts) equal the TypeScript layers", () => {
      useIsa();
      const n = 37;
      const x = randomTensor([3, n], 1, 4);
      const w = randomTensor([n], 2);
      const out = new Float32Array(3 * n);
      k.rmsNorm(out, x.toFloat32Array(), w.toFloat32Array(), 3, n, 1e-6);
      relClose(out, new RMSNorm(w, 1e-6).forward(x).toFloat32Array(), 1e-6, "rmsNorm");

      for (const traditional of [false, true]) {
        const [L, heads, D] = [4, 3, 10];
        const r = randomTensor([L, heads, D], 3);
        const data = r.toFloat32Array().slice();
        k.rope(
          data,
          L,
          heads,
          D,
          Int32Array.from({ length: L }, (_, l) => 17 + l),
          10000,
          traditional,
        );
        const expected = new RoPE(D, 10000, traditional).forward(r.transpose(0, 1), 17).transpose(0, 1).toFloat32Array();
        relClose(data, expected, 1e-5, `rope traditional=${traditional}`);
      }
      // Each row at a position of its own, in any order, including positions past the cached table.
      const positions = Int32Array.from([5, 0, 300_000, 42, 5, 131_072]);
      const [heads, D] = [2, 16];
      const r = randomTensor([positions.length, heads, D], 9);
      const data = r.toFloat32Array().slice();
      k.rope(data, positions.length, heads, D, positions, 1e6, false);
      positions.forEach((pos, t) => {
        const row = r.slice(0, t, t + 1).transpose(0, 1); // [heads, 1, D]
        const expected = new RoPE(D, 1e6, false).forward(row, pos).toFloat32Array();
        relClose(data.subarray(t * heads * D, (t + 1) * heads * D), expected, 1e-5, `rope row ${t} at position ${pos}`);
      });
      assert.throws(() => k.rope(data, 1, heads, D, Int32Array.of(-1), 1e6, false), /negative/);
      assert.throws(() => k.rope(data, 2, heads, D, Int32Array.of(1), 1e6, false), /positions is too small/);
    });

    test("swiglu equals silu(x·gateᵀ) ⊙ x·upᵀ from matmul, for every weight type and for mixed types", () => {
      useIsa();
      const K = 512;
      const blockQuant = (dtype: "q8_0" | "q4_0", N: number, seed: number) => {
        const w = BlockQuantWeight.quantize(dtype, [N, K], randomTensor([N, K], seed).toFloat32Array());
        return toNativeWeight(w, addon);
      };
      const makers: Record<string, (N: number, seed: number) => ReturnType<typeof toNativeWeight>> = {
        f32: (N, seed) => denseWeight("f32", randomTensor([N, K], seed)).native,
        bf16: (N, seed) => denseWeight("bf16", randomTensor([N, K], seed)).native,
        q8_0: (N, seed) => blockQuant("q8_0", N, seed),
        q4_0: (N, seed) => blockQuant("q4_0", N, seed),
        q4_k: (N, seed) => toNativeWeight(KQuantWeight.quantize("q4_k", [N, K], randomTensor([N, K], seed).toFloat32Array()), addon),
        q6_k: (N, seed) => toNativeWeight(KQuantWeight.quantize("q6_k", [N, K], randomTensor([N, K], seed).toFloat32Array()), addon),
        affine4: (N, seed) =>
          toNativeWeight(
            AffineQuantWeight.quantize({ bits: 4, groupSize: 64, scaleDType: "f16" }, [N, K], randomTensor([N, K], seed).toFloat32Array()),
            addon,
          ),
        affine8: (N, seed) =>
          toNativeWeight(
            AffineQuantWeight.quantize({ bits: 8, groupSize: 32, scaleDType: "bf16" }, [N, K], randomTensor([N, K], seed).toFloat32Array()),
            addon,
          ),
      };
      const pairs = [...Object.keys(makers).map((t) => [t, t]), ["q4_0", "q8_0"], ["q4_k", "q6_k"], ["bf16", "q4_0"]];
      // N off the strips of 16 and the jobs' row counts; M from decode through the batched kernels' thresholds.
      for (const [gateType, upType] of pairs) {
        for (const [M, N] of [
          [1, 37],
          [3, 70],
          [9, 33],
          [20, 300],
          [40, 77],
        ]) {
          const gate = makers[gateType](N, M + N);
          const up = makers[upType](N, M + N + 1);
          // Gates from moderate to far out, where exp over- or underflows.
          const gateBias = randomTensor([N], 2, 120).toFloat32Array();
          const upBias = randomTensor([N], 3).toFloat32Array();
          const x = randomTensor([M, K], M + 5, 2).toFloat32Array();
          const g = new Float32Array(M * N);
          const u = new Float32Array(M * N);
          k.matmul(g, x, M, gate, gateBias);
          k.matmul(u, x, M, up, upBias);
          const expected = mul(silu(new Tensor(g, [M, N])), new Tensor(u, [M, N])).toFloat32Array();
          const out = new Float32Array(M * N).fill(NaN);
          k.swiglu(out, x, M, gate, gateBias, up, upBias);
          relClose(out, expected, 1e-6, `gate ${gateType}, up ${upType}, M=${M} N=${N}`);
        }
      }
      const f32 = makers.f32(4, 1);
      assert.throws(() => k.swiglu(new Float32Array(4), new Float32Array(K), 1, f32, null, makers.f32(5, 2), null), /same shape/);
    });
  });
}

test("releaseScratch leaves buffers that read as zeros and take writes again", { skip }, () => {
  const k = contextFor("auto");
  // Pages wholly inside each buffer go back; a buffer smaller than a page keeps its contents.
  const big = new Float32Array(300_000).fill(3);
  const small = new Float32Array(100).fill(5);
  k.releaseScratch([big, small]);
  // The first and last page may be shared with other allocations and are left as they are; the
  // middle of 1.2 MB lies in whole pages at any page size.
  for (let i = big.length / 8; i < (7 * big.length) / 8; i += 997) assert.equal(big[i], 0, `element ${i}`);
  assert.ok(small.every((v) => v === 5));
  big.fill(7);
  assert.ok(big.every((v) => v === 7));
  assert.throws(() => k.releaseScratch([big, 1 as unknown as Float32Array]), /typed arrays/);
});

test("native kernels reject arrays too small for the shapes given", { skip }, () => {
  const k = contextFor("auto");
  const w = { type: NativeWeightType.f32, data: new Float32Array(12), rows: 3, cols: 4 };
  assert.throws(() => k.matmul(new Float32Array(3), new Float32Array(3), 1, w, null), /x is too small/);
  assert.throws(() => k.matmul(new Float32Array(3), new Float32Array(4), 1, { ...w, rows: 4 }, null), /too small/);
  assert.throws(() => k.matmul(new Float32Array(3), new Float32Array(4), 1, { ...w, type: 99 }, null), /unknown weight type/);
  const kq = { type: NativeWeightType.q4_k, data: new Uint8Array(288), rows: 1, cols: 288 };
  assert.throws(() => k.matmul(new Float32Array(1), new Float32Array(288), 1, kq, null), /multiple of 256/);
});

test("jobs of different sizes in quick succession each run every chunk exactly once", { skip }, () => {
  // A worker finishing one job must not claim chunks of the next, which is larger: mixing small
  // and large weights (and, with AMX, the two jobs of each batched matmul) checks the hand-over.
  const k = contextFor("auto");
  const small = denseWeight("bf16", randomTensor([8, 64], 1));
  const large = denseWeight("bf16", randomTensor([600, 64], 2));
  const x = randomTensor([16, 64], 3).toFloat32Array();
  const run = (w: typeof small, rows: number): Float32Array => {
    const out = new Float32Array(16 * rows);
    k.matmul(out, x, 16, w.native, null);
    return out;
  };
  const expectSmall = run(small, 8);
  const expectLarge = run(large, 600);
  for (let i = 0; i < 300; i++) {
    assert.deepEqual(run(small, 8), expectSmall);
    assert.deepEqual(run(large, 600), expectLarge);
  }
});

test("results do not depend on the thread count", { skip }, () => {
  const w = denseWeight("f32", randomTensor([300, 64], 1));
  const x = randomTensor([2, 64], 2).toFloat32Array();
  const run = (threads: number): Float32Array => {
    const k = contextFor("auto", threads);
    assert.equal(k.info().threads, threads);
    const out = new Float32Array(600);
    k.matmul(out, x, 2, w.native, null);
    return out;
  };
  const one = run(1);
  assert.deepEqual(run(3), one);
});
