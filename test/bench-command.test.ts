/**
 * `tiny-llm bench`: the report's shape and its errors. Speed itself is measured by
 * `npm run bench`, never asserted here.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import type { BenchResult } from "../src/cli/bench-command.js";
import { nativeKernels } from "../src/kernels/native.js";
import { projectRoot, sharedPath } from "./support/shared.js";

const cli = join(projectRoot, "dist", "src", "cli", "main.js");
const folder = sharedPath("models", "stories260k-qwen2");
const gguf = sharedPath("golden", "stories260k-qwen2.f32.gguf");

function bench(...args: string[]): { status: number | null; stdout: string; stderr: string } {
  return spawnSync(process.execPath, [cli, "bench", ...args], { encoding: "utf8" });
}

function benchJson(...args: string[]): BenchResult {
  const r = bench("--json", ...args);
  assert.equal(r.status, 0, r.stderr);
  return JSON.parse(r.stdout) as BenchResult;
}

function assertFigures(r: BenchResult, promptTokens: number, genTokens: number): void {
  assert.equal(r.promptTokens, promptTokens);
  assert.equal(r.genTokens, genTokens);
  assert.equal(r.promptIds.length, promptTokens);
  // stories260k: 512 tokens, of which 0..2 are <unk>, <s> and </s>.
  for (const id of r.promptIds) assert.ok(Number.isInteger(id) && id > 2 && id < 512, `prompt id ${id}`);
  const figures = [
    r.loadMs,
    r.prefillMs,
    r.prefillTokensPerSecond,
    r.ttftMs,
    r.decodeMs,
    r.decodeTokensPerSecond,
    r.peakRssBytes,
    r.weightBytesPerToken,
    r.decodeBytesPerSecond,
  ];
  for (const x of figures) assert.ok(Number.isFinite(x) && x > 0, `figure ${x} in ${JSON.stringify(r)}`);
  assert.ok(r.ttftMs >= r.prefillMs);
  if (r.probeBytesPerSecond !== null) {
    assert.ok(Number.isFinite(r.probeBytesPerSecond) && r.probeBytesPerSecond > 0);
    assert.ok(r.probeFraction !== null && Number.isFinite(r.probeFraction) && r.probeFraction > 0);
  }
  assert.deepEqual(r.weightTypes, ["f32"]);
}

for (const [name, model] of [
  ["checkpoint folder", folder],
  ["GGUF file", gguf],
] as const) {
  test(`tiny-llm bench --json on a ${name} reports positive figures for the prompt asked for`, { skip: model.skip }, () => {
    assertFigures(benchJson("--model", model.path, "--prompt-tokens", "24", "--gen-tokens", "8"), 24, 8);
  });
}

test("tiny-llm bench: the prompt is the same on every run and for either format", { skip: folder.skip || gguf.skip }, () => {
  const a = benchJson("--model", folder.path, "--prompt-tokens", "16", "--gen-tokens", "1");
  const b = benchJson("--model", gguf.path, "--prompt-tokens", "16", "--gen-tokens", "1");
  assert.deepEqual(a.promptIds, b.promptIds);
});

test("tiny-llm bench runs on the TypeScript backend", { skip: folder.skip }, () => {
  const r = benchJson("--model", folder.path, "--backend", "ts", "--prompt-tokens", "8", "--gen-tokens", "4");
  assert.equal(r.backend, "ts");
  assertFigures(r, 8, 4);
});

test("tiny-llm bench prints a readable report by default", { skip: folder.skip }, () => {
  const r = bench("--model", folder.path, "--prompt-tokens", "8", "--gen-tokens", "4");
  assert.equal(r.status, 0, r.stderr);
  for (const label of ["load", "prefill", "first token", "decode", "weights", "bandwidth", "peak RSS"]) {
    assert.match(r.stdout, new RegExp(`^${label} `, "m"));
  }
  assert.match(r.stdout, /8 tokens in .* tokens\/s/);
});

test(
  "tiny-llm bench --isa pins the native kernels to the instruction set asked for",
  { skip: folder.skip || (nativeKernels() ? false : "native kernels unavailable") },
  () => {
    const r = benchJson("--model", folder.path, "--isa", "scalar", "--prompt-tokens", "4", "--gen-tokens", "2");
    assert.equal(r.isa, "scalar");
    assertFigures(r, 4, 2);
  },
);

const badOptions: [string, string[], RegExp][] = [
  ["--prompt-tokens 0", ["--prompt-tokens", "0"], /--prompt-tokens must be at least 1/],
  ["--gen-tokens 0", ["--gen-tokens", "0"], /--gen-tokens must be at least 1/],
  ["a fractional count", ["--prompt-tokens", "2.5"], /--prompt-tokens expects a whole number/],
  ["a prompt longer than the context", ["--prompt-tokens", "600"], /need 728 positions, more than the model's context of 512/],
  ["an unknown backend", ["--backend", "gpu"], /--backend must be "native" or "ts"/],
  ["--threads 0", ["--threads", "0"], /--threads must be at least 1/],
  [
    "an unknown instruction set",
    ["--isa", "sse9"],
    nativeKernels() ? /instruction set "sse9" is not available on this CPU \(available: .*scalar\)/ : /--isa needs the native backend/,
  ],
];
for (const [what, args, message] of badOptions) {
  test(`tiny-llm bench rejects ${what} with one line`, { skip: folder.skip }, () => {
    const r = bench("--model", folder.path, ...args);
    assert.equal(r.status, 1);
    assert.equal(r.stdout, "");
    assert.match(r.stderr, /^tiny-llm: error: .*\n$/);
    assert.match(r.stderr, message);
  });
}

test("tiny-llm bench without --model or with a missing one says what --model takes", () => {
  // No --model is the default model: offline with an empty cache, one line saying how to pass one.
  const env = { ...process.env, HF_HUB_OFFLINE: "1", HF_HUB_CACHE: join(tmpdir(), "tiny-llm-bench-no-cache") };
  const none = spawnSync(process.execPath, [cli, "bench"], { encoding: "utf8", env });
  assert.equal(none.status, 1);
  assert.match(none.stderr, /^tiny-llm: error: Qwen\/Qwen2\.5-0\.5B-Instruct is not in the Hugging Face cache .*--model \.\/my-model.*\n$/);
  const missing = bench("--model", join(projectRoot, "no-such-model.gguf"));
  assert.equal(missing.status, 1);
  assert.match(missing.stderr, /^tiny-llm: error: .*does not exist.*\n$/);
});

test("tiny-llm --help lists bench, and tiny-llm bench --help tells its options", () => {
  const r = spawnSync(process.execPath, [cli, "--help"], { encoding: "utf8" });
  assert.match(r.stdout, /^ {2}bench /m);
  assert.match(spawnSync(process.execPath, [cli, "bench", "--help"], { encoding: "utf8" }).stdout, /Usage: tiny-llm bench/);
});
