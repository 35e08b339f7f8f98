/**
 * Reader and writer for the safetensors format: an 8-byte little-endian header length N,
 * N bytes of UTF-8 JSON mapping tensor names to {dtype, shape, data_offsets}, then the
 * tensor bytes, with offsets relative to the start of that data region.
 *
 * Tensors are read one at a time at their file offset into their own ArrayBuffer, so a
 * checkpoint larger than half the machine's memory still loads, and every tensor's bytes
 * start at offset 0 of their buffer, which typed-array views require to be aligned.
 */
import { closeSync, fstatSync, openSync } from "node:fs";
import { readFully, writeAtomically } from "./file-io.js";

/** The element types the compute kernels work in. */
export type DType = "F32" | "F16" | "BF16";

/** A checkpoint file that is missing, truncated or malformed; the message says which file and what to do. */
export class CheckpointError extends Error {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "CheckpointError";
  }
}

/** One tensor's bytes, exactly `data.byteLength` long, at offset 0 of a buffer of its own. */
export interface RawTensor {
  name: string;
  dtype: string;
  shape: number[];
  /** Typed as a plain ArrayBuffer so typed-array views of `data.buffer` need no cast. */
  data: Uint8Array<ArrayBuffer>;
  /** The file the tensor was read from, for error messages further up. */
  file: string;
}

/** A header entry; `begin` and `end` are byte offsets relative to `dataStart`. */
export interface TensorEntry {
  dtype: string;
  shape: number[];
  begin: number;
  end: number;
}

export interface SafetensorsHeader {
  tensors: Map<string, TensorEntry>;
  /** The optional `__metadata__` string map; empty when the file has none. */
  metadata: Record<string, string>;
  /** Absolute file offset of the data region: 8 + the header length. */
  dataStart: number;
  fileSize: number;
}

/** A tensor to write; a RawTensor fits. */
export interface TensorToWrite {
  name: string;
  dtype: string;
  shape: readonly number[];
  data: Uint8Array;
}

/** A tensor to write whose bytes are made only when it is written, piece by piece. */
export interface StreamedTensorToWrite {
  name: string;
  dtype: string;
  shape: readonly number[];
  /**
   * The tensor's bytes in order, in pieces of any size. Each piece is written before the next
   * is asked for, so a generator may reuse one buffer for all of them.
   */
  chunks: () => Iterable<Uint8Array>;
}

// Every dtype we can size is loadable as raw bytes, including the integer types that
// quantized checkpoints pack their weights into; the compute side decides what it accepts.
const DTYPE_BYTES: Readonly<Record<string, number>> = {
  BOOL: 1,
  U8: 1,
  I8: 1,
  F8_E4M3: 1,
  F8_E5M2: 1,
  U16: 2,
  I16: 2,
  F16: 2,
  BF16: 2,
  U32: 4,
  I32: 4,
  F32: 4,
  U64: 8,
  I64: 8,
  F64: 8,
};

/** Bytes per element of a safetensors dtype, or undefined for a dtype this reader does not know. */
export function dtypeByteSize(dtype: string): number | undefined {
  return Object.hasOwn(DTYPE_BYTES, dtype) ? DTYPE_BYTES[dtype] : undefined;
}

const METADATA_KEY = "__metadata__";
// Far beyond any real header (a 1000-layer model's is a few MB); a larger length is garbage,
// and refusing it avoids allocating gigabytes because of one corrupt prefix.
const MAX_HEADER_BYTES = 100 * 1024 * 1024;

const REDOWNLOAD = "re-download or re-export the file";

/** Parses and validates the header of a safetensors file without reading any tensor data. */
export function readSafetensorsHeader(path: string): SafetensorsHeader {
  const fd = openForReading(path);
  try {
    return readHeader(fd, path);
  } finally {
    closeSync(fd);
  }
}

/**
 * Reads tensors from a safetensors file: all of them, or only `names` when given (each must
 * be in the file). Map order follows the file's data layout, so reads move forward.
 */
export function readSafetensors(path: string, names?: Iterable<string>): Map<string, RawTensor> {
  const fd = openForReading(path);
  try {
    const header = readHeader(fd, path);
    const wanted = names === undefined ? undefined : new Set(names);
    if (wanted !== undefined) {
      for (const name of wanted) {
        if (!header.tensors.has(name)) {
          throw new CheckpointError(`${path}: has no tensor "${name}"; the file may belong to a different model`);
        }
      }
    }
    const entries = [...header.tensors].filter(([name]) => wanted === undefined || wanted.has(name));
    entries.sort(([, a], [, b]) => a.begin - b.begin);
    const result = new Map<string, RawTensor>();
    for (const [name, entry] of entries) {
      if (dtypeByteSize(entry.dtype) === undefined) {
        throw new CheckpointError(
          `unsupported dtype ${entry.dtype} for tensor "${name}" in ${path}; known dtypes are ${Object.keys(DTYPE_BYTES).join(", ")}`,
        );
      }
      const data = new Uint8Array(entry.end - entry.begin);
      readAll(fd, data, header.dataStart + entry.begin, path, name);
      result.set(name, { name, dtype: entry.dtype, shape: entry.shape, data, file: path });
    }
    return result;
  } finally {
    closeSync(fd);
  }
}

/**
 * Writes tensors to a safetensors file, one after another in the order given, streaming each
 * tensor's bytes rather than assembling the file in memory. The file appears under `path`
 * only once complete, so an interrupted write never leaves a truncated checkpoint behind.
 */
export function writeSafetensors(path: string, tensors: readonly TensorToWrite[], metadata?: Readonly<Record<string, string>>): void {
  writeSafetensorsStreamed(
    path,
    tensors.map((t) => ({ name: t.name, dtype: t.dtype, shape: t.shape, chunks: () => [t.data] })),
    metadata,
  );
}

/**
 * writeSafetensors for tensors whose bytes come in pieces, asked for one tensor at a time, so
 * that a checkpoint larger than memory can be written with one piece in memory at once.
 */
export function writeSafetensorsStreamed(
  path: string,
  tensors: readonly StreamedTensorToWrite[],
  metadata?: Readonly<Record<string, string>>,
): void {
  const header: Record<string, unknown> = {};
  if (metadata !== undefined && Object.keys(metadata).length > 0) header[METADATA_KEY] = metadata;
  const sizes: number[] = [];
  let offset = 0;
  for (const t of tensors) {
    if (t.name === METADATA_KEY || Object.hasOwn(header, t.name)) {
      throw new RangeError(`cannot write tensor "${t.name}" to ${path}: the name is reserved or repeated`);
    }
    const size = dtypeByteSize(t.dtype);
    if (size === undefined) throw new RangeError(`cannot write tensor "${t.name}" to ${path}: unknown dtype ${t.dtype}`);
    const expected = elementCount(t.shape) * size;
    header[t.name] = { dtype: t.dtype, shape: t.shape, data_offsets: [offset, offset + expected] };
    sizes.push(expected);
    offset += expected;
  }
  const json = Buffer.from(JSON.stringify(header), "utf8");
  // Spaces after the JSON are allowed by the format; padding to a multiple of 8 keeps the
  // data region 8-byte aligned for readers that map the file.
  const headerLength = Math.ceil(json.byteLength / 8) * 8;
  const prefix = Buffer.alloc(8 + headerLength, 0x20);
  prefix.writeBigUInt64LE(BigInt(headerLength), 0);
  json.copy(prefix, 8);

  writeAtomically(path, (write) => {
    write(prefix);
    tensors.forEach((t, i) => {
      // Bytes past the expected size are counted, not written, so the error can say how many came.
      let given = 0;
      for (const chunk of t.chunks()) {
        if (given + chunk.byteLength <= sizes[i]) write(chunk);
        given += chunk.byteLength;
      }
      if (given !== sizes[i]) {
        throw new RangeError(
          `cannot write tensor "${t.name}" to ${path}: shape [${t.shape.join(", ")}] of ${t.dtype} needs ${sizes[i]} bytes, data has ${given}`,
        );
      }
    });
  });
}

function openForReading(path: string): number {
  try {
    return openSync(path, "r");
  } catch (error) {
    throw new CheckpointError(`cannot open checkpoint file ${path}: ${(error as Error).message}`, { cause: error });
  }
}

function readHeader(fd: number, path: string): SafetensorsHeader {
  const fileSize = fstatSync(fd).size;
  if (fileSize < 8) {
    throw new CheckpointError(
      `${path}: file is ${fileSize} bytes, too short for the 8-byte header length of a safetensors file; ${REDOWNLOAD}`,
    );
  }
  const prefix = new Uint8Array(8);
  readAll(fd, prefix, 0, path, undefined);
  const declared = Buffer.from(prefix.buffer).readBigUInt64LE(0);
  if (declared > BigInt(fileSize - 8)) {
    throw new CheckpointError(
      `${path}: header length ${declared} exceeds the ${fileSize - 8} bytes after the length prefix; the file is truncated or not a safetensors file; ${REDOWNLOAD}`,
    );
  }
  if (declared > BigInt(MAX_HEADER_BYTES)) {
    throw new CheckpointError(
      `${path}: header length ${declared} is implausibly large (limit ${MAX_HEADER_BYTES}); the file is corrupt or not a safetensors file; ${REDOWNLOAD}`,
    );
  }
  const headerLength = Number(declared);
  const headerBytes = new Uint8Array(headerLength);
  readAll(fd, headerBytes, 8, path, undefined);

  let parsed: unknown;
  try {
    parsed = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(headerBytes));
  } catch (error) {
    throw new CheckpointError(`${path}: header is not valid UTF-8 JSON (${(error as Error).message}); ${REDOWNLOAD}`, {
      cause: error,
    });
  }
  if (!isPlainObject(parsed)) {
    throw new CheckpointError(`${path}: header is not a JSON object; ${REDOWNLOAD}`);
  }

  const dataStart = 8 + headerLength;
  const dataSize = fileSize - dataStart;
  const metadata = parseMetadata(parsed[METADATA_KEY], path);
  const tensors = new Map<string, TensorEntry>();
  for (const [name, value] of Object.entries(parsed)) {
    if (name !== METADATA_KEY) tensors.set(name, parseEntry(name, value, dataSize, path));
  }
  checkNoOverlap(tensors, path);
  return { tensors, metadata, dataStart, fileSize };
}

function parseMetadata(value: unknown, path: string): Record<string, string> {
  if (value === undefined) return {};
  if (!isPlainObject(value) || !Object.values(value).every((v) => typeof v === "string")) {
    throw new CheckpointError(`${path}: "${METADATA_KEY}" must map strings to strings; ${REDOWNLOAD}`);
  }
  return value as Record<string, string>;
}

function parseEntry(name: string, value: unknown, dataSize: number, path: string): TensorEntry {
  const fail = (problem: string): never => {
    throw new CheckpointError(`${path}: tensor "${name}" ${problem}; ${REDOWNLOAD}`);
  };
  if (!isPlainObject(value)) return fail("has a header entry that is not an object");
  const { dtype, shape, data_offsets: offsets } = value;
  if (typeof dtype !== "string") return fail("has no dtype string");
  if (!Array.isArray(shape) || !shape.every(isNonNegativeInteger)) {
    return fail(`has shape ${JSON.stringify(shape)}, which is not a list of non-negative integers`);
  }
  if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every(isNonNegativeInteger)) {
    return fail(`has data_offsets ${JSON.stringify(offsets)}, which is not a pair of non-negative integers`);
  }
  const [begin, end] = offsets as [number, number];
  if (begin > end) return fail(`has data_offsets [${begin}, ${end}] that begin after they end`);
  if (end > dataSize) {
    return fail(`ends at data byte ${end} but the file holds only ${dataSize} data bytes (the file is truncated)`);
  }
  const size = dtypeByteSize(dtype);
  // Unknown dtypes stay readable in the header; loading such a tensor is what fails.
  if (size !== undefined) {
    const expected = elementCount(shape) * size;
    if (expected !== end - begin) {
      return fail(`has shape [${shape.join(", ")}] of ${dtype}, which needs ${expected} bytes, but data_offsets span ${end - begin}`);
    }
  }
  return { dtype, shape, begin, end };
}

function checkNoOverlap(tensors: Map<string, TensorEntry>, path: string): void {
  // Empty tensors occupy no bytes, so they cannot overlap anything.
  const byStart = [...tensors].filter(([, e]) => e.end > e.begin).sort(([, a], [, b]) => a.begin - b.begin);
  for (let i = 1; i < byStart.length; i++) {
    const [prevName, prev] = byStart[i - 1];
    const [name, entry] = byStart[i];
    if (entry.begin < prev.end) {
      throw new CheckpointError(
        `${path}: tensor "${name}" (bytes ${entry.begin}-${entry.end}) overlaps tensor "${prevName}" (bytes ${prev.begin}-${prev.end}); ${REDOWNLOAD}`,
      );
    }
  }
}

/** Fills `target` from `position`, or says which part of the file is missing. */
function readAll(fd: number, target: Uint8Array, position: number, path: string, tensor: string | undefined): void {
  if (readFully(fd, target, position) < target.byteLength) {
    const what = tensor === undefined ? "the header" : `tensor "${tensor}"`;
    throw new CheckpointError(`${path}: file ended while reading ${what}; it may have changed during loading; ${REDOWNLOAD}`);
  }
}

function elementCount(shape: readonly number[]): number {
  return shape.reduce((product, dim) => product * dim, 1);
}

function isNonNegativeInteger(value: unknown): value is number {
  return Number.isSafeInteger(value) && (value as number) >= 0;
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}
