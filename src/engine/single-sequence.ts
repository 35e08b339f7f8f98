/**
 * One sequence on the batch-first forward pass, as the LanguageModel interface has it (feed
 * tokens, get the next-token logits): what tests, the benchmark and perplexity use when they want
 * logits rather than sampled tokens. Its cache is a paged one whose blocks are its own, in order.
 */
import { SEQ_FIELDS, type KvDtype } from "../kernels/kernels.js";
import type { LanguageModel, Sequence } from "../models/language-model.js";
import { ContextOverflowError } from "../models/transformer.js";
import type { ModelConfig } from "../models/config.js";
import type { BatchForward } from "./batch-forward.js";
import { PagedKvCache } from "./kv-cache.js";

export class SingleSequenceModel implements LanguageModel {
  readonly config: ModelConfig;

  constructor(
    readonly forward: BatchForward,
    readonly kvDtype: KvDtype,
    readonly blockSize = 16,
  ) {
    this.config = forward.config;
  }

  newSequence(): Sequence {
    const blocks = Math.ceil(this.config.maxPositionEmbeddings / this.blockSize);
    const cache = new PagedKvCache(this.config, blocks, this.blockSize, this.kvDtype);
    const table = Int32Array.from({ length: blocks }, (_, i) => i);
    const V = this.config.vocabSize;
    const logits = new Float32Array(V);
    let length = 0;
    return {
      get length() {
        return length;
      },
      forward: (ids) => {
        if (ids.length === 0) throw new RangeError("forward needs at least one token");
        const S = length + ids.length;
        const context = this.config.maxPositionEmbeddings;
        if (S > context) throw new ContextOverflowError(`${S} tokens exceed the model's context of ${context} (max_position_embeddings)`);
        for (const id of ids)
          if (!Number.isInteger(id) || id < 0 || id >= V) throw new RangeError(`token id ${id} is outside the vocabulary (0..${V - 1})`);
        const T = ids.length;
        const positions = Int32Array.from({ length: T }, (_, i) => length + i);
        const seqs = new Int32Array(SEQ_FIELDS);
        seqs.set([0, T, S, 0]);
        const batch = { ids: Int32Array.from(ids), positions, slots: positions, seqs, blockTables: table, logitRows: Int32Array.of(T - 1) };
        this.forward.forward(batch, cache, (_, row) => logits.set(row));
        length = S;
        return logits;
      },
    };
  }
}
