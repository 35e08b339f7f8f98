/**
 * Loads the tensors of a Hugging Face style checkpoint directory: either one
 * `model.safetensors`, or shards listed by `model.safetensors.index.json`.
 */
import { existsSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { CheckpointError, readSafetensors, readSafetensorsHeader, type RawTensor } from "./safetensors.js";

// Re-exported so callers that load checkpoints can catch its errors with one import.
export { CheckpointError } from "./safetensors.js";

export const SINGLE_FILE = "model.safetensors";
export const INDEX_FILE = "model.safetensors.index.json";

/**
 * Parses a JSON file, turning a missing or malformed file into a CheckpointError that names
 * it; `what` says what the file is for, e.g. "model config". The caller checks the shape.
 */
export function readJson(path: string, what: string): unknown {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (error) {
    throw new CheckpointError(`cannot read ${what} ${path}: ${(error as Error).message}`, { cause: error });
  }
  try {
    return JSON.parse(text);
  } catch (error) {
    throw new CheckpointError(`${what} ${path} is not valid JSON (${(error as Error).message}); re-download the file`, {
      cause: error,
    });
  }
}

/** Reads every tensor of the checkpoint in `dir`, from its shards when it has an index. */
export function loadCheckpointTensors(dir: string): Map<string, RawTensor> {
  if (!existsSync(dir) || !statSync(dir).isDirectory()) {
    throw new CheckpointError(`checkpoint directory ${dir} does not exist or is not a directory`);
  }
  const indexPath = join(dir, INDEX_FILE);
  if (existsSync(indexPath)) return loadSharded(dir, indexPath);
  const singlePath = join(dir, SINGLE_FILE);
  if (existsSync(singlePath)) return readSafetensors(singlePath);
  throw new CheckpointError(`no checkpoint in ${dir}: expected ${SINGLE_FILE}, or ${INDEX_FILE} together with the shard files it lists`);
}

function loadSharded(dir: string, indexPath: string): Map<string, RawTensor> {
  const shards = readWeightMap(indexPath);
  const result = new Map<string, RawTensor>();
  for (const [shard, listed] of shards) {
    const shardPath = join(dir, shard);
    if (!existsSync(shardPath)) {
      throw new CheckpointError(
        `shard ${shardPath} is missing but ${indexPath} lists ${listed.size} tensors in it (${preview(listed)}); download it`,
      );
    }
    // Check the shard against the index before reading any tensor bytes, so a mismatch is
    // reported at once instead of after loading gigabytes.
    const present = new Set(readSafetensorsHeader(shardPath).tensors.keys());
    const absent = [...listed].filter((name) => !present.has(name));
    if (absent.length > 0) {
      throw new CheckpointError(
        `${shardPath} lacks tensors that ${indexPath} places in it: ${preview(absent)}; the shard and index do not match, re-download both`,
      );
    }
    const unlisted = [...present].filter((name) => !listed.has(name));
    if (unlisted.length > 0) {
      throw new CheckpointError(
        `${shardPath} holds tensors that ${indexPath} does not place in it: ${preview(unlisted)}; the shard and index do not match, re-download both`,
      );
    }
    for (const [name, tensor] of readSafetensors(shardPath, listed)) result.set(name, tensor);
  }
  return result;
}

/** The index's weight_map grouped by shard file, in order of first appearance. */
function readWeightMap(indexPath: string): Map<string, Set<string>> {
  const index = readJson(indexPath, "checkpoint index");
  const weightMap = isPlainObject(index) ? index.weight_map : undefined;
  if (!isPlainObject(weightMap)) {
    throw new CheckpointError(`${indexPath} has no "weight_map" object; re-download the file`);
  }
  const shards = new Map<string, Set<string>>();
  for (const [name, shard] of Object.entries(weightMap)) {
    if (typeof shard !== "string" || shard === "") {
      throw new CheckpointError(`${indexPath} maps tensor "${name}" to ${JSON.stringify(shard)}, not a file name; re-download the file`);
    }
    let names = shards.get(shard);
    if (names === undefined) shards.set(shard, (names = new Set()));
    names.add(name);
  }
  if (shards.size === 0) throw new CheckpointError(`${indexPath} lists no tensors; re-download the file`);
  return shards;
}

/** A few names for an error message; the full list can run to hundreds. */
function preview(names: Iterable<string>): string {
  const all = [...names];
  const shown = all
    .slice(0, 5)
    .map((n) => `"${n}"`)
    .join(", ");
  return all.length > 5 ? `${shown} and ${all.length - 5} more` : shown;
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}
