/**
 * A Transformer from a GGUF file: the hyper-parameters come from `{arch}.*` metadata and the
 * tensors are renamed from llama.cpp's names to Hugging Face's, then built like any checkpoint.
 *
 * Weights stay in their stored type: F32, F16 and BF16 as dense weights, Q8_0 and Q4_0 as blocks,
 * and the k-quants Q4_K, Q5_K, Q6_K and Q8_K as super-blocks of 256 values. Q4_1, Q5_0 and Q5_1
 * are re-encoded exactly into formats the kernels multiply (see tensor/legacy-quant.ts).
 * llama.cpp's converter reorders the Q and K projection rows of `llama` models so that RoPE
 * rotates adjacent feature pairs instead of halves; rather than undo that, such models run with
 * the adjacent-pair ("traditional") RoPE layout, which gives the same attention scores.
 */
import { ConfigError, SUPPORTED_MODEL_TYPES, type ModelConfig, type ModelType } from "../models/config.js";
import type { Transformer } from "../models/transformer.js";
import { nativeKernels, NativeWeightType } from "../kernels/native.js";
import { BlockQuantWeight } from "../tensor/block-quant.js";
import { KQuantWeight } from "../tensor/k-quant.js";
import { reencodeLegacy } from "../tensor/legacy-quant.js";
import { Tensor } from "../tensor/tensor.js";
import { DenseWeight, type WeightMatrix } from "../tensor/weight.js";
import {
  metadataNumber,
  metadataString,
  metadataStrings,
  readGgufParts,
  readGgufTensors,
  type GgufHeader,
  type GgufTensorInfo,
} from "./gguf.js";
import { buildTransformer, type StoredTensor } from "./model-loader.js";
import { CheckpointError } from "./safetensors.js";

const LAYER_TENSORS: Readonly<Record<string, string>> = {
  "attn_norm.weight": "input_layernorm.weight",
  "attn_q.weight": "self_attn.q_proj.weight",
  "attn_q.bias": "self_attn.q_proj.bias",
  "attn_k.weight": "self_attn.k_proj.weight",
  "attn_k.bias": "self_attn.k_proj.bias",
  "attn_v.weight": "self_attn.v_proj.weight",
  "attn_v.bias": "self_attn.v_proj.bias",
  "attn_output.weight": "self_attn.o_proj.weight",
  "attn_output.bias": "self_attn.o_proj.bias",
  "attn_q_norm.weight": "self_attn.q_norm.weight",
  "attn_k_norm.weight": "self_attn.k_norm.weight",
  "ffn_norm.weight": "post_attention_layernorm.weight",
  "ffn_gate.weight": "mlp.gate_proj.weight",
  "ffn_gate.bias": "mlp.gate_proj.bias",
  "ffn_up.weight": "mlp.up_proj.weight",
  "ffn_up.bias": "mlp.up_proj.bias",
  "ffn_down.weight": "mlp.down_proj.weight",
  "ffn_down.bias": "mlp.down_proj.bias",
};

const GLOBAL_TENSORS: Readonly<Record<string, string>> = {
  "token_embd.weight": "model.embed_tokens.weight",
  "output_norm.weight": "model.norm.weight",
  "output.weight": "lm_head.weight",
};

/**
 * The Hugging Face name of a GGUF tensor, or undefined for a name with no counterpart (the
 * model builder then reports it as unexpected).
 */
export function huggingFaceTensorName(ggufName: string): string | undefined {
  if (Object.hasOwn(GLOBAL_TENSORS, ggufName)) return GLOBAL_TENSORS[ggufName];
  const m = /^blk\.(\d+)\.(.+)$/.exec(ggufName);
  if (m === null || !Object.hasOwn(LAYER_TENSORS, m[2])) return undefined;
  return `model.layers.${m[1]}.${LAYER_TENSORS[m[2]]}`;
}

/** The model hyper-parameters from GGUF metadata (and, for biases, which tensors exist). */
export function ggufModelConfig(header: GgufHeader): ModelConfig {
  const source = header.path;
  const arch = metadataString(header, "general.architecture");
  if (arch === undefined || !(SUPPORTED_MODEL_TYPES as readonly string[]).includes(arch)) {
    throw new ConfigError(
      `${source}: unsupported general.architecture ${JSON.stringify(arch)}; supported architectures are ${SUPPORTED_MODEL_TYPES.join(", ")}`,
    );
  }
  const modelType = arch as ModelType;
  const positive = (key: string, fallback?: number): number => {
    const v = metadataNumber(header, `${arch}.${key}`) ?? fallback;
    if (v === undefined || !(v > 0)) {
      throw new ConfigError(
        `${source}: metadata "${arch}.${key}" must be a positive number, got ${v ?? "nothing"}; the file is incomplete`,
      );
    }
    return v;
  };
  const integer = (key: string, fallback?: number): number => {
    const v = positive(key, fallback);
    if (!Number.isInteger(v)) throw new ConfigError(`${source}: metadata "${arch}.${key}" must be a whole number, got ${v}`);
    return v;
  };

  const scaling = metadataString(header, `${arch}.rope.scaling.type`);
  if ((scaling !== undefined && scaling !== "none") || header.tensors.has("rope_freqs.weight")) {
    throw new ConfigError(`${source}: uses RoPE scaling (${scaling ?? "rope_freqs.weight"}), which is not supported; only plain RoPE is`);
  }
  const hiddenSize = integer("embedding_length");
  const numHeads = integer("attention.head_count");
  const numKvHeads = integer("attention.head_count_kv", numHeads);
  if (numHeads % numKvHeads !== 0) {
    throw new ConfigError(`${source}: ${numHeads} attention heads are not a multiple of ${numKvHeads} key/value heads`);
  }
  const headDim = integer("attention.key_length", hiddenSize / numHeads);
  const valueDim = integer("attention.value_length", headDim);
  const ropeDims = integer("rope.dimension_count", headDim);
  if (valueDim !== headDim || ropeDims !== headDim) {
    throw new ConfigError(
      `${source}: key length ${headDim}, value length ${valueDim} and RoPE dimensions ${ropeDims} differ; only models where they are equal are supported`,
    );
  }
  const tokens = metadataStrings(header, "tokenizer.ggml.tokens");
  const embedding = header.tensors.get("token_embd.weight");
  const vocabSize = tokens?.length ?? embedding?.dims[1];
  if (vocabSize === undefined)
    throw new CheckpointError(`${source}: has neither tokenizer.ggml.tokens nor token_embd.weight; the file is incomplete`);

  const has = (name: string): boolean => header.tensors.has(`blk.0.${name}`);
  const bos = metadataNumber(header, "tokenizer.ggml.bos_token_id");
  const eos = metadataNumber(header, "tokenizer.ggml.eos_token_id");
  return {
    modelType,
    hiddenSize,
    intermediateSize: integer("feed_forward_length"),
    numLayers: integer("block_count"),
    numHeads,
    numKvHeads,
    headDim,
    vocabSize,
    maxPositionEmbeddings: integer("context_length"),
    rmsNormEps: positive("attention.layer_norm_rms_epsilon"),
    ropeTheta: positive("rope.freq_base", 10000),
    ropeTraditional: modelType === "llama",
    tieWordEmbeddings: !header.tensors.has("output.weight"),
    qkvBias: has("attn_q.bias"),
    oBias: has("attn_output.bias"),
    mlpBias: has("ffn_up.bias"),
    qkNorm: modelType === "qwen3",
    bosTokenId: bos,
    eosTokenIds: eos === undefined ? [] : [eos],
  };
}

/**
 * Q8_0 / Q4_0 blocks regrouped at load, in place, into the row layout that every kernel set reads
 * (the bytes are the process's own: readGgufTensors reads these types rather than mapping them).
 */
function rowLayoutBlocks(dtype: "q8_0" | "q4_0", rows: number, cols: number, data: Uint8Array): BlockQuantWeight {
  const w = new BlockQuantWeight(dtype, [rows, cols], data);
  const addon = nativeKernels();
  w.useRowLayout(addon ? (d, bytes, r, c) => addon.regroupRows(NativeWeightType[d], bytes, r, c) : undefined);
  return w;
}

/** A GGUF tensor as a StoredTensor, with its shape in Hugging Face order. */
export function ggufStoredTensor(info: GgufTensorInfo, data: Uint8Array<ArrayBuffer>, file: string): StoredTensor {
  const shape = [...info.dims].reverse();
  // A 1-d tensor is decoded as a single row.
  const asMatrix = (rows: number, cols: number): WeightMatrix => {
    switch (info.type) {
      case "F32":
        return new DenseWeight("f32", [rows, cols], new Float32Array(data.buffer, data.byteOffset, data.byteLength / 4));
      case "F16":
        return new DenseWeight("f16", [rows, cols], new Uint16Array(data.buffer, data.byteOffset, data.byteLength / 2));
      case "BF16":
        return new DenseWeight("bf16", [rows, cols], new Uint16Array(data.buffer, data.byteOffset, data.byteLength / 2));
      case "Q8_0":
      case "Q4_0":
        return rowLayoutBlocks(info.type === "Q8_0" ? "q8_0" : "q4_0", rows, cols, data);
      case "Q4_1":
        return reencodeLegacy("q4_1", [rows, cols], data);
      case "Q5_0":
        return reencodeLegacy("q5_0", [rows, cols], data);
      case "Q5_1":
        return reencodeLegacy("q5_1", [rows, cols], data);
      case "Q4_K":
        return new KQuantWeight("q4_k", [rows, cols], data);
      case "Q5_K":
        return new KQuantWeight("q5_k", [rows, cols], data);
      case "Q6_K":
        return new KQuantWeight("q6_k", [rows, cols], data);
      case "Q8_K":
        return new KQuantWeight("q8_k", [rows, cols], data);
    }
  };
  return {
    shape,
    file,
    matrix: () => {
      if (shape.length !== 2) throw new CheckpointError(`${file}: tensor "${info.name}" has dims [${info.dims}], expected a matrix`);
      return asMatrix(shape[0], shape[1]);
    },
    vector: () => {
      const n = shape.reduce((a, b) => a * b, 1);
      const out = new Float32Array(n);
      asMatrix(1, n).decodeRow(0, out);
      return new Tensor(out, shape);
    },
  };
}

/**
 * Builds the model in a parsed GGUF file, reading its tensors from all its `parts` (readGgufParts';
 * a file that is not split is its own one part); `config` is ggufModelConfig's.
 */
export function loadGgufModel(header: GgufHeader, config = ggufModelConfig(header), parts = readGgufParts(header)): Transformer {
  const tensors = new Map<string, StoredTensor>();
  for (const part of parts) {
    const data = readGgufTensors(part);
    for (const [name, info] of part.tensors) {
      tensors.set(huggingFaceTensorName(name) ?? name, ggufStoredTensor(info, data.get(name) as Uint8Array<ArrayBuffer>, part.path));
    }
  }
  return buildTransformer(config, tensors, header.path);
}
