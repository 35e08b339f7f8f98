/**
 * Records the engine steps behind the guide's continuous-batching timeline
 * (docs/guide/img/batching-timeline.svg): starts `tiny-llm serve --trace-steps` on the
 * Qwen2.5-Coder-0.5B test model (npm run fetch-models) with a small step budget, sends five
 * streaming completions that arrive while the others run, and keeps the server's trace as
 * docs/guide/data/batching-trace.jsonl. A model that small takes real time per step (a tiny one
 * finishes each request before the next client's first byte arrives), so the requests overlap.
 *
 *   npm run build && node dist/scripts/record-batching-trace.js [--model DIR]
 *
 * Run once and committed: the timeline is drawn from the recorded steps, which depend on timing.
 */
import { spawn } from "node:child_process";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { parseArgs } from "node:util";
import { testModelsDir } from "./fetch-test-models.js";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "../..");
export const TRACE_FILE = "docs/guide/data/batching-trace.jsonl";
/** The model the trace was recorded on (a test model of scripts/test-models.json). */
export const TRACE_MODEL = "Qwen2.5-Coder-0.5B-Instruct-AWQ-Q4_K_M.gguf";

/** The server's limits: few sequences and a small step budget, so that queueing and prompt chunks show. */
export const TRACE_SERVER_ARGS = ["--max-num-seqs", "3", "--max-batch-tokens", "32", "--threads", "1"];

interface Client {
  promptTokens: number;
  maxTokens: number;
  /** Starts once the client before it has had this many chunks (0: with it). */
  after: number;
}

/** Arrivals staggered by the streams' progress rather than by time, so that they land mid-run on any machine. */
const CLIENTS: Client[] = [
  { promptTokens: 8, maxTokens: 40, after: 0 },
  { promptTokens: 70, maxTokens: 24, after: 5 },
  { promptTokens: 12, maxTokens: 30, after: 3 },
  { promptTokens: 40, maxTokens: 16, after: 3 },
  { promptTokens: 20, maxTokens: 12, after: 0 },
];

/** Token ids of a prompt: ordinary tokens of Qwen's vocabulary, spread by a fixed rule. */
const prompt = (n: number, seed: number): number[] => Array.from({ length: n }, (_, i) => 100 + ((seed * 131 + i * 37) % 5000));

/** Streams one completion; calls onChunk with the count of chunks so far. */
async function complete(url: string, model: string, c: Client, i: number, onChunk: (n: number) => void): Promise<void> {
  const body = { model, prompt: prompt(c.promptTokens, i), max_tokens: c.maxTokens, temperature: 0, ignore_eos: true, stream: true };
  const response = await fetch(`${url}/v1/completions`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(body),
  });
  if (!response.ok || !response.body) throw new Error(`HTTP ${response.status}: ${await response.text()}`);
  let chunks = 0;
  for await (const bytes of response.body) {
    chunks += (
      Buffer.from(bytes)
        .toString("utf8")
        .match(/^data: \{/gm) ?? []
    ).length;
    onChunk(chunks);
  }
}

async function main(argv: string[]): Promise<void> {
  const fallback = join(testModelsDir(), TRACE_MODEL);
  const { values } = parseArgs({ args: argv, options: { model: { type: "string", default: fallback } } });
  const model = resolve(values.model!);
  const cli = join(root, "dist", "src", "cli", "main.js");
  const server = spawn(
    process.execPath,
    [cli, "serve", "--model", model, "--port", "0", "--trace-steps", join(root, TRACE_FILE), ...TRACE_SERVER_ARGS],
    {
      stdio: ["ignore", "ignore", "pipe"],
    },
  );
  let stderr = "";
  const url = await new Promise<string>((resolve_, reject) => {
    server.stderr!.on("data", (d: Buffer) => {
      stderr += d.toString();
      const m = /listening on (\S+),/.exec(stderr);
      if (m) resolve_(m[1]);
    });
    server.once("exit", (code) => reject(new Error(`the server exited (code ${code}): ${stderr}`)));
  });
  try {
    for (;;) {
      if ((await fetch(`${url}/health`)).ok) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    const runs: Promise<void>[] = [];
    const errors: string[] = [];
    let started!: () => void;
    const allStarted = new Promise<void>((r) => (started = r));
    const start = (i: number): void => {
      if (i === CLIENTS.length - 1) started();
      let nextStarted = false;
      const next = (n: number): void => {
        if (!nextStarted && i + 1 < CLIENTS.length && n >= CLIENTS[i + 1].after) {
          nextStarted = true;
          start(i + 1);
        }
      };
      // A stream that ends early, or fails, still lets the next client start.
      const run = complete(url, model, CLIENTS[i], i, next)
        .catch((err: unknown) => void errors.push(`client ${i + 1}: ${(err as Error).message}`))
        .finally(() => next(Infinity));
      runs.push(run);
      next(0);
    };
    start(0);
    await allStarted;
    await Promise.all(runs);
    if (errors.length > 0) throw new Error(errors.join("; "));
  } finally {
    server.kill("SIGTERM");
    await new Promise((r) => (server.exitCode !== null ? r(undefined) : server.once("exit", r)));
  }
  process.stdout.write(`wrote ${TRACE_FILE}\n`);
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(resolve(process.argv[1])).href) {
  main(process.argv.slice(2)).catch((err: unknown) => {
    process.stderr.write(`record-batching-trace: ${(err as Error).message}\n`);
    process.exitCode = 1;
  });
}
