import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import { INDEX_FILE, SINGLE_FILE, loadCheckpointTensors, readJson } from "../src/loaders/checkpoint.js";
import { readSafetensors, writeSafetensors, type RawTensor } from "../src/loaders/safetensors.js";
import { sharedPath } from "./support/shared.js";
import { assertCheckpointError, escapeRegExp } from "./support/checkpoint-errors.js";

const tmp = mkdtempSync(join(tmpdir(), "tiny-llm-checkpoint-"));
after(() => rmSync(tmp, { recursive: true, force: true }));

function assertSameTensors(actual: Map<string, RawTensor>, expected: Map<string, RawTensor>): void {
  assert.deepEqual([...actual.keys()].sort(), [...expected.keys()].sort());
  for (const [name, want] of expected) {
    const got = actual.get(name) as RawTensor;
    assert.equal(got.dtype, want.dtype, name);
    assert.deepEqual(got.shape, want.shape, name);
    assert.deepEqual(got.data, want.data, name);
  }
}

/** A fresh directory under the test's temporary folder. */
function freshDir(name: string): string {
  const dir = join(tmp, name);
  mkdirSync(dir);
  return dir;
}

function tensor(name: string, values: number[]): { name: string; dtype: string; shape: number[]; data: Uint8Array } {
  return { name, dtype: "F32", shape: [values.length], data: new Uint8Array(new Float32Array(values).buffer) };
}

function writeIndex(dir: string, weightMap: Record<string, string>): string {
  const path = join(dir, INDEX_FILE);
  writeFileSync(path, JSON.stringify({ metadata: {}, weight_map: weightMap }));
  return path;
}

describe("single-file checkpoints", () => {
  test("loads model.safetensors when there is no index", () => {
    const dir = freshDir("single");
    writeSafetensors(join(dir, SINGLE_FILE), [tensor("a", [1, 2]), tensor("b", [3])]);
    const tensors = loadCheckpointTensors(dir);
    assert.deepEqual([...tensors.keys()].sort(), ["a", "b"]);
    assert.deepEqual(new Float32Array((tensors.get("a") as RawTensor).data.buffer), new Float32Array([1, 2]));
    assert.equal(tensors.get("b")?.file, join(dir, SINGLE_FILE));
  });

  const real = sharedPath("models", "stories260k-qwen2");
  test("loads a real checkpoint directory", { skip: real.skip }, () => {
    assertSameTensors(loadCheckpointTensors(real.path), readSafetensors(join(real.path, SINGLE_FILE)));
  });
});

describe("sharded checkpoints", () => {
  const real = sharedPath("models", "tiny-random-qwen2");
  test("a real checkpoint split into three shards loads identically", { skip: real.skip }, () => {
    const original = readSafetensors(join(real.path, SINGLE_FILE));
    const dir = freshDir("sharded-real");
    const names = [...original.keys()];
    const perShard = Math.ceil(names.length / 3);
    const weightMap: Record<string, string> = {};
    for (let s = 0; s < 3; s++) {
      const shard = `model-0000${s + 1}-of-00003.safetensors`;
      const chunk = names.slice(s * perShard, (s + 1) * perShard).map((n) => original.get(n) as RawTensor);
      assert.ok(chunk.length > 0, "every shard gets tensors");
      writeSafetensors(join(dir, shard), chunk, { format: "pt" });
      for (const t of chunk) weightMap[t.name] = shard;
    }
    writeIndex(dir, weightMap);

    const loaded = loadCheckpointTensors(dir);
    assertSameTensors(loaded, original);
    for (const [name, t] of loaded) assert.equal(t.file, join(dir, weightMap[name]), name);
  });

  test("prefers the index to a stray model.safetensors", () => {
    const dir = freshDir("index-wins");
    writeSafetensors(join(dir, SINGLE_FILE), [tensor("stale", [0])]);
    writeSafetensors(join(dir, "s1.safetensors"), [tensor("a", [1])]);
    writeIndex(dir, { a: "s1.safetensors" });
    assert.deepEqual([...loadCheckpointTensors(dir).keys()], ["a"]);
  });

  test("a shard the index lists is missing", () => {
    const dir = freshDir("missing-shard");
    writeSafetensors(join(dir, "s1.safetensors"), [tensor("a", [1])]);
    writeIndex(dir, { a: "s1.safetensors", b: "s2.safetensors" });
    assertCheckpointError(() => loadCheckpointTensors(dir), join(dir, "s2.safetensors"), /is missing/, /"b"/, /download/);
  });

  test("the index names a tensor absent from its shard", () => {
    const dir = freshDir("absent-tensor");
    writeSafetensors(join(dir, "s1.safetensors"), [tensor("a", [1])]);
    writeIndex(dir, { a: "s1.safetensors", ghost: "s1.safetensors" });
    assertCheckpointError(() => loadCheckpointTensors(dir), join(dir, "s1.safetensors"), /lacks tensors/, /"ghost"/);
  });

  test("a shard holds a tensor the index does not place in it", () => {
    const dir = freshDir("unlisted-tensor");
    writeSafetensors(join(dir, "s1.safetensors"), [tensor("a", [1]), tensor("extra", [2])]);
    writeIndex(dir, { a: "s1.safetensors" });
    assertCheckpointError(() => loadCheckpointTensors(dir), join(dir, "s1.safetensors"), /does not place in it/, /"extra"/);
  });

  test("an index that is not valid JSON", () => {
    const dir = freshDir("bad-index");
    writeFileSync(join(dir, INDEX_FILE), '{"weight_map": {');
    assertCheckpointError(() => loadCheckpointTensors(dir), join(dir, INDEX_FILE), /not valid JSON/);
  });

  test("an index without a weight_map", () => {
    const dir = freshDir("no-weight-map");
    writeFileSync(join(dir, INDEX_FILE), '{"metadata": {}}');
    assertCheckpointError(() => loadCheckpointTensors(dir), join(dir, INDEX_FILE), /no "weight_map"/);
  });

  test("a broken shard is reported by its own file name", () => {
    const dir = freshDir("broken-shard");
    writeFileSync(join(dir, "s1.safetensors"), "junk");
    writeIndex(dir, { a: "s1.safetensors" });
    assertCheckpointError(() => loadCheckpointTensors(dir), join(dir, "s1.safetensors"), /too short/);
  });
});

describe("missing checkpoints", () => {
  test("a directory that does not exist", () => {
    const dir = join(tmp, "nowhere");
    assertCheckpointError(() => loadCheckpointTensors(dir), dir, /does not exist/);
  });

  test("a directory with neither a single file nor an index", () => {
    const dir = freshDir("empty");
    assertCheckpointError(
      () => loadCheckpointTensors(dir),
      dir,
      new RegExp(`expected ${escapeRegExp(SINGLE_FILE)}, or ${escapeRegExp(INDEX_FILE)}`),
    );
  });
});

describe("readJson", () => {
  test("parses a JSON file", () => {
    const path = join(tmp, "config.json");
    writeFileSync(path, '{"hidden_size": 64}');
    assert.deepEqual(readJson(path, "model config"), { hidden_size: 64 });
  });

  test("names a missing file and what it was for", () => {
    const path = join(tmp, "absent.json");
    assertCheckpointError(() => readJson(path, "model config"), path, /cannot read model config/, /ENOENT/);
  });
});
