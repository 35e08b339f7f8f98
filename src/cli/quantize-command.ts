/**
 * `tiny-llm quantize`: writes an MLX-layout affine-quantized copy of a float checkpoint, one
 * tensor at a time, so memory use stays near the size of the largest tensor, not the model; or,
 * with --format gguf, a GGUF file of another type from a GGUF file (quantizeGguf).
 */
import { chmodSync, copyFileSync, existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { modelPathKind } from "../generation/load-checkpoint.js";
import { CheckpointError, INDEX_FILE, SINGLE_FILE, readJson } from "../loaders/checkpoint.js";
import { checkModelFolder } from "../loaders/model-loader.js";
import {
  dtypeByteSize,
  readSafetensors,
  readSafetensorsHeader,
  writeSafetensorsStreamed,
  type RawTensor,
  type StreamedTensorToWrite,
} from "../loaders/safetensors.js";
import { parseModelConfig } from "../models/config.js";
import { AFFINE_BITS, AFFINE_GROUP_SIZES, quantizeAffine, type AffineParams } from "../tensor/affine-quant.js";
import { DenseWeight, type DenseDType } from "../tensor/weight.js";
import { GGML_TYPES, readGgufHeader, readGgufTensors, type GgmlType, type GgufEntry, type GgufTensorInfo } from "../loaders/gguf.js";
import { writeGguf, type GgufTensorToWrite } from "../loaders/gguf-writer.js";
import { ggufModelConfig, huggingFaceTensorName } from "../loaders/gguf-model.js";
import { ggufTokenizerFiles } from "../tokenizer/gguf-tokenizer.js";
import { dequantize, quantize, type BlockQuantDType } from "../tensor/block-quant.js";
import { dequantizeK, quantizeK, type KQuantDType } from "../tensor/k-quant.js";
import { dequantizeLegacy, quantizeLegacy, type LegacyQuantDType } from "../tensor/legacy-quant.js";
import { bf16ToF32, f16ToF32, numberToF16 } from "../tensor/dtype.js";
import { UsageError } from "./errors.js";
import { MODEL_OPTION, parseOptions } from "./options.js";
import { notice, status } from "./output.js";

export const QUANTIZE_HELP = `Usage: tiny-llm quantize -m DIR --bits B --out DIR [--group-size G]
       tiny-llm quantize -m FILE.gguf --format gguf --type T --out FILE.gguf

Writes an MLX-layout quantized copy of a float checkpoint (F32, F16 or BF16 safetensors), as
mlx-lm does: the linear layers and the embedding become packed B-bit codes with a scale and a
bias per group of G input values, kept in the checkpoint's float type; norms and biases stay as
they are, and so does a matrix whose input width is not a multiple of G (config.json records
it as unquantized). Tokenizer and other small files are copied.

Options:
  -m, --model DIR     Hugging Face checkpoint folder to quantize, or a Qwen2/Qwen3 .gguf file
                      (its matrices decoded to float16 first)
  --bits B            bits per weight: 4 or 8 (also ${AFFINE_BITS.filter((b) => b !== 4 && b !== 8).join(", ")})
  --group-size G      values per scale and bias: ${AFFINE_GROUP_SIZES.join(", ")} (default 64)
  --out DIR           folder to write; it must not exist or be empty
  --format F          mlx (the default) or gguf
  --type T            with --format gguf: f16, q8_0, q4_0 or q4_k. Every matrix of the GGUF file
                      --model is decoded and written in type T (q4_k: Q5_0 for a matrix whose
                      input width is not a multiple of 256, as llama-quantize falls back); other
                      tensors and all metadata are copied
  -h, --help          show this help`;

/** Files larger than this beside the weights are other copies of them (.bin, .gguf), not copied. */
const MAX_COPIED_FILE_BYTES = 64 * 2 ** 20;
/** Values quantized per step: a few MB of float32 however large the matrix. */
const BLOCK_VALUES = 2 ** 20;
const FLOAT_DTYPES: Readonly<Record<string, DenseDType>> = { F32: "f32", F16: "f16", BF16: "bf16" };

export interface QuantizeSummary {
  /** Modules written quantized, and those kept in float because G does not divide their input width. */
  quantized: string[];
  unquantized: string[];
  /** Files of the input folder not copied because of their size. */
  skippedFiles: string[];
  bytesIn: number;
  bytesOut: number;
}

/** The weight files of the checkpoint in `dir`: its shards in order of first appearance in the index, or the single file. */
function weightFiles(dir: string, indexPath: string): string[] {
  if (!existsSync(indexPath)) {
    if (!existsSync(join(dir, SINGLE_FILE))) throw new CheckpointError(`no checkpoint in ${dir}: expected ${SINGLE_FILE} or ${INDEX_FILE}`);
    return [SINGLE_FILE];
  }
  const map = (readJson(indexPath, "checkpoint index") as { weight_map?: unknown } | null)?.weight_map;
  if (typeof map !== "object" || map === null) throw new CheckpointError(`${indexPath} has no "weight_map" object; re-download the file`);
  return [...new Set(Object.values(map as Record<string, unknown>).map(String))];
}

interface Planned {
  file: string;
  tensors: StreamedTensorToWrite[];
}

/** Called after each tensor is written: `done` of `total`. */
export type ProgressListener = (done: number, total: number) => void;

/**
 * Creates `dir` and any missing folders above it. Not mkdirSync's `recursive`, which spins
 * forever where the kernel refuses a folder with ENOENT under a parent that exists (/proc).
 */
function createFolder(dir: string): void {
  const missing: string[] = [];
  for (let d = resolve(dir); !existsSync(d); d = dirname(d)) missing.unshift(d);
  for (const d of missing) {
    try {
      mkdirSync(d);
    } catch (err) {
      throw new UsageError(`cannot create the folder ${d} (${(err as NodeJS.ErrnoException).code}); choose a place you can write to`);
    }
  }
}

/** A function to call as each of `total` tensors is written. */
function progressTicker(total: number, onProgress: ProgressListener | undefined): () => void {
  let done = 0;
  return () => onProgress?.(++done, total);
}

/**
 * Quantizes the checkpoint in `modelDir` into `outDir`. Everything is checked before anything is
 * written, and a failure part way removes what was written.
 */
export function quantizeCheckpoint(modelDir: string, outDir: string, params: AffineParams, onProgress?: ProgressListener): QuantizeSummary {
  if (modelPathKind(modelDir) !== "folder") throw new UsageError(`--model ${modelDir} is not a checkpoint folder`);
  checkModelFolder(modelDir);
  const configPath = join(modelDir, "config.json");
  const rawConfig = readJson(configPath, "model config") as Record<string, unknown>;
  const config = parseModelConfig(rawConfig, configPath);
  if (config.quantization) {
    throw new CheckpointError(`${modelDir} is already quantized (config.json has a "quantization" section); quantize a float checkpoint`);
  }
  const indexPath = join(modelDir, INDEX_FILE);
  const files = weightFiles(modelDir, indexPath);
  const headers = files.map((file) => ({ file, header: readSafetensorsHeader(join(modelDir, file)) }));
  for (const { file, header } of headers) {
    for (const [name, entry] of header.tensors) {
      if (!(entry.dtype in FLOAT_DTYPES)) {
        const already = name.endsWith(".scales") || entry.dtype === "U32" ? " (it looks already quantized)" : "";
        throw new CheckpointError(
          `${join(modelDir, file)}: tensor "${name}" has dtype ${entry.dtype}; quantize reads F32, F16 and BF16 checkpoints${already}`,
        );
      }
    }
  }
  if (existsSync(outDir) && (!statSync(outDir).isDirectory() || readdirSync(outDir).length > 0)) {
    throw new UsageError(`--out ${outDir} already exists and is not an empty folder; choose a new folder`);
  }

  const summary: QuantizeSummary = { quantized: [], unquantized: [], skippedFiles: [], bytesIn: 0, bytesOut: 0 };
  const weightMap: Record<string, string> = {};
  const planned: Planned[] = headers.map(({ file, header }) => {
    const path = join(modelDir, file);
    const tensors: StreamedTensorToWrite[] = [];
    // Forward through the file, as the tensors lie.
    for (const [name, entry] of [...header.tensors].sort(([, a], [, b]) => a.begin - b.begin)) {
      summary.bytesIn += entry.end - entry.begin;
      // mlx-lm drops the copy of a tied head; the loader would ignore it anyway.
      if (config.tieWordEmbeddings && name === "lm_head.weight") continue;
      const isMatrix = name.endsWith(".weight") && entry.shape.length === 2;
      const module = name.slice(0, -".weight".length);
      if (isMatrix && entry.shape[1] % params.groupSize === 0) {
        summary.quantized.push(module);
        tensors.push(...quantizedTensors(path, name, module, entry.dtype, [entry.shape[0], entry.shape[1]], params));
      } else {
        if (isMatrix) summary.unquantized.push(module);
        tensors.push({ name, dtype: entry.dtype, shape: entry.shape, chunks: () => [readOne(path, name).data] });
      }
    }
    for (const t of tensors) weightMap[t.name] = file;
    return { file, tensors };
  });

  const createdDir = !existsSync(outDir);
  const written: string[] = [];
  const write = (name: string, body: () => void): void => {
    written.push(join(outDir, name));
    body();
  };
  const tick = progressTicker(
    planned.reduce((n, p) => n + p.tensors.length, 0),
    onProgress,
  );
  const counted = (t: StreamedTensorToWrite): StreamedTensorToWrite => ({
    ...t,
    chunks: function* () {
      yield* t.chunks();
      tick();
    },
  });
  try {
    createFolder(outDir);
    for (const { file, tensors } of planned) {
      write(file, () => writeSafetensorsStreamed(join(outDir, file), tensors.map(counted), { format: "mlx" }));
      summary.bytesOut += statSync(join(outDir, file)).size;
    }
    if (existsSync(indexPath)) {
      const totalSize = planned.flatMap((p) => p.tensors).reduce((sum, t) => sum + byteSize(t), 0);
      write(INDEX_FILE, () => writeJson(join(outDir, INDEX_FILE), { metadata: { total_size: totalSize }, weight_map: weightMap }));
    }
    const quantization: Record<string, unknown> = { group_size: params.groupSize, bits: params.bits, mode: "affine" };
    for (const module of summary.unquantized) quantization[module] = false;
    write("config.json", () => writeJson(join(outDir, "config.json"), { ...rawConfig, quantization, quantization_config: quantization }));
    const own = new Set(["config.json", INDEX_FILE, ...files]);
    for (const entry of readdirSync(modelDir, { withFileTypes: true })) {
      if (!entry.isFile() || own.has(entry.name)) continue;
      if (statSync(join(modelDir, entry.name)).size > MAX_COPIED_FILE_BYTES) summary.skippedFiles.push(entry.name);
      else
        write(entry.name, () => {
          // The copy is the user's own file: writable even when the source is read-only.
          copyFileSync(join(modelDir, entry.name), join(outDir, entry.name));
          chmodSync(join(outDir, entry.name), 0o644);
        });
    }
  } catch (err) {
    if (createdDir) rmSync(outDir, { recursive: true, force: true });
    else for (const path of written) rmSync(path, { force: true });
    throw err;
  }
  return summary;
}

function readOne(path: string, name: string): RawTensor {
  const t = readSafetensors(path, [name]).get(name);
  if (!t) throw new CheckpointError(`${path}: tensor "${name}" vanished while quantizing`);
  return t;
}

/**
 * The three tensors that replace `name`: packed codes, scales and biases. The codes are made
 * first, block by block, while the scales and biases gather (they are 1/groupSize of the
 * values); the writer asks for the tensors in order, so they are ready when their turn comes.
 */
function quantizedTensors(
  path: string,
  name: string,
  module: string,
  /** The input's safetensors dtype, which the scales and biases keep. */
  floatDType: string,
  shape: [number, number],
  params: AffineParams,
): StreamedTensorToWrite[] {
  const [rows, cols] = shape;
  const groups = rows * (cols / params.groupSize);
  const dtype = FLOAT_DTYPES[floatDType];
  const scaleBytes = dtype === "f32" ? 4 : 2;
  let scales: Uint8Array | undefined;
  let biases: Uint8Array | undefined;

  function* codes(): Generator<Uint8Array> {
    const raw = readOne(path, name);
    const { buffer, byteOffset, byteLength } = raw.data;
    const data =
      dtype === "f32" ? new Float32Array(buffer, byteOffset, byteLength / 4) : new Uint16Array(buffer, byteOffset, byteLength / 2);
    const matrix = new DenseWeight(dtype, shape, data);
    scales = new Uint8Array(groups * scaleBytes);
    biases = new Uint8Array(groups * scaleBytes);
    const rowsPerBlock = Math.max(1, Math.floor(BLOCK_VALUES / cols));
    const block = new Float32Array(rowsPerBlock * cols);
    for (let r0 = 0; r0 < rows; r0 += rowsPerBlock) {
      const n = Math.min(rowsPerBlock, rows - r0);
      for (let r = 0; r < n; r++) matrix.decodeRow(r0 + r, block, r * cols);
      const q = quantizeAffine(block.subarray(0, n * cols), { ...params, scaleDType: dtype });
      const at = (r0 * cols * scaleBytes) / params.groupSize;
      scales.set(bytesOf(q.scales), at);
      biases.set(bytesOf(q.biases), at);
      yield bytesOf(q.packed);
    }
  }
  const ready = (part: Uint8Array | undefined): Uint8Array => {
    if (!part) throw new Error(`internal error: ${module} scales asked for before its codes were written`);
    return part;
  };
  const groupShape = [rows, cols / params.groupSize];
  return [
    { name, dtype: "U32", shape: [rows, (cols * params.bits) / 32], chunks: codes },
    { name: `${module}.scales`, dtype: floatDType, shape: groupShape, chunks: () => [ready(scales)] },
    {
      name: `${module}.biases`,
      dtype: floatDType,
      shape: groupShape,
      chunks: function* () {
        yield ready(biases);
        // Written: let them go before the next tensor.
        scales = biases = undefined;
      },
    },
  ];
}

function bytesOf(a: Float32Array | Uint16Array | Uint32Array): Uint8Array {
  return new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
}

function byteSize(t: StreamedTensorToWrite): number {
  return t.shape.reduce((n, d) => n * d, dtypeByteSize(t.dtype) ?? 0);
}

function writeJson(path: string, value: unknown): void {
  writeFileSync(path, JSON.stringify(value, null, 2) + "\n");
}

function parseChoice(flag: string, value: string | undefined, choices: readonly number[], fallback?: number): number {
  if (value === undefined) {
    if (fallback === undefined) throw new UsageError(`--${flag} is required (${choices.join(", ")})`);
    return fallback;
  }
  const n = Number(value);
  if (!choices.includes(n) || value.trim() === "") throw new UsageError(`--${flag} must be one of ${choices.join(", ")}, got "${value}"`);
  return n;
}

/** The GGUF types `quantize --format gguf` writes. */
export const GGUF_TARGET_TYPES = ["f16", "q8_0", "q4_0", "q4_k"] as const;
export type GgufTargetType = (typeof GGUF_TARGET_TYPES)[number];

/** llama.cpp's general.file_type for each (LLAMA_FTYPE_MOSTLY_F16, _Q8_0, _Q4_0, _Q4_K_S). */
const FILE_TYPES: Readonly<Record<GgufTargetType, number>> = { f16: 1, q8_0: 7, q4_0: 2, q4_k: 14 };
const TARGET_GGML: Readonly<Record<GgufTargetType, GgmlType>> = { f16: "F16", q8_0: "Q8_0", q4_0: "Q4_0", q4_k: "Q4_K" };

/** Rows decoded per step, so the float32 buffer of a 151k-row embedding stays a few MB. */
const GGUF_ROWS_PER_STEP = 1024;

/** Decodes `bytes` (whole rows of a tensor of `type`) to float32, exactly as the loader reads them. */
export function decodeGgml(type: GgmlType, bytes: Uint8Array, values: number): Float32Array {
  const out = new Float32Array(values);
  const aligned = (): Uint8Array => (bytes.byteOffset % 2 === 0 ? bytes : bytes.slice());
  switch (type) {
    case "F32":
      out.set(new Float32Array(bytes.slice().buffer));
      return out;
    case "F16": {
      const b = aligned();
      return f16ToF32(new Uint16Array(b.buffer, b.byteOffset, values), out);
    }
    case "BF16": {
      const b = aligned();
      return bf16ToF32(new Uint16Array(b.buffer, b.byteOffset, values), out);
    }
    case "Q8_0":
    case "Q4_0":
      dequantize(type.toLowerCase() as BlockQuantDType, bytes, out);
      return out;
    case "Q4_1":
    case "Q5_0":
    case "Q5_1":
      dequantizeLegacy(type.toLowerCase() as LegacyQuantDType, bytes, out);
      return out;
    case "Q4_K":
    case "Q5_K":
    case "Q6_K":
    case "Q8_K":
      dequantizeK(type.toLowerCase() as KQuantDType, bytes, out);
      return out;
  }
}

/** Encodes float32 values (whole rows) as `type`, with the reference encoders of src/tensor/. */
export function encodeGgml(type: GgmlType, x: Float32Array): Uint8Array {
  switch (type) {
    case "F16": {
      const bits = new Uint16Array(x.length);
      for (let i = 0; i < x.length; i++) bits[i] = numberToF16(x[i]);
      return new Uint8Array(bits.buffer);
    }
    case "Q8_0":
    case "Q4_0":
      return quantize(type.toLowerCase() as BlockQuantDType, x);
    case "Q5_0":
      return quantizeLegacy("q5_0", x);
    case "Q4_K":
      return quantizeK("q4_k", x);
    default:
      throw new Error(`no encoder for ${type} here`);
  }
}

/** The type a matrix of input width `cols` is written in for `target`, as llama-quantize picks it. */
export function ggufTensorType(target: GgufTargetType, cols: number): GgmlType {
  const type = TARGET_GGML[target];
  if (cols % GGML_TYPES[type].blockSize === 0) return type;
  // llama-quantize's fallbacks for a row that is no whole number of blocks.
  if (type === "Q4_K" && cols % GGML_TYPES.Q5_0.blockSize === 0) return "Q5_0";
  return "F16";
}

export interface GgufQuantizeSummary {
  /** Tensors written, by the type each was written in. */
  written: Partial<Record<GgmlType, number>>;
  /** Tensors copied as they were (not matrices). */
  copied: number;
  bytesIn: number;
  bytesOut: number;
}

/**
 * Writes the GGUF file `inPath` as `outPath` with every matrix (2-D tensor) decoded and encoded
 * in `target` ("pure", as llama-quantize --pure: the embedding and the output too); vectors
 * (norms, biases) are copied, and so is the metadata, but for general.file_type. Memory stays near
 * one output tensor's size.
 */
export function quantizeGguf(inPath: string, outPath: string, target: GgufTargetType, onProgress?: ProgressListener): GgufQuantizeSummary {
  if (!existsSync(inPath) || statSync(inPath).isDirectory()) throw new UsageError(`--model ${inPath} is not a .gguf file`);
  if (existsSync(outPath)) throw new UsageError(`--out ${outPath} exists; give a new file`);
  const header = readGgufHeader(inPath);
  const summary: GgufQuantizeSummary = { written: {}, copied: 0, bytesIn: header.fileSize, bytesOut: 0 };
  const tick = progressTicker(header.tensors.size, onProgress);
  const tensors: GgufTensorToWrite[] = [...header.tensors.values()].map((info: GgufTensorInfo) => {
    const data = (): Uint8Array => {
      const bytes = readGgufTensors(header, [info.name]).get(info.name) as Uint8Array;
      tick();
      return bytes;
    };
    if (info.dims.length !== 2) {
      summary.copied++;
      return { name: info.name, type: info.type, dims: info.dims, data };
    }
    const [cols, rows] = info.dims;
    const type = ggufTensorType(target, cols);
    summary.written[type] = (summary.written[type] ?? 0) + 1;
    const encode = (): Uint8Array => {
      const raw = data();
      const rowBytesIn = raw.byteLength / rows;
      const rowBytesOut = (cols / GGML_TYPES[type].blockSize) * GGML_TYPES[type].blockBytes;
      const out = new Uint8Array(rows * rowBytesOut);
      for (let r = 0; r < rows; r += GGUF_ROWS_PER_STEP) {
        const n = Math.min(GGUF_ROWS_PER_STEP, rows - r);
        const x = decodeGgml(info.type, raw.subarray(r * rowBytesIn, (r + n) * rowBytesIn), n * cols);
        out.set(encodeGgml(type, x), r * rowBytesOut);
      }
      return out;
    };
    return { name: info.name, type, dims: info.dims, data: encode };
  });
  const metadata: [string, GgufEntry][] = [...header.metadata].map(([key, entry]) => [
    key,
    key === "general.file_type" ? { type: "uint32", value: FILE_TYPES[target] } : entry,
  ]);
  if (!header.metadata.has("general.file_type")) metadata.push(["general.file_type", { type: "uint32", value: FILE_TYPES[target] }]);
  createFolder(dirname(outPath));
  try {
    writeGguf(outPath, metadata, tensors);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    // A refused open or write is the place's fault, not the model's: one line that says so.
    if (code !== undefined && (err as NodeJS.ErrnoException).syscall !== undefined) {
      throw new UsageError(`cannot write --out ${outPath} (${code}); choose a place you can write to`);
    }
    throw err;
  }
  summary.bytesOut = statSync(outPath).size;
  return summary;
}

/**
 * A Qwen2/Qwen3 GGUF file as a Hugging Face float16 checkpoint folder in `dir`, for quantizeCheckpoint
 * to quantize as mlx-lm would: every matrix decoded from its GGUF type and rounded to float16
 * (vectors kept float32), under its Hugging Face name; config.json from the metadata, and the
 * tokenizer as ggufTokenizerFiles rebuilds it. Llama files are refused: llama.cpp stores their
 * q/k rows permuted for its RoPE, which a Hugging Face checkpoint does not have.
 */
export function ggufToFloatFolder(inPath: string, dir: string): void {
  const header = readGgufHeader(inPath);
  const config = ggufModelConfig(header);
  if (config.ropeTraditional) {
    throw new UsageError(
      `${inPath}: an MLX copy of a ${config.modelType} GGUF file is not supported (its q/k rows are permuted); use qwen2 or qwen3`,
    );
  }
  const hfConfig: Record<string, unknown> = {
    architectures: [config.modelType === "qwen3" ? "Qwen3ForCausalLM" : "Qwen2ForCausalLM"],
    model_type: config.modelType,
    hidden_size: config.hiddenSize,
    intermediate_size: config.intermediateSize,
    num_hidden_layers: config.numLayers,
    num_attention_heads: config.numHeads,
    num_key_value_heads: config.numKvHeads,
    head_dim: config.headDim,
    vocab_size: config.vocabSize,
    max_position_embeddings: config.maxPositionEmbeddings,
    rms_norm_eps: config.rmsNormEps,
    rope_theta: config.ropeTheta,
    tie_word_embeddings: config.tieWordEmbeddings,
    hidden_act: "silu",
    torch_dtype: "float16",
    ...(config.bosTokenId === undefined ? {} : { bos_token_id: config.bosTokenId }),
    ...(config.eosTokenIds.length === 0 ? {} : { eos_token_id: config.eosTokenIds[0] }),
  };
  const { tokenizerJson, config: tokenizerConfig } = ggufTokenizerFiles(header);
  createFolder(dir);
  writeFileSync(join(dir, "config.json"), JSON.stringify(hfConfig, null, 2) + "\n");
  writeFileSync(join(dir, "tokenizer.json"), JSON.stringify(tokenizerJson));
  writeFileSync(join(dir, "tokenizer_config.json"), JSON.stringify(tokenizerConfig, null, 2) + "\n");
  const tensors: StreamedTensorToWrite[] = [...header.tensors.values()].map((info) => {
    const name = huggingFaceTensorName(info.name);
    if (name === undefined) throw new CheckpointError(`${inPath}: tensor "${info.name}" has no Hugging Face name`);
    const n = info.dims.reduce((a, b) => a * b, 1);
    const matrix = info.dims.length === 2;
    return {
      name,
      dtype: matrix ? "F16" : "F32",
      shape: [...info.dims].reverse(),
      chunks: function* () {
        const raw = readGgufTensors(header, [info.name]).get(info.name) as Uint8Array;
        const rows = matrix ? info.dims[1] : 1;
        const cols = n / rows;
        const rowBytes = raw.byteLength / rows;
        for (let r = 0; r < rows; r += GGUF_ROWS_PER_STEP) {
          const k = Math.min(GGUF_ROWS_PER_STEP, rows - r);
          const x = decodeGgml(info.type, raw.subarray(r * rowBytes, (r + k) * rowBytes), k * cols);
          yield matrix ? encodeGgml("F16", x) : new Uint8Array(x.buffer);
        }
      },
    };
  });
  writeSafetensorsStreamed(join(dir, SINGLE_FILE), tensors);
}

const OPTIONS = {
  ...MODEL_OPTION,
  bits: { type: "string" },
  "group-size": { type: "string" },
  out: { type: "string" },
  format: { type: "string" },
  type: { type: "string" },
} as const;

/** Progress on the terminal's status line. */
function showProgress(what: string): ProgressListener {
  return (done, total) => status.show(`${what}: tensor ${done} of ${total}`, done === total);
}

export function runQuantize(argv: string[]): void {
  const values = parseOptions("quantize", argv, OPTIONS, QUANTIZE_HELP);
  if (!values) return;
  const format = values.format ?? "mlx";
  if (format !== "mlx" && format !== "gguf") throw new UsageError(`--format must be mlx or gguf, got "${format}"`);
  const mb = (n: number): string => (n / 2 ** 20).toFixed(1);
  if (format === "gguf") {
    if (!values.model) throw new UsageError("--model FILE.gguf is required (the GGUF file to convert)");
    if (!values.out) throw new UsageError("--out FILE.gguf is required (the file to write)");
    if (values.bits !== undefined || values["group-size"] !== undefined)
      throw new UsageError("--bits and --group-size are for --format mlx");
    const type = values.type as GgufTargetType | undefined;
    if (type === undefined || !GGUF_TARGET_TYPES.includes(type)) {
      throw new UsageError(`--type must be one of ${GGUF_TARGET_TYPES.join(", ")}, got ${type === undefined ? "none" : `"${type}"`}`);
    }
    const s = quantizeGguf(values.model, values.out, type, showProgress(`writing ${values.out}`));
    status.clear();
    const written = Object.entries(s.written)
      .map(([t, n]) => `${n} ${t}`)
      .join(", ");
    notice(`wrote ${written} matrices and copied ${s.copied} tensors: ${mb(s.bytesIn)} MB -> ${mb(s.bytesOut)} MB in ${values.out}`);
    return;
  }
  if (values.type !== undefined) throw new UsageError("--type is for --format gguf");
  if (!values.model) throw new UsageError("--model DIR is required (a float checkpoint folder)");
  if (!values.out) throw new UsageError("--out DIR is required (the folder to write)");
  const bits = parseChoice("bits", values.bits, AFFINE_BITS);
  const groupSize = parseChoice("group-size", values["group-size"], AFFINE_GROUP_SIZES, 64);
  const progress = showProgress(`quantizing to ${bits} bits`);
  let s: QuantizeSummary;
  if (modelPathKind(values.model) === "gguf") {
    // A GGUF file goes through a float16 checkpoint folder of its own, removed afterwards.
    const floatDir = mkdtempSync(join(tmpdir(), "tiny-llm-quantize-f16-"));
    try {
      status.show(`decoding ${values.model} to float16…`);
      ggufToFloatFolder(values.model, floatDir);
      s = quantizeCheckpoint(floatDir, values.out, { bits, groupSize }, progress);
    } finally {
      rmSync(floatDir, { recursive: true, force: true });
    }
  } else {
    s = quantizeCheckpoint(values.model, values.out, { bits, groupSize }, progress);
  }
  status.clear();
  notice(
    `quantized ${s.quantized.length} matrices to ${bits} bits (group size ${groupSize}): ${mb(s.bytesIn)} MB -> ${mb(s.bytesOut)} MB in ${values.out}`,
  );
  if (s.unquantized.length > 0) notice(`kept in float (input width not a multiple of ${groupSize}): ${s.unquantized.join(", ")}`);
  if (s.skippedFiles.length > 0) notice(`not copied (over ${mb(MAX_COPIED_FILE_BYTES)} MB): ${s.skippedFiles.join(", ")}`);
}
