/**
 * What --model names (a path or a repo id, with :QUANT and --revision), and which of a repo's
 * files a model needs, decided from file lists alone.
 */
import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { parseModelSpec, type ModelSpec } from "../src/hub/model-spec.js";
import { ggufQuant, ggufQuants, selectRepoFiles } from "../src/hub/repo-files.js";
import { progressText } from "../src/cli/progress.js";

test("--model is a path when it exists or is written as one, else org/name[:QUANT] is a repo id", () => {
  const cwd = process.cwd();
  const dir = mkdtempSync(join(tmpdir(), "tiny-llm-spec-"));
  mkdirSync(join(dir, "local-org", "model"), { recursive: true });
  process.chdir(dir);
  try {
    const cases: [string, string | undefined, ModelSpec][] = [
      ["Qwen/Qwen2.5-0.5B-Instruct", undefined, { kind: "repo", repo: "Qwen/Qwen2.5-0.5B-Instruct", quant: undefined, revision: "main" }],
      [
        "mlx-community/Qwen2.5-0.5B-Instruct-4bit",
        "v1.0",
        { kind: "repo", repo: "mlx-community/Qwen2.5-0.5B-Instruct-4bit", quant: undefined, revision: "v1.0" },
      ],
      ["org/repo-GGUF:Q4_K_M", undefined, { kind: "repo", repo: "org/repo-GGUF", quant: "Q4_K_M", revision: "main" }],
      ["org/repo-GGUF:q8_0", undefined, { kind: "repo", repo: "org/repo-GGUF", quant: "q8_0", revision: "main" }],
      // Existing folders win over the repo id they look like.
      ["local-org/model", undefined, { kind: "path", path: "local-org/model" }],
      ["./org/repo", undefined, { kind: "path", path: "./org/repo" }],
      ["../org/repo", undefined, { kind: "path", path: "../org/repo" }],
      ["/models/org/repo", undefined, { kind: "path", path: "/models/org/repo" }],
      ["~/models/x", undefined, { kind: "path", path: "~/models/x" }],
      ["org/model.gguf", undefined, { kind: "path", path: "org/model.gguf" }],
      ["model.GGUF", undefined, { kind: "path", path: "model.GGUF" }],
      // Not repo ids: left as paths, which the loader reports as missing.
      ["a/b/c", undefined, { kind: "path", path: "a/b/c" }],
      ["no-slash", undefined, { kind: "path", path: "no-slash" }],
      ["org/", undefined, { kind: "path", path: "org/" }],
      ["org/-dash", undefined, { kind: "path", path: "org/-dash" }],
      ["org/na..me", undefined, { kind: "path", path: "org/na..me" }],
      ["org/repo:Q4 K", undefined, { kind: "path", path: "org/repo:Q4 K" }],
    ];
    for (const [model, revision, expected] of cases) assert.deepEqual(parseModelSpec(model, revision), expected, model);
    assert.throws(() => parseModelSpec("./x", "main"), /--revision main applies to a Hugging Face repo id, and \.\/x is a path/);
  } finally {
    process.chdir(cwd);
  }
});

test("a GGUF file's quantization is read from its name, the split suffix and size labels aside", () => {
  const cases: [string, string | undefined][] = [
    ["qwen2.5-0.5b-instruct-q4_k_m.gguf", "Q4_K_M"],
    ["Qwen2.5-7B-Instruct-Q8_0-00001-of-00003.gguf", "Q8_0"],
    ["model-IQ4_XS.gguf", "IQ4_XS"],
    ["sub/Model-BF16.gguf", "BF16"],
    ["model.f16.gguf", "F16"],
    ["Qwen2-0.5B.gguf", undefined],
  ];
  for (const [file, quant] of cases) assert.equal(ggufQuant(file), quant, file);
});

const CHECKPOINT = [
  ".gitattributes",
  "README.md",
  "config.json",
  "generation_config.json",
  "merges.txt",
  "model-00001-of-00002.safetensors",
  "model-00002-of-00002.safetensors",
  "model.safetensors.index.json",
  "onnx/model.onnx",
  "pytorch_model.bin",
  "tokenizer.json",
  "tokenizer_config.json",
  "vocab.json",
];

test("a checkpoint repo needs its config, tokenizer and safetensors, not its .bin, ONNX or README", () => {
  assert.deepEqual(selectRepoFiles("org/m", CHECKPOINT), {
    kind: "folder",
    entry: "",
    files: [
      "config.json",
      "generation_config.json",
      "merges.txt",
      "model-00001-of-00002.safetensors",
      "model-00002-of-00002.safetensors",
      "model.safetensors.index.json",
      "tokenizer.json",
      "tokenizer_config.json",
      "vocab.json",
    ],
  });
  assert.throws(
    () => selectRepoFiles("org/m", ["README.md", "pytorch_model.bin", "config.json"]),
    /org\/m has no config\.json with safetensors weights and no GGUF file/,
  );
  assert.throws(() => selectRepoFiles("org/m", CHECKPOINT, "Q4_K_M"), /org\/m has no GGUF files \(for :Q4_K_M\)/);
});

const GGUFS = [
  "README.md",
  "qwen-q4_k_m.gguf",
  "qwen-Q8_0-00001-of-00002.gguf",
  "qwen-Q8_0-00002-of-00002.gguf",
  "qwen-f16.gguf",
  "mmproj-qwen-f16.gguf",
];

test("a GGUF repo gives the one file of the quantization named (any case), all parts of a split one", () => {
  assert.deepEqual(ggufQuants(GGUFS), ["Q8_0", "F16", "Q4_K_M"]);
  assert.deepEqual(selectRepoFiles("org/m-GGUF", GGUFS, "q4_k_m"), {
    kind: "gguf",
    files: ["qwen-q4_k_m.gguf"],
    entry: "qwen-q4_k_m.gguf",
  });
  assert.deepEqual(selectRepoFiles("org/m-GGUF", GGUFS, "Q8_0").files, ["qwen-Q8_0-00001-of-00002.gguf", "qwen-Q8_0-00002-of-00002.gguf"]);
  // Unnamed: Q4_K_M when there is one, the only one when there is one, else an error naming them.
  assert.equal(selectRepoFiles("org/m-GGUF", GGUFS).entry, "qwen-q4_k_m.gguf");
  assert.equal(selectRepoFiles("org/m-GGUF", ["a-Q6_K.gguf"]).entry, "a-Q6_K.gguf");
  assert.throws(
    () => selectRepoFiles("org/m-GGUF", ["a-Q6_K.gguf", "a-Q8_0.gguf"]),
    /org\/m-GGUF has GGUF files in Q6_K, Q8_0; name one: org\/m-GGUF:Q6_K/,
  );
  assert.throws(
    () => selectRepoFiles("org/m-GGUF", GGUFS, "Q2_K"),
    /^ModelSpecError: org\/m-GGUF has no GGUF file of quantization Q2_K; it has Q8_0, F16, Q4_K_M$/,
  );
  assert.throws(
    () => selectRepoFiles("org/m-GGUF", ["qwen-Q8_0-00001-of-00002.gguf"], "Q8_0"),
    /the split GGUF qwen-Q8_0-00001-of-00002\.gguf has 1 of its 2 parts in the repo/,
  );
});

test("the download bar shows bytes, rate and time left, and a bar only where the terminal has room", () => {
  const p = { repo: "Qwen/Qwen2.5-0.5B-Instruct", file: "model.safetensors", bytes: 500e6, totalBytes: 1000e6 };
  // 400 MB arrived in 20 s (100 MB were there from an earlier run): 20 MB/s, 25 s to go.
  assert.equal(
    progressText(p, 20, 100e6, 120),
    "downloading Qwen/Qwen2.5-0.5B-Instruct [###############---------------] 500.0 MB / 1.00 GB  20.0 MB/s  ETA 25s",
  );
  assert.equal(progressText(p, 20, 100e6, 80), "downloading Qwen/Qwen2.5-0.5B-Instruct 500.0 MB / 1.00 GB  20.0 MB/s  ETA 25s");
  assert.match(progressText({ ...p, bytes: 0 }, 0, 0, 80), /0\.0 MB \/ 1\.00 GB {2}0\.0 MB\/s {2}ETA --$/);
  assert.match(progressText(p, 1, 499e6, 80), /ETA 8m20s$/);
});
