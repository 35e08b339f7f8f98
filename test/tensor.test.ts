import assert from "node:assert/strict";
import { test } from "node:test";
import { Tensor } from "../src/tensor/tensor.js";

const iota = (n: number): number[] => Array.from({ length: n }, (_, i) => i);

test("from infers the shape of nested arrays", () => {
  const t = Tensor.from([
    [1, 2, 3],
    [4, 5, 6],
  ]);
  assert.deepEqual(t.shape, [2, 3]);
  assert.deepEqual(t.strides, [3, 1]);
  assert.equal(t.get(1, 2), 6);
});

test("reshape of a contiguous tensor shares storage and infers -1", () => {
  const t = Tensor.from(iota(24), [2, 3, 4]);
  const r = t.reshape([6, -1]);
  assert.deepEqual(r.shape, [6, 4]);
  assert.equal(r.data, t.data);
  assert.throws(() => t.reshape([5, 5]), /cannot reshape/);
});

test("transpose is a view; contiguous() then copies into row-major order", () => {
  const t = Tensor.from(iota(6), [2, 3]);
  const tt = t.transpose();
  assert.deepEqual(tt.shape, [3, 2]);
  assert.equal(tt.data, t.data);
  assert.equal(tt.isContiguous(), false);
  assert.deepEqual(tt.toArray(), [0, 3, 1, 4, 2, 5]);
  assert.deepEqual(tt.reshape([6]).toArray(), [0, 3, 1, 4, 2, 5]);
});

test("permute reorders axes like numpy.transpose", () => {
  const t = Tensor.from(iota(24), [2, 3, 4]);
  const p = t.permute([2, 0, 1]);
  assert.deepEqual(p.shape, [4, 2, 3]);
  for (let a = 0; a < 2; a++) for (let b = 0; b < 3; b++) for (let c = 0; c < 4; c++) assert.equal(p.get(c, a, b), t.get(a, b, c));
  assert.throws(() => t.permute([0, 0, 1]), /repeat/);
});

test("slice is a view with an offset, and writes through contiguous() do not alias", () => {
  const t = Tensor.from(iota(12), [3, 4]);
  const s = t.slice(1, 1, 3);
  assert.deepEqual(s.shape, [3, 2]);
  assert.equal(s.data, t.data);
  assert.deepEqual(s.toArray(), [1, 2, 5, 6, 9, 10]);
  assert.deepEqual(t.slice(0, 2).toArray(), [8, 9, 10, 11]);
  assert.throws(() => t.slice(0, 2, 5), /out of range/);
});

test("broadcastTo repeats with stride 0 and rejects incompatible shapes", () => {
  const t = Tensor.from([1, 2, 3]);
  const b = t.broadcastTo([2, 3]);
  assert.deepEqual(b.strides, [0, 1]);
  assert.deepEqual(b.toArray(), [1, 2, 3, 1, 2, 3]);
  const col = Tensor.from([10, 20], [2, 1]).broadcastTo([2, 3]);
  assert.deepEqual(col.toArray(), [10, 10, 10, 20, 20, 20]);
  assert.throws(() => t.broadcastTo([2, 4]), /cannot broadcast/);
});

test("expandDims inserts a size-1 axis", () => {
  const t = Tensor.from(iota(6), [2, 3]);
  assert.deepEqual(t.expandDims(1).shape, [2, 1, 3]);
  assert.deepEqual(t.expandDims(-1).shape, [2, 3, 1]);
  assert.deepEqual(t.expandDims(1).toArray(), iota(6));
});

test("get checks bounds and supports negative indices", () => {
  const t = Tensor.from(iota(6), [2, 3]);
  assert.equal(t.get(-1, -1), 5);
  assert.throws(() => t.get(2, 0), /out of range/);
  assert.throws(() => t.get(0), /expected 2 indices/);
});
