/**
 * `tiny-llm quantize`: writes an MLX-layout affine-quantized copy of a float checkpoint, one
 * tensor at a time, so memory use stays near the size of the largest tensor, not the model.
 */
import { chmodSync, copyFileSync, existsSync, mkdirSync, readdirSync, rmSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { CheckpointError, INDEX_FILE, SINGLE_FILE, readJson } from "../loaders/checkpoint.js";
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
import { UsageError } from "./errors.js";

export const QUANTIZE_HELP = `Usage: tiny-llm quantize --model DIR --bits B --out DIR [--group-size G]

Writes an MLX-layout quantized copy of a float checkpoint (F32, F16 or BF16 safetensors), as
mlx-lm does: the linear layers and the embedding become packed B-bit codes with a scale and a
bias per group of G input values, kept in the checkpoint's float type; norms and biases stay as
they are, and so does a matrix whose input width is not a multiple of G (config.json records
it as unquantized). Tokenizer and other small files are copied.

Options:
  --model DIR         Hugging Face checkpoint folder to quantize
  --bits B            bits per weight: 4 or 8 (also ${AFFINE_BITS.filter((b) => b !== 4 && b !== 8).join(", ")})
  --group-size G      values per scale and bias: ${AFFINE_GROUP_SIZES.join(", ")} (default 64)
  --out DIR           folder to write; it must not exist or be empty
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

/**
 * Quantizes the checkpoint in `modelDir` into `outDir`. Everything is checked before anything is
 * written, and a failure part way removes what was written.
 */
export function quantizeCheckpoint(modelDir: string, outDir: string, params: AffineParams): QuantizeSummary {
  if (!existsSync(modelDir) || !statSync(modelDir).isDirectory()) throw new UsageError(`--model ${modelDir} is not a checkpoint folder`);
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
  try {
    mkdirSync(outDir, { recursive: true });
    for (const { file, tensors } of planned) {
      write(file, () => writeSafetensorsStreamed(join(outDir, file), tensors, { format: "mlx" }));
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

export function runQuantize(argv: string[]): void {
  const { values } = parseArgs({
    args: argv,
    options: {
      model: { type: "string" },
      bits: { type: "string" },
      "group-size": { type: "string" },
      out: { type: "string" },
      help: { type: "boolean", short: "h", default: false },
    },
    strict: true,
    allowPositionals: false,
  });
  if (values.help) {
    process.stdout.write(QUANTIZE_HELP + "\n");
    return;
  }
  if (!values.model) throw new UsageError("--model DIR is required (a float checkpoint folder)");
  if (!values.out) throw new UsageError("--out DIR is required (the folder to write)");
  const bits = parseChoice("bits", values.bits, AFFINE_BITS);
  const groupSize = parseChoice("group-size", values["group-size"], AFFINE_GROUP_SIZES, 64);
  const s = quantizeCheckpoint(values.model, values.out, { bits, groupSize });
  const mb = (n: number): string => (n / 2 ** 20).toFixed(1);
  const lines = [
    `quantized ${s.quantized.length} matrices to ${bits} bits (group size ${groupSize}): ${mb(s.bytesIn)} MB -> ${mb(s.bytesOut)} MB in ${values.out}`,
  ];
  if (s.unquantized.length > 0) lines.push(`kept in float (input width not a multiple of ${groupSize}): ${s.unquantized.join(", ")}`);
  if (s.skippedFiles.length > 0) lines.push(`not copied (over ${mb(MAX_COPIED_FILE_BYTES)} MB): ${s.skippedFiles.join(", ")}`);
  process.stderr.write(lines.map((l) => `tiny-llm: ${l}\n`).join(""));
}
