/**
 * Which of a repo's files a model needs: for a checkpoint, its config, tokenizer and safetensors
 * weights (not the .bin, ONNX or other copies many repos also hold); for a repo of GGUF files,
 * the one file of the quantization asked for, or all parts of it when it is split.
 */
import { posix } from "node:path";
import { SPLIT_NAME } from "../loaders/gguf.js";
import { ModelSpecError } from "./model-spec.js";

export interface RepoSelection {
  kind: "folder" | "gguf";
  files: string[];
  /** What the loader opens, relative to the snapshot: "" for the folder, else the (first) GGUF file. */
  entry: string;
}

// Files a checkpoint folder may hold that loading reads; the weights are the top-level *.safetensors.
const FOLDER_FILES = new Set([
  "config.json",
  "generation_config.json",
  "tokenizer.json",
  "tokenizer_config.json",
  "special_tokens_map.json",
  "added_tokens.json",
  "vocab.json",
  "merges.txt",
  "tokenizer.model",
  "chat_template.jinja",
  "chat_template.json",
  "model.safetensors.index.json",
]);

// Quantization labels as llama.cpp names files: Q4_K_M, IQ4_XS, Q8_0, F16, BF16, ...
const QUANT = /(?:^|[-_.])((?:I?Q\d(?:_[A-Z0-9]+)*)|BF16|F16|F32)(?=[-_.])/gi;

/** The quantization in a GGUF file's name (upper case), or undefined when it names none. */
export function ggufQuant(file: string): string | undefined {
  const name = posix.basename(file).replace(SPLIT_NAME, ".gguf");
  // The last label wins: "Qwen2-0.5B-Q4_K_M.gguf" has "0.5B" before it, never a quant.
  const labels = [...name.matchAll(QUANT)].map((m) => m[1].toUpperCase());
  return labels.at(-1);
}

/** A repo's GGUF model files (not vision projectors), grouped: one entry per quantization, its parts in order. */
function ggufGroups(files: readonly string[]): Map<string, string[]> {
  const groups = new Map<string, string[]>();
  for (const file of [...files].sort()) {
    if (!/\.gguf$/i.test(file) || /mmproj/i.test(posix.basename(file))) continue;
    const quant = ggufQuant(file) ?? posix.basename(file);
    const split = SPLIT_NAME.exec(file);
    // Parts of one split file share the name before the suffix; a second file of the same
    // quantization (another folder) stays apart and the first one found is taken.
    const key = `${quant}\0${split ? file.slice(0, split.index) : file}`;
    groups.set(key, [...(groups.get(key) ?? []), file]);
  }
  const byQuant = new Map<string, string[]>();
  for (const [key, parts] of groups) {
    const quant = key.split("\0")[0];
    if (!byQuant.has(quant)) byQuant.set(quant, parts);
  }
  return byQuant;
}

/** The quantizations a repo's GGUF files come in. */
export function ggufQuants(files: readonly string[]): string[] {
  return [...ggufGroups(files).keys()];
}

/** The files of `repo` (listing `files`) that running it needs; `quant` picks a GGUF file. */
export function selectRepoFiles(repo: string, files: readonly string[], quant?: string): RepoSelection {
  const groups = ggufGroups(files);
  const weights = files.filter((file) => !file.includes("/") && file.endsWith(".safetensors"));
  const hasFolder = files.includes("config.json") && weights.length > 0;
  if (quant === undefined && hasFolder) {
    return { kind: "folder", files: files.filter((file) => FOLDER_FILES.has(file) || weights.includes(file)), entry: "" };
  }
  if (groups.size === 0) {
    const what = quant === undefined ? "no config.json with safetensors weights and no GGUF file" : `no GGUF files (for :${quant})`;
    throw new ModelSpecError(`${repo} has ${what}; it is not a model tiny-llm can run`);
  }
  const available = [...groups.keys()].join(", ");
  // As llama-server -hf: Q4_K_M when no quantization is named, or the only one there is.
  const wanted = quant?.toUpperCase() ?? (groups.size === 1 ? [...groups.keys()][0] : "Q4_K_M");
  const parts = groups.get(wanted);
  if (!parts) {
    throw new ModelSpecError(
      quant === undefined
        ? `${repo} has GGUF files in ${available}; name one: ${repo}:${[...groups.keys()][0]}`
        : `${repo} has no GGUF file of quantization ${quant}; it has ${available}`,
    );
  }
  const split = SPLIT_NAME.exec(parts[0]);
  if (split && (Number(split[1]) !== 1 || parts.length !== Number(split[2]))) {
    throw new ModelSpecError(`${repo}: the split GGUF ${parts[0]} has ${parts.length} of its ${Number(split[2])} parts in the repo`);
  }
  return { kind: "gguf", files: parts, entry: parts[0] };
}

/** What a snapshot holding `files` runs as: "safetensors", "mlx" (when `quantized`), or one "gguf QUANT" per quantization. */
export function modelFormats(files: readonly string[], quantized: boolean): string[] {
  const formats = ggufQuants(files).map((quant) => `gguf ${quant}`);
  if (files.includes("config.json") && files.some((file) => !file.includes("/") && file.endsWith(".safetensors"))) {
    formats.unshift(quantized ? "mlx" : "safetensors");
  }
  return formats;
}
