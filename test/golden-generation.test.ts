/**
 * End-to-end numerics against independent implementations: llama2.c's story for stories260k and
 * llama.cpp's greedy tokens and log-probabilities for the tiny random models (../shared/golden).
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { generate } from "../src/generation/generate.js";
import { Sampler } from "../src/generation/sampler.js";
import { loadModel } from "../src/loaders/model-loader.js";
import { Tokenizer } from "../src/tokenizer/tokenizer.js";
import { projectRoot, sharedPath } from "./support/shared.js";

const cli = join(projectRoot, "dist", "src", "cli", "main.js");

/** Tolerance on log-probabilities against llama.cpp (f32 there, f32 storage with f64 sums here). */
const LOGPROB_TOLERANCE = 1e-2;

function logSumExp(v: Float32Array): number {
  let max = -Infinity;
  for (const x of v) max = Math.max(max, x);
  let s = 0;
  for (const x of v) s += Math.exp(x - max);
  return max + Math.log(s);
}

const stories = sharedPath("golden", "stories260k.json");
for (const arch of ["qwen2", "llama"] as const) {
  const model = sharedPath("models", `stories260k-${arch}`);
  const skip = stories.skip || model.skip;

  test(`stories260k-${arch}: greedy tokens from BOS equal the reference story`, { skip }, () => {
    const golden = JSON.parse(readFileSync(stories.path, "utf8"))[arch];
    const m = loadModel(model.path);
    const ids = [...generate(m, golden.prompt_ids, { sampler: new Sampler({ temperature: 0 }), maxTokens: 256, stopIds: [1, 2] })].map((t) => t.id);
    assert.deepEqual(ids, golden.greedy_ids);
  });

  test(`tiny-llm generate on stories260k-${arch} prints exactly the reference story`, { skip }, () => {
    const golden = JSON.parse(readFileSync(stories.path, "utf8"))[arch];
    const out = execFileSync(process.execPath, [cli, "generate", "--model", model.path, "--prompt", "", "--max-tokens", "256", "--temperature", "0"], {
      encoding: "utf8",
    });
    assert.equal(out, golden.greedy_text + "\n");
  });
}

for (const name of ["qwen2", "qwen3", "llama"]) {
  const golden = sharedPath("golden", `tiny-random-${name}.json`);
  const model = sharedPath("models", `tiny-random-${name}`);
  const skip = golden.skip || model.skip;

  test(`tiny-random-${name}: prompt ids, 32 greedy ids and top-5 log-probs match llama.cpp`, { skip }, () => {
    const g = JSON.parse(readFileSync(golden.path, "utf8"));
    const tokenizer = Tokenizer.fromDir(model.path);
    assert.deepEqual(tokenizer.encode(g.prompt_text), g.prompt_ids);
    const m = loadModel(model.path);
    const steps = [...generate(m, g.prompt_ids, { sampler: new Sampler({ temperature: 0 }), maxTokens: 32 })];
    assert.deepEqual(
      steps.map((s) => s.id),
      g.greedy_ids,
    );
    let worst = 0;
    steps.forEach((s, i) => {
      const lse = logSumExp(s.logits);
      for (const [id, logprob] of g.llama_cpp_top5_logprobs[i] as [number, number][]) {
        worst = Math.max(worst, Math.abs(s.logits[id] - lse - logprob));
      }
    });
    assert.ok(worst <= LOGPROB_TOLERANCE, `largest log-prob difference ${worst} exceeds ${LOGPROB_TOLERANCE}`);
  });

  test(`tiny-llm generate --ignore-eos on tiny-random-${name} prints llama.cpp's text`, { skip }, () => {
    const g = JSON.parse(readFileSync(golden.path, "utf8"));
    const out = execFileSync(
      process.execPath,
      [cli, "generate", "--model", model.path, "--prompt", g.prompt_text, "--max-tokens", "32", "--temperature", "0", "--ignore-eos"],
      { encoding: "utf8" },
    );
    assert.equal(out, g.greedy_text + "\n");
  });
}
