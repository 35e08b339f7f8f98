/**
 * `tiny-llm serve`: an OpenAI-compatible HTTP server over the serving engine. It listens at
 * once (GET /health answers 503 while the model loads in the engine's worker thread), prints
 * one line when ready, and on SIGTERM or SIGINT stops taking requests, lets those running finish
 * within --shutdown-timeout seconds, aborts the rest and exits 0.
 */
import { createWriteStream, type WriteStream } from "node:fs";
import type { EngineOptions } from "../engine/engine-options.js";
import { kvCacheTokens } from "../engine/kv-cache.js";
import { buildApp } from "../server/app.js";
import { DEFAULT_MAX_QUEUE, ServerState } from "../server/serving.js";
import { gracefulShutdown } from "../server/shutdown.js";
import type { ChatTemplateSettings } from "../api/engine.js";
import { CHAT_TEMPLATE_OPTIONS, chatTemplateHelp, parseChatTemplateOptions } from "./chat-template-options.js";
import { UsageError } from "./errors.js";
import { DEFAULT_MODEL } from "../hub/model-spec.js";
import { formatBytes } from "./output.js";
import {
  BACKEND_OPTIONS,
  HUB_OPTIONS,
  MODEL_OPTION,
  localModel,
  modelHelp,
  parseBackendOptions,
  parseKvDtype,
  parseOptions,
  parseWholeNumber,
} from "./options.js";

export const SERVE_HELP = `Usage: tiny-llm serve [-m MODEL] [options]

Serves the model over HTTP with OpenAI's API (/v1/chat/completions, /v1/completions, /v1/models),
plus /health, /metrics, /tokenize, /detokenize and a chat page at /.

Options:
${modelHelp(DEFAULT_MODEL, 26)}
  --host H                address to listen on (default 127.0.0.1: this machine only)
  --port P                port (default 8000; 0 picks a free one)
  --api-key KEY           require "Authorization: Bearer KEY" (all routes but /health and the chat page)
  --max-num-seqs N        most sequences running at once (default 64)
  --max-batch-tokens N    most tokens one engine step computes (default 256)
  --kv-cache-size S       KV pool: bytes ("2GB", "512MiB") or tokens ("16384t")
  --kv-dtype T            f32, f16 or bf16 (default f16 on the native kernels)
  --max-queue N           requests that may wait beyond --max-num-seqs before 429 (default ${DEFAULT_MAX_QUEUE})
  --shutdown-timeout S    seconds running requests get to finish on SIGTERM/SIGINT (default 30)
  --trace-steps FILE      write one JSON line per engine step to FILE
${chatTemplateHelp(26)}
  --backend B             native (C++ kernels, the default where they built) or ts
  -t, --threads N         threads for the native kernels (default and most: one per core)
  --isa I                 pin the native kernels to amx, avx512, avx2 or scalar
  --batch-invariant on|off
                          on (default): a request's tokens and log-probabilities do not depend on
                          what shares its batch; off: prompts use the faster batched kernels
  -h, --help              show this help`;

export interface ServeSettings {
  /** As --model names it: a path or a Hugging Face repo id. */
  model: string;
  revision?: string;
  offline: boolean;
  host: string;
  port: number;
  apiKey?: string;
  maxQueue: number;
  shutdownTimeoutMs: number;
  traceSteps?: string;
  /** --chat-template and --chat-template-kwargs, for /v1/chat/completions. */
  chatTemplate: ChatTemplateSettings;
  engine: EngineOptions;
}

const OPTIONS = {
  ...MODEL_OPTION,
  ...HUB_OPTIONS,
  host: { type: "string", default: "127.0.0.1" },
  port: { type: "string", default: "8000" },
  "api-key": { type: "string" },
  "max-num-seqs": { type: "string" },
  "max-batch-tokens": { type: "string" },
  "kv-cache-size": { type: "string" },
  "kv-dtype": { type: "string" },
  "max-queue": { type: "string" },
  "shutdown-timeout": { type: "string" },
  "trace-steps": { type: "string" },
  ...CHAT_TEMPLATE_OPTIONS,
  ...BACKEND_OPTIONS,
} as const;

/** The command line as settings, or undefined once --help is printed; throws a UsageError (one line) for anything wrong. */
export function parseServeArgs(argv: string[]): ServeSettings | undefined {
  const values = parseOptions("serve", argv, OPTIONS, SERVE_HELP);
  if (!values) return undefined;
  const port = parseWholeNumber("port", values.port, 0, 65535) as number;
  if (values.host.trim() === "") throw new UsageError("--host must not be empty");
  const apiKey = values["api-key"];
  if (apiKey !== undefined && apiKey.trim() === "") throw new UsageError("--api-key must not be empty");
  const kvDtype = parseKvDtype(values["kv-dtype"]);
  const kvCacheSize = values["kv-cache-size"];
  if (kvCacheSize !== undefined) {
    try {
      if (kvCacheTokens(kvCacheSize, 1) < 1) throw new RangeError(`--kv-cache-size must be more than 0, got "${kvCacheSize}"`);
    } catch (err) {
      throw new UsageError((err as Error).message);
    }
  }
  const shutdownTimeout = values["shutdown-timeout"];
  let shutdownTimeoutMs = 30_000;
  if (shutdownTimeout !== undefined) {
    const seconds = Number(shutdownTimeout);
    if (shutdownTimeout.trim() === "" || !Number.isFinite(seconds) || seconds < 0) {
      throw new UsageError(`--shutdown-timeout expects seconds (0 or more), got "${shutdownTimeout}"`);
    }
    shutdownTimeoutMs = seconds * 1000;
  }
  const backend = parseBackendOptions(values);
  const engine: EngineOptions = {};
  if (backend.backend !== undefined) engine.backend = backend.backend;
  if (backend.threads !== undefined) engine.threads = backend.threads;
  if (backend.isa !== undefined) engine.isa = backend.isa;
  if (backend.batchInvariant !== undefined) engine.batchInvariant = backend.batchInvariant;
  const maxNumSeqs = parseWholeNumber("max-num-seqs", values["max-num-seqs"], 1);
  if (maxNumSeqs !== undefined) engine.maxNumSeqs = maxNumSeqs;
  const maxBatchTokens = parseWholeNumber("max-batch-tokens", values["max-batch-tokens"], 1);
  if (maxBatchTokens !== undefined) engine.maxBatchTokens = maxBatchTokens;
  if (kvCacheSize !== undefined) engine.kvCacheSize = kvCacheSize;
  if (kvDtype !== undefined) engine.kvDtype = kvDtype;
  const settings: ServeSettings = {
    model: values.model ?? DEFAULT_MODEL,
    offline: values.offline,
    host: values.host,
    port,
    maxQueue: parseWholeNumber("max-queue", values["max-queue"], 0) ?? DEFAULT_MAX_QUEUE,
    shutdownTimeoutMs,
    chatTemplate: parseChatTemplateOptions(values),
    engine,
  };
  if (apiKey !== undefined) settings.apiKey = apiKey;
  if (values.revision !== undefined) settings.revision = values.revision;
  if (values["trace-steps"] !== undefined) settings.traceSteps = values["trace-steps"];
  return settings;
}

/** A URL for the address, with IPv6 hosts in brackets. */
function urlOf(host: string, port: number): string {
  return `http://${host.includes(":") ? `[${host}]` : host}:${port}`;
}

export async function runServe(argv: string[]): Promise<void> {
  const settings = parseServeArgs(argv);
  if (!settings) return;
  // Found (or downloaded) before the server listens: a model that cannot be had is one error line.
  const path = await localModel(settings);
  const state = new ServerState(settings.maxQueue);
  const app = buildApp(state, {
    apiKey: settings.apiKey,
    onServerError: (err) => {
      const message = err instanceof Error ? err.message : String(err);
      process.stderr.write(`tiny-llm: request failed: ${message}\n`);
      if (process.env.TINY_LLM_DEBUG && err instanceof Error) process.stderr.write(`${err.stack}\n`);
    },
  });
  const shutdown = gracefulShutdown(app, state, settings.shutdownTimeoutMs);
  let stopping = false;
  const stopped = new Promise<void>((resolve, reject) => {
    const onSignal = (signal: NodeJS.Signals): void => {
      if (!stopping)
        process.stderr.write(`tiny-llm: ${signal}: shutting down (running requests get ${settings.shutdownTimeoutMs / 1000} s)\n`);
      stopping = true;
      shutdown.shutdown().then(resolve, reject);
    };
    process.on("SIGTERM", onSignal);
    process.on("SIGINT", onSignal);
  });

  await app.listen({ host: settings.host, port: settings.port });
  const address = app.server.address();
  const port = typeof address === "object" && address !== null ? address.port : settings.port;
  const url = urlOf(settings.host, port);
  process.stderr.write(`tiny-llm: listening on ${url}, loading ${settings.model}\n`);

  let trace: WriteStream | undefined;
  try {
    // The tokenizer runs on this thread; the weights load in the engine's worker.
    const { loadModel } = await import("../api/load-model.js");
    const model = await loadModel(path, settings.engine);
    const engine = model.core;
    if (stopping) {
      await engine.close();
    } else {
      const { tokenizer, eosTokenIds, sampling } = model;
      state.setModel({ engine, tokenizer, eosTokenIds, sampling, name: settings.model, chatTemplate: settings.chatTemplate });
      if (settings.traceSteps !== undefined) {
        const out = createWriteStream(settings.traceSteps, { flags: "w" });
        trace = out;
        out.on("error", (err) => process.stderr.write(`tiny-llm: --trace-steps ${settings.traceSteps}: ${err.message}\n`));
        engine.onStep((step) => out.write(JSON.stringify(step) + "\n"));
      }
      const { info } = engine;
      process.stdout.write(
        `tiny-llm: serving ${settings.model} at ${url} | ${info.backend} backend (${info.isa}, ${info.threads} thread(s)) | ` +
          `KV pool ${info.kv.blocks} blocks × ${info.kv.blockSize} tokens ${info.kv.dtype} (${formatBytes(info.kv.bytes)}) | ` +
          `max ${info.maxNumSeqs} sequences, ${info.maxBatchTokens} tokens per step\n`,
      );
    }
  } catch (err) {
    await app.close();
    throw err;
  }
  await stopped;
  if (trace) await new Promise<void>((resolve) => trace?.end(resolve));
  process.stderr.write("tiny-llm: stopped\n");
}
