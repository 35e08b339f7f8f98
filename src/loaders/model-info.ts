/**
 * What a model is, read from its headers alone (no weights): architecture, parameters counted
 * from tensor shapes, weight types and their bytes, context, vocabulary, and whether it has a
 * chat template. For `tiny-llm info`.
 */
import { existsSync, readdirSync, statSync } from "node:fs";
import { join } from "node:path";
import type { ModelConfig } from "../models/config.js";
import { readJson } from "./checkpoint.js";
import { metadataString, readGgufHeader, readGgufParts } from "./gguf.js";
import { ggufModelConfig } from "./gguf-model.js";
import { readModelConfig } from "./model-loader.js";
import { readSafetensorsHeader } from "./safetensors.js";

export interface ModelInfo {
  path: string;
  format: "safetensors" | "mlx" | "gguf";
  config: ModelConfig;
  /** Weights' values: a quantized matrix counts its unpacked values, not its packed words. */
  parameters: number;
  /** Parameters stored in each type: "BF16", "Q4_K", "4-bit affine" (MLX), ... */
  weightTypes: Record<string, number>;
  /** Bytes of the tensors as stored (quantization scales included). */
  weightBytes: number;
  chatTemplate: boolean;
}

/** Facts of a checkpoint folder or GGUF file. */
export function readModelInfo(path: string): ModelInfo {
  return statSync(path).isDirectory() ? folderInfo(path) : ggufInfo(path);
}

function ggufInfo(path: string): ModelInfo {
  const header = readGgufHeader(path);
  const weightTypes: Record<string, number> = {};
  let parameters = 0;
  let weightBytes = 0;
  for (const part of readGgufParts(header)) {
    for (const t of part.tensors.values()) {
      const n = t.dims.reduce((a, b) => a * b, 1);
      parameters += n;
      weightBytes += t.byteLength;
      weightTypes[t.type] = (weightTypes[t.type] ?? 0) + n;
    }
  }
  const chatTemplate = metadataString(header, "tokenizer.chat_template") !== undefined;
  return { path, format: "gguf", config: ggufModelConfig(header), parameters, weightTypes, weightBytes, chatTemplate };
}

function folderInfo(dir: string): ModelInfo {
  const config = readModelConfig(dir);
  const files = readdirSync(dir).filter((name) => name.endsWith(".safetensors"));
  const tensors = files.flatMap((file) => [...readSafetensorsHeader(join(dir, file)).tensors]);
  const names = new Set(tensors.map(([name]) => name));
  const weightTypes: Record<string, number> = {};
  let parameters = 0;
  let weightBytes = 0;
  for (const [name, t] of tensors) {
    weightBytes += t.end - t.begin;
    const module = name.replace(/\.(weight|scales|biases)$/, "");
    // MLX: a quantized matrix is packed codes (U32 words) with scales and biases per group.
    if (names.has(`${module}.scales`) && config.quantization) {
      if (!name.endsWith(".weight")) continue;
      const params = config.quantization.modules.get(module) || config.quantization.defaults;
      const n = (t.shape.reduce((a, b) => a * b, 1) * 32) / params.bits;
      parameters += n;
      const type = `${params.bits}-bit affine (group ${params.groupSize})`;
      weightTypes[type] = (weightTypes[type] ?? 0) + n;
      continue;
    }
    const n = t.shape.reduce((a, b) => a * b, 1);
    parameters += n;
    weightTypes[t.dtype] = (weightTypes[t.dtype] ?? 0) + n;
  }
  const tokenizerConfig = join(dir, "tokenizer_config.json");
  const template = existsSync(tokenizerConfig)
    ? (readJson(tokenizerConfig, "tokenizer config") as { chat_template?: unknown }).chat_template
    : undefined;
  const chatTemplate = template !== undefined && template !== null;
  return { path: dir, format: config.quantization ? "mlx" : "safetensors", config, parameters, weightTypes, weightBytes, chatTemplate };
}
