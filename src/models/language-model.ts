/**
 * What generation needs from a model, whichever backend runs it: start a sequence, feed it
 * tokens, get the logits for the next one.
 */
import type { ModelConfig } from "./config.js";

export interface Sequence {
  /** Tokens fed so far (the position of the next one). */
  readonly length: number;
  /**
   * Feeds tokens (the whole prompt at once, then one at a time); returns the logits [V] after
   * the last. The array may be reused by the next call: copy it to keep it.
   */
  forward(ids: readonly number[]): Float32Array;
}

export interface LanguageModel {
  readonly config: ModelConfig;
  /** A new, empty sequence with its own KV cache. */
  newSequence(): Sequence;
}
