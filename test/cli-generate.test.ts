/**
 * `tiny-llm generate` as a process: a reader that stops early, prompts from stdin and files,
 * --json with finish reasons and log-probabilities, the seed of a sample, what --verbose and
 * --show-prompt report, --stop and the penalties.
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { cpSync, mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { DEFAULT_SAMPLING } from "../src/engine/api.js";
import { Tokenizer } from "../src/tokenizer/tokenizer.js";
import { cliPath, runCli } from "./support/cli.js";
import { sharedPath } from "./support/shared.js";

const stories = sharedPath("models", "stories260k-qwen2");
const random = sharedPath("models", "tiny-random-qwen2");
const qwen3 = sharedPath("models", "tiny-random-qwen3");
const S = stories.path;

interface GenerateJson {
  text: string;
  finishReason: string;
  stopString?: string;
  promptTokens: number;
  completionTokens: number;
  tokenIds: number[];
  seed: number;
  sampling: Record<string, number>;
  backend: string;
  isa: string;
  threads: number;
  loadMs: number;
  ttftMs: number;
  decodeTokensPerSecond: number;
  peakRssBytes: number;
  prompt?: string;
  promptIds?: number[];
  logprobs?: { id: number; text: string; logprob: number; top: { id: number; text: string; logprob: number }[] }[];
}

function generate(args: string[], input?: string): { stdout: string; stderr: string } {
  const r = runCli(["generate", ...args], input === undefined ? {} : { input });
  assert.equal(r.status, 0, r.stderr);
  return r;
}

function generateJson(args: string[]): GenerateJson {
  return JSON.parse(generate([...args, "--json"]).stdout) as GenerateJson;
}

test("a reader that stops early (| head -c 20) ends generation at once, quietly, with exit 0", { skip: random.skip }, async () => {
  // 4000 tokens on the TypeScript kernels take many seconds; the reader wants 20 bytes.
  const child = spawn(process.execPath, [
    cliPath,
    "generate",
    "-m",
    random.path,
    "-p",
    "hi",
    "-n",
    "4000",
    "--ignore-eos",
    "--backend",
    "ts",
  ]);
  let stderr = "";
  child.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
  const got = await new Promise<string>((resolve) => {
    let seen = "";
    child.stdout.on("data", (chunk: Buffer) => {
      seen += chunk.toString();
      if (seen.length >= 20) {
        child.stdout.destroy();
        resolve(seen);
      }
    });
  });
  const closedAt = performance.now();
  const code = await new Promise<number | null>((resolve) => child.on("exit", (c) => resolve(c)));
  const ms = performance.now() - closedAt;
  assert.ok(got.length >= 20);
  assert.equal(stderr, "", "no EPIPE stack trace");
  assert.equal(code, 0);
  assert.ok(ms < 5000, `exited ${ms.toFixed(0)} ms after its reader went`);
});

test(
  "the prompt from stdin (-p -) or a file (--prompt-file) is the prompt given inline, less one final newline",
  { skip: stories.skip },
  () => {
    const inline = generate(["-m", S, "-p", "Once upon a time", "-n", "12"]).stdout;
    assert.equal(generate(["-m", S, "-p", "-", "-n", "12"], "Once upon a time\n").stdout, inline);
    const file = join(mkdtempSync(join(tmpdir(), "tiny-llm-cli-")), "prompt.txt");
    writeFileSync(file, "Once upon a time\n");
    assert.equal(generate(["-m", S, "--prompt-file", file, "-n", "12"]).stdout, inline);
    // Only one newline goes: a prompt that ends in a blank line keeps it.
    assert.equal(JSON.parse(generate(["-m", S, "-p", "-", "-n", "0", "--show-prompt", "--json"], "Once\n\n").stdout).prompt, "Once\n");
  },
);

test("--json: the streamed text, its token ids, why generation stopped, seed, sampling and timings", { skip: stories.skip }, () => {
  const tokenizer = Tokenizer.fromDir(S);
  const streamed = generate(["-m", S, "-p", "Once", "-n", "20"]).stdout;
  const length = generateJson(["-m", S, "-p", "Once", "-n", "20"]);
  assert.equal(length.text + "\n", streamed);
  assert.equal(length.finishReason, "length");
  assert.deepEqual([length.promptTokens, length.completionTokens, length.tokenIds.length], [2, 20, 20]);
  assert.equal(tokenizer.decode(length.tokenIds, { skipSpecialTokens: true }), length.text.replace(/^ /, ""));
  assert.ok(Number.isInteger(length.seed) && length.seed >= 0);
  // Greedy, as stories260k's generation_config.json says, and no penalties.
  assert.deepEqual(length.sampling, { ...DEFAULT_SAMPLING, temperature: 0 });
  assert.ok(["native", "ts"].includes(length.backend) && length.isa.length > 0 && length.threads >= 1);
  assert.ok(length.loadMs > 0 && length.ttftMs > 0 && length.decodeTokensPerSecond > 0 && length.peakRssBytes > 1e6);
  assert.equal(length.logprobs, undefined);

  // From BOS the story ends with its end-of-sequence token after 345 tokens.
  const stop = generateJson(["-m", S, "-p", "", "-n", "510"]);
  assert.equal(stop.finishReason, "stop_token");
  assert.ok(stop.completionTokens < 510);
  // "Tom" runs on until the 512-token context is full, short of --max-tokens.
  const context = generateJson(["-m", S, "-p", "Tom", "-n", "510"]);
  assert.deepEqual([context.finishReason, context.promptTokens + context.completionTokens], ["context", 512]);

  const stopped = generateJson(["-m", S, "-p", "Once", "-n", "20", "--stop", "time", "--stop", "zzz"]);
  assert.deepEqual([stopped.finishReason, stopped.stopString], ["stop_string", "time"]);
  assert.equal(stopped.text, length.text.slice(0, length.text.indexOf("time")));
  // Streamed, the text ends just before the stop string too.
  assert.equal(generate(["-m", S, "-p", "Once", "-n", "20", "--stop", "time"]).stdout, stopped.text + "\n");
});

test("--json --logprobs N: each token's log-probability and its N likeliest alternatives", { skip: stories.skip }, () => {
  const out = generateJson(["-m", S, "-p", "Once", "-n", "8", "--logprobs", "3"]);
  assert.ok(out.logprobs);
  assert.deepEqual(
    out.logprobs.map((t) => t.id),
    out.tokenIds,
  );
  assert.equal(out.logprobs.map((t) => t.text).join(""), out.text);
  for (const t of out.logprobs) {
    assert.equal(t.top.length, 3);
    // Greedy: the token taken is the likeliest.
    assert.equal(t.top[0].id, t.id);
    assert.equal(t.top[0].logprob, t.logprob);
    assert.ok(t.logprob <= 0 && t.top[0].logprob >= t.top[1].logprob && t.top[1].logprob >= t.top[2].logprob);
    assert.ok(t.top.every((alt) => typeof alt.text === "string"));
  }
});

test("a sample drawn without --seed names its seed on stderr, and --seed with it repeats the text", { skip: stories.skip }, () => {
  const args = ["-m", S, "-p", "Once", "-n", "30", "--temperature", "1"];
  const first = generate(args);
  const seed = /^tiny-llm: seed (\d+) \(--seed \1 repeats this sample\)\n$/.exec(first.stderr)?.[1];
  assert.ok(seed !== undefined, first.stderr);
  const again = generate([...args, "--seed", seed]);
  assert.equal(again.stdout, first.stdout);
  assert.equal(again.stderr, "", "a given seed is not repeated back");
  // Greedy decoding has no seed to report.
  assert.equal(generate(["-m", S, "-p", "Once", "-n", "5"]).stderr, "");
});

test(
  "--verbose reports the model, backend and instruction set, the sampling values and their source, and why it stopped",
  { skip: qwen3.skip },
  () => {
    const r = generate(["-m", qwen3.path, "-p", "hi", "-n", "5", "--verbose"]);
    const lines = r.stderr.trimEnd().split("\n");
    assert.equal(lines.length, 3, r.stderr);
    assert.match(
      lines[0],
      /^tiny-llm: .*tiny-random-qwen3 \(qwen3, context 4096\) \| (native|ts) backend \(\w+, \d+ thread\(s\)\) \| loaded in \d+ ms$/,
    );
    assert.match(
      lines[1],
      /^tiny-llm: sampling: temperature 0\.6, top-k 20, top-p 0\.95 \(temperature, top-k, top-p from generation_config\.json\) \| seed \d+ \(drawn\)$/,
    );
    assert.match(
      lines[2],
      /^tiny-llm: stopped: --max-tokens 5 reached \| prompt \d+ tokens, .* 5 tokens generated, decode [\d.]+ tokens\/s \| peak RSS \d+ MB$/,
    );
    // A value on the command line is not from the file.
    const given = generate(["-m", qwen3.path, "-p", "hi", "-n", "1", "--verbose", "--temperature", "0.9", "--seed", "7"]).stderr;
    assert.match(given, /sampling: temperature 0\.9, top-k 20, top-p 0\.95 \(top-k, top-p from generation_config\.json\) \| seed 7\n/);
    const stops = generate(["-m", S, "-p", "", "-n", "510", "--verbose"]).stderr;
    assert.match(stops, /sampling: greedy/);
    assert.match(stops, /stopped: end-of-sequence token/);
  },
);

test("--show-prompt prints the rendered chat prompt and its token ids", { skip: qwen3.skip }, () => {
  const args = ["-m", qwen3.path, "-p", "hi", "--chat", "--system", "be brief", "--show-prompt", "-n", "0"];
  const json = generateJson(args);
  const { prompt = "", promptIds = [] } = json;
  assert.match(prompt, /<\|im_start\|>system\nbe brief<\|im_end\|>\n<\|im_start\|>user\nhi<\|im_end\|>\n<\|im_start\|>assistant\n/);
  assert.deepEqual(promptIds, Tokenizer.fromDir(qwen3.path).encode(prompt, { addSpecialTokens: false }));
  assert.equal(promptIds.length, json.promptTokens);
  const r = generate(args);
  assert.equal(r.stdout, "\n", "stdout keeps only the generated text");
  assert.equal(r.stderr, `tiny-llm: prompt, ${promptIds.length} tokens:\n${prompt}tiny-llm: prompt ids: ${promptIds.join(" ")}\n`);
});

test("the penalties from the command line reach the sampler and change greedy text", { skip: stories.skip }, () => {
  const plain = generateJson(["-m", S, "-p", "Once", "-n", "60"]);
  for (const [flag, key, value] of [
    ["--repetition-penalty", "repetitionPenalty", 1.8],
    ["--frequency-penalty", "frequencyPenalty", 2],
    ["--presence-penalty", "presencePenalty", 2],
  ] as const) {
    const out = generateJson(["-m", S, "-p", "Once", "-n", "60", flag, String(value)]);
    assert.equal(out.sampling[key], value, flag);
    assert.notEqual(out.text, plain.text, `${flag} changes the text`);
  }
});

test(
  "generation_config.json's repetition_penalty applies as --repetition-penalty would, greedy too, and the flag replaces it",
  { skip: stories.skip },
  () => {
    const dir = join(mkdtempSync(join(tmpdir(), "tiny-llm-penalty-")), "model");
    cpSync(S, dir, { recursive: true });
    writeFileSync(join(dir, "generation_config.json"), JSON.stringify({ eos_token_id: [1, 2], do_sample: false, repetition_penalty: 1.3 }));
    const args = ["-p", "", "-n", "64"];
    const fromFile = generate(["-m", dir, ...args, "--verbose"]);
    assert.match(
      fromFile.stderr,
      /sampling: greedy, repetition penalty 1\.3 \(temperature, repetition penalty from generation_config\.json\)\n/,
    );
    assert.equal(fromFile.stdout, generate(["-m", S, ...args, "--repetition-penalty", "1.3"]).stdout);
    const plain = generate(["-m", S, ...args]).stdout;
    assert.notEqual(fromFile.stdout, plain, "the penalty changes this story");
    assert.equal(generate(["-m", dir, ...args, "--repetition-penalty", "1"]).stdout, plain);
  },
);
