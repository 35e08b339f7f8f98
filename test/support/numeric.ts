import assert from "node:assert/strict";
import { Random } from "../../src/generation/random.js";
import { Tensor, sizeOf, type Shape } from "../../src/tensor/tensor.js";

/** A tensor of seeded uniform values in [-scale, scale). */
export function randomTensor(shape: Shape, seed: number, scale = 1): Tensor {
  const rng = new Random(seed);
  const data = new Float32Array(sizeOf(shape));
  for (let i = 0; i < data.length; i++) data[i] = (rng.next() * 2 - 1) * scale;
  return new Tensor(data, shape);
}

/** Asserts equal shapes and max |a - b| <= tol. */
export function assertClose(actual: Tensor, expected: Tensor, tol: number, what = "tensor"): void {
  assert.deepEqual(actual.shape, expected.shape, `${what}: shape`);
  const a = actual.toFloat32Array();
  const e = expected.toFloat32Array();
  let worst = 0;
  let at = -1;
  for (let i = 0; i < a.length; i++) {
    const d = Math.abs(a[i] - e[i]);
    if (!(d <= worst)) {
      worst = d;
      at = i;
    }
  }
  assert.ok(worst <= tol, `${what}: max |diff| ${worst} at ${at} exceeds ${tol} (got ${a[at]}, expected ${e[at]})`);
}

/** ‖a − b‖ / ‖b‖: the relative RMS difference of two vectors. */
export function relativeRms(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let diff = 0;
  let norm = 0;
  for (let i = 0; i < b.length; i++) {
    diff += (a[i] - b[i]) ** 2;
    norm += b[i] ** 2;
  }
  return Math.sqrt(diff / norm);
}

/** log Σ exp(v), computed stably. */
export function logSumExp(v: ArrayLike<number>): number {
  let max = -Infinity;
  for (let i = 0; i < v.length; i++) max = Math.max(max, v[i]);
  let s = 0;
  for (let i = 0; i < v.length; i++) s += Math.exp(v[i] - max);
  return max + Math.log(s);
}

/** Log-probabilities from logits. */
export function logSoftmax(logits: Float32Array): Float64Array {
  const lse = logSumExp(logits);
  return Float64Array.from(logits, (x) => x - lse);
}

/** relativeRms of a and b with their means removed (log-probabilities differ by a constant freely). */
export function centeredRelativeRms(a: ArrayLike<number>, b: ArrayLike<number>): number {
  const mean = (v: ArrayLike<number>): number => {
    let sum = 0;
    for (let i = 0; i < v.length; i++) sum += v[i];
    return sum / v.length;
  };
  const [ma, mb] = [mean(a), mean(b)];
  let diff = 0;
  let norm = 0;
  for (let i = 0; i < b.length; i++) {
    diff += (a[i] - ma - (b[i] - mb)) ** 2;
    norm += (b[i] - mb) ** 2;
  }
  return Math.sqrt(diff / norm);
}
