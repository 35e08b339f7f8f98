// The package's API, as `import { loadModel } from "tiny-llm"` gives it: streamed generate() and
// chat() held to the golden story, cancellation that frees the engine, concurrent requests on one
// engine, a chat session whose turns come from the prefix cache, and the README's example run as
// it is written there.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { cpSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { DEFAULT_BLOCK_SIZE } from "../src/engine/engine-options.js";
import { ChatSession, loadModel, RequestRejectedError, type Engine, type GenerationChunk, type LoadProgress } from "../src/index.js";
import { projectRoot, sharedPath } from "./support/shared.js";

const STORIES = sharedPath("models", "stories260k-qwen2");
const GOLDEN = sharedPath("golden", "stories260k.json");
const QWEN2 = sharedPath("models", "tiny-random-qwen2");
const QWEN3 = sharedPath("models", "tiny-random-qwen3");

const golden = (): { greedy_ids: number[]; greedy_text: string } => JSON.parse(readFileSync(GOLDEN.path, "utf8")).qwen2;

let stories: Engine;
const progress: LoadProgress[] = [];

before(async () => {
  if (!STORIES.skip) stories = await loadModel(STORIES.path, { kvCacheSize: "4096t", onProgress: (p) => progress.push(p) });
});
after(() => stories?.close());

test("loading reports its phases: the tokenizer, the weights' bytes, then ready", { skip: STORIES.skip }, () => {
  assert.deepEqual(
    progress.map((p) => p.phase),
    ["tokenizer", "weights", "ready"],
  );
  const weights = progress[1] as Extract<LoadProgress, { phase: "weights" }>;
  assert.equal(weights.bytes, 1049032, "model.safetensors' size");
  assert.equal(stories.config.maxPositionEmbeddings, 512);
});

test("generate streams the golden story, chunk by chunk, at temperature 0", { skip: STORIES.skip || GOLDEN.skip }, async () => {
  const generation = stories.generate("", { maxTokens: 256, temperature: 0 });
  const chunks: GenerationChunk[] = [];
  for await (const chunk of generation) chunks.push(chunk);
  const result = await generation.result;
  assert.ok(chunks.length > 10, "the text came in many pieces");
  assert.deepEqual(
    chunks.flatMap((c) => c.tokens.map((t) => t.id)),
    golden().greedy_ids,
  );
  assert.equal(chunks.map((c) => c.text).join(""), golden().greedy_text);
  assert.equal(result.text, golden().greedy_text);
  assert.equal(result.finishReason, "length");
  assert.deepEqual(result.usage, { promptTokens: 1, cachedTokens: 0, completionTokens: 256 });
  assert.ok(result.timings.firstTokenMs! > 0 && result.timings.totalMs >= result.timings.firstTokenMs!);
  assert.ok(result.timings.decodeTokensPerSecond! > 0);
});

test("stop strings end the text before them; token ids work as a prompt", { skip: STORIES.skip || GOLDEN.skip }, async () => {
  const result = await stories.generate([1], { temperature: 0, stop: " Lily" }).result;
  assert.equal(result.text, "Once upon a time, there was a little girl named");
  assert.equal(result.finishReason, "stop");
  assert.equal(result.stopString, " Lily");
});

test("an AbortSignal stops a request mid-stream and its KV blocks go back to the pool", { skip: STORIES.skip }, async () => {
  const controller = new AbortController();
  const generation = stories.generate("Once upon a time", { maxTokens: 400, ignoreEos: true, signal: controller.signal });
  let seen = 0;
  for await (const chunk of generation) {
    seen += chunk.tokens.length;
    if (seen >= 3) controller.abort();
  }
  const result = await generation.result;
  assert.equal(result.finishReason, "abort");
  assert.ok(result.usage.completionTokens < 400, `stopped after ${result.usage.completionTokens} tokens`);
  assert.equal(stories.inFlight, 0);
  assert.equal(stories.stats().blocksUsed, 0, "no block is held any more (cached ones are free to evict)");
});

test("leaving the loop early cancels the request too", { skip: STORIES.skip }, async () => {
  const generation = stories.generate("Once upon a time", { maxTokens: 400, ignoreEos: true });
  for await (const chunk of generation) if (chunk.tokens.length > 0) break;
  const result = await generation.result;
  assert.equal(result.finishReason, "abort");
  assert.equal(stories.inFlight, 0);
  assert.equal(stories.stats().blocksUsed, 0);
});

test("an already aborted signal gives an empty result", { skip: STORIES.skip }, async () => {
  const result = await stories.generate("Once", { signal: AbortSignal.abort() }).result;
  assert.equal(result.finishReason, "abort");
  assert.equal(result.text, "");
});

test("concurrent requests share engine steps and each gets the tokens it gets alone", { skip: STORIES.skip }, async () => {
  const prompts = ["Once upon a time", "The cat", "Tom and Sue went", "One day, a big dog"];
  const alone: string[] = [];
  for (const p of prompts) alone.push((await stories.generate(p, { maxTokens: 40, temperature: 0 }).result).text);
  let widest = 0;
  const off = stories.onStep((trace) => (widest = Math.max(widest, trace.requests.length)));
  try {
    const together = await Promise.all(prompts.map((p) => stories.generate(p, { maxTokens: 40, temperature: 0 }).result));
    assert.deepEqual(
      together.map((r) => r.text),
      alone,
    );
  } finally {
    off();
  }
  assert.equal(widest, prompts.length, "one step ran all four");
});

test("bad options and prompts that cannot fit throw at once, with one line", { skip: STORIES.skip }, () => {
  assert.throws(() => stories.generate("Once", { temperature: -1 }), /temperature must be >= 0/);
  assert.throws(() => stories.generate("Once", { logprobs: 21 }), /logprobs must be a whole number from 0 to 20/);
  assert.throws(() => stories.generate("Once", { stop: ["a", "b", "c", "d", "e"] }), /at most 4 stop strings/);
  const long = Array.from({ length: 600 }, () => 400);
  assert.throws(
    () => stories.generate(long),
    (err: Error) => err instanceof RequestRejectedError && /600 tokens/.test(err.message),
  );
  assert.throws(() => stories.generate("Once", { maxTokens: 1000 }), /exceed the model's context of 512/);
  assert.throws(() => stories.chat([{ role: "user", content: "hi" }]), /has no chat template.*chatTemplate option/);
  assert.equal(stories.inFlight, 0);
});

test("loadModel names a path that does not exist", async () => {
  await assert.rejects(
    loadModel(join(projectRoot, "no-such-model")),
    /no-such-model does not exist; expected a checkpoint folder or a \.gguf file/,
  );
});

test("chat renders the model's template with kwargs, and streams the reply to those tokens", { skip: QWEN3.skip }, async () => {
  const engine = await loadModel(QWEN3.path, { kvCacheSize: "4096t" });
  try {
    const messages = [{ role: "user", content: "Hello" }];
    const noThinking = { chatTemplateKwargs: { enable_thinking: false } };
    const text = engine.applyChatTemplate(messages, noThinking);
    assert.equal(text, "<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n");
    assert.equal(engine.applyChatTemplate(messages), "<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n");
    assert.throws(() => engine.applyChatTemplate(messages, { chatTemplateKwargs: { messages: [] } }), /kwargs may not set messages/);
    assert.throws(
      () => engine.applyChatTemplate(messages, { chatTemplate: "{% for %}" }),
      /The chat template in the chatTemplate option could not be rendered/,
    );

    const chat = await engine.chat(messages, { ...noThinking, maxTokens: 20, temperature: 0 }).result;
    const ids = engine.tokenizer.encode(text, { addSpecialTokens: false });
    assert.equal(chat.usage.promptTokens, ids.length);
    const plain = await engine.generate(ids, { maxTokens: 20, temperature: 0 }).result;
    assert.deepEqual(
      chat.tokens.map((t) => t.id),
      plain.tokens.map((t) => t.id),
    );
    assert.equal(chat.usage.cachedTokens, 0);
    assert.equal(plain.usage.cachedTokens, DEFAULT_BLOCK_SIZE, "the second run found the prompt's full block in the prefix cache");
  } finally {
    await engine.close();
  }
});

test("a chat session's next turn finds the whole conversation so far in the prefix cache", { skip: QWEN2.skip }, async () => {
  const engine = await loadModel(QWEN2.path, { kvCacheSize: "4096t" });
  try {
    const busy = new ChatSession(engine);
    const running = busy.send("Tell me a story.", { ignoreEos: true });
    assert.throws(() => busy.send("And another."), /the previous reply is still being generated/);
    running.abort();
    assert.equal((await running.result).finishReason, "abort");

    // A random model's replies are seldom what the tokenizer makes of their text: the case where
    // encoding the conversation again would lose the cache. The first such reply is the test.
    const { tokenizer } = engine;
    const blocks = (n: number): number => Math.floor(n / DEFAULT_BLOCK_SIZE) * DEFAULT_BLOCK_SIZE;
    let tested = 0;
    for (const message of ["Hi", "Who are you?", "Thanks", "Tell me a story."]) {
      const session = new ChatSession(engine, { system: "Be brief." });
      const prompt = engine.applyChatTemplate([...session.messages, { role: "user", content: message }]);
      const one = await session.send(message, { maxTokens: 40, temperature: 0 }).result;
      const generated = [...tokenizer.encode(prompt, { addSpecialTokens: false }), ...one.tokens.map((t) => t.id)];
      // Every token of the first turn was computed but the reply's last (sampled, never fed back).
      const reusable = blocks(generated.length - 1);
      const encodedAgain = tokenizer.encode(prompt + one.text, { addSpecialTokens: false });
      const differsAt = generated.findIndex((id, i) => encodedAgain[i] !== id);
      if (one.tokens.some((t) => tokenizer.isSpecial(t.id)) || differsAt < 0 || differsAt >= reusable) continue;
      const two = await session.send("Go on.", { maxTokens: 8, temperature: 0 }).result;
      assert.equal(two.usage.cachedTokens, reusable, `the reply to "${message}" is in the cache as it was generated`);
      assert.deepEqual(
        session.messages.map((m) => m.role),
        ["system", "user", "assistant", "user", "assistant"],
      );
      assert.equal(session.messages[2].content, one.text);
      tested++;
    }
    assert.ok(tested > 0, "some reply differed from its text encoded again");
  } finally {
    await engine.close();
  }
});

test("the README's library example runs as written", { skip: STORIES.skip || GOLDEN.skip }, () => {
  const readme = readFileSync(join(projectRoot, "README.md"), "utf8");
  const section = readme.slice(readme.indexOf("\n## Library\n"));
  const example = /```js\n([\s\S]*?)```/.exec(section)?.[1];
  assert.ok(example?.includes('from "tiny-llm"'), "README.md's Library section has a js example importing tiny-llm");
  // Inside the project, so that "tiny-llm" resolves to this package (its exports map), and not
  // under dist/test, where the test runner would take it for a test of its own.
  const dir = join(projectRoot, "dist", "readme");
  mkdirSync(dir, { recursive: true });
  const file = join(dir, "library-example.mjs");
  writeFileSync(file, example!);
  const run = spawnSync(process.execPath, [file], { cwd: projectRoot, encoding: "utf8", timeout: 60_000 });
  assert.equal(run.status, 0, run.stderr);
  assert.ok(run.stdout.startsWith(golden().greedy_text.slice("Once upon a time".length, 100)), run.stdout);
});

test(
  "generation_config.json's repetition_penalty is every request's default; a request's own value replaces it",
  { skip: STORIES.skip },
  async () => {
    const dir = join(mkdtempSync(join(tmpdir(), "tiny-llm-penalty-")), "model");
    cpSync(STORIES.path, dir, { recursive: true });
    writeFileSync(join(dir, "generation_config.json"), JSON.stringify({ eos_token_id: [1, 2], do_sample: false, repetition_penalty: 1.3 }));
    const penalised = await loadModel(dir, { kvCacheSize: "4096t" });
    try {
      const text = async (engine: Engine, repetitionPenalty?: number): Promise<string> =>
        (await engine.generate("", { maxTokens: 64, repetitionPenalty }).result).text;
      const fromFile = await text(penalised);
      assert.equal(fromFile, await text(stories, 1.3));
      assert.notEqual(fromFile, await text(stories), "the penalty changes this story");
      assert.equal(await text(penalised, 1), await text(stories));
    } finally {
      await penalised.close();
    }
  },
);
