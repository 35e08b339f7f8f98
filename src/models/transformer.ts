/**
 * The decoder-only transformer shared by Qwen2, Qwen3 and Llama.
 *
 *   h_0   = embed(ids)
 *   a_l   = h_{l-1} + Attention(RMSNorm(h_{l-1}))
 *   h_l   = a_l + MLP(RMSNorm(a_l))
 *   logits = LMHead(RMSNorm(h_N))
 *
 * The architectures differ only in details the config records: q/k/v biases (Qwen2), per-head
 * q/k RMSNorm and an explicit head dim (Qwen3), and a tied or separate LM head.
 */
import type { Attention } from "../layers/attention.js";
import type { Embedding } from "../layers/embedding.js";
import { KVCache } from "../layers/kv-cache.js";
import type { Linear } from "../layers/linear.js";
import type { MLP } from "../layers/mlp.js";
import type { RMSNorm } from "../layers/rms-norm.js";
import { add } from "../tensor/ops.js";
import type { Tensor } from "../tensor/tensor.js";
import type { ModelConfig } from "./config.js";
import type { LanguageModel, Sequence } from "./language-model.js";

export class DecoderLayer {
  constructor(
    readonly inputNorm: RMSNorm,
    readonly attention: Attention,
    readonly postAttentionNorm: RMSNorm,
    readonly mlp: MLP,
  ) {}

  /** x: [B, L, E] -> [B, L, E]. */
  forward(x: Tensor, cache?: KVCache): Tensor {
    const h = add(x, this.attention.forward(this.inputNorm.forward(x), cache));
    return add(h, this.mlp.forward(this.postAttentionNorm.forward(h)));
  }
}

export class ContextOverflowError extends Error {
  override name = "ContextOverflowError";
}

export class Transformer implements LanguageModel {
  constructor(
    readonly config: ModelConfig,
    readonly embed: Embedding,
    readonly layers: readonly DecoderLayer[],
    readonly norm: RMSNorm,
    /** Separate LM head; undefined when it is tied to the embedding. */
    readonly lmHead?: Linear,
  ) {}

  /** One empty cache per layer, for a generation that decodes token by token. */
  newCache(): KVCache[] {
    return this.layers.map(() => new KVCache());
  }

  newSequence(): Sequence {
    const cache = this.newCache();
    return {
      get length() {
        return cache[0]?.offset ?? 0;
      },
      forward: (ids) => this.forward([ids], cache, { lastOnly: true }).toFloat32Array(),
    };
  }

  /**
   * ids: B sequences of L new tokens, continuing from what `cache` holds.
   * Returns logits [B, L, V], or [B, 1, V] for the last position only when `lastOnly` is set
   * (generation needs no more, and the LM head is the largest matmul).
   */
  forward(ids: readonly (readonly number[])[], cache?: readonly KVCache[], opts: { lastOnly?: boolean } = {}): Tensor {
    const offset = cache?.[0]?.offset ?? 0;
    const L = ids[0]?.length ?? 0;
    if (offset + L > this.config.maxPositionEmbeddings) {
      throw new ContextOverflowError(
        `${offset + L} tokens exceed the model's context of ${this.config.maxPositionEmbeddings} (max_position_embeddings)`,
      );
    }
    let h = this.embed.forward(ids);
    this.layers.forEach((layer, i) => {
      h = layer.forward(h, cache?.[i]);
    });
    if (opts.lastOnly) h = h.slice(1, L - 1, L);
    h = this.norm.forward(h);
    return this.lmHead ? this.lmHead.forward(h) : this.embed.asLinear(h);
  }
}
