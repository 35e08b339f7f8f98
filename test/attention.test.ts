import assert from "node:assert/strict";
import { test } from "node:test";
import { causalMask, scaledDotProductAttention } from "../src/layers/attention.js";
import { concat, matmul, mul, softmax } from "../src/tensor/ops.js";
import { Tensor } from "../src/tensor/tensor.js";
import { assertClose, randomTensor } from "./support/numeric.js";

/** Repeats each K/V head G times along axis 1: the materialised form GQA avoids. */
function repeatHeads(x: Tensor, G: number): Tensor {
  const heads: Tensor[] = [];
  for (let h = 0; h < x.shape[1]; h++) for (let g = 0; g < G; g++) heads.push(x.slice(1, h, h + 1));
  return concat(heads, 1);
}

test("attention with one key returns its value regardless of the query", () => {
  const q = randomTensor([1, 1, 3, 4], 1);
  const k = randomTensor([1, 1, 1, 4], 2);
  const v = Tensor.from([1, 2, 3, 4], [1, 1, 1, 4]);
  const o = scaledDotProductAttention(q, k, v, { scale: 0.5 });
  for (let i = 0; i < 3; i++) assert.deepEqual(o.slice(2, i, i + 1).toArray(), [1, 2, 3, 4]);
});

test("attention equals softmax(q kᵀ · scale) v computed by hand", () => {
  const q = Tensor.from([1, 0, 0, 1], [1, 1, 2, 2]);
  const k = Tensor.from([1, 0, 0, 1, 1, 1], [1, 1, 3, 2]);
  const v = Tensor.from([1, 2, 3, 4, 5, 6], [1, 1, 3, 2]);
  const scale = 0.7;
  const o = scaledDotProductAttention(q, k, v, { scale });
  // Row 0 scores: [1, 0, 1]·0.7; row 1: [0, 1, 1]·0.7.
  const weights = (s: number[]): number[] => {
    const e = s.map((x) => Math.exp(x * scale));
    const z = e.reduce((a, b) => a + b, 0);
    return e.map((x) => x / z);
  };
  const expectRow = (w: number[]): number[] => [w[0] * 1 + w[1] * 3 + w[2] * 5, w[0] * 2 + w[1] * 4 + w[2] * 6];
  assertClose(o, Tensor.from([...expectRow(weights([1, 0, 1])), ...expectRow(weights([0, 1, 1]))], [1, 1, 2, 2]), 1e-6);
});

test("GQA equals MHA with K/V heads repeated (ratios 1, 2, 7)", () => {
  for (const G of [1, 2, 7]) {
    const Hkv = 2;
    const q = randomTensor([2, Hkv * G, 5, 8], 10 + G);
    const k = randomTensor([2, Hkv, 6, 8], 20 + G);
    const v = randomTensor([2, Hkv, 6, 8], 30 + G);
    const gqa = scaledDotProductAttention(q, k, v, { scale: 0.3, mask: "causal" });
    const mha = scaledDotProductAttention(q, repeatHeads(k, G), repeatHeads(v, G), { scale: 0.3, mask: "causal" });
    assertClose(gqa, mha, 1e-6, `G=${G}`);
  }
});

test("the causal mask hides the future: changing later keys/values leaves earlier outputs unchanged", () => {
  const q = randomTensor([1, 2, 5, 4], 1);
  const k = randomTensor([1, 2, 5, 4], 2);
  const v = randomTensor([1, 2, 5, 4], 3);
  const o = scaledDotProductAttention(q, k, v, { scale: 0.5, mask: "causal" });
  // Replace keys and values at positions 3 and 4.
  const k2 = concat([k.slice(2, 0, 3), randomTensor([1, 2, 2, 4], 4)], 2);
  const v2 = concat([v.slice(2, 0, 3), randomTensor([1, 2, 2, 4], 5)], 2);
  const o2 = scaledDotProductAttention(q, k2, v2, { scale: 0.5, mask: "causal" });
  assertClose(o2.slice(2, 0, 3), o.slice(2, 0, 3), 0, "positions 0-2");
  assert.ok(Math.abs(o2.get(0, 0, 4, 0) - o.get(0, 0, 4, 0)) > 1e-4, "position 4 sees the change");
});

test("causal mask with an offset: query i sees keys up to S - L + i", () => {
  const m = causalMask(2, 4);
  assert.deepEqual(m.toArray(), [0, 0, 0, -Infinity, 0, 0, 0, 0]);
});

test("an explicit additive mask equals the causal mask when built the same way", () => {
  const q = randomTensor([1, 4, 3, 4], 7);
  const k = randomTensor([1, 2, 3, 4], 8);
  const v = randomTensor([1, 2, 3, 4], 9);
  const explicit = causalMask(3, 3).reshape([1, 1, 3, 3]);
  assertClose(
    scaledDotProductAttention(q, k, v, { scale: 0.5, mask: explicit }),
    scaledDotProductAttention(q, k, v, { scale: 0.5, mask: "causal" }),
    0,
  );
  // Masking every key but the first returns v[0] for every query.
  const onlyFirst = Tensor.from([0, -Infinity, -Infinity], [1, 1, 1, 3]);
  const o = scaledDotProductAttention(q, k, v, { scale: 0.5, mask: onlyFirst });
  const v0 = v.slice(2, 0, 1);
  assertClose(o.slice(1, 0, 1).slice(2, 1, 2), v0.slice(1, 0, 1), 1e-7);
});

test("multi-head attention computes each head as softmax(q kᵀ · scale) v on its own", () => {
  const q = randomTensor([1, 2, 3, 4], 11);
  const k = randomTensor([1, 2, 3, 4], 12);
  const v = randomTensor([1, 2, 3, 4], 13);
  const o = scaledDotProductAttention(q, k, v, { scale: 0.5 });
  for (let h = 0; h < 2; h++) {
    const [qh, kh, vh] = [q, k, v].map((t) => t.slice(1, h, h + 1).reshape([3, 4]));
    const expected = matmul(softmax(mul(matmul(qh, kh.transpose()), 0.5), -1), vh);
    assertClose(o.slice(1, h, h + 1).reshape([3, 4]), expected, 1e-6, `head ${h}`);
  }
});

test("shape errors are clear", () => {
  const q = randomTensor([1, 3, 2, 4], 1);
  const k = randomTensor([1, 2, 2, 4], 2);
  assert.throws(() => scaledDotProductAttention(q, k, k, { scale: 1 }), /multiple of key\/value heads/);
  assert.throws(
    () => scaledDotProductAttention(randomTensor([1, 2, 2, 4], 3), randomTensor([1, 2, 2, 3], 4), k, { scale: 1 }),
    /do not agree/,
  );
});
