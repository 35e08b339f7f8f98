import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import { dtypeByteSize, readSafetensors, readSafetensorsHeader, writeSafetensors, type RawTensor } from "../src/loaders/safetensors.js";
import { sharedPath } from "./support/shared.js";
import { assertCheckpointError } from "./support/checkpoint-errors.js";

const tmp = mkdtempSync(join(tmpdir(), "tiny-llm-safetensors-"));
after(() => rmSync(tmp, { recursive: true, force: true }));

function bytesOf(view: ArrayBufferView): Uint8Array {
  return new Uint8Array(view.buffer, view.byteOffset, view.byteLength);
}

/** Writes a file with an arbitrary header, bypassing the writer's checks, to build broken inputs. */
function writeRaw(name: string, header: unknown, dataBytes: number, declaredLength?: bigint): string {
  const json = header instanceof Uint8Array ? header : Buffer.from(typeof header === "string" ? header : JSON.stringify(header), "utf8");
  const prefix = Buffer.alloc(8);
  prefix.writeBigUInt64LE(declaredLength ?? BigInt(json.byteLength));
  const path = join(tmp, name);
  writeFileSync(path, Buffer.concat([prefix, json, Buffer.alloc(dataBytes, 0xab)]));
  return path;
}

/** BF16 is the top half of an F32, so widening is a 16-bit shift. */
function bf16ToF32(data: Uint8Array): Float32Array {
  const bits = new Uint16Array(data.buffer, data.byteOffset, data.byteLength / 2);
  return new Float32Array(Uint32Array.from(bits, (b) => b << 16).buffer);
}

describe("safetensors round trip", () => {
  const tensors = [
    { name: "f32", dtype: "F32", shape: [2, 3], data: bytesOf(new Float32Array([1.5, -2, 3.25, 0, -0.125, 1e30])) },
    { name: "bf16", dtype: "BF16", shape: [4], data: bytesOf(new Uint16Array([0x3f80, 0xc000, 0x7f80, 0x0001])) },
    { name: "f16", dtype: "F16", shape: [2, 2], data: bytesOf(new Uint16Array([0x3c00, 0xbc00, 0x7bff, 0x0400])) },
    { name: "u32.packed", dtype: "U32", shape: [3], data: bytesOf(new Uint32Array([0, 0xffffffff, 0x12345678])) },
    { name: "scalar", dtype: "F32", shape: [], data: bytesOf(new Float32Array([7])) },
    { name: "empty", dtype: "F32", shape: [0, 4], data: new Uint8Array(0) },
  ];
  const path = join(tmp, "roundtrip.safetensors");
  writeSafetensors(path, tensors, { format: "pt", note: "round trip" });

  test("header keeps dtypes, shapes, metadata and an 8-byte aligned data region", () => {
    const header = readSafetensorsHeader(path);
    assert.deepEqual(header.metadata, { format: "pt", note: "round trip" });
    assert.equal(header.dataStart % 8, 0);
    assert.equal(header.fileSize, statSync(path).size);
    assert.deepEqual(
      [...header.tensors].map(([name, e]) => [name, e.dtype, e.shape]),
      tensors.map((t) => [t.name, t.dtype, t.shape]),
    );
  });

  test("every tensor reads back byte for byte, each in its own buffer", () => {
    const read = readSafetensors(path);
    assert.deepEqual([...read.keys()].sort(), tensors.map((t) => t.name).sort());
    for (const t of tensors) {
      const got = read.get(t.name) as RawTensor;
      assert.equal(got.dtype, t.dtype);
      assert.deepEqual(got.shape, t.shape);
      assert.deepEqual(got.data, t.data, t.name);
      assert.equal(got.file, path);
      assert.equal(got.data.byteOffset, 0);
      assert.equal(got.data.buffer.byteLength, t.data.byteLength);
    }
    assert.deepEqual(new Float32Array((read.get("f32") as RawTensor).data.buffer), new Float32Array([1.5, -2, 3.25, 0, -0.125, 1e30]));
    assert.deepEqual(bf16ToF32((read.get("bf16") as RawTensor).data).subarray(0, 3), new Float32Array([1, -2, Infinity]));
    assert.deepEqual(new Uint32Array((read.get("u32.packed") as RawTensor).data.buffer), new Uint32Array([0, 0xffffffff, 0x12345678]));
  });

  test("reads only the tensors asked for, and names one that is absent", () => {
    const read = readSafetensors(path, ["bf16", "u32.packed"]);
    assert.deepEqual([...read.keys()].sort(), ["bf16", "u32.packed"]);
    assertCheckpointError(() => readSafetensors(path, ["f32", "nope"]), path, /"nope"/);
  });

  test("writer leaves no partial file and rejects data that does not fit its shape", () => {
    const bad = join(tmp, "bad-write.safetensors");
    assert.throws(
      () => writeSafetensors(bad, [{ name: "w", dtype: "F32", shape: [3], data: new Uint8Array(8) }]),
      /tensor "w".*needs 12 bytes, data has 8/,
    );
    assert.throws(() => writeSafetensors(bad, [tensors[0], tensors[0]]), /"f32".*reserved or repeated/);
    assert.throws(() => statSync(bad), /ENOENT/);
    assert.throws(() => statSync(`${bad}.partial`), /ENOENT/);
  });

  test("dtype byte sizes cover float and packed integer types", () => {
    assert.deepEqual(["F32", "F16", "BF16", "U8", "I8", "U32", "I32", "F64"].map(dtypeByteSize), [4, 2, 2, 1, 1, 4, 4, 8]);
    assert.equal(dtypeByteSize("Q4_K"), undefined);
    assert.equal(dtypeByteSize("toString"), undefined);
  });
});

describe("real checkpoints", () => {
  const models = [
    { name: "stories260k-qwen2", dtype: "F32" },
    { name: "stories260k-llama", dtype: "F32" },
    { name: "tiny-random-llama", dtype: "F32" },
    { name: "tiny-random-qwen2", dtype: "BF16" },
    { name: "tiny-random-qwen3", dtype: "BF16" },
  ];
  for (const model of models) {
    const { path: dir, skip } = sharedPath("models", model.name);
    test(`${model.name} loads with the shapes its config declares`, { skip }, () => {
      const file = join(dir, "model.safetensors");
      const config = JSON.parse(readFileSync(join(dir, "config.json"), "utf8")) as { vocab_size: number; hidden_size: number };
      const header = readSafetensorsHeader(file);
      const tensors = readSafetensors(file);
      assert.ok(tensors.size > 0);
      assert.equal(tensors.size, header.tensors.size);

      const embed = tensors.get("model.embed_tokens.weight");
      assert.ok(embed !== undefined, "model.embed_tokens.weight is present");
      assert.deepEqual(embed.shape, [config.vocab_size, config.hidden_size]);
      for (const t of tensors.values()) assert.equal(t.dtype, model.dtype, t.name);

      // Real files pack tensors with no gaps, so the tensors account for every data byte.
      const total = [...tensors.values()].reduce((sum, t) => sum + t.data.byteLength, 0);
      assert.equal(total, header.fileSize - header.dataStart);

      const values = model.dtype === "F32" ? new Float32Array(embed.data.buffer) : bf16ToF32(embed.data);
      assert.equal(values.length, config.vocab_size * config.hidden_size);
      assert.ok(values.every(Number.isFinite), "embedding values are finite");
      assert.ok(
        values.some((v) => v !== 0),
        "embedding is not all zeros",
      );
    });
  }
});

describe("broken safetensors files", () => {
  const good = { w: { dtype: "F32", shape: [2, 2], data_offsets: [0, 16] } };
  const goodPath = writeRaw("good.safetensors", good, 16);
  const goodBytes = readFileSync(goodPath);

  test("the unbroken base file reads", () => {
    assert.equal(readSafetensors(goodPath).get("w")?.data.byteLength, 16);
  });

  test("file shorter than the length prefix", () => {
    const path = join(tmp, "tiny.safetensors");
    writeFileSync(path, goodBytes.subarray(0, 5));
    assertCheckpointError(() => readSafetensors(path), path, /5 bytes, too short/, /re-download/);
  });

  test("file cut inside the header", () => {
    const path = join(tmp, "cut-header.safetensors");
    writeFileSync(path, goodBytes.subarray(0, 20));
    assertCheckpointError(() => readSafetensors(path), path, /header length \d+ exceeds the 12 bytes/, /truncated/);
  });

  test("file cut inside the tensor data", () => {
    const path = join(tmp, "cut-data.safetensors");
    writeFileSync(path, goodBytes.subarray(0, goodBytes.length - 4));
    assertCheckpointError(() => readSafetensors(path), path, /tensor "w" ends at data byte 16 but the file holds only 12/, /truncated/);
  });

  test("garbage header length", () => {
    const path = writeRaw("garbage-length.safetensors", good, 16, 0xffffffffffffffffn);
    assertCheckpointError(() => readSafetensorsHeader(path), path, /header length 18446744073709551615 exceeds/);
  });

  test("header length that stops inside the JSON", () => {
    const path = writeRaw("short-length.safetensors", good, 16, 10n);
    assertCheckpointError(() => readSafetensorsHeader(path), path, /not valid UTF-8 JSON/);
  });

  test("unknown dtype parses in the header but cannot be loaded", () => {
    const header = { ...good, odd: { dtype: "X9", shape: [2], data_offsets: [16, 18] } };
    const path = writeRaw("odd-dtype.safetensors", header, 18);
    assert.equal(readSafetensorsHeader(path).tensors.get("odd")?.dtype, "X9");
    assert.equal(readSafetensors(path, ["w"]).size, 1);
    assertCheckpointError(() => readSafetensors(path), path, /unsupported dtype X9 for tensor "odd" in /);
  });

  const cases: { label: string; header: unknown; data: number; patterns: RegExp[] }[] = [
    { label: "invalid JSON", header: '{"w": {"dtype": "F32",', data: 16, patterns: [/not valid UTF-8 JSON/] },
    { label: "invalid UTF-8", header: new Uint8Array([0x7b, 0xff, 0x7d]), data: 0, patterns: [/not valid UTF-8 JSON/] },
    { label: "header that is a JSON array", header: [good], data: 16, patterns: [/not a JSON object/] },
    { label: "entry that is not an object", header: { w: 5 }, data: 16, patterns: [/tensor "w" has a header entry that is not an object/] },
    {
      label: "missing dtype",
      header: { w: { shape: [2, 2], data_offsets: [0, 16] } },
      data: 16,
      patterns: [/tensor "w" has no dtype/],
    },
    {
      label: "missing shape",
      header: { w: { dtype: "F32", data_offsets: [0, 16] } },
      data: 16,
      patterns: [/tensor "w" has shape undefined/],
    },
    {
      label: "negative dimension",
      header: { w: { dtype: "F32", shape: [-2, -2], data_offsets: [0, 16] } },
      data: 16,
      patterns: [/tensor "w" has shape \[-2,-2\], which is not a list of non-negative integers/],
    },
    {
      label: "fractional dimension",
      header: { w: { dtype: "F32", shape: [2.5, 2], data_offsets: [0, 16] } },
      data: 16,
      patterns: [/tensor "w" has shape \[2.5,2\]/],
    },
    {
      label: "missing data_offsets",
      header: { w: { dtype: "F32", shape: [2, 2] } },
      data: 16,
      patterns: [/tensor "w" has data_offsets undefined/],
    },
    {
      label: "offsets that begin after they end",
      header: { w: { dtype: "F32", shape: [1], data_offsets: [12, 8] } },
      data: 16,
      patterns: [/tensor "w" has data_offsets \[12, 8\] that begin after they end/],
    },
    {
      label: "offsets outside the file",
      header: { w: { dtype: "F32", shape: [2, 2], data_offsets: [64, 80] } },
      data: 16,
      patterns: [/tensor "w" ends at data byte 80 but the file holds only 16/],
    },
    {
      label: "shape that does not match the byte size",
      header: { w: { dtype: "F32", shape: [3, 2], data_offsets: [0, 16] } },
      data: 16,
      patterns: [/tensor "w" has shape \[3, 2\] of F32, which needs 24 bytes, but data_offsets span 16/],
    },
    {
      label: "overlapping tensors",
      header: {
        a: { dtype: "F32", shape: [4], data_offsets: [0, 16] },
        b: { dtype: "F32", shape: [4], data_offsets: [8, 24] },
      },
      data: 24,
      patterns: [/tensor "b" \(bytes 8-24\) overlaps tensor "a" \(bytes 0-16\)/],
    },
    {
      label: "metadata that is not a string map",
      header: { __metadata__: { format: 1 }, ...good },
      data: 16,
      patterns: [/"__metadata__" must map strings to strings/],
    },
  ];
  cases.forEach(({ label, header, data, patterns }, i) => {
    test(label, () => {
      const path = writeRaw(`broken-${i}.safetensors`, header, data);
      assertCheckpointError(() => readSafetensorsHeader(path), path, ...patterns, /re-download/);
    });
  });

  test("missing file", () => {
    const path = join(tmp, "absent.safetensors");
    assertCheckpointError(() => readSafetensors(path), path, /cannot open checkpoint file/, /ENOENT/);
  });
});
