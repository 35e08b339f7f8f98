/**
 * Options that several commands take, parsed one way: whole-number counts, the backend choice
 * (--backend, --threads, --isa, --batch-invariant) and the --model path.
 */
import { existsSync } from "node:fs";
import type { BackendName, BackendOptions } from "../engine/backend.js";
import { UsageError } from "./errors.js";

/** parseArgs declarations of --backend, --threads, --isa and --batch-invariant. */
export const BACKEND_OPTIONS = {
  backend: { type: "string" },
  threads: { type: "string" },
  isa: { type: "string" },
  "batch-invariant": { type: "string" },
} as const;

/** Help lines for BACKEND_OPTIONS, in the commands' column layout. */
export const BATCH_INVARIANT_HELP = `  --batch-invariant on|off
                      on (default): a token's results do not depend on the other rows of its
                      batch; off: prompts use the faster batched kernels (AMX, VNNI strips)`;

/** The whole number given to --name, at least `min`; undefined when the option is absent. */
export function parseWholeNumber(name: string, value: string | undefined, min: number): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (value.trim() === "" || !Number.isInteger(n)) throw new UsageError(`--${name} expects a whole number, got "${value}"`);
  if (n < min) throw new UsageError(`--${name} must be at least ${min}, got ${n}`);
  return n;
}

/** --backend, --threads, --isa and --batch-invariant as selectBackend takes them. */
export function parseBackendOptions(values: {
  backend?: string;
  threads?: string;
  isa?: string;
  "batch-invariant"?: string;
}): BackendOptions {
  const backend = values.backend;
  if (backend !== undefined && backend !== "ts" && backend !== "native") {
    throw new UsageError(`--backend must be "native" or "ts", got "${backend}"`);
  }
  const invariant = values["batch-invariant"];
  if (invariant !== undefined && invariant !== "on" && invariant !== "off") {
    throw new UsageError(`--batch-invariant must be "on" or "off", got "${invariant}"`);
  }
  return {
    backend: backend as BackendName | undefined,
    threads: parseWholeNumber("threads", values.threads, 1),
    isa: values.isa,
    batchInvariant: invariant === undefined ? undefined : invariant === "on",
  };
}

/** Throws a UsageError unless `model` exists. */
export function checkModelExists(model: string): void {
  if (!existsSync(model)) {
    throw new UsageError(`model folder or file ${model} does not exist; --model takes a checkpoint folder or a .gguf file`);
  }
}
