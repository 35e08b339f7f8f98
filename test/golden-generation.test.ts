/**
 * End-to-end numerics against independent implementations: llama2.c's story for stories260k and
 * llama.cpp's greedy tokens and log-probabilities for the tiny random models (../shared/golden).
 */
import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { generate } from "../src/generation/generate.js";
import { Sampler } from "../src/generation/sampler.js";
import { loadModel } from "../src/loaders/model-loader.js";
import { nativeKernels } from "../src/kernels/native.js";
import { selectBackend, type BackendName } from "../src/engine/backend.js";
import { Tokenizer } from "../src/tokenizer/tokenizer.js";
import { projectRoot, sharedPath } from "./support/shared.js";
import { logSumExp } from "./support/numeric.js";
import { assertSameSteps, greedySteps } from "./support/greedy-steps.js";

const cli = join(projectRoot, "dist", "src", "cli", "main.js");

/** Every test runs on the TypeScript reference and on the native kernels. */
const backends: [BackendName, string | false][] = [
  ["ts", false],
  ["native", nativeKernels() ? false : "native kernels unavailable"],
];

const load = (dir: string, backend: BackendName) => selectBackend(loadModel(dir), { backend }).model;

/** Tolerance on log-probabilities against llama.cpp (f32 there, f32 storage with f64 sums here). */
const LOGPROB_TOLERANCE = 1e-2;

const stories = sharedPath("golden", "stories260k.json");
for (const [backend, backendSkip] of backends)
  for (const arch of ["qwen2", "llama"] as const) {
    const model = sharedPath("models", `stories260k-${arch}`);
    const skip = stories.skip || model.skip || backendSkip;

    test(`[${backend}] stories260k-${arch}: greedy tokens from BOS equal the reference story`, { skip }, () => {
      const golden = JSON.parse(readFileSync(stories.path, "utf8"))[arch];
      const m = load(model.path, backend);
      const ids = [...generate(m, golden.prompt_ids, { sampler: new Sampler({ temperature: 0 }), maxTokens: 256, stopIds: [1, 2] })].map(
        (t) => t.id,
      );
      assert.deepEqual(ids, golden.greedy_ids);
    });

    test(`[${backend}] tiny-llm generate on stories260k-${arch} prints exactly the reference story`, { skip }, () => {
      const golden = JSON.parse(readFileSync(stories.path, "utf8"))[arch];
      const out = execFileSync(
        process.execPath,
        [cli, "generate", "--model", model.path, "--prompt", "", "--max-tokens", "256", "--temperature", "0", "--backend", backend],
        {
          encoding: "utf8",
        },
      );
      assert.equal(out, golden.greedy_text + "\n");
    });
  }

for (const [backend, backendSkip] of backends)
  for (const name of ["qwen2", "qwen3", "llama"]) {
    const golden = sharedPath("golden", `tiny-random-${name}.json`);
    const model = sharedPath("models", `tiny-random-${name}`);
    const skip = golden.skip || model.skip || backendSkip;

    test(`[${backend}] tiny-random-${name}: prompt ids, 32 greedy ids and top-5 log-probs match llama.cpp`, { skip }, () => {
      const g = JSON.parse(readFileSync(golden.path, "utf8"));
      const tokenizer = Tokenizer.fromDir(model.path);
      assert.deepEqual(tokenizer.encode(g.prompt_text), g.prompt_ids);
      const m = load(model.path, backend);
      const ids: number[] = [];
      let worst = 0;
      // Logits are checked at each step: a backend may reuse the array for the next one.
      for (const s of generate(m, g.prompt_ids, { sampler: new Sampler({ temperature: 0 }), maxTokens: 32 })) {
        const lse = logSumExp(s.logits);
        for (const [id, logprob] of g.llama_cpp_top5_logprobs[ids.length] as [number, number][]) {
          worst = Math.max(worst, Math.abs(s.logits[id] - lse - logprob));
        }
        ids.push(s.id);
      }
      assert.deepEqual(ids, g.greedy_ids);
      assert.ok(worst <= LOGPROB_TOLERANCE, `largest log-prob difference ${worst} exceeds ${LOGPROB_TOLERANCE}`);
    });

    test(`[${backend}] tiny-llm generate --ignore-eos on tiny-random-${name} prints llama.cpp's text`, { skip }, () => {
      const g = JSON.parse(readFileSync(golden.path, "utf8"));
      const out = execFileSync(
        process.execPath,
        [
          cli,
          "generate",
          "--model",
          model.path,
          "--prompt",
          g.prompt_text,
          "--max-tokens",
          "32",
          "--temperature",
          "0",
          "--ignore-eos",
          "--backend",
          backend,
        ],
        { encoding: "utf8" },
      );
      assert.equal(out, g.greedy_text + "\n");
    });
  }

for (const name of ["stories260k-qwen2", "stories260k-llama", "tiny-random-qwen2", "tiny-random-qwen3", "tiny-random-llama"]) {
  const model = sharedPath("models", name);
  test(
    `native and TypeScript backends agree on 64 greedy tokens and their logits for ${name}`,
    { skip: model.skip || backends[1][1] },
    () => {
      const prompt = [1, 300, 301, 302, 303, 304, 305, 306, 307, 308, 309, 310];
      assertSameSteps(greedySteps(load(model.path, "native"), prompt, 64), greedySteps(load(model.path, "ts"), prompt, 64));
    },
  );
}

test("without the native addon the CLI says so in one line and still generates on the TypeScript path", { skip: stories.skip }, () => {
  const model = sharedPath("models", "stories260k-qwen2");
  const golden = JSON.parse(readFileSync(stories.path, "utf8")).qwen2;
  const r = spawnSync(
    process.execPath,
    [cli, "generate", "--model", model.path, "--prompt", "", "--max-tokens", "256", "--temperature", "0"],
    {
      encoding: "utf8",
      env: { ...process.env, TINY_LLM_ADDON: join(projectRoot, "no-such-addon.node") },
    },
  );
  assert.equal(r.status, 0);
  assert.equal(r.stdout, golden.greedy_text + "\n");
  assert.match(
    r.stderr,
    /^tiny-llm: native kernels unavailable \(.*no-such-addon\.node was not built.*\); using the slower TypeScript backend\n$/,
  );
  const explicit = spawnSync(process.execPath, [cli, "generate", "--model", model.path, "--prompt", "", "--backend", "native"], {
    encoding: "utf8",
    env: { ...process.env, TINY_LLM_ADDON: join(projectRoot, "no-such-addon.node") },
  });
  assert.equal(explicit.status, 1);
  assert.match(explicit.stderr, /the native backend is not available/);
});
