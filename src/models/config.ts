/**
 * The model hyper-parameters we use, read from a Hugging Face `config.json`.
 */
import { checkAffineParams, type AffineParams } from "../tensor/affine-quant.js";

export const SUPPORTED_MODEL_TYPES = ["qwen2", "qwen3", "llama"] as const;
export type ModelType = (typeof SUPPORTED_MODEL_TYPES)[number];

export interface ModelConfig {
  modelType: ModelType;
  /** E */
  hiddenSize: number;
  /** I */
  intermediateSize: number;
  numLayers: number;
  /** H */
  numHeads: number;
  /** H_kv */
  numKvHeads: number;
  /** D (Qwen3 sets it explicitly; otherwise E / H) */
  headDim: number;
  /** V */
  vocabSize: number;
  maxPositionEmbeddings: number;
  rmsNormEps: number;
  ropeTheta: number;
  /** RoPE pair layout: false = halves (Hugging Face), true = adjacent pairs. */
  ropeTraditional: boolean;
  tieWordEmbeddings: boolean;
  /** Biases on the q/k/v projections (Qwen2; Llama with attention_bias). */
  qkvBias: boolean;
  /** Bias on the output projection (Llama with attention_bias). */
  oBias: boolean;
  /** Biases on the MLP projections (Llama with mlp_bias). */
  mlpBias: boolean;
  /** Per-head RMSNorm of q and k before RoPE (Qwen3). */
  qkNorm: boolean;
  bosTokenId?: number;
  eosTokenIds: number[];
  /** MLX affine quantization of the weights, when config.json has a "quantization" section. */
  quantization?: QuantizationConfig;
}

/**
 * config.json's "quantization" section as mlx-lm writes it: {"group_size", "bits", "mode"} plus
 * optional entries keyed by module path ("model.layers.0.mlp.down_proj") that override them.
 */
export interface QuantizationConfig {
  /** Parameters of each quantized module without an entry of its own. */
  defaults: AffineParams;
  /**
   * Per-module entries: parameters, or false for a module stored unquantized. A module without
   * an entry is quantized exactly when its checkpoint has a `.scales` tensor (mlx-lm's rule).
   */
  modules: ReadonlyMap<string, AffineParams | false>;
}

export class ConfigError extends Error {
  override name = "ConfigError";
}

type Json = Record<string, unknown>;

function int(cfg: Json, key: string, source: string, fallback?: number): number {
  const v = cfg[key] ?? fallback;
  if (typeof v !== "number" || !Number.isInteger(v) || v <= 0) {
    throw new ConfigError(`${source}: "${key}" must be a positive integer, got ${JSON.stringify(cfg[key])}`);
  }
  return v;
}

function num(cfg: Json, key: string, source: string, fallback: number): number {
  const v = cfg[key] ?? fallback;
  if (typeof v !== "number" || !Number.isFinite(v) || v <= 0) {
    throw new ConfigError(`${source}: "${key}" must be a positive number, got ${JSON.stringify(cfg[key])}`);
  }
  return v;
}

export function idList(v: unknown): number[] {
  if (typeof v === "number") return [v];
  if (Array.isArray(v)) return v.filter((x): x is number => typeof x === "number");
  return [];
}

/** Parses and checks a config.json object; `source` names the file in error messages. */
export function parseModelConfig(cfg: Json, source = "config.json"): ModelConfig {
  const modelType = cfg.model_type;
  if (typeof modelType !== "string" || !(SUPPORTED_MODEL_TYPES as readonly string[]).includes(modelType)) {
    throw new ConfigError(
      `${source}: unsupported model_type ${JSON.stringify(modelType)}; supported model types are ${SUPPORTED_MODEL_TYPES.join(", ")}`,
    );
  }
  const type = modelType as ModelType;
  const ropeScaling = cfg.rope_scaling as Json | null | undefined;
  if (ropeScaling != null) {
    const kind = ropeScaling.rope_type ?? ropeScaling.type;
    if (kind !== "default") {
      throw new ConfigError(`${source}: rope_scaling of type ${JSON.stringify(kind)} is not supported; only plain RoPE is`);
    }
  }
  const act = cfg.hidden_act ?? "silu";
  if (act !== "silu") throw new ConfigError(`${source}: hidden_act ${JSON.stringify(act)} is not supported; only "silu" is`);

  const hiddenSize = int(cfg, "hidden_size", source);
  const numHeads = int(cfg, "num_attention_heads", source);
  const numKvHeads = int(cfg, "num_key_value_heads", source, numHeads);
  if (numHeads % numKvHeads !== 0) {
    throw new ConfigError(`${source}: num_attention_heads (${numHeads}) must be a multiple of num_key_value_heads (${numKvHeads})`);
  }
  const headDim = cfg.head_dim == null ? hiddenSize / numHeads : int(cfg, "head_dim", source);
  if (!Number.isInteger(headDim)) throw new ConfigError(`${source}: hidden_size ${hiddenSize} is not divisible by ${numHeads} heads`);
  const attentionBias = cfg.attention_bias === true;
  return {
    modelType: type,
    hiddenSize,
    intermediateSize: int(cfg, "intermediate_size", source),
    numLayers: int(cfg, "num_hidden_layers", source),
    numHeads,
    numKvHeads,
    headDim,
    vocabSize: int(cfg, "vocab_size", source),
    maxPositionEmbeddings: int(cfg, "max_position_embeddings", source),
    rmsNormEps: num(cfg, "rms_norm_eps", source, 1e-6),
    ropeTheta: num(cfg, "rope_theta", source, 10000),
    ropeTraditional: false,
    tieWordEmbeddings: cfg.tie_word_embeddings === true,
    qkvBias: type === "qwen2" || attentionBias,
    oBias: type !== "qwen2" && attentionBias,
    mlpBias: cfg.mlp_bias === true,
    qkNorm: type === "qwen3",
    bosTokenId: typeof cfg.bos_token_id === "number" ? cfg.bos_token_id : undefined,
    eosTokenIds: idList(cfg.eos_token_id),
    quantization: parseQuantization(cfg, source),
  };
}

const isObject = (v: unknown): v is Json => typeof v === "object" && v !== null && !Array.isArray(v);

function affineParams(section: Json, where: string): AffineParams {
  if (section.mode !== undefined && section.mode !== "affine") {
    throw new ConfigError(`${where}: quantization mode ${JSON.stringify(section.mode)} is not supported; only "affine" is`);
  }
  const params = { bits: int(section, "bits", where), groupSize: int(section, "group_size", where) };
  try {
    checkAffineParams(params);
  } catch (err) {
    throw new ConfigError(`${where}: ${(err as Error).message}`);
  }
  return params;
}

/** mlx-lm writes "quantization" and a copy as "quantization_config"; the latter alone also counts. */
function parseQuantization(cfg: Json, source: string): QuantizationConfig | undefined {
  const section = cfg.quantization ?? cfg.quantization_config;
  if (section == null) return undefined;
  if (!isObject(section)) throw new ConfigError(`${source}: "quantization" must be an object, got ${JSON.stringify(section)}`);
  // Hugging Face quantizers (GPTQ, AWQ, bitsandbytes, …) name themselves; MLX's section does not.
  if (section.quant_method !== undefined) {
    throw new ConfigError(
      `${source}: quantization method ${JSON.stringify(section.quant_method)} is not supported; only MLX affine quantization is`,
    );
  }
  const defaults = affineParams(section, `${source} "quantization"`);
  const modules = new Map<string, AffineParams | false>();
  for (const [key, value] of Object.entries(section)) {
    if (key === "bits" || key === "group_size" || key === "mode") continue;
    if (value === false) modules.set(key, false);
    else if (value === true) modules.set(key, defaults);
    else if (isObject(value)) modules.set(key, affineParams(value, `${source} "quantization" entry "${key}"`));
    else
      throw new ConfigError(
        `${source}: "quantization" entry "${key}" must be false or {"group_size", "bits"}, got ${JSON.stringify(value)}`,
      );
  }
  return { defaults, modules };
}
