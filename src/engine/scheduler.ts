/**
 * Continuous batching: which sequences run in the next step and how many tokens each computes.
 *
 * A step has a token budget. Every running sequence wants its pending tokens (one when it is
 * decoding, the rest of its prompt when it is being prefilled); the oldest are served first, but
 * each running sequence after them is kept one token of the budget, so a long prompt is prefilled
 * in chunks and never stalls the streams beside it. What is left admits waiting sequences, first
 * come first served, up to maxNumSeqs running. A sequence takes KV blocks as its tokens need them;
 * when the pool runs dry the newest running sequence is preempted: its blocks are freed and it
 * waits to be recomputed (its full blocks stay in the prefix cache, so that is cheap if they
 * survive).
 */
import { blockKey, type BlockPool } from "./block-pool.js";
import type { Sequence } from "./sequence.js";

export interface ScheduledChunk {
  seq: Sequence;
  /** Tokens computed this step, from seq.computed on. */
  tokens: number;
}

export interface SchedulerLimits {
  maxNumSeqs: number;
  maxBatchTokens: number;
  blockSize: number;
}

export class Scheduler {
  readonly waiting: Sequence[] = [];
  readonly running: Sequence[] = [];
  preemptions = 0;
  prefixQueries = 0;
  prefixHits = 0;

  constructor(
    private readonly pool: BlockPool,
    private readonly limits: SchedulerLimits,
  ) {}

  add(seq: Sequence): void {
    this.waiting.push(seq);
  }

  /** Takes a sequence out wherever it is and frees its blocks; false if it was not there. */
  remove(seq: Sequence): boolean {
    for (const list of [this.running, this.waiting]) {
      const i = list.indexOf(seq);
      if (i >= 0) {
        list.splice(i, 1);
        this.freeBlocks(seq);
        return true;
      }
    }
    return false;
  }

  /** The next step's chunks, oldest sequence first. */
  schedule(): ScheduledChunk[] {
    const { maxBatchTokens, maxNumSeqs } = this.limits;
    const chunks: ScheduledChunk[] = [];
    const preempted = this.preemptions;
    let used = 0;
    for (let i = 0; i < this.running.length; i++) {
      const seq = this.running[i];
      const keepForRest = this.running.length - 1 - i;
      let n = Math.min(seq.pending, maxBatchTokens - used - keepForRest);
      if (n <= 0) continue;
      n = this.reserve(seq, n, chunks);
      if (n === 0) {
        // Preempted itself: the list shifted under i.
        i--;
        continue;
      }
      chunks.push({ seq, tokens: n });
      used += n;
    }
    // A step that had to preempt admits no one: the pool is short already.
    for (
      let i = 0;
      this.preemptions === preempted && i < this.waiting.length && this.running.length < maxNumSeqs && used < maxBatchTokens;
    ) {
      const seq = this.waiting[i];
      // Another choice of the same prompt waits for the first one's blocks instead of computing its own.
      if (seq.waitsForLeader) {
        i++;
        continue;
      }
      const n = this.admit(seq, maxBatchTokens - used);
      if (n === 0) break;
      this.waiting.splice(i, 1);
      this.running.push(seq);
      chunks.push({ seq, tokens: n });
      used += n;
    }
    return chunks;
  }

  /**
   * Blocks for n more tokens of a running sequence: fewer tokens if only fewer fit, preempting
   * the newest other sequences when not even one fits. Returns the tokens it may compute (0 if
   * it had to preempt itself).
   */
  private reserve(seq: Sequence, n: number, chunks: ScheduledChunk[]): number {
    for (;;) {
      const fit = this.fit(seq, n);
      if (fit > 0) {
        this.grow(seq, fit);
        return fit;
      }
      const victim = this.running[this.running.length - 1];
      this.preempt(victim, chunks);
      if (victim === seq) return 0;
    }
  }

  /** Looks up the prefix cache and takes blocks for a waiting sequence's first chunk; 0 when it cannot start now. */
  private admit(seq: Sequence, budget: number): number {
    const bs = this.limits.blockSize;
    if (seq.computed === 0) {
      // Whole blocks of known tokens, short of the last one: its logits are needed, so it is always computed.
      const fullBlocks = Math.floor((seq.tokens.length - 1) / bs);
      let parent: string | undefined;
      for (let b = 0; b < fullBlocks; b++) {
        const key = blockKey(parent, seq.tokens.slice(b * bs, (b + 1) * bs));
        const block = this.pool.lookup(key);
        if (block === undefined) break;
        seq.blocks.push(block);
        seq.keys.push(key);
        seq.computed += bs;
        parent = key;
      }
    }
    const n = this.fit(seq, Math.min(seq.pending, budget));
    if (n === 0) {
      this.freeBlocks(seq);
      return 0;
    }
    if (!seq.admitted) {
      seq.admitted = true;
      seq.cachedTokens = Math.min(seq.computed, seq.promptLength);
      const fullBlocks = Math.floor((seq.tokens.length - 1) / bs);
      this.prefixQueries += fullBlocks;
      this.prefixHits += seq.keys.length;
    }
    this.grow(seq, n);
    return n;
  }

  /** The most of n next tokens whose blocks the sequence has or the pool can give now. */
  private fit(seq: Sequence, n: number): number {
    const room = (seq.blocks.length + this.pool.available) * this.limits.blockSize - seq.computed;
    return Math.max(0, Math.min(n, room));
  }

  private grow(seq: Sequence, n: number): void {
    const need = Math.ceil((seq.computed + n) / this.limits.blockSize);
    while (seq.blocks.length < need) seq.blocks.push(this.pool.allocate()!);
  }

  private preempt(victim: Sequence, chunks: ScheduledChunk[]): void {
    this.running.splice(this.running.indexOf(victim), 1);
    const at = chunks.findIndex((c) => c.seq === victim);
    if (at >= 0) chunks.splice(at, 1);
    this.freeBlocks(victim);
    this.waiting.unshift(victim);
    this.preemptions++;
  }

  /** Frees a sequence's blocks; its tokens are to be computed again from the start. */
  private freeBlocks(seq: Sequence): void {
    for (const b of seq.blocks) this.pool.release(b);
    seq.blocks = [];
    seq.keys = [];
    seq.computed = 0;
  }
}
