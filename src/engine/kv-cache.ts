/**
 * The paged KV cache's storage: a pool of fixed-size blocks, each holding blockSize tokens' keys
 * and values for every layer, in one allocation. Layer l's K (and V) is [blocks, H_kv,
 * blockSize, D], so one block's keys of one head are a contiguous [blockSize, D] tile that
 * attention reads straight from the pool. Which block belongs to which sequence is
 * block-pool.ts's business.
 */
import { kvDtypeBytes, type KvArray, type KvDtype } from "../kernels/kernels.js";
import type { ModelConfig } from "../models/config.js";

export class PagedKvCache {
  readonly layers: { k: KvArray; v: KvArray }[];

  constructor(
    config: ModelConfig,
    readonly blocks: number,
    readonly blockSize: number,
    readonly dtype: KvDtype,
  ) {
    const perLayer = blocks * config.numKvHeads * blockSize * config.headDim;
    // Pages are touched only as blocks are written: an unused pool costs address space, not memory.
    const storage = dtype === "f32" ? new Float32Array(2 * config.numLayers * perLayer) : new Uint16Array(2 * config.numLayers * perLayer);
    this.layers = Array.from({ length: config.numLayers }, (_, l) => ({
      k: storage.subarray(2 * l * perLayer, (2 * l + 1) * perLayer),
      v: storage.subarray((2 * l + 1) * perLayer, (2 * l + 2) * perLayer),
    }));
  }

  /** Bytes of K and V for one token across all layers. */
  static bytesPerToken(config: ModelConfig, dtype: KvDtype): number {
    return 2 * config.numLayers * config.numKvHeads * config.headDim * kvDtypeBytes(dtype);
  }

  get bytes(): number {
    return this.layers.reduce((sum, l) => sum + l.k.byteLength + l.v.byteLength, 0);
  }
}

/**
 * The number of tokens a --kv-cache-size names: "16384t" or "16384 tokens" are tokens; a number
 * or "2GB", "512MiB", "1.5G" are bytes, divided by what a token takes.
 */
export function kvCacheTokens(size: string | number, bytesPerToken: number): number {
  if (typeof size === "number") return Math.floor(size / bytesPerToken);
  const m = /^\s*(\d+(?:\.\d+)?)\s*(t|tokens?|b|k|kb|kib|m|mb|mib|g|gb|gib)?\s*$/i.exec(size);
  if (!m) throw new RangeError(`--kv-cache-size takes bytes ("2GB", "512MiB") or tokens ("16384t"), got "${size}"`);
  const n = Number(m[1]);
  const unit = (m[2] ?? "b").toLowerCase();
  if (unit.startsWith("t")) return Math.floor(n);
  const scale: Record<string, number> = { b: 1, k: 1e3, kb: 1e3, kib: 1024, m: 1e6, mb: 1e6, mib: 2 ** 20, g: 1e9, gb: 1e9, gib: 2 ** 30 };
  return Math.floor((n * scale[unit]) / bytesPerToken);
}
