import assert from "node:assert/strict";
import { test } from "node:test";
import {
  add,
  argmax,
  broadcastShapes,
  concat,
  div,
  exp,
  gatherRows,
  logSoftmax,
  matmul,
  max,
  mean,
  mul,
  silu,
  softmax,
  sub,
  sum,
} from "../src/tensor/ops.js";
import { Tensor } from "../src/tensor/tensor.js";
import { assertClose, randomTensor } from "./support/numeric.js";

const iota = (n: number): number[] => Array.from({ length: n }, (_, i) => i);

test("elementwise ops broadcast like NumPy", () => {
  const a = Tensor.from([
    [1, 2, 3],
    [4, 5, 6],
  ]);
  const row = Tensor.from([10, 20, 30]);
  const col = Tensor.from([100, 200], [2, 1]);
  assert.deepEqual(add(a, row).toArray(), [11, 22, 33, 14, 25, 36]);
  assert.deepEqual(sub(a, col).toArray(), [-99, -98, -97, -196, -195, -194]);
  assert.deepEqual(mul(a, 2).toArray(), [2, 4, 6, 8, 10, 12]);
  assert.deepEqual(div(a, row).shape, [2, 3]);
  assert.deepEqual(add(col, row).shape, [2, 3]);
  assert.deepEqual(broadcastShapes([4, 1, 3], [2, 1]), [4, 2, 3]);
  assert.throws(() => add(a, Tensor.from([1, 2])), /do not broadcast/);
});

test("elementwise ops read strided views correctly", () => {
  const a = Tensor.from(iota(6), [2, 3]).transpose(); // [3, 2]
  assert.deepEqual(add(a, Tensor.from([0, 100])).toArray(), [0, 103, 1, 104, 2, 105]);
});

test("matmul matches hand-computed products", () => {
  const a = Tensor.from([
    [1, 2],
    [3, 4],
    [5, 6],
  ]);
  const b = Tensor.from([
    [7, 8, 9, 10],
    [11, 12, 13, 14],
  ]);
  const c = matmul(a, b);
  assert.deepEqual(c.shape, [3, 4]);
  assert.deepEqual(c.toArray(), [29, 32, 35, 38, 65, 72, 79, 86, 101, 112, 123, 134]);
  assert.throws(() => matmul(a, a), /inner sizes differ/);
});

test("batched matmul broadcasts batch axes and equals per-batch products", () => {
  const a = randomTensor([2, 3, 4, 5], 1);
  const b = randomTensor([3, 5, 2], 2); // broadcast over the leading 2
  const c = matmul(a, b);
  assert.deepEqual(c.shape, [2, 3, 4, 2]);
  for (let i = 0; i < 2; i++) {
    for (let j = 0; j < 3; j++) {
      const ref = matmul(
        a
          .slice(0, i, i + 1)
          .slice(1, j, j + 1)
          .reshape([4, 5]),
        b.slice(0, j, j + 1).reshape([5, 2]),
      );
      assertClose(
        c
          .slice(0, i, i + 1)
          .slice(1, j, j + 1)
          .reshape([4, 2]),
        ref,
        1e-6,
      );
    }
  }
});

test("matmul with a transposed view equals matmul with its contiguous copy", () => {
  const a = randomTensor([3, 4], 3);
  const b = randomTensor([6, 4], 4);
  assertClose(matmul(a, b.transpose()), matmul(a, b.transpose().contiguous()), 1e-6);
});

test("softmax rows sum to 1, are positive and stable for huge logits", () => {
  const x = Tensor.from([
    [1, 2, 3],
    [1000, 1001, 1002],
    [-1e4, 0, 1e4],
  ]);
  const p = softmax(x);
  for (let r = 0; r < 3; r++) {
    const row = p.slice(0, r, r + 1).toArray();
    assert.ok(Math.abs(row.reduce((s, v) => s + v, 0) - 1) < 1e-6);
    assert.ok(row.every((v) => v >= 0 && Number.isFinite(v)));
  }
  assertClose(p.slice(0, 0, 1), Tensor.from([[0.09003057, 0.24472847, 0.66524096]]), 1e-6);
  // Shifting a row by a constant does not change it.
  assertClose(p.slice(0, 1, 2), p.slice(0, 0, 1), 1e-6);
});

test("softmax along a non-last axis normalises that axis", () => {
  const x = randomTensor([3, 4], 5);
  const p = softmax(x, 0);
  const colSums = sum(p, 0).toArray();
  for (const s of colSums) assert.ok(Math.abs(s - 1) < 1e-6);
});

test("logSoftmax equals log(softmax)", () => {
  const x = randomTensor([2, 7], 6, 5);
  assertClose(exp(logSoftmax(x)), softmax(x), 1e-6);
});

test("reductions: sum, mean, max, argmax with and without keepDims", () => {
  const x = Tensor.from([
    [1, 5, 3],
    [4, 2, 6],
  ]);
  assert.deepEqual(sum(x, 1).toArray(), [9, 12]);
  assert.deepEqual(sum(x, 0).toArray(), [5, 7, 9]);
  assert.deepEqual(mean(x, -1).toArray(), [3, 4]);
  assert.deepEqual(max(x, 0).toArray(), [4, 5, 6]);
  assert.deepEqual(argmax(x, 1).toArray(), [1, 2]);
  assert.deepEqual(sum(x, 1, true).shape, [2, 1]);
  assert.deepEqual(sum(x, 0, true).shape, [1, 3]);
});

test("concat joins along any axis", () => {
  const a = Tensor.from(iota(4), [2, 2]);
  const b = Tensor.from([10, 11], [2, 1]);
  assert.deepEqual(concat([a, b], 1).toArray(), [0, 1, 10, 2, 3, 11]);
  assert.deepEqual(concat([a, a], 0).shape, [4, 2]);
  assert.throws(() => concat([a, Tensor.from([1, 2, 3], [1, 3])], 0), /differ/);
});

test("gatherRows picks rows and rejects ids outside the table", () => {
  const table = Tensor.from(iota(8), [4, 2]);
  assert.deepEqual(gatherRows(table, [3, 0, 3]).toArray(), [6, 7, 0, 1, 6, 7]);
  assert.throws(() => gatherRows(table, [4]), /out of range/);
});

test("silu(x) = x·sigmoid(x)", () => {
  const x = Tensor.from([-2, 0, 1, 3]);
  assertClose(silu(x), Tensor.from([-2 / (1 + Math.exp(2)), 0, 1 / (1 + Math.exp(-1)), 3 / (1 + Math.exp(-3))]), 1e-7);
});
