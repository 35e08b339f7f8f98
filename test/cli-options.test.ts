/**
 * The command line as every command parses it: one-line usage errors, values that begin with a
 * dash, short flags, --threads against the cores, and the help and version.
 */
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { availableParallelism, tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { runCli } from "./support/cli.js";
import { projectRoot, sharedPath } from "./support/shared.js";

const stories = sharedPath("models", "stories260k-qwen2");
const S = stories.path;

/** Asserts exit 1, nothing on stdout and exactly one `tiny-llm: error:` line matching `pattern`. */
function assertUsageError(args: string[], pattern: RegExp): void {
  const r = runCli(args);
  const what = args.join(" ");
  assert.equal(r.status, 1, `${what}: ${r.stderr}`);
  assert.equal(r.stdout, "", what);
  const lines = r.stderr.split("\n");
  assert.deepEqual([lines.length, lines[1]], [2, ""], `one line for ${what}: ${r.stderr}`);
  assert.match(lines[0], /^tiny-llm: error: /, what);
  assert.match(lines[0], pattern, what);
  assert.doesNotMatch(lines[0], /ambiguous|Did you forget/, what);
}

test("usage mistakes in any command are one line each, exit 1, and name the option", { skip: stories.skip }, () => {
  const file = join(mkdtempSync(join(tmpdir(), "tiny-llm-cli-")), "prompt.txt");
  writeFileSync(file, "Once");
  const cases: [string[], RegExp][] = [
    [["generate", "-m", S, "-p", "x", "--temperature", "-1"], /--temperature must be at least 0, got -1$/],
    [["generate", "-m", S, "-p", "x", "--seed", "-1"], /--seed must be 0 to 4294967295, got -1 \(without --seed a seed is drawn/],
    [["generate", "-m", S, "-p", "x", "--seed", "1.5"], /--seed expects a whole number, got "1\.5"/],
    [["generate", "-m", S, "-p", "x", "-n", "-1"], /--max-tokens must be at least 0, got -1/],
    [
      ["generate", "-m", S, "-p", "x", "--max-tokns", "3"],
      /unknown option --max-tokns \(did you mean --max-tokens\?\); run tiny-llm generate --help/,
    ],
    [["generate", "-m", S, "-p"], /^tiny-llm: error: -p needs a value; run tiny-llm generate --help for the options$/],
    [["generate", "-m", S, "-p", "--chat"], /-p needs a value \(to pass "--chat" itself, write --prompt=--chat\)/],
    [["generate", "-m", S, "-p", "x", "stray"], /unexpected argument "stray"/],
    [["generate", "-m", S, "-p", "x", "--chat=yes"], /--chat takes no value/],
    [["generate", "-m", S, "-p", "x", "--threads", "3000000000"], /--threads must be at most 1024, got 3000000000/],
    [["generate", "-m", S, "-p", "x", "-t", "0"], /--threads must be at least 1, got 0/],
    [["generate", "-m", S, "-p", "x", "--top-p", "0"], /--top-p must be in \(0, 1\], got 0/],
    [["generate", "-m", S, "-p", "x", "--presence-penalty", "3"], /--presence-penalty must be at most 2, got 3/],
    [["generate", "-m", S, "-p", "x", "--repetition-penalty", "0"], /--repetition-penalty must be more than 0/],
    [["generate", "-m", S, "-p", "x", "--logprobs", "2"], /--logprobs needs --json/],
    [["generate", "-m", S, "-p", "x", "--json", "--logprobs", "21"], /--logprobs must be at most 20/],
    [["generate", "-m", S, "-p", "x", ...["a", "b", "c", "d", "e"].flatMap((s) => ["--stop", s])], /at most 4 --stop strings, got 5/],
    [["generate", "-m", S, "-p", "x", "--prompt-file", file], /give --prompt or --prompt-file, not both/],
    [["generate", "-m", S, "--prompt-file", join(projectRoot, "no-such-prompt.txt")], /--prompt-file .*no-such-prompt\.txt does not exist/],
    [["generate", "-m", S], /--prompt TEXT is required \(--prompt - reads stdin/],
    [["bench", "-m", S, "--gen-tokens", "-5"], /--gen-tokens must be at least 1, got -5/],
    [["perplexity", "-m", S, "--file", file, "--ctx", "-3"], /--ctx must be at least 4, got -3/],
    [["quantize", "-m", S, "--bits", "4", "--out"], /--out needs a value; run tiny-llm quantize --help/],
    [["serve", "-m", S, "--port", "-80"], /--port must be at least 0, got -80/],
    [["generatee"], /unknown command "generatee" \(did you mean generate\?\); run tiny-llm --help for the list/],
  ];
  for (const [args, pattern] of cases) assertUsageError(args, pattern);
});

/** The JSON object `generate --json` prints. */
function generateJson(args: string[]): Record<string, unknown> {
  const r = runCli(["generate", "-m", S, "--json", ...args]);
  assert.equal(r.status, 0, r.stderr);
  return JSON.parse(r.stdout) as Record<string, unknown>;
}

test("a prompt may begin with a dash, given separately or after =", { skip: stories.skip }, () => {
  for (const args of [["--prompt", "- item"], ["--prompt=- item"], ["-p", "- item"]]) {
    const out = generateJson([...args, "-n", "0", "--show-prompt"]);
    assert.equal(out.prompt, "- item", args.join(" "));
  }
  assert.equal(generateJson(["-p", "-x", "-n", "0", "--show-prompt"]).prompt, "-x");
  assert.equal(generateJson(["-p", "-1", "-n", "0", "--show-prompt"]).prompt, "-1");
});

test("-m, -p, -n and -t are --model, --prompt, --max-tokens and --threads", { skip: stories.skip }, () => {
  const short = generateJson(["-p", "Once", "-n", "7", "-t", "1"]);
  const r = runCli(["generate", "--model", S, "--prompt", "Once", "--max-tokens", "7", "--threads", "1", "--json"]);
  const long = JSON.parse(r.stdout) as Record<string, unknown>;
  assert.equal(short.text, long.text);
  assert.deepEqual([short.completionTokens, short.threads], [7, 1]);
});

test("--threads above the cores here is cut to them, with a one-line notice", { skip: stories.skip }, () => {
  const cores = availableParallelism();
  const r = runCli(["generate", "-m", S, "-p", "Once", "-n", "2", "--threads", String(cores + 62), "--json"]);
  assert.equal(r.status, 0, r.stderr);
  assert.equal(r.stderr, `tiny-llm: --threads ${cores + 62} is more than the ${cores} cores here; using ${cores}\n`);
  const out = JSON.parse(r.stdout) as { backend: string; threads: number };
  if (out.backend === "native") assert.equal(out.threads, cores);
});

test("tiny-llm alone or with --help lists the commands briefly; tiny-llm CMD --help has the details; --version", () => {
  const bare = runCli([]);
  const help = runCli(["--help"]);
  assert.equal(bare.status, 0);
  assert.equal(bare.stdout, help.stdout);
  assert.equal(runCli(["-h"]).stdout, help.stdout);
  const lines = help.stdout.trimEnd().split("\n");
  assert.ok(lines.length <= 20, `a short list, not every command's options: ${lines.length} lines`);
  assert.doesNotMatch(help.stdout, /--temperature|--kv-cache-size|--group-size/);
  const commands = lines.filter((l) => /^ {2}[a-z]+ {2,}\S/.test(l)).map((l) => l.trim().split(/\s+/)[0]);
  for (const name of ["generate", "serve", "bench", "perplexity", "quantize"]) assert.ok(commands.includes(name), `${name} is listed`);
  for (const name of commands) {
    const r = runCli([name, "--help"]);
    assert.equal(r.status, 0, name);
    assert.match(r.stdout, new RegExp(`^Usage: tiny-llm ${name} `), name);
    assert.match(r.stdout, /-h, --help/, name);
    // --help wins over anything else on the line, even a mistake.
    assert.equal(runCli([name, "--bogus", "-h"]).stdout, r.stdout, name);
    assert.equal(runCli(["help", name]).stdout, r.stdout, name);
  }
  const generate = runCli(["generate", "--help"]).stdout;
  for (const flag of [
    "-m, --model",
    "-p, --prompt",
    "-n, --max-tokens",
    "-t, --threads",
    "--prompt-file",
    "--json",
    "--stop",
    "--show-prompt",
  ]) {
    assert.ok(generate.includes(flag), `generate --help has ${flag}`);
  }
  const { version } = JSON.parse(readFileSync(join(projectRoot, "package.json"), "utf8")) as { version: string };
  for (const flag of ["--version", "-V"]) {
    const r = runCli([flag]);
    assert.deepEqual([r.status, r.stdout, r.stderr], [0, `tiny-llm ${version}\n`, ""]);
  }
});
