/**
 * loadModel: a checkpoint folder or GGUF file to a running Engine. The tokenizer is read on the
 * caller's thread (it encodes prompts and decodes the stream there); the weights are read by the
 * engine's worker thread, so the caller's event loop keeps running while they load.
 */
import { existsSync, readdirSync, statSync } from "node:fs";
import { join } from "node:path";
import { AsyncEngine } from "../engine/async-engine.js";
import type { EngineOptions } from "../engine/engine-options.js";
import { loadTokenizer } from "../generation/load-checkpoint.js";
import { CheckpointError } from "../loaders/safetensors.js";
import { Engine } from "./engine.js";

/** The steps of loading, in order, for a progress display. */
export type LoadProgress =
  | { phase: "tokenizer"; path: string }
  /** The weights are being read: `bytes` of weight files. */
  | { phase: "weights"; path: string; bytes: number }
  /** The engine takes requests. */
  | { phase: "ready"; path: string; ms: number };

export interface LoadModelOptions extends EngineOptions {
  onProgress?: (progress: LoadProgress) => void;
}

export async function loadModel(model: string, opts: LoadModelOptions = {}): Promise<Engine> {
  const { onProgress, ...engineOptions } = opts;
  const started = performance.now();
  const path = await localModelPath(model);
  onProgress?.({ phase: "tokenizer", path });
  const { tokenizer, eosTokenIds, sampling } = loadTokenizer(path);
  onProgress?.({ phase: "weights", path, bytes: weightBytes(path) });
  const core = await AsyncEngine.start(path, engineOptions);
  onProgress?.({ phase: "ready", path, ms: performance.now() - started });
  return new Engine({ core, tokenizer, eosTokenIds, sampling, path });
}

/**
 * Where the model's files are on this machine: the one place a Hugging Face repo id becomes a
 * folder (downloading it, with progress) once the hub's resolver is in; until then a path.
 */
async function localModelPath(model: string): Promise<string> {
  if (!existsSync(model)) throw new CheckpointError(`${model} does not exist; expected a checkpoint folder or a .gguf file`);
  return model;
}

/** The size of a GGUF file, or of a folder's safetensors files. */
function weightBytes(path: string): number {
  if (!statSync(path).isDirectory()) return statSync(path).size;
  return readdirSync(path)
    .filter((name) => name.endsWith(".safetensors"))
    .reduce((sum, name) => sum + statSync(join(path, name)).size, 0);
}
