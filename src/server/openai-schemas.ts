/**
 * JSON schemas of the request bodies, checked by Fastify (Ajv) before a route runs, and the
 * TypeScript types of the bodies that pass. Fields follow OpenAI's API; the extras vLLM accepts
 * (top_k, min_p, repetition_penalty, ignore_eos, stop_token_ids) are accepted too, and fields
 * this server does not use (user, service_tier, …) pass through unchecked, as real clients
 * send them. Every optional field may also be null, which clients send for "unset".
 */

type Schema = Record<string, unknown>;

/** The schema, or null. */
function orNull(schema: Schema): Schema {
  const type = schema.type;
  return { ...schema, type: Array.isArray(type) ? [...type, "null"] : [type, "null"] };
}

function bounded(type: "integer" | "number", min?: number, max?: number): Schema {
  const schema: Schema = { type };
  if (min !== undefined) schema.minimum = min;
  if (max !== undefined) schema.maximum = max;
  return orNull(schema);
}
const integer = (min?: number, max?: number): Schema => bounded("integer", min, max);
const number = (min?: number, max?: number): Schema => bounded("number", min, max);
const boolean = orNull({ type: "boolean" });

/** The most choices one request may ask for. */
export const MAX_N = 64;
/** The most top alternatives per token (OpenAI's limit for chat). */
export const MAX_TOP_LOGPROBS = 20;

/** What chat and legacy completions share: sampling, stopping and streaming. */
const samplingProperties: Record<string, Schema> = {
  model: orNull({ type: "string" }),
  max_tokens: integer(0),
  temperature: number(0, 2),
  top_p: orNull({ type: "number", exclusiveMinimum: 0, maximum: 1 }),
  top_k: integer(-1),
  min_p: number(0, 1),
  n: integer(1, MAX_N),
  stream: boolean,
  stream_options: orNull({ type: "object", properties: { include_usage: boolean } }),
  stop: { type: ["string", "array", "null"], items: { type: "string" }, maxItems: 4 },
  seed: integer(-Number.MAX_SAFE_INTEGER, Number.MAX_SAFE_INTEGER),
  presence_penalty: number(-2, 2),
  frequency_penalty: number(-2, 2),
  repetition_penalty: orNull({ type: "number", exclusiveMinimum: 0, maximum: 10 }),
  logit_bias: orNull({ type: "object", additionalProperties: { type: "number", minimum: -100, maximum: 100 } }),
  ignore_eos: boolean,
  stop_token_ids: orNull({ type: "array", items: { type: "integer", minimum: 0 } }),
};

const messagesSchema: Schema = {
  type: "array",
  minItems: 1,
  items: {
    type: "object",
    required: ["role"],
    properties: {
      role: { type: "string", enum: ["system", "developer", "user", "assistant", "tool"] },
      content: {
        type: ["string", "array", "null"],
        items: { type: "object", required: ["type"], properties: { type: { type: "string" }, text: { type: "string" } } },
      },
      name: orNull({ type: "string" }),
    },
  },
};

export const chatCompletionSchema: Schema = {
  type: "object",
  required: ["messages"],
  properties: {
    ...samplingProperties,
    max_tokens: integer(1),
    max_completion_tokens: integer(1),
    messages: messagesSchema,
    logprobs: boolean,
    top_logprobs: integer(0, MAX_TOP_LOGPROBS),
  },
};

export const completionSchema: Schema = {
  type: "object",
  required: ["prompt"],
  properties: {
    ...samplingProperties,
    // A string, strings, token ids or lists of token ids: checked in completions.ts, which can
    // say which of them is wrong better than a schema's anyOf can.
    prompt: { type: ["string", "array"] },
    echo: boolean,
    logprobs: integer(0, MAX_TOP_LOGPROBS),
    suffix: orNull({ type: "string", maxLength: 0 }),
    best_of: integer(1, MAX_N),
  },
};

export const tokenizeSchema: Schema = {
  type: "object",
  properties: {
    model: orNull({ type: "string" }),
    content: { type: "string" },
    prompt: { type: "string" },
    messages: messagesSchema,
    add_special: boolean,
    add_special_tokens: boolean,
    add_generation_prompt: boolean,
    with_pieces: boolean,
  },
};

export const detokenizeSchema: Schema = {
  type: "object",
  required: ["tokens"],
  properties: {
    model: orNull({ type: "string" }),
    tokens: { type: "array", items: { type: "integer", minimum: 0 } },
  },
};

export interface ContentPart {
  type: string;
  text?: string;
}

export interface ChatMessageBody {
  role: "system" | "developer" | "user" | "assistant" | "tool";
  content?: string | ContentPart[] | null;
  name?: string | null;
}

/** The fields of a body that passed samplingProperties. */
export interface SamplingBody {
  model?: string | null;
  max_tokens?: number | null;
  temperature?: number | null;
  top_p?: number | null;
  top_k?: number | null;
  min_p?: number | null;
  n?: number | null;
  stream?: boolean | null;
  stream_options?: { include_usage?: boolean | null } | null;
  stop?: string | string[] | null;
  seed?: number | null;
  presence_penalty?: number | null;
  frequency_penalty?: number | null;
  repetition_penalty?: number | null;
  logit_bias?: Record<string, number> | null;
  ignore_eos?: boolean | null;
  stop_token_ids?: number[] | null;
}

export interface ChatCompletionBody extends SamplingBody {
  messages: ChatMessageBody[];
  max_completion_tokens?: number | null;
  logprobs?: boolean | null;
  top_logprobs?: number | null;
}

export interface CompletionBody extends SamplingBody {
  prompt: string | unknown[];
  echo?: boolean | null;
  logprobs?: number | null;
}

export interface TokenizeBody {
  model?: string | null;
  content?: string;
  prompt?: string;
  messages?: ChatMessageBody[];
  add_special?: boolean | null;
  add_special_tokens?: boolean | null;
  add_generation_prompt?: boolean | null;
  with_pieces?: boolean | null;
}

export interface DetokenizeBody {
  model?: string | null;
  tokens: number[];
}
