/**
 * `tiny-llm perplexity`: a model's perplexity on a text file, computed the way llama.cpp's
 * `llama-perplexity` computes it, so that the two can be compared on the same file: the text is
 * tokenized whole (BOS added if the tokenizer adds one), cut into windows of --ctx tokens that do
 * not overlap, the first token of each window replaced by BOS where the tokenizer has one added,
 * and in each window the tokens of its second half are scored, each predicted from all the tokens
 * before it in its window. Perplexity is exp of the mean negative log-likelihood.
 *
 * The log-probabilities come through the LanguageModel interface: each window's first half in one
 * forward pass, then one token at a time, which is slow but exact (every scored token's logits are
 * those generation would see).
 */
import { readFileSync } from "node:fs";
import { parseArgs } from "node:util";
import { loadCheckpoint } from "../generation/load-checkpoint.js";
import { selectBackend } from "../engine/backend.js";
import type { LanguageModel } from "../models/language-model.js";
import { UsageError } from "./errors.js";
import { BACKEND_OPTIONS, BATCH_INVARIANT_HELP, checkModelExists, parseBackendOptions, parseWholeNumber } from "./options.js";

export const PERPLEXITY_HELP = `Usage: tiny-llm perplexity --model M --file TEXT [options]

Perplexity of the model on a text file, as llama.cpp's llama-perplexity computes it: windows of
--ctx tokens that do not overlap, the second half of each scored given the tokens before it.

Options:
  --model M           Hugging Face checkpoint folder or .gguf file
  --file TEXT         the text (UTF-8); it needs at least 2 × ctx tokens
  --ctx N             window length in tokens (default 512)
  --chunks N          score only the first N windows (default: all)
  --threads N         threads for the native kernels (default: one per core)
  --backend B         native (the default where the kernels built) or ts
  --isa I             pin the native kernels to amx, avx512, avx2 or scalar (default: the best here)
${BATCH_INVARIANT_HELP}
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
  chunks: number;
  ctx: number;
}

/**
 * Perplexity of `model` on `ids` (the text's tokens): windows of `ctx` tokens, the first replaced
 * by `bos` when given, positions ctx/2 … ctx−2 of each predicting the token after them.
 */
export function perplexity(
  model: LanguageModel,
  ids: readonly number[],
  opts: { ctx: number; chunks?: number; bos?: number },
): PerplexityResult {
  const { ctx } = opts;
  if (ctx < 4) throw new UsageError(`--ctx must be at least 4, got ${ctx}`);
  if (ctx > model.config.maxPositionEmbeddings) {
    throw new UsageError(`--ctx ${ctx} is longer than the model's context of ${model.config.maxPositionEmbeddings}`);
  }
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
  const mean = nll / count;
  const variance = nll2 / count - mean * mean;
  const perplexityValue = Math.exp(mean);
  const error = variance > 0 && count > 1 ? Math.sqrt(variance / (count - 1)) * perplexityValue : 0;
  return {
    perplexity: perplexityValue,
    perplexityError: error,
    meanNll: mean,
    scoredTokens: count,
    textTokens: ids.length,
    chunks,
    ctx,
  };
}

/** log softmax(logits)[id], in float64. */
function logProbability(logits: Float32Array, id: number): number {
  let max = -Infinity;
  for (let v = 0; v < logits.length; v++) if (logits[v] > max) max = logits[v];
  let sum = 0;
  for (let v = 0; v < logits.length; v++) sum += Math.exp(logits[v] - max);
  return logits[id] - max - Math.log(sum);
}

export async function runPerplexity(argv: string[]): Promise<void> {
  const { values } = parseArgs({
    args: argv,
    options: {
      model: { type: "string" },
      file: { type: "string" },
      ctx: { type: "string" },
      chunks: { type: "string" },
      ...BACKEND_OPTIONS,
      json: { type: "boolean", default: false },
      help: { type: "boolean", short: "h", default: false },
    },
    strict: true,
    allowPositionals: false,
  });
  if (values.help) {
    process.stdout.write(PERPLEXITY_HELP + "\n");
    return;
  }
  if (!values.model) throw new UsageError("--model M is required (a checkpoint folder or a .gguf file)");
  if (!values.file) throw new UsageError("--file TEXT is required (the text to score)");
  const ctx = parseWholeNumber("ctx", values.ctx, 4) ?? 512;
  const chunks = parseWholeNumber("chunks", values.chunks, 1);
  const backendOptions = parseBackendOptions(values);
  checkModelExists(values.model);
  let text: string;
  try {
    text = readFileSync(values.file, "utf8");
  } catch (err) {
    throw new UsageError(`cannot read --file ${values.file}: ${(err as Error).message}`);
  }
  const { model, tokenizer } = loadCheckpoint(values.model);
  const backend = selectBackend(model, backendOptions);
  if (backend.notice) process.stderr.write(`tiny-llm: ${backend.notice}\n`);
  const ids = tokenizer.encode(text, { addSpecialTokens: true });
  // llama-perplexity puts BOS at the start of every window when the tokenizer adds one.
  const bos =
    tokenizer.bosId !== undefined && tokenizer.encode("", { addSpecialTokens: true })[0] === tokenizer.bosId ? tokenizer.bosId : undefined;
  const started = Date.now();
  const result = perplexity(backend.model, ids, { ctx, chunks, bos });
  if (values.json) {
    process.stdout.write(JSON.stringify({ model: values.model, file: values.file, backend: backend.name, ...result }) + "\n");
    return;
  }
  process.stdout.write(
    `perplexity: ${result.perplexity.toFixed(4)} ± ${result.perplexityError.toFixed(5)} ` +
      `(${result.scoredTokens} tokens scored in ${result.chunks} windows of ${ctx}; the text has ${result.textTokens} tokens; ` +
      `${backend.name} backend, ${((Date.now() - started) / 1000).toFixed(1)} s)\n`,
  );
}
