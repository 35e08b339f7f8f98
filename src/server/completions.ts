/**
 * POST /v1/completions, the legacy API: a prompt as a string, strings, token ids or lists of
 * token ids (each prompt runs n choices, indexed prompt-major), `echo` of the prompt, and
 * `logprobs` in the legacy shape (tokens, token_logprobs, top_logprobs, text_offset).
 */
import { randomUUID } from "node:crypto";
import type { FastifyInstance, FastifyReply } from "fastify";
import { StreamDecoder } from "../tokenizer/stream-decoder.js";
import { invalidRequest, serverError, toApiError } from "./errors.js";
import type { ReleasedToken } from "../api/choice-run.js";
import { completionSchema, type CompletionBody } from "./openai-schemas.js";
import { choiceSettings } from "./request-params.js";
import {
  admit,
  checkModelName,
  failure,
  finishReason,
  launch,
  usage,
  type LoadedModel,
  type PromptRun,
  type ServerState,
} from "./serving.js";
import { SseStream } from "./sse.js";

const PROMPT_SHAPES = "a string, an array of strings, an array of token ids or an array of arrays of token ids";

/** A prompt as given: its text (for echo) and its ids. */
interface Prompt {
  text: string;
  ids: number[];
}

function tokenIds(value: unknown[], model: LoadedModel, where: string): number[] {
  const vocab = model.limits.vocabSize;
  for (const id of value) {
    if (typeof id !== "number" || !Number.isInteger(id))
      throw invalidRequest(`${where} must hold token ids (whole numbers): ${PROMPT_SHAPES}`, "prompt");
    if (id < 0 || id >= vocab) throw invalidRequest(`${where}: token id ${id} is not in the vocabulary (0..${vocab - 1})`, "prompt");
  }
  return value as number[];
}

/** The prompt field as one or more prompts. */
export function parsePrompts(prompt: CompletionBody["prompt"], model: LoadedModel): Prompt[] {
  const { tokenizer } = model;
  const fromText = (text: string): Prompt => ({ text, ids: tokenizer.encode(text) });
  const fromIds = (ids: number[]): Prompt => ({ text: tokenizer.decode(ids, { skipSpecialTokens: true }), ids });
  if (typeof prompt === "string") return [fromText(prompt)];
  if (prompt.length === 0) throw invalidRequest(`prompt is an empty array: give ${PROMPT_SHAPES}`, "prompt");
  if (prompt.every((p) => typeof p === "string")) return (prompt as string[]).map(fromText);
  if (prompt.every((p) => typeof p === "number")) return [fromIds(tokenIds(prompt, model, "prompt"))];
  if (prompt.every((p) => Array.isArray(p))) {
    return (prompt as unknown[][]).map((ids, i) => {
      if (ids.length === 0) throw invalidRequest(`prompt.${i} is an empty list of token ids`, "prompt");
      return fromIds(tokenIds(ids, model, `prompt.${i}`));
    });
  }
  throw invalidRequest(`prompt must be ${PROMPT_SHAPES}`, "prompt");
}

interface LegacyLogprobs {
  tokens: string[];
  token_logprobs: (number | null)[];
  top_logprobs: (Record<string, number> | null)[];
  text_offset: number[];
}

/** The legacy shape of some tokens; offsets are shifted by `base` (the echoed prompt's length). */
function legacyLogprobs(model: LoadedModel, tokens: ReleasedToken[], base: number): LegacyLogprobs {
  const out: LegacyLogprobs = { tokens: [], token_logprobs: [], top_logprobs: [], text_offset: [] };
  for (const t of tokens) {
    out.tokens.push(t.text);
    out.token_logprobs.push(t.logprob ?? null);
    // The alternatives and, as OpenAI's API does, the sampled token itself, under the same
    // text as in `tokens`.
    const top: Record<string, number> = {};
    for (const alt of t.top ?? []) top[alt.id === t.id ? t.text : model.tokenText.piece(alt.id)] ??= alt.logprob;
    if (t.logprob !== undefined) top[t.text] ??= t.logprob;
    out.top_logprobs.push(top);
    out.text_offset.push(base + t.offset);
  }
  return out;
}

/** The prompt's tokens in the legacy shape, for echo: their log-probabilities are not computed (null). */
function promptLogprobs(model: LoadedModel, prompt: Prompt): LegacyLogprobs {
  const decoder = new StreamDecoder(model.tokenizer, { skipSpecialTokens: true });
  const out: LegacyLogprobs = { tokens: [], token_logprobs: [], top_logprobs: [], text_offset: [] };
  let offset = 0;
  prompt.ids.forEach((id, i) => {
    let piece = decoder.push(id);
    if (i === prompt.ids.length - 1) piece += decoder.flush();
    out.tokens.push(piece);
    out.token_logprobs.push(null);
    out.top_logprobs.push(null);
    out.text_offset.push(offset);
    offset += piece.length;
  });
  return out;
}

function concatLogprobs(a: LegacyLogprobs, b: LegacyLogprobs): LegacyLogprobs {
  return {
    tokens: [...a.tokens, ...b.tokens],
    token_logprobs: [...a.token_logprobs, ...b.token_logprobs],
    top_logprobs: [...a.top_logprobs, ...b.top_logprobs],
    text_offset: [...a.text_offset, ...b.text_offset],
  };
}

export function registerCompletions(app: FastifyInstance, state: ServerState): void {
  app.post<{ Body: CompletionBody }>("/v1/completions", { schema: { body: completionSchema } }, async (request, reply) => {
    const body = request.body;
    const model = state.requireModel();
    checkModelName(model, body.model);
    const prompts = parsePrompts(body.prompt, model);
    const runs: PromptRun[] = prompts.map((p) => ({
      settings: choiceSettings(body, p.ids, model.limits, {
        promptField: "prompt",
        maxTokens: body.max_tokens,
        maxTokensField: "max_tokens",
        logprobs: body.logprobs ?? undefined,
      }),
    }));
    admit(state, model, runs, "max_tokens");
    const settings = runs[0].settings;
    const n = settings.n;
    const echo = body.echo === true;
    const wantLogprobs = settings.params.logprobs !== undefined;
    const id = `cmpl-${randomUUID().replaceAll("-", "")}`;
    const base = { id, created: Math.floor(Date.now() / 1000), model: model.name };
    const promptOf = (index: number): Prompt => prompts[Math.floor(index / n)];
    const echoText = (index: number): string => (echo ? promptOf(index).text : "");

    if (!settings.stream) {
      const results = await launch(state, model, runs, id, reply).results();
      const error = failure(state, results);
      if (error) throw error;
      return {
        ...base,
        object: "text_completion",
        choices: results.map((r, index) => {
          const prefix = echoText(index);
          let logprobs: LegacyLogprobs | null = null;
          if (wantLogprobs) {
            logprobs = legacyLogprobs(model, r.tokens, prefix.length);
            if (echo) logprobs = concatLogprobs(promptLogprobs(model, promptOf(index)), logprobs);
          }
          return { index, text: prefix + r.text, logprobs, finish_reason: finishReason(r) };
        }),
        usage: usage(results, n),
      };
    }
    streamCompletions(state, model, runs, reply, base, { wantLogprobs, includeUsage: settings.includeUsage, echoText, promptOf, echo });
  });
}

function streamCompletions(
  state: ServerState,
  model: LoadedModel,
  runs: PromptRun[],
  reply: FastifyReply,
  base: { id: string; created: number; model: string },
  opts: { wantLogprobs: boolean; includeUsage: boolean; echo: boolean; echoText: (i: number) => string; promptOf: (i: number) => Prompt },
): void {
  const sse = new SseStream(reply);
  const extra = opts.includeUsage ? { usage: null } : {};
  const chunk = (index: number, text: string, logprobs: LegacyLogprobs | null, finish: string | null) => ({
    ...base,
    object: "text_completion",
    choices: [{ index, text, logprobs, finish_reason: finish }],
    ...extra,
  });
  const n = runs[0].settings.n;
  const choices = runs.length * n;
  if (opts.echo) {
    for (let index = 0; index < choices; index++) {
      sse.send(chunk(index, opts.echoText(index), opts.wantLogprobs ? promptLogprobs(model, opts.promptOf(index)) : null, null));
    }
  }
  let group: ReturnType<typeof launch>;
  try {
    group = launch(state, model, runs, base.id, reply, (index) => ({
      onDelta: (delta) => {
        const logprobs = opts.wantLogprobs ? legacyLogprobs(model, delta.tokens, opts.echoText(index).length) : null;
        sse.send(chunk(index, delta.text, logprobs, null));
      },
    }));
  } catch (err) {
    sse.fail(toApiError(err));
    return;
  }
  group.runs.forEach((run, index) =>
    run.done.then((result) => {
      if (result.finish === "stop" || result.finish === "length") {
        sse.send(chunk(index, "", null, finishReason(result)));
        return;
      }
      group.abort("another choice of this request failed");
      sse.fail(failure(state, [result]) ?? serverError("the request failed"));
    }),
  );
  void group.results().then((results) => {
    if (!sse.open) return;
    if (opts.includeUsage) sse.send({ ...base, object: "text_completion", choices: [], usage: usage(results, n) });
    sse.done();
  });
}
