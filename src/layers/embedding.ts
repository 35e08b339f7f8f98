/** Token embedding: a lookup of rows in the [V, E] table, which can double as the LM head. */
import { Tensor } from "../tensor/tensor.js";
import type { WeightMatrix } from "../tensor/weight.js";
import { Linear } from "./linear.js";

export class Embedding {
  constructor(readonly weight: WeightMatrix) {}

  /** ids: B rows of L token ids -> [B, L, E]. */
  forward(ids: readonly (readonly number[])[]): Tensor {
    const B = ids.length;
    const L = B === 0 ? 0 : ids[0].length;
    const E = this.weight.cols;
    const out = new Float32Array(B * L * E);
    ids.forEach((row, b) => {
      if (row.length !== L) throw new RangeError("every sequence in a batch must have the same length");
      row.forEach((id, l) => {
        if (!Number.isInteger(id) || id < 0 || id >= this.weight.rows) {
          throw new RangeError(`token id ${id} is outside the vocabulary (0..${this.weight.rows - 1})`);
        }
        this.weight.decodeRow(id, out, (b * L + l) * E);
      });
    });
    return new Tensor(out, [B, L, E]);
  }

  /** Tied LM head: logits = h Eᵀ. */
  asLinear(h: Tensor): Tensor {
    return new Linear(this.weight).forward(h);
  }
}
