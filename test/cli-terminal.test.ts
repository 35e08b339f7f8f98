/**
 * What the CLI shows on a terminal and keeps out of pipes: quantize's progress on a status line,
 * the loading line, colour only on a terminal and never with NO_COLOR; and an --out the system
 * will not create is an error, not a spin. A terminal is script(1)'s pseudo-terminal.
 */
/* eslint-disable no-control-regex -- terminal escapes are what these tests look for */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { existsSync, mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { cliPath, runCli } from "./support/cli.js";
import { sharedPath } from "./support/shared.js";

const stories = sharedPath("models", "stories260k-qwen2");
const gguf = sharedPath("golden", "stories260k-qwen2.f32.gguf");
const tmp = mkdtempSync(join(tmpdir(), "tiny-llm-terminal-"));
const hasScript = spawnSync("script", ["--version"]).status === 0;
const noScript = hasScript ? false : "script(1) from util-linux is not installed";

/** `tiny-llm ...args` on a pseudo-terminal: everything it wrote there (stdout and stderr), and its exit status. */
function onTerminal(args: string[], env: NodeJS.ProcessEnv = {}): { output: string; status: number | null } {
  const quoted = [process.execPath, cliPath, ...args].map((a) => `'${a.replace(/'/g, `'\\''`)}'`).join(" ");
  const r = spawnSync("script", ["-qec", quoted, "/dev/null"], {
    encoding: "utf8",
    timeout: 120_000,
    env: { ...process.env, TERM: "xterm", NO_COLOR: "", ...env },
  });
  return { output: r.stdout, status: r.status };
}

const ESCAPES = /\x1b\[|\r/;

test("quantize shows its progress on a terminal, and writes only its summary to a pipe", { skip: stories.skip || noScript }, () => {
  const tty = onTerminal(["quantize", "-m", stories.path, "--bits", "4", "--out", join(tmp, "tty")]);
  assert.equal(tty.status, 0, tty.output);
  const updates = [...tty.output.matchAll(/\r\x1b\[2K(?:\x1b\[2m)?quantizing to 4 bits: tensor (\d+) of (\d+)/g)];
  assert.ok(updates.length >= 1, tty.output);
  const last = updates[updates.length - 1];
  assert.equal(last[1], last[2], "the last update is the last tensor");
  // The status line is erased before the summary.
  assert.match(tty.output, /\r\x1b\[2Ktiny-llm: quantized \d+ matrices to 4 bits/);

  const piped = runCli(["quantize", "-m", stories.path, "--bits", "4", "--out", join(tmp, "piped")]);
  assert.equal(piped.status, 0, piped.stderr);
  assert.doesNotMatch(piped.stderr, ESCAPES);
  const lines = piped.stderr.trimEnd().split("\n");
  assert.match(lines[0], /^tiny-llm: quantized \d+ matrices to 4 bits \(group size 64\): [\d.]+ MB -> [\d.]+ MB in .*piped$/);
  assert.ok(
    lines.slice(1).every((l) => l.startsWith("tiny-llm: kept in float")),
    piped.stderr,
  );
});

test("generate shows a loading line on a terminal that is gone before the text", { skip: stories.skip || noScript }, () => {
  const tty = onTerminal(["generate", "-m", stories.path, "-p", "Once", "-n", "5"]);
  assert.equal(tty.status, 0, tty.output);
  assert.match(tty.output, new RegExp(`^\\r\\x1b\\[2K(\\x1b\\[2m)?loading ${stories.path}…(\\x1b\\[0m)?\\r\\x1b\\[2K upon a time`));
  const piped = runCli(["generate", "-m", stories.path, "-p", "Once", "-n", "5"]);
  assert.doesNotMatch(piped.stdout + piped.stderr, ESCAPES);
});

test("an error is red on a terminal, plain with NO_COLOR or in a pipe, and one line always", { skip: noScript }, () => {
  const args = ["generate", "-m", join(tmp, "no-such-model"), "-p", "x"];
  const red = onTerminal(args);
  assert.equal(red.status, 1);
  assert.match(red.output, /^tiny-llm: \x1b\[31merror\x1b\[0m: model folder or file .*no-such-model does not exist; .*\r\n$/);
  const plain = onTerminal(args, { NO_COLOR: "1" });
  assert.equal(plain.status, 1);
  assert.match(plain.output, /^tiny-llm: error: model folder or file .*no-such-model does not exist; [^\x1b\r\n]*\r\n$/);
  assert.match(runCli(args).stderr, /^tiny-llm: error: [^\x1b\r\n]*\n$/);
});

test(
  "quantize --out where the system refuses a folder (/proc) is a one-line error, not a spin",
  { skip: stories.skip || !existsSync("/proc/self") },
  () => {
    for (const out of ["/proc/tiny-llm-out", "/proc/tiny-llm-out/deeper"]) {
      const r = runCli(["quantize", "-m", stories.path, "--bits", "4", "--out", out], { timeout: 60_000 });
      assert.equal(r.status, 1, r.stderr);
      assert.equal(r.stderr, "tiny-llm: error: cannot create the folder /proc/tiny-llm-out (ENOENT); choose a place you can write to\n");
    }
    if (gguf.skip) return;
    const r = runCli(["quantize", "-m", gguf.path, "--format", "gguf", "--type", "q8_0", "--out", "/proc/tiny-llm.gguf"], {
      timeout: 60_000,
    });
    assert.equal(r.status, 1, r.stderr);
    assert.equal(r.stderr, "tiny-llm: error: cannot write --out /proc/tiny-llm.gguf (ENOENT); choose a place you can write to\n");
  },
);
