/**
 * One request's next-token choice: its penalties and logit bias applied to the logits, then the
 * sampler's filters (greedy, temperature, top-k, top-p, min-p) with the request's own seeded
 * generator, so its tokens depend on nothing but its own logits and seed.
 */
import { Sampler } from "../generation/sampler.js";
import type { SamplingParams, TokenOutput, TopLogprob } from "./api.js";

export class RequestSampler {
  readonly seed: number;
  private readonly sampler: Sampler;
  /** How often each token was generated so far (presence and frequency penalties). */
  private readonly counts = new Map<number, number>();
  /** Tokens of the prompt and output so far (repetition penalty). */
  private readonly seen: Set<number>;

  constructor(
    private readonly params: SamplingParams,
    promptIds: readonly number[],
  ) {
    this.seed = params.seed ?? Math.floor(Math.random() * 2 ** 32);
    this.sampler = new Sampler({
      temperature: params.temperature,
      topK: params.topK,
      topP: params.topP,
      minP: params.minP,
      seed: this.seed,
    });
    this.seen = new Set(params.repetitionPenalty !== 1 ? promptIds : []);
  }

  /**
   * Picks the next token from `logits` (changed in place by the penalties), with its
   * log-probability and the `top` most likely alternatives under the unpenalised logits when
   * `top` is given.
   */
  next(logits: Float32Array, top?: number): TokenOutput {
    let report: { logZ: number; raw: Float32Array; top: TopLogprob[] } | undefined;
    if (top !== undefined) {
      // Log-probabilities are the model's own: taken before the penalties change the logits.
      const raw = this.changesLogits() ? logits.slice() : logits;
      report = { logZ: logSumExp(raw), raw, top: [] };
      report.top = topIds(raw, top).map((id) => ({ id, logprob: raw[id] - report!.logZ }));
    }
    this.penalise(logits);
    const id = this.sampler.sample(logits);
    this.counts.set(id, (this.counts.get(id) ?? 0) + 1);
    if (this.params.repetitionPenalty !== 1) this.seen.add(id);
    if (!report) return { id };
    return { id, logprob: report.raw[id] - report.logZ, top: report.top };
  }

  private changesLogits(): boolean {
    const p = this.params;
    return (
      p.repetitionPenalty !== 1 ||
      p.presencePenalty !== 0 ||
      p.frequencyPenalty !== 0 ||
      (p.logitBias !== undefined && Object.keys(p.logitBias).length > 0)
    );
  }

  private penalise(logits: Float32Array): void {
    const { repetitionPenalty: rep, presencePenalty: presence, frequencyPenalty: frequency, logitBias } = this.params;
    if (rep !== 1) for (const id of this.seen) logits[id] = logits[id] > 0 ? logits[id] / rep : logits[id] * rep;
    if (presence !== 0 || frequency !== 0) for (const [id, n] of this.counts) logits[id] -= presence + frequency * n;
    if (logitBias) for (const [id, bias] of Object.entries(logitBias)) if (Number(id) < logits.length) logits[Number(id)] += bias;
  }
}

function logSumExp(logits: Float32Array): number {
  let max = -Infinity;
  for (let i = 0; i < logits.length; i++) if (logits[i] > max) max = logits[i];
  let sum = 0;
  for (let i = 0; i < logits.length; i++) sum += Math.exp(logits[i] - max);
  return max + Math.log(sum);
}

/** The ids of the k largest logits, best first (ties: lower id first), in one pass: k is at most 20. */
export function topIds(logits: Float32Array, k: number): number[] {
  const best: number[] = [];
  for (let i = 0; i < logits.length && k > 0; i++) {
    if (best.length === k && logits[i] <= logits[best[k - 1]]) continue;
    let at = best.length;
    while (at > 0 && logits[best[at - 1]] < logits[i]) at--;
    best.splice(at, 0, i);
    if (best.length > k) best.pop();
  }
  return best;
}
