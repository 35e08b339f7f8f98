/**
 * Every error the server answers, in OpenAI's shape with the right status: loading, API keys,
 * unknown routes, malformed JSON, wrong types and ranges, prompts over the context, bodies over
 * the limit, a full queue, an engine failure after the stream began, and shutdown. Plain fetch
 * where the openai client would hide the response (it retries 429s, parses JSON for us). The
 * engine is always the real one in its worker thread: requests are made long enough to still be
 * running when a test acts, and tests wait for what the server shows (/metrics, SSE chunks, the
 * engine's requests in flight), never for a fixed time.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import type { Worker } from "node:worker_threads";
import OpenAI from "openai";
import { ServerState } from "../src/server/serving.js";
import { listen, metrics, postJson, startServer, waitFor, withTimeout, type TestServer } from "./support/server.js";
import { sharedPath } from "./support/shared.js";

const storiesModel = sharedPath("models", "stories260k-qwen2");
const randomModel = sharedPath("models", "tiny-random-qwen2");

interface ErrorBody {
  error: { message: string; type: string; param: string | null; code: string | null };
}

/** Checks the OpenAI error shape and status; returns the error. */
async function expectError(response: Response, status: number): Promise<ErrorBody["error"]> {
  const text = await response.text();
  assert.equal(response.status, status, text);
  assert.match(response.headers.get("content-type") ?? "", /application\/json/);
  const body = JSON.parse(text) as ErrorBody;
  assert.deepEqual(Object.keys(body), ["error"]);
  assert.deepEqual(Object.keys(body.error).sort(), ["code", "message", "param", "type"]);
  assert.equal(typeof body.error.message, "string");
  assert.ok(!/\n\s+at /.test(body.error.message), "no stack trace");
  return body.error;
}

/** Checks that an SSE event is an error in OpenAI's shape; returns the error. */
function expectErrorEvent(event: unknown): ErrorBody["error"] {
  assert.equal(typeof event, "object", JSON.stringify(event));
  const body = event as ErrorBody;
  assert.deepEqual(Object.keys(body), ["error"]);
  assert.deepEqual(Object.keys(body.error).sort(), ["code", "message", "param", "type"]);
  assert.equal(typeof body.error.message, "string");
  assert.ok(!/\n\s+at /.test(body.error.message), "no stack trace");
  return body.error;
}

/** An SSE response read event by event, so that a test can act once a stream has begun. */
class SseReader {
  readonly events: unknown[] = [];
  private readonly reader: ReadableStreamDefaultReader<Uint8Array>;
  private readonly decoder = new TextDecoder();
  private buffer = "";
  private ended = false;

  constructor(response: Response) {
    assert.equal(response.status, 200);
    assert.match(response.headers.get("content-type") ?? "", /text\/event-stream/);
    this.reader = (response.body as ReadableStream<Uint8Array>).getReader();
  }

  /** Reads until `count` events have arrived or the stream has ended; returns the events so far. */
  async until(count: number): Promise<unknown[]> {
    while (this.events.length < count && !this.ended) {
      const { done, value } = await this.reader.read();
      if (done) {
        this.ended = true;
        break;
      }
      this.buffer += this.decoder.decode(value, { stream: true });
      for (let end = this.buffer.indexOf("\n\n"); end >= 0; end = this.buffer.indexOf("\n\n")) {
        const block = this.buffer.slice(0, end).trim();
        this.buffer = this.buffer.slice(end + 2);
        if (block === "") continue;
        assert.ok(block.startsWith("data: "), `not an SSE data line: ${JSON.stringify(block)}`);
        const data = block.slice("data: ".length);
        this.events.push(data === "[DONE]" ? data : JSON.parse(data));
      }
    }
    return this.events;
  }

  /** Every event, once the stream has ended. */
  all(): Promise<unknown[]> {
    return this.until(Infinity);
  }

  cancel(): Promise<void> {
    return this.reader.cancel().catch(() => {});
  }
}

describe("the server while the model loads", () => {
  let server: { app: Awaited<ReturnType<typeof listen>>["app"]; url: string };
  const state = new ServerState();
  before(async () => {
    server = await listen(state, { apiKey: "k" });
  });
  after(() => server?.app.close());

  test("/health is 503 loading (and public), generation routes 503 in OpenAI's shape", async () => {
    const health = await fetch(`${server.url}/health`);
    assert.equal(health.status, 503);
    assert.deepEqual(await health.json(), { status: "loading" });
    const models = await fetch(`${server.url}/v1/models`, { headers: { authorization: "Bearer k" } });
    const error = await expectError(models, 503);
    assert.equal(error.type, "service_unavailable");
    assert.match(error.message, /loading/);
    const completion = await postJson(`${server.url}/v1/completions`, { prompt: "x" }, { authorization: "Bearer k" });
    await expectError(completion, 503);
    const metrics = await fetch(`${server.url}/metrics`, { headers: { authorization: "Bearer k" } });
    assert.equal(metrics.status, 200);
    assert.match(await metrics.text(), /^tiny_llm_kv_blocks_used 0$/m);
  });
});

describe("errors from a loaded server", { skip: storiesModel.skip }, () => {
  let server: TestServer;
  let small: TestServer;
  const auth = { authorization: "Bearer sekret" };
  const post = (path: string, body: unknown, headers: Record<string, string> = auth) => postJson(`${server.url}${path}`, body, headers);

  before(async () => {
    server = await startServer(storiesModel.path, { app: { apiKey: "sekret" } });
    small = await startServer(storiesModel.path, { app: { bodyLimit: 64 * 1024 } });
  });
  after(async () => {
    await Promise.all([server?.close(), small?.close()]);
  });

  test("API key: /health is public, everything else needs the key (401)", async () => {
    assert.equal((await fetch(`${server.url}/health`)).status, 200);
    assert.deepEqual(await (await fetch(`${server.url}/health`)).json(), { status: "ok" });
    const missing = await expectError(await fetch(`${server.url}/v1/models`), 401);
    assert.equal(missing.code, "invalid_api_key");
    const wrong = await expectError(await fetch(`${server.url}/v1/models`, { headers: { authorization: "Bearer nope" } }), 401);
    assert.match(wrong.message, /not valid/);
    await expectError(await post("/v1/completions", { prompt: "" }, {}), 401);
    await expectError(await fetch(`${server.url}/metrics`), 401);
    assert.equal((await fetch(`${server.url}/v1/models`, { headers: auth })).status, 200);
    const client = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: "wrong", maxRetries: 0 });
    await assert.rejects(client.models.list(), (err: unknown) => err instanceof OpenAI.AuthenticationError && err.status === 401);
    const ok = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: "sekret", maxRetries: 0 });
    assert.equal((await ok.models.list()).data.length, 1);
  });

  test("unknown routes are 404", async () => {
    const error = await expectError(await fetch(`${server.url}/v1/engines`, { headers: auth }), 404);
    assert.equal(error.type, "not_found_error");
    assert.match(error.message, /GET \/v1\/engines/);
    await expectError(await fetch(`${server.url}/nothing/here`), 404);
    await expectError(await fetch(`${server.url}/v1/completions`, { headers: auth }), 404);
  });

  test("malformed JSON, an empty body and a body that is not JSON", async () => {
    const bad = await fetch(`${server.url}/v1/completions`, {
      method: "POST",
      headers: { ...auth, "content-type": "application/json" },
      body: '{"prompt": ',
    });
    const error = await expectError(bad, 400);
    assert.equal(error.type, "invalid_request_error");
    assert.equal(error.code, "invalid_json");
    const empty = await fetch(`${server.url}/v1/chat/completions`, {
      method: "POST",
      headers: { ...auth, "content-type": "application/json" },
      body: "",
    });
    await expectError(empty, 400);
    const form = await fetch(`${server.url}/v1/completions`, {
      method: "POST",
      headers: { ...auth, "content-type": "text/plain" },
      body: "prompt",
    });
    await expectError(form, 415);
    const array = await post("/v1/completions", [1, 2]);
    assert.equal((await expectError(array, 400)).type, "invalid_request_error");
  });

  test("wrong types and ranges are 400 and name the field", async () => {
    const cases: [string, Record<string, unknown>, string][] = [
      ["/v1/completions", { prompt: "", temperature: "hot" }, "temperature"],
      ["/v1/completions", { prompt: "", temperature: 2.5 }, "temperature"],
      ["/v1/completions", { prompt: "", max_tokens: -1 }, "max_tokens"],
      ["/v1/completions", { prompt: "", max_tokens: 1.5 }, "max_tokens"],
      ["/v1/completions", { prompt: "", top_p: 0 }, "top_p"],
      ["/v1/completions", { prompt: "", n: 0 }, "n"],
      ["/v1/completions", { prompt: "", logprobs: 21 }, "logprobs"],
      ["/v1/completions", { prompt: "", stop: ["a", "b", "c", "d", "e"] }, "stop"],
      ["/v1/completions", { prompt: "", stop: [1] }, "stop.0"],
      ["/v1/completions", { prompt: "", presence_penalty: 3 }, "presence_penalty"],
      ["/v1/completions", { prompt: "", logit_bias: { "12": 101 } }, "logit_bias.12"],
      ["/v1/completions", { prompt: "", logit_bias: { hello: 1 } }, "logit_bias"],
      ["/v1/completions", { prompt: "", logit_bias: { "9999": 1 } }, "logit_bias"],
      ["/v1/completions", { prompt: "", seed: "1" }, "seed"],
      ["/v1/completions", { prompt: "", stream: "yes" }, "stream"],
      ["/v1/completions", { prompt: {} }, "prompt"],
      ["/v1/completions", { prompt: [] }, "prompt"],
      ["/v1/completions", { prompt: [1, "a"] }, "prompt"],
      ["/v1/completions", { prompt: [1, 512] }, "prompt"],
      ["/v1/completions", {}, "prompt"],
      ["/v1/chat/completions", {}, "messages"],
      ["/v1/chat/completions", { messages: [] }, "messages"],
      ["/v1/chat/completions", { messages: [{ role: "wizard", content: "hi" }] }, "messages.0.role"],
      ["/v1/chat/completions", { messages: [{ role: "user", content: 5 }] }, "messages.0.content"],
      ["/v1/chat/completions", { messages: [{ role: "user", content: "hi" }], top_logprobs: 21, logprobs: true }, "top_logprobs"],
      ["/v1/chat/completions", { messages: [{ role: "user", content: "hi" }], top_logprobs: 2 }, "top_logprobs"],
      ["/v1/chat/completions", { messages: [{ role: "user", content: "hi" }], max_completion_tokens: 0 }, "max_completion_tokens"],
      // This model has no chat template.
      ["/v1/chat/completions", { messages: [{ role: "user", content: "hi" }] }, "messages"],
      ["/detokenize", { tokens: [1, 99999] }, "tokens"],
      ["/detokenize", {}, "tokens"],
    ];
    for (const [path, body, param] of cases) {
      const error = await expectError(await post(path, body), 400);
      assert.equal(error.param, param, `${path} ${JSON.stringify(body)}: ${error.message}`);
      assert.equal(error.type, "invalid_request_error");
      assert.ok(error.message.includes(param.split(".")[0]), `the message names the field: ${error.message}`);
    }
  });

  test("prompt + max_tokens over the context is 400 with both numbers, before any stream starts", async () => {
    for (const stream of [false, true]) {
      const response = await post("/v1/completions", { prompt: "Once upon a time", max_tokens: 600, stream });
      const error = await expectError(response, 400);
      assert.match(error.message, /600/);
      assert.match(error.message, /512/);
      assert.match(error.message, /prompt is \d+ tokens/);
      assert.equal(error.param, "max_tokens");
    }
    const long = await expectError(await post("/v1/completions", { prompt: new Array(600).fill(5) }), 400);
    assert.equal(long.param, "prompt");
    assert.match(long.message, /600/);
  });

  test("a model name the server does not serve is 404", async () => {
    const error = await expectError(await post("/v1/completions", { model: "gpt-4o", prompt: "" }), 404);
    assert.equal(error.code, "model_not_found");
    assert.equal((await post("/v1/completions", { model: "stories260k-qwen2", prompt: "", max_tokens: 1 })).status, 200);
  });

  test("a body over the limit is 413", async () => {
    const response = await postJson(`${small.url}/v1/completions`, { prompt: "a".repeat(100 * 1024) });
    const error = await expectError(response, 413);
    assert.equal(error.code, "request_too_large");
  });
});

describe("failures inside the engine", { skip: randomModel.skip }, () => {
  // The TypeScript kernels on tiny-random-qwen2 (context 4096) take milliseconds per decoding
  // step and seconds per thousand prompt tokens: a request for thousands of tokens is still
  // running when a test acts on it, and is aborted or cut off rather than waited for.
  const engine = { backend: "ts" } as const;
  const long = { prompt: "Once upon a time", max_tokens: 4000, temperature: 0, ignore_eos: true };
  const longChat = { messages: [{ role: "user", content: "Tell me a story" }], max_tokens: 3000, temperature: 0, ignore_eos: true };

  /** The engine's gauges and the aborted choices, as /metrics shows them. */
  async function engineMetrics(url: string): Promise<{ running: number; waiting: number; aborted: number; blocksInUse: number }> {
    const text = await metrics(url);
    const value = (name: string, labels = ""): number | undefined => {
      const line = text.split("\n").find((l) => l.startsWith(`${name}${labels} `));
      return line === undefined ? undefined : Number(line.split(" ").at(-1));
    };
    return {
      running: value("tiny_llm_requests_running") ?? NaN,
      waiting: value("tiny_llm_requests_waiting") ?? NaN,
      // The counter has no sample for a label until its first choice ends that way.
      aborted: value("tiny_llm_requests_finished_total", '{finish_reason="abort"}') ?? 0,
      blocksInUse: (value("tiny_llm_kv_blocks_total") ?? NaN) - (value("tiny_llm_kv_blocks_free") ?? NaN),
    };
  }

  type EngineMetrics = Awaited<ReturnType<typeof engineMetrics>>;

  /** Polls /metrics until `check` holds, for at most `ms`; a timeout says what was last seen. */
  async function waitForMetrics(url: string, check: (m: EngineMetrics) => boolean, what: string, ms = 20_000): Promise<void> {
    let last: EngineMetrics | undefined;
    await waitFor(async () => check((last = await engineMetrics(url))), ms, what).catch((err: Error) => {
      throw new Error(`${err.message}; last seen in /metrics: ${JSON.stringify(last)}`);
    });
  }

  /** The engine's worker thread (AsyncEngine keeps it to itself). */
  const workerOf = (server: TestServer): Worker => (server.engine as unknown as { worker: Worker }).worker;

  test("the engine's worker dies mid-stream: streams end with a data: error event, requests in flight get a 500, new ones a 503, /health says failed", async () => {
    const server = await startServer(randomModel.path, { engine });
    try {
      const completion = new SseReader(await postJson(`${server.url}/v1/completions`, { ...long, stream: true }));
      await withTimeout(completion.until(1), 20_000, "the completion stream's first chunk");
      const chat = new SseReader(await postJson(`${server.url}/v1/chat/completions`, { ...longChat, stream: true }));
      await withTimeout(chat.until(2), 20_000, "the chat stream's first content chunk");
      const client = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: "x", maxRetries: 0 });
      const stream = await client.completions.create({
        ...long,
        model: randomModel.path,
        stream: true,
      } as OpenAI.Completions.CompletionCreateParamsStreaming);
      const chunks = stream[Symbol.asyncIterator]();
      await withTimeout(chunks.next(), 20_000, "the openai client's first chunk");
      const plain = postJson(`${server.url}/v1/completions`, long);
      await waitFor(() => server.engine.inFlight === 4, 20_000, "four requests running in the engine");
      assert.equal(server.engine.failed, undefined);

      await workerOf(server).terminate();

      for (const [name, reader] of [
        ["completion", completion],
        ["chat", chat],
      ] as const) {
        const events = await withTimeout(reader.all(), 10_000, `the ${name} stream to end`);
        assert.ok(events.length >= 2, `the ${name} stream had begun before the error`);
        assert.ok(!events.includes("[DONE]"), `the ${name} stream ends at the error`);
        const error = expectErrorEvent(events.at(-1));
        assert.equal(error.type, "server_error");
        assert.match(error.message, /^the engine failed: the engine worker exited/);
      }
      await assert.rejects(
        withTimeout(
          (async () => {
            for (let next = await chunks.next(); !next.done; next = await chunks.next());
          })(),
          10_000,
          "the openai client's stream to end",
        ),
        (err: unknown) => err instanceof OpenAI.APIError && /engine failed/.test(err.message),
      );
      const inFlight = await expectError(await withTimeout(plain, 10_000, "the request in flight to be answered"), 500);
      assert.equal(inFlight.type, "server_error");
      assert.match(inFlight.message, /^the engine failed: the engine worker exited/);

      const health = await fetch(`${server.url}/health`);
      assert.equal(health.status, 503);
      const status = (await health.json()) as { status: string; message: string };
      assert.equal(status.status, "failed");
      assert.match(status.message, /the engine worker exited/);

      // New requests are turned away before anything starts, streaming or not, on both routes.
      for (const [path, body] of [
        ["/v1/completions", { prompt: "Hi", max_tokens: 2 }],
        ["/v1/completions", { prompt: "Hi", max_tokens: 2, stream: true }],
        ["/v1/chat/completions", { messages: [{ role: "user", content: "Hi" }], max_tokens: 2, stream: true }],
      ] as const) {
        const error = await expectError(await postJson(`${server.url}${path}`, body), 503);
        assert.equal(error.type, "service_unavailable");
        assert.match(error.message, /^the engine failed and serves no more requests: the engine worker exited .*; restart the server$/);
      }
      await assert.rejects(
        client.completions.create({ model: randomModel.path, prompt: "Hi", max_tokens: 2 }),
        (err: unknown) => err instanceof OpenAI.APIError && err.status === 503,
      );
      assert.equal(server.engine.inFlight, 0);
      assert.equal((await fetch(`${server.url}/metrics`)).status, 200);
    } finally {
      await server.close();
    }
  });

  test("queue full is 429; clients that disconnect while running or queued are aborted in the engine", async () => {
    // One sequence runs at a time and two may wait: three requests in flight fill the server.
    const server = await startServer(randomModel.path, { engine: { ...engine, maxNumSeqs: 1 }, maxQueue: 2 });
    const controllers = [new AbortController(), new AbortController(), new AbortController()];
    const open = (body: object, signal: AbortSignal): Promise<Response> =>
      fetch(`${server.url}/v1/completions`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify(body),
        signal,
      });
    try {
      const running = new SseReader(await open({ ...long, stream: true }, controllers[0].signal));
      await withTimeout(running.until(1), 20_000, "the first stream's first chunk");
      // A stream's headers go out at once, before its request leaves the queue.
      const queuedStream = await open({ ...long, stream: true }, controllers[1].signal);
      const queuedPlain = open(long, controllers[2].signal);
      void queuedPlain.catch(() => {});
      await waitForMetrics(server.url, (m) => m.running === 1 && m.waiting === 2, "one request running and two waiting");
      assert.equal(server.engine.inFlight, 3);
      assert.equal((await engineMetrics(server.url)).aborted, 0);

      // 3 in flight, 1 + 2 allowed: the next is refused, and so is one asking for two choices.
      const error = await expectError(await postJson(`${server.url}/v1/completions`, { prompt: "Hi" }), 429);
      assert.equal(error.type, "rate_limit_error");
      assert.equal(error.code, "rate_limit_exceeded");
      await expectError(await postJson(`${server.url}/v1/completions`, { prompt: "Hi", n: 2 }), 429);
      const client = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: "x", maxRetries: 0 });
      await assert.rejects(
        client.completions.create({ model: randomModel.path, prompt: "Hi" }),
        (err: unknown) => err instanceof OpenAI.RateLimitError,
      );
      assert.equal(server.engine.inFlight, 3, "refused requests never reach the engine");

      // A client whose request waits in the queue disconnects: it leaves the queue, the running one goes on.
      controllers[2].abort();
      await waitForMetrics(server.url, (m) => m.waiting === 1 && m.aborted === 1, "the queued request to be aborted");
      assert.equal(server.engine.inFlight, 2);
      const seen = running.events.length;
      await withTimeout(running.until(seen + 1), 20_000, "the running stream to go on");
      assert.equal((await engineMetrics(server.url)).running, 1);

      // The running client disconnects mid-stream: it is aborted, and the queued stream starts.
      controllers[0].abort();
      const next = new SseReader(queuedStream);
      await withTimeout(next.until(1), 20_000, "the queued stream to start once the running one is gone");
      await waitForMetrics(server.url, (m) => m.aborted === 2 && m.running === 1 && m.waiting === 0, "the running request to be aborted");
      assert.equal(server.engine.inFlight, 1);

      await next.cancel();
      await waitForMetrics(
        server.url,
        (m) => m.aborted === 3 && m.running === 0 && m.waiting === 0 && m.blocksInUse === 0,
        "every request to leave the engine and its blocks to be free",
      );
      assert.equal(server.engine.inFlight, 0);
    } finally {
      controllers.forEach((c) => c.abort());
      await server.close();
    }
  });

  test("shutdown: a request that finishes within the grace period completes, then the engine closes", async () => {
    const server = await startServer(randomModel.path, { engine, graceMs: 60_000 });
    let shutdown: Promise<void> | undefined;
    let inFlightAtShutdown = 0;
    // Shutdown starts right after an engine step, in the same turn of the event loop, while the
    // request is in the engine with most of its tokens still to come.
    const stop = server.engine.onStep(() => {
      if (shutdown !== undefined || server.engine.inFlight === 0) return;
      inFlightAtShutdown = server.engine.inFlight;
      shutdown = server.shutdown();
    });
    try {
      const quick = postJson(`${server.url}/v1/completions`, { ...long, max_tokens: 64 });
      await waitFor(() => shutdown !== undefined, 20_000, "an engine step with the request in it");
      assert.equal(inFlightAtShutdown, 1);
      const health = await fetch(`${server.url}/health`).catch(() => undefined);
      if (health) assert.equal(health.status, 503);

      const quickResponse = await withTimeout(quick, 60_000, "the request to finish");
      assert.equal(quickResponse.status, 200);
      const done = (await quickResponse.json()) as OpenAI.Completions.Completion;
      assert.equal(done.choices[0].finish_reason, "length");
      assert.equal(done.usage?.completion_tokens, 64, "every token was generated");
      await withTimeout(shutdown as Promise<void>, 10_000, "shutdown");
      assert.equal(workerOf(server).threadId, -1, "the engine's worker has exited");
      assert.equal(server.engine.failed, undefined, "closing is not a failure");
    } finally {
      stop();
      await server.close();
    }
  });

  test("shutdown: requests still running past the grace period get an error, then the engine closes", async () => {
    const graceMs = 300;
    const server = await startServer(randomModel.path, { engine, graceMs });
    try {
      const endless = new SseReader(await postJson(`${server.url}/v1/completions`, { ...long, stream: true }));
      await withTimeout(endless.until(1), 20_000, "the stream's first chunk");
      const plain = postJson(`${server.url}/v1/completions`, long);
      await waitFor(() => server.engine.inFlight === 2, 20_000, "both requests in the engine");
      const started = performance.now();
      const shutdown = server.shutdown();
      const health = await fetch(`${server.url}/health`).catch(() => undefined);
      if (health) assert.equal(health.status, 503);

      const events = await withTimeout(endless.all(), 10_000, "the unfinished stream to end");
      assert.ok(performance.now() - started >= graceMs - 5, "running requests had the grace period");
      assert.ok(!events.includes("[DONE]"));
      const last = expectErrorEvent(events.at(-1));
      assert.match(last.message, /shut down/);
      const error = await expectError(await withTimeout(plain, 10_000, "the request in flight to be answered"), 503);
      assert.match(error.message, /shut down/);
      await withTimeout(shutdown, 10_000, "shutdown");
      assert.equal(workerOf(server).threadId, -1, "the engine's worker has exited");
      assert.equal(server.engine.inFlight, 0);
    } finally {
      await server.close();
    }
  });
});
