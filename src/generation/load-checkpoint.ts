/**
 * Everything generation needs from a checkpoint, from either a Hugging Face folder or a single
 * GGUF file: the model, its tokenizer, the ids that end generation and the sampling defaults.
 */
import { existsSync, statSync } from "node:fs";
import { readGenerationConfig } from "./generation-config.js";
import type { SamplerOptions } from "./sampler.js";
import type { ModelConfig } from "../models/config.js";
import type { Transformer } from "../models/transformer.js";
import { ggufTokenizer } from "../tokenizer/gguf-tokenizer.js";
import { Tokenizer } from "../tokenizer/tokenizer.js";
import { metadataNumber, readGgufHeader, type GgufHeader } from "../loaders/gguf.js";
import { ggufModelConfig, loadGgufModel } from "../loaders/gguf-model.js";
import { loadModel, readModelConfig } from "../loaders/model-loader.js";
import { nativeKernels } from "../kernels/native.js";
import { CheckpointError } from "../loaders/safetensors.js";

export interface LoadedCheckpoint {
  model: Transformer;
  tokenizer: Tokenizer;
  /** Tokens that end generation. */
  eosTokenIds: number[];
  /** The model's sampling defaults (greedy when it has none). */
  sampling: SamplerOptions;
}

/** Loads a Hugging Face checkpoint folder, or a GGUF file when `path` is a file. */
export function loadCheckpoint(path: string): LoadedCheckpoint {
  if (!existsSync(path)) throw new CheckpointError(`${path} does not exist; expected a checkpoint folder or a .gguf file`);
  // The native addon, where it built, sets the allocator's policy for large buffers as it loads
  // (addon.cc): loaded first, the policy holds for the tokenizer's tables too.
  nativeKernels();
  return statSync(path).isDirectory() ? loadFolder(path) : loadGguf(path);
}

export type LoadedTokenizer = Omit<LoadedCheckpoint, "model">;

/**
 * The tokenizer, stop tokens and sampling defaults of a checkpoint folder or GGUF file, without
 * its weights: for a process that tokenizes while another thread runs the model.
 */
export function loadTokenizer(path: string): LoadedTokenizer {
  if (!existsSync(path)) throw new CheckpointError(`${path} does not exist; expected a checkpoint folder or a .gguf file`);
  if (!statSync(path).isDirectory()) {
    const { tokenizer, eosTokenIds } = readGgufHead(path);
    return { tokenizer, eosTokenIds, sampling: { temperature: 0 } };
  }
  return folderTokenizer(path, readModelConfig(path).eosTokenIds);
}

function folderTokenizer(dir: string, configEosIds: readonly number[]): LoadedTokenizer {
  const tokenizer = Tokenizer.fromDir(dir);
  const generationConfig = readGenerationConfig(dir);
  // generation_config.json's list is authoritative; config.json's is the fallback.
  const configured = generationConfig.eosTokenIds.length > 0 ? generationConfig.eosTokenIds : configEosIds;
  return { tokenizer, eosTokenIds: [...new Set([...configured, ...tokenizer.eosIds])], sampling: generationConfig.sampling };
}

function loadFolder(dir: string): LoadedCheckpoint {
  const model = loadModel(dir);
  return { model, ...folderTokenizer(dir, model.config.eosTokenIds) };
}

function loadGguf(path: string): LoadedCheckpoint {
  // The metadata is done with before the weights are read, so that the collections their loading
  // sets off free it (the tokenizer's 150k-entry arrays are most of it).
  const { config, tokenizer, eosTokenIds, layout } = readGgufHead(path);
  const model = loadGgufModel(layout, config);
  // GGUF carries no sampling settings.
  return { model, tokenizer, eosTokenIds, sampling: { temperature: 0 } };
}

/** What a GGUF file's header gives, checked before gigabytes of weights are read, and its tensor layout alone. */
function readGgufHead(path: string): { config: ModelConfig; tokenizer: Tokenizer; eosTokenIds: number[]; layout: GgufHeader } {
  const header = readGgufHeader(path);
  const config = ggufModelConfig(header);
  const tokenizer = ggufTokenizer(header);
  // End of turn and end of message (chat models) end generation as well as end of sequence.
  const stopKeys = ["tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id", "tokenizer.ggml.eom_token_id"];
  const eosTokenIds = [...new Set(stopKeys.map((key) => metadataNumber(header, key)).filter((id) => id !== undefined))];
  return { config, tokenizer, eosTokenIds, layout: { ...header, metadata: new Map() } };
}
