/**
 * Attention: softmax(q kᵀ · scale + mask) v, for multi-head and grouped-query attention.
 */
import { add, matmul, mul, softmax } from "../tensor/ops.js";
import { Tensor } from "../tensor/tensor.js";
import type { KVCache } from "./kv-cache.js";
import type { Linear } from "./linear.js";
import type { RMSNorm } from "./rms-norm.js";
import type { RoPE } from "./rope.js";

/** "causal", or an additive mask broadcastable to [B, H, L, S] (0 to keep, -Infinity to hide). */
export type AttentionMask = "causal" | Tensor;

/**
 * Additive causal mask [L, S]: query i (at absolute position offset + i, offset = S - L) sees
 * keys 0 .. offset + i and nothing after.
 */
export function causalMask(L: number, S: number): Tensor {
  const offset = S - L;
  const out = new Float32Array(L * S);
  for (let i = 0; i < L; i++) for (let j = offset + i + 1; j < S; j++) out[i * S + j] = -Infinity;
  return new Tensor(out, [L, S]);
}

/**
 * q: [B, H, L, D]; k, v: [B, H_kv, S, D] with H a multiple of H_kv. Each group of G = H / H_kv
 * query heads shares one key/value head: q is viewed as [B, H_kv, G, L, D] and k, v broadcast
 * over G, so repeated K/V are never materialised.
 */
export function scaledDotProductAttention(q: Tensor, k: Tensor, v: Tensor, opts: { scale: number; mask?: AttentionMask }): Tensor {
  const [B, H, L, D] = q.shape;
  const [Bk, Hkv, S, Dk] = k.shape;
  if (q.ndim !== 4 || k.ndim !== 4 || v.ndim !== 4) throw new RangeError("attention expects 4-d q, k, v ([B, heads, length, D])");
  if (Bk !== B || Dk !== D || v.shape[0] !== B || v.shape[1] !== Hkv || v.shape[2] !== S) {
    throw new RangeError(`attention shapes do not agree: q [${q.shape}], k [${k.shape}], v [${v.shape}]`);
  }
  if (H % Hkv !== 0) throw new RangeError(`query heads (${H}) must be a multiple of key/value heads (${Hkv})`);
  const G = H / Hkv;
  const qg = q.reshape([B, Hkv, G, L, D]);
  const kg = k.expandDims(2); // [B, H_kv, 1, S, D]
  const vg = v.expandDims(2);
  let scores = mul(matmul(qg, kg.transpose(-2, -1)), opts.scale); // [B, H_kv, G, L, S]
  if (opts.mask) {
    const mask = opts.mask === "causal" ? causalMask(L, S) : opts.mask.broadcastTo([B, H, L, S]).reshape([B, Hkv, G, L, S]);
    scores = add(scores, mask);
  }
  return matmul(softmax(scores, -1), vg).reshape([B, H, L, D]);
}

export interface AttentionWeights {
  qProj: Linear;
  kProj: Linear;
  vProj: Linear;
  oProj: Linear;
  /** Qwen3 normalises each head's q and k before RoPE. */
  qNorm?: RMSNorm;
  kNorm?: RMSNorm;
}

/** The attention sub-block of a decoder layer: projections, RoPE, cache, SDPA, output projection. */
export class Attention {
  readonly scale: number;

  constructor(
    readonly w: AttentionWeights,
    readonly nHeads: number,
    readonly nKvHeads: number,
    readonly headDim: number,
    readonly rope: RoPE,
  ) {
    this.scale = 1 / Math.sqrt(headDim);
  }

  /** x: [B, L, E] -> [B, L, E]. */
  forward(x: Tensor, cache?: KVCache): Tensor {
    const [B, L] = x.shape;
    const { nHeads: H, nKvHeads: Hkv, headDim: D } = this;
    let q = this.w.qProj.forward(x).reshape([B, L, H, D]);
    let k = this.w.kProj.forward(x).reshape([B, L, Hkv, D]);
    const v = this.w.vProj.forward(x).reshape([B, L, Hkv, D]).transpose(1, 2);
    if (this.w.qNorm) q = this.w.qNorm.forward(q);
    if (this.w.kNorm) k = this.w.kNorm.forward(k);
    const offset = cache?.offset ?? 0;
    q = this.rope.forward(q.transpose(1, 2), offset); // [B, H, L, D]
    k = this.rope.forward(k.transpose(1, 2), offset); // [B, H_kv, L, D]
    const { keys, values } = cache ? cache.update(k, v) : { keys: k, values: v };
    const o = scaledDotProductAttention(q, keys, values, { scale: this.scale, mask: "causal" });
    return this.w.oProj.forward(o.transpose(1, 2).reshape([B, L, H * D]));
  }
}
