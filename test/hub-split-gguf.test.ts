/**
 * GGUF files split by llama.cpp's gguf-split (`name-00001-of-00002.gguf`, …): each part a GGUF
 * file with split.no, split.count and split.tensors.count, the first with all the metadata, the
 * tensors spread over the parts. Made here from a real GGUF file, they load to the same model as
 * the single file, and a repo of them is fetched part by part and runs the same.
 */
import assert from "node:assert/strict";
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { loadCheckpoint } from "../src/generation/load-checkpoint.js";
import { readGgufHeader, readGgufTensors, type GgufEntry } from "../src/loaders/gguf.js";
import { writeGguf } from "../src/loaders/gguf-writer.js";
import { runCliAsync } from "./support/cli.js";
import { FakeHub, fakeCommit, folderFiles } from "./support/fake-hub.js";
import { sharedPath } from "./support/shared.js";

const single = sharedPath("golden", "tiny-random-qwen2.f32.gguf");
const golden = sharedPath("golden", "tiny-random-qwen2.json");
const skip = single.skip || golden.skip;
const tmp = mkdtempSync(join(tmpdir(), "tiny-llm-split-"));
after(() => rmSync(tmp, { recursive: true, force: true }));

/** Writes `source` as `count` parts in gguf-split's format under `dir`; returns the first part's path. */
function splitGguf(source: string, dir: string, count: number): string {
  const header = readGgufHeader(source);
  const data = readGgufTensors(header);
  const names = [...header.tensors.keys()];
  const per = Math.ceil(names.length / count);
  const parts: string[] = [];
  mkdirSync(dir, { recursive: true });
  for (let no = 0; no < count; no++) {
    const split: [string, GgufEntry][] = [
      ["split.no", { type: "uint16", value: no }],
      ["split.count", { type: "uint16", value: count }],
      ["split.tensors.count", { type: "int32", value: names.length }],
    ];
    const tensors = names.slice(no * per, (no + 1) * per).map((name) => {
      const info = header.tensors.get(name)!;
      return { name, type: info.type, dims: info.dims, data: data.get(name)! };
    });
    const path = join(dir, `tiny-F32-${String(no + 1).padStart(5, "0")}-of-${String(count).padStart(5, "0")}.gguf`);
    // As gguf-split writes them: the first part carries all the metadata, the others only split.*.
    writeGguf(path, no === 0 ? [...header.metadata, ...split] : split, tensors);
    parts.push(path);
  }
  return parts[0];
}

let promptIds: number[];
let first: string;
before(() => {
  if (skip) return;
  promptIds = (JSON.parse(readFileSync(golden.path, "utf8")) as { prompt_ids: number[] }).prompt_ids;
  first = splitGguf(single.path, join(tmp, "split"), 3);
});

test("a split GGUF loads from its first part to the same logits as the single file", { skip }, () => {
  const parts = [1, 2, 3].map((n) => readGgufHeader(first.replace("00001-of", `0000${n}-of`)));
  assert.ok(parts.every((part) => part.tensors.size > 0 && part.tensors.size < readGgufHeader(single.path).tensors.size));
  const split = loadCheckpoint(first).model.forward([promptIds]).toFloat32Array();
  const whole = loadCheckpoint(single.path).model.forward([promptIds]).toFloat32Array();
  assert.deepEqual(split, whole);
});

test("a later part, or a split file with a part missing, is an error that says what to pass", { skip }, () => {
  assert.throws(() => loadCheckpoint(first.replace("00001-of", "00002-of")), /is part of a GGUF file split in 3; pass its first part/);
  const dir = join(tmp, "two-of-three");
  mkdirSync(dir);
  for (const n of [1, 2]) copyFileSync(first.replace("00001-of", `0000${n}-of`), join(dir, `tiny-F32-0000${n}-of-00003.gguf`));
  assert.throws(() => loadCheckpoint(join(dir, "tiny-F32-00001-of-00003.gguf")), /tiny-F32-00003-of-00003\.gguf/);
});

test("a repo of split GGUF parts is fetched part by part and generates what the single file does", { skip }, async () => {
  const hub = await new FakeHub().start();
  try {
    hub.repos.set("test-org/tiny-GGUF", { files: folderFiles(join(tmp, "split")), commit: fakeCommit("split") });
    const env = { ...process.env, HF_ENDPOINT: hub.url, HF_HUB_CACHE: join(tmp, "cache"), HF_HUB_OFFLINE: "" };
    const args = ["-p", "Once upon a time", "-n", "16", "--temperature", "0"];
    const fromHub = await runCliAsync(["generate", "-m", "test-org/tiny-GGUF:F32", ...args], env);
    assert.equal(fromHub.status, 0, fromHub.stderr);
    const local = await runCliAsync(["generate", "-m", single.path, ...args], env);
    assert.equal(local.status, 0, local.stderr);
    assert.equal(fromHub.stdout, local.stdout);
    assert.equal(hub.requests.filter((r) => r.method === "HEAD").length, 3);
  } finally {
    await hub.close();
  }
});
