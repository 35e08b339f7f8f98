/**
 * Repo ids resolved through the Hugging Face cache and the real download code, against a hub on
 * 127.0.0.1 (test/support/fake-hub.ts) serving real model folders: the cache's layout as
 * huggingface-cli's, only the needed files, no request when the cache has them, resuming a cut
 * transfer, gated and missing repos, offline use, and picking a GGUF file by quantization.
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { lstatSync, mkdirSync, mkdtempSync, readFileSync, readlinkSync, symlinkSync, writeFileSync } from "node:fs";
import { createServer, type AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, beforeEach, test } from "node:test";
import { loadModel, type LoadProgress } from "../src/api/load-model.js";
import { loadTokenizer } from "../src/generation/load-checkpoint.js";
import { downloadFiles } from "../src/hub/download.js";
import { repoCacheDir } from "../src/hub/hf-cache.js";
import { resolveModel } from "../src/hub/resolve-model.js";
import { FakeHub, fakeCommit, folderFiles } from "./support/fake-hub.js";
import { sharedPath } from "./support/shared.js";

const stories = sharedPath("models", "stories260k-qwen2");
const storiesGguf = sharedPath("golden", "stories260k-qwen2.f32.gguf");
const skip = stories.skip || storiesGguf.skip;
const REPO = "test-org/stories260k-qwen2";
const sha256 = (bytes: Uint8Array): string => createHash("sha256").update(bytes).digest("hex");

let hub: FakeHub;
let cache: string;
let folder: Map<string, Uint8Array>;

before(async () => {
  hub = await new FakeHub().start();
  process.env.HF_ENDPOINT = hub.url;
  if (skip) return;
  folder = folderFiles(stories.path);
  // What many repos hold besides the model: other weight formats, a README, git's attributes.
  const extras: [string, Uint8Array][] = [
    ["pytorch_model.bin", new Uint8Array(4096).fill(7)],
    ["onnx/model.onnx", new Uint8Array(2048).fill(9)],
    ["README.md", new TextEncoder().encode("# stories260k\n")],
    [".gitattributes", new TextEncoder().encode("*.safetensors filter=lfs\n")],
  ];
  hub.repos.set(REPO, { files: new Map([...folder, ...extras]), commit: fakeCommit(REPO) });
  const gguf = new Uint8Array(readFileSync(storiesGguf.path));
  hub.repos.set("test-org/stories-GGUF", {
    commit: fakeCommit("gguf"),
    files: new Map([
      ["stories260k-F32.gguf", gguf],
      ["stories260k-Q4_K_M.gguf", gguf.subarray(0, 1000)],
      ["stories260k-q8_0-00001-of-00002.gguf", gguf.subarray(0, 500)],
      ["stories260k-q8_0-00002-of-00002.gguf", gguf.subarray(500, 900)],
      ["README.md", new TextEncoder().encode("GGUF files\n")],
    ]),
  });
  hub.repos.set("test-org/gated", { files: folder, commit: fakeCommit("gated"), token: "hf_right" });
});

after(() => hub.close());

beforeEach(() => {
  cache = mkdtempSync(join(tmpdir(), "tiny-llm-hf-cache-"));
  process.env.HF_HUB_CACHE = cache;
  delete process.env.HF_TOKEN;
  delete process.env.HF_HUB_OFFLINE;
  hub.requests.length = 0;
});

test("a download lands in the cache as huggingface-cli lays it out: blobs, snapshot links, refs/main", { skip }, async () => {
  const path = await resolveModel(REPO);
  const repoDir = join(cache, "models--test-org--stories260k-qwen2");
  const commit = fakeCommit(REPO);
  assert.equal(path, join(repoDir, "snapshots", commit));
  assert.equal(readFileSync(join(repoDir, "refs", "main"), "utf8"), commit);
  for (const [file, bytes] of folder) {
    const link = join(path, file);
    assert.ok(lstatSync(link).isSymbolicLink(), `${file} is a link`);
    const target = readlinkSync(link);
    assert.match(target, /^\.\.\/\.\.\/blobs\/[0-9a-f]{40,64}$/);
    // LFS files are named by their SHA-256, the others by their git blob id, as the hub's ETags say.
    if (file.endsWith(".safetensors")) assert.equal(target, `../../blobs/${sha256(bytes)}`);
    assert.deepEqual(new Uint8Array(readFileSync(link)), bytes, `${file} has the served bytes`);
  }
  assert.equal(loadTokenizer(path).tokenizer.vocabSize, 512);
});

test("only the files the model needs are fetched: no .bin, ONNX or README", { skip }, async () => {
  await resolveModel(REPO);
  const fetched = new Set(hub.requests.filter((r) => r.path.includes("/resolve/")).map((r) => r.path.split("/").slice(5).join("/")));
  assert.deepEqual([...fetched].sort(), [...folder.keys()].sort());
  assert.ok(!hub.paths().some((p) => /pytorch_model|onnx|README|gitattributes/.test(p)), hub.paths().join("\n"));
});

test("a cache laid out by huggingface-cli is used with no request at all", { skip }, async () => {
  // Blobs named by content, relative snapshot links, a ref: made here by hand, not by our code.
  const repoDir = join(cache, "models--test-org--stories260k-qwen2");
  const commit = "0123456789abcdef0123456789abcdef01234567";
  mkdirSync(join(repoDir, "blobs"), { recursive: true });
  mkdirSync(join(repoDir, "snapshots", commit), { recursive: true });
  mkdirSync(join(repoDir, "refs"));
  for (const [file, bytes] of folder) {
    writeFileSync(join(repoDir, "blobs", sha256(bytes)), bytes);
    symlinkSync(`../../blobs/${sha256(bytes)}`, join(repoDir, "snapshots", commit, file));
  }
  writeFileSync(join(repoDir, "refs", "main"), commit);
  assert.equal(await resolveModel(REPO), join(repoDir, "snapshots", commit));
  assert.deepEqual(hub.paths(), []);
  // Ours are reused the same way: a second resolve after a download asks nothing either.
  await resolveModel("test-org/stories-GGUF:F32");
  const seen = hub.requests.length;
  await resolveModel("test-org/stories-GGUF:f32");
  assert.equal(hub.requests.length, seen);
});

test("a transfer cut off midway resumes from where it stopped, and the blob is byte-identical", { skip }, async () => {
  const weights = folder.get("model.safetensors") as Uint8Array;
  const oid = sha256(weights);
  hub.cutAfter.set(oid, 300_000);
  const path = await resolveModel(REPO);
  const transfers = hub.requests.filter((r) => r.path === `/cdn/${oid}` && r.method === "GET");
  assert.deepEqual(
    transfers.map((r) => r.range),
    [undefined, "bytes=300000-"],
  );
  assert.deepEqual(new Uint8Array(readFileSync(join(path, "model.safetensors"))), weights);

  // Across runs too: a partial blob left by an earlier process is taken up with a Range request.
  const cache2 = mkdtempSync(join(tmpdir(), "tiny-llm-hf-cache-"));
  process.env.HF_HUB_CACHE = cache2;
  const blobs = join(repoCacheDir(REPO, cache2), "blobs");
  mkdirSync(blobs, { recursive: true });
  writeFileSync(join(blobs, `${oid}.incomplete`), weights.subarray(0, 123_456));
  hub.requests.length = 0;
  const again = await resolveModel(REPO);
  assert.deepEqual(
    hub.requests.filter((r) => r.path === `/cdn/${oid}` && r.method === "GET").map((r) => r.range),
    ["bytes=123456-"],
  );
  assert.deepEqual(new Uint8Array(readFileSync(join(again, "model.safetensors"))), weights);
});

test("a gated repo without HF_TOKEN or with a wrong one is a one-line error naming HF_TOKEN; the right one works", { skip }, async () => {
  await assert.rejects(resolveModel("test-org/gated"), (err: Error) => {
    assert.match(err.message, /^test-org\/gated file \S+ needs access \(HTTP 401\): HF_TOKEN is not set; set HF_TOKEN to a token/);
    assert.doesNotMatch(err.message, /\n/);
    return true;
  });
  process.env.HF_TOKEN = "hf_wrong";
  await assert.rejects(resolveModel("test-org/gated"), /needs access \(HTTP 401\): the token in HF_TOKEN was refused/);
  process.env.HF_TOKEN = "hf_right";
  hub.requests.length = 0;
  const path = await resolveModel("test-org/gated");
  assert.equal(loadTokenizer(path).tokenizer.vocabSize, 512);
  assert.ok(hub.requests.some((r) => r.path.includes("/resolve/") && r.authorization === "Bearer hf_right"));
});

test("a missing repo, revision or file is a 404 that says what was not found", { skip }, async () => {
  await assert.rejects(
    resolveModel("test-org/no-such-repo"),
    /^HubError: test-org\/no-such-repo was not found on http:\/\/127\.0\.0\.1:\d+ \(HTTP 404\)/,
  );
  await assert.rejects(
    resolveModel(REPO, { revision: "v9" }),
    /test-org\/stories260k-qwen2 at revision v9 was not found on .* \(HTTP 404\); check the name and --revision/,
  );
  await assert.rejects(
    downloadFiles(repoCacheDir(REPO), REPO, fakeCommit(REPO), ["no-such-file.json"]),
    /test-org\/stories260k-qwen2 file no-such-file\.json was not found .*\(HTTP 404\)/,
  );
});

test("offline, a cached model is used and a missing one is one line saying how to pass a local model", { skip }, async () => {
  process.env.HF_HUB_OFFLINE = "1";
  await assert.rejects(resolveModel(REPO), (err: Error) => {
    assert.match(err.message, /^test-org\/stories260k-qwen2 is not in the Hugging Face cache \(.*\) and downloads are off/);
    assert.match(err.message, /pass a local checkpoint folder or \.gguf file instead: --model \.\/my-model or --model model\.gguf$/);
    return true;
  });
  await assert.rejects(resolveModel(REPO, { offline: false }), /downloads are off/, "HF_HUB_OFFLINE holds over the option's default");
  delete process.env.HF_HUB_OFFLINE;
  await assert.rejects(resolveModel(REPO, { offline: true }), /downloads are off/);
  assert.deepEqual(hub.paths(), []);
  const path = await resolveModel(REPO);
  hub.requests.length = 0;
  assert.equal(await resolveModel(REPO, { offline: true }), path);
  assert.deepEqual(hub.paths(), []);
});

test("a hub that cannot be reached is one line: unreachable, not cached, and how to pass a local model", { skip }, async () => {
  // A port that was just free: nothing listens there.
  const closed = createServer();
  await new Promise<void>((resolve) => closed.listen(0, "127.0.0.1", resolve));
  const port = (closed.address() as AddressInfo).port;
  await new Promise((resolve) => closed.close(resolve));
  process.env.HF_ENDPOINT = `http://127.0.0.1:${port}`;
  try {
    await assert.rejects(
      resolveModel(REPO),
      /^HubError: cannot download test-org\/stories260k-qwen2: http:\/\/127\.0\.0\.1:\d+ is unreachable \(ECONNREFUSED\) and the model is not in the Hugging Face cache .*--model \.\/my-model/,
    );
  } finally {
    process.env.HF_ENDPOINT = hub.url;
  }
});

test(
  "org/repo:QUANT fetches the one GGUF file of that quantization, all parts of a split one, or lists those there are",
  { skip },
  async () => {
    const repoDir = repoCacheDir("test-org/stories-GGUF");
    const snapshot = join(repoDir, "snapshots", fakeCommit("gguf"));
    assert.equal(await resolveModel("test-org/stories-GGUF:f32"), join(snapshot, "stories260k-F32.gguf"));
    assert.ok(
      hub.paths().every((p) => !p.includes("/resolve/") || p.endsWith("stories260k-F32.gguf")),
      hub.paths().join("\n"),
    );
    // No quantization named: Q4_K_M, as llama-server -hf picks.
    assert.equal(await resolveModel("test-org/stories-GGUF"), join(snapshot, "stories260k-Q4_K_M.gguf"));
    hub.requests.length = 0;
    assert.equal(await resolveModel("test-org/stories-GGUF:Q8_0"), join(snapshot, "stories260k-q8_0-00001-of-00002.gguf"));
    const parts = hub.paths().filter((p) => p.startsWith("HEAD ") && p.includes("/resolve/"));
    assert.deepEqual(parts, [
      `HEAD /test-org/stories-GGUF/resolve/${fakeCommit("gguf")}/stories260k-q8_0-00001-of-00002.gguf`,
      `HEAD /test-org/stories-GGUF/resolve/${fakeCommit("gguf")}/stories260k-q8_0-00002-of-00002.gguf`,
    ]);
    await assert.rejects(
      resolveModel("test-org/stories-GGUF:Q5_K_S"),
      /^ModelSpecError: test-org\/stories-GGUF has no GGUF file of quantization Q5_K_S; it has F32, Q4_K_M, Q8_0$/,
    );
  },
);

test(
  "loadModel takes a repo id, reporting the download's bytes as a download phase, and generates the folder's text",
  { skip },
  async () => {
    const phases: LoadProgress[] = [];
    const engine = await loadModel(REPO, { kvCacheSize: "1024t", onProgress: (p) => phases.push(p) });
    try {
      const downloads = phases.filter((p) => p.phase === "download");
      assert.ok(downloads.length > 0);
      const total = [...folder.values()].reduce((n, b) => n + b.byteLength, 0);
      assert.ok(downloads.every((p) => p.repo === REPO && p.totalBytes === total && p.bytes <= total));
      assert.equal(downloads.at(-1)?.bytes, total);
      assert.deepEqual(
        phases.filter((p) => p.phase !== "download").map((p) => p.phase),
        ["tokenizer", "weights", "ready"],
      );
      const local = await loadModel(stories.path, { kvCacheSize: "1024t" });
      try {
        const [a, b] = await Promise.all(
          [engine, local].map(async (e) => (await e.generate("Once", { maxTokens: 40, temperature: 0 }).result).text),
        );
        assert.equal(a, b);
      } finally {
        await local.close();
      }
    } finally {
      await engine.close();
    }
  },
);
