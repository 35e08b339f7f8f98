/**
 * Rotary position embedding. Feature pairs are rotated by angle p · θ^(-2i/D) for position p.
 *
 * Two layouts exist for which features form a pair:
 * - halves ("non-traditional", Hugging Face / Qwen): feature i pairs with i + D/2;
 * - adjacent ("traditional", original RoPE / llama.cpp GGUF): feature 2i pairs with 2i + 1.
 */
import { Tensor } from "../tensor/tensor.js";

export class RoPE {
  private readonly invFreq: Float64Array;

  constructor(
    readonly dims: number,
    readonly base: number,
    readonly traditional = false,
  ) {
    if (dims % 2 !== 0) throw new RangeError(`RoPE needs an even head dim, got ${dims}`);
    this.invFreq = new Float64Array(dims / 2);
    for (let i = 0; i < dims / 2; i++) this.invFreq[i] = base ** (-(2 * i) / dims);
  }

  /** x: [..., L, D]; the L positions are offset, offset + 1, ... */
  forward(x: Tensor, offset = 0): Tensor {
    const D = this.dims;
    if (x.dim(-1) !== D) throw new RangeError(`RoPE over ${D} dims got [${x.shape}]`);
    const L = x.dim(-2);
    const xs = x.toFloat32Array();
    const out = new Float32Array(xs.length);
    const half = D / 2;
    for (let row = 0; row * D < xs.length; row++) {
      const pos = offset + (row % L);
      const o = row * D;
      for (let i = 0; i < half; i++) {
        const angle = pos * this.invFreq[i];
        const cos = Math.cos(angle);
        const sin = Math.sin(angle);
        const a = this.traditional ? o + 2 * i : o + i;
        const b = this.traditional ? a + 1 : a + half;
        out[a] = xs[a] * cos - xs[b] * sin;
        out[b] = xs[b] * cos + xs[a] * sin;
      }
    }
    return new Tensor(out, x.shape);
  }
}
