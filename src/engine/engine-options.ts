/**
 * How an engine is set up: which kernels run it, how big its KV pool is and how much work one
 * step may take. Plain data, so it crosses into the engine's worker thread as it is.
 */
import type { KvDtype } from "../kernels/kernels.js";

export interface EngineOptions {
  /** "native" (the default where the addon built) or "ts", the TypeScript kernels. */
  backend?: "native" | "ts";
  /** Native kernel threads (default: one per core). */
  threads?: number;
  /** Pins the native kernels to one instruction set ("auto" by default). */
  isa?: string;
  /** The KV pool: bytes ("2GB", "512MiB", a number) or tokens ("16384t"); the default is create-engine.ts's. */
  kvCacheSize?: string | number;
  /** How K/V are stored: f16 by default on the native kernels, f32 on the TypeScript ones. */
  kvDtype?: KvDtype;
  /** Tokens per KV block. */
  blockSize?: number;
  /** Most sequences running at once; more wait in the queue. */
  maxNumSeqs?: number;
  /** Most tokens one step computes: one per running sequence, the rest for prompt chunks. */
  maxBatchTokens?: number;
  /**
   * A row's results do not depend on the other rows of its batch (on by default): every matmul
   * uses the one-row kernels' accumulation order. Off lets prompts use the faster batched
   * kernels (AMX tiles, VNNI strips), whose sums are ordered differently.
   */
  batchInvariant?: boolean;
}

export const DEFAULT_BLOCK_SIZE = 16;
export const DEFAULT_MAX_NUM_SEQS = 64;
export const DEFAULT_MAX_BATCH_TOKENS = 256;
