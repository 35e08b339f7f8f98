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
