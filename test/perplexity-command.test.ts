/**
 * `tiny-llm perplexity` on the 260K story model: which tokens it scores (against each one's
 * log-probability computed from scratch on a fresh sequence), BOS at the start of every window,
 * and its errors. real-perplexity.test.ts holds it against llama-perplexity on real models.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { perplexity } from "../src/cli/perplexity-command.js";
import { selectBackend } from "../src/engine/backend.js";
import { loadCheckpoint } from "../src/generation/load-checkpoint.js";
import { logSoftmax } from "./support/numeric.js";
import { projectRoot, sharedPath } from "./support/shared.js";

const model = sharedPath("models", "stories260k-llama");
const cli = join(projectRoot, "dist", "src", "cli", "main.js");

test("scores positions ctx/2 … ctx−2 of each window, each from its window's tokens alone", { skip: model.skip }, () => {
  const { model: reference } = loadCheckpoint(model.path);
  const lm = selectBackend(reference, { backend: "ts" }).model;
  const ctx = 12;
  const ids = Array.from({ length: 40 }, (_, i) => 1 + ((i * 37 + 11) % 500));
  const bos = 1;
  let nll = 0;
  let count = 0;
  for (let c = 0; c < 3; c++) {
    const window = ids.slice(c * ctx, (c + 1) * ctx);
    window[0] = bos;
    for (let j = ctx / 2; j <= ctx - 2; j++) {
      const lp = logSoftmax(
        lm
          .newSequence()
          .forward(window.slice(0, j + 1))
          .slice(),
      );
      nll -= lp[window[j + 1]];
      count++;
    }
  }
  const result = perplexity(lm, ids, { ctx, bos });
  assert.equal(result.chunks, 3, "40 tokens hold 3 windows of 12");
  assert.equal(result.scoredTokens, count);
  assert.equal(count, 3 * 5);
  // f32 logits either way; the prefix is fed in one pass here and in two parts there.
  assert.ok(Math.abs(result.meanNll - nll / count) < 1e-4, `${result.meanNll} against ${nll / count}`);
  assert.ok(Math.abs(result.perplexity - Math.exp(nll / count)) < 1e-3 * result.perplexity);

  const withoutBos = perplexity(lm, ids, { ctx });
  assert.notEqual(withoutBos.meanNll, result.meanNll, "the first token of a window is in the context of every scored one");
  assert.equal(perplexity(lm, ids, { ctx, bos, chunks: 2 }).scoredTokens, 2 * 5, "--chunks limits the windows");
});

test("a text shorter than two windows, and a missing --file, are one-line errors", { skip: model.skip }, () => {
  const dir = mkdtempSync(join(tmpdir(), "tiny-llm-ppl-"));
  const file = join(dir, "short.txt");
  writeFileSync(file, "Once upon a time there was a little girl.");
  const short = spawnSync(process.execPath, [cli, "perplexity", "--model", model.path, "--file", file, "--ctx", "64"], {
    encoding: "utf8",
  });
  assert.equal(short.status, 1);
  assert.match(short.stderr, /^tiny-llm: error: the text is \d+ tokens; perplexity with --ctx 64 needs at least 128\n$/);
  const missing = spawnSync(process.execPath, [cli, "perplexity", "--model", model.path], { encoding: "utf8" });
  assert.equal(missing.status, 1);
  assert.match(missing.stderr, /--file TEXT is required/);
  const unreadable = spawnSync(process.execPath, [cli, "perplexity", "--model", model.path, "--file", join(dir, "none.txt")], {
    encoding: "utf8",
  });
  assert.equal(unreadable.status, 1);
  assert.match(unreadable.stderr, /cannot read --file/);
});
