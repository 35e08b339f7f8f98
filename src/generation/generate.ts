/**
 * Autoregressive generation: prefill the prompt in one forward pass, then decode one token at
 * a time against the KV cache until a stop token, the token budget or the context runs out.
 */
import type { LanguageModel } from "../models/language-model.js";
import type { Sampler } from "./sampler.js";

export interface GenerateOptions {
  sampler: Sampler;
  maxTokens: number;
  /** Token ids that end generation (the stop token itself is not yielded). */
  stopIds?: Iterable<number>;
}

export interface GeneratedToken {
  id: number;
  /** The logits [V] the token was picked from. */
  logits: Float32Array;
}

export type FinishReason = "stop" | "length";

export class PromptTooLongError extends Error {
  override name = "PromptTooLongError";
}

/** Throws a clear error when the prompt cannot fit the model's context. */
export function checkPromptFits(model: LanguageModel, promptLength: number): void {
  const context = model.config.maxPositionEmbeddings;
  if (promptLength === 0) {
    throw new PromptTooLongError("the prompt is empty and the tokenizer adds no BOS token: give a non-empty prompt");
  }
  if (promptLength >= context) {
    throw new PromptTooLongError(
      `the prompt is ${promptLength} tokens but the model's context is ${context} (max_position_embeddings), ` +
        `leaving no room to generate: shorten the prompt`,
    );
  }
}

/**
 * Yields generated tokens one by one; returns why it stopped. Generation ends early at the
 * context length, so a long `maxTokens` never overflows it.
 */
export function* generate(
  model: LanguageModel,
  promptIds: readonly number[],
  opts: GenerateOptions,
): Generator<GeneratedToken, FinishReason> {
  checkPromptFits(model, promptIds.length);
  const stop = new Set(opts.stopIds ?? []);
  const sequence = model.newSequence();
  const budget = Math.min(opts.maxTokens, model.config.maxPositionEmbeddings - promptIds.length);
  let input: readonly number[] = promptIds;
  for (let n = 0; n < budget; n++) {
    const logits = sequence.forward(input);
    const id = opts.sampler.sample(logits);
    if (stop.has(id)) return "stop";
    yield { id, logits };
    input = [id];
  }
  return "length";
}
