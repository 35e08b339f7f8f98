/**
 * An Engine for a loaded model with the options a user gave: kernels, KV pool size and dtype,
 * batch limits. The pool's default size fits the machine: a quarter of the memory that is free,
 * at most the larger of 16384 tokens and one full context.
 */
import { freemem } from "node:os";
import type { Transformer } from "../models/transformer.js";
import { selectBackend, type Backend } from "./backend.js";
import { Engine } from "./engine.js";
import { DEFAULT_BLOCK_SIZE, DEFAULT_MAX_BATCH_TOKENS, DEFAULT_MAX_NUM_SEQS, type EngineOptions } from "./engine-options.js";
import { kvCacheTokens, PagedKvCache } from "./kv-cache.js";

export interface CreatedEngine {
  engine: Engine;
  backend: Backend;
}

export function createEngine(reference: Transformer, opts: EngineOptions = {}): CreatedEngine {
  const config = reference.config;
  const blockSize = opts.blockSize ?? DEFAULT_BLOCK_SIZE;
  if (!Number.isInteger(blockSize) || blockSize < 1 || blockSize > 64 || (blockSize & (blockSize - 1)) !== 0) {
    throw new RangeError(`the KV block size must be a power of two from 1 to 64, got ${blockSize}`);
  }
  const backend = selectBackend(reference, opts);
  const kvDtype = opts.kvDtype ?? (backend.name === "native" ? "f16" : "f32");
  const perToken = PagedKvCache.bytesPerToken(config, kvDtype);
  const tokens =
    opts.kvCacheSize !== undefined
      ? kvCacheTokens(opts.kvCacheSize, perToken)
      : Math.min(Math.max(16384, config.maxPositionEmbeddings), Math.floor((0.25 * freemem()) / perToken));
  const blocks = Math.floor(tokens / blockSize);
  if (blocks < 1)
    throw new RangeError(
      `--kv-cache-size ${opts.kvCacheSize} holds less than one block of ${blockSize} tokens (${perToken * blockSize} bytes)`,
    );
  const engine = new Engine(backend.forward, {
    blocks,
    blockSize,
    kvDtype,
    maxNumSeqs: opts.maxNumSeqs ?? DEFAULT_MAX_NUM_SEQS,
    maxBatchTokens: opts.maxBatchTokens ?? DEFAULT_MAX_BATCH_TOKENS,
  });
  return { engine, backend };
}
