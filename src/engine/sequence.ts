/**
 * One request as the engine tracks it: its tokens (prompt, then generated), how many of them
 * have their K/V in the cache, and the blocks that hold them.
 */
import type { RequestParams } from "./api.js";
import { RequestSampler } from "./request-sampler.js";

export class Sequence {
  /** Prompt and generated tokens. */
  readonly tokens: number[];
  readonly promptLength: number;
  /** Tokens whose K/V are in the cache: the next forward pass starts at this position. */
  computed = 0;
  /** Block table: block i holds positions [i · blockSize, (i + 1) · blockSize). */
  blocks: number[] = [];
  /** Prefix keys of the leading full blocks that are registered in the prefix cache. */
  keys: string[] = [];
  generated = 0;
  /** Prompt tokens found in the prefix cache at first admission. */
  cachedTokens = 0;
  admitted = false;
  /**
   * An earlier live sequence with the same prompt (another choice of the same request): this one
   * starts once that one's prompt blocks are in the prefix cache, and shares them.
   */
  leader?: Sequence;
  finished = false;
  /** Whether the first event (seed, prompt counts) went out. */
  reported = false;
  readonly sampler: RequestSampler;
  readonly stopIds: Set<number>;

  constructor(
    readonly id: string,
    readonly params: RequestParams,
    /** Order of arrival: older sequences are served first and preempted last. */
    readonly arrival: number,
  ) {
    this.tokens = [...params.promptIds];
    this.promptLength = params.promptIds.length;
    this.sampler = new RequestSampler(params.sampling, params.promptIds);
    this.stopIds = new Set(params.stopIds);
  }

  /** Whether it must wait for its leader's prompt to be computed. */
  get waitsForLeader(): boolean {
    const l = this.leader;
    return l !== undefined && !l.finished && l.computed < l.promptLength;
  }

  /** Tokens still to run through the model before the next one can be sampled. */
  get pending(): number {
    return this.tokens.length - this.computed;
  }
}
