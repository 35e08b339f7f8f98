/**
 * What --model names: a path on this machine (a checkpoint folder or a .gguf file) or a Hugging
 * Face repo id, `org/name`, with `:QUANT` to pick one GGUF file of a repo of them, as
 * `llama-server -hf` takes it.
 */
import { existsSync } from "node:fs";

/** The model run when none is named. */
export const DEFAULT_MODEL = "Qwen/Qwen2.5-0.5B-Instruct";

export type ModelSpec =
  | { kind: "path"; path: string }
  | {
      kind: "repo";
      /** `org/name`. */
      repo: string;
      /** The GGUF quantization asked for, as typed (matched case-insensitively). */
      quant?: string;
      /** A branch, tag or commit hash. */
      revision: string;
    };

// The hub's own rule for names: letters, digits, '-', '_' and '.', not starting with '-' or '.'.
const NAME = "[A-Za-z0-9_][A-Za-z0-9_.-]*";
const REPO_ID = new RegExp(`^(${NAME}/${NAME})(?::([A-Za-z0-9_]+))?$`);

/** An error in the model named: one line, shown as it is. */
export class ModelSpecError extends Error {
  override name = "ModelSpecError";
}

/**
 * Parses --model. Whatever exists on disk is a path, even when it reads like a repo id; so is
 * anything written as one (`./x`, `/x`, `~/x`, a name ending in .gguf). A missing path is left
 * for the loader to report, so its message stays the one for paths.
 */
export function parseModelSpec(model: string, revision?: string): ModelSpec {
  const match = REPO_ID.exec(model);
  const pathLike = /^[.~/\\]/.test(model) || /\.gguf$/i.test(model);
  if (existsSync(model) || pathLike || !match || match[1].split("/").some((part) => part.endsWith(".") || part.includes(".."))) {
    if (revision !== undefined) {
      throw new ModelSpecError(`--revision ${revision} applies to a Hugging Face repo id, and ${model} is a path`);
    }
    return { kind: "path", path: model };
  }
  return { kind: "repo", repo: match[1], quant: match[2], revision: revision ?? "main" };
}
