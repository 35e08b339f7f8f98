/**
 * Chooses the kernels that run a loaded model (the native addon where it built, the TypeScript
 * kernels otherwise or when asked) and builds the batch-first forward pass on them.
 */
import { nativeKernels, nativeUnavailableReason } from "../kernels/native.js";
import { NativeKernels } from "../kernels/native-kernels.js";
import { TsKernels } from "../kernels/ts-kernels.js";
import type { Transformer } from "../models/transformer.js";
import type { LanguageModel } from "../models/language-model.js";
import { BatchForward } from "./batch-forward.js";
import { SingleSequenceModel } from "./single-sequence.js";

export type BackendName = "ts" | "native";

export interface BackendOptions {
  backend?: BackendName;
  threads?: number;
  /** An instruction set the addon lists (availableIsas), or "auto" (native backend only). */
  isa?: string;
  /** See EngineOptions.batchInvariant (default true). */
  batchInvariant?: boolean;
}

export interface Backend {
  name: BackendName;
  forward: BatchForward;
  /** One sequence at a time on that forward pass, with f32 K/V: logits for tests, benchmarks and perplexity. */
  model: LanguageModel;
  /** A one-line notice for the user when the choice fell back to the TypeScript kernels. */
  notice?: string;
  isa: string;
  threads: number;
}

export function selectBackend(reference: Transformer, opts: BackendOptions = {}): Backend {
  const pinned = opts.isa !== undefined && opts.isa !== "auto";
  if (pinned && opts.backend === "ts") throw new Error(`--isa applies to the native backend, not to --backend ts`);
  const ts = (notice?: string): Backend => backend("ts", new BatchForward(reference, new TsKernels()), notice);
  if (opts.backend === "ts") return ts();
  const addon = nativeKernels();
  if (!addon) {
    const reason = nativeUnavailableReason() ?? "unknown reason";
    if (opts.backend === "native") throw new Error(`the native backend is not available: ${reason}`);
    if (pinned) throw new Error(`--isa needs the native backend, which is not available: ${reason}`);
    return ts(`native kernels unavailable (${reason}); using the slower TypeScript backend`);
  }
  if (pinned && !addon.availableIsas().includes(opts.isa!)) {
    throw new Error(`instruction set "${opts.isa}" is not available on this CPU (available: ${addon.availableIsas().join(", ")})`);
  }
  let forward: BatchForward;
  try {
    const kernels = new NativeKernels(addon, { threads: opts.threads, isa: opts.isa, batchInvariant: opts.batchInvariant ?? true });
    forward = new BatchForward(reference, kernels);
  } catch (err) {
    // Asked for by name, the kernels' refusal (e.g. a weight type they lack) is the error;
    // as the default choice, the TypeScript kernels run any model.
    if (opts.backend === "native") throw err;
    return ts(`native kernels cannot run this model (${(err as Error).message}); using the slower TypeScript backend`);
  }
  return backend("native", forward);
}

function backend(name: BackendName, forward: BatchForward, notice?: string): Backend {
  const { isa, threads } = forward.kernels.info();
  return { name, forward, model: new SingleSequenceModel(forward, "f32"), notice, isa, threads };
}
