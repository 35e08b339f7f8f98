/**
 * A real tiny-llm server on 127.0.0.1 for tests: the engine in its worker thread, the Fastify
 * app on a free port, and helpers to read its streams and metrics with plain fetch.
 */
import type { ChatTemplateSettings } from "../../src/api/engine.js";
import type { FastifyInstance } from "fastify";
import { AsyncEngine } from "../../src/engine/async-engine.js";
import type { EngineOptions } from "../../src/engine/engine-options.js";
import { loadTokenizer } from "../../src/generation/load-checkpoint.js";
import { buildApp, type AppOptions } from "../../src/server/app.js";
import { ServerState, type ServingEngine } from "../../src/server/serving.js";
import { gracefulShutdown } from "../../src/server/shutdown.js";

export interface TestServer {
  url: string;
  app: FastifyInstance;
  state: ServerState;
  engine: ServingEngine;
  close(): Promise<void>;
}

/** Rejects after `ms` with a message naming what was awaited. */
export function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

export async function listen(state: ServerState, opts: AppOptions = {}): Promise<{ app: FastifyInstance; url: string }> {
  const app = buildApp(state, opts);
  await app.listen({ host: "127.0.0.1", port: 0 });
  const address = app.server.address();
  if (typeof address !== "object" || address === null) throw new Error("no address");
  return { app, url: `http://127.0.0.1:${address.port}` };
}

/** Serves `modelPath` on a real engine with these options. */
export async function startServer(
  modelPath: string,
  opts: { engine?: EngineOptions; app?: AppOptions; maxQueue?: number; graceMs?: number; chatTemplate?: ChatTemplateSettings } = {},
): Promise<TestServer & { shutdown(): Promise<void> }> {
  const { tokenizer, eosTokenIds, sampling } = loadTokenizer(modelPath);
  const engine = await withTimeout(AsyncEngine.start(modelPath, opts.engine ?? {}), 60_000, "engine start");
  const state = new ServerState(opts.maxQueue);
  state.setModel({ engine, tokenizer, eosTokenIds, sampling, name: modelPath, chatTemplate: opts.chatTemplate });
  let app: FastifyInstance;
  let url: string;
  try {
    ({ app, url } = await listen(state, opts.app));
  } catch (err) {
    await engine.close();
    throw err;
  }
  const shutdown = gracefulShutdown(app, state, opts.graceMs ?? 5000);
  return {
    url,
    app,
    state,
    engine,
    shutdown: () => shutdown.shutdown(),
    close: () => withTimeout(shutdown.shutdown(), 20_000, "server shutdown"),
  };
}

export async function postJson(url: string, body: unknown, headers: Record<string, string> = {}): Promise<Response> {
  return fetch(url, { method: "POST", headers: { "content-type": "application/json", ...headers }, body: JSON.stringify(body) });
}

/** Every `data:` payload of an SSE response, in order ("[DONE]" kept as the string). */
export async function readSse(response: Response): Promise<unknown[]> {
  const text = await response.text();
  const events: unknown[] = [];
  for (const block of text.split("\n\n")) {
    const line = block.trim();
    if (line === "") continue;
    if (!line.startsWith("data: ")) throw new Error(`not an SSE data line: ${JSON.stringify(line)}`);
    const data = line.slice("data: ".length);
    events.push(data === "[DONE]" ? data : JSON.parse(data));
  }
  return events;
}

/** One metric's value from Prometheus text (the first sample of that name, without labels unless given). */
export function metricValue(text: string, name: string, labels = ""): number {
  const line = text.split("\n").find((l) => l.startsWith(`${name}${labels ? `{${labels}}` : ""} `));
  if (line === undefined) throw new Error(`metric ${name}${labels ? `{${labels}}` : ""} not found`);
  return Number(line.split(" ").at(-1));
}

export async function metrics(url: string, headers: Record<string, string> = {}): Promise<string> {
  const response = await fetch(`${url}/metrics`, { headers });
  if (!response.ok) throw new Error(`/metrics answered ${response.status}`);
  return response.text();
}

/** Polls `check` every 20 ms until it returns true, for at most `ms`. */
export async function waitFor(check: () => Promise<boolean> | boolean, ms: number, what: string): Promise<void> {
  const deadline = Date.now() + ms;
  for (;;) {
    if (await check()) return;
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}
