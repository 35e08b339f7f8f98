/**
 * Reader for GGUF, llama.cpp's single-file checkpoint format (versions 2 and 3, little-endian):
 *
 *   "GGUF" · u32 version · u64 tensor count · u64 metadata count
 *   metadata: key (string) · u32 value type · value            (repeated)
 *   tensor infos: name (string) · u32 n_dims · u64 dims[n_dims] (ne0, the contiguous one, first)
 *                 · u32 ggml type · u64 offset                  (repeated)
 *   padding to `general.alignment` (default 32), then the data section; each tensor's offset is
 *   relative to its start and a multiple of the alignment.
 *
 * A string is a u64 byte length and UTF-8 bytes; an array is a u32 item type, a u64 count and
 * the items. The header is read through a small window and tensors are read one at a time into
 * buffers of their own, so a file of many gigabytes never has to fit in memory at once. Every
 * length and offset is checked against the file before it is trusted.
 */
import { isUtf8 } from "node:buffer";
import { closeSync, fstatSync, openSync } from "node:fs";
import { Q4_0_BLOCK_BYTES, Q8_0_BLOCK_BYTES, QUANT_BLOCK_SIZE } from "../tensor/block-quant.js";
import { LEGACY_BLOCK_BYTES } from "../tensor/legacy-quant.js";
import { Q4_K_BLOCK_BYTES, Q5_K_BLOCK_BYTES, Q6_K_BLOCK_BYTES, Q8_K_BLOCK_BYTES, QK_K } from "../tensor/k-quant.js";
import { CheckpointError } from "./safetensors.js";
import { readFully } from "./file-io.js";
import { StringTable, StringTableBuilder } from "./string-table.js";
import { nativeKernels } from "../kernels/native.js";

/** Metadata value types, indexed by their code in the file. */
export const GGUF_VALUE_TYPES = [
  "uint8",
  "int8",
  "uint16",
  "int16",
  "uint32",
  "int32",
  "float32",
  "bool",
  "string",
  "array",
  "uint64",
  "int64",
  "float64",
] as const;
export type GgufValueType = (typeof GGUF_VALUE_TYPES)[number];

/** 64-bit integers are bigints so that no value is rounded; the other numeric types are numbers. */
export type GgufValue = number | bigint | boolean | string | GgufArray;

/** Typed arrays of GGUF's numeric item types, by type name. */
const NUMBER_ARRAYS = {
  uint8: Uint8Array,
  int8: Int8Array,
  uint16: Uint16Array,
  int16: Int16Array,
  uint32: Uint32Array,
  int32: Int32Array,
  float32: Float32Array,
  float64: Float64Array,
  uint64: BigUint64Array,
  int64: BigInt64Array,
} as const;
export type GgufNumberArray = InstanceType<(typeof NUMBER_ARRAYS)[keyof typeof NUMBER_ARRAYS]>;

/**
 * Tokenizer vocabularies hold 150k strings and more, and as many token types or scores, so arrays
 * of strings are read as a StringTable and arrays of numbers as typed arrays, not as JS arrays
 * of values.
 */
export interface GgufArray {
  readonly itemType: GgufValueType;
  readonly items: readonly GgufValue[] | StringTable | GgufNumberArray;
}

export interface GgufEntry {
  readonly type: GgufValueType;
  readonly value: GgufValue;
}

/** The tensor types this engine loads: ggml type code, values per block and bytes per block. */
export const GGML_TYPES = {
  F32: { code: 0, blockSize: 1, blockBytes: 4 },
  F16: { code: 1, blockSize: 1, blockBytes: 2 },
  Q4_0: { code: 2, blockSize: QUANT_BLOCK_SIZE, blockBytes: Q4_0_BLOCK_BYTES },
  Q4_1: { code: 3, blockSize: QUANT_BLOCK_SIZE, blockBytes: LEGACY_BLOCK_BYTES.q4_1 },
  Q5_0: { code: 6, blockSize: QUANT_BLOCK_SIZE, blockBytes: LEGACY_BLOCK_BYTES.q5_0 },
  Q5_1: { code: 7, blockSize: QUANT_BLOCK_SIZE, blockBytes: LEGACY_BLOCK_BYTES.q5_1 },
  Q8_0: { code: 8, blockSize: QUANT_BLOCK_SIZE, blockBytes: Q8_0_BLOCK_BYTES },
  Q4_K: { code: 12, blockSize: QK_K, blockBytes: Q4_K_BLOCK_BYTES },
  Q5_K: { code: 13, blockSize: QK_K, blockBytes: Q5_K_BLOCK_BYTES },
  Q6_K: { code: 14, blockSize: QK_K, blockBytes: Q6_K_BLOCK_BYTES },
  Q8_K: { code: 15, blockSize: QK_K, blockBytes: Q8_K_BLOCK_BYTES },
  BF16: { code: 30, blockSize: 1, blockBytes: 2 },
} as const;
export type GgmlType = keyof typeof GGML_TYPES;

const SUPPORTED_TYPES = Object.keys(GGML_TYPES) as GgmlType[];
const TYPE_BY_CODE = new Map(SUPPORTED_TYPES.map((t) => [GGML_TYPES[t].code as number, t]));

// Names of the ggml types we cannot load, so the error says what the file holds.
const OTHER_TYPE_NAMES: Readonly<Record<number, string>> = {
  9: "Q8_1",
  10: "Q2_K",
  11: "Q3_K",
  16: "IQ2_XXS",
  17: "IQ2_XS",
  18: "IQ3_XXS",
  19: "IQ1_S",
  20: "IQ4_NL",
  21: "IQ3_S",
  22: "IQ2_S",
  23: "IQ4_XS",
  24: "I8",
  25: "I16",
  26: "I32",
  27: "I64",
  28: "F64",
  29: "IQ1_M",
};

export interface GgufTensorInfo {
  readonly name: string;
  /** Dimensions as stored: ne0 (contiguous in memory) first, so a [rows, cols] matrix is [cols, rows]. */
  readonly dims: readonly number[];
  readonly type: GgmlType;
  /** Byte offset from the start of the data section. */
  readonly offset: number;
  readonly byteLength: number;
}

export interface GgufHeader {
  readonly path: string;
  readonly version: number;
  readonly metadata: ReadonlyMap<string, GgufEntry>;
  /** In the order the file lists them. */
  readonly tensors: ReadonlyMap<string, GgufTensorInfo>;
  readonly alignment: number;
  /** Absolute file offset of the data section. */
  readonly dataStart: number;
  readonly fileSize: number;
}

export const GGUF_MAGIC = "GGUF";
export const GGUF_DEFAULT_ALIGNMENT = 32;
/** ggml tensors have at most this many dimensions. */
export const GGUF_MAX_DIMS = 4;
const SUPPORTED_VERSIONS = [2, 3];
// Arrays may nest; real files use one level. The limit keeps a hostile file from exhausting the stack.
const MAX_ARRAY_NESTING = 8;
const WINDOW_BYTES = 1 << 20;
const RECONVERT = "re-download the file or convert it again with a current llama.cpp";

/** Bytes of a tensor of `type` with dimensions `dims`, or undefined when ne0 is not whole blocks. */
export function ggmlByteLength(type: GgmlType, dims: readonly number[]): number | undefined {
  const { blockSize, blockBytes } = GGML_TYPES[type];
  if (dims.length > 0 && dims[0] % blockSize !== 0) return undefined;
  return (dims.reduce((n, d) => n * d, 1) / blockSize) * blockBytes;
}

/** Parses and validates a GGUF file's header without reading any tensor data. */
export function readGgufHeader(path: string): GgufHeader {
  const fd = openForReading(path);
  try {
    return new HeaderReader(fd, path).read();
  } finally {
    closeSync(fd);
  }
}

/** A split GGUF part's name, as llama.cpp's gguf-split writes them: `name-00001-of-00003.gguf`. */
export const SPLIT_NAME = /-(\d{5})-of-(\d{5})\.gguf$/i;

/** Every part's path of the split GGUF file whose part `path` names, in order; [path] for a file not named as a part. */
export function ggufPartPaths(path: string): string[] {
  const name = SPLIT_NAME.exec(path);
  if (!name) return [path];
  const stem = path.slice(0, name.index);
  return Array.from({ length: Number(name[2]) }, (_, i) => `${stem}-${String(i + 1).padStart(5, "0")}-of-${name[2]}.gguf`);
}

/**
 * The headers of every part of a GGUF file split by llama.cpp's gguf-split, in order, given the
 * first one's (whose metadata says `split.count`); a file that is not split is its one part. Each
 * part is a GGUF file of its own holding some of the tensors; together they must hold
 * `split.tensors.count`, each once.
 */
export function readGgufParts(first: GgufHeader): GgufHeader[] {
  const count = metadataNumber(first, "split.count") ?? 1;
  if (count <= 1) return [first];
  const name = SPLIT_NAME.exec(first.path);
  if (!name || Number(name[1]) !== 1 || Number(name[2]) !== count) {
    throw new CheckpointError(
      `${first.path} is part of a GGUF file split in ${count}; pass its first part, named …-00001-of-${String(count).padStart(5, "0")}.gguf`,
    );
  }
  const parts = ggufPartPaths(first.path).map((path, i) => {
    const part = i === 0 ? first : readGgufHeader(path);
    if (metadataNumber(part, "split.no") !== i) throw new CheckpointError(`${path}: split.no is not ${i}; ${RECONVERT}`);
    return part;
  });
  const names = new Set(parts.flatMap((part) => [...part.tensors.keys()]));
  const total = parts.reduce((n, part) => n + part.tensors.size, 0);
  const expected = metadataNumber(first, "split.tensors.count") ?? total;
  if (names.size !== total || total !== expected) {
    throw new CheckpointError(
      `${first.path}: its ${count} parts hold ${total} tensors (${names.size} distinct), not the ${expected} split.tensors.count says; ${RECONVERT}`,
    );
  }
  return parts;
}

/**
 * Types read rather than mapped. Q8_0 and Q4_0 are rewritten in place into the kernels' row layout
 * (copying every page on write costs more than reading them); Q4_1, Q5_0 and Q5_1 are re-encoded
 * into new buffers, and a mapping's pages, once read, would stay resident beside the copy.
 */
const READ_TYPES: ReadonlySet<GgmlType> = new Set(["Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1"]);

/** A map covers whole pages: for a norm's few kilobytes the pages on either side cost more than a copy. */
const MAP_MIN_BYTES = 64 * 1024;

/**
 * Tensors' bytes: all tensors, or only `names` (each must be in the file), in the order of
 * `names` (or of the header). Where the native addon can map the file, each is a private
 * copy-on-write map of its bytes, read from the page cache as it is first used instead of copied
 * into fresh memory (a 7B Q4_K_M file loads in seconds); otherwise, and for READ_TYPES and
 * tensors under MAP_MIN_BYTES, each is read into a fresh buffer of its own. Either way each starts
 * 4-byte aligned, so typed-array views of it work.
 */
export function readGgufTensors(header: GgufHeader, names?: Iterable<string>): Map<string, Uint8Array<ArrayBuffer>> {
  const infos = [...(names ?? header.tensors.keys())].map((name) => {
    const info = header.tensors.get(name);
    if (!info) throw new CheckpointError(`${header.path}: has no tensor "${name}"; the file may belong to a different model`);
    return info;
  });
  const kernels = nativeKernels();
  // Tensor data starts at multiples of the file's alignment.
  const mappable = kernels !== undefined && header.dataStart % 4 === 0 && header.alignment % 4 === 0;
  let fd: number | undefined;
  try {
    const read = new Map<string, Uint8Array<ArrayBuffer>>();
    for (const info of [...infos].sort((a, b) => a.offset - b.offset)) {
      const position = header.dataStart + info.offset;
      const map = mappable && !READ_TYPES.has(info.type) && info.byteLength >= MAP_MIN_BYTES;
      const mapped = map ? kernels.mapFile(header.path, position, info.byteLength) : null;
      if (mapped) {
        read.set(info.name, new Uint8Array(mapped, mapped.byteLength - info.byteLength, info.byteLength));
        continue;
      }
      const data = new Uint8Array(info.byteLength);
      fd ??= openForReading(header.path);
      readAll(fd, data, position, header.path, info.name);
      read.set(info.name, data);
    }
    return new Map(infos.map((info) => [info.name, read.get(info.name) as Uint8Array<ArrayBuffer>]));
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
}

// Typed metadata accessors: undefined when the key is absent, a CheckpointError naming the key
// when it holds the wrong type.

export function metadataNumber(header: GgufHeader, key: string): number | undefined {
  const entry = header.metadata.get(key);
  if (entry === undefined) return undefined;
  const n = asNumber(entry.value);
  if (n === undefined) return wrongType(header, key, entry, "a number");
  return n;
}

export function metadataString(header: GgufHeader, key: string): string | undefined {
  const entry = header.metadata.get(key);
  if (entry === undefined) return undefined;
  return typeof entry.value === "string" ? entry.value : wrongType(header, key, entry, "a string");
}

export function metadataBool(header: GgufHeader, key: string): boolean | undefined {
  const entry = header.metadata.get(key);
  if (entry === undefined) return undefined;
  return typeof entry.value === "boolean" ? entry.value : wrongType(header, key, entry, "a bool");
}

export function metadataStrings(header: GgufHeader, key: string): StringTable | undefined {
  const entry = header.metadata.get(key);
  if (entry === undefined) return undefined;
  const value = entry.value;
  if (!isArray(value) || !(value.items instanceof StringTable)) return wrongType(header, key, entry, "an array of strings");
  return value.items;
}

/** An array of numbers as numbers (64-bit integers must be safe integers). */
export function metadataNumbers(header: GgufHeader, key: string): ArrayLike<number> | undefined {
  const entry = header.metadata.get(key);
  if (entry === undefined) return undefined;
  const items = isArray(entry.value) ? entry.value.items : undefined;
  if (items instanceof BigInt64Array || items instanceof BigUint64Array) {
    const numbers = Float64Array.from(items, Number);
    return numbers.every(Number.isSafeInteger) ? numbers : wrongType(header, key, entry, "an array of numbers");
  }
  return ArrayBuffer.isView(items) ? items : wrongType(header, key, entry, "an array of numbers");
}

function asNumber(value: GgufValue): number | undefined {
  if (typeof value === "number") return value;
  if (typeof value === "bigint" && Number.isSafeInteger(Number(value))) return Number(value);
  return undefined;
}

function isArray(value: GgufValue): value is GgufArray {
  return typeof value === "object";
}

function describeType(entry: GgufEntry): string {
  return isArray(entry.value) ? `an array of ${entry.value.itemType}` : entry.type;
}

function wrongType(header: GgufHeader, key: string, entry: GgufEntry, expected: string): never {
  throw new CheckpointError(`${header.path}: metadata key "${key}" holds ${describeType(entry)}, expected ${expected}; ${RECONVERT}`);
}

/** Parses the header through a window of the file, checking every length against the file size. */
class HeaderReader {
  private readonly fileSize: number;
  private readonly window = new Uint8Array(WINDOW_BYTES);
  private readonly view = new DataView(this.window.buffer);
  /** File offset of window[0], and how many window bytes are valid. */
  private windowStart = 0;
  private windowLength = 0;
  private pos = 0;
  /** What is being read, for error messages. */
  private context = "the header";
  private readonly utf8 = new TextDecoder("utf-8", { ignoreBOM: true });

  constructor(
    private readonly fd: number,
    private readonly path: string,
  ) {
    this.fileSize = fstatSync(fd).size;
  }

  read(): GgufHeader {
    const magic = this.bytes(4);
    if (Buffer.from(magic).toString("latin1") !== GGUF_MAGIC) {
      const hex = Buffer.from(magic).toString("hex");
      this.fail(`does not start with the GGUF magic "GGUF" (found bytes ${hex}); it is not a GGUF file`);
    }
    const version = this.u32();
    if (!SUPPORTED_VERSIONS.includes(version)) {
      // A big-endian file shows its version byte-swapped.
      const hint = SUPPORTED_VERSIONS.includes(swap32(version)) ? "; it is a big-endian GGUF, only little-endian files are supported" : "";
      this.fail(`is GGUF version ${version}; only versions ${SUPPORTED_VERSIONS.join(" and ")} are supported${hint}`);
    }
    const tensorCount = this.count("the tensor count", 8 + 4 + 8 + 4 + 8);
    const metadataCount = this.count("the metadata count", 8 + 4 + 1);

    const metadata = new Map<string, GgufEntry>();
    for (let i = 0; i < metadataCount; i++) {
      this.context = `metadata entry ${i}`;
      const key = this.string();
      this.context = `metadata key "${key}"`;
      if (metadata.has(key)) this.fail(`has metadata key "${key}" twice`);
      const type = this.valueType();
      metadata.set(key, { type, value: this.value(type, 0) });
    }
    const alignment = this.alignment(metadata.get("general.alignment"));

    const infos: GgufTensorInfo[] = [];
    const names = new Set<string>();
    for (let i = 0; i < tensorCount; i++) {
      this.context = `tensor info ${i}`;
      const name = this.string();
      this.context = `the info of tensor "${name}"`;
      if (names.has(name)) this.fail(`lists tensor "${name}" twice`);
      names.add(name);
      infos.push(this.tensorInfo(name, alignment));
    }
    const dataStart = alignUp(this.pos, alignment);
    checkLayout(infos, dataStart, this.fileSize, this.path);
    return {
      path: this.path,
      version,
      metadata,
      tensors: new Map(infos.map((t) => [t.name, t])),
      alignment,
      dataStart,
      fileSize: this.fileSize,
    };
  }

  private tensorInfo(name: string, alignment: number): GgufTensorInfo {
    const nDims = this.u32();
    if (nDims < 1 || nDims > GGUF_MAX_DIMS) {
      this.fail(`gives tensor "${name}" ${nDims} dimensions; ggml tensors have 1 to ${GGUF_MAX_DIMS}`);
    }
    const dims = Array.from({ length: nDims }, () => this.u64());
    const elements = dims.reduce((n, d) => n * d, 1n);
    if (elements > BigInt(Number.MAX_SAFE_INTEGER)) this.fail(`gives tensor "${name}" dimensions [${dims}], far too large`);
    const code = this.u32();
    const type = TYPE_BY_CODE.get(code);
    if (type === undefined) {
      const known = OTHER_TYPE_NAMES[code];
      const what =
        known === undefined
          ? `unknown ggml type ${code} (the file may be corrupt or newer than this reader)`
          : `ggml type ${known} (${code})`;
      throw new CheckpointError(
        `${this.path}: tensor "${name}" has ${what}; supported types are ${SUPPORTED_TYPES.join(", ")}: ` +
          "use a GGUF whose weights are in one of those (llama-quantize can convert)",
      );
    }
    const shape = dims.map(Number);
    const byteLength = ggmlByteLength(type, shape);
    if (byteLength === undefined) {
      this.fail(
        `tensor "${name}" of type ${type} has ${shape[0]} values per row, not a multiple of its block size ${GGML_TYPES[type].blockSize}`,
      );
    }
    const offset = this.u64();
    if (offset > BigInt(this.fileSize))
      this.fail(`tensor "${name}" starts at data offset ${offset}, past the end of the ${this.fileSize}-byte file (it is truncated)`);
    if (Number(offset) % alignment !== 0) {
      this.fail(`tensor "${name}" starts at data offset ${offset}, which is not a multiple of the alignment ${alignment}`);
    }
    return { name, dims: shape, type, offset: Number(offset), byteLength };
  }

  private alignment(entry: GgufEntry | undefined): number {
    if (entry === undefined) return GGUF_DEFAULT_ALIGNMENT;
    const value = entry.value;
    if (entry.type !== "uint32" || typeof value !== "number" || value === 0 || (value & (value - 1)) !== 0) {
      this.fail(`has general.alignment ${describeValue(entry)}; it must be a uint32 power of two`);
    }
    return value;
  }

  private value(type: GgufValueType, depth: number): GgufValue {
    switch (type) {
      case "uint8":
        return this.bytes(1)[0];
      case "int8":
        return this.view.getInt8(this.at(1));
      case "uint16":
        return this.view.getUint16(this.at(2), true);
      case "int16":
        return this.view.getInt16(this.at(2), true);
      case "uint32":
        return this.u32();
      case "int32":
        return this.view.getInt32(this.at(4), true);
      case "float32":
        return this.view.getFloat32(this.at(4), true);
      case "float64":
        return this.view.getFloat64(this.at(8), true);
      case "uint64":
        return this.u64();
      case "int64":
        return this.view.getBigInt64(this.at(8), true);
      case "bool": {
        const b = this.bytes(1)[0];
        if (b > 1) this.fail(`${this.context} holds bool byte ${b}; a bool is 0 or 1`);
        return b === 1;
      }
      case "string":
        return this.string();
      case "array": {
        if (depth >= MAX_ARRAY_NESTING) this.fail(`${this.context} nests arrays more than ${MAX_ARRAY_NESTING} deep`);
        const itemType = this.valueType();
        const count = this.count(`the length of ${this.context}`, minimumBytes(itemType));
        if (itemType === "string") return { itemType, items: this.strings(count) };
        if (Object.hasOwn(NUMBER_ARRAYS, itemType)) return { itemType, items: this.numbers(itemType as keyof typeof NUMBER_ARRAYS, count) };
        const items = new Array<GgufValue>(count);
        for (let i = 0; i < count; i++) items[i] = this.value(itemType, depth + 1);
        return { itemType, items };
      }
    }
  }

  private valueType(): GgufValueType {
    const code = this.u32();
    const type = GGUF_VALUE_TYPES[code];
    if (type === undefined)
      this.fail(`${this.context} has unknown value type ${code}; value types are 0 to ${GGUF_VALUE_TYPES.length - 1}`);
    return type;
  }

  /** A u64 count of items at least `itemBytes` long each, checked against the bytes left. */
  private count(what: string, itemBytes: number): number {
    const n = this.u64();
    const left = this.fileSize - this.pos;
    if (n * BigInt(itemBytes) > BigInt(left)) {
      this.fail(`gives ${what} as ${n}, but only ${left} bytes follow; the file is truncated or corrupt`);
    }
    return Number(n);
  }

  private string(): string {
    return this.utf8.decode(this.stringBytes());
  }

  private numbers(itemType: keyof typeof NUMBER_ARRAYS, count: number): GgufNumberArray {
    const items = new NUMBER_ARRAYS[itemType](count);
    // Element by element through the little-endian reads: the file's bytes are not aligned.
    for (let i = 0; i < count; i++) items[i] = this.value(itemType, 0) as never;
    return items;
  }

  private strings(count: number): StringTable {
    // A first pass over the lengths sizes the table exactly: no outgrown copies are left behind.
    const start = this.pos;
    let total = 0;
    for (let i = 0; i < count; i++) {
      const length = this.stringLength();
      this.pos += length;
      total += length;
    }
    this.pos = start;
    const table = new StringTableBuilder(count, total);
    for (let i = 0; i < count; i++) table.add(this.stringBytes());
    return table.finish();
  }

  /** A string's u64 length, checked against the bytes left. */
  private stringLength(): number {
    const length = this.u64();
    const left = this.fileSize - this.pos;
    if (length > BigInt(left)) {
      this.fail(
        `has a string of ${length} bytes in ${this.context}, but only ${left} bytes are left in the file; it is truncated or corrupt`,
      );
    }
    return Number(length);
  }

  /** A string's UTF-8 bytes, checked to be valid (a view valid until the next read). */
  private stringBytes(): Uint8Array {
    const bytes = this.bytes(this.stringLength());
    if (!isUtf8(bytes)) this.fail(`has a string in ${this.context} that is not valid UTF-8`);
    return bytes;
  }

  private u32(): number {
    return this.view.getUint32(this.at(4), true);
  }

  private u64(): bigint {
    return this.view.getBigUint64(this.at(8), true);
  }

  /** Consumes n bytes and returns their index in the window, for reading through `view`. */
  private at(n: number): number {
    this.ensure(n);
    this.pos += n;
    return this.pos - n - this.windowStart;
  }

  /** Consumes n bytes and returns them (a view of the window, valid until the next read). */
  private bytes(n: number): Uint8Array {
    if (n > WINDOW_BYTES) {
      // Rare (a huge chat template); read it past the window, which stays as it is. The
      // caller has checked that the file holds n more bytes.
      const long = new Uint8Array(n);
      readAll(this.fd, long, this.pos, this.path, undefined);
      this.pos += n;
      return long;
    }
    this.ensure(n);
    const start = this.pos - this.windowStart;
    this.pos += n;
    return this.window.subarray(start, start + n);
  }

  /** Makes bytes [pos, pos + n) available in the window. */
  private ensure(n: number): void {
    if (this.pos + n > this.fileSize) {
      this.fail(`ends inside ${this.context} (byte ${this.pos} + ${n} of ${this.fileSize}); the file is truncated`);
    }
    if (this.pos >= this.windowStart && this.pos + n <= this.windowStart + this.windowLength) return;
    this.windowStart = this.pos;
    this.windowLength = Math.min(this.window.byteLength, this.fileSize - this.pos);
    readAll(this.fd, this.window.subarray(0, this.windowLength), this.pos, this.path, undefined);
  }

  private fail(problem: string): never {
    throw new CheckpointError(`${this.path}: ${problem}; ${RECONVERT}`);
  }
}

function checkLayout(infos: readonly GgufTensorInfo[], dataStart: number, fileSize: number, path: string): void {
  for (const t of infos) {
    if (dataStart + t.offset + t.byteLength > fileSize) {
      throw new CheckpointError(
        `${path}: tensor "${t.name}" needs bytes ${dataStart + t.offset} to ${dataStart + t.offset + t.byteLength} but the file is ` +
          `${fileSize} bytes long; it is truncated, ${RECONVERT}`,
      );
    }
  }
  // Empty tensors occupy no bytes, so they cannot overlap anything.
  const byOffset = infos.filter((t) => t.byteLength > 0).sort((a, b) => a.offset - b.offset);
  for (let i = 1; i < byOffset.length; i++) {
    const prev = byOffset[i - 1];
    const t = byOffset[i];
    if (t.offset < prev.offset + prev.byteLength) {
      throw new CheckpointError(
        `${path}: tensor "${t.name}" (data bytes ${t.offset}-${t.offset + t.byteLength}) overlaps tensor "${prev.name}" ` +
          `(data bytes ${prev.offset}-${prev.offset + prev.byteLength}); ${RECONVERT}`,
      );
    }
  }
}

/** The fewest bytes an item of the type can take, to bound array counts before allocating. */
function minimumBytes(type: GgufValueType): number {
  switch (type) {
    case "uint8":
    case "int8":
    case "bool":
      return 1;
    case "uint16":
    case "int16":
      return 2;
    case "uint32":
    case "int32":
    case "float32":
      return 4;
    case "uint64":
    case "int64":
    case "float64":
    case "string":
      return 8;
    case "array":
      return 12;
  }
}

function describeValue(entry: GgufEntry): string {
  return isArray(entry.value) ? describeType(entry) : `${String(entry.value)} (${entry.type})`;
}

function alignUp(n: number, alignment: number): number {
  return Math.ceil(n / alignment) * alignment;
}

function swap32(n: number): number {
  return ((n & 0xff) << 24) | ((n & 0xff00) << 8) | ((n >>> 8) & 0xff00) | (n >>> 24);
}

function openForReading(path: string): number {
  try {
    return openSync(path, "r");
  } catch (error) {
    throw new CheckpointError(`cannot open checkpoint file ${path}: ${(error as Error).message}`, { cause: error });
  }
}

/** Fills `target` from `position`, or says which part of the file is missing. */
function readAll(fd: number, target: Uint8Array, position: number, path: string, tensor: string | undefined): void {
  if (readFully(fd, target, position) < target.byteLength) {
    const what = tensor === undefined ? "the header" : `tensor "${tensor}"`;
    throw new CheckpointError(`${path}: file ended while reading ${what}; it may have changed during loading; ${RECONVERT}`);
  }
}
