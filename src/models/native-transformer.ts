/**
 * The same transformer as transformer.ts, run by the native kernels for one sequence at a time:
 * weights stay in their stored type and are passed to C++ without copies, activations live in
 * buffers allocated once and reused, and the KV cache is one sequence's paged cache whose blocks
 * are contiguous (block table 0, 1, 2, …), preallocated and grown by doubling. The TypeScript
 * Transformer is the reference this is tested against.
 */
import {
  NativeKvType,
  NativeScaleType,
  NativeWeightType,
  type NativeAddon,
  type NativeContext,
  type NativeWeight,
} from "../kernels/native.js";
import type { Linear } from "../layers/linear.js";
import type { RMSNorm } from "../layers/rms-norm.js";
import { AffineQuantWeight } from "../tensor/affine-quant.js";
import { BlockQuantWeight } from "../tensor/block-quant.js";
import { KQuantWeight } from "../tensor/k-quant.js";
import type { WeightMatrix } from "../tensor/weight.js";
import type { ModelConfig } from "./config.js";
import type { LanguageModel, Sequence } from "./language-model.js";
import { ContextOverflowError, type Transformer } from "./transformer.js";

interface NativeLinear {
  weight: NativeWeight;
  bias: Float32Array | null;
}

/** Projections of one input, run as one matmulMany call (q, k, v). */
interface NativeLinears {
  weights: NativeWeight[];
  biases: (Float32Array | null)[];
}

interface NativeLayer {
  inputNorm: Float32Array;
  qkv: NativeLinears;
  o: NativeLinear;
  qNorm?: Float32Array;
  kNorm?: Float32Array;
  postAttentionNorm: Float32Array;
  gate: NativeLinear;
  up: NativeLinear;
  down: NativeLinear;
}

/**
 * The native view of a weight matrix, or an error naming a storage type the kernels lack.
 * Block-quantized weights are switched to the "rows" layout the kernels read, in place.
 */
export function toNativeWeight(w: WeightMatrix, kernels: Pick<NativeAddon, "regroupRows">): NativeWeight {
  if (w instanceof AffineQuantWeight && (w.bits === 4 || w.bits === 8)) {
    const { buffer, byteOffset, byteLength } = w.packed;
    return {
      type: w.bits === 4 ? NativeWeightType.affine4 : NativeWeightType.affine8,
      data: new Uint8Array(buffer, byteOffset, byteLength),
      rows: w.rows,
      cols: w.cols,
      scales: w.scales,
      biases: w.biases,
      scaleType: NativeScaleType[w.scaleDType],
      groupSize: w.groupSize,
    };
  }
  if (w instanceof KQuantWeight && w.dtype !== "q8_k") {
    // The kernels read GGUF's super-blocks as they are.
    return { type: NativeWeightType[w.dtype], data: w.data, rows: w.rows, cols: w.cols };
  }
  if (w instanceof BlockQuantWeight) {
    w.useRowLayout((dtype, data, rows, cols) => kernels.regroupRows(NativeWeightType[dtype], data, rows, cols));
  }
  const type = (NativeWeightType as Record<string, number>)[w.dtype];
  const data = (w as { data?: unknown }).data;
  if (type === undefined || !(data instanceof Float32Array || data instanceof Uint16Array || data instanceof Uint8Array)) {
    throw new Error(`the native backend has no kernel for ${w.dtype} weights; use --backend ts`);
  }
  return { type, data, rows: w.rows, cols: w.cols };
}

function nativeLinear(l: Linear, kernels: Pick<NativeAddon, "regroupRows">): NativeLinear {
  return { weight: toNativeWeight(l.weight, kernels), bias: l.bias ? l.bias.toFloat32Array() : null };
}

function nativeLinears(ls: Linear[], kernels: Pick<NativeAddon, "regroupRows">): NativeLinears {
  const each = ls.map((l) => nativeLinear(l, kernels));
  return { weights: each.map((l) => l.weight), biases: each.map((l) => l.bias) };
}

const normWeight = (n: RMSNorm): Float32Array => n.weight.toFloat32Array();

/**
 * Activation buffers for up to `rows` tokens per forward pass. The attention's q, k, v and output
 * are dead once the output projection has read them, before the MLP starts: they share the MLP's
 * hidden buffer [rows, I], by far the largest.
 */
class Scratch {
  readonly x: Float32Array;
  readonly xn: Float32Array;
  readonly proj: Float32Array;
  readonly q: Float32Array;
  readonly k: Float32Array;
  readonly v: Float32Array;
  readonly attn: Float32Array;
  readonly hidden: Float32Array;
  /** The outputs of the q, k, v matmulMany call. */
  readonly qkv: Float32Array[];
  /** Each row's position (for RoPE), which is also its cache slot. */
  readonly positions: Int32Array;
  /** The allocations behind the views above. */
  readonly buffers: Float32Array[];

  constructor(
    readonly rows: number,
    c: ModelConfig,
  ) {
    const { hiddenSize: E, numHeads: H, numKvHeads: Hkv, headDim: D, intermediateSize: I } = c;
    this.x = new Float32Array(rows * E);
    this.xn = new Float32Array(rows * E);
    this.proj = new Float32Array(rows * E);
    const shared = new Float32Array(rows * Scratch.sharedFloatsPerRow(c));
    let at = 0;
    const take = (n: number): Float32Array => shared.subarray(at, (at += rows * n));
    this.q = take(H * D);
    this.k = take(Hkv * D);
    this.v = take(Hkv * D);
    this.attn = take(H * D);
    this.hidden = shared.subarray(0, rows * I);
    this.qkv = [this.q, this.k, this.v];
    this.positions = new Int32Array(rows);
    this.buffers = [this.x, this.xn, this.proj, shared];
  }

  static bytesPerRow(c: ModelConfig): number {
    return 4 * (3 * c.hiddenSize + Scratch.sharedFloatsPerRow(c));
  }

  private static sharedFloatsPerRow(c: ModelConfig): number {
    return Math.max(c.intermediateSize, 2 * c.numHeads * c.headDim + 2 * c.numKvHeads * c.headDim);
  }
}

export class NativeTransformer implements LanguageModel {
  readonly config: ModelConfig;
  private readonly layers: NativeLayer[];
  private readonly finalNorm: Float32Array;
  private readonly lmHead: NativeWeight;
  private readonly logits: Float32Array;
  /** Prompt tokens per pass over the layers (see prefillChunk). */
  readonly prefillChunk: number;
  /** Buffers for one token (decode) and for the longest prompt so far (prefill). */
  private readonly decodeScratch: Scratch;
  private prefillScratch?: Scratch;

  constructor(
    private readonly reference: Transformer,
    addon: Pick<NativeAddon, "regroupRows">,
    private readonly kernels: NativeContext,
  ) {
    this.config = reference.config;
    this.layers = reference.layers.map((layer) => {
      const a = layer.attention.w;
      return {
        inputNorm: normWeight(layer.inputNorm),
        qkv: nativeLinears([a.qProj, a.kProj, a.vProj], addon),
        o: nativeLinear(a.oProj, addon),
        qNorm: a.qNorm && normWeight(a.qNorm),
        kNorm: a.kNorm && normWeight(a.kNorm),
        postAttentionNorm: normWeight(layer.postAttentionNorm),
        gate: nativeLinear(layer.mlp.gateProj, addon),
        up: nativeLinear(layer.mlp.upProj, addon),
        down: nativeLinear(layer.mlp.downProj, addon),
      };
    });
    this.finalNorm = normWeight(reference.norm);
    this.lmHead = toNativeWeight(reference.lmHead ? reference.lmHead.weight : reference.embed.weight, addon);
    this.logits = new Float32Array(this.config.vocabSize);
    this.decodeScratch = new Scratch(1, this.config);
    const weights = this.layers.flatMap((l) => [...l.qkv.weights, l.o.weight, l.gate.weight, l.up.weight, l.down.weight]);
    const weightBytes = [...weights, this.lmHead].reduce((sum, w) => sum + nativeWeightBytes(w), 0);
    this.prefillChunk = prefillChunk(weightBytes, Scratch.bytesPerRow(this.config));
  }

  newSequence(): Sequence {
    return new NativeSequence(this);
  }

  /**
   * Runs `ids` at positions cache.length ..; returns the logits after the last token. A long
   * prompt runs in chunks of at most prefillChunk tokens, so activation buffers stay the size of
   * one chunk however long the prompt. A one-token call (decode) allocates nothing: every buffer
   * is reused.
   */
  forward(ids: readonly number[], cache: KVCacheNative): Float32Array {
    const c = this.config;
    if (ids.length === 0) throw new RangeError("forward needs at least one token");
    const S = cache.length + ids.length;
    if (S > c.maxPositionEmbeddings) {
      throw new ContextOverflowError(`${S} tokens exceed the model's context of ${c.maxPositionEmbeddings} (max_position_embeddings)`);
    }
    const embed = this.reference.embed.weight;
    for (let i = 0; i < ids.length; i++) {
      const id = ids[i];
      if (!Number.isInteger(id) || id < 0 || id >= embed.rows)
        throw new RangeError(`token id ${id} is outside the vocabulary (0..${embed.rows - 1})`);
    }
    cache.reserve(S);
    let last = this.decodeScratch.x;
    const chunk = this.prefillChunk;
    for (let from = 0; from < ids.length; from += chunk) last = this.layersForward(ids, from, Math.min(ids.length, from + chunk), cache);

    // Only the last position's logits are needed: normalise that row into the decode buffer.
    const k = this.kernels;
    k.rmsNorm(this.decodeScratch.xn, last, this.finalNorm, 1, c.hiddenSize, c.rmsNormEps);
    k.matmul(this.logits, this.decodeScratch.xn, 1, this.lmHead, null);
    // Decode steps never use the prompt's buffers: their pages go back until the next prompt.
    if (ids.length > 1 && this.prefillScratch) k.releaseScratch(this.prefillScratch.buffers);
    return this.logits;
  }

  /**
   * Runs the layers over ids[from, to) at positions cache.length ..; returns the last position's
   * hidden state.
   */
  private layersForward(ids: readonly number[], from: number, to: number, cache: KVCacheNative): Float32Array {
    const c = this.config;
    const { hiddenSize: E, numHeads: H, numKvHeads: Hkv, headDim: D, rmsNormEps: eps } = c;
    const L = to - from;
    const offset = cache.length;
    const S = offset + L;
    const s = L === 1 ? this.decodeScratch : this.scratchFor(L);
    const k = this.kernels;
    const x = s.x;

    const embed = this.reference.embed.weight;
    for (let l = 0; l < L; l++) embed.decodeRow(ids[from + l], x, l * E);
    const positions = s.positions.subarray(0, L);
    for (let l = 0; l < L; l++) positions[l] = offset + l;

    for (let i = 0; i < this.layers.length; i++) {
      const layer = this.layers[i];
      // a = x + Attention(RMSNorm(x))
      k.rmsNorm(s.xn, x, layer.inputNorm, L, E, eps);
      // q, k, v = xn·Wqᵀ, xn·Wkᵀ, xn·Wvᵀ
      k.matmulMany(s.xn, L, s.qkv, layer.qkv.weights, layer.qkv.biases);
      if (layer.qNorm && layer.kNorm) {
        k.rmsNorm(s.q, s.q, layer.qNorm, L * H, D, eps);
        k.rmsNorm(s.k, s.k, layer.kNorm, L * Hkv, D, eps);
      }
      k.rope(s.q, L, H, D, positions, c.ropeTheta, c.ropeTraditional);
      k.rope(s.k, L, Hkv, D, positions, c.ropeTheta, c.ropeTraditional);
      // The positions are the slots: the sequence's blocks are the cache's, in order.
      k.storeKV(cache.keys[i], cache.values[i], NativeKvType.f32, s.k, s.v, positions, L, Hkv, D, KV_BLOCK);
      cache.seq[1] = L;
      cache.seq[2] = S;
      k.pagedAttention(
        s.attn,
        s.q,
        cache.keys[i],
        cache.values[i],
        NativeKvType.f32,
        cache.seq,
        cache.blockTable,
        H,
        Hkv,
        D,
        KV_BLOCK,
        1 / Math.sqrt(D),
      );
      k.matmul(s.proj, s.attn, L, layer.o.weight, layer.o.bias);
      addInPlace(x, s.proj, L * E);
      // x = a + MLP(RMSNorm(a))
      k.rmsNorm(s.xn, x, layer.postAttentionNorm, L, E, eps);
      // hidden = silu(xn·Wgateᵀ) ⊙ xn·Wupᵀ
      k.swiglu(s.hidden, s.xn, L, layer.gate.weight, layer.gate.bias, layer.up.weight, layer.up.bias);
      k.matmul(s.proj, s.hidden, L, layer.down.weight, layer.down.bias);
      addInPlace(x, s.proj, L * E);
    }
    cache.length = S;
    return L === 1 ? x : x.subarray((L - 1) * E, L * E);
  }

  private scratchFor(L: number): Scratch {
    if (!this.prefillScratch || this.prefillScratch.rows < L) this.prefillScratch = new Scratch(L, this.config);
    return this.prefillScratch;
  }
}

/**
 * The most prompt tokens one pass over the layers takes: the largest power of two from 32 to 256
 * whose activation buffers take at most 1 % of the weights' bytes (64 for Qwen2-0.5B at Q4_0, 256
 * for Qwen2-7B). Each chunk streams every weight once more, so smaller chunks prefill slower (a
 * 512-token prompt on Qwen2-0.5B Q4_0: 723, 827, 903 and 931 tokens/s in chunks of 32, 64, 128
 * and 256), while the buffers grow with the chunk (30 KB per token for Qwen2-0.5B, 119 KB for
 * Qwen2-7B): on a small model they would be a sizeable part of its memory.
 */
export function prefillChunk(weightBytes: number, bufferBytesPerToken: number): number {
  let chunk = 32;
  while (chunk < 256 && 2 * chunk * bufferBytesPerToken <= weightBytes / 100) chunk *= 2;
  return chunk;
}

function nativeWeightBytes(w: NativeWeight): number {
  return w.data.byteLength + (w.scales?.byteLength ?? 0) + (w.biases?.byteLength ?? 0);
}

function addInPlace(x: Float32Array, y: Float32Array, n: number): void {
  for (let i = 0; i < n; i++) x[i] += y[i];
}

/** Tokens per block of KVCacheNative. */
const KV_BLOCK = 16;

/**
 * Per-layer keys and values of one sequence as a paged cache [capacity / KV_BLOCK, H_kv,
 * KV_BLOCK, D] whose block table is 0, 1, 2, …, grown by doubling up to the context length.
 * Growing keeps the blocks in order, so the old cache is the start of the new one.
 */
export class KVCacheNative {
  keys: Float32Array[] = [];
  values: Float32Array[] = [];
  capacity = 0;
  length = 0;
  /** The one sequence pagedAttention sees: qStart 0, qLen, kvLen (set per call), tableStart 0. */
  readonly seq = new Int32Array(4);
  blockTable = new Int32Array(0);

  constructor(private readonly config: ModelConfig) {}

  reserve(positions: number): void {
    if (positions <= this.capacity) return;
    const { numLayers, numKvHeads: Hkv, headDim: D, maxPositionEmbeddings } = this.config;
    const wanted = Math.min(maxPositionEmbeddings, Math.max(positions, 2 * this.capacity, 256));
    const capacity = Math.ceil(wanted / KV_BLOCK) * KV_BLOCK;
    const size = Hkv * capacity * D;
    // One allocation for all layers: a buffer per layer would carry an allocator's page each.
    const storage = new Float32Array(2 * numLayers * size);
    const grow = (old: Float32Array | undefined, at: number): Float32Array => {
      const next = storage.subarray(at * size, (at + 1) * size);
      if (old) next.set(old);
      return next;
    };
    this.keys = Array.from({ length: numLayers }, (_, i) => grow(this.keys[i], 2 * i));
    this.values = Array.from({ length: numLayers }, (_, i) => grow(this.values[i], 2 * i + 1));
    this.capacity = capacity;
    this.blockTable = Int32Array.from({ length: capacity / KV_BLOCK }, (_, b) => b);
  }
}

class NativeSequence implements Sequence {
  private readonly cache: KVCacheNative;

  constructor(private readonly model: NativeTransformer) {
    this.cache = new KVCacheNative(model.config);
  }

  get length(): number {
    return this.cache.length;
  }

  forward(ids: readonly number[]): Float32Array {
    return this.model.forward(ids, this.cache);
  }
}
