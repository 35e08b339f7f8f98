/**
 * The random checkpoint generator on its tiny preset: the same seed writes the same bytes, every
 * format holds the same model, the tokenizer survives the trip through GGUF metadata, and
 * llama.cpp (through node-llama-cpp) loads the GGUF files and computes what we compute.
 */
import assert from "node:assert/strict";
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import {
  makeRandomCheckpoint,
  PRESETS,
  tensorPlan,
  TOKENIZER_DIR,
  type CheckpointFormat,
  type WrittenCheckpoint,
} from "../scripts/make-random-checkpoint.js";
import { loadCheckpoint } from "../src/generation/load-checkpoint.js";
import {
  metadataBool,
  metadataNumber,
  metadataNumbers,
  metadataString,
  metadataStrings,
  readGgufHeader,
  readGgufTensors,
} from "../src/loaders/gguf.js";
import { readSafetensors } from "../src/loaders/safetensors.js";
import { numberToBf16 } from "../src/tensor/dtype.js";
import { GGUF_TOKEN_TYPE, ggufTokenizer, ggufTokenizerMetadata } from "../src/tokenizer/gguf-tokenizer.js";
import { Tokenizer, type TokenizerConfig } from "../src/tokenizer/tokenizer.js";
import { logSoftmax, relativeRms } from "./support/numeric.js";
import { loadLlamaCpp, nextLogProbs } from "./support/llama-cpp.js";

const tmp = mkdtempSync(join(tmpdir(), "tiny-llm-random-checkpoint-"));
after(() => rmSync(tmp, { recursive: true, force: true }));

const FORMATS: CheckpointFormat[] = ["safetensors-f32", "safetensors-bf16", "gguf-f32", "gguf-q8_0"];
const SEED = 7;
const written = makeRandomCheckpoint({ preset: "tiny", outDir: join(tmp, "a"), formats: FORMATS, seed: SEED });
const path = (format: CheckpointFormat): string => (written.find((w) => w.format === format) as WrittenCheckpoint).path;

const TEXTS = [
  "Hello, world!",
  "The quick brown fox jumps over the lazy dog 1234567.",
  "  leading spaces\n\nand\ttabs\r\n",
  "你好，世界！こんにちは 🙂 café naïve",
  "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n<think>\n</think>",
  "def f(x):\n    return x ** 2  # don't",
];

/** The files of a checkpoint: those in a safetensors folder, or the GGUF file itself. */
function filesOf(output: string): string[] {
  return statSync(output).isDirectory()
    ? readdirSync(output)
        .sort()
        .map((f) => join(output, f))
    : [output];
}

/** Logits after the prompt, copied out of the sequence's buffer. */
function logitsFor(checkpoint: string, text: string): { ids: number[]; logits: Float32Array } {
  const { model, tokenizer } = loadCheckpoint(checkpoint);
  const ids = tokenizer.encode(text);
  return { ids, logits: Float32Array.from(model.newSequence().forward(ids)) };
}

function maxAbsDiff(a: Float32Array, b: Float32Array): number {
  let worst = 0;
  for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i] - b[i]));
  return worst;
}

describe("determinism", () => {
  test("the same seed writes byte-identical files, another seed other weights", () => {
    const again = makeRandomCheckpoint({ preset: "tiny", outDir: join(tmp, "b"), formats: FORMATS, seed: SEED });
    const other = makeRandomCheckpoint({
      preset: "tiny",
      outDir: join(tmp, "c"),
      formats: ["safetensors-bf16", "gguf-q8_0"],
      seed: SEED + 1,
    });
    written.forEach((w, i) => {
      const files = filesOf(w.path);
      assert.deepEqual(
        filesOf(again[i].path).map((f) => f.replace(join(tmp, "b"), "")),
        files.map((f) => f.replace(join(tmp, "a"), "")),
      );
      for (const file of files)
        assert.ok(readFileSync(file).equals(readFileSync(file.replace(join(tmp, "a"), join(tmp, "b")))), `${file} differs`);
    });
    for (const w of other) {
      const weights = w.format === "gguf-q8_0" ? w.path : join(w.path, "model.safetensors");
      assert.ok(
        !readFileSync(weights).equals(readFileSync(weights.replace(join(tmp, "c"), join(tmp, "a")))),
        `${weights} is the same for both seeds`,
      );
    }
  });

  test("outputs that exist are skipped and reported", () => {
    const lines: string[] = [];
    const again = makeRandomCheckpoint({
      preset: "tiny",
      outDir: join(tmp, "a"),
      formats: FORMATS,
      seed: SEED + 1,
      log: (l) => lines.push(l),
    });
    assert.deepEqual(
      again.map((w) => [w.format, w.path, w.skipped, w.bytes, w.seconds]),
      written.map((w) => [w.format, w.path, true, w.bytes, 0]),
    );
    assert.deepEqual(
      lines,
      written.map((w) => `${w.path} exists; skipped`),
    );
  });
});

describe("the same model in every format", () => {
  test("GGUF f32 and safetensors f32 hold the same values; bf16 is their rounding; magnitudes are as intended", () => {
    const hf = readSafetensors(join(path("safetensors-f32"), "model.safetensors"));
    const bf16 = readSafetensors(join(path("safetensors-bf16"), "model.safetensors"));
    const header = readGgufHeader(path("gguf-f32"));
    const gguf = readGgufTensors(header);
    const plan = tensorPlan(PRESETS.tiny);
    assert.deepEqual([...hf.keys()].sort(), plan.map((t) => t.hfName).sort());
    assert.deepEqual(
      [...header.tensors.keys()],
      plan.map((t) => t.ggufName),
    );
    for (const t of plan) {
      const values = new Float32Array((hf.get(t.hfName) as { data: Uint8Array<ArrayBuffer> }).data.buffer);
      assert.deepEqual(gguf.get(t.ggufName), hf.get(t.hfName)?.data, t.ggufName);
      const rounded = new Uint16Array((bf16.get(t.hfName) as { data: Uint8Array<ArrayBuffer> }).data.buffer);
      assert.ok(
        rounded.every((bits, i) => bits === numberToBf16(values[i])),
        `${t.hfName}: bf16 is not the rounded f32`,
      );

      let sumSq = 0;
      let minAbs = Infinity;
      let maxAbs = 0;
      for (const v of values) {
        sumSq += v * v;
        minAbs = Math.min(minAbs, Math.abs(v));
        maxAbs = Math.max(maxAbs, Math.abs(v));
      }
      if (t.init === "norm") {
        assert.ok(minAbs >= 0.9 && maxAbs <= 1.1, `${t.hfName}: norm weights span ${minAbs}..${maxAbs}`);
      } else {
        const std = Math.sqrt(sumSq / values.length);
        // Float16's smallest normal bounds the magnitudes from below.
        assert.ok(minAbs >= 2 ** -14 && maxAbs <= 0.035, `${t.hfName}: magnitudes span ${minAbs}..${maxAbs}`);
        assert.ok(Math.abs(std - 0.02) < 0.02 * (values.length > 1000 ? 0.05 : 0.3), `${t.hfName}: std ${std}`);
      }
    }
  });

  test("safetensors f32 and GGUF f32 give the same logits; GGUF q8_0 stays within 5% relative RMS", () => {
    const st = logitsFor(path("safetensors-f32"), TEXTS[0]);
    const f32 = logitsFor(path("gguf-f32"), TEXTS[0]);
    const q8 = logitsFor(path("gguf-q8_0"), TEXTS[0]);
    assert.deepEqual(f32.ids, st.ids);
    assert.deepEqual(q8.ids, st.ids);
    assert.equal(st.logits.length, PRESETS.tiny.vocabSize);
    assert.ok(st.logits.every(Number.isFinite));
    // Random weights give nearly flat logits, but not constant ones.
    assert.ok(st.logits.reduce((a, b) => Math.max(a, b)) - st.logits.reduce((a, b) => Math.min(a, b)) > 0.5);
    assert.ok(maxAbsDiff(f32.logits, st.logits) <= 1e-5, `max |diff| ${maxAbsDiff(f32.logits, st.logits)}`);
    // 8-bit weights with one scale per 32 values err by about 0.4% RMS each; through the layers
    // that becomes about 0.9% on these logits, well inside the bound.
    const error = relativeRms(q8.logits, st.logits);
    assert.ok(error < 0.05, `q8_0 logits are ${error} relative RMS from f32`);
    assert.ok(error > 0, "q8_0 logits equal f32's; the weights were not quantized");
  });

  test("tied embeddings: no LM head is written, and both formats load with the embedding as head", () => {
    const tied = { ...PRESETS.tiny, name: "tiny-tied", tieWordEmbeddings: true };
    const [st, gguf] = makeRandomCheckpoint({
      preset: tied,
      outDir: join(tmp, "tied"),
      formats: ["safetensors-f32", "gguf-f32"],
      seed: SEED,
    });
    assert.ok(!readSafetensors(join(st.path, "model.safetensors")).has("lm_head.weight"));
    assert.ok(!readGgufHeader(gguf.path).tensors.has("output.weight"));
    const a = logitsFor(st.path, TEXTS[1]);
    const b = logitsFor(gguf.path, TEXTS[1]);
    assert.ok(maxAbsDiff(a.logits, b.logits) <= 1e-5);
  });
});

describe("the tokenizer in GGUF metadata", () => {
  const hf = Tokenizer.fromDir(TOKENIZER_DIR);

  test("Hugging Face tokenizer → GGUF metadata → ggufTokenizer encodes and decodes as the original", () => {
    const fromGguf = ggufTokenizer(readGgufHeader(path("gguf-q8_0")));
    for (const text of TEXTS) {
      const ids = hf.encode(text);
      assert.deepEqual(fromGguf.encode(text), ids, text);
      assert.equal(fromGguf.decode(ids), hf.decode(ids), text);
    }
  });

  test("the metadata follows llama.cpp's converter for Qwen", () => {
    const header = readGgufHeader(path("gguf-q8_0"));
    const tokens = metadataStrings(header, "tokenizer.ggml.tokens")?.toArray() ?? [];
    const types = metadataNumbers(header, "tokenizer.ggml.token_type") as number[];
    assert.equal(tokens.length, PRESETS.tiny.vocabSize);
    assert.equal(types.length, PRESETS.tiny.vocabSize);
    const typeOf = (id: number): [string, number] => [tokens[id], types[id]];
    assert.deepEqual(typeOf(9707), ["Hello", GGUF_TOKEN_TYPE.NORMAL]);
    assert.deepEqual(typeOf(151644), ["<|im_start|>", GGUF_TOKEN_TYPE.CONTROL]);
    // Not marked special in tokenizer.json, but spelled like a control token.
    assert.deepEqual(typeOf(151659), ["<|fim_prefix|>", GGUF_TOKEN_TYPE.CONTROL]);
    assert.deepEqual(typeOf(151667), ["<think>", GGUF_TOKEN_TYPE.USER_DEFINED]);
    assert.deepEqual(typeOf(151669), ["[PAD151669]", GGUF_TOKEN_TYPE.UNUSED]);
    assert.deepEqual(typeOf(151935), ["[PAD151935]", GGUF_TOKEN_TYPE.UNUSED]);
    assert.equal(types.filter((t) => t === GGUF_TOKEN_TYPE.UNUSED).length, PRESETS.tiny.vocabSize - 151669);
    assert.equal(metadataStrings(header, "tokenizer.ggml.merges")?.at(0), "Ġ Ġ");
    assert.deepEqual(
      ["model", "pre"].map((k) => metadataString(header, `tokenizer.ggml.${k}`)),
      ["gpt2", "qwen2"],
    );
    assert.deepEqual(
      ["bos_token_id", "eos_token_id", "padding_token_id"].map((k) => metadataNumber(header, `tokenizer.ggml.${k}`)),
      [151643, 151645, 151643],
    );
    assert.equal(metadataBool(header, "tokenizer.ggml.add_bos_token"), false);
    const config = JSON.parse(readFileSync(join(TOKENIZER_DIR, "tokenizer_config.json"), "utf8")) as TokenizerConfig;
    assert.equal(metadataString(header, "tokenizer.chat_template"), config.chat_template);
  });

  test("a vocabulary smaller than the tokenizer's is refused", () => {
    const tokenizerJson = JSON.parse(readFileSync(join(TOKENIZER_DIR, "tokenizer.json"), "utf8")) as Record<string, unknown>;
    assert.throws(
      () => ggufTokenizerMetadata({ tokenizerJson, config: {} }, 151000),
      /id 15100\d, outside the model's 151000 embedding rows/,
    );
  });
});

test("llama.cpp loads the q8_0 GGUF, tokenizes as we do and predicts the same distribution", async (t) => {
  const llama = await loadLlamaCpp(t);
  if (!llama) return;
  const model = await llama.loadModel({ modelPath: path("gguf-q8_0") });
  try {
    const ours = loadCheckpoint(path("gguf-q8_0"));
    for (const text of TEXTS) assert.deepEqual(model.tokenize(text, true), ours.tokenizer.encode(text), text);

    const ids = ours.tokenizer.encode(TEXTS[4]);
    const theirs = await nextLogProbs(model, ids, PRESETS.tiny.vocabSize);
    const logProbs = logSoftmax(ours.model.newSequence().forward(ids));
    let worst = 0;
    for (let id = 0; id < theirs.length; id++) worst = Math.max(worst, Math.abs(theirs[id] - logProbs[id]));
    // llama.cpp also rounds the activations to 8 bits for q8_0 matmuls, which we keep in f32;
    // that costs about 4e-3 here.
    assert.ok(worst < 2e-2, `log-probabilities differ from llama.cpp's by up to ${worst}`);
  } finally {
    await model.dispose();
    await llama.dispose();
  }
});
