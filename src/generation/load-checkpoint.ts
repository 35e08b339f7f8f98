/**
 * Everything generation needs from a checkpoint, from either a Hugging Face folder or a single
 * GGUF file: the model, its tokenizer, the ids that end generation and the sampling defaults.
 */
import { existsSync, statSync } from "node:fs";
import { basename, dirname, join } from "node:path";
import { readGenerationConfig, type SamplingDefaults } from "./generation-config.js";
import type { ModelConfig } from "../models/config.js";
import type { Transformer } from "../models/transformer.js";
import { ggufTokenizer } from "../tokenizer/gguf-tokenizer.js";
import { Tokenizer } from "../tokenizer/tokenizer.js";
import { metadataNumber, readGgufHeader, readGgufParts, type GgufHeader } from "../loaders/gguf.js";
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
  sampling: SamplingDefaults;
}

/**
 * Whether `path` is a checkpoint folder or (any other file) a GGUF file. A file of a checkpoint
 * (its config.json, its .safetensors) is an error that says to pass the folder, not that the
 * file is no GGUF.
 */
export function modelPathKind(path: string): "folder" | "gguf" {
  if (!existsSync(path)) throw new CheckpointError(`${path} does not exist; expected a checkpoint folder or a .gguf file`);
  if (statSync(path).isDirectory()) return "folder";
  const dir = dirname(path);
  if (
    !/\.gguf$/i.test(path) &&
    (/\.safetensors$/i.test(path) || basename(path) === "config.json" || existsSync(join(dir, "config.json")))
  ) {
    throw new CheckpointError(`${path} is one file of a checkpoint; pass the folder that holds it: ${dir}`);
  }
  return "gguf";
}

/** Loads a Hugging Face checkpoint folder, or a GGUF file when `path` is a file. */
export function loadCheckpoint(path: string): LoadedCheckpoint {
  const kind = modelPathKind(path);
  // The native addon, where it built, sets the allocator's policy for large buffers as it loads
  // (addon.cc): loaded first, the policy holds for the tokenizer's tables too.
  nativeKernels();
  return kind === "folder" ? loadFolder(path) : loadGguf(path);
}

export type LoadedTokenizer = Omit<LoadedCheckpoint, "model">;

/**
 * The tokenizer, stop tokens and sampling defaults of a checkpoint folder or GGUF file, without
 * its weights: for a process that tokenizes while another thread runs the model.
 */
export function loadTokenizer(path: string): LoadedTokenizer {
  if (modelPathKind(path) === "gguf") {
    const { tokenizer, eosTokenIds } = readGgufHead(path);
    return { tokenizer, eosTokenIds, sampling: { temperature: 0 } };
  }
  return folderTokenizer(path, readModelConfig(path));
}

function folderTokenizer(dir: string, config: ModelConfig): LoadedTokenizer {
  const tokenizer = Tokenizer.fromDir(dir);
  // Checked here, not at the first id past the embedding, which may come long into a run.
  if (tokenizer.vocabSize > config.vocabSize) {
    throw new CheckpointError(
      `${dir}: the tokenizer has ${tokenizer.vocabSize} tokens but the model only ${config.vocabSize} (vocab_size in config.json); ` +
        `tokenizer.json is from another model: use the one from this model's repository`,
    );
  }
  const generationConfig = readGenerationConfig(dir);
  // generation_config.json's list is authoritative; config.json's is the fallback.
  const configured = generationConfig.eosTokenIds.length > 0 ? generationConfig.eosTokenIds : config.eosTokenIds;
  return { tokenizer, eosTokenIds: [...new Set([...configured, ...tokenizer.eosIds])], sampling: generationConfig.sampling };
}

function loadFolder(dir: string): LoadedCheckpoint {
  // The tokenizer first: a mismatch is found before the weights are read.
  const config = readModelConfig(dir);
  const tokenizer = folderTokenizer(dir, config);
  return { model: loadModel(dir, config), ...tokenizer };
}

function loadGguf(path: string): LoadedCheckpoint {
  // The metadata is done with before the weights are read, so that the collections their loading
  // sets off free it (the tokenizer's 150k-entry arrays are most of it).
  const { config, tokenizer, eosTokenIds, parts } = readGgufHead(path);
  const model = loadGgufModel(parts[0], config, parts);
  // GGUF carries no sampling settings.
  return { model, tokenizer, eosTokenIds, sampling: { temperature: 0 } };
}

/**
 * What a GGUF file's header gives, checked before gigabytes of weights are read, and the tensor
 * layout alone of each of its parts (one unless it is split).
 */
function readGgufHead(path: string): { config: ModelConfig; tokenizer: Tokenizer; eosTokenIds: number[]; parts: GgufHeader[] } {
  const header = readGgufHeader(path);
  // First: a later part of a split file has no model metadata to read.
  const parts = readGgufParts(header).map((part) => ({ ...part, metadata: new Map() }));
  const config = ggufModelConfig(header);
  const tokenizer = ggufTokenizer(header);
  // End of turn and end of message (chat models) end generation as well as end of sequence.
  const stopKeys = ["tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id", "tokenizer.ggml.eom_token_id"];
  const eosTokenIds = [...new Set(stopKeys.map((key) => metadataNumber(header, key)).filter((id) => id !== undefined))];
  return { config, tokenizer, eosTokenIds, parts };
}
