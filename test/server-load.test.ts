/**
 * The server under load, on the real engine: 64 concurrent clients each get the answer they get
 * alone (the engine is batch-invariant), and a client that disconnects mid-stream has its
 * request aborted and its KV blocks returned to the pool, as /metrics shows.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import OpenAI from "openai";
import { metrics, metricValue, postJson, startServer, waitFor, withTimeout, type TestServer } from "./support/server.js";
import { sharedPath } from "./support/shared.js";

const storiesModel = sharedPath("models", "stories260k-qwen2");
const randomModel = sharedPath("models", "tiny-random-qwen2");

interface Answer {
  text: string;
  logprobs: (number | null)[];
  finish: string | null;
  tokens: number | undefined;
}

const OPENINGS = [
  "Once upon a time",
  "The little dog",
  "One day, Lily",
  "Tom and Sue went",
  "The sun was",
  "A big red ball",
  "",
  "Mom said",
];

/** Request i of 64: its own prompt, length and sampling; half of them streamed. */
function spec(i: number) {
  return {
    prompt: `${OPENINGS[i % OPENINGS.length]}${i >= 8 ? ` ${"and then ".repeat(i % 5)}` : ""}`.trimEnd(),
    max_tokens: 16 + ((i * 7) % 48),
    temperature: i % 2 === 0 ? 0 : 0.8,
    seed: i % 2 === 0 ? undefined : 1000 + i,
    logprobs: 1,
    stream: i % 4 < 2,
  };
}

async function ask(client: OpenAI, model: string, i: number): Promise<Answer> {
  const { stream, seed, ...rest } = spec(i);
  const params = { model, ...rest, ...(seed === undefined ? {} : { seed }) };
  if (!stream) {
    const r = await client.completions.create(params);
    return {
      text: r.choices[0].text,
      logprobs: r.choices[0].logprobs?.token_logprobs ?? [],
      finish: r.choices[0].finish_reason,
      tokens: r.usage?.completion_tokens,
    };
  }
  const s = await client.completions.create({ ...params, stream: true, stream_options: { include_usage: true } });
  const answer: Answer = { text: "", logprobs: [], finish: null, tokens: undefined };
  for await (const chunk of s) {
    if (chunk.usage) answer.tokens = chunk.usage.completion_tokens;
    const choice = chunk.choices[0];
    if (!choice) continue;
    answer.text += choice.text;
    answer.logprobs.push(...(choice.logprobs?.token_logprobs ?? []));
    if (choice.finish_reason) answer.finish = choice.finish_reason;
  }
  return answer;
}

describe("64 concurrent clients", { skip: storiesModel.skip }, () => {
  let server: TestServer;
  before(async () => {
    server = await startServer(storiesModel.path);
  });
  after(() => server?.close());

  test("each of 64 concurrent clients gets its full answer, equal to its answer alone", { timeout: 240_000 }, async () => {
    const client = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: "x", maxRetries: 0, timeout: 120_000 });
    const alone: Answer[] = [];
    for (let i = 0; i < 64; i++) alone.push(await ask(client, storiesModel.path, i));
    const before = await metrics(server.url);

    const together = await withTimeout(
      Promise.all(Array.from({ length: 64 }, (_, i) => ask(client, storiesModel.path, i))),
      180_000,
      "64 concurrent requests",
    );
    for (let i = 0; i < 64; i++) {
      assert.ok(together[i].tokens !== undefined && together[i].tokens === alone[i].tokens, `request ${i}: ${together[i].tokens} tokens`);
      assert.equal(together[i].finish, alone[i].finish, `request ${i}`);
      assert.equal(together[i].text, alone[i].text, `request ${i}`);
      // Bitwise: the same log-probabilities whatever shared the batch.
      assert.deepEqual(together[i].logprobs, alone[i].logprobs, `request ${i}`);
      assert.equal(together[i].logprobs.length, alone[i].tokens);
    }
    const afterText = await metrics(server.url);
    const finished = (text: string) =>
      ["stop", "length"].reduce((sum, reason) => {
        try {
          return sum + metricValue(text, "tiny_llm_requests_finished_total", `finish_reason="${reason}"`);
        } catch {
          return sum;
        }
      }, 0);
    assert.equal(finished(afterText) - finished(before), 64);
    // The requests shared steps: some step ran more than one of them.
    const steps = metricValue(afterText, "tiny_llm_step_batch_requests_count") - metricValue(before, "tiny_llm_step_batch_requests_count");
    const single =
      metricValue(afterText, "tiny_llm_step_batch_requests_bucket", 'le="1"') -
      metricValue(before, "tiny_llm_step_batch_requests_bucket", 'le="1"');
    assert.ok(steps > 0 && single < steps, `${single} of ${steps} steps ran one request`);
    await waitFor(() => server.engine.inFlight === 0, 5000, "the engine to be idle");
  });
});

describe("disconnects", { skip: randomModel.skip }, () => {
  let server: TestServer;
  before(async () => {
    server = await startServer(randomModel.path);
  });
  after(() => server?.close());

  test("a client that disconnects mid-stream is aborted and its KV blocks go back to the pool", async () => {
    const before = await metrics(server.url);
    const abortsBefore = (() => {
      try {
        return metricValue(before, "tiny_llm_requests_finished_total", 'finish_reason="abort"');
      } catch {
        return 0;
      }
    })();
    const controller = new AbortController();
    const response = await fetch(`${server.url}/v1/completions`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ prompt: "Once upon a time", max_tokens: 3000, temperature: 0, ignore_eos: true, stream: true }),
      signal: controller.signal,
    });
    assert.equal(response.status, 200);
    const reader = (response.body as ReadableStream<Uint8Array>).getReader();
    let received = "";
    while ((received.match(/^data: /gm) ?? []).length < 5) {
      const { value, done } = await withTimeout(reader.read(), 10_000, "stream chunks");
      assert.ok(!done, "the stream ended early");
      received += Buffer.from(value).toString("utf8");
    }
    // Blocks are held while it runs.
    await waitFor(async () => metricValue(await metrics(server.url), "tiny_llm_kv_blocks_used") > 0, 5000, "blocks in use");
    controller.abort();

    await waitFor(() => server.engine.inFlight === 0, 5000, "the aborted request to leave the engine");
    await waitFor(
      async () => {
        const text = await metrics(server.url);
        return metricValue(text, "tiny_llm_kv_blocks_used") === 0 && metricValue(text, "tiny_llm_requests_running") === 0;
      },
      5000,
      "/metrics to show every block back in the pool",
    );
    const text = await metrics(server.url);
    assert.equal(metricValue(text, "tiny_llm_requests_finished_total", 'finish_reason="abort"'), abortsBefore + 1);
    assert.equal(metricValue(text, "tiny_llm_kv_blocks_free"), metricValue(text, "tiny_llm_kv_blocks_total"));
    assert.ok(metricValue(text, "tiny_llm_generation_tokens_total") < 3000, "generation stopped early");

    // The server goes on serving.
    const next = await postJson(`${server.url}/v1/completions`, { prompt: "Hi", max_tokens: 3 });
    assert.equal(next.status, 200);
  });

  test("while a 4000-token prompt is prefilled, /health answers quickly and another stream keeps flowing", async (t) => {
    const controller = new AbortController();
    const streaming = await fetch(`${server.url}/v1/completions`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ prompt: "Once upon a time", max_tokens: 3000, temperature: 0, ignore_eos: true, stream: true }),
      signal: controller.signal,
    });
    const reader = (streaming.body as ReadableStream<Uint8Array>).getReader();
    await withTimeout(reader.read(), 10_000, "the first chunk");
    let prefilling = true;
    let lastChunk = performance.now();
    let maxGap = 0;
    const reading = (async () => {
      while (prefilling) {
        const { done } = await reader.read();
        if (done) break;
        const now = performance.now();
        maxGap = Math.max(maxGap, now - lastChunk);
        lastChunk = now;
      }
    })();
    const ids = Array.from({ length: 4000 }, (_, i) => 100 + ((i * 37) % 900));
    const started = performance.now();
    const long = postJson(`${server.url}/v1/completions`, { prompt: ids, max_tokens: 1 }).then(async (r) => {
      assert.equal(r.status, 200, await r.text());
      return performance.now() - started;
    });
    let finished = false;
    void long.finally(() => (finished = true));
    const latencies: number[] = [];
    while (!finished) {
      const t = performance.now();
      assert.equal((await fetch(`${server.url}/health`)).status, 200);
      latencies.push(performance.now() - t);
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
    const elapsed = await long;
    prefilling = false;
    controller.abort();
    await reading.catch(() => {});
    // Were the event loop blocked by the forward passes, a poll would wait for the whole prefill.
    assert.ok(latencies.length >= 5, `${latencies.length} polls in ${elapsed.toFixed(0)} ms`);
    const worst = Math.max(...latencies);
    t.diagnostic(
      `prefill ${elapsed.toFixed(0)} ms; /health at most ${worst.toFixed(0)} ms; longest pause of the other stream ${maxGap.toFixed(0)} ms`,
    );
    assert.ok(worst < Math.min(150, elapsed / 2), `/health took up to ${worst.toFixed(0)} ms during a ${elapsed.toFixed(0)} ms prefill`);
    assert.ok(
      maxGap < Math.min(300, elapsed / 2),
      `the other stream paused ${maxGap.toFixed(0)} ms during a ${elapsed.toFixed(0)} ms prefill`,
    );
    await waitFor(() => server.engine.inFlight === 0, 5000, "the engine to be idle");
  });
});
