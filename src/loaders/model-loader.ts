/**
 * Assembles a Transformer from a Hugging Face checkpoint folder: config.json for the shapes,
 * safetensors for the weights. Every expected tensor must be present with the expected shape,
 * and no unknown tensor may be left over, so a mismatched checkpoint fails here with a message
 * instead of producing garbage later.
 */
import { join } from "node:path";
import { Attention } from "../layers/attention.js";
import { Embedding } from "../layers/embedding.js";
import { Linear } from "../layers/linear.js";
import { MLP } from "../layers/mlp.js";
import { RMSNorm } from "../layers/rms-norm.js";
import { RoPE } from "../layers/rope.js";
import { parseModelConfig, type ModelConfig } from "../models/config.js";
import { DecoderLayer, Transformer } from "../models/transformer.js";
import { Tensor } from "../tensor/tensor.js";
import { DenseWeight } from "../tensor/weight.js";
import { CheckpointError, loadCheckpointTensors, readJson } from "./checkpoint.js";
import type { RawTensor } from "./safetensors.js";

/** Tensors some exporters include that carry nothing we need. */
const IGNORED = /(^|\.)rotary_emb\.inv_freq$/;

class TensorSource {
  private readonly used = new Set<string>();

  constructor(
    private readonly tensors: Map<string, RawTensor>,
    private readonly dir: string,
  ) {}

  has(name: string): boolean {
    return this.tensors.has(name);
  }

  take(name: string, shape: readonly number[]): RawTensor {
    const t = this.tensors.get(name);
    if (!t) throw new CheckpointError(`${this.dir}: tensor "${name}" is missing; the checkpoint does not match its config.json`);
    if (t.shape.length !== shape.length || t.shape.some((d, i) => d !== shape[i])) {
      throw new CheckpointError(
        `${t.file}: tensor "${name}" has shape [${t.shape}] but config.json implies [${shape}]; the checkpoint does not match its config`,
      );
    }
    this.used.add(name);
    return t;
  }

  /** Marks a present tensor as deliberately unused (e.g. a redundant copy of a tied head). */
  skip(name: string): void {
    if (this.tensors.has(name)) this.used.add(name);
  }

  checkAllUsed(): void {
    const left = [...this.tensors.keys()].filter((n) => !this.used.has(n) && !IGNORED.test(n));
    if (left.length > 0) {
      const shown = left.slice(0, 5).join(", ") + (left.length > 5 ? `, … (${left.length} in all)` : "");
      throw new CheckpointError(`${this.dir}: unexpected tensors ${shown}; the checkpoint does not match its config.json`);
    }
  }
}

/** A 2-d weight kept in its stored type. */
function matrix(t: RawTensor): DenseWeight {
  const [rows, cols] = t.shape;
  const { buffer, byteOffset, byteLength } = t.data;
  switch (t.dtype) {
    case "F32":
      return new DenseWeight("f32", [rows, cols], new Float32Array(buffer, byteOffset, byteLength / 4));
    case "BF16":
      return new DenseWeight("bf16", [rows, cols], new Uint16Array(buffer, byteOffset, byteLength / 2));
    case "F16":
      return new DenseWeight("f16", [rows, cols], new Uint16Array(buffer, byteOffset, byteLength / 2));
    default:
      throw new CheckpointError(`${t.file}: tensor "${t.name}" has dtype ${t.dtype}; only F32, F16 and BF16 weights are supported`);
  }
}

/** A small tensor (norm weight, bias) widened to f32. */
function vector(t: RawTensor): Tensor {
  const m = matrix({ ...t, shape: [1, t.shape[0]] });
  const out = new Float32Array(m.cols);
  m.decodeRow(0, out);
  return new Tensor(out, t.shape);
}

export function buildTransformer(config: ModelConfig, tensors: Map<string, RawTensor>, dir: string): Transformer {
  const src = new TensorSource(tensors, dir);
  const { hiddenSize: E, intermediateSize: I, numHeads: H, numKvHeads: Hkv, headDim: D, vocabSize: V } = config;
  const linear = (name: string, out: number, inp: number, bias: boolean): Linear =>
    new Linear(matrix(src.take(`${name}.weight`, [out, inp])), bias ? vector(src.take(`${name}.bias`, [out])) : undefined);
  const norm = (name: string, n: number): RMSNorm => new RMSNorm(vector(src.take(`${name}.weight`, [n])), config.rmsNormEps);
  const rope = new RoPE(D, config.ropeTheta, config.ropeTraditional);

  const embed = new Embedding(matrix(src.take("model.embed_tokens.weight", [V, E])));
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
  if (config.tieWordEmbeddings) src.skip("lm_head.weight");
  else lmHead = linear("lm_head", V, E, false);
  src.checkAllUsed();
  return new Transformer(config, embed, layers, finalNorm, lmHead);
}

/** Reads config.json and the safetensors weights of a checkpoint folder. */
export function loadModel(dir: string): Transformer {
  const configPath = join(dir, "config.json");
  const config = parseModelConfig(readJson(configPath, "model config") as Record<string, unknown>, configPath);
  return buildTransformer(config, loadCheckpointTensors(dir), dir);
}
