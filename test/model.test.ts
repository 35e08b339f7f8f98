/**
 * Building models from checkpoints: the KV cache path equals a full recompute, and a checkpoint
 * that does not match its config fails with a message that names the problem.
 */
import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import { copyFileSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { PromptTooLongError, generate } from "../src/generation/generate.js";
import { Sampler } from "../src/generation/sampler.js";
import { CheckpointError } from "../src/loaders/checkpoint.js";
import { loadModel } from "../src/loaders/model-loader.js";
import { readSafetensors, writeSafetensors, type RawTensor } from "../src/loaders/safetensors.js";
import { ConfigError, parseModelConfig } from "../src/models/config.js";
import { ContextOverflowError } from "../src/models/transformer.js";
import { assertClose } from "./support/numeric.js";
import { projectRoot, sharedPath } from "./support/shared.js";

const cli = join(projectRoot, "dist", "src", "cli", "main.js");
const tmp = mkdtempSync(join(tmpdir(), "tiny-llm-model-"));
after(() => rmSync(tmp, { recursive: true, force: true }));

const qwen2 = sharedPath("models", "tiny-random-qwen2");
const stories = sharedPath("models", "stories260k-llama");

/** A copy of a shared model folder whose config and tensors a test may then change. */
function copyModel(
  src: string,
  name: string,
  edit: { config?: (c: Record<string, unknown>) => void; tensors?: (t: RawTensor[]) => RawTensor[] } = {},
): string {
  const dir = join(tmp, name);
  execFileSync("mkdir", ["-p", dir]);
  for (const f of readdirSync(src)) copyFileSync(join(src, f), join(dir, f));
  if (edit.config) {
    const cfg = JSON.parse(readFileSync(join(dir, "config.json"), "utf8"));
    edit.config(cfg);
    writeFileSync(join(dir, "config.json"), JSON.stringify(cfg));
  }
  if (edit.tensors) {
    const tensors = edit.tensors([...readSafetensors(join(src, "model.safetensors")).values()]);
    writeSafetensors(join(dir, "model.safetensors"), tensors);
  }
  return dir;
}

test("decoding with the KV cache gives the same logits as recomputing the whole sequence", { skip: qwen2.skip }, () => {
  const model = loadModel(qwen2.path);
  const ids = [5, 77, 300, 12, 9, 640, 3, 81];
  const full = model.forward([ids]); // [1, 8, V], no cache
  const cache = model.newCache();
  model.forward([ids.slice(0, 5)], cache, { lastOnly: true });
  for (let i = 5; i < ids.length; i++) {
    const step = model.forward([[ids[i]]], cache, { lastOnly: true });
    assertClose(step.reshape([-1]), full.slice(1, i, i + 1).reshape([-1]), 1e-3, `position ${i}`);
  }
});

test("batched forward equals one sequence at a time", { skip: qwen2.skip }, () => {
  const model = loadModel(qwen2.path);
  const a = [5, 77, 300, 12];
  const b = [9, 640, 3, 81];
  const both = model.forward([a, b]);
  assertClose(both.slice(0, 0, 1), model.forward([a]), 1e-4, "sequence a");
  assertClose(both.slice(0, 1, 2), model.forward([b]), 1e-4, "sequence b");
});

test("an unknown model_type is an error naming the supported ones", () => {
  assert.throws(
    () => parseModelConfig({ model_type: "gpt2" }, "x/config.json"),
    (e: unknown) => {
      assert.ok(e instanceof ConfigError);
      assert.match(e.message, /x\/config\.json: unsupported model_type "gpt2"; supported model types are qwen2, qwen3, llama/);
      return true;
    },
  );
});

test("config errors: missing fields, heads that do not divide, unsupported rope scaling", () => {
  const base = {
    model_type: "qwen2",
    hidden_size: 64,
    intermediate_size: 128,
    num_hidden_layers: 2,
    num_attention_heads: 8,
    num_key_value_heads: 4,
    vocab_size: 100,
    max_position_embeddings: 64,
  };
  assert.equal(parseModelConfig(base).headDim, 8);
  assert.throws(() => parseModelConfig({ ...base, hidden_size: undefined }), /"hidden_size" must be a positive integer/);
  assert.throws(() => parseModelConfig({ ...base, num_key_value_heads: 3 }), /multiple of num_key_value_heads/);
  assert.throws(
    () => parseModelConfig({ ...base, rope_scaling: { type: "yarn", factor: 4 } }),
    /rope_scaling of type "yarn" is not supported/,
  );
  assert.throws(() => parseModelConfig({ ...base, hidden_act: "gelu" }), /hidden_act "gelu" is not supported/);
});

test("an unknown model type in a checkpoint folder is a clear error from the CLI", { skip: stories.skip }, () => {
  const dir = copyModel(stories.path, "gpt2", { config: (c) => (c.model_type = "gpt2") });
  const r = spawnSync(process.execPath, [cli, "generate", "--model", dir, "--prompt", "hi"], { encoding: "utf8" });
  assert.equal(r.status, 1);
  assert.equal(r.stdout, "");
  assert.match(r.stderr, /^tiny-llm: error: .*unsupported model_type "gpt2"; supported model types are qwen2, qwen3, llama\n$/);
});

test("a tensor whose shape does not match config.json is named in the error", { skip: qwen2.skip }, () => {
  const dir = copyModel(qwen2.path, "wide", { config: (c) => (c.intermediate_size = 512) });
  assert.throws(
    () => loadModel(dir),
    (e: unknown) => {
      assert.ok(e instanceof CheckpointError);
      assert.match(e.message, /model\.layers\.0\.mlp\.gate_proj\.weight" has shape \[256,128\] but the config implies \[512,128\]/);
      return true;
    },
  );
});

test("a missing tensor is named in the error", { skip: qwen2.skip }, () => {
  const dir = copyModel(qwen2.path, "missing", { tensors: (ts) => ts.filter((t) => t.name !== "model.layers.2.self_attn.k_proj.bias") });
  assert.throws(() => loadModel(dir), /tensor "model\.layers\.2\.self_attn\.k_proj\.bias" is missing/);
});

test("an unexpected tensor is named in the error", { skip: qwen2.skip }, () => {
  const dir = copyModel(qwen2.path, "extra", { config: (c) => (c.num_hidden_layers = 2) });
  assert.throws(() => loadModel(dir), /unexpected tensors model\.layers\.2\./);
});

test("a prompt longer than the context is an error, in the API and in the CLI", { skip: stories.skip }, () => {
  const model = loadModel(stories.path);
  const long = Array.from({ length: 600 }, () => 300);
  assert.throws(() => generate(model, long, { sampler: new Sampler({ temperature: 0 }), maxTokens: 4 }).next(), PromptTooLongError);
  assert.throws(() => model.forward([long]), ContextOverflowError);
  const r = spawnSync(process.execPath, [cli, "generate", "--model", stories.path, "--prompt", "Once upon a time ".repeat(200)], {
    encoding: "utf8",
  });
  assert.equal(r.status, 1);
  assert.match(r.stderr, /the prompt is \d+ tokens but the model's context is 512 \(max_position_embeddings\)/);
});

test("generation stops at the context length instead of overflowing it", { skip: stories.skip }, () => {
  const model = loadModel(stories.path);
  const prompt = Array.from({ length: 500 }, (_, i) => 300 + (i % 100));
  const gen = generate(model, prompt, { sampler: new Sampler({ temperature: 0 }), maxTokens: 100 });
  let n = 0;
  let r = gen.next();
  for (; !r.done; r = gen.next()) n++;
  assert.equal(n, 12);
  assert.equal(r.value, "length");
});

test("CLI usage errors are one line and a non-zero exit", { skip: stories.skip }, () => {
  const cases: [string[], RegExp][] = [
    // No --model is the default model: offline with an empty cache, that is one line too.
    [["generate", "--prompt", "x"], /Qwen\/Qwen2\.5-0\.5B-Instruct is not in the Hugging Face cache .* downloads are off/],
    [["generate", "--model", stories.path], /--prompt TEXT is required/],
    [["generate", "--model", join(tmp, "nope"), "--prompt", "x"], /model folder .*nope does not exist/],
    [["generate", "--model", stories.path, "--prompt", "x", "--temperature", "hot"], /--temperature expects a number, got "hot"/],
    [["generate", "--model", stories.path, "--prompt", "x", "--top-p", "2"], /top-p must be in \(0, 1\]/],
    [["generate", "--model", stories.path, "--prompt", "x", "--chat"], /no chat template/],
    [["frobnicate"], /unknown command "frobnicate"/],
  ];
  for (const [args, pattern] of cases) {
    const env = { ...process.env, HF_HUB_OFFLINE: "1", HF_HUB_CACHE: join(tmp, "empty-cache") };
    const r = spawnSync(process.execPath, [cli, ...args], { encoding: "utf8", env });
    assert.equal(r.status, 1, args.join(" "));
    assert.match(r.stderr, pattern);
    assert.equal(r.stderr.trim().split("\n").length, 1, `one line for ${args.join(" ")}: ${r.stderr}`);
  }
});

test("sampling from the CLI with a seed is reproducible", { skip: stories.skip }, () => {
  const run = (seed: string): string =>
    execFileSync(
      process.execPath,
      [
        cli,
        "generate",
        "--model",
        stories.path,
        "--prompt",
        "Once",
        "--max-tokens",
        "40",
        "--temperature",
        "1",
        "--top-p",
        "0.9",
        "--seed",
        seed,
      ],
      {
        encoding: "utf8",
      },
    );
  assert.equal(run("11"), run("11"));
  assert.notEqual(run("11"), run("12"));
});
