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

test("--stride: windows of ctx tokens every stride tokens, each scoring only what the one before did not", { skip: model.skip }, () => {
  const { model: reference } = loadCheckpoint(model.path);
  const lm = selectBackend(reference, { backend: "ts" }).model;
  const ids = Array.from({ length: 40 }, (_, i) => 1 + ((i * 37 + 11) % 500));
  const ctx = 12;
  // Hugging Face's loop, each token's log-probability from a fresh sequence of its window's tokens before it.
  const expected = (stride: number, maxWindows = Infinity): { nll: number; count: number; windows: number } => {
    let nll = 0;
    let count = 0;
    let windows = 0;
    let previousEnd = 0;
    for (let begin = 0; windows < maxWindows; begin += stride) {
      const end = Math.min(begin + ctx, ids.length);
      for (let t = Math.max(previousEnd, begin + 1); t < end; t++) {
        const lp = logSoftmax(lm.newSequence().forward(ids.slice(begin, t)).slice());
        nll -= lp[ids[t]];
        count++;
      }
      windows++;
      previousEnd = end;
      if (end === ids.length) break;
    }
    return { nll, count, windows };
  };
  for (const [stride, windows, scored] of [
    [5, 7, 39], // begins 0, 5, …, 30 (the one at 30 reaches the end): every token but the first once
    [12, 4, 36], // windows that do not overlap, the last cut to 4 tokens: all but each window's first
    [1, 29, 39],
  ]) {
    const want = expected(stride);
    const got = perplexity(lm, ids, { ctx, stride });
    assert.deepEqual([want.windows, want.count], [windows, scored], `stride ${stride}: the reference`);
    assert.deepEqual([got.chunks, got.scoredTokens, got.stride], [windows, scored, stride], `stride ${stride}`);
    assert.ok(Math.abs(got.meanNll - want.nll / want.count) < 1e-4, `stride ${stride}: ${got.meanNll} against ${want.nll / want.count}`);
  }
  const two = perplexity(lm, ids, { ctx, stride: 5, chunks: 2 });
  const wantTwo = expected(5, 2);
  assert.deepEqual([two.chunks, two.scoredTokens], [2, 11 + 5], "--chunks limits the windows");
  assert.ok(Math.abs(two.meanNll - wantTwo.nll / wantTwo.count) < 1e-4);
  // A smaller stride gives each scored token more context.
  assert.ok(perplexity(lm, ids, { ctx, stride: 1 }).meanNll !== perplexity(lm, ids, { ctx, stride: 12 }).meanNll);
});

test("--stride from the command line, its bounds, and perplexity in tiny-llm --help", { skip: model.skip }, () => {
  const dir = mkdtempSync(join(tmpdir(), "tiny-llm-ppl-"));
  const file = join(dir, "story.txt");
  writeFileSync(file, "Once upon a time there was a little girl named Lily. She liked to play in the park with her dog.");
  const run = (...args: string[]) =>
    spawnSync(process.execPath, [cli, "perplexity", "--model", model.path, "--file", file, "--backend", "ts", ...args], {
      encoding: "utf8",
    });
  const ok = run("--ctx", "16", "--stride", "8", "--json");
  assert.equal(ok.status, 0, ok.stderr);
  const result = JSON.parse(ok.stdout) as { stride: number; ctx: number; scoredTokens: number; textTokens: number; perplexity: number };
  assert.deepEqual([result.ctx, result.stride, result.scoredTokens], [16, 8, result.textTokens - 1]);
  assert.ok(Number.isFinite(result.perplexity) && result.perplexity > 1);
  const tooLong = run("--ctx", "16", "--stride", "17");
  assert.equal(tooLong.status, 1);
  assert.match(tooLong.stderr, /^tiny-llm: error: --stride must be at most --ctx \(16\), got 17\n$/);
  const zero = run("--ctx", "16", "--stride", "0");
  assert.equal(zero.status, 1);
  assert.match(zero.stderr, /--stride must be at least 1/);
  const help = spawnSync(process.execPath, [cli, "--help"], { encoding: "utf8" });
  assert.match(help.stdout, /^ {2}perplexity {2}\S/m);
  assert.match(spawnSync(process.execPath, [cli, "perplexity", "--help"], { encoding: "utf8" }).stdout, /--stride N/);
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
