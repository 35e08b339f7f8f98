/**
 * Every error the server answers, in OpenAI's shape with the right status: loading, API keys,
 * unknown routes, malformed JSON, wrong types and ranges, prompts over the context, bodies over
 * the limit, a full queue, an engine failure after the stream began, and shutdown. Plain fetch
 * where the openai client would hide the response (it retries 429s, parses JSON for us).
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import OpenAI from "openai";
import { loadTokenizer } from "../src/generation/load-checkpoint.js";
import { ServerState } from "../src/server/serving.js";
import { FakeEngine } from "./support/fake-engine.js";
import { listen, postJson, readSse, startServer, waitFor, withTimeout, type TestServer } from "./support/server.js";
import { sharedPath } from "./support/shared.js";

const storiesModel = sharedPath("models", "stories260k-qwen2");

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

describe("failures inside the engine", { skip: storiesModel.skip }, () => {
  const { tokenizer } = storiesModel.skip ? { tokenizer: undefined } : loadTokenizer(storiesModel.path);
  const words = tokenizer ? tokenizer.encode("Once upon a time there was", { addSpecialTokens: false }) : [];

  test("an engine error after the stream began is a data: error event, then the stream ends", async () => {
    const engine = new FakeEngine((_id, _params, emit) => {
      setTimeout(() => emit({ tokens: [{ id: words[0] }], promptTokens: 1 }), 5);
      setTimeout(() => emit({ tokens: [], finish: "error", message: "the kernel failed on this batch" }), 15);
    });
    const server = await startServer(storiesModel.path, { fakeEngine: engine });
    try {
      const response = await postJson(`${server.url}/v1/completions`, { prompt: "", stream: true });
      assert.equal(response.status, 200);
      const events = await withTimeout(readSse(response), 5000, "the stream to end");
      const last = events.at(-1) as { error: { message: string; type: string } };
      assert.equal(last.error.message, "the kernel failed on this batch");
      assert.equal(last.error.type, "server_error");
      assert.ok(!events.includes("[DONE]"));
      assert.ok(events.length >= 2, "the token before the error was streamed");

      const client = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: "x", maxRetries: 0 });
      const stream = await client.completions.create({ model: storiesModel.path, prompt: "", stream: true });
      await assert.rejects(
        (async () => {
          for await (const chunk of stream) void chunk;
        })(),
        (err: unknown) => err instanceof OpenAI.APIError && /kernel failed/.test(err.message),
      );

      const plain = await postJson(`${server.url}/v1/completions`, { prompt: "" });
      const error = await expectError(plain, 500);
      assert.equal(error.message, "the kernel failed on this batch");
    } finally {
      await server.close();
    }
  });

  test("an unexpected failure is a 500 without its details; the server goes on", async () => {
    let throwNext = true;
    const logged: unknown[] = [];
    const engine = new FakeEngine((_id, _params, emit) => setTimeout(() => emit({ tokens: [{ id: words[0] }], finish: "length" }), 1), {
      check: () => {
        if (throwNext) {
          throwNext = false;
          throw new TypeError("Cannot read properties of undefined (reading 'blocks') at /srv/secret/engine.js:12");
        }
      },
    });
    const server = await startServer(storiesModel.path, { fakeEngine: engine, app: { onServerError: (err) => logged.push(err) } });
    try {
      const error = await expectError(await postJson(`${server.url}/v1/completions`, { prompt: "", max_tokens: 1 }), 500);
      assert.equal(error.type, "server_error");
      assert.ok(!error.message.includes("secret") && !error.message.includes("blocks"), error.message);
      assert.equal(logged.length, 1);
      const next = await postJson(`${server.url}/v1/completions`, { prompt: "", max_tokens: 1 });
      assert.equal(next.status, 200);
    } finally {
      await server.close();
    }
  });

  test("queue full is 429; clients that disconnect while running or queued are aborted in the engine", async () => {
    // Requests run until aborted; three may be in flight (1 running + a queue of 2).
    const engine = new FakeEngine((_id, _params, emit) => setTimeout(() => emit({ tokens: [{ id: words[0] }] }), 1), { maxNumSeqs: 1 });
    const server = await startServer(storiesModel.path, { fakeEngine: engine, maxQueue: 2 });
    const controllers = [new AbortController(), new AbortController()];
    try {
      const streaming = await postJson(`${server.url}/v1/completions`, { prompt: "", stream: true }, {});
      void streaming;
      const first = fetch(`${server.url}/v1/completions`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ prompt: "", stream: true }),
        signal: controllers[0].signal,
      });
      const second = fetch(`${server.url}/v1/completions`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ prompt: "" }),
        signal: controllers[1].signal,
      });
      void first.catch(() => {});
      void second.catch(() => {});
      await waitFor(() => engine.inFlight === 3, 5000, "three requests in flight");
      // 3 in flight, 1 + 2 allowed: the next is refused, and so is one asking for two choices.
      const error = await expectError(await postJson(`${server.url}/v1/completions`, { prompt: "" }), 429);
      assert.equal(error.type, "rate_limit_error");
      assert.equal(error.code, "rate_limit_exceeded");
      await expectError(await postJson(`${server.url}/v1/completions`, { prompt: "", n: 2 }), 429);
      const client = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: "x", maxRetries: 0 });
      await assert.rejects(
        client.completions.create({ model: storiesModel.path, prompt: "" }),
        (err: unknown) => err instanceof OpenAI.RateLimitError,
      );

      const ids = engine.submitted.map((s) => s.id);
      await (await first).body?.getReader().read();
      controllers[0].abort();
      controllers[1].abort();
      await waitFor(() => engine.aborted.length === 2, 5000, "both disconnected requests to be aborted");
      assert.deepEqual(engine.aborted.sort(), ids.slice(1).sort());
      await streaming.body?.cancel();
      await waitFor(() => engine.inFlight === 0, 5000, "every request to leave the engine");
    } finally {
      controllers.forEach((c) => c.abort());
      await server.close();
    }
  });

  test("shutdown: a request that finishes within the grace period completes, the rest get an error, then the engine closes", async () => {
    const engine = new FakeEngine((_id, params, emit) => {
      // A request with max_tokens 1 finishes after 100 ms; others never do.
      setTimeout(() => emit({ tokens: [{ id: words[1] }], finish: params.maxTokens === 1 ? "length" : undefined }), 100);
    });
    const server = await startServer(storiesModel.path, { fakeEngine: engine, graceMs: 300 });
    try {
      const quick = postJson(`${server.url}/v1/completions`, { prompt: "", max_tokens: 1 });
      const endless = postJson(`${server.url}/v1/completions`, { prompt: "", stream: true });
      await waitFor(() => engine.inFlight === 2, 5000, "both requests in the engine");
      const shutdown = server.shutdown();
      const health = await fetch(`${server.url}/health`).catch(() => undefined);
      if (health) assert.equal(health.status, 503);

      const quickResponse = await quick;
      assert.equal(quickResponse.status, 200);
      const done = (await quickResponse.json()) as OpenAI.Completions.Completion;
      assert.equal(done.choices[0].finish_reason, "length");

      const events = await withTimeout(readSse(await endless), 5000, "the unfinished stream to end");
      const last = events.at(-1) as ErrorBody;
      assert.match(last.error.message, /shut down/);
      await withTimeout(shutdown, 10_000, "shutdown");
      assert.ok(engine.closed);
    } finally {
      await server.close();
    }
  });
});
