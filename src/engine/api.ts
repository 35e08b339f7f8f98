/**
 * What the serving engine takes and gives: a request's parameters, the events of its tokens,
 * and the engine's counters. The same shapes cross the worker-thread boundary (structured clone),
 * so they hold plain data only.
 */

/** Per-request sampling. Penalties follow OpenAI (presence, frequency) and Hugging Face (repetition). */
export interface SamplingParams {
  /** 0 is greedy. */
  temperature: number;
  /** 0 = off. */
  topK: number;
  /** 1 = off. */
  topP: number;
  /** 0 = off. */
  minP: number;
  /** Seeds this request's own generator; without one a seed is drawn and reported. */
  seed?: number;
  /** Subtracted once from the logit of every token generated so far (OpenAI; -2..2). */
  presencePenalty: number;
  /** Subtracted from a token's logit once per time it was generated so far (OpenAI; -2..2). */
  frequencyPenalty: number;
  /** > 1 makes tokens of the prompt and output so far less likely (divides positive logits, multiplies negative ones). 1 = off. */
  repetitionPenalty: number;
  /** Token id → bias added to its logit (OpenAI; -100..100). */
  logitBias?: Record<number, number>;
}

export const DEFAULT_SAMPLING: SamplingParams = {
  temperature: 1,
  topK: 0,
  topP: 1,
  minP: 0,
  presencePenalty: 0,
  frequencyPenalty: 0,
  repetitionPenalty: 1,
};

export interface RequestParams {
  promptIds: number[];
  /** Most tokens to generate. */
  maxTokens: number;
  sampling: SamplingParams;
  /** Token ids that end the request (the stop token is not part of the output). Empty with ignore_eos. */
  stopIds: number[];
  /** Log-probabilities of each generated token, with this many top alternatives (0..20); undefined = none. */
  logprobs?: number;
}

export interface TopLogprob {
  id: number;
  logprob: number;
}

export interface TokenOutput {
  id: number;
  /** The token's log-probability under the model (after temperature 1, before any filter), when logprobs were asked for. */
  logprob?: number;
  /** The most likely tokens at that step, best first, when logprobs were asked for. */
  top?: TopLogprob[];
}

/** "stop": a stop token; "length": max tokens or the context; "abort": cancelled; "error": see message. */
export type FinishReason = "stop" | "length" | "abort" | "error";

/** What one engine step produced for one request. */
export interface RequestEvent {
  id: string;
  /** Tokens generated in this step (zero while its prompt is still being prefilled). */
  tokens: TokenOutput[];
  /** Set on the request's last event. */
  finish?: FinishReason;
  /** With finish "error": what went wrong, one line. */
  message?: string;
  /** Prompt tokens, and how many of them came from the prefix cache (set once prefill is done). */
  promptTokens?: number;
  cachedTokens?: number;
  /** The seed the request sampled with (set on its first event). */
  seed?: number;
}

/** One step of the engine, for --trace-steps and the step metrics. */
export interface StepTrace {
  step: number;
  /** Wall time of the step, ms. */
  ms: number;
  /** Requests that ran, with the tokens each computed and whether they were prompt (prefill) or generated (decode) tokens. */
  requests: { id: string; tokens: number; kind: "prefill" | "decode" }[];
}

export interface EngineStats {
  running: number;
  waiting: number;
  blocksTotal: number;
  blocksUsed: number;
  /** Full prompt blocks looked up in the prefix cache, and how many were found. */
  prefixQueries: number;
  prefixHits: number;
  preemptions: number;
  promptTokens: number;
  generatedTokens: number;
  /** Tokens per KV block. */
  blockSize: number;
}

/** A request the engine can never serve (it would not fit the context or the KV pool). */
export class RequestRejectedError extends Error {
  override name = "RequestRejectedError";
}
