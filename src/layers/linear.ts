/** y = x Wᵀ + b, with W [out, in] in whatever type it was stored. */
import { Tensor } from "../tensor/tensor.js";
import type { WeightMatrix } from "../tensor/weight.js";

export class Linear {
  constructor(
    readonly weight: WeightMatrix,
    readonly bias?: Tensor,
  ) {
    if (bias && (bias.ndim !== 1 || bias.shape[0] !== weight.rows)) {
      throw new RangeError(`bias of shape [${bias.shape}] does not fit a weight with ${weight.rows} rows`);
    }
  }

  /** x: [..., in] -> [..., out]. */
  forward(x: Tensor): Tensor {
    const { rows, cols } = this.weight;
    if (x.dim(-1) !== cols) throw new RangeError(`linear expects input width ${cols}, got [${x.shape}]`);
    const xs = x.toFloat32Array();
    const tokens = xs.length / cols;
    const out = new Float32Array(tokens * rows);
    const bias = this.bias?.toFloat32Array();
    // Decode one weight row at a time and reuse it for every token: the weight is read once.
    const w = new Float32Array(cols);
    for (let r = 0; r < rows; r++) {
      this.weight.decodeRow(r, w);
      for (let t = 0; t < tokens; t++) {
        let acc = 0;
        const x0 = t * cols;
        for (let c = 0; c < cols; c++) acc += xs[x0 + c] * w[c];
        out[t * rows + r] = bias ? acc + bias[r] : acc;
      }
    }
    return new Tensor(out, [...x.shape.slice(0, -1), rows]);
  }
}
