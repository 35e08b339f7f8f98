import assert from "node:assert/strict";
import { test } from "node:test";
import { Random } from "../src/generation/random.js";
import { Sampler } from "../src/generation/sampler.js";

const logits = [2.0, 1.0, 0.5, 0.1, -1, -3, 1.5, 0.0];

test("greedy picks the argmax", () => {
  assert.equal(new Sampler({ temperature: 0 }).sample(logits), 0);
  assert.equal(new Sampler({ temperature: 0.8, topK: 1 }).sample([0, 5, 3]), 1);
});

test("the seeded PRNG is reproducible and roughly uniform", () => {
  const a = new Random(42);
  const b = new Random(42);
  const xs = Array.from({ length: 2000 }, () => a.next());
  assert.deepEqual(
    xs,
    Array.from({ length: 2000 }, () => b.next()),
  );
  assert.ok(xs.every((x) => x >= 0 && x < 1));
  const m = xs.reduce((s, x) => s + x, 0) / xs.length;
  assert.ok(Math.abs(m - 0.5) < 0.03, `mean ${m}`);
  assert.notDeepEqual(
    xs.slice(0, 10),
    Array.from({ length: 10 }, () => new Random(43).next()),
  );
});

test("sampling with a seed is reproducible; different seeds differ", () => {
  const run = (seed: number): number[] => {
    const s = new Sampler({ temperature: 1, seed });
    return Array.from({ length: 50 }, () => s.sample(logits));
  };
  assert.deepEqual(run(7), run(7));
  assert.notDeepEqual(run(7), run(8));
});

test("top-p never picks outside the nucleus", () => {
  // softmax order: 0 (2.0), 6 (1.5), 1 (1.0), 2 (0.5), ...; probabilities ≈ .35, .21, .13, .08
  const s = new Sampler({ temperature: 1, topP: 0.5, seed: 1 });
  const { ids } = s.candidates(logits);
  assert.deepEqual(ids, [0, 6]);
  for (let i = 0; i < 500; i++) assert.ok([0, 6].includes(s.sample(logits)));
});

test("top-k keeps exactly k candidates; min-p drops tokens below minP · pmax", () => {
  assert.deepEqual(new Sampler({ topK: 3 }).candidates(logits).ids, [0, 6, 1]);
  // p_i / p_max = exp(l_i - 2): keep those >= 0.3 -> logits >= 2 + ln 0.3 ≈ 0.796
  assert.deepEqual(new Sampler({ minP: 0.3 }).candidates(logits).ids, [0, 6, 1]);
});

test("candidate probabilities are renormalised softmax(logits / T)", () => {
  const { ids, probs } = new Sampler({ temperature: 0.5 }).candidates([1, 0]);
  assert.deepEqual(ids, [0, 1]);
  const p0 = 1 / (1 + Math.exp(-2));
  assert.ok(Math.abs(probs[0] - p0) < 1e-12 && Math.abs(probs[1] - (1 - p0)) < 1e-12);
});

test("sampled frequencies follow the distribution", () => {
  const s = new Sampler({ temperature: 1, seed: 3 });
  const counts = [0, 0];
  for (let i = 0; i < 4000; i++) counts[s.sample([Math.log(3), 0])]++;
  assert.ok(Math.abs(counts[0] / 4000 - 0.75) < 0.03, `frequency ${counts[0] / 4000}`);
});

test("invalid options are rejected with a clear message", () => {
  assert.throws(() => new Sampler({ temperature: -1 }), /temperature/);
  assert.throws(() => new Sampler({ topP: 0 }), /top-p/);
  assert.throws(() => new Sampler({ topK: 1.5 }), /top-k/);
  assert.throws(() => new Sampler({ minP: 2 }), /min-p/);
});

test("candidates on a large vocabulary: the far tail is left out but the nucleus is unchanged", () => {
  const V = 150000;
  const logits = new Float32Array(V).fill(-50);
  logits[7] = 10;
  logits[123456] = 9.5;
  logits[42] = 8;
  const { ids, probs } = new Sampler({ temperature: 1, topP: 0.99 }).candidates(logits);
  assert.deepEqual(ids, [7, 123456, 42]);
  const z = Math.exp(0) + Math.exp(-0.5) + Math.exp(-2);
  assert.ok(Math.abs(probs[0] - 1 / z) < 1e-6);
  // With a very high temperature the tail is no longer negligible and stays in.
  assert.equal(new Sampler({ temperature: 100 }).candidates(logits).ids.length, V);
});

// Probabilities 0.5, 0.25, 0.25 exactly (e^-ln2 is 0.5 in floating point): cutoffs that land on them.
test("top-p stops at the token whose cumulative probability reaches p exactly", () => {
  const logits = [0, -Math.LN2, -Math.LN2];
  assert.deepEqual(new Sampler({ temperature: 1, topP: 0.75 }).candidates(logits).ids, [0, 1]);
  assert.deepEqual(new Sampler({ temperature: 1, topP: 0.7500001 }).candidates(logits).ids, [0, 1, 2]);
});

test("min-p keeps a token exactly at minP · pmax and drops one just below", () => {
  const logits = [0, -Math.LN2, -Math.LN2];
  assert.deepEqual(new Sampler({ temperature: 1, minP: 0.5 }).candidates(logits).ids, [0, 1, 2]);
  assert.deepEqual(new Sampler({ temperature: 1, minP: 0.5000001 }).candidates(logits).ids, [0]);
});
