/**
 * `tiny-llm bench`: measures one model on a fixed synthetic prompt — load time, prefill speed,
 * time to first token, greedy decode speed, peak memory — and sets decode against the machine's
 * streaming-read bandwidth, measured in the same process because it drifts over time.
 */
import { Random } from "../generation/random.js";
import { Sampler } from "../generation/sampler.js";
import { loadCheckpoint } from "../generation/load-checkpoint.js";
import { nativeKernels } from "../kernels/native.js";
import { selectBackend, type BackendName, type BackendOptions } from "../engine/backend.js";
import { decodeMatrices } from "../engine/batch-forward.js";
import { SingleSequenceModel } from "../engine/single-sequence.js";
import type { WeightMatrix } from "../tensor/weight.js";
import type { Tokenizer } from "../tokenizer/tokenizer.js";
import { DEFAULT_MODEL } from "../hub/model-spec.js";
import { UsageError } from "./errors.js";
import { peakRssBytes } from "./peak-rss.js";
import { notice } from "./output.js";
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

export const BENCH_HELP = `Usage: tiny-llm bench [-m MODEL] [options]

Measures load time, prefill speed, time to first token, greedy decode speed and peak memory on a
synthetic prompt, and compares decode with the machine's memory bandwidth measured in the same run.

Options:
${modelHelp(DEFAULT_MODEL)}
  --prompt-tokens N   prompt length in tokens (default 128)
  --gen-tokens N      tokens to decode after the first (default 128); end-of-sequence is ignored
${backendHelp("threads for the native kernels and the bandwidth probe")}
  --json              print one JSON object instead of a report
  -h, --help          show this help`;

export interface BenchResult {
  model: string;
  architecture: string;
  /** Storage types of the weight matrices, most bytes first. */
  weightTypes: string[];
  backend: BackendName;
  /** The native kernels' instruction set, when they ran. */
  isa?: string;
  threads: number;
  promptTokens: number;
  genTokens: number;
  /** The prompt, so another engine can be timed on the same ids. */
  promptIds: number[];
  loadMs: number;
  prefillMs: number;
  prefillTokensPerSecond: number;
  /** Prefill plus sampling the first token. */
  ttftMs: number;
  decodeMs: number;
  decodeTokensPerSecond: number;
  /** Peak resident memory before the bandwidth probe allocated its buffer. */
  peakRssBytes: number;
  /** Bytes of every weight matrix one decode step reads, LM head included. */
  weightBytesPerToken: number;
  /** weightBytesPerToken × decode tokens/s. */
  decodeBytesPerSecond: number;
  /** Best streaming-read bandwidth, or null without the native kernels. */
  probeBytesPerSecond: number | null;
  /** decodeBytesPerSecond / probeBytesPerSecond. */
  probeFraction: number | null;
}

/** Larger than any last-level cache by far, so the probe measures memory, not cache. */
const PROBE_BYTES = 256 * 2 ** 20;
const PROBE_RUNS = 5;
const PROMPT_SEED = 1234;
/** Draws in a row that may land on special or unused ids before the tokenizer is judged to have no others. */
const MAX_PROMPT_MISSES = 100_000;

/**
 * `n` ordinary token ids (no special or unused ids, none past the embedding) drawn with a fixed
 * seed, so every run and every engine sees the same prompt.
 */
export function benchmarkPrompt(tokenizer: Tokenizer, embeddingRows: number, n: number): number[] {
  const limit = Math.min(tokenizer.vocabSize, embeddingRows);
  // BOS and EOS are excluded even where the tokenizer does not mark them special.
  const excluded = new Set([...tokenizer.eosIds, ...(tokenizer.bosId === undefined ? [] : [tokenizer.bosId])]);
  const ordinary = (id: number) => tokenizer.idToToken(id) !== undefined && !tokenizer.isSpecial(id) && !excluded.has(id);
  const random = new Random(PROMPT_SEED);
  // Drawn and redrawn rather than picked from a list of all ordinary ids: that list would be a
  // vocabulary-sized array in the heap of the process whose memory is being measured.
  const ids: number[] = [];
  for (let misses = 0; ids.length < n;) {
    const id = random.nextUint32() % limit;
    if (ordinary(id)) {
      ids.push(id);
      misses = 0;
    } else if (++misses > MAX_PROMPT_MISSES) throw new Error("the tokenizer has (almost) no ordinary tokens to build a prompt from");
  }
  return ids;
}

function weightTypesByBytes(matrices: readonly WeightMatrix[]): string[] {
  const bytes = new Map<string, number>();
  for (const w of matrices) bytes.set(w.dtype, (bytes.get(w.dtype) ?? 0) + w.byteLength);
  return [...bytes].sort((a, b) => b[1] - a[1]).map(([dtype]) => dtype);
}

/** Best-of-runs streaming-read bandwidth in bytes/s on `threads` threads, or null without the kernels. */
function probeBandwidth(threads: number): number | null {
  const addon = nativeKernels();
  if (!addon) return null;
  const kernels = addon.createContext({ threads });
  // Filled, not left zero: untouched pages all map to one zero page and would read from cache.
  const buffer = new Float32Array(PROBE_BYTES / 4).fill(1);
  let best = Infinity;
  for (let run = 0; run < PROBE_RUNS; run++) {
    const start = performance.now();
    kernels.readProbe(buffer);
    best = Math.min(best, performance.now() - start);
  }
  return PROBE_BYTES / (best / 1000);
}

export interface BenchOptions extends BackendOptions {
  model: string;
  promptTokens: number;
  genTokens: number;
}

export function benchmark(opts: BenchOptions): BenchResult {
  const started = performance.now();
  const { model: reference, tokenizer } = loadCheckpoint(opts.model);
  const backend = selectBackend(reference, opts);
  if (backend.notice) notice(backend.notice);
  // The engine's forward pass and paged cache, one sequence, f16 K/V on the native kernels as the server stores them.
  const model = new SingleSequenceModel(backend.forward, backend.name === "native" ? "f16" : "f32");
  const loadMs = performance.now() - started;

  const context = model.config.maxPositionEmbeddings;
  // The last generated token is sampled, never fed back, so it takes no position.
  if (opts.promptTokens + opts.genTokens > context) {
    throw new UsageError(
      `--prompt-tokens ${opts.promptTokens} and --gen-tokens ${opts.genTokens} need ${opts.promptTokens + opts.genTokens} positions, ` +
        `more than the model's context of ${context} (max_position_embeddings)`,
    );
  }
  const promptIds = benchmarkPrompt(tokenizer, reference.embed.weight.rows, opts.promptTokens);
  const sampler = new Sampler({ temperature: 0 });

  // One throwaway token first, so one-off costs (thread start-up, first allocations) are not timed.
  model.newSequence().forward(promptIds.slice(0, 1));

  const sequence = model.newSequence();
  const t0 = performance.now();
  const promptLogits = sequence.forward(promptIds);
  const t1 = performance.now();
  let next = sampler.sample(promptLogits);
  const t2 = performance.now();
  for (let i = 0; i < opts.genTokens; i++) next = sampler.sample(sequence.forward([next]));
  const t3 = performance.now();
  const peakRss = peakRssBytes();

  const matrices = decodeMatrices(reference);
  const weightBytesPerToken = matrices.reduce((sum, w) => sum + w.byteLength, 0);
  const decodeTokensPerSecond = opts.genTokens / ((t3 - t2) / 1000);
  const decodeBytesPerSecond = weightBytesPerToken * decodeTokensPerSecond;
  // Right after decode, so both see the host in the same bandwidth state.
  const probeBytesPerSecond = probeBandwidth(backend.threads);

  return {
    model: opts.model,
    architecture: model.config.modelType,
    weightTypes: weightTypesByBytes(matrices),
    backend: backend.name,
    isa: backend.name === "native" ? backend.isa : undefined,
    threads: backend.threads,
    promptTokens: opts.promptTokens,
    genTokens: opts.genTokens,
    promptIds,
    loadMs,
    prefillMs: t1 - t0,
    prefillTokensPerSecond: opts.promptTokens / ((t1 - t0) / 1000),
    ttftMs: t2 - t0,
    decodeMs: t3 - t2,
    decodeTokensPerSecond,
    peakRssBytes: peakRss,
    weightBytesPerToken,
    decodeBytesPerSecond,
    probeBytesPerSecond,
    probeFraction: probeBytesPerSecond === null ? null : decodeBytesPerSecond / probeBytesPerSecond,
  };
}

const MB = 1e6;
const GB = 1e9;

function report(r: BenchResult): string {
  const kernels = r.backend === "native" ? `${r.backend} (${r.isa})` : r.backend;
  const probe =
    r.probeBytesPerSecond === null || r.probeFraction === null
      ? "not measured (needs the native kernels)"
      : `${(r.probeBytesPerSecond / GB).toFixed(1)} GB/s streaming read (${PROBE_BYTES / 2 ** 20} MiB, best of ${PROBE_RUNS}); ` +
        `decode runs at ${(r.probeFraction * 100).toFixed(0)} % of it`;
  return [
    `model        ${r.model} (${r.architecture}, ${r.weightTypes.join(" + ")} weights)`,
    `backend      ${kernels}, ${r.threads} thread(s)`,
    `load         ${r.loadMs.toFixed(0)} ms`,
    `prefill      ${r.promptTokens} tokens in ${r.prefillMs.toFixed(1)} ms: ${r.prefillTokensPerSecond.toFixed(1)} tokens/s`,
    `first token  ${r.ttftMs.toFixed(1)} ms`,
    `decode       ${r.genTokens} tokens in ${r.decodeMs.toFixed(0)} ms: ${r.decodeTokensPerSecond.toFixed(1)} tokens/s`,
    `weights      ${(r.weightBytesPerToken / MB).toFixed(1)} MB read per token: ${(r.decodeBytesPerSecond / GB).toFixed(2)} GB/s while decoding`,
    `bandwidth    ${probe}`,
    `peak RSS     ${(r.peakRssBytes / MB).toFixed(0)} MB`,
  ].join("\n");
}

const OPTIONS = {
  ...MODEL_OPTION,
  ...HUB_OPTIONS,
  "prompt-tokens": { type: "string" },
  "gen-tokens": { type: "string" },
  ...BACKEND_OPTIONS,
  json: { type: "boolean", default: false },
} as const;

export async function runBench(argv: string[]): Promise<void> {
  const values = parseOptions("bench", argv, OPTIONS, BENCH_HELP);
  if (!values) return;
  const promptTokens = parseWholeNumber("prompt-tokens", values["prompt-tokens"], 1) ?? 128;
  const genTokens = parseWholeNumber("gen-tokens", values["gen-tokens"], 1) ?? 128;
  const backendOptions = parseBackendOptions(values);
  const path = await localModel(values);
  const result = benchmark({ model: path, promptTokens, genTokens, ...backendOptions });
  process.stdout.write((values.json ? JSON.stringify(result) : report(result)) + "\n");
}
