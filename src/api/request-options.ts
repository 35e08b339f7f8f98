/**
 * What generate() and chat() take, and how it becomes the engine's RequestParams: unset sampling
 * settings come from the model's generation_config.json, maxTokens defaults to the rest of the
 * context (or of the KV pool, when that is smaller), and the model's end-of-sequence ids stop
 * the request unless ignoreEos. Bad values throw here, in the caller's thread, before anything
 * is queued.
 */
import { DEFAULT_SAMPLING, RequestRejectedError, type RequestParams, type SamplingParams } from "../engine/api.js";
import { checkRequest } from "../engine/engine.js";
import { Sampler } from "../generation/sampler.js";
import type { ModelConfig } from "../models/config.js";
import type { SamplingDefaults } from "../generation/generation-config.js";

export interface GenerateOptions {
  /** Most tokens to generate (default: the rest of the context, or of the KV pool when that is smaller). */
  maxTokens?: number;
  /** 0 is greedy. Unset sampling settings come from generation_config.json. */
  temperature?: number;
  topK?: number;
  topP?: number;
  minP?: number;
  /** Makes sampled output reproducible. */
  seed?: number;
  presencePenalty?: number;
  frequencyPenalty?: number;
  repetitionPenalty?: number;
  /** Token id → bias added to its logit. */
  logitBias?: Record<number, number>;
  /** Text that ends the output (not included in it), matched across token boundaries; at most 4. */
  stop?: string | readonly string[];
  /** Token ids that end the output, besides the model's end-of-sequence ids. */
  stopTokenIds?: readonly number[];
  /** Do not stop at the model's end-of-sequence ids. */
  ignoreEos?: boolean;
  /** Give each token's log-probability and this many top alternatives (0 to 20). */
  logprobs?: number;
  /** Cancels the request: its KV blocks are freed and the output ends with finishReason "abort". */
  signal?: AbortSignal;
}

/** What the defaults and limits depend on. */
export interface RequestDefaults {
  config: ModelConfig;
  /** Tokens the KV pool holds. */
  poolTokens: number;
  eosTokenIds: readonly number[];
  /** generation_config.json's sampling settings. */
  sampling: SamplingDefaults;
}

/** The engine's parameters and the stop strings of one request; throws RangeError or RequestRejectedError for bad values. */
export function requestParams(
  promptIds: number[],
  opts: GenerateOptions,
  defaults: RequestDefaults,
): { params: RequestParams; stops: string[] } {
  const room = Math.min(defaults.config.maxPositionEmbeddings, defaults.poolTokens);
  if (opts.maxTokens === undefined && promptIds.length >= room) {
    throw new RequestRejectedError(
      `the prompt is ${promptIds.length} tokens, which leaves no room to generate in ${room} tokens; shorten it`,
    );
  }
  const chosen: SamplingDefaults = { ...defaults.sampling };
  for (const key of ["temperature", "topK", "topP", "minP", "seed"] as const) if (opts[key] !== undefined) chosen[key] = opts[key];
  // The sampler's own checks, here rather than in the engine's thread.
  new Sampler(chosen);
  const sampling: SamplingParams = {
    ...DEFAULT_SAMPLING,
    ...chosen,
    presencePenalty: opts.presencePenalty ?? DEFAULT_SAMPLING.presencePenalty,
    frequencyPenalty: opts.frequencyPenalty ?? DEFAULT_SAMPLING.frequencyPenalty,
    repetitionPenalty: opts.repetitionPenalty ?? defaults.sampling.repetitionPenalty ?? DEFAULT_SAMPLING.repetitionPenalty,
  };
  if (opts.logitBias !== undefined) sampling.logitBias = opts.logitBias;
  const stopIds = [...new Set([...(opts.ignoreEos ? [] : defaults.eosTokenIds), ...(opts.stopTokenIds ?? [])])];
  const params: RequestParams = { promptIds, maxTokens: opts.maxTokens ?? room - promptIds.length, sampling, stopIds };
  if (opts.logprobs !== undefined) {
    if (!Number.isInteger(opts.logprobs) || opts.logprobs < 0 || opts.logprobs > 20) {
      throw new RangeError(`logprobs must be a whole number from 0 to 20, got ${opts.logprobs}`);
    }
    params.logprobs = opts.logprobs;
  }
  checkRequest(params, defaults.config, defaults.poolTokens, "maxTokens");
  // More than four stop strings are refused by the matcher, in the caller's thread too.
  const stops = typeof opts.stop === "string" ? [opts.stop] : [...(opts.stop ?? [])];
  return { params, stops };
}
