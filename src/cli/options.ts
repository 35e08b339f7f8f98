/**
 * Options that several commands take, parsed one way: whole-number counts, the backend choice
 * (--backend, --threads, --isa) and the --model path.
 */
import { existsSync } from "node:fs";
import type { BackendName, BackendOptions } from "../engine/backend.js";
import { UsageError } from "./errors.js";

/** parseArgs declarations of --backend, --threads and --isa. */
export const BACKEND_OPTIONS = {
  backend: { type: "string" },
  threads: { type: "string" },
  isa: { type: "string" },
} as const;

/** The whole number given to --name, at least `min`; undefined when the option is absent. */
export function parseWholeNumber(name: string, value: string | undefined, min: number): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (value.trim() === "" || !Number.isInteger(n)) throw new UsageError(`--${name} expects a whole number, got "${value}"`);
  if (n < min) throw new UsageError(`--${name} must be at least ${min}, got ${n}`);
  return n;
}

/** --backend, --threads and --isa as selectBackend takes them. */
export function parseBackendOptions(values: { backend?: string; threads?: string; isa?: string }): BackendOptions {
  const backend = values.backend;
  if (backend !== undefined && backend !== "ts" && backend !== "native") {
    throw new UsageError(`--backend must be "native" or "ts", got "${backend}"`);
  }
  return { backend: backend as BackendName | undefined, threads: parseWholeNumber("threads", values.threads, 1), isa: values.isa };
}

/** Throws a UsageError unless `model` exists. */
export function checkModelExists(model: string): void {
  if (!existsSync(model)) {
    throw new UsageError(`model folder or file ${model} does not exist; --model takes a checkpoint folder or a .gguf file`);
  }
}
