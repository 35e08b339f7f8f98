/**
 * Command lines parsed one way for every command: -h/--help, short flags, option values that
 * begin with a dash, one-line errors, numbers in range, and the options several commands share
 * (--backend, --threads, --isa, --batch-invariant, --model and where its model is).
 */
import { existsSync } from "node:fs";
import { availableParallelism } from "node:os";
import { parseArgs, type ParseArgsConfig } from "node:util";
import type { BackendName, BackendOptions } from "../engine/backend.js";
import type { KvDtype } from "../kernels/kernels.js";
import { UsageError } from "./errors.js";
import { DEFAULT_MODEL, parseModelSpec } from "../hub/model-spec.js";
import { resolveModel } from "../hub/resolve-model.js";
import { notice } from "./output.js";
import { downloadBar } from "./progress.js";

type OptionsConfig = NonNullable<ParseArgsConfig["options"]>;
type StrictConfig<T extends OptionsConfig> = { args: string[]; options: T; strict: true; allowPositionals: false };
/** What parseArgs would return for these declarations, had it been strict. */
export type OptionValues<T extends OptionsConfig> = ReturnType<typeof parseArgs<StrictConfig<T>>>["values"];

/**
 * The options of `tiny-llm <command>` from `argv`, or undefined after printing `help` for -h or
 * --help. Unlike parseArgs alone, `--prompt "- item"` and `--temperature -1` take the next
 * argument as their value; only a known option there (`--prompt --chat`) is an error, since the
 * value was most likely forgotten. Every mistake is a one-line UsageError.
 */
export function parseOptions<const T extends OptionsConfig>(
  command: string,
  argv: readonly string[],
  options: T,
  help: string,
): OptionValues<T> | undefined {
  return parseCommandLine(command, argv, options, help, 0)?.values;
}

/** parseOptions for a command that also takes up to `maxArgs` arguments (`tiny-llm pull REPO`). */
export function parseCommandLine<const T extends OptionsConfig>(
  command: string,
  argv: readonly string[],
  options: T,
  help: string,
  maxArgs: number,
): { values: OptionValues<T>; args: string[] } | undefined {
  const end = argv.indexOf("--");
  if ((end < 0 ? argv : argv.slice(0, end)).some((a) => a === "-h" || a === "--help")) {
    process.stdout.write(help + "\n");
    return undefined;
  }
  const hint = `run tiny-llm ${command} --help for the options`;
  const { values, tokens } = parseArgs({
    args: inlineValues(argv, options, hint),
    options,
    strict: false,
    allowPositionals: true,
    tokens: true,
  });
  const args: string[] = [];
  for (const token of tokens) {
    if (token.kind === "positional") {
      if (args.length < maxArgs) {
        args.push(token.value);
        continue;
      }
      throw new UsageError(`unexpected argument "${token.value}"; ${hint}`);
    }
    if (token.kind !== "option") continue;
    const declared = Object.hasOwn(options, token.name) ? options[token.name] : undefined;
    if (declared === undefined) {
      const guess = closest(token.name, Object.keys(options));
      throw new UsageError(`unknown option ${token.rawName}${guess ? ` (did you mean --${guess}?)` : ""}; ${hint}`);
    }
    if (declared.type === "boolean" && token.value !== undefined) throw new UsageError(`--${token.name} takes no value; ${hint}`);
  }
  return { values: values as OptionValues<T>, args };
}

/**
 * `argv` with each string option's separate value joined to it (`--prompt=- item`), so that
 * parseArgs takes a value beginning with a dash as the value it is.
 */
function inlineValues(argv: readonly string[], options: OptionsConfig, hint: string): string[] {
  const byShort = new Map(Object.entries(options).flatMap(([name, o]) => (o.short ? [[o.short, name] as const] : [])));
  const optionName = (arg: string): string | undefined => {
    if (arg.startsWith("--")) {
      const name = arg.slice(2).split("=", 1)[0];
      return Object.hasOwn(options, name) ? name : undefined;
    }
    return arg.length === 2 && arg[0] === "-" ? byShort.get(arg[1]) : undefined;
  };
  const out: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === "--") {
      out.push(...argv.slice(i));
      break;
    }
    const name = arg.includes("=") ? undefined : optionName(arg);
    if (name === undefined || options[name].type !== "string") {
      out.push(arg);
      continue;
    }
    const value = argv[i + 1];
    if (value === undefined || value === "--" || optionName(value) !== undefined) {
      const literal = value === undefined ? "" : ` (to pass "${value}" itself, write --${name}=${value})`;
      throw new UsageError(`${arg} needs a value${literal}; ${hint}`);
    }
    out.push(`--${name}=${value}`);
    i++;
  }
  return out;
}

/** The name nearest to `name` within two edits, for "did you mean". */
export function closest(name: string, names: readonly string[]): string | undefined {
  let best: string | undefined;
  let bestDistance = 3;
  for (const candidate of names) {
    const d = editDistance(name, candidate);
    if (d < bestDistance) [best, bestDistance] = [candidate, d];
  }
  return best;
}

function editDistance(a: string, b: string): number {
  let row = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const next = [i];
    for (let j = 1; j <= b.length; j++) next[j] = Math.min(row[j] + 1, next[j - 1] + 1, row[j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1));
    row = next;
  }
  return row[b.length];
}

/** The number given to --name, within [min, max]; undefined when the option is absent. */
export function parseNumber(name: string, value: string | undefined, min = -Infinity, max = Infinity): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (value.trim() === "" || !Number.isFinite(n)) throw new UsageError(`--${name} expects a number, got "${value}"`);
  return inRange(name, n, min, max);
}

/** The whole number given to --name, within [min, max]; undefined when the option is absent. */
export function parseWholeNumber(name: string, value: string | undefined, min: number, max = Infinity): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (value.trim() === "" || !Number.isSafeInteger(n)) throw new UsageError(`--${name} expects a whole number, got "${value}"`);
  return inRange(name, n, min, max);
}

function inRange(name: string, n: number, min: number, max: number): number {
  if (n < min) throw new UsageError(`--${name} must be at least ${min}, got ${n}`);
  if (n > max) throw new UsageError(`--${name} must be at most ${max}, got ${n}`);
  return n;
}

const KV_DTYPES: readonly KvDtype[] = ["f32", "f16", "bf16"];

/** --kv-dtype; undefined when the option is absent. */
export function parseKvDtype(value: string | undefined): KvDtype | undefined {
  if (value !== undefined && !KV_DTYPES.includes(value as KvDtype))
    throw new UsageError(`--kv-dtype must be f32, f16 or bf16, got "${value}"`);
  return value as KvDtype | undefined;
}

/** --model, with -m. */
export const MODEL_OPTION = { model: { type: "string", short: "m" } } as const;

/** --revision and --offline, for the commands whose --model may be a Hugging Face repo id. */
export const HUB_OPTIONS = { revision: { type: "string" }, offline: { type: "boolean", default: false } } as const;

/** Help lines for --model (of the commands with HUB_OPTIONS) and HUB_OPTIONS, with the model used when none is named. */
export function modelHelp(fallback: string | undefined, width = 22): string {
  const pad = (option: string): string => `  ${option.padEnd(width - 2)}`;
  const more = " ".repeat(width);
  return `${pad("-m, --model M")}a checkpoint folder, a .gguf file, or a Hugging Face repo id: org/name
${more}(safetensors or MLX) or org/name:Q4_K_M (one GGUF quantization), taken
${more}from the Hugging Face cache or downloaded into it${fallback === undefined ? "" : `\n${more}(default ${fallback})`}
${pad("--revision R")}branch, tag or commit of the repo (default main)
${pad("--offline")}use only the cache, never the network (also HF_HUB_OFFLINE=1)`;
}

/** parseArgs declarations of --backend, --threads (-t), --isa and --batch-invariant. */
export const BACKEND_OPTIONS = {
  backend: { type: "string" },
  threads: { type: "string", short: "t" },
  isa: { type: "string" },
  "batch-invariant": { type: "string" },
} as const;

/** Help lines for BACKEND_OPTIONS, in the commands' column layout; `threads` says what the threads run. */
export function backendHelp(threads = "threads for the native kernels"): string {
  return `  --backend B         native (C++ kernels, the default where they built) or ts (the TypeScript reference)
  -t, --threads N     ${threads} (default and most: one per core)
  --isa I             pin the native kernels to amx, avx512, avx2 or scalar (default: the best here)
  --batch-invariant on|off
                      on (default): a token's results do not depend on the other rows of its
                      batch; off: prompts use the faster batched kernels (AMX, VNNI strips)`;
}

/** More threads than this is a typo, not a machine (the kernels take at most 256). */
const MAX_THREADS = 1024;

/**
 * --threads, at most one per core: threads beyond the cores only wait on each other (64 on 2
 * cores run many times slower), so more are cut to the cores with a notice.
 */
export function parseThreads(value: string | undefined): number | undefined {
  const threads = parseWholeNumber("threads", value, 1, MAX_THREADS);
  const cores = availableParallelism();
  if (threads === undefined || threads <= cores) return threads;
  notice(`--threads ${threads} is more than the ${cores} cores here; using ${cores}`);
  return cores;
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
    threads: parseThreads(values.threads),
    isa: values.isa,
    batchInvariant: invariant === undefined ? undefined : invariant === "on",
  };
}

/**
 * The path on this machine of the model --model names (DEFAULT_MODEL when absent): itself, or a
 * repo's snapshot in the Hugging Face cache, downloaded with a progress bar when it is missing.
 * A path that does not exist is a UsageError that says what --model takes.
 */
export async function localModel(values: { model?: string; revision?: string; offline?: boolean }): Promise<string> {
  const model = values.model ?? DEFAULT_MODEL;
  const spec = parseModelSpec(model, values.revision);
  if (spec.kind === "path" && !existsSync(spec.path)) {
    throw new UsageError(
      `model folder or file ${model} does not exist; --model takes a checkpoint folder or a .gguf file, or a Hugging Face repo id (org/name or org/name:QUANT)`,
    );
  }
  return resolveModel(model, { revision: values.revision, offline: values.offline, onDownload: downloadBar() });
}
