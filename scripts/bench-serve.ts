/**
 * `npm run bench:serve`: a load generator for OpenAI-compatible servers. It starts our server and
 * llama.cpp's llama-server on the same GGUF with the same threads, one after the other (never
 * both at once: they would share the cores), sends streaming /v1/completions requests at fixed
 * concurrency levels or at a Poisson rate, with seeded random prompts, and reports output and
 * total tokens/s, requests/s, TTFT, TPOT and inter-token latency (p50/p99), and for our server
 * the peak KV blocks used and the prefix-cache hits. The results and the command go into
 * docs/benchmarks.md, the rows into docs/data/serving.json, and the plot drawn from them
 * (throughput and TPOT against concurrency, scripts/plots.ts) into docs/serving.svg.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { cpus, loadavg } from "node:os";
import { dirname, join, relative, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { Random } from "../src/generation/random.js";
import { PagedKvCache } from "../src/engine/kv-cache.js";
import { readGgufHeader } from "../src/loaders/gguf.js";
import { ggufModelConfig } from "../src/loaders/gguf-model.js";
import { llamaCppTool } from "./llama-cpp-paths.js";
import { SERVING_PLOT as plot, SERVING_PLOT_WORKLOAD, writeData, type Percentiles, type ServingData, type ServingRow } from "./plots.js";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "../..");
const docs = join(root, "docs", "benchmarks.md");
const BEGIN = "<!-- bench:serve begin -->";
/** Stands for "llama-server's own /completion route" where a model name would go. */
const LLAMA_NATIVE = "llama-server /completion";
/** KV capacity of both servers, in tokens. */
const KV_TOKENS = 16384;
const END = "<!-- bench:serve end -->";

/** Common English words: prompts of N of them are about 1.1 N tokens for a GPT-style BPE. */
const WORDS = (
  "the of and to in is was for on that with as it by at from his he this be are an which or had have one not but all " +
  "were they there been their has more time would will can when who into only other new some could these two may then first " +
  "any like now my such make over our even most me state after also made many did must before back see through way where get " +
  "much go well your know should down work year because come people just say each those take day good how long little very " +
  "own still might great old world here life both between under last never place same another while house part found again " +
  "small every city three always hand high left light along water school thought country number point children night story"
).split(" ");

interface Workload {
  name: string;
  /** Random words per prompt, after the shared prefix. */
  promptWords: number;
  /** Words of a system-prompt-like prefix: shared by every request ("warm"), or each its own ("cold"). */
  prefixWords?: number;
  sharedPrefix?: boolean;
  genTokens: number;
  concurrency: number[];
  requestsPerClient: number;
}

interface RequestResult {
  ttftMs: number;
  /** Gaps between streamed chunks after the first. */
  itlMs: number[];
  tpotMs: number;
  promptTokens: number;
  outputTokens: number;
  endMs: number;
}

function percentile(values: number[], p: number): number {
  if (values.length === 0) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

const percentiles = (values: number[]): Percentiles => ({ p50: percentile(values, 50), p99: percentile(values, 99) });

function words(random: Random, n: number): string {
  return Array.from({ length: n }, () => WORDS[random.nextUint32() % WORDS.length]).join(" ");
}

async function freePort(): Promise<number> {
  return new Promise((resolve_, reject) => {
    const s = createServer();
    s.listen(0, "127.0.0.1", () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve_(port));
    });
    s.on("error", reject);
  });
}

async function waitHealthy(url: string, child: ChildProcess, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (child.exitCode !== null) throw new Error(`the server exited (code ${child.exitCode}) before it was healthy`);
    try {
      const r = await fetch(`${url}/health`);
      if (r.ok) return;
    } catch {
      // not listening yet
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(`${url}/health did not answer 200 within ${timeoutMs / 1000} s`);
}

/**
 * One streaming completion; times its first chunk, the gaps between chunks, and reads the usage.
 * llama-server is asked through its own /completion: its OpenAI route parses the output as a chat
 * message and fails on random weights' text ("does not match the expected Content-only format").
 */
async function completion(url: string, model: string, prompt: string, maxTokens: number): Promise<RequestResult> {
  const started = performance.now();
  const native = model === LLAMA_NATIVE;
  const body = native
    ? { prompt, n_predict: maxTokens, temperature: 0, stream: true, ignore_eos: true, cache_prompt: true }
    : { model, prompt, max_tokens: maxTokens, temperature: 0, stream: true, ignore_eos: true, stream_options: { include_usage: true } };
  const response = await fetch(`${url}/${native ? "completion" : "v1/completions"}`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(body),
  });
  if (!response.ok || !response.body) throw new Error(`HTTP ${response.status}: ${await response.text()}`);
  const decoder = new TextDecoder();
  let buffer = "";
  let first = 0;
  let last = 0;
  const itl: number[] = [];
  let usage: { prompt_tokens: number; completion_tokens: number } | undefined;
  for await (const bytes of response.body) {
    buffer += decoder.decode(bytes, { stream: true });
    let at: number;
    while ((at = buffer.indexOf("\n\n")) >= 0) {
      const event = buffer.slice(0, at);
      buffer = buffer.slice(at + 2);
      const data = event.replace(/^data: /, "");
      if (data === "[DONE]" || data === "") continue;
      const chunk = JSON.parse(data) as {
        choices?: { text?: string }[];
        usage?: typeof usage;
        error?: { message: string };
        content?: string;
        stop?: boolean;
        tokens_predicted?: number;
        tokens_evaluated?: number;
      };
      if (chunk.error) throw new Error(chunk.error.message);
      if (chunk.usage) usage = chunk.usage;
      if (chunk.stop) usage = { prompt_tokens: chunk.tokens_evaluated ?? 0, completion_tokens: chunk.tokens_predicted ?? 0 };
      if (chunk.choices?.some((c) => (c.text ?? "") !== "") || (chunk.content ?? "") !== "") {
        const now = performance.now();
        if (first === 0) first = now;
        else itl.push(now - last);
        last = now;
      }
    }
  }
  if (!usage) throw new Error("the stream ended without usage");
  const end = performance.now();
  return {
    ttftMs: first - started,
    itlMs: itl,
    tpotMs: usage.completion_tokens > 1 ? (last - first) / (usage.completion_tokens - 1) : 0,
    promptTokens: usage.prompt_tokens,
    outputTokens: usage.completion_tokens,
    endMs: end,
  };
}

/** Our server's KV blocks in use and prefix-cache hit rate, from /metrics (undefined elsewhere). */
async function kvMetrics(url: string): Promise<{ used: number; hitRate: number } | undefined> {
  try {
    const text = await (await fetch(`${url}/metrics`)).text();
    const read = (name: string): number | undefined => {
      const m = new RegExp(`^${name} ([0-9.eE+-]+)$`, "m").exec(text);
      return m ? Number(m[1]) : undefined;
    };
    const used = read("tiny_llm_kv_blocks_used");
    return used === undefined ? undefined : { used, hitRate: read("tiny_llm_prefix_cache_hit_rate") ?? 0 };
  } catch {
    return undefined;
  }
}

async function runLevel(engine: string, url: string, model: string, w: Workload, concurrency: number, seed: number): Promise<ServingRow> {
  const random = new Random(seed);
  const shared = w.prefixWords ? words(random, w.prefixWords) : "";
  const prompts = Array.from({ length: concurrency * w.requestsPerClient }, () => {
    const prefix = w.prefixWords ? (w.sharedPrefix ? shared : words(random, w.prefixWords)) : "";
    return (prefix ? prefix + "\n\n" : "") + words(random, w.promptWords);
  });
  if (w.sharedPrefix) await completion(url, model, prompts[0], 1); // the prefix is cached once, as a running server's would be
  let peak = 0;
  let polling = true;
  const poll = (async () => {
    while (polling) {
      const m = await kvMetrics(url);
      if (m) peak = Math.max(peak, m.used);
      await new Promise((r) => setTimeout(r, 100));
    }
  })();
  const results: RequestResult[] = [];
  let failed = 0;
  let next = 0;
  const started = performance.now();
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < prompts.length) {
        const prompt = prompts[next++];
        try {
          results.push(await completion(url, model, prompt, w.genTokens));
        } catch (err) {
          failed++;
          process.stderr.write(`bench:serve: ${engine}: ${(err as Error).message}\n`);
        }
      }
    }),
  );
  const seconds = (Math.max(...results.map((r) => r.endMs), started) - started) / 1000;
  polling = false;
  await poll;
  const metrics = await kvMetrics(url);
  const output = results.reduce((s, r) => s + r.outputTokens, 0);
  const prompt = results.reduce((s, r) => s + r.promptTokens, 0);
  return {
    engine,
    workload: w.name,
    concurrency,
    requests: results.length,
    seconds,
    outputPerSecond: output / seconds,
    totalPerSecond: (output + prompt) / seconds,
    requestsPerSecond: results.length / seconds,
    ttftMs: percentiles(results.map((r) => r.ttftMs)),
    tpotMs: percentiles(results.map((r) => r.tpotMs)),
    itlMs: percentiles(results.flatMap((r) => r.itlMs)),
    peakKvBlocks: metrics ? peak : undefined,
    prefixHitRate: metrics?.hitRate,
    failed,
  };
}

interface Server {
  name: string;
  command: string;
  args: string[];
}

/** A process's peak resident memory so far (VmHWM), in bytes; undefined where /proc does not tell. */
function peakRss(pid: number | undefined): number | undefined {
  try {
    const m = /^VmHWM:\s+(\d+) kB$/m.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
    return m ? Number(m[1]) * 1024 : undefined;
  } catch {
    return undefined;
  }
}

/** Runs `body` against the server, then stops it; also returns the server's peak RSS over the whole run. */
async function withServer<T>(server: Server, port: number, body: (url: string) => Promise<T>): Promise<{ result: T; peakRss?: number }> {
  const child = spawn(server.command, server.args, { stdio: ["ignore", "ignore", "pipe"] });
  let stderr = "";
  child.stderr!.on("data", (d: Buffer) => (stderr = (stderr + d.toString()).slice(-4000)));
  const url = `http://127.0.0.1:${port}`;
  try {
    await waitHealthy(url, child, 300_000);
    const result = await body(url);
    return { result, peakRss: peakRss(child.pid) };
  } catch (err) {
    throw new Error(`${server.name}: ${(err as Error).message}\n${stderr}`);
  } finally {
    child.kill("SIGTERM");
    await new Promise((r) => (child.exitCode !== null ? r(undefined) : child.once("exit", r)));
  }
}

const fmt = (x: number | undefined, digits = 1): string => (x === undefined || Number.isNaN(x) ? "–" : x.toFixed(digits));

function table(rows: ServingRow[]): string {
  const lines = [
    "| engine | workload | C | requests | output tok/s | total tok/s | req/s | TTFT p50 / p99 ms | TPOT p50 / p99 ms | ITL p50 / p99 ms | peak KV blocks | prefix hit rate | failed |",
    "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
  ];
  for (const r of rows) {
    lines.push(
      `| ${r.engine} | ${r.workload} | ${r.concurrency} | ${r.requests} | ${fmt(r.outputPerSecond)} | ${fmt(r.totalPerSecond)} | ${fmt(r.requestsPerSecond, 2)} | ` +
        `${fmt(r.ttftMs.p50, 0)} / ${fmt(r.ttftMs.p99, 0)} | ${fmt(r.tpotMs.p50, 0)} / ${fmt(r.tpotMs.p99, 0)} | ${fmt(r.itlMs.p50, 0)} / ${fmt(r.itlMs.p99, 0)} | ` +
        `${r.peakKvBlocks ?? "–"} | ${r.prefixHitRate === undefined ? "–" : (100 * r.prefixHitRate).toFixed(0) + " %"} | ${r.failed} |`,
    );
  }
  return lines.join("\n");
}

async function main(argv: string[]): Promise<void> {
  const { values } = parseArgs({
    args: argv,
    options: {
      model: { type: "string", default: join(root, "bench-models", "qwen2-0.5b-gguf-q4_0.gguf") },
      threads: { type: "string", default: "2" },
      concurrency: { type: "string", default: "1,4,16,64" },
      quick: { type: "boolean", default: false },
      "no-llama": { type: "boolean", default: false },
      "no-write": { type: "boolean", default: false },
    },
  });
  const load = loadavg()[0];
  const model = resolve(values.model!);
  if (!existsSync(model)) {
    throw new Error(`${model} does not exist: run npm run bench once (it writes bench-models/), or pass --model FILE.gguf`);
  }
  const levels = values.concurrency!.split(",").map(Number);
  const threads = values.threads!;
  const perClient = values.quick ? 1 : 2;
  const workloads: Workload[] = [
    { name: SERVING_PLOT_WORKLOAD, promptWords: 100, genTokens: 64, concurrency: levels, requestsPerClient: perClient },
    {
      name: "prompt ≈14, 128 generated",
      promptWords: 12,
      genTokens: 128,
      concurrency: levels.filter((c) => c === 1 || c === 16),
      requestsPerClient: perClient,
    },
    {
      name: "500-word prefix, cold",
      prefixWords: 500,
      sharedPrefix: false,
      promptWords: 20,
      genTokens: 16,
      concurrency: [16],
      requestsPerClient: 1,
    },
    {
      name: "500-word prefix, shared",
      prefixWords: 500,
      sharedPrefix: true,
      promptWords: 20,
      genTokens: 16,
      concurrency: [16],
      requestsPerClient: 1,
    },
  ];
  const servers: Server[] = [];
  const ours = (port: number): Server => ({
    name: "tiny-llm",
    command: process.execPath,
    args: [
      join(root, "dist", "src", "cli", "main.js"),
      "serve",
      "--model",
      model,
      "--port",
      String(port),
      "--threads",
      threads,
      "--max-num-seqs",
      "64",
      // llama-server's context below: both hold 16384 tokens of KV.
      "--kv-cache-size",
      `${KV_TOKENS}t`,
    ],
  });
  const llamaServer = values["no-llama"] ? undefined : llamaCppTool("llama-server");
  if (!values["no-llama"] && !llamaServer)
    process.stderr.write("bench:serve: llama-server is not built (npm run build:llama-cpp); measuring tiny-llm alone\n");
  const rows: ServingRow[] = [];
  const memory: string[] = [];
  const fileBytes = statSync(model).size;
  const kvBytes = KV_TOKENS * PagedKvCache.bytesPerToken(ggufModelConfig(readGgufHeader(model)), "f16");
  for (const make of [
    ours,
    ...(llamaServer
      ? [
          (port: number): Server => ({
            name: "llama-server",
            command: llamaServer,
            args: [
              "-m",
              model,
              "-t",
              threads,
              "-tb",
              threads,
              "-np",
              "16",
              "-c",
              String(KV_TOKENS),
              "-cb",
              "--port",
              String(port),
              "--host",
              "127.0.0.1",
            ],
          }),
        ]
      : []),
  ]) {
    const port = await freePort();
    const server = make(port);
    servers.push(server);
    const { peakRss } = await withServer(server, port, async (url) => {
      // The name the server gives its model: ours checks it, as vLLM does.
      const modelId =
        server.name === "llama-server"
          ? LLAMA_NATIVE
          : ((await (await fetch(`${url}/v1/models`)).json()) as { data: { id: string }[] }).data[0].id;
      for (const w of workloads) {
        for (const c of w.concurrency) {
          const r = await runLevel(server.name, url, modelId, w, c, 1000 + c);
          process.stdout.write(
            `${server.name} | ${w.name} | C=${c}: ${r.outputPerSecond.toFixed(1)} output tok/s, TTFT p50 ${r.ttftMs.p50.toFixed(0)} ms, TPOT p50 ${r.tpotMs.p50.toFixed(0)} ms\n`,
          );
          rows.push(r);
        }
      }
    });
    if (peakRss !== undefined) {
      const mb = (b: number): string => (b / 1e6).toFixed(0);
      memory.push(
        `${server.name}: peak RSS ${mb(peakRss)} MB over the whole run, ${(peakRss / (fileBytes + kvBytes)).toFixed(2)} × the file ` +
          `(${mb(fileBytes)} MB) + an f16 KV pool of ${KV_TOKENS} tokens (${mb(kvBytes)} MB)`,
      );
    }
  }
  process.stdout.write("\n" + table(rows) + "\n\n" + memory.join("\n") + "\n");
  if (values["no-write"]) return;
  const command = ["npm run bench:serve", ...(argv.length > 0 ? ["--", ...argv] : [])].join(" ");
  const date = new Date().toISOString().slice(0, 16).replace("T", " ") + " UTC";
  const data: ServingData = {
    source: "measured by npm run bench:serve",
    run: { date, command, model: relative(root, model), threads: Number(threads), cpu: cpus()[0]?.model ?? "unknown CPU", load },
    rows,
  };
  writeData(join(root, plot.data), data);
  writeFileSync(join(root, plot.svg), plot.draw(data));
  const section = [
    BEGIN,
    `Run ${date}, \`${command}\`, ${threads} threads, model \`${model.replace(root + "/", "")}\`; servers one after the other on the same file (llama-server \`-np 16 -c 16384 -cb\`). Streaming completions (ours: /v1/completions; llama-server: its /completion, whose OpenAI route fails on random weights' text), greedy, \`ignore_eos\`; each client sends its requests one after another. TTFT is to the first streamed text; TPOT is (last − first chunk) / (tokens − 1) per request; ITL the gaps between chunks.`,
    "",
    table(rows),
    "",
    ...memory.map((line) => `- ${line}`),
    "",
    "![throughput and TPOT against concurrency](serving.svg)",
    END,
  ].join("\n");
  const old = existsSync(docs) ? readFileSync(docs, "utf8") : "";
  const next = old.includes(BEGIN)
    ? old.slice(0, old.indexOf(BEGIN)) + section + old.slice(old.indexOf(END) + END.length)
    : `${old.trimEnd()}\n\n## Serving\n\n${section}\n`;
  writeFileSync(docs, next);
  process.stdout.write(`wrote ${docs}, ${plot.data} and ${plot.svg}\n`);
}

main(process.argv.slice(2)).catch((err: unknown) => {
  process.stderr.write(`bench:serve: ${(err as Error).message}\n`);
  process.exitCode = 1;
});
