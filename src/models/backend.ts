/**
 * Chooses what runs a loaded model: the native kernels where they built (the default), or the
 * TypeScript reference.
 */
import { nativeKernels, nativeUnavailableReason, type NativeAddon, type NativeContext } from "../kernels/native.js";
import type { LanguageModel } from "./language-model.js";
import { NativeTransformer } from "./native-transformer.js";
import type { Transformer } from "./transformer.js";

export type BackendName = "ts" | "native";

export interface Backend {
  name: BackendName;
  model: LanguageModel;
  /** A one-line notice for the user when the choice fell back to the TypeScript path. */
  notice?: string;
  /** Threads the native kernels use (1 for the TypeScript path). */
  threads: number;
  /** The native kernels' context the model runs on (native backend only). */
  context?: NativeContext;
}

/** Instruction sets the native kernels can be pinned to; "auto" takes the best this CPU has. */
export const ISAS = ["auto", "amx", "avx512", "avx2", "scalar"] as const;

/** The instruction sets this CPU offers the kernels, best first. */
export function availableIsas(kernels: NativeAddon): string[] {
  return kernels.availableIsas();
}

export interface BackendOptions {
  backend?: BackendName;
  threads?: number;
  /** One of ISAS (native backend only). */
  isa?: string;
}

export function selectBackend(reference: Transformer, opts: BackendOptions = {}): Backend {
  if (opts.isa !== undefined && opts.isa !== "auto" && opts.backend === "ts")
    throw new Error(`--isa applies to the native backend, not to --backend ts`);
  if (opts.backend === "ts") return { name: "ts", model: reference, threads: 1 };
  const kernels = nativeKernels();
  if (!kernels) {
    const reason = nativeUnavailableReason() ?? "unknown reason";
    if (opts.backend === "native") throw new Error(`the native backend is not available: ${reason}`);
    if (opts.isa !== undefined && opts.isa !== "auto") throw new Error(`--isa needs the native backend, which is not available: ${reason}`);
    return {
      name: "ts",
      model: reference,
      threads: 1,
      notice: `native kernels unavailable (${reason}); using the slower TypeScript backend`,
    };
  }
  if (opts.isa !== undefined && opts.isa !== "auto" && !kernels.availableIsas().includes(opts.isa)) {
    throw new Error(`instruction set "${opts.isa}" is not available on this CPU (available: ${availableIsas(kernels).join(", ")})`);
  }
  // One sequence at a time: there is no batch to be invariant to, so prompts keep the batched kernels.
  const context = kernels.createContext({ threads: opts.threads ?? 0, isa: opts.isa, batchInvariant: false });
  const threads = context.info().threads;
  let model: NativeTransformer;
  try {
    model = new NativeTransformer(reference, kernels, context);
  } catch (err) {
    // Asked for by name, the kernels' refusal (e.g. a weight type they lack) is the error;
    // as the default choice, the TypeScript path runs any model.
    if (opts.backend === "native") throw err;
    return {
      name: "ts",
      model: reference,
      threads: 1,
      notice: `native kernels cannot run this model (${(err as Error).message}); using the slower TypeScript backend`,
    };
  }
  return { name: "native", model, threads, context };
}
