// The engine in a worker thread: the same tokens as the engine run in-process, a main thread
// that keeps answering while a long prompt is prefilled, aborts, and clear load errors.
import assert from "node:assert/strict";
import { test } from "node:test";
import { DEFAULT_SAMPLING, RequestRejectedError, type RequestEvent, type RequestParams } from "../src/engine/api.js";
import { AsyncEngine } from "../src/engine/async-engine.js";
import { createEngine } from "../src/engine/create-engine.js";
import { loadCheckpoint } from "../src/generation/load-checkpoint.js";
import { sharedPath } from "./support/shared.js";

const STORIES = sharedPath("models", "stories260k-qwen2");
const TINY = sharedPath("models", "tiny-random-qwen2");

function run(engine: AsyncEngine, id: string, params: RequestParams): Promise<RequestEvent[]> {
  return new Promise((resolve) => {
    const events: RequestEvent[] = [];
    engine.submit(id, params, (e) => {
      events.push(e);
      if (e.finish) resolve(events);
    });
  });
}

const greedy = (promptIds: number[], maxTokens: number): RequestParams => ({
  promptIds,
  maxTokens,
  stopIds: [],
  sampling: { ...DEFAULT_SAMPLING, temperature: 0 },
});

test("the worker's engine gives the tokens of the engine run in this thread", { skip: STORIES.skip }, async () => {
  const engine = await AsyncEngine.start(STORIES.path, { kvCacheSize: "2048t" });
  try {
    assert.equal(engine.info.config.maxPositionEmbeddings, 512);
    assert.equal(engine.info.kv.blocks * engine.info.kv.blockSize, 2048);
    const prompt = [1, 400, 300, 200];
    const events = await run(engine, "a", greedy(prompt, 30));
    const ids = events.flatMap((e) => e.tokens.map((t) => t.id));
    const local = createEngine(loadCheckpoint(STORIES.path).model, { kvCacheSize: "2048t" }).engine;
    local.add("a", greedy(prompt, 30));
    const expected: number[] = [];
    while (local.hasWork()) for (const e of local.step().events) expected.push(...e.tokens.map((t) => t.id));
    assert.deepEqual(ids, expected);
    assert.equal(events.at(-1)!.finish, "length");
    assert.equal(events[0].promptTokens, 4);
    assert.ok(engine.stats().generatedTokens >= 30);
  } finally {
    await engine.close();
  }
});

test("the main thread keeps answering within 50 ms while the worker prefills a long prompt", { skip: TINY.skip }, async () => {
  // The TypeScript kernels make a 2000-token prompt take seconds: long enough to watch the event loop.
  const engine = await AsyncEngine.start(TINY.path, { backend: "ts", kvCacheSize: "4096t", maxBatchTokens: 512 });
  try {
    let last = performance.now();
    let worst = 0;
    const timer = setInterval(() => {
      const now = performance.now();
      worst = Math.max(worst, now - last);
      last = now;
    }, 5);
    const started = performance.now();
    const prompt = Array.from({ length: 2000 }, (_, i) => (i * 7) % 1000);
    await run(engine, "long", greedy(prompt, 2));
    clearInterval(timer);
    assert.ok(performance.now() - started > 500, "the prefill was long enough to measure");
    assert.ok(worst < 50, `the event loop stalled for ${worst.toFixed(0)} ms`);
  } finally {
    await engine.close();
  }
});

test("an aborted request ends with finish abort and its blocks go back", { skip: TINY.skip }, async () => {
  const engine = await AsyncEngine.start(TINY.path, { backend: "ts", kvCacheSize: "4096t", maxBatchTokens: 64 });
  try {
    const prompt = Array.from({ length: 1500 }, (_, i) => (i * 3) % 1000);
    const done = run(engine, "x", greedy(prompt, 100));
    setTimeout(() => engine.abort("x"), 100);
    const events = await done;
    assert.equal(events.at(-1)!.finish, "abort");
    // The step that follows the abort reports the pool as it is.
    await run(engine, "y", greedy([1, 2, 3], 1));
    assert.equal(engine.stats().blocksUsed, 0);
    assert.equal(engine.inFlight, 0);
  } finally {
    await engine.close();
  }
});

test("requests that can never be served are refused before they are queued", { skip: TINY.skip }, async () => {
  const engine = await AsyncEngine.start(TINY.path, { backend: "ts", kvCacheSize: "64t" });
  try {
    assert.throws(
      () => engine.check(greedy([1, 2, 3], 62)),
      (e: Error) => e instanceof RequestRejectedError && /needs 65 tokens of KV cache but the pool holds 64/.test(e.message),
    );
    assert.throws(() => engine.check(greedy([1], 4096)), /4097 tokens exceed the model's context of 4096/);
  } finally {
    await engine.close();
  }
});

test("a model that cannot be loaded rejects start with one line", async () => {
  await assert.rejects(AsyncEngine.start("/nonexistent/model"), /\/nonexistent\/model does not exist/);
});
