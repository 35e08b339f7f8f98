/** The SwiGLU feed-forward block: down(silu(gate(x)) ⊙ up(x)), E -> I -> E. */
import { mul, silu } from "../tensor/ops.js";
import type { Tensor } from "../tensor/tensor.js";
import type { Linear } from "./linear.js";

export class MLP {
  constructor(
    readonly gateProj: Linear,
    readonly upProj: Linear,
    readonly downProj: Linear,
  ) {}

  forward(x: Tensor): Tensor {
    return this.downProj.forward(mul(silu(this.gateProj.forward(x)), this.upProj.forward(x)));
  }
}
