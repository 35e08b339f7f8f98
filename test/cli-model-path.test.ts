/**
 * --model paths that are not a model: one file of a checkpoint folder, a folder without
 * config.json, and a tokenizer from another model with more tokens than the model has rows.
 * Each is one line that says what to pass instead, and is found before any weights are read.
 */
import assert from "node:assert/strict";
import { copyFileSync, mkdirSync, mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { loadTokenizer } from "../src/generation/load-checkpoint.js";
import { Tokenizer } from "../src/tokenizer/tokenizer.js";
import { runCli } from "./support/cli.js";
import { sharedPath } from "./support/shared.js";

const stories = sharedPath("models", "stories260k-qwen2");
const random = sharedPath("models", "tiny-random-qwen2");
const tmp = mkdtempSync(join(tmpdir(), "tiny-llm-model-path-"));

function oneLineError(args: string[]): string {
  const r = runCli(args);
  assert.equal(r.status, 1, `${args.join(" ")}: ${r.stderr}`);
  assert.equal(r.stdout, "");
  const lines = r.stderr.split("\n");
  assert.deepEqual([lines.length, lines[1]], [2, ""], r.stderr);
  assert.doesNotMatch(lines[0], /ENOENT|GGUF magic|not a GGUF/);
  return lines[0];
}

test("a file of a checkpoint folder given as --model says to pass the folder", { skip: stories.skip }, () => {
  for (const file of ["model.safetensors", "config.json", "tokenizer.json"]) {
    const path = join(stories.path, file);
    for (const command of [["generate", "-p", "x"], ["bench"], ["quantize", "--bits", "4", "--out", join(tmp, "q")]]) {
      const line = oneLineError([command[0], "-m", path, ...command.slice(1)]);
      assert.equal(line, `tiny-llm: error: ${path} is one file of a checkpoint; pass the folder that holds it: ${stories.path}`);
    }
  }
  // A lone .safetensors file, with no config.json beside it, is still not a GGUF file.
  const lone = join(tmp, "lone");
  mkdirSync(lone);
  copyFileSync(join(stories.path, "model.safetensors"), join(lone, "weights.safetensors"));
  assert.match(
    oneLineError(["generate", "-m", join(lone, "weights.safetensors"), "-p", "x"]),
    /is one file of a checkpoint; pass the folder/,
  );
});

test("a folder without config.json is not a model folder, and the message says what one holds", { skip: stories.skip }, () => {
  const tokenizerOnly = join(tmp, "tokenizer-only");
  mkdirSync(tokenizerOnly);
  for (const file of ["tokenizer.json", "tokenizer_config.json"]) copyFileSync(join(stories.path, file), join(tokenizerOnly, file));
  const empty = join(tmp, "empty");
  mkdirSync(empty);
  for (const dir of [tokenizerOnly, empty]) {
    for (const command of [
      ["generate", "-p", "x"],
      ["quantize", "--bits", "4", "--out", join(tmp, "q2")],
    ]) {
      const line = oneLineError([command[0], "-m", dir, ...command.slice(1)]);
      assert.match(line, new RegExp(`^tiny-llm: error: ${dir} is not a model folder: it has no config\\.json \\(`));
      assert.match(line, /holds config\.json, model\.safetensors .*tokenizer\.json and tokenizer_config\.json\)$/);
    }
  }
  // The tokenizer is not blamed, and neither is a missing file read by a server.
  assert.throws(() => loadTokenizer(tokenizerOnly), /is not a model folder/);
  const withGguf = join(tmp, "with-gguf");
  mkdirSync(withGguf);
  writeFileSync(join(withGguf, "model-q4_k.gguf"), "");
  assert.match(
    oneLineError(["generate", "-m", withGguf, "-p", "x"]),
    /; to run the GGUF file in it, pass that file: .*with-gguf\/model-q4_k\.gguf$/,
  );
});

test(
  "a tokenizer with more tokens than the model's vocabulary fails at load, naming both sizes",
  { skip: stories.skip || random.skip },
  () => {
    // stories260k's 512-row model with tiny-random-qwen2's larger tokenizer, and weights that are
    // not even a safetensors file: the mismatch is found before they are read.
    const dir = join(tmp, "mixed");
    mkdirSync(dir);
    for (const file of ["config.json", "generation_config.json"]) copyFileSync(join(stories.path, file), join(dir, file));
    for (const file of ["tokenizer.json", "tokenizer_config.json"]) copyFileSync(join(random.path, file), join(dir, file));
    writeFileSync(join(dir, "model.safetensors"), "not weights");
    const tokens = Tokenizer.fromDir(random.path).vocabSize;
    assert.ok(tokens > 512);
    const expected = `${dir}: the tokenizer has ${tokens} tokens but the model only 512 (vocab_size in config.json); tokenizer.json is from another model`;
    assert.ok(oneLineError(["generate", "-m", dir, "-p", "x"]).startsWith(`tiny-llm: error: ${expected}`));
    // The server loads the tokenizer on its own thread: the same check.
    assert.throws(
      () => loadTokenizer(dir),
      (err: Error) => err.message.startsWith(expected),
    );
    // A tokenizer smaller than the vocabulary (padded embeddings, as Qwen's) is fine.
    assert.equal(runCli(["generate", "-m", random.path, "-p", "x", "-n", "1"]).status, 0);
  },
);
