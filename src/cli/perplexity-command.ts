/**
 * `tiny-llm perplexity`: a model's perplexity on a text file, computed the way llama.cpp's
 * `llama-perplexity` computes it, so that the two can be compared on the same file: the text is
 * tokenized whole (BOS added if the tokenizer adds one), cut into windows of --ctx tokens that do
 * not overlap, the first token of each window replaced by BOS where the tokenizer has one added,
 * and in each window the tokens of its second half are scored, each predicted from all the tokens
 * before it in its window. Perplexity is exp of the mean negative log-likelihood.
 *
 * With --stride S, the sliding windows of Hugging Face's "perplexity of fixed-length models" (and
 * mlx-lm's evaluation) instead: windows of --ctx tokens starting at 0, S, 2S, … until one reaches
 * the end of the text, each scoring only its tokens that the window before it did not (the first
 * window all but its first token), each predicted from the tokens before it in its window; the
 * text's tokens are used as they are, BOS (where the tokenizer adds one) only at its start.
 *
 * The log-probabilities come through the LanguageModel interface: each window's first half in one
 * forward pass, then one token at a time, which is slow but exact (every scored token's logits are
 * those generation would see).
 */
import { readFileSync } from "node:fs";
import { loadCheckpoint } from "../generation/load-checkpoint.js";
import { selectBackend } from "../engine/backend.js";
import type { LanguageModel } from "../models/language-model.js";
import { UsageError } from "./errors.js";
import { notice, status } from "./output.js";
import {
  BACKEND_OPTIONS,
  HUB_OPTIONS,
  MODEL_OPTION,
  backendHelp,
  localModel,
  modelHelp,
  parseBackendOptions,
  parseOptions,
  parseWholeNumber,
} from "./options.js";

export const PERPLEXITY_HELP = `Usage: tiny-llm perplexity -m MODEL --file TEXT [options]

Perplexity of the model on a text file, as llama.cpp's llama-perplexity computes it: windows of
--ctx tokens that do not overlap, the second half of each scored given the tokens before it. With
--stride, as Hugging Face and mlx-lm evaluate it: windows of --ctx tokens advancing by the stride,
each scoring only its tokens that the window before it did not.

Options:
${modelHelp(undefined)}
  --file TEXT         the text (UTF-8); it needs at least 2 × ctx tokens
  --ctx N             window length in tokens (default 512)
  --stride N          sliding windows that start N tokens apart, 1 ≤ N ≤ ctx (default: none,
                      llama-perplexity's windows)
  --chunks N          score only the first N windows (default: all)
${backendHelp()}
  --json              print one JSON object instead of a report
  -h, --help          show this help`;

export interface PerplexityResult {
  perplexity: number;
  /** Standard error of the perplexity, as llama-perplexity reports it after ±. */
  perplexityError: number;
  /** Mean negative log-likelihood per scored token, in nats. */
  meanNll: number;
  /** Tokens scored. */
  scoredTokens: number;
  /** Tokens in the whole text. */
  textTokens: number;
  /** Windows scored. */
  chunks: number;
  ctx: number;
  /** The sliding windows' stride, or undefined for llama-perplexity's windows. */
  stride: number | undefined;
}

/**
 * Perplexity of `model` on `ids` (the text's tokens): windows of `ctx` tokens, the first replaced
 * by `bos` when given, positions ctx/2 … ctx−2 of each predicting the token after them; or, with
 * `stride`, sliding windows (see stridedPerplexity).
 */
export function perplexity(
  model: LanguageModel,
  ids: readonly number[],
  opts: { ctx: number; chunks?: number; bos?: number; stride?: number },
): PerplexityResult {
  const { ctx } = opts;
  if (ctx < 4) throw new UsageError(`--ctx must be at least 4, got ${ctx}`);
  if (ctx > model.config.maxPositionEmbeddings) {
    throw new UsageError(`--ctx ${ctx} is longer than the model's context of ${model.config.maxPositionEmbeddings}`);
  }
  if (opts.stride !== undefined) return stridedPerplexity(model, ids, { ctx, stride: opts.stride, chunks: opts.chunks });
  if (ids.length < 2 * ctx) {
    throw new UsageError(`the text is ${ids.length} tokens; perplexity with --ctx ${ctx} needs at least ${2 * ctx}`);
  }
  const chunks = Math.min(opts.chunks ?? Infinity, Math.floor(ids.length / ctx));
  const first = Math.floor(ctx / 2);
  let nll = 0;
  let nll2 = 0;
  let count = 0;
  for (let c = 0; c < chunks; c++) {
    const window = ids.slice(c * ctx, (c + 1) * ctx);
    if (opts.bos !== undefined) window[0] = opts.bos;
    const sequence = model.newSequence();
    let logits = sequence.forward(window.slice(0, first + 1));
    for (let j = first; j < ctx - 1; j++) {
      if (j > first) logits = sequence.forward([window[j]]);
      const v = -logProbability(logits, window[j + 1]);
      nll += v;
      nll2 += v * v;
      count++;
    }
  }
  return result({ nll, nll2, count }, ids.length, chunks, ctx, undefined);
}

/**
 * Hugging Face's sliding windows: window w holds tokens [w·stride, w·stride + ctx) (cut at the
 * text's end) and scores each of its tokens past both its first and the previous window's end,
 * given the window's tokens before it. The last window is the first to reach the text's end, or
 * the chunks-th. stride = ctx makes windows that do not overlap, each scoring all but its first.
 */
function stridedPerplexity(
  model: LanguageModel,
  ids: readonly number[],
  opts: { ctx: number; stride: number; chunks?: number },
): PerplexityResult {
  const { ctx, stride } = opts;
  if (!(Number.isInteger(stride) && stride >= 1 && stride <= ctx)) {
    throw new UsageError(`--stride must be a whole number from 1 to --ctx (${ctx}), got ${stride}`);
  }
  if (ids.length < 2) throw new UsageError(`the text is ${ids.length} tokens; perplexity needs at least 2`);
  const sums = { nll: 0, nll2: 0, count: 0 };
  let previousEnd = 0;
  let windows = 0;
  for (let begin = 0; windows < (opts.chunks ?? Infinity); begin += stride) {
    const end = Math.min(begin + ctx, ids.length);
    const window = ids.slice(begin, end);
    // The first token this window scores, as an index into the window.
    const first = Math.max(previousEnd, begin + 1) - begin;
    const sequence = model.newSequence();
    let logits = sequence.forward(window.slice(0, first));
    for (let j = first; j < window.length; j++) {
      if (j > first) logits = sequence.forward([window[j - 1]]);
      const v = -logProbability(logits, window[j]);
      sums.nll += v;
      sums.nll2 += v * v;
      sums.count++;
    }
    windows++;
    previousEnd = end;
    if (end === ids.length) break;
  }
  return result(sums, ids.length, windows, ctx, stride);
}

/** Perplexity, its standard error and the rest, from the sums of the scored tokens' NLLs. */
function result(
  sums: { nll: number; nll2: number; count: number },
  textTokens: number,
  chunks: number,
  ctx: number,
  stride: number | undefined,
): PerplexityResult {
  const { nll, nll2, count } = sums;
  const mean = nll / count;
  const variance = nll2 / count - mean * mean;
  const perplexityValue = Math.exp(mean);
  const error = variance > 0 && count > 1 ? Math.sqrt(variance / (count - 1)) * perplexityValue : 0;
  return { perplexity: perplexityValue, perplexityError: error, meanNll: mean, scoredTokens: count, textTokens, chunks, ctx, stride };
}

/** log softmax(logits)[id], in float64. */
function logProbability(logits: Float32Array, id: number): number {
  let max = -Infinity;
  for (let v = 0; v < logits.length; v++) if (logits[v] > max) max = logits[v];
  let sum = 0;
  for (let v = 0; v < logits.length; v++) sum += Math.exp(logits[v] - max);
  return logits[id] - max - Math.log(sum);
}

const OPTIONS = {
  ...MODEL_OPTION,
  ...HUB_OPTIONS,
  file: { type: "string" },
  ctx: { type: "string" },
  stride: { type: "string" },
  chunks: { type: "string" },
  ...BACKEND_OPTIONS,
  json: { type: "boolean", default: false },
} as const;

export async function runPerplexity(argv: string[]): Promise<void> {
  const values = parseOptions("perplexity", argv, OPTIONS, PERPLEXITY_HELP);
  if (!values) return;
  if (!values.model) throw new UsageError("--model M is required (a checkpoint folder, a .gguf file or a Hugging Face repo id)");
  if (!values.file) throw new UsageError("--file TEXT is required (the text to score)");
  const ctx = parseWholeNumber("ctx", values.ctx, 4) ?? 512;
  const chunks = parseWholeNumber("chunks", values.chunks, 1);
  const stride = parseWholeNumber("stride", values.stride, 1);
  if (stride !== undefined && stride > ctx) throw new UsageError(`--stride must be at most --ctx (${ctx}), got ${stride}`);
  const backendOptions = parseBackendOptions(values);
  const path = await localModel(values);
  let text: string;
  try {
    text = readFileSync(values.file, "utf8");
  } catch (err) {
    throw new UsageError(`cannot read --file ${values.file}: ${(err as Error).message}`);
  }
  status.show(`loading ${values.model}…`);
  const { model, tokenizer } = loadCheckpoint(path);
  const backend = selectBackend(model, backendOptions);
  status.clear();
  if (backend.notice) notice(backend.notice);
  const ids = tokenizer.encode(text, { addSpecialTokens: true });
  // llama-perplexity puts BOS at the start of every window when the tokenizer adds one.
  const bos =
    tokenizer.bosId !== undefined && tokenizer.encode("", { addSpecialTokens: true })[0] === tokenizer.bosId ? tokenizer.bosId : undefined;
  const started = Date.now();
  // Sliding windows take the text's tokens as they are; llama-perplexity's put BOS first in each.
  const result = perplexity(backend.model, ids, { ctx, chunks, bos: stride === undefined ? bos : undefined, stride });
  if (values.json) {
    process.stdout.write(JSON.stringify({ model: values.model, file: values.file, backend: backend.name, ...result }) + "\n");
    return;
  }
  process.stdout.write(
    `perplexity: ${result.perplexity.toFixed(4)} ± ${result.perplexityError.toFixed(5)} ` +
      `(${result.scoredTokens} tokens scored in ${result.chunks} windows of ${ctx}${stride === undefined ? "" : ` every ${stride}`}; ` +
      `the text has ${result.textTokens} tokens; ` +
      `${backend.name} backend, ${((Date.now() - started) / 1000).toFixed(1)} s)\n`,
  );
}
