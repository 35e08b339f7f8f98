/**
 * Writes GGUF version 3 files (the layout is described in gguf.ts): metadata of any value type
 * and tensors of the types the reader loads. Tensor bytes are streamed to the file one tensor at
 * a time, and a tensor's data may be a function called only when that tensor is written, so a
 * large model never has to be in memory at once.
 */
import {
  GGML_TYPES,
  GGUF_DEFAULT_ALIGNMENT,
  GGUF_MAGIC,
  GGUF_MAX_DIMS,
  GGUF_VALUE_TYPES,
  ggmlByteLength,
  type GgmlType,
  type GgufArray,
  type GgufEntry,
  type GgufValue,
  type GgufValueType,
} from "./gguf.js";
import { writeAtomically } from "./file-io.js";

export const GGUF_WRITE_VERSION = 3;

export interface GgufTensorToWrite {
  name: string;
  type: GgmlType;
  /** Dimensions in GGUF order: ne0 (contiguous) first, so a [rows, cols] matrix is [cols, rows]. */
  dims: readonly number[];
  /** The tensor's bytes, or a function that makes them when the tensor is written. */
  data: Uint8Array | (() => Uint8Array);
}

const INT_RANGES: Partial<Record<GgufValueType, [number, number]>> = {
  uint8: [0, 0xff],
  int8: [-0x80, 0x7f],
  uint16: [0, 0xffff],
  int16: [-0x8000, 0x7fff],
  uint32: [0, 0xffffffff],
  int32: [-0x80000000, 0x7fffffff],
};
const BIGINT_RANGES: Partial<Record<GgufValueType, [bigint, bigint]>> = {
  uint64: [0n, 2n ** 64n - 1n],
  int64: [-(2n ** 63n), 2n ** 63n - 1n],
};

/**
 * Writes `metadata` (in its iteration order) and `tensors` (in the order given) to `path`. The
 * alignment is `general.alignment` when the metadata sets it, else 32. The file appears under
 * `path` only once complete.
 */
export function writeGguf(path: string, metadata: Iterable<readonly [string, GgufEntry]>, tensors: readonly GgufTensorToWrite[]): void {
  const header = new ByteBuilder();
  header.bytes(Buffer.from(GGUF_MAGIC, "latin1"));
  header.u32(GGUF_WRITE_VERSION);
  header.u64(BigInt(tensors.length));
  const entries = [...metadata];
  header.u64(BigInt(entries.length));
  let alignment = GGUF_DEFAULT_ALIGNMENT;
  for (const [key, entry] of entries) {
    header.string(key);
    header.u32(typeCode(entry.type, key));
    writeValue(header, entry.type, entry.value, key);
    if (key === "general.alignment") alignment = checkAlignment(entry);
  }

  const sizes: number[] = [];
  const names = new Set<string>();
  let offset = 0;
  for (const t of tensors) {
    if (names.has(t.name)) throw new RangeError(`cannot write tensor "${t.name}" twice`);
    names.add(t.name);
    if (t.dims.length < 1 || t.dims.length > GGUF_MAX_DIMS || !t.dims.every((d) => Number.isSafeInteger(d) && d >= 0)) {
      throw new RangeError(`tensor "${t.name}" has dims [${t.dims}]; GGUF tensors have 1 to ${GGUF_MAX_DIMS} non-negative dims`);
    }
    const size = ggmlByteLength(t.type, t.dims);
    if (size === undefined) {
      throw new RangeError(
        `tensor "${t.name}" of type ${t.type} needs ne0 (${t.dims[0]}) to be a multiple of ${GGML_TYPES[t.type].blockSize}`,
      );
    }
    header.string(t.name);
    header.u32(t.dims.length);
    for (const d of t.dims) header.u64(BigInt(d));
    header.u32(GGML_TYPES[t.type].code);
    header.u64(BigInt(offset));
    sizes.push(size);
    offset = alignUp(offset + size, alignment);
  }
  header.bytes(new Uint8Array(alignUp(header.length, alignment) - header.length));

  writeAtomically(path, (write) => {
    write(header.toBytes());
    tensors.forEach((t, i) => {
      const data = typeof t.data === "function" ? t.data() : t.data;
      if (data.byteLength !== sizes[i]) {
        throw new RangeError(`tensor "${t.name}" of type ${t.type} and dims [${t.dims}] needs ${sizes[i]} bytes, got ${data.byteLength}`);
      }
      write(data);
      write(new Uint8Array(alignUp(sizes[i], alignment) - sizes[i]));
    });
  });
}

function writeValue(out: ByteBuilder, type: GgufValueType, value: GgufValue, key: string): void {
  const bad = (): never => {
    throw new RangeError(`metadata "${key}": ${describe(value)} is not a valid ${type}`);
  };
  const intRange = INT_RANGES[type];
  const bigRange = BIGINT_RANGES[type];
  if (intRange !== undefined) {
    if (!Number.isInteger(value) || (value as number) < intRange[0] || (value as number) > intRange[1]) bad();
    out.fixed(type, value as number);
  } else if (bigRange !== undefined) {
    if (typeof value !== "bigint" || value < bigRange[0] || value > bigRange[1]) bad();
    out.fixed(type, value as bigint);
  } else if (type === "float32" || type === "float64") {
    if (typeof value !== "number") bad();
    out.fixed(type, value as number);
  } else if (type === "bool") {
    if (typeof value !== "boolean") bad();
    out.bytes(new Uint8Array([value ? 1 : 0]));
  } else if (type === "string") {
    if (typeof value !== "string") bad();
    out.string(value as string);
  } else {
    if (typeof value !== "object") bad();
    const { itemType, items } = value as GgufArray;
    out.u32(typeCode(itemType, key));
    out.u64(BigInt(items.length));
    for (const item of items) writeValue(out, itemType, item, key);
  }
}

function typeCode(type: GgufValueType, key: string): number {
  const code = GGUF_VALUE_TYPES.indexOf(type);
  if (code < 0) throw new RangeError(`metadata "${key}": unknown value type ${String(type)}`);
  return code;
}

function checkAlignment(entry: GgufEntry): number {
  const v = entry.value;
  if (entry.type !== "uint32" || typeof v !== "number" || v === 0 || (v & (v - 1)) !== 0) {
    throw new RangeError(`general.alignment must be a uint32 power of two, got ${describe(v)}`);
  }
  return v;
}

function describe(value: GgufValue): string {
  return typeof value === "object" ? "an array" : `${typeof value} ${String(value)}`;
}

type Setter = (view: DataView, at: number, v: number | bigint) => void;
const FIXED_TYPES: Partial<Record<GgufValueType, { bytes: number; set: Setter }>> = {
  uint8: { bytes: 1, set: (d, at, v) => d.setUint8(at, v as number) },
  int8: { bytes: 1, set: (d, at, v) => d.setInt8(at, v as number) },
  uint16: { bytes: 2, set: (d, at, v) => d.setUint16(at, v as number, true) },
  int16: { bytes: 2, set: (d, at, v) => d.setInt16(at, v as number, true) },
  uint32: { bytes: 4, set: (d, at, v) => d.setUint32(at, v as number, true) },
  int32: { bytes: 4, set: (d, at, v) => d.setInt32(at, v as number, true) },
  float32: { bytes: 4, set: (d, at, v) => d.setFloat32(at, v as number, true) },
  float64: { bytes: 8, set: (d, at, v) => d.setFloat64(at, v as number, true) },
  uint64: { bytes: 8, set: (d, at, v) => d.setBigUint64(at, v as bigint, true) },
  int64: { bytes: 8, set: (d, at, v) => d.setBigInt64(at, v as bigint, true) },
};

function unreachable(type: GgufValueType): never {
  throw new TypeError(`${type} is not a fixed-size type`);
}

/** A growing little-endian byte buffer for the header. */
class ByteBuilder {
  private buffer = new Uint8Array(1 << 16);
  private view = new DataView(this.buffer.buffer);
  length = 0;

  u32(n: number): void {
    this.fixed("uint32", n);
  }

  u64(n: bigint): void {
    this.fixed("uint64", n);
  }

  string(s: string): void {
    const bytes = Buffer.from(s, "utf8");
    this.u64(BigInt(bytes.byteLength));
    this.bytes(bytes);
  }

  bytes(b: Uint8Array): void {
    this.reserve(b.byteLength);
    this.buffer.set(b, this.length);
    this.length += b.byteLength;
  }

  fixed(type: GgufValueType, v: number | bigint): void {
    const { bytes, set } = FIXED_TYPES[type] ?? unreachable(type);
    this.reserve(bytes);
    set(this.view, this.length, v);
    this.length += bytes;
  }

  toBytes(): Uint8Array {
    return this.buffer.subarray(0, this.length);
  }

  private reserve(n: number): void {
    if (this.length + n <= this.buffer.byteLength) return;
    const grown = new Uint8Array(Math.max(this.buffer.byteLength * 2, this.length + n));
    grown.set(this.buffer.subarray(0, this.length));
    this.buffer = grown;
    this.view = new DataView(grown.buffer);
  }
}

function alignUp(n: number, alignment: number): number {
  return Math.ceil(n / alignment) * alignment;
}
