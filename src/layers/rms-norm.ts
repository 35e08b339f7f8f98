/** RMSNorm: y = x / sqrt(mean(x²) + eps) · w, over the last axis, accumulated in float64. */
import { Tensor } from "../tensor/tensor.js";

export class RMSNorm {
  constructor(
    readonly weight: Tensor,
    readonly eps: number,
  ) {
    if (weight.ndim !== 1) throw new RangeError(`RMSNorm weight must be 1-d, got [${weight.shape}]`);
  }

  forward(x: Tensor): Tensor {
    const n = this.weight.shape[0];
    if (x.dim(-1) !== n) throw new RangeError(`RMSNorm over ${n} features got [${x.shape}]`);
    const xs = x.toFloat32Array();
    const w = this.weight.toFloat32Array();
    const out = new Float32Array(xs.length);
    for (let o = 0; o < xs.length; o += n) {
      let ss = 0;
      for (let i = 0; i < n; i++) ss += xs[o + i] * xs[o + i];
      const inv = 1 / Math.sqrt(ss / n + this.eps);
      for (let i = 0; i < n; i++) out[o + i] = xs[o + i] * inv * w[i];
    }
    return new Tensor(out, x.shape);
  }
}
