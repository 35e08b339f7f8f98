/**
 * `tiny-llm perplexity` against llama.cpp's `llama-perplexity` on the same GGUF file, text and
 * windows: within 0.5 %. The text is TypeScript's LICENSE.txt (the Apache License 2.0, about 2k
 * tokens of English), which the lock file pins with the typescript dev dependency.
 *
 * Both score the same tokens (the second halves of 4 windows of 256, 508 tokens); the two
 * engines' log-probabilities differ by rounding (real-greedy.test.ts measures it: RMS 0.07-0.08
 * nats, of either sign), which the mean over 508 tokens brings down to about 0.005 nats at worst.
 * Measured: 0.5B -0.31 % and +0.10 % (two revisions of the native kernels), 1.5B -0.05 %.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { describe, test } from "node:test";
import { promisify } from "node:util";
import { nativeKernels } from "../src/kernels/native.js";
import { llamaCppSkip, llamaCppTool } from "../scripts/llama-cpp-paths.js";
import { projectRoot } from "./support/shared.js";
import { testModel } from "./support/test-models.js";

const run = promisify(execFile);
const cli = join(projectRoot, "dist", "src", "cli", "main.js");
const text = join(projectRoot, "node_modules", "typescript", "LICENSE.txt");
const CTX = 256;
const CHUNKS = 4;
const TOLERANCE = 0.005;

for (const name of ["qwen2.5-coder-0.5b-instruct", "qwen2.5-coder-1.5b-instruct"]) {
  const model = testModel(name);
  const skip =
    model.skip ||
    llamaCppSkip("llama-perplexity") ||
    (existsSync(text) ? false : `${text} not found (npm install)`) ||
    (nativeKernels() ? false : "native kernels unavailable (the TypeScript path takes half an hour here)");

  describe(`${name}: perplexity against llama-perplexity`, { skip }, () => {
    test(`${CHUNKS} windows of ${CTX} tokens: within ${TOLERANCE * 100} %`, { timeout: 20 * 60_000 }, async (t) => {
      const llama = await run(
        llamaCppTool("llama-perplexity") as string,
        ["-m", model.path as string, "-f", text, "-c", String(CTX), "-b", String(CTX), "--chunks", String(CHUNKS), "-t", "2"],
        { timeout: 10 * 60_000, maxBuffer: 16 << 20 },
      );
      const log = llama.stdout + llama.stderr;
      const expected = Number(/Final estimate: PPL = ([\d.]+)/.exec(log)?.[1]);
      assert.ok(Number.isFinite(expected), `llama-perplexity printed its estimate: ${log.slice(-400)}`);
      assert.match(log, new RegExp(`over ${CHUNKS} chunks, n_ctx=${CTX}`));

      const ours = await run(
        process.execPath,
        [cli, "perplexity", "--model", model.path as string, "--file", text, "--ctx", String(CTX), "--chunks", String(CHUNKS), "--json"],
        { timeout: 15 * 60_000 },
      );
      const result = JSON.parse(ours.stdout) as { perplexity: number; scoredTokens: number; chunks: number; backend: string };
      t.diagnostic(`ours ${result.perplexity.toFixed(4)} (${result.backend}), llama.cpp ${expected.toFixed(4)}`);
      assert.equal(result.chunks, CHUNKS);
      assert.equal(result.scoredTokens, CHUNKS * (CTX - CTX / 2 - 1), "the tokens llama-perplexity scores");
      assert.ok(
        Math.abs(result.perplexity / expected - 1) <= TOLERANCE,
        `perplexity ${result.perplexity} against llama.cpp's ${expected}: ${(100 * (result.perplexity / expected - 1)).toFixed(2)} %`,
      );
    });
  });
}
