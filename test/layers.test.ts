import assert from "node:assert/strict";
import { test } from "node:test";
import { Embedding } from "../src/layers/embedding.js";
import { KVCache } from "../src/layers/kv-cache.js";
import { Linear } from "../src/layers/linear.js";
import { MLP } from "../src/layers/mlp.js";
import { RMSNorm } from "../src/layers/rms-norm.js";
import { RoPE } from "../src/layers/rope.js";
import { numberToBf16 } from "../src/tensor/dtype.js";
import { concat, matmul, mul, silu, sum } from "../src/tensor/ops.js";
import { Tensor } from "../src/tensor/tensor.js";
import { DenseWeight, weightToTensor } from "../src/tensor/weight.js";
import { assertClose, randomTensor } from "./support/numeric.js";

const dense = (t: Tensor): DenseWeight => DenseWeight.fromTensor(t);

test("Linear computes x Wᵀ + b", () => {
  const w = Tensor.from([
    [1, 2],
    [3, 4],
    [5, 6],
  ]);
  const lin = new Linear(dense(w), Tensor.from([0.5, -1, 2]));
  const y = lin.forward(Tensor.from([[[1, 1]], [[2, -1]]]));
  assert.deepEqual(y.shape, [2, 1, 3]);
  assert.deepEqual(y.toArray(), [3.5, 6, 13, 0.5, 1, 6]);
  assert.throws(() => lin.forward(Tensor.from([1, 2, 3])), /input width 2/);
});

test("a bf16 weight gives the same product as its f32 widening", () => {
  const f32 = randomTensor([5, 7], 1);
  const bits = Uint16Array.from(f32.toFloat32Array(), numberToBf16);
  const bf16 = new DenseWeight("bf16", [5, 7], bits);
  const x = randomTensor([3, 7], 2);
  const widened = weightToTensor(bf16);
  assertClose(widened, f32, 1e-2, "bf16 rounding");
  assertClose(new Linear(bf16).forward(x), matmul(x, widened.transpose()), 1e-5);
});

test("RMSNorm by hand: x / sqrt(mean(x²) + eps) · w", () => {
  const norm = new RMSNorm(Tensor.from([1, 2]), 1e-6);
  const y = norm.forward(Tensor.from([[3, 4]]));
  const rms = Math.sqrt((9 + 16) / 2 + 1e-6);
  assertClose(y, Tensor.from([[3 / rms, (4 / rms) * 2]]), 1e-6);
});

test("RMSNorm output has unit RMS with unit weights and is scale invariant", () => {
  const norm = new RMSNorm(Tensor.full([16], 1), 1e-6);
  const x = randomTensor([4, 16], 3, 10);
  const y = norm.forward(x);
  const ms = sum(mul(y, y), -1)
    .toArray()
    .map((s) => s / 16);
  for (const m of ms) assert.ok(Math.abs(m - 1) < 1e-4);
  assertClose(norm.forward(mul(x, 1000)), y, 1e-5);
});

for (const traditional of [false, true]) {
  const layout = traditional ? "adjacent pairs" : "halves";

  test(`RoPE (${layout}) keeps every vector's norm`, () => {
    const rope = new RoPE(8, 10000, traditional);
    const x = randomTensor([1, 2, 5, 8], 4);
    const y = rope.forward(x, 3);
    assertClose(sum(mul(y, y), -1), sum(mul(x, x), -1), 1e-4);
  });

  test(`RoPE (${layout}) makes q·k depend only on the relative position`, () => {
    const rope = new RoPE(8, 10000, traditional);
    const q = randomTensor([1, 1, 1, 8], 5);
    const k = randomTensor([1, 1, 1, 8], 6);
    const score = (pq: number, pk: number): number => matmul(rope.forward(q, pq), rope.forward(k, pk).transpose()).item();
    assert.ok(Math.abs(score(7, 3) - score(14, 10)) < 1e-4);
    assert.ok(Math.abs(score(7, 3) - score(100, 96)) < 1e-4);
    assert.ok(Math.abs(score(7, 3) - score(7, 5)) > 1e-3, "a different distance gives a different score");
  });

  test(`RoPE (${layout}) at position 0 is the identity, and offset shifts positions`, () => {
    const rope = new RoPE(4, 10000, traditional);
    const x = randomTensor([1, 1, 3, 4], 7);
    assertClose(rope.forward(x.slice(2, 0, 1), 0), x.slice(2, 0, 1), 0);
    assertClose(rope.forward(x, 5).slice(2, 2, 3), rope.forward(x.slice(2, 2, 3), 7), 1e-6);
  });
}

test("RoPE layouts by hand: position 1 rotates pair (x0, x_{D/2}) or (x0, x1) by θ⁰ = 1 radian", () => {
  const x = Tensor.from([1, 0, 0, 0], [1, 4]);
  const c = Math.cos(1);
  const s = Math.sin(1);
  assertClose(new RoPE(4, 10000, false).forward(x, 1), Tensor.from([c, 0, s, 0], [1, 4]), 1e-6);
  assertClose(new RoPE(4, 10000, true).forward(x, 1), Tensor.from([c, s, 0, 0], [1, 4]), 1e-6);
});

test("SwiGLU MLP equals down(silu(gate x) ⊙ up x)", () => {
  const [E, I] = [6, 10];
  const g = randomTensor([I, E], 1);
  const u = randomTensor([I, E], 2);
  const d = randomTensor([E, I], 3);
  const x = randomTensor([2, 3, E], 4);
  const mlp = new MLP(new Linear(dense(g)), new Linear(dense(u)), new Linear(dense(d)));
  const expected = matmul(mul(silu(matmul(x, g.transpose())), matmul(x, u.transpose())), d.transpose());
  assertClose(mlp.forward(x), expected, 1e-5);
});

test("Embedding looks up rows, its tied head is h Eᵀ, and unknown ids are rejected", () => {
  const table = randomTensor([10, 4], 5);
  const emb = new Embedding(dense(table));
  const h = emb.forward([
    [3, 7],
    [0, 3],
  ]);
  assert.deepEqual(h.shape, [2, 2, 4]);
  assertClose(h.slice(0, 0, 1).slice(1, 0, 1).reshape([4]), table.slice(0, 3, 4).reshape([4]), 0);
  assertClose(emb.asLinear(h), matmul(h, table.transpose()), 1e-6);
  assert.throws(() => emb.forward([[10]]), /outside the vocabulary/);
});

test("KVCache appends across calls and grows past its chunk size", () => {
  const cache = new KVCache();
  const parts = [randomTensor([1, 2, 200, 3], 1), randomTensor([1, 2, 100, 3], 2), randomTensor([1, 2, 1, 3], 3)];
  let all: { keys: Tensor; values: Tensor } | undefined;
  for (const p of parts) all = cache.update(p, mul(p, 2));
  assert.equal(cache.offset, 301);
  const expected = concat(parts, 2);
  assertClose(all!.keys, expected, 0);
  assertClose(all!.values, mul(expected, 2), 0);
});
