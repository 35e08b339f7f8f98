/**
 * An OpenAI request body (already checked against its schema) → what the engine takes. Unset
 * sampling fields come from the model's generation_config.json; max_tokens defaults to the rest
 * of the context (or of the KV pool, when that is smaller); the stop tokens are the model's
 * end-of-sequence ids unless ignore_eos.
 */
import { DEFAULT_SAMPLING, type RequestParams, type SamplingParams } from "../engine/api.js";
import { invalidRequest } from "./errors.js";
import type { SamplingBody } from "./openai-schemas.js";
import type { SamplingDefaults } from "../generation/generation-config.js";

/** What the defaults and limits depend on. */
export interface ModelLimits {
  /** The model's context length. */
  contextLength: number;
  /** Tokens the KV pool holds. */
  poolTokens: number;
  vocabSize: number;
  eosTokenIds: readonly number[];
  /** The model's sampling defaults (generation_config.json). */
  sampling: SamplingDefaults;
}

export interface ChoiceSettings {
  /** The engine's parameters for the first choice; choice j samples with seed + j when a seed is given. */
  params: RequestParams;
  stops: string[];
  n: number;
  stream: boolean;
  includeUsage: boolean;
}

export interface ParamOptions {
  /** The body field that holds the prompt, for errors: "messages" or "prompt". */
  promptField: string;
  /** The body's max tokens (chat: max_completion_tokens, else max_tokens). */
  maxTokens: number | null | undefined;
  /** The name of that field, for errors. */
  maxTokensField: string;
  /** Top alternatives per token when log-probabilities are asked for; undefined for none. */
  logprobs: number | undefined;
}

const given = <T>(value: T | null | undefined): value is T => value !== null && value !== undefined;

function tokenId(value: number, limits: ModelLimits, field: string): number {
  if (!Number.isInteger(value) || value < 0 || value >= limits.vocabSize) {
    throw invalidRequest(`${field}: token id ${value} is not in the vocabulary (0..${limits.vocabSize - 1})`, field);
  }
  return value;
}

export function samplingParams(body: SamplingBody, limits: ModelLimits): SamplingParams {
  const defaults = limits.sampling;
  const sampling: SamplingParams = {
    ...DEFAULT_SAMPLING,
    temperature: body.temperature ?? defaults.temperature ?? DEFAULT_SAMPLING.temperature,
    // vLLM spells "off" as -1, this engine as 0.
    topK: given(body.top_k) ? Math.max(body.top_k, 0) : (defaults.topK ?? DEFAULT_SAMPLING.topK),
    topP: body.top_p ?? defaults.topP ?? DEFAULT_SAMPLING.topP,
    minP: body.min_p ?? defaults.minP ?? DEFAULT_SAMPLING.minP,
    presencePenalty: body.presence_penalty ?? DEFAULT_SAMPLING.presencePenalty,
    frequencyPenalty: body.frequency_penalty ?? DEFAULT_SAMPLING.frequencyPenalty,
    repetitionPenalty: body.repetition_penalty ?? defaults.repetitionPenalty ?? DEFAULT_SAMPLING.repetitionPenalty,
  };
  if (given(body.seed)) sampling.seed = body.seed;
  if (given(body.logit_bias)) {
    const bias: Record<number, number> = {};
    for (const [key, value] of Object.entries(body.logit_bias)) {
      if (!/^\d+$/.test(key)) throw invalidRequest(`logit_bias: the key "${key}" is not a token id`, "logit_bias");
      bias[tokenId(Number(key), limits, "logit_bias")] = value;
    }
    if (Object.keys(bias).length > 0) sampling.logitBias = bias;
  }
  return sampling;
}

/** Checks the prompt's length and builds the request's settings. */
export function choiceSettings(body: SamplingBody, promptIds: number[], limits: ModelLimits, opts: ParamOptions): ChoiceSettings {
  if (promptIds.length === 0) throw invalidRequest(`${opts.promptField}: the prompt is empty: give at least one token`, opts.promptField);
  const room = Math.min(limits.contextLength, limits.poolTokens);
  if (promptIds.length >= room) {
    const what =
      limits.poolTokens < limits.contextLength ? `the KV pool's ${limits.poolTokens} tokens` : `the model's context of ${room} tokens`;
    throw invalidRequest(
      `the prompt is ${promptIds.length} tokens, which leaves no room to generate in ${what}; shorten the prompt`,
      opts.promptField,
      "context_length_exceeded",
    );
  }
  const stopIds = body.ignore_eos === true ? [] : [...limits.eosTokenIds];
  for (const id of body.stop_token_ids ?? []) if (!stopIds.includes(id)) stopIds.push(tokenId(id, limits, "stop_token_ids"));
  const stops = body.stop === null || body.stop === undefined ? [] : typeof body.stop === "string" ? [body.stop] : body.stop;
  const params: RequestParams = {
    promptIds,
    maxTokens: opts.maxTokens ?? room - promptIds.length,
    sampling: samplingParams(body, limits),
    stopIds,
  };
  if (opts.logprobs !== undefined) params.logprobs = opts.logprobs;
  return {
    params,
    stops: stops.filter((s) => s.length > 0),
    n: body.n ?? 1,
    stream: body.stream === true,
    includeUsage: body.stream === true && body.stream_options?.include_usage === true,
  };
}

/** The parameters of choice `index`: its own seed when the request gave one, so that choices differ. */
export function paramsForChoice(params: RequestParams, index: number): RequestParams {
  if (index === 0 || params.sampling.seed === undefined) return params;
  return { ...params, sampling: { ...params.sampling, seed: params.sampling.seed + index } };
}
