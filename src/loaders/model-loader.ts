/**
 * Assembles a Transformer from a Hugging Face checkpoint folder: config.json for the shapes,
 * safetensors for the weights. Every expected tensor must be present with the expected shape,
 * and no unknown tensor may be left over, so a mismatched checkpoint fails here with a message
 * instead of producing garbage later.
 */
import { existsSync, readdirSync } from "node:fs";
import { join } from "node:path";
import { Attention } from "../layers/attention.js";
import { Embedding } from "../layers/embedding.js";
import { Linear } from "../layers/linear.js";
import { MLP } from "../layers/mlp.js";
import { RMSNorm } from "../layers/rms-norm.js";
import { RoPE } from "../layers/rope.js";
import { parseModelConfig, type ModelConfig, type QuantizationConfig } from "../models/config.js";
import { DecoderLayer, Transformer } from "../models/transformer.js";
import { AffineQuantWeight, type AffineParams } from "../tensor/affine-quant.js";
import { Tensor } from "../tensor/tensor.js";
import { DenseWeight, type DenseDType, type WeightMatrix } from "../tensor/weight.js";
import { CheckpointError, loadCheckpointTensors, readJson } from "./checkpoint.js";
import type { RawTensor } from "./safetensors.js";

/** Tensors some exporters include that carry nothing we need. */
const IGNORED = /(^|\.)rotary_emb\.inv_freq$/;

/**
 * A tensor of a checkpoint in any file format, under its Hugging Face name, with its shape in
 * Hugging Face order ([out, in] for a weight matrix).
 */
export interface StoredTensor {
  readonly shape: readonly number[];
  /** The file it comes from, for error messages. */
  readonly file: string;
  /** A 2-d weight kept in its stored type. */
  matrix(): WeightMatrix;
  /** A 1-d tensor (norm weight, bias) as float32. */
  vector(): Tensor;
  /** The words of a U32 tensor: an MLX-quantized weight's packed codes. Absent in formats without them. */
  words?(): Uint32Array;
}

class TensorSource {
  private readonly used = new Set<string>();

  constructor(
    private readonly tensors: ReadonlyMap<string, StoredTensor>,
    private readonly source: string,
  ) {}

  take(name: string, shape: readonly number[]): StoredTensor {
    const t = this.tensors.get(name);
    if (!t) throw new CheckpointError(`${this.source}: tensor "${name}" is missing; the checkpoint does not match its config`);
    if (t.shape.length !== shape.length || t.shape.some((d, i) => d !== shape[i])) {
      throw new CheckpointError(
        `${t.file}: tensor "${name}" has shape [${t.shape}] but the config implies [${shape}]; the checkpoint does not match its config`,
      );
    }
    this.used.add(name);
    return t;
  }

  has(name: string): boolean {
    return this.tensors.has(name);
  }

  /** Marks a present tensor as deliberately unused (e.g. a redundant copy of a tied head). */
  skip(name: string): void {
    if (this.tensors.has(name)) this.used.add(name);
  }

  checkAllUsed(): void {
    const left = [...this.tensors.keys()].filter((n) => !this.used.has(n) && !IGNORED.test(n));
    if (left.length > 0) {
      const shown = left.slice(0, 5).join(", ") + (left.length > 5 ? `, … (${left.length} in all)` : "");
      throw new CheckpointError(`${this.source}: unexpected tensors ${shown}; the checkpoint does not match its config`);
    }
  }
}

/** A safetensors tensor as a StoredTensor: F32, F16 and BF16 are kept as they are. */
export function safetensorsTensor(t: RawTensor): StoredTensor {
  const { buffer, byteOffset, byteLength } = t.data;
  const typed = (): [DenseDType, Float32Array | Uint16Array] => {
    switch (t.dtype) {
      case "F32":
        return ["f32", new Float32Array(buffer, byteOffset, byteLength / 4)];
      case "BF16":
        return ["bf16", new Uint16Array(buffer, byteOffset, byteLength / 2)];
      case "F16":
        return ["f16", new Uint16Array(buffer, byteOffset, byteLength / 2)];
      default:
        throw new CheckpointError(`${t.file}: tensor "${t.name}" has dtype ${t.dtype}; only F32, F16 and BF16 weights are supported`);
    }
  };
  return {
    shape: t.shape,
    file: t.file,
    matrix: () => {
      const [dtype, data] = typed();
      return new DenseWeight(dtype, [t.shape[0], t.shape[1]], data);
    },
    vector: () => {
      const [dtype, data] = typed();
      const row = new DenseWeight(dtype, [1, t.shape[0]], data);
      const out = new Float32Array(row.cols);
      row.decodeRow(0, out);
      return new Tensor(out, t.shape);
    },
    words: () => {
      if (t.dtype !== "U32")
        throw new CheckpointError(`${t.file}: tensor "${t.name}" has dtype ${t.dtype}; a quantized weight's packed codes are U32`);
      return new Uint32Array(buffer, byteOffset, byteLength / 4);
    },
  };
}

/**
 * How `module`'s weight is stored: its affine parameters, or undefined when it is dense. As in
 * mlx-lm, the module's own config entry decides; without one, a `.scales` tensor marks it quantized.
 */
function affineParamsFor(quantization: QuantizationConfig | undefined, module: string, src: TensorSource): AffineParams | undefined {
  if (!quantization) return undefined;
  const entry = quantization.modules.get(module);
  if (entry !== undefined) return entry === false ? undefined : entry;
  return src.has(`${module}.scales`) ? quantization.defaults : undefined;
}

/** `module`'s packed weight, scales and biases as one matrix of `rows` × `cols` values. */
function affineWeight(src: TensorSource, source: string, module: string, rows: number, cols: number, p: AffineParams): AffineQuantWeight {
  if (cols % p.groupSize !== 0) {
    throw new CheckpointError(
      `${source}: "${module}" is quantized with group size ${p.groupSize}, which does not divide its ${cols} input features; the checkpoint does not match its config`,
    );
  }
  for (const part of ["scales", "biases"]) {
    if (!src.has(`${module}.${part}`)) {
      throw new CheckpointError(
        `${source}: "${module}" is quantized but tensor "${module}.${part}" is missing; the checkpoint is incomplete or does not match its config`,
      );
    }
  }
  const packed = src.take(`${module}.weight`, [rows, (cols * p.bits) / 32]);
  const scales = src.take(`${module}.scales`, [rows, cols / p.groupSize]).matrix();
  const biases = src.take(`${module}.biases`, [rows, cols / p.groupSize]).matrix();
  if (!packed.words) throw new CheckpointError(`${packed.file}: "${module}" is MLX-quantized, which this file format cannot hold`);
  if (!(scales instanceof DenseWeight && biases instanceof DenseWeight) || scales.dtype !== biases.dtype) {
    throw new CheckpointError(
      `${packed.file}: "${module}.scales" (${scales.dtype}) and "${module}.biases" (${biases.dtype}) must share one float type`,
    );
  }
  return new AffineQuantWeight(p, [rows, cols], {
    scaleDType: scales.dtype,
    packed: packed.words(),
    scales: scales.data,
    biases: biases.data,
  });
}

/** Builds the model, checking that the tensors are exactly those the config implies. */
export function buildTransformer(config: ModelConfig, tensors: ReadonlyMap<string, StoredTensor>, source: string): Transformer {
  const src = new TensorSource(tensors, source);
  const { hiddenSize: E, intermediateSize: I, numHeads: H, numKvHeads: Hkv, headDim: D, vocabSize: V } = config;
  const matrix = (module: string, rows: number, cols: number): WeightMatrix => {
    const params = affineParamsFor(config.quantization, module, src);
    if (params) return affineWeight(src, source, module, rows, cols, params);
    if (src.has(`${module}.scales`)) {
      const why = config.quantization ? `its "quantization" entry is false` : `it has no "quantization" section`;
      throw new CheckpointError(
        `${source}: "${module}" is stored quantized (it has "${module}.scales") but config.json says it is not: ${why}`,
      );
    }
    return src.take(`${module}.weight`, [rows, cols]).matrix();
  };
  const linear = (name: string, out: number, inp: number, bias: boolean): Linear =>
    new Linear(matrix(name, out, inp), bias ? src.take(`${name}.bias`, [out]).vector() : undefined);
  const norm = (name: string, n: number): RMSNorm => new RMSNorm(src.take(`${name}.weight`, [n]).vector(), config.rmsNormEps);
  const rope = new RoPE(D, config.ropeTheta, config.ropeTraditional);

  const embed = new Embedding(matrix("model.embed_tokens", V, E));
  const layers = Array.from({ length: config.numLayers }, (_, i) => {
    const p = `model.layers.${i}`;
    const attention = new Attention(
      {
        qProj: linear(`${p}.self_attn.q_proj`, H * D, E, config.qkvBias),
        kProj: linear(`${p}.self_attn.k_proj`, Hkv * D, E, config.qkvBias),
        vProj: linear(`${p}.self_attn.v_proj`, Hkv * D, E, config.qkvBias),
        oProj: linear(`${p}.self_attn.o_proj`, E, H * D, config.oBias),
        qNorm: config.qkNorm ? norm(`${p}.self_attn.q_norm`, D) : undefined,
        kNorm: config.qkNorm ? norm(`${p}.self_attn.k_norm`, D) : undefined,
      },
      H,
      Hkv,
      D,
      rope,
    );
    const mlp = new MLP(
      linear(`${p}.mlp.gate_proj`, I, E, config.mlpBias),
      linear(`${p}.mlp.up_proj`, I, E, config.mlpBias),
      linear(`${p}.mlp.down_proj`, E, I, config.mlpBias),
    );
    return new DecoderLayer(norm(`${p}.input_layernorm`, E), attention, norm(`${p}.post_attention_layernorm`, E), mlp);
  });
  const finalNorm = norm("model.norm", E);
  let lmHead: Linear | undefined;
  if (config.tieWordEmbeddings) for (const part of ["weight", "scales", "biases"]) src.skip(`lm_head.${part}`);
  else lmHead = linear("lm_head", V, E, false);
  src.checkAllUsed();
  return new Transformer(config, embed, layers, finalNorm, lmHead);
}

/**
 * Throws unless `dir` has a config.json, saying what a model folder holds (and naming a GGUF
 * file found there instead), rather than failing later on whichever file is read first.
 */
export function checkModelFolder(dir: string): void {
  if (existsSync(join(dir, "config.json"))) return;
  const gguf = readdirSync(dir).find((name) => name.toLowerCase().endsWith(".gguf"));
  throw new CheckpointError(
    `${dir} is not a model folder: it has no config.json (a Hugging Face checkpoint folder holds config.json, ` +
      `model.safetensors or its shards with model.safetensors.index.json, tokenizer.json and tokenizer_config.json)` +
      (gguf === undefined ? "" : `; to run the GGUF file in it, pass that file: ${join(dir, gguf)}`),
  );
}

/** A checkpoint folder's config.json. */
export function readModelConfig(dir: string): ModelConfig {
  checkModelFolder(dir);
  const configPath = join(dir, "config.json");
  return parseModelConfig(readJson(configPath, "model config") as Record<string, unknown>, configPath);
}

/** Reads config.json (unless given) and the safetensors weights of a checkpoint folder. */
export function loadModel(dir: string, config = readModelConfig(dir)): Transformer {
  const tensors = new Map([...loadCheckpointTensors(dir)].map(([name, t]) => [name, safetensorsTensor(t)]));
  return buildTransformer(config, tensors, dir);
}
