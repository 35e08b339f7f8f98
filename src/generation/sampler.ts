/**
 * Picks the next token from a row of logits: greedy, or sampling with temperature, top-k,
 * top-p (nucleus) and min-p filters applied in that order.
 */
import { argmaxOf } from "../tensor/ops.js";
import { Random } from "./random.js";

export interface SamplerOptions {
  /** 0 means greedy (argmax). Default 1. */
  temperature?: number;
  /** Keep the k most likely tokens (0 = off). */
  topK?: number;
  /** Keep the smallest set of most likely tokens whose probability reaches p (1 = off). */
  topP?: number;
  /** Keep tokens at least minP times as likely as the most likely one (0 = off). */
  minP?: number;
  seed?: number;
}

export class Sampler {
  readonly temperature: number;
  readonly topK: number;
  readonly topP: number;
  readonly minP: number;
  private readonly random: Random;

  constructor(opts: SamplerOptions = {}) {
    this.temperature = opts.temperature ?? 1;
    this.topK = opts.topK ?? 0;
    this.topP = opts.topP ?? 1;
    this.minP = opts.minP ?? 0;
    if (!(this.temperature >= 0)) throw new RangeError(`temperature must be >= 0, got ${this.temperature}`);
    if (!Number.isInteger(this.topK) || this.topK < 0) throw new RangeError(`top-k must be a whole number >= 0, got ${this.topK}`);
    if (!(this.topP > 0 && this.topP <= 1)) throw new RangeError(`top-p must be in (0, 1], got ${this.topP}`);
    if (!(this.minP >= 0 && this.minP <= 1)) throw new RangeError(`min-p must be in [0, 1], got ${this.minP}`);
    this.random = new Random(opts.seed);
  }

  get greedy(): boolean {
    return this.temperature === 0 || this.topK === 1;
  }

  /** The candidates that survive the filters, most likely first, with renormalised probabilities. */
  candidates(logits: ArrayLike<number>): { ids: number[]; probs: number[] } {
    let max = -Infinity;
    for (let i = 0; i < logits.length; i++) if (logits[i] > max) max = logits[i];
    // Tokens more than 30 temperature units below the best have probability below e^-30 of its
    // own; even all 150k of them together hold under 1e-8 of the mass. Leaving them out before
    // sorting keeps each step fast on large vocabularies without changing any filter's choice.
    const cutoff = max - 30 * this.temperature;
    let ids: number[] = [];
    for (let i = 0; i < logits.length; i++) if (logits[i] >= cutoff) ids.push(i);
    ids.sort((a, b) => logits[b] - logits[a] || a - b);
    if (this.topK > 0) ids = ids.slice(0, this.topK);
    let probs = ids.map((id) => Math.exp((logits[id] - max) / this.temperature));
    const total = probs.reduce((s, p) => s + p, 0);
    probs = probs.map((p) => p / total);
    let keep = ids.length;
    if (this.topP < 1) {
      let cumulative = 0;
      keep = 0;
      while (keep < ids.length && cumulative < this.topP) cumulative += probs[keep++];
    }
    if (this.minP > 0) {
      const threshold = this.minP * probs[0];
      while (keep > 1 && probs[keep - 1] < threshold) keep--;
    }
    ids = ids.slice(0, keep);
    probs = probs.slice(0, keep);
    const kept = probs.reduce((s, p) => s + p, 0);
    return { ids, probs: probs.map((p) => p / kept) };
  }

  sample(logits: ArrayLike<number>): number {
    if (this.greedy) return argmaxOf(logits);
    const { ids, probs } = this.candidates(logits);
    let u = this.random.next();
    for (let i = 0; i < ids.length; i++) {
      u -= probs[i];
      if (u < 0) return ids[i];
    }
    return ids[ids.length - 1];
  }
}
