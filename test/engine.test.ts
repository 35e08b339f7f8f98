// The serving engine: continuous batching over a paged KV pool with prefix caching and
// preemption. A request's tokens and log-probabilities must not depend on its neighbours, on how
// its prompt was chunked, on whether its prefix came from the cache, or on being preempted.
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { DEFAULT_SAMPLING, RequestRejectedError, type RequestEvent, type RequestParams, type TokenOutput } from "../src/engine/api.js";
import { BatchForward } from "../src/engine/batch-forward.js";
import { BlockPool } from "../src/engine/block-pool.js";
import { Engine, type EngineLimits } from "../src/engine/engine.js";
import { kvCacheTokens, PagedKvCache } from "../src/engine/kv-cache.js";
import { Random } from "../src/generation/random.js";
import { loadCheckpoint } from "../src/generation/load-checkpoint.js";
import type { Transformer } from "../src/models/transformer.js";
import { kernelSets } from "./support/engine-kernels.js";
import { sharedPath } from "./support/shared.js";

const MODEL = sharedPath("models", "tiny-random-qwen2");

interface Result {
  tokens: TokenOutput[];
  finish?: string;
  cachedTokens?: number;
}

/** Steps the engine until every request has finished; checks the pool's invariants after each step. */
function drain(engine: Engine, results = new Map<string, Result>()): Map<string, Result> {
  for (let guard = 0; engine.hasWork(); guard++) {
    assert.ok(guard < 100_000, "the engine never finished");
    const { events } = engine.step();
    for (const e of events) collect(results, e);
    checkPool(engine);
  }
  return results;
}

function collect(results: Map<string, Result>, e: RequestEvent): void {
  const r = results.get(e.id) ?? { tokens: [] };
  r.tokens.push(...e.tokens);
  if (e.cachedTokens !== undefined) r.cachedTokens = e.cachedTokens;
  if (e.finish) r.finish = e.finish;
  results.set(e.id, r);
}

/**
 * No block is held by two live sequences unless it is a cached prefix block they share; each
 * block's reference count is the number of sequences holding it; a sequence holds exactly the
 * blocks its computed tokens need.
 */
function checkPool(engine: Engine): void {
  const internals = engine as unknown as { scheduler: { running: Seq[]; waiting: Seq[] } };
  type Seq = { id: string; blocks: number[]; computed: number };
  const holders = new Map<number, string[]>();
  for (const seq of [...internals.scheduler.running, ...internals.scheduler.waiting]) {
    assert.equal(
      seq.blocks.length,
      Math.ceil(seq.computed / engine.limits.blockSize),
      `${seq.id} holds the blocks its ${seq.computed} tokens need`,
    );
    for (const b of seq.blocks) holders.set(b, [...(holders.get(b) ?? []), seq.id]);
  }
  let held = 0;
  for (const [block, ids] of holders) {
    assert.equal(engine.pool.refCount(block), ids.length, `block ${block}'s references`);
    if (ids.length > 1) assert.ok(engine.pool.isCached(block), `block ${block} is shared by ${ids} but is no cached prefix`);
    held++;
  }
  assert.equal(engine.pool.used, held);
}

function params(promptIds: number[], maxTokens: number, extra: Partial<RequestParams> = {}): RequestParams {
  return { promptIds, maxTokens, stopIds: [], sampling: { ...DEFAULT_SAMPLING, temperature: 0 }, logprobs: 3, ...extra };
}

function engineOn(forward: BatchForward, limits: Partial<EngineLimits> = {}): Engine {
  return new Engine(forward, { blocks: 256, blockSize: 16, kvDtype: "f16", maxNumSeqs: 64, maxBatchTokens: 64, ...limits });
}

function randomPrompt(random: Random, n: number, vocab: number): number[] {
  return Array.from({ length: n }, () => random.nextUint32() % vocab);
}

for (const k of kernelSets()) {
  describe(`engine on the ${k.name} kernels`, { skip: k.skip || MODEL.skip }, () => {
    const { model } = MODEL.skip ? ({} as { model: Transformer }) : loadCheckpoint(MODEL.path);
    const forward = MODEL.skip ? (undefined as unknown as BatchForward) : new BatchForward(model, k.make());
    const V = () => model.config.vocabSize;

    for (const others of [15, 63]) {
      for (const sampling of ["greedy", "seeded"] as const) {
        test(`a request alone and among ${others} others of mixed lengths: the same tokens and log-probs, bit for bit (${sampling})`, () => {
          const random = new Random(others * 7 + (sampling === "greedy" ? 1 : 2));
          const s =
            sampling === "greedy"
              ? { ...DEFAULT_SAMPLING, temperature: 0 }
              : { ...DEFAULT_SAMPLING, temperature: 0.9, topP: 0.95, seed: 42 };
          const target = params(randomPrompt(random, 45, V()), 20, { sampling: s });
          const alone = drain(withRequests(engineOn(forward), [["target", target]])).get("target")!;
          assert.equal(alone.tokens.length, 20);
          const requests: [string, RequestParams][] = Array.from({ length: others }, (_, i) => [
            `other${i}`,
            params(randomPrompt(random, 1 + (random.nextUint32() % 60), V()), 1 + (random.nextUint32() % 25), {
              sampling: { ...s, seed: i, temperature: i % 2 ? 0.7 : 0 },
            }),
          ]);
          requests.splice(random.nextUint32() % (others + 1), 0, ["target", target]);
          // A budget that cuts prompts into chunks and mixes them with decoding rows.
          const together = drain(withRequests(engineOn(forward, { maxBatchTokens: 48 }), requests));
          assert.deepEqual(together.get("target"), alone);
          for (const [id] of requests) assert.equal(together.get(id)!.finish, "length", id);
        });
      }
    }

    test("a prompt prefilled whole, in chunks of 7, and from the prefix cache gives the same tokens", () => {
      const prompt = randomPrompt(new Random(5), 70, V());
      const whole = drain(withRequests(engineOn(forward, { maxBatchTokens: 256 }), [["a", params(prompt, 12)]])).get("a")!;
      const chunked = drain(withRequests(engineOn(forward, { maxBatchTokens: 7 }), [["a", params(prompt, 12)]])).get("a")!;
      assert.deepEqual(chunked, whole);
      const engine = engineOn(forward);
      drain(withRequests(engine, [["first", params(prompt, 12)]]));
      const cached = drain(withRequests(engine, [["again", params(prompt, 12)]])).get("again")!;
      // 70 tokens: four full blocks of 16 come from the cache; the last block, with the last token, is computed.
      assert.equal(cached.cachedTokens, 64);
      assert.deepEqual(cached.tokens, whole.tokens);
      assert.equal(engine.stats().prefixHits, 4);
    });

    test("n choices of one prompt share its blocks: the first computes them, the others find them cached", () => {
      const prompt = randomPrompt(new Random(11), 40, V());
      const choice = (seed: number) => params(prompt, 6, { sampling: { ...DEFAULT_SAMPLING, temperature: 1, seed } });
      const engine = engineOn(forward);
      const results = drain(
        withRequests(
          engine,
          [0, 1, 2].map((i) => [`c${i}`, choice(i)] as [string, RequestParams]),
        ),
      );
      // 40 tokens: two full blocks before the block with the last token.
      assert.deepEqual(
        [0, 1, 2].map((i) => results.get(`c${i}`)!.cachedTokens),
        [0, 32, 32],
      );
      assert.equal(engine.stats().prefixHits, 4);
      for (const i of [0, 1, 2]) {
        const alone = drain(withRequests(engineOn(forward), [["a", choice(i)]])).get("a")!;
        assert.deepEqual(results.get(`c${i}`)!.tokens, alone.tokens);
      }
    });

    test("a pool too small for all: the newest are preempted, recomputed, and finish as they would alone", () => {
      const random = new Random(9);
      const requests: [string, RequestParams][] = Array.from({ length: 6 }, (_, i) => [
        `r${i}`,
        params(randomPrompt(random, 20 + i, V()), 20),
      ]);
      const alone = new Map(requests.map(([id, p]) => [id, drain(withRequests(engineOn(forward), [[id, p]])).get(id)!]));
      // 12 blocks of 8 tokens: 96 tokens for six requests of about 42 each.
      const engine = engineOn(forward, { blocks: 12, blockSize: 8, maxBatchTokens: 32 });
      const together = drain(withRequests(engine, requests));
      assert.ok(engine.stats().preemptions > 0, "the pool ran dry");
      for (const [id] of requests) assert.deepEqual(together.get(id)!.tokens, alone.get(id)!.tokens, id);
      assert.equal(engine.pool.used, 0);
    });

    test("a request that fills the pool exactly is served; one token more is refused at once", () => {
      const engine = engineOn(forward, { blocks: 4, blockSize: 16 });
      const prompt = randomPrompt(new Random(3), 50, V());
      assert.throws(
        () => engine.add("big", params(prompt, 15)),
        (e: Error) => e instanceof RequestRejectedError && /needs 65 tokens of KV cache but the pool holds 64/.test(e.message),
      );
      engine.add("fits", params(prompt, 14));
      assert.equal(drain(engine).get("fits")!.tokens.length, 14);
    });

    test("prompt plus max tokens up to the context's last position, and not one past it", () => {
      const engine = engineOn(forward, { blocks: 300 });
      const context = model.config.maxPositionEmbeddings;
      assert.throws(
        () => engine.add("over", params([1, 2, 3], context - 2)),
        new RegExp(`${context + 1} tokens exceed the model's context of ${context}`),
      );
      assert.throws(() => engine.add("empty", params([], 3)), /prompt is empty/);
      assert.throws(() => engine.add("bad", params([V()], 3)), /outside the vocabulary/);
    });

    test("stop tokens end a request without being output; max tokens 0 ends it at once", () => {
      const prompt = randomPrompt(new Random(4), 10, V());
      const free = drain(withRequests(engineOn(forward), [["a", params(prompt, 8)]])).get("a")!;
      const stopAt = free.tokens[3].id;
      const firstIndex = free.tokens.findIndex((t) => t.id === stopAt);
      const stopped = drain(withRequests(engineOn(forward), [["a", params(prompt, 8, { stopIds: [stopAt] })]])).get("a")!;
      assert.equal(stopped.finish, "stop");
      assert.deepEqual(stopped.tokens, free.tokens.slice(0, firstIndex));
      const none = drain(withRequests(engineOn(forward), [["z", params(prompt, 0)]])).get("z")!;
      assert.deepEqual(none, { tokens: [], finish: "length", cachedTokens: 0 });
    });

    test("a request cancelled mid-prefill gives its blocks back before the next step", () => {
      const engine = engineOn(forward, { maxBatchTokens: 16 });
      engine.add("long", params(randomPrompt(new Random(6), 100, V()), 5));
      engine.add("short", params(randomPrompt(new Random(7), 5, V()), 5));
      engine.step();
      assert.ok(engine.pool.used > 0);
      engine.abort("long");
      checkPool(engine);
      const results = drain(engine);
      assert.equal(results.get("long")!.finish, "abort");
      assert.equal(results.get("short")!.finish, "length");
      assert.equal(engine.pool.used, 0);
    });

    test("log-probs are the model's: the top alternatives are sorted and the greedy pick is the best", () => {
      const r = drain(withRequests(engineOn(forward), [["a", params(randomPrompt(new Random(8), 12, V()), 5, { logprobs: 5 })]])).get("a")!;
      for (const t of r.tokens) {
        assert.equal(t.top!.length, 5);
        assert.equal(t.top![0].id, t.id);
        assert.equal(t.top![0].logprob, t.logprob);
        for (let i = 1; i < 5; i++) assert.ok(t.top![i].logprob <= t.top![i - 1].logprob);
        assert.ok(t.logprob! <= 0);
      }
    });
  });
}

function withRequests(engine: Engine, requests: [string, RequestParams][]): Engine {
  for (const [id, p] of requests) engine.add(id, p);
  return engine;
}

describe("block pool", () => {
  test("blocks are handed out until none is left, then evicted least recently used first", () => {
    const pool = new BlockPool(3);
    const [a, b, c] = [pool.allocate()!, pool.allocate()!, pool.allocate()!];
    assert.equal(pool.allocate(), undefined);
    pool.register(a, "ka");
    pool.register(b, "kb");
    pool.release(a);
    pool.release(b);
    assert.equal(pool.available, 2);
    assert.equal(pool.lookup("kb"), b);
    pool.release(b);
    // a was released first and not used since: it goes first, and its key with it.
    assert.equal(pool.allocate(), a);
    assert.equal(pool.lookup("ka"), undefined);
    assert.equal(pool.lookup("kb"), b);
    assert.equal(pool.refCount(b), 1);
    pool.release(c);
    assert.equal(pool.allocate(), c);
  });

  test("a block released more often than taken is an error", () => {
    const pool = new BlockPool(1);
    const a = pool.allocate()!;
    pool.release(a);
    assert.throws(() => pool.release(a), /released more often than it was taken/);
  });

  test("a key already held by another block is not registered twice", () => {
    const pool = new BlockPool(2);
    const a = pool.allocate()!;
    const b = pool.allocate()!;
    pool.register(a, "k");
    pool.register(b, "k");
    assert.equal(pool.isCached(b), false);
    assert.equal(pool.lookup("k"), a);
  });
});

describe("KV pool sizing", () => {
  const config = { numLayers: 24, numKvHeads: 2, headDim: 64 } as Parameters<typeof PagedKvCache.bytesPerToken>[0];
  test("f16 and bf16 blocks hold twice the tokens of f32 in the same bytes", () => {
    const f32 = PagedKvCache.bytesPerToken(config, "f32");
    assert.equal(f32, 2 * 24 * 2 * 64 * 4);
    assert.equal(kvCacheTokens("96MiB", PagedKvCache.bytesPerToken(config, "f16")), 2 * kvCacheTokens("96MiB", f32));
    assert.equal(kvCacheTokens("96MiB", PagedKvCache.bytesPerToken(config, "bf16")), 2 * kvCacheTokens("96MiB", f32));
  });

  test("--kv-cache-size takes tokens or bytes in SI and binary units, and nothing else", () => {
    assert.equal(kvCacheTokens("16384t", 1000), 16384);
    assert.equal(kvCacheTokens("100 tokens", 1000), 100);
    assert.equal(kvCacheTokens("2GB", 1000), 2_000_000);
    assert.equal(kvCacheTokens("1GiB", 1024), 2 ** 20);
    assert.equal(kvCacheTokens(4096, 1024), 4);
    // A byte short of a whole token is not a token.
    assert.equal(kvCacheTokens("1023", 1024), 0);
    assert.throws(() => kvCacheTokens("lots", 1024), /--kv-cache-size takes bytes \("2GB", "512MiB"\) or tokens \("16384t"\), got "lots"/);
  });
});
