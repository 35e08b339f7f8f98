/**
 * Chooses what runs a loaded model: the native kernels where they built (the default), or the
 * TypeScript reference.
 */
import { nativeKernels, nativeUnavailableReason } from "../kernels/native.js";
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
}

export function selectBackend(reference: Transformer, opts: { backend?: BackendName; threads?: number } = {}): Backend {
  if (opts.backend === "ts") return { name: "ts", model: reference, threads: 1 };
  const kernels = nativeKernels();
  if (!kernels) {
    const reason = nativeUnavailableReason() ?? "unknown reason";
    if (opts.backend === "native") throw new Error(`the native backend is not available: ${reason}`);
    return { name: "ts", model: reference, threads: 1, notice: `native kernels unavailable (${reason}); using the slower TypeScript backend` };
  }
  const threads = kernels.setThreads(opts.threads ?? 0);
  let model: NativeTransformer;
  try {
    model = new NativeTransformer(reference, kernels);
  } catch (err) {
    // Asked for by name, the kernels' refusal (e.g. a weight type they lack) is the error;
    // as the default choice, the TypeScript path runs any model.
    if (opts.backend === "native") throw err;
    return { name: "ts", model: reference, threads: 1, notice: `native kernels cannot run this model (${(err as Error).message}); using the slower TypeScript backend` };
  }
  return { name: "native", model, threads };
}
