/**
 * The decoder's forward pass over one batch: T tokens from any number of sequences, each token
 * with its own position and KV slot, written once against the kernel interface (so the same loop
 * runs on the TypeScript and the native kernels). Every linear layer is one matmul over all T
 * rows, so a step reads each weight once however many sequences it serves; attention runs per
 * sequence against that sequence's own paged K/V.
 *
 *   x      = embed(ids)                                   [T, E]
 *   q,k,v  = RMSNorm(x)·W_qᵀ, ·W_kᵀ, ·W_vᵀ, RoPE at positions [T, H, D], [T, H_kv, D]
 *   cache  ← k, v at slots
 *   x     += PagedAttention(q, cache)·W_oᵀ
 *   x     += W_down · (silu(W_gate·RMSNorm(x)) ⊙ W_up·RMSNorm(x))
 *   logits = RMSNorm(x[rows])·W_lmᵀ                        [R, V]
 *
 * The week-1 Transformer (src/models/transformer.ts) is the independent reference this is
 * tested against; its weights are read here, never changed.
 */
import type { Kernels } from "../kernels/kernels.js";
import { SEQ_FIELDS } from "../kernels/kernels.js";
import type { ModelConfig } from "../models/config.js";
import type { Transformer } from "../models/transformer.js";
import type { Linear } from "../layers/linear.js";
import type { WeightMatrix } from "../tensor/weight.js";
import type { PagedKvCache } from "./kv-cache.js";

/** One step's tokens. Tokens of a sequence are consecutive rows, in position order. */
export interface Batch {
  /** Token ids [T]. */
  ids: Int32Array;
  /** Position of each token in its sequence [T]. */
  positions: Int32Array;
  /** KV slot of each token: block · blockSize + offset [T]. */
  slots: Int32Array;
  /** SEQ_FIELDS ints per sequence: qStart, qLen, kvLen, tableStart (see kernels.ts). */
  seqs: Int32Array;
  /** Every sequence's block table, one after another. */
  blockTables: Int32Array;
  /** The rows whose next-token logits are wanted, ascending. */
  logitRows: Int32Array;
}

interface LayerWeights<W> {
  inputNorm: Float32Array;
  qkv: W[];
  qkvBias: (Float32Array | null)[];
  o: W;
  oBias: Float32Array | null;
  qNorm?: Float32Array;
  kNorm?: Float32Array;
  postAttentionNorm: Float32Array;
  gate: W;
  gateBias: Float32Array | null;
  up: W;
  upBias: Float32Array | null;
  down: W;
  downBias: Float32Array | null;
}

/**
 * Activation buffers for up to `rows` tokens. q, k, v and the attention output are dead once
 * the output projection has read them, before the MLP starts: they share the MLP's hidden
 * buffer [rows, I], by far the largest.
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
  readonly qkv: Float32Array[];
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
    this.buffers = [this.x, this.xn, this.proj, shared];
  }

  static bytesPerRow(c: ModelConfig): number {
    return 4 * (3 * c.hiddenSize + Scratch.sharedFloatsPerRow(c));
  }

  private static sharedFloatsPerRow(c: ModelConfig): number {
    return Math.max(c.intermediateSize, 2 * c.numHeads * c.headDim + 2 * c.numKvHeads * c.headDim);
  }
}

/** Rows of logits made per LM-head matmul when many are wanted: the head is read once per group. */
const LOGIT_GROUP = 32;

export class BatchForward<W = unknown> {
  readonly config: ModelConfig;
  /** Most token rows one pass over the layers takes (see passRows); a longer batch runs in pieces. */
  readonly passRows: number;
  private readonly layers: LayerWeights<W>[];
  private readonly finalNorm: Float32Array;
  private readonly lmHead: W;
  private readonly embed: WeightMatrix;
  private readonly small: Scratch;
  private large?: Scratch;
  private logits?: Float32Array;
  private hiddenRows?: Float32Array;

  constructor(
    reference: Transformer,
    readonly kernels: Kernels<W>,
  ) {
    const c = (this.config = reference.config);
    const k = kernels;
    const f32 = (t: { toFloat32Array(): Float32Array }): Float32Array => t.toFloat32Array();
    const bias = (l: Linear): Float32Array | null => (l.bias ? f32(l.bias) : null);
    this.layers = reference.layers.map((layer) => {
      const a = layer.attention.w;
      const m = layer.mlp;
      return {
        inputNorm: f32(layer.inputNorm.weight),
        qkv: [a.qProj, a.kProj, a.vProj].map((l) => k.prepare(l.weight)),
        qkvBias: [a.qProj, a.kProj, a.vProj].map(bias),
        o: k.prepare(a.oProj.weight),
        oBias: bias(a.oProj),
        qNorm: a.qNorm && f32(a.qNorm.weight),
        kNorm: a.kNorm && f32(a.kNorm.weight),
        postAttentionNorm: f32(layer.postAttentionNorm.weight),
        gate: k.prepare(m.gateProj.weight),
        gateBias: bias(m.gateProj),
        up: k.prepare(m.upProj.weight),
        upBias: bias(m.upProj),
        down: k.prepare(m.downProj.weight),
        downBias: bias(m.downProj),
      };
    });
    this.finalNorm = f32(reference.norm.weight);
    this.embed = reference.embed.weight;
    const head = reference.lmHead ? reference.lmHead.weight : reference.embed.weight;
    this.lmHead = k.prepare(head);
    this.small = new Scratch(1, c);
    this.passRows = passRows(
      decodeMatrices(reference).reduce((sum, w) => sum + w.byteLength, 0),
      Scratch.bytesPerRow(c),
    );
  }

  /**
   * Runs the batch through the layers (writing its K/V into `cache`) and calls `onLogits` with
   * the next-token logits [V] of each of batch.logitRows, in order. The array is reused for the
   * next row: copy it to keep it.
   */
  forward(batch: Batch, cache: PagedKvCache, onLogits: (index: number, logits: Float32Array) => void): void {
    const T = batch.ids.length;
    const V = this.embed.rows;
    for (const id of batch.ids) {
      if (id < 0 || id >= V) throw new RangeError(`token id ${id} is outside the vocabulary (0..${V - 1})`);
    }
    const E = this.config.hiddenSize;
    const R = batch.logitRows.length;
    const final = (this.hiddenRows = this.hiddenRows && this.hiddenRows.length >= R * E ? this.hiddenRows : new Float32Array(R * E));
    let next = 0;
    for (let from = 0; from < T; from += this.passRows) {
      const to = Math.min(T, from + this.passRows);
      const s = this.layersForward(batch, from, to, cache);
      for (; next < R && batch.logitRows[next] < to; next++) {
        final.set(s.x.subarray((batch.logitRows[next] - from) * E, (batch.logitRows[next] - from + 1) * E), next * E);
      }
    }
    if (T > 1 && this.large) this.kernels.releaseScratch(this.large.buffers);
    this.lmHeadRows(final, R, onLogits);
  }

  /** The rows [from, to) of the batch through every layer; returns the scratch holding their hidden states in x. */
  private layersForward(batch: Batch, from: number, to: number, cache: PagedKvCache): Scratch {
    const c = this.config;
    const { hiddenSize: E, numHeads: H, numKvHeads: Hkv, headDim: D, rmsNormEps: eps } = c;
    const L = to - from;
    const s = this.scratch(L);
    const k = this.kernels;
    const x = s.x;
    for (let t = 0; t < L; t++) this.embed.decodeRow(batch.ids[from + t], x, t * E);
    const positions = batch.positions.subarray(from, to);
    const slots = batch.slots.subarray(from, to);
    const seqs = piece(batch.seqs, from, to);
    const { blockSize, dtype } = cache;

    for (let i = 0; i < this.layers.length; i++) {
      const w = this.layers[i];
      const { k: kCache, v: vCache } = cache.layers[i];
      // x += Attention(RMSNorm(x))
      k.rmsNorm(s.xn, x, w.inputNorm, L, E, eps);
      k.matmulMany(s.xn, L, s.qkv, w.qkv, w.qkvBias);
      if (w.qNorm && w.kNorm) {
        k.rmsNorm(s.q, s.q, w.qNorm, L * H, D, eps);
        k.rmsNorm(s.k, s.k, w.kNorm, L * Hkv, D, eps);
      }
      k.rope(s.q, L, H, D, positions, c.ropeTheta, c.ropeTraditional);
      k.rope(s.k, L, Hkv, D, positions, c.ropeTheta, c.ropeTraditional);
      k.storeKV(kCache, vCache, dtype, s.k, s.v, slots, L, Hkv, D, blockSize);
      k.pagedAttention(s.attn, s.q, kCache, vCache, dtype, seqs, batch.blockTables, H, Hkv, D, blockSize, 1 / Math.sqrt(D));
      k.matmul(s.proj, s.attn, L, w.o, w.oBias);
      addInPlace(x, s.proj, L * E);
      // x += MLP(RMSNorm(x))
      k.rmsNorm(s.xn, x, w.postAttentionNorm, L, E, eps);
      k.swiglu(s.hidden, s.xn, L, w.gate, w.gateBias, w.up, w.upBias);
      k.matmul(s.proj, s.hidden, L, w.down, w.downBias);
      addInPlace(x, s.proj, L * E);
    }
    return s;
  }

  /** logits = RMSNorm(h)·W_lmᵀ for the R final hidden rows, a group of rows at a time. */
  private lmHeadRows(hidden: Float32Array, R: number, onLogits: (index: number, logits: Float32Array) => void): void {
    const { hiddenSize: E, rmsNormEps: eps } = this.config;
    const V = this.embed.rows;
    const group = Math.min(R, LOGIT_GROUP);
    if (!this.logits || this.logits.length < group * V) this.logits = new Float32Array(group * V);
    const logits = this.logits;
    for (let r0 = 0; r0 < R; r0 += group) {
      const n = Math.min(group, R - r0);
      const h = hidden.subarray(r0 * E, (r0 + n) * E);
      this.kernels.rmsNorm(h, h, this.finalNorm, n, E, eps);
      this.kernels.matmul(logits, h, n, this.lmHead, null);
      for (let r = 0; r < n; r++) onLogits(r0 + r, logits.subarray(r * V, (r + 1) * V));
    }
  }

  private scratch(L: number): Scratch {
    if (L === 1) return this.small;
    if (!this.large || this.large.rows < L) this.large = new Scratch(L, this.config);
    return this.large;
  }
}

/**
 * The sequences of batch rows [from, to), as the kernels take them: a sequence cut by the piece
 * keeps its rows inside it, and its keys run up to its last row there.
 */
function piece(seqs: Int32Array, from: number, to: number): Int32Array {
  const out: number[] = [];
  for (let s = 0; s < seqs.length; s += SEQ_FIELDS) {
    const qStart = seqs[s];
    const qEnd = qStart + seqs[s + 1];
    const kvLen = seqs[s + 2];
    const a = Math.max(from, qStart);
    const b = Math.min(to, qEnd);
    if (a < b) out.push(a - from, b - a, kvLen - (qEnd - b), seqs[s + 3]);
  }
  return Int32Array.from(out);
}

/**
 * The most token rows one pass over the layers takes: the largest power of two from 32 to 256
 * whose activation buffers take at most 1 % of the weights' bytes. Each pass streams every
 * weight once more, so fewer rows per pass prefill slower, while the buffers grow with the rows:
 * on a small model they would be a sizeable part of its memory (docs/benchmarks.md).
 */
export function passRows(weightBytes: number, bufferBytesPerRow: number): number {
  let rows = 32;
  while (rows < 256 && 2 * rows * bufferBytesPerRow <= weightBytes / 100) rows *= 2;
  return rows;
}

/** The matrices one decode step reads in full; the embedding counts only as the tied LM head. */
export function decodeMatrices(model: Transformer): WeightMatrix[] {
  const matrices = model.layers.flatMap((layer) => {
    const a = layer.attention.w;
    return [a.qProj, a.kProj, a.vProj, a.oProj, layer.mlp.gateProj, layer.mlp.upProj, layer.mlp.downProj].map((l) => l.weight);
  });
  matrices.push(model.lmHead ? model.lmHead.weight : model.embed.weight);
  return matrices;
}

function addInPlace(x: Float32Array, y: Float32Array, n: number): void {
  for (let i = 0; i < n; i++) x[i] += y[i];
}
