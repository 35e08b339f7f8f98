/**
 * The hub through the `tiny-llm` command, against a hub on 127.0.0.1: generate with a repo id
 * writes what it writes from the local folder (and llama.cpp's greedy text), pull, ls, rm and
 * info print what they should, and without network or cache the error is one line.
 */
/* eslint-disable no-control-regex -- terminal escapes are what the progress bar test looks for */
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync } from "node:fs";
import { createServer, type AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { spawn, spawnSync } from "node:child_process";
import { cliPath, runCliAsync } from "./support/cli.js";
import { FakeHub, fakeCommit, folderFiles } from "./support/fake-hub.js";
import { sharedPath } from "./support/shared.js";

const stories = sharedPath("models", "stories260k-qwen2");
const storiesGguf = sharedPath("golden", "stories260k-qwen2.f32.gguf");
const golden = sharedPath("golden", "stories260k.json");
const skip = stories.skip || storiesGguf.skip || golden.skip;
const REPO = "test-org/stories260k-qwen2";

let hub: FakeHub;
before(async () => {
  hub = await new FakeHub().start();
  if (skip) return;
  hub.repos.set(REPO, { files: folderFiles(stories.path), commit: fakeCommit(REPO) });
  hub.repos.set("test-org/stories-GGUF", {
    files: new Map([["stories260k-F32.gguf", new Uint8Array(readFileSync(storiesGguf.path))]]),
    commit: fakeCommit("gguf"),
  });
});
after(() => hub.close());

/** The environment of a run against the fake hub with its own empty cache. */
function hubEnv(cache = mkdtempSync(join(tmpdir(), "tiny-llm-hub-cli-"))): NodeJS.ProcessEnv {
  return { ...process.env, HF_ENDPOINT: hub.url, HF_HUB_CACHE: cache, HF_HUB_OFFLINE: "", HF_TOKEN: "", NO_COLOR: "1" };
}

test("generate --model org/repo writes what the local folder gives, llama.cpp's greedy text", { skip }, async () => {
  const env = hubEnv();
  const args = ["-p", "", "-n", "256", "--temperature", "0"];
  const fromHub = await runCliAsync(["generate", "-m", REPO, ...args], env);
  assert.equal(fromHub.status, 0, fromHub.stderr);
  assert.equal(fromHub.stderr, "", "no progress bar or notice in a pipe");
  const local = await runCliAsync(["generate", "-m", stories.path, ...args], env);
  assert.equal(fromHub.stdout, local.stdout);
  const expected = (JSON.parse(readFileSync(golden.path, "utf8")) as { qwen2: { greedy_text: string } }).qwen2.greedy_text;
  assert.equal(fromHub.stdout, expected + "\n");
  // Once cached, the next run asks the hub nothing.
  const seen = hub.requests.length;
  const again = await runCliAsync(["generate", "-m", REPO, ...args], env);
  assert.equal(again.stdout, expected + "\n");
  assert.equal(hub.requests.length, seen);
});

test("serve --model org/repo serves it under that name, answering as generate does from the folder", { skip }, async () => {
  const env = hubEnv();
  const child = spawn(process.execPath, [cliPath, "serve", "-m", REPO, "--port", "0"], { env, stdio: ["ignore", "pipe", "pipe"] });
  try {
    let stderr = "";
    child.stderr.setEncoding("utf8").on("data", (chunk: string) => (stderr += chunk));
    let stdout = "";
    child.stdout.setEncoding("utf8");
    const url = await new Promise<string>((resolve, reject) => {
      child.stdout.on("data", (chunk: string) => {
        stdout += chunk;
        const ready = /serving test-org\/stories260k-qwen2 at (http:\/\/127\.0\.0\.1:\d+)/.exec(stdout);
        if (ready) resolve(ready[1]);
      });
      child.on("exit", () => reject(new Error(`serve exited: ${stderr}`)));
    });
    const models = (await (await fetch(`${url}/v1/models`)).json()) as { data: { id: string }[] };
    assert.deepEqual(
      models.data.map((m) => m.id),
      [REPO],
    );
    const body = { prompt: "Once upon a time", max_tokens: 24, temperature: 0 };
    const res = await fetch(`${url}/v1/completions`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(body),
    });
    const text = ((await res.json()) as { choices: { text: string }[] }).choices[0].text;
    const local = await runCliAsync(["generate", "-m", stories.path, "-p", "Once upon a time", "-n", "24", "--temperature", "0"], env);
    // generate ends its text with a newline.
    assert.equal(text + "\n", local.stdout);
  } finally {
    child.kill("SIGTERM");
  }
});

test("pull downloads into the cache, ls lists it with size and format, rm deletes it", { skip }, async () => {
  const cache = mkdtempSync(join(tmpdir(), "tiny-llm-hub-cli-"));
  const env = hubEnv(cache);
  const snapshot = join(cache, "models--test-org--stories260k-qwen2", "snapshots", fakeCommit(REPO));
  const pulled = await runCliAsync(["pull", REPO], env);
  assert.equal(pulled.status, 0, pulled.stderr);
  assert.equal(pulled.stdout, `${REPO}: 5 files, 1.1 MB, downloaded (commit ${fakeCommit(REPO)})\n${snapshot}\n`);
  const twice = await runCliAsync(["pull", REPO], env);
  assert.match(twice.stdout, /: 5 files, 1\.1 MB, already in the cache/);
  const gguf = await runCliAsync(["pull", "test-org/stories-GGUF:F32"], env);
  assert.equal(gguf.status, 0, gguf.stderr);

  const ls = await runCliAsync(["ls"], env);
  assert.equal(ls.status, 0, ls.stderr);
  assert.deepEqual(ls.stdout.split("\n"), [
    "REPO                        SIZE    FORMATS      REFS",
    "test-org/stories-GGUF       1.1 MB  gguf F32     main",
    "test-org/stories260k-qwen2  1.1 MB  safetensors  main",
    "",
  ]);
  const json = JSON.parse((await runCliAsync(["ls", "--json"], env)).stdout) as {
    cache: string;
    repos: { repo: string; bytes: number; formats: string[]; snapshots: { commit: string; refs: string[]; files: string[] }[] }[];
  };
  assert.equal(json.cache, cache);
  const repo = json.repos.find((r) => r.repo === REPO);
  assert.deepEqual(repo?.snapshots, [
    {
      commit: fakeCommit(REPO),
      refs: ["main"],
      files: ["config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"],
    },
  ]);
  assert.equal(
    repo?.bytes,
    [...folderFiles(stories.path).values()].reduce((n, b) => n + b.byteLength, 0),
  );

  const rm = await runCliAsync(["rm", REPO], env);
  assert.equal(rm.stdout, `removed ${REPO} (1.1 MB) from ${cache}\n`);
  assert.doesNotMatch((await runCliAsync(["ls"], env)).stdout, /stories260k-qwen2/);
  const again = await runCliAsync(["rm", REPO], env);
  assert.equal(again.status, 1);
  assert.equal(again.stderr, `tiny-llm: error: ${REPO} is not in the Hugging Face cache (${cache}); tiny-llm ls lists what is\n`);
});

test("info describes a repo, a folder and a GGUF file: parameters, weights, context, memory at --ctx", { skip }, async () => {
  const env = hubEnv();
  const fromRepo = await runCliAsync(["info", "-m", REPO, "--ctx", "256", "--json"], env);
  assert.equal(fromRepo.status, 0, fromRepo.stderr);
  const info = JSON.parse(fromRepo.stdout) as Record<string, unknown>;
  // From config.json's shapes: the tied embedding, and per layer two norms, q (with bias), k and v
  // (with biases), o, and the MLP's three matrices of 172; then the final norm.
  const [V, E, L, H, K, D, I] = [512, 64, 5, 8, 4, 8, 172];
  const parameters = V * E + L * (2 * E + E * H * D + H * D + 2 * (E * K * D + K * D) + H * D * E + 3 * E * I) + E;
  // K and V take 2·layers·KV heads·head dim values per token, 2 bytes each in f16.
  const kvBytes = 2 * L * K * D * 2 * 256;
  assert.deepEqual(
    { ...info, path: undefined },
    {
      model: REPO,
      path: undefined,
      format: "safetensors",
      architecture: "qwen2",
      parameters,
      weightTypes: { F32: parameters },
      layers: 5,
      hiddenSize: 64,
      heads: 8,
      kvHeads: 4,
      headDim: 8,
      contextLength: 512,
      vocabSize: 512,
      chatTemplate: false,
      ctx: 256,
      kvDtype: "f16",
      weightBytes: parameters * 4,
      kvBytes,
      memoryBytes: parameters * 4 + kvBytes,
    },
  );
  // The folder and the GGUF file hold the same model: the same count (the GGUF's has the same tensors).
  const folder = JSON.parse((await runCliAsync(["info", "-m", stories.path, "--json"], env)).stdout) as Record<string, unknown>;
  assert.equal(folder.parameters, parameters);
  const gguf = JSON.parse((await runCliAsync(["info", "-m", storiesGguf.path, "--json", "--kv-dtype", "f32"], env)).stdout) as Record<
    string,
    unknown
  >;
  assert.deepEqual([gguf.format, gguf.parameters, gguf.kvBytes], ["gguf", parameters, 2 * L * K * D * 4 * 512]);
  const table = await runCliAsync(["info", "-m", stories.path], env);
  assert.match(table.stdout, /^model {9}.*stories260k-qwen2\nformat {8}safetensors\narchitecture {2}qwen2\nparameters {4}0\.26 M\n/);
  assert.match(table.stdout, /\nmemory {8}1\.4 MB at 512 tokens: weights 1\.0 MB \+ KV cache 0\.3 MB \(f16\)\n$/);
});

test("an MLX-quantized folder counts its packed matrices' values: the parameters of the float model", { skip }, async () => {
  const out = join(mkdtempSync(join(tmpdir(), "tiny-llm-hub-cli-")), "q4");
  const quantized = await runCliAsync(["quantize", "-m", stories.path, "--bits", "4", "--out", out], hubEnv());
  assert.equal(quantized.status, 0, quantized.stderr);
  const float = JSON.parse((await runCliAsync(["info", "-m", stories.path, "--json"], hubEnv())).stdout) as { parameters: number };
  const q4 = JSON.parse((await runCliAsync(["info", "-m", out, "--json"], hubEnv())).stdout) as {
    format: string;
    parameters: number;
    weightTypes: Record<string, number>;
    weightBytes: number;
  };
  assert.equal(q4.format, "mlx");
  assert.equal(q4.parameters, float.parameters);
  assert.ok(
    Object.keys(q4.weightTypes).some((type) => /^4-bit affine \(group \d+\)$/.test(type)),
    JSON.stringify(q4.weightTypes),
  );
  assert.ok(q4.weightBytes < float.parameters * 4 * 0.5, "4-bit weights take well under half the f32 bytes");
});

/** `tiny-llm ...args` on a terminal (script(1)), not blocking this process, whose fake hub must answer. */
async function onTerminal(args: string[], env: NodeJS.ProcessEnv): Promise<string> {
  const quoted = [process.execPath, cliPath, ...args].map((a) => `'${a.replace(/'/g, `'\\''`)}'`).join(" ");
  // Wide enough for the bar beside the figures.
  const child = spawn("script", ["-qec", `stty cols 120; ${quoted}`, "/dev/null"], {
    env: { ...env, TERM: "xterm" },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let output = "";
  child.stdout.setEncoding("utf8").on("data", (chunk: string) => (output += chunk));
  const status = await new Promise<number | null>((resolve) => child.on("close", resolve));
  assert.equal(status, 0, output);
  return output;
}

const noScript = spawnSync("script", ["--version"]).error ? "script(1) from util-linux is not installed" : false;

test(
  "a download shows a progress bar on a terminal (dim, or plain with NO_COLOR), erased before the output",
  { skip: skip || noScript },
  async () => {
    const bar = (dim: string): RegExp =>
      new RegExp(
        `\\r\\x1b\\[2K${dim}downloading test-org/stories260k-qwen2 \\[[#-]{30}\\] [\\d.]+ MB / 1\\.1 MB  [\\d.]+ MB/s  ETA \\S+(?:\\x1b|\\r)`,
      );
    const coloured = await onTerminal(["pull", REPO], { ...hubEnv(), NO_COLOR: "" });
    assert.match(coloured, bar("\\x1b\\[2m"));
    assert.match(coloured, /\r\x1b\[2Ktest-org\/stories260k-qwen2: 5 files, 1\.1 MB, downloaded/);
    const plain = await onTerminal(["pull", REPO], hubEnv());
    assert.match(plain, bar(""));
    assert.doesNotMatch(plain, /\x1b\[2m/);
  },
);

test("without network and cache, and offline, the default model's error is one line saying how to pass a local model", async () => {
  const env = { ...hubEnv(), HF_HUB_OFFLINE: "1" };
  for (const args of [["generate", "-p", "hi"], ["info"], ["serve"], ["bench"]]) {
    const r = await runCliAsync(args, env);
    assert.equal(r.status, 1, r.stderr);
    assert.equal(r.stdout, "");
    assert.match(
      r.stderr,
      /^tiny-llm: error: Qwen\/Qwen2\.5-0\.5B-Instruct is not in the Hugging Face cache \(.*\) and downloads are off .*--model \.\/my-model or --model model\.gguf\n$/,
    );
  }
  // A port that was just free: nothing listens there.
  const closed = createServer();
  await new Promise<void>((resolve) => closed.listen(0, "127.0.0.1", resolve));
  const port = (closed.address() as AddressInfo).port;
  await new Promise((resolve) => closed.close(resolve));
  const unreachable = await runCliAsync(["generate", "-p", "hi"], { ...hubEnv(), HF_ENDPOINT: `http://127.0.0.1:${port}` });
  assert.match(
    unreachable.stderr,
    /^tiny-llm: error: cannot download Qwen\/Qwen2\.5-0\.5B-Instruct: http:\/\/127\.0\.0\.1:\d+ is unreachable \(ECONNREFUSED\)[^\n]*--model \.\/my-model or --model model\.gguf\n$/,
  );
});
