/**
 * loadModel: a checkpoint folder, GGUF file or Hugging Face repo id to a running Engine. The tokenizer is read on the
 * caller's thread (it encodes prompts and decodes the stream there); the weights are read by the
 * engine's worker thread, so the caller's event loop keeps running while they load.
 */
import { readdirSync, statSync } from "node:fs";
import { join } from "node:path";
import { AsyncEngine } from "../engine/async-engine.js";
import type { EngineOptions } from "../engine/engine-options.js";
import { loadTokenizer } from "../generation/load-checkpoint.js";
import { ggufPartPaths } from "../loaders/gguf.js";
import { resolveModel, type DownloadProgress } from "../hub/resolve-model.js";
import { Engine } from "./engine.js";

/** The steps of loading, in order, for a progress display. */
export type LoadProgress =
  /** A Hugging Face repo's files are being downloaded into the cache. */
  | ({ phase: "download" } & DownloadProgress)
  | { phase: "tokenizer"; path: string }
  /** The weights are being read: `bytes` of weight files. */
  | { phase: "weights"; path: string; bytes: number }
  /** The engine takes requests. */
  | { phase: "ready"; path: string; ms: number };

export interface LoadModelOptions extends EngineOptions {
  onProgress?: (progress: LoadProgress) => void;
  /** Of a repo id: a branch, tag or commit (default main). */
  revision?: string;
  /** Of a repo id: use only the Hugging Face cache, never the network (also HF_HUB_OFFLINE=1). */
  offline?: boolean;
}

/**
 * Loads `model`: a checkpoint folder, a .gguf file, or a Hugging Face repo id (`org/name`, or
 * `org/name:QUANT` for one GGUF file of a repo of them), taken from the Hugging Face cache or
 * downloaded into it.
 */
export async function loadModel(model: string, opts: LoadModelOptions = {}): Promise<Engine> {
  const { onProgress, revision, offline, ...engineOptions } = opts;
  const started = performance.now();
  const path = await resolveModel(model, {
    revision,
    offline,
    onDownload: onProgress && ((progress) => onProgress({ phase: "download", ...progress })),
  });
  onProgress?.({ phase: "tokenizer", path });
  const { tokenizer, eosTokenIds, sampling } = loadTokenizer(path);
  onProgress?.({ phase: "weights", path, bytes: weightBytes(path) });
  const core = await AsyncEngine.start(path, engineOptions);
  onProgress?.({ phase: "ready", path, ms: performance.now() - started });
  return new Engine({ core, tokenizer, eosTokenIds, sampling, path });
}

/** The size of a GGUF file (all its parts when it is split), or of a folder's safetensors files. */
function weightBytes(path: string): number {
  if (!statSync(path).isDirectory()) return ggufPartPaths(path).reduce((sum, part) => sum + statSync(part).size, 0);
  return readdirSync(path)
    .filter((name) => name.endsWith(".safetensors"))
    .reduce((sum, name) => sum + statSync(join(path, name)).size, 0);
}
