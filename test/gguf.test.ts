import assert from "node:assert/strict";
import { existsSync, mkdtempSync, readFileSync, rmSync, truncateSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import {
  GGUF_VALUE_TYPES,
  metadataBool,
  metadataNumber,
  metadataNumbers,
  metadataString,
  metadataStrings,
  readGgufHeader,
  readGgufTensors,
  type GgufArray,
  type GgufEntry,
  type GgufValue,
  type GgufValueType,
} from "../src/loaders/gguf.js";
import { StringTable } from "../src/loaders/string-table.js";
import { writeGguf, type GgufTensorToWrite } from "../src/loaders/gguf-writer.js";
import { quantizeQ4_0, quantizeQ8_0 } from "../src/tensor/block-quant.js";
import { sharedPath } from "./support/shared.js";
import { assertCheckpointError } from "./support/checkpoint-errors.js";

const tmp = mkdtempSync(join(tmpdir(), "tiny-llm-gguf-"));
after(() => rmSync(tmp, { recursive: true, force: true }));

function bytesOf(view: ArrayBufferView): Uint8Array {
  return new Uint8Array(view.buffer, view.byteOffset, view.byteLength);
}

describe("the golden GGUF files", () => {
  const archs: Record<string, string> = {
    "stories260k-qwen2": "qwen2",
    "stories260k-llama": "llama",
    "tiny-random-qwen2": "qwen2",
    "tiny-random-qwen3": "qwen3",
    "tiny-random-llama": "llama",
  };
  for (const [name, arch] of Object.entries(archs)) {
    const file = sharedPath("golden", `${name}.f32.gguf`);

    test(`${name}: the header parses, and the writer reproduces the file byte for byte`, { skip: file.skip }, () => {
      const header = readGgufHeader(file.path);
      assert.equal(header.version, 3);
      assert.equal(header.alignment, 32);
      assert.equal(header.dataStart % 32, 0);
      assert.equal(metadataString(header, "general.architecture"), arch);
      assert.equal(metadataString(header, "general.name"), name);
      assert.ok([...header.tensors.values()].every((t) => t.type === "F32"));
      const last = [...header.tensors.values()].reduce((a, b) => (a.offset > b.offset ? a : b));
      assert.equal(header.dataStart + last.offset + last.byteLength, header.fileSize);

      const data = readGgufTensors(header);
      const copy = join(tmp, `${name}.copy.gguf`);
      writeGguf(
        copy,
        header.metadata,
        [...header.tensors.values()].map((t) => ({ name: t.name, type: t.type, dims: t.dims, data: data.get(t.name) as Uint8Array })),
      );
      assert.ok(readFileSync(copy).equals(readFileSync(file.path)), "the rewritten file differs");
    });
  }

  const stories = sharedPath("golden", "stories260k-qwen2.f32.gguf");
  test("stories260k-qwen2: metadata values and types, tensor infos and tensor bytes", { skip: stories.skip }, () => {
    const header = readGgufHeader(stories.path);
    assert.deepEqual(header.metadata.get("qwen2.block_count"), { type: "uint32", value: 5 });
    assert.deepEqual(header.metadata.get("qwen2.rope.freq_base"), { type: "float32", value: 10000 });
    assert.deepEqual(header.metadata.get("tokenizer.ggml.add_bos_token"), { type: "bool", value: true });
    assert.equal(metadataNumber(header, "qwen2.attention.layer_norm_rms_epsilon"), Math.fround(1e-5));
    assert.equal(metadataBool(header, "tokenizer.ggml.add_eos_token"), false);
    const tokens = metadataStrings(header, "tokenizer.ggml.tokens")?.toArray() ?? [];
    assert.equal(tokens.length, 512);
    assert.deepEqual(tokens.slice(0, 4), ["<unk>", "<s>", "</s>", "<0x00>"]);
    assert.deepEqual(Array.from(metadataNumbers(header, "tokenizer.ggml.token_type") ?? []).slice(0, 4), [2, 3, 3, 6]);

    assert.equal(header.tensors.size, 62);
    assert.deepEqual(header.tensors.get("token_embd.weight"), {
      name: "token_embd.weight",
      dims: [64, 512],
      type: "F32",
      offset: 0,
      byteLength: 64 * 512 * 4,
    });
    assert.deepEqual(header.tensors.get("blk.0.attn_k.bias")?.dims, [32]);

    const [norm] = readGgufTensors(header, ["output_norm.weight"]).values();
    assert.equal(norm.byteLength, 64 * 4);
    assert.equal(norm.byteOffset % 4, 0, "typed-array views of tensor bytes need 4-byte alignment");
    const direct = readFileSync(stories.path).subarray(header.dataStart + (header.tensors.get("output_norm.weight")?.offset ?? NaN));
    assert.deepEqual(norm, new Uint8Array(direct.subarray(0, 256)));
  });
});

describe("writer → reader round trip", () => {
  const array = (itemType: GgufValueType, items: GgufEntry["value"][]): GgufEntry => ({ type: "array", value: { itemType, items } });
  const metadata: [string, GgufEntry][] = [
    ["general.alignment", { type: "uint32", value: 64 }],
    ["t.uint8", { type: "uint8", value: 255 }],
    ["t.int8", { type: "int8", value: -128 }],
    ["t.uint16", { type: "uint16", value: 65535 }],
    ["t.int16", { type: "int16", value: -32768 }],
    ["t.uint32", { type: "uint32", value: 4294967295 }],
    ["t.int32", { type: "int32", value: -2147483648 }],
    ["t.float32", { type: "float32", value: Math.fround(0.1) }],
    ["t.bool", { type: "bool", value: false }],
    ["t.string", { type: "string", value: "héllo ▁world 中文 😀\n" }],
    ["t.uint64", { type: "uint64", value: 2n ** 64n - 1n }],
    ["t.int64", { type: "int64", value: -(2n ** 63n) }],
    ["t.float64", { type: "float64", value: Math.PI }],
    ["t.empty-string", { type: "string", value: "" }],
    ["ключ 🔑", { type: "bool", value: true }],
    ["a.strings", array("string", ["a", "", "ü b"])],
    ["a.float32", array("float32", [0, -1.5, Infinity])],
    ["a.int64", array("int64", [1n, -1n])],
    ["a.bool", array("bool", [true, false])],
    ["a.empty", array("int32", [])],
    [
      "a.nested",
      array("array", [
        { itemType: "uint8", items: [1, 2] },
        { itemType: "string", items: ["x"] },
      ]),
    ],
  ];
  const f32 = new Float32Array([1.5, -2, 3.25, 0, -0.125, 1e30]);
  const ramp = Float32Array.from({ length: 96 }, (_, i) => (i - 40) / 7);
  const tensors: GgufTensorToWrite[] = [
    { name: "f32", type: "F32", dims: [3, 2], data: bytesOf(f32) },
    { name: "f16", type: "F16", dims: [4], data: bytesOf(new Uint16Array([0x3c00, 0xbc00, 0x7bff, 0x0001])) },
    { name: "bf16", type: "BF16", dims: [2, 1, 1, 2], data: bytesOf(new Uint16Array([0x3f80, 0xc000, 0x7f80, 0x0001])) },
    { name: "q8_0", type: "Q8_0", dims: [32, 3], data: quantizeQ8_0(ramp) },
    { name: "q4_0", type: "Q4_0", dims: [96], data: () => quantizeQ4_0(ramp) },
    { name: "empty", type: "F32", dims: [4, 0], data: new Uint8Array(0) },
  ];
  const path = join(tmp, "roundtrip.gguf");
  writeGguf(path, metadata, tensors);

  test("every metadata value type, including nested and empty arrays, reads back as written", () => {
    const header = readGgufHeader(path);
    assert.equal(header.version, 3);
    // Arrays of strings come back as StringTables, arrays of numbers as typed arrays.
    const plain = (value: GgufValue): GgufValue =>
      typeof value !== "object"
        ? value
        : { itemType: value.itemType, items: value.items instanceof StringTable ? value.items.toArray() : Array.from(value.items, plain) };
    assert.ok(metadataStrings(header, "a.strings") instanceof StringTable);
    const itemsOf = (key: string) => (header.metadata.get(key)?.value as GgufArray).items;
    assert.ok(itemsOf("a.float32") instanceof Float32Array);
    assert.ok(itemsOf("a.int64") instanceof BigInt64Array);
    assert.ok(itemsOf("a.empty") instanceof Int32Array);
    assert.deepEqual(Array.from(metadataNumbers(header, "a.int64") ?? []), [1, -1]);
    assert.deepEqual(
      [...header.metadata].map(([key, { type, value }]) => [key, { type, value: plain(value) }]),
      metadata,
    );
    // Every value type appears.
    const types = new Set(metadata.flatMap(([, e]) => [e.type, ...(typeof e.value === "object" ? [e.value.itemType] : [])]));
    assert.deepEqual([...types].sort(), [...GGUF_VALUE_TYPES].sort());
  });

  test("tensors of all five types read back byte for byte, aligned to general.alignment", () => {
    const header = readGgufHeader(path);
    assert.equal(header.alignment, 64);
    assert.equal(header.dataStart % 64, 0);
    assert.deepEqual(
      [...header.tensors.values()].map((t) => [t.name, t.type, t.dims]),
      tensors.map((t) => [t.name, t.type, t.dims]),
    );
    assert.ok([...header.tensors.values()].every((t) => t.offset % 64 === 0));
    assert.deepEqual(
      [...header.tensors.values()].map((t) => t.byteLength),
      [24, 8, 8, 3 * 34, 3 * 18, 0],
    );
    const read = readGgufTensors(header);
    for (const t of tensors) {
      const expected = typeof t.data === "function" ? t.data() : t.data;
      assert.deepEqual(read.get(t.name), new Uint8Array(expected), t.name);
    }
  });

  test("the tensors asked for come back in the order asked", () => {
    const read = readGgufTensors(readGgufHeader(path), ["q4_0", "f32"]);
    assert.deepEqual([...read.keys()], ["q4_0", "f32"]);
    const bytes = read.get("f32") as Uint8Array<ArrayBuffer>;
    assert.deepEqual(new Float32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4), f32);
  });

  test("the writer refuses inconsistent input and leaves no file behind", () => {
    const cases: [Parameters<typeof writeGguf>[1], GgufTensorToWrite[], RegExp][] = [
      [[], [{ name: "w", type: "F32", dims: [2], data: new Uint8Array(4) }], /needs 8 bytes, got 4/],
      [[], [{ name: "w", type: "Q8_0", dims: [16, 2], data: new Uint8Array(34) }], /multiple of 32/],
      [[], [{ name: "w", type: "F32", dims: [1, 1, 1, 1, 1], data: new Uint8Array(4) }], /1 to 4/],
      [
        [],
        [
          { name: "w", type: "F32", dims: [1], data: new Uint8Array(4) },
          { name: "w", type: "F32", dims: [1], data: new Uint8Array(4) },
        ],
        /twice/,
      ],
      [[["k", { type: "uint8", value: 256 }]], [], /not a valid uint8/],
      [[["k", { type: "uint64", value: 5 }]], [], /not a valid uint64/],
      [[["k", array("string", ["a", 1])]], [], /not a valid string/],
      [[["general.alignment", { type: "uint32", value: 48 }]], [], /power of two/],
    ];
    for (const [meta, ts, pattern] of cases) {
      const out = join(tmp, "refused.gguf");
      assert.throws(() => writeGguf(out, meta, ts), pattern);
      assert.ok(!existsSync(out) && !existsSync(`${out}.partial`), `no file for ${pattern}`);
    }
  });
});

// Raw builders for malformed files, bypassing the writer's checks.
const u32 = (n: number): Buffer => {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(n);
  return b;
};
const u64 = (n: number | bigint): Buffer => {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(BigInt(n));
  return b;
};
const str = (s: string | Buffer): Buffer => {
  const bytes = typeof s === "string" ? Buffer.from(s, "utf8") : s;
  return Buffer.concat([u64(bytes.byteLength), bytes]);
};
const typeCode = (t: GgufValueType): Buffer => u32(GGUF_VALUE_TYPES.indexOf(t));
const kv = (key: string, type: GgufValueType, value: Buffer): Buffer => Buffer.concat([str(key), typeCode(type), value]);
const info = (name: string, dims: number[], type: number, offset: number): Buffer =>
  Buffer.concat([str(name), u32(dims.length), ...dims.map(u64), u32(type), u64(offset)]);

interface RawFile {
  magic?: string;
  version?: Buffer;
  kvs?: Buffer[];
  infos?: Buffer[];
  tensorCount?: number | bigint;
  dataBytes?: number;
}

/** A GGUF file assembled by hand: header, padding to 32 bytes, then `dataBytes` bytes of data. */
function rawGguf(name: string, f: RawFile): string {
  const head = Buffer.concat([
    Buffer.from(f.magic ?? "GGUF", "latin1"),
    f.version ?? u32(3),
    u64(f.tensorCount ?? f.infos?.length ?? 0),
    u64(f.kvs?.length ?? 0),
    ...(f.kvs ?? []),
    ...(f.infos ?? []),
  ]);
  const padded = Math.ceil(head.byteLength / 32) * 32;
  const path = join(tmp, name);
  writeFileSync(path, Buffer.concat([head, Buffer.alloc(padded - head.byteLength), Buffer.alloc(f.dataBytes ?? 0, 0xab)]));
  return path;
}

describe("malformed GGUF files are CheckpointErrors that name the file and the problem", () => {
  const F32 = 0;
  const Q8_0 = 8;
  const cases: [string, RawFile | Buffer, ...RegExp[]][] = [
    ["bad-magic", { magic: "GGML" }, /does not start with the GGUF magic .*47474d4c.*not a GGUF file/],
    ["too-short", Buffer.from("GG"), /ends inside the header.*truncated/],
    ["version-1", { version: u32(1) }, /GGUF version 1; only versions 2 and 3 are supported/],
    ["version-4", { version: u32(4) }, /GGUF version 4/],
    ["big-endian", { version: Buffer.from([0, 0, 0, 3]) }, /big-endian/],
    ["huge-tensor-count", { tensorCount: 10n ** 12n }, /tensor count as 1000000000000, but only \d+ bytes follow.*truncated or corrupt/],
    [
      "truncated-metadata",
      Buffer.concat([Buffer.from("GGUF"), u32(3), u64(0), u64(1), str("general.name"), typeCode("string"), u64(5), Buffer.from("ab")]),
      /string of 5 bytes in metadata key "general.name", but only 2 bytes are left/,
    ],
    [
      "truncated-value",
      Buffer.concat([Buffer.from("GGUF"), u32(3), u64(0), u64(1), str("k"), typeCode("uint32"), Buffer.from([1, 2])]),
      /ends inside metadata key "k".*truncated/,
    ],
    [
      "string-past-end",
      { kvs: [Buffer.concat([u64(2n ** 62n), Buffer.from("key")])] },
      /string of 4611686018427387904 bytes in metadata entry 0/,
    ],
    [
      "array-past-end",
      { kvs: [kv("tokenizer.ggml.scores", "array", Buffer.concat([typeCode("float32"), u64(1_000_000)]))] },
      /length of metadata key "tokenizer.ggml.scores" as 1000000, but only \d+ bytes follow/,
    ],
    ["unknown-value-type", { kvs: [Buffer.concat([str("k"), u32(13), Buffer.from([1])])] }, /metadata key "k" has unknown value type 13/],
    ["duplicate-key", { kvs: [kv("k", "uint8", Buffer.from([1])), kv("k", "uint8", Buffer.from([2]))] }, /metadata key "k" twice/],
    ["bad-bool", { kvs: [kv("flag", "bool", Buffer.from([2]))] }, /metadata key "flag" holds bool byte 2/],
    ["bad-utf8", { kvs: [Buffer.concat([str(Buffer.from([0xff, 0xfe])), typeCode("uint8"), Buffer.from([0])])] }, /not valid UTF-8/],
    [
      "deep-arrays",
      { kvs: [kv("k", "array", Buffer.concat(Array.from({ length: 10 }, () => Buffer.concat([typeCode("array"), u64(1)]))))] },
      /nests arrays more than 8 deep/,
    ],
    [
      "alignment-not-power-of-two",
      { kvs: [kv("general.alignment", "uint32", u32(48))] },
      /general.alignment 48 \(uint32\); it must be a uint32 power of two/,
    ],
    ["alignment-wrong-type", { kvs: [kv("general.alignment", "string", str("32"))] }, /general.alignment 32 \(string\)/],
    ["five-dims", { infos: [info("w", [1, 1, 1, 1, 1], F32, 0)], dataBytes: 32 }, /tensor "w" 5 dimensions; ggml tensors have 1 to 4/],
    [
      "unknown-type",
      { infos: [info("w", [4], 99, 0)], dataBytes: 32 },
      /tensor "w" has unknown ggml type 99.*supported types are F32, F16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K, Q8_K, BF16/,
    ],
    [
      "unsupported-type",
      { infos: [info("w", [256], 10, 0)], dataBytes: 256 },
      /tensor "w" has ggml type Q2_K \(10\); supported types are F32, F16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K, Q8_K, BF16/,
    ],
    [
      "partial-block",
      { infos: [info("w", [48, 2], Q8_0, 0)], dataBytes: 128 },
      /tensor "w" of type Q8_0 has 48 values per row, not a multiple of its block size 32/,
    ],
    [
      "partial-super-block",
      { infos: [info("w", [896, 2], 12, 0)], dataBytes: 1024 },
      /tensor "w" of type Q4_K has 896 values per row, not a multiple of its block size 256/,
    ],
    [
      "misaligned",
      { infos: [info("a", [4], F32, 0), info("b", [4], F32, 16)], dataBytes: 64 },
      /tensor "b" starts at data offset 16, which is not a multiple of the alignment 32/,
    ],
    [
      "data-past-end",
      { infos: [info("a", [4], F32, 0), info("b", [16], F32, 32)], dataBytes: 64 },
      /tensor "b" needs bytes \d+ to \d+ but the file is \d+ bytes long; it is truncated/,
    ],
    [
      "offset-past-end",
      { infos: [info("a", [4], F32, 2 ** 40)], dataBytes: 64 },
      /tensor "a" starts at data offset 1099511627776, past the end/,
    ],
    [
      "overlap",
      { infos: [info("a", [16], F32, 0), info("b", [8], F32, 32)], dataBytes: 128 },
      /tensor "b" \(data bytes 32-64\) overlaps tensor "a" \(data bytes 0-64\)/,
    ],
    ["duplicate-tensor", { infos: [info("a", [4], F32, 0), info("a", [4], F32, 32)], dataBytes: 64 }, /lists tensor "a" twice/],
  ];
  for (const [name, spec, ...patterns] of cases) {
    test(name, () => {
      let path = join(tmp, `${name}.gguf`);
      if (Buffer.isBuffer(spec)) writeFileSync(path, spec);
      else path = rawGguf(`${name}.gguf`, spec);
      assertCheckpointError(() => readGgufHeader(path), path, ...patterns);
    });
  }

  test("a well-formed hand-built file passes the same checks", () => {
    const path = rawGguf("fine.gguf", { infos: [info("a", [16], F32, 0), info("b", [32, 2], Q8_0, 64)], dataBytes: 64 + 68 });
    const header = readGgufHeader(path);
    assert.deepEqual([...header.tensors.keys()], ["a", "b"]);
  });

  test("a golden file cut short anywhere is refused", { skip: sharedPath("golden", "stories260k-llama.f32.gguf").skip }, () => {
    const original = readFileSync(sharedPath("golden", "stories260k-llama.f32.gguf").path);
    for (const size of [3, 20, 1000, 14000, 500_000, original.byteLength - 1]) {
      const path = join(tmp, `cut-${size}.gguf`);
      writeFileSync(path, original.subarray(0, size));
      assertCheckpointError(() => readGgufHeader(path), path, /truncated/);
    }
  });

  test("a missing file", () => {
    const path = join(tmp, "nope.gguf");
    assertCheckpointError(() => readGgufHeader(path), path, /cannot open/);
  });

  test("a tensor that is not in the file, and a file that shrank after its header was read", () => {
    const path = join(tmp, "shrinks.gguf");
    writeGguf(path, [], [{ name: "w", type: "F32", dims: [64], data: new Uint8Array(256) }]);
    const header = readGgufHeader(path);
    assertCheckpointError(() => readGgufTensors(header, ["v"]), path, /has no tensor "v"/);
    truncateSync(path, header.dataStart + 100);
    assertCheckpointError(() => readGgufTensors(header), path, /file ended while reading tensor "w"/);
  });

  test("metadata of the wrong type names the key", () => {
    const path = join(tmp, "types.gguf");
    writeGguf(
      path,
      [
        ["n", { type: "uint32", value: 1 }],
        ["s", { type: "string", value: "x" }],
        ["a", { type: "array", value: { itemType: "int8", items: [1] } }],
      ],
      [],
    );
    const header = readGgufHeader(path);
    assertCheckpointError(() => metadataString(header, "n"), path, /metadata key "n" holds uint32, expected a string/);
    assertCheckpointError(() => metadataNumber(header, "s"), path, /metadata key "s" holds string, expected a number/);
    assertCheckpointError(
      () => metadataStrings(header, "a"),
      path,
      /metadata key "a" holds an array of int8, expected an array of strings/,
    );
    assertCheckpointError(() => metadataBool(header, "n"), path, /expected a bool/);
    assertCheckpointError(() => metadataNumbers(header, "s"), path, /expected an array of numbers/);
    assert.deepEqual(metadataNumbers(header, "a"), Int8Array.of(1));
    assert.equal(metadataString(header, "absent"), undefined);
  });
});
