/**
 * `npm run bench`: times tiny-llm and llama.cpp (through node-llama-cpp) on the same GGUF files,
 * the same prompt ids and the same thread count, prints a side-by-side table and records it in
 * docs/benchmarks.md, with the rows in docs/data/bench.json and the plot drawn from them (decode
 * against the memory roof, scripts/plots.ts) in docs/decode-roofline.svg. Checkpoint folders
 * (plain or MLX-quantized safetensors) run on tiny-llm alone, since llama.cpp cannot read them.
 *
 * Each engine runs in a child process of its own, one after the other, so that peak RSS is per
 * model and engine and the two never compete for cores. `--runs N` alternates them N times per
 * model and keeps the best of each figure, since a shared machine's speed drifts minute to minute.
 */
import { execFileSync } from "node:child_process";
import { cpus, loadavg } from "node:os";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { basename, dirname, join, relative, resolve } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { parseArgs } from "node:util";
import type { Token } from "node-llama-cpp";
import type { BenchResult } from "../src/cli/bench-command.js";
import { peakRssBytes } from "../src/cli/peak-rss.js";
import { quantizeCheckpoint } from "../src/cli/quantize-command.js";
import { fetchedModelPath, readManifest } from "./fetch-test-models.js";
import { ROOFLINE_PLOT, writeData, type BenchData, type BenchRow } from "./plots.js";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "../..");
const cli = join(root, "dist", "src", "cli", "main.js");
const docPath = join(root, "docs", "benchmarks.md");
const RESULTS_HEADING = "## Latest run";

const modelsDir = join(root, "bench-models");

/**
 * A model this script writes into bench-models/ when it is missing, with random weights in a
 * preset's shapes: a GGUF file from the random-checkpoint generator, or an MLX folder quantized
 * from the generator's BF16 safetensors folder.
 */
type Recipe = { preset: string; gguf: string } | { preset: string; mlxBits: number };

/** mlx-lm's default group size. */
const MLX_GROUP_SIZE = 64;
const gguf = (preset: string, type: string): Recipe => ({ preset, gguf: type });
const mlx = (preset: string, bits: number): Recipe => ({ preset, mlxBits: bits });
const recipePath = (r: Recipe): string =>
  join(modelsDir, "gguf" in r ? `${r.preset}-gguf-${r.gguf}.gguf` : `${r.preset}-mlx-${r.mlxBits}bit`);
const safetensorsFolder = (preset: string): string => join(modelsDir, `${preset}-safetensors-bf16`);

const DEFAULT_MODELS: readonly Recipe[] = [
  ...["f16", "q8_0", "q4_0", "q4_k"].map((type) => gguf("qwen2-0.5b", type)),
  mlx("qwen2-0.5b", 4),
  mlx("qwen2-0.5b", 8),
];
/** Added by --7b; the BF16 folder the MLX copy is made from takes 15 GB and minutes to write. */
const MODELS_7B: readonly Recipe[] = [
  ...["q4_0", "q4_k", "q8_0"].map((type) => gguf("qwen2-7b", type)),
  mlx("qwen2-7b", 4),
  mlx("qwen2-7b", 8),
];

/** The real models of scripts/test-models.json that `npm run fetch-models` has fetched: trained weights beside the random ones. */
function fetchedRealModels(): string[] {
  return readManifest().flatMap((entry) => fetchedModelPath(entry) ?? []);
}

/** Marks the child process that runs llama.cpp; its job follows as JSON. */
const LLAMA_WORKER = "--llama-cpp-worker";

interface LlamaJob {
  model: string;
  threads: number;
  promptIds: number[];
  genTokens: number;
}

interface LlamaResult {
  threads: number;
  loadMs: number;
  ttftMs: number;
  prefillTokensPerSecond: number;
  decodeTokensPerSecond: number;
  peakRssBytes: number;
}

/**
 * Times llama.cpp the way tiny-llm bench times itself: a one-token warm-up, then the prompt up to
 * the first greedy token, then `genTokens` more tokens with end-of-generation ignored.
 */
async function llamaCppWorker(job: LlamaJob): Promise<void> {
  const { getLlama, LlamaLogLevel } = await import("node-llama-cpp");
  const started = performance.now();
  const llama = await getLlama({ gpu: false, build: "never", logLevel: LlamaLogLevel.error });
  const model = await llama.loadModel({ modelPath: job.model });
  const context = await model.createContext({
    threads: job.threads,
    contextSize: job.promptIds.length + job.genTokens + 1,
    batchSize: job.promptIds.length,
  });
  const loadMs = performance.now() - started;
  const sequence = context.getSequence();
  const prompt = job.promptIds as Token[];

  const warmup = sequence.evaluate(prompt.slice(0, 1), { temperature: 0 });
  await warmup.next();
  await warmup.return();
  await sequence.clearHistory();

  const t0 = performance.now();
  const tokens = sequence.evaluate(prompt, { temperature: 0, yieldEogToken: true });
  let step = await tokens.next();
  const first = performance.now();
  for (let i = 0; i < job.genTokens && !step.done; i++) step = await tokens.next();
  const end = performance.now();
  if (step.done) throw new Error("llama.cpp stopped generating early");
  await tokens.return();
  const result: LlamaResult = {
    threads: context.currentThreads,
    loadMs,
    ttftMs: first - t0,
    prefillTokensPerSecond: prompt.length / ((first - t0) / 1000),
    decodeTokensPerSecond: job.genTokens / ((end - first) / 1000),
    peakRssBytes: peakRssBytes(),
  };
  await context.dispose();
  await model.dispose();
  await llama.dispose();
  process.stdout.write(JSON.stringify(result) + "\n");
}

/** Runs `file args` and parses the last line of its stdout as JSON; stderr passes through. */
function runJson<T>(file: string, args: string[]): T {
  const out = execFileSync(file, args, { encoding: "utf8", stdio: ["ignore", "pipe", "inherit"], maxBuffer: 64 * 2 ** 20 });
  const lines = out.trim().split("\n");
  return JSON.parse(lines[lines.length - 1]) as T;
}

interface Options {
  models: string[];
  threads: number;
  promptTokens: number;
  genTokens: number;
  llamaCpp: boolean;
  /** Times each engine runs on each model, alternating; each figure is the best run's. */
  runs: number;
  write: boolean;
}

function count(name: string, value: string | undefined, fallback: number): number {
  if (value === undefined) return fallback;
  const n = Number(value);
  if (value.trim() === "" || !Number.isInteger(n) || n < 1) throw new Error(`--${name} expects a whole number >= 1, got "${value}"`);
  return n;
}

function parseOptions(argv: string[]): Options {
  const { values } = parseArgs({
    args: argv,
    options: {
      models: { type: "string" },
      threads: { type: "string" },
      "prompt-tokens": { type: "string" },
      "gen-tokens": { type: "string" },
      "7b": { type: "boolean", default: false },
      "no-real": { type: "boolean", default: false },
      "no-llama-cpp": { type: "boolean", default: false },
      "no-write": { type: "boolean", default: false },
      runs: { type: "string" },
    },
    strict: true,
    allowPositionals: false,
  });
  const models = values.models?.split(",").filter((m) => m !== "") ?? [
    ...DEFAULT_MODELS.map(recipePath),
    ...(values["no-real"] ? [] : fetchedRealModels()),
  ];
  if (values["7b"]) models.push(...MODELS_7B.map(recipePath));
  return {
    models,
    threads: count("threads", values.threads, 2),
    promptTokens: count("prompt-tokens", values["prompt-tokens"], 128),
    genTokens: count("gen-tokens", values["gen-tokens"], 128),
    llamaCpp: !values["no-llama-cpp"],
    write: !values["no-write"],
    runs: count("runs", values.runs, 1),
  };
}

/** What this script uses of scripts/make-random-checkpoint.ts. */
interface CheckpointGenerator {
  makeRandomCheckpoint(opts: { preset: string; outDir: string; formats: string[]; log: (line: string) => void }): unknown;
}

/**
 * The random-checkpoint generator, imported by a computed path so that this script builds whether
 * or not the generator is there.
 */
async function loadGenerator(formatsByPreset: ReadonlyMap<string, string[]>): Promise<CheckpointGenerator> {
  const generatorPath = join(dirname(fileURLToPath(import.meta.url)), "make-random-checkpoint.js");
  if (!existsSync(generatorPath)) {
    const commands = [...formatsByPreset].map(
      ([preset, formats]) =>
        `node dist/scripts/make-random-checkpoint.js --preset ${preset} --out bench-models --formats ${formats.join(",")}`,
    );
    throw new Error(
      `the generator that writes the missing models is not built: run \`npm run build\`, then \`${commands.join(" && ")}\`, ` +
        `or pass existing models with --models a.gguf,folder,...`,
    );
  }
  return (await import(pathToFileURL(generatorPath).href)) as CheckpointGenerator;
}

/** Writes the asked models that have a recipe and are missing: GGUF files first, then MLX folders. */
async function ensureModels(models: readonly string[]): Promise<void> {
  const asked = new Set(models.map((m) => resolve(m)));
  const missing = [...DEFAULT_MODELS, ...MODELS_7B].filter((r) => asked.has(recipePath(r)) && !existsSync(recipePath(r)));
  if (missing.length === 0) return;
  const formatsByPreset = new Map<string, string[]>();
  const need = (preset: string, format: string): void => {
    const formats = formatsByPreset.get(preset) ?? [];
    if (!formats.includes(format)) formats.push(format);
    formatsByPreset.set(preset, formats);
  };
  for (const r of missing) {
    if ("gguf" in r) need(r.preset, `gguf-${r.gguf}`);
    else if (!existsSync(safetensorsFolder(r.preset))) need(r.preset, "safetensors-bf16");
  }
  const log = (line: string): void => void process.stderr.write(line + "\n");
  if (formatsByPreset.size > 0) {
    const generator = await loadGenerator(formatsByPreset);
    for (const [preset, formats] of formatsByPreset) generator.makeRandomCheckpoint({ preset, outDir: modelsDir, formats, log });
  }
  for (const r of missing) {
    if ("gguf" in r) continue;
    const out = recipePath(r);
    log(`writing ${relative(root, out)}`);
    const summary = quantizeCheckpoint(safetensorsFolder(r.preset), out, { bits: r.mlxBits, groupSize: MLX_GROUP_SIZE });
    log(`wrote ${relative(root, out)}: ${(summary.bytesOut / 1e9).toFixed(2)} GB`);
  }
}

/** How a model is stored: a GGUF file, or a safetensors folder, MLX-quantized or not. */
function weightFormat(model: string): "gguf" | "mlx" | "safetensors" {
  if (model.endsWith(".gguf")) return "gguf";
  const config = JSON.parse(readFileSync(join(model, "config.json"), "utf8")) as { quantization?: unknown };
  return config.quantization === undefined ? "safetensors" : "mlx";
}

interface Row {
  model: string;
  format: ReturnType<typeof weightFormat>;
  ours: BenchResult;
  llama?: LlamaResult;
}

const fixed = (x: number, digits: number): string => x.toFixed(digits);
const mb = (bytes: number): string => fixed(bytes / 1e6, 0);
const rounded = (x: number, digits: number): number => Number(x.toFixed(digits));
const onCell = (o: BenchResult): string => (o.isa ? `${o.backend} ${o.isa}` : o.backend);

/** A Markdown table with padded columns, readable as plain text too. */
function table(header: string[], rows: string[][]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (cells: string[]): string => `| ${cells.map((c, i) => c.padEnd(widths[i])).join(" | ")} |`;
  return [line(header), `|${widths.map((w) => "-".repeat(w + 2)).join("|")}|`, ...rows.map(line)].join("\n");
}

function resultsTable(rows: readonly Row[]): string {
  const header = [
    "model",
    "format",
    "type",
    "tiny-llm on",
    "prefill tok/s",
    "llama.cpp",
    "ratio",
    "decode tok/s",
    "llama.cpp",
    "ratio",
    "TTFT ms",
    "llama.cpp",
    "load ms",
    "llama.cpp",
    "peak RSS MB",
    "llama.cpp",
    "decode GB/s",
    "probe GB/s",
    "of probe",
  ];
  const cells = rows.map(({ model, format, ours: o, llama: l }) => {
    // "n/a": llama.cpp cannot read the format; "—": it was not run or failed.
    const none = format === "gguf" ? "—" : "n/a";
    const theirs = (x: number | undefined, digits: number): string => (x === undefined ? none : fixed(x, digits));
    const ratio = (ours: number, x: number | undefined): string => (x === undefined ? none : `${fixed(ours / x, 2)}×`);
    return [
      model,
      format,
      o.weightTypes.join("+"),
      onCell(o),
      fixed(o.prefillTokensPerSecond, 1),
      theirs(l?.prefillTokensPerSecond, 1),
      ratio(o.prefillTokensPerSecond, l?.prefillTokensPerSecond),
      fixed(o.decodeTokensPerSecond, 1),
      theirs(l?.decodeTokensPerSecond, 1),
      ratio(o.decodeTokensPerSecond, l?.decodeTokensPerSecond),
      fixed(o.ttftMs, 1),
      theirs(l?.ttftMs, 1),
      fixed(o.loadMs, 0),
      theirs(l?.loadMs, 0),
      mb(o.peakRssBytes),
      l === undefined ? none : mb(l.peakRssBytes),
      fixed(o.decodeBytesPerSecond / 1e9, 2),
      o.probeBytesPerSecond === null ? "—" : fixed(o.probeBytesPerSecond / 1e9, 1),
      o.probeFraction === null ? "—" : `${fixed(o.probeFraction * 100, 0)} %`,
    ];
  });
  return table(header, cells);
}

/** When and how the run was made, as docs/benchmarks.md and docs/data/bench.json record it. */
function runInfo(opts: Options, argv: readonly string[], load: number): BenchData["run"] {
  return {
    date: new Date().toISOString().replace("T", " ").slice(0, 16) + " UTC",
    command: ["npm run bench", ...(argv.length > 0 ? ["--", ...argv] : [])].join(" "),
    threads: opts.threads,
    promptTokens: opts.promptTokens,
    genTokens: opts.genTokens,
    cpu: cpus()[0]?.model ?? "unknown CPU",
    node: process.version,
    load: rounded(load, 2),
  };
}

function runSection(rows: readonly Row[], failed: readonly string[], run: BenchData["run"]): string {
  return [
    RESULTS_HEADING,
    "",
    `${run.date}: \`${run.command}\``,
    "",
    `${run.threads} threads, ${run.promptTokens} prompt tokens, ${run.genTokens} generated tokens; ` +
      `${run.cpu}, Node ${run.node}; load average ${fixed(Number(run.load), 2)} at the start.`,
    "",
    resultsTable(rows),
    "",
    ...(failed.length > 0 ? [`tiny-llm failed on ${failed.join(", ")}; not measured.`, ""] : []),
  ].join("\n");
}

/** The rows as docs/data/bench.json holds them, at the table's precision. */
function benchRows(rows: readonly Row[]): BenchRow[] {
  return rows.map(({ model, format, ours: o, llama: l }) => ({
    model,
    format,
    type: o.weightTypes.join("+"),
    on: onCell(o),
    prefillTokensPerSecond: rounded(o.prefillTokensPerSecond, 1),
    decodeTokensPerSecond: rounded(o.decodeTokensPerSecond, 1),
    ttftMs: rounded(o.ttftMs, 1),
    loadMs: rounded(o.loadMs, 0),
    peakRssMB: rounded(o.peakRssBytes / 1e6, 0),
    weightGBPerToken: rounded(o.weightBytesPerToken / 1e9, 3),
    decodeGBps: rounded(o.decodeBytesPerSecond / 1e9, 2),
    probeGBps: o.probeBytesPerSecond === null ? null : rounded(o.probeBytesPerSecond / 1e9, 1),
    ...(l && {
      llamaCpp: {
        prefillTokensPerSecond: rounded(l.prefillTokensPerSecond, 1),
        decodeTokensPerSecond: rounded(l.decodeTokensPerSecond, 1),
        ttftMs: rounded(l.ttftMs, 1),
        loadMs: rounded(l.loadMs, 0),
        peakRssMB: rounded(l.peakRssBytes / 1e6, 0),
      },
    }),
  }));
}

/** What both engines report. */
type Timings = Pick<LlamaResult, "loadMs" | "ttftMs" | "prefillTokensPerSecond" | "decodeTokensPerSecond" | "peakRssBytes">;

/**
 * One engine's runs as one result: the fastest decode run (with its bandwidth figures), the
 * fastest prefill, the shortest load and time to first token, and the highest peak RSS.
 */
function bestOf<T extends Timings>(runs: readonly T[]): T {
  const best = runs.reduce((a, b) => (b.decodeTokensPerSecond > a.decodeTokensPerSecond ? b : a));
  return {
    ...best,
    loadMs: Math.min(...runs.map((r) => r.loadMs)),
    ttftMs: Math.min(...runs.map((r) => r.ttftMs)),
    prefillTokensPerSecond: Math.max(...runs.map((r) => r.prefillTokensPerSecond)),
    peakRssBytes: Math.max(...runs.map((r) => r.peakRssBytes)),
  };
}

/** Replaces the previous results section of docs/benchmarks.md, keeping the introduction above it. */
function writeDoc(section: string): void {
  const previous = existsSync(docPath) ? readFileSync(docPath, "utf8") : "# Benchmarks\n\n";
  const at = previous.indexOf(RESULTS_HEADING);
  const intro = at === -1 ? previous.trimEnd() + "\n\n" : previous.slice(0, at);
  writeFileSync(docPath, intro + section);
}

async function main(argv: string[]): Promise<void> {
  const opts = parseOptions(argv);
  await ensureModels(opts.models);
  const load = loadavg()[0];
  if (load > cpus().length / 2) {
    process.stderr.write(
      `warning: the machine is busy (load average ${fixed(load, 2)} on ${cpus().length} cores); figures will be low and noisy\n`,
    );
  }
  for (const model of opts.models) if (!existsSync(model)) throw new Error(`${model} does not exist`);
  const rows: Row[] = [];
  const failed: string[] = [];
  for (const model of opts.models) {
    const format = weightFormat(model);
    const oursRuns: BenchResult[] = [];
    const llamaRuns: LlamaResult[] = [];
    for (let run = 1; run <= opts.runs; run++) {
      const of = opts.runs > 1 ? ` (run ${run} of ${opts.runs})` : "";
      process.stderr.write(`${basename(model)}: tiny-llm${of} ...\n`);
      try {
        oursRuns.push(
          // Run as the `tiny-llm` command, with the Node flags its first line gives.
          runJson<BenchResult>(cli, [
            "bench",
            "--json",
            "--model",
            model,
            "--threads",
            String(opts.threads),
            "--prompt-tokens",
            String(opts.promptTokens),
            "--gen-tokens",
            String(opts.genTokens),
          ]),
        );
      } catch {
        // Its error went to stderr; the other models' results are still worth recording.
        break;
      }
      if (!opts.llamaCpp || format !== "gguf") continue;
      process.stderr.write(`${basename(model)}: llama.cpp${of} ...\n`);
      const job: LlamaJob = { model, threads: opts.threads, promptIds: oursRuns[0].promptIds, genTokens: opts.genTokens };
      try {
        const result = runJson<LlamaResult>(process.execPath, [fileURLToPath(import.meta.url), LLAMA_WORKER, JSON.stringify(job)]);
        if (result.threads !== opts.threads) process.stderr.write(`${basename(model)}: llama.cpp used ${result.threads} threads\n`);
        llamaRuns.push(result);
      } catch (err) {
        // One file llama.cpp cannot run should not lose the other results.
        process.stderr.write(`${basename(model)}: llama.cpp failed: ${(err as Error).message.split("\n")[0]}\n`);
      }
    }
    if (oursRuns.length < opts.runs) {
      failed.push(basename(model));
      continue;
    }
    const ours = bestOf(oursRuns);
    const llama = llamaRuns.length > 0 ? bestOf(llamaRuns) : undefined;
    rows.push({ model: basename(model), format, ours, llama });
  }
  const run = runInfo(opts, argv, load);
  const section = runSection(rows, failed, run);
  process.stdout.write(section.slice(RESULTS_HEADING.length).trimStart());
  if (opts.write) {
    writeDoc(section);
    const data: BenchData = { source: "measured by npm run bench", run, rows: benchRows(rows) };
    writeData(join(root, ROOFLINE_PLOT.data), data);
    writeFileSync(join(root, ROOFLINE_PLOT.svg), ROOFLINE_PLOT.draw(data));
    process.stdout.write(`\nwritten to ${relative(process.cwd(), docPath)}, ${ROOFLINE_PLOT.data} and ${ROOFLINE_PLOT.svg}\n`);
  }
}

const [mode, job] = process.argv.slice(2);
const run = mode === LLAMA_WORKER ? llamaCppWorker(JSON.parse(job) as LlamaJob) : main(process.argv.slice(2));
run.catch((err: unknown) => {
  process.stderr.write(`bench: error: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exitCode = 1;
});
