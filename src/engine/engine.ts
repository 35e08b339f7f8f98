/**
 * The serving engine's step loop, synchronous and in one thread: requests come in, each step()
 * schedules a batch (scheduler.ts), lays its tokens out for the forward pass (batch-forward.ts)
 * over the paged KV cache, samples the next token of every sequence whose pending tokens are all
 * computed, and reports what happened as events. async-engine.ts runs it in a worker thread.
 */
import { SEQ_FIELDS, type KvDtype } from "../kernels/kernels.js";
import type { ModelConfig } from "../models/config.js";
import { RequestRejectedError, type EngineStats, type RequestEvent, type RequestParams, type StepTrace } from "./api.js";
import type { BatchForward, Batch } from "./batch-forward.js";
import { BlockPool, blockKey } from "./block-pool.js";
import { PagedKvCache } from "./kv-cache.js";
import { Scheduler, type ScheduledChunk } from "./scheduler.js";
import { Sequence } from "./sequence.js";

export interface EngineLimits {
  /** KV blocks in the pool. */
  blocks: number;
  blockSize: number;
  kvDtype: KvDtype;
  maxNumSeqs: number;
  maxBatchTokens: number;
}

export interface StepResult {
  events: RequestEvent[];
  /** Set when a batch ran. */
  trace?: StepTrace;
}

/**
 * Throws RequestRejectedError (one line, with the numbers) when a request can never be served:
 * an empty prompt, an id outside the vocabulary, prompt plus max tokens past the context or past
 * the KV pool's `poolTokens`. `maxTokensName` is how the caller's API spells max tokens.
 */
export function checkRequest(params: RequestParams, config: ModelConfig, poolTokens: number, maxTokensName = "max tokens"): void {
  const context = config.maxPositionEmbeddings;
  const V = config.vocabSize;
  const prompt = params.promptIds.length;
  if (prompt === 0) throw new RequestRejectedError("the prompt is empty: give at least one token");
  if (!Number.isInteger(params.maxTokens) || params.maxTokens < 0) {
    throw new RequestRejectedError(`${maxTokensName} must be a whole number >= 0, got ${params.maxTokens}`);
  }
  const bad = params.promptIds.find((id) => !Number.isInteger(id) || id < 0 || id >= V);
  if (bad !== undefined) throw new RequestRejectedError(`token id ${bad} is outside the vocabulary (0..${V - 1})`);
  const need = prompt + params.maxTokens;
  if (need > context) {
    throw new RequestRejectedError(
      `the prompt is ${prompt} tokens and ${maxTokensName} is ${params.maxTokens}: ${need} tokens exceed the model's context of ${context}; shorten the prompt or lower ${maxTokensName}`,
    );
  }
  if (need > poolTokens) {
    throw new RequestRejectedError(
      `the request needs ${need} tokens of KV cache but the pool holds ${poolTokens}; raise --kv-cache-size or lower ${maxTokensName}`,
    );
  }
}

export class Engine {
  readonly cache: PagedKvCache;
  readonly pool: BlockPool;
  private readonly scheduler: Scheduler;
  private readonly byId = new Map<string, Sequence>();
  /** The latest live sequence of each prompt (by a hash of its tokens), for n > 1 choices. */
  private readonly byPrompt = new Map<string, Sequence>();
  /** Events of requests that ended between steps (aborted, rejected), sent with the next step's. */
  private pending: RequestEvent[] = [];
  private arrivals = 0;
  private steps = 0;
  private promptTokens = 0;
  private generatedTokens = 0;

  constructor(
    readonly model: BatchForward,
    readonly limits: EngineLimits,
  ) {
    if (limits.blocks < 1) throw new RangeError("the KV pool needs at least one block");
    if (limits.maxBatchTokens < 1 || limits.maxNumSeqs < 1) throw new RangeError("max batch tokens and max sequences must be at least 1");
    this.cache = new PagedKvCache(model.config, limits.blocks, limits.blockSize, limits.kvDtype);
    this.pool = new BlockPool(limits.blocks);
    this.scheduler = new Scheduler(this.pool, limits);
  }

  /** Tokens the pool holds. */
  get capacity(): number {
    return this.limits.blocks * this.limits.blockSize;
  }

  /** Throws RequestRejectedError if the request could never be served. */
  check(params: RequestParams): void {
    checkRequest(params, this.model.config, this.capacity);
  }

  /** Queues a request; throws RequestRejectedError if it could never be served. */
  add(id: string, params: RequestParams): void {
    this.check(params);
    if (this.byId.has(id)) throw new RequestRejectedError(`request id ${id} is already in flight`);
    const seq = new Sequence(id, params, this.arrivals++);
    const prompt = blockKey(undefined, params.promptIds);
    const leader = this.byPrompt.get(prompt);
    if (leader && !leader.finished) seq.leader = leader;
    this.byPrompt.set(prompt, seq);
    this.byId.set(id, seq);
    if (params.maxTokens === 0) {
      this.finish(seq, "length");
      return;
    }
    this.scheduler.add(seq);
  }

  /** Cancels a request: its blocks go back to the pool now, its last event comes with the next step. */
  abort(id: string): void {
    const seq = this.byId.get(id);
    if (seq) this.finish(seq, "abort");
  }

  hasWork(): boolean {
    return this.pending.length > 0 || this.scheduler.running.length > 0 || this.scheduler.waiting.length > 0;
  }

  stats(): EngineStats {
    return {
      running: this.scheduler.running.length,
      waiting: this.scheduler.waiting.length,
      blocksTotal: this.pool.blocks,
      blocksUsed: this.pool.used,
      prefixQueries: this.scheduler.prefixQueries,
      prefixHits: this.scheduler.prefixHits,
      preemptions: this.scheduler.preemptions,
      promptTokens: this.promptTokens,
      generatedTokens: this.generatedTokens,
      blockSize: this.limits.blockSize,
    };
  }

  /** Runs one step: schedules, computes and samples; returns every request's events. */
  step(): StepResult {
    const started = performance.now();
    const chunks = this.scheduler.schedule();
    const kinds = chunks.map(({ seq }) => (seq.computed < seq.promptLength ? "prefill" : "decode") as "prefill" | "decode");
    const events = new Map<Sequence, RequestEvent>();
    if (chunks.length > 0) this.run(chunks, events);
    const out = [...this.pending, ...events.values()];
    this.pending = [];
    if (chunks.length === 0) return { events: out };
    const trace: StepTrace = {
      step: this.steps++,
      ms: performance.now() - started,
      requests: chunks.map(({ seq, tokens }, i) => ({ id: seq.id, tokens, kind: kinds[i] })),
    };
    return { events: out, trace };
  }

  private run(chunks: ScheduledChunk[], events: Map<Sequence, RequestEvent>): void {
    const batch = this.layout(chunks);
    const sampled: (Sequence | undefined)[] = [];
    for (const { seq, tokens } of chunks) if (seq.computed + tokens === seq.tokens.length) sampled.push(seq);
    const picks: ({ id: number; logprob?: number; top?: { id: number; logprob: number }[] } | undefined)[] = [];
    try {
      this.model.forward(batch, this.cache, (i, logits) => {
        const seq = sampled[i]!;
        picks[i] = seq.sampler.next(logits, seq.params.logprobs);
      });
    } catch (err) {
      // The batch failed as a whole: its requests end with the error; the engine goes on.
      for (const { seq } of chunks) this.finish(seq, "error", `the forward pass failed: ${(err as Error).message}`);
      return;
    }
    for (const { seq, tokens } of chunks) {
      if (seq.computed < seq.promptLength) this.promptTokens += Math.min(tokens, seq.promptLength - seq.computed);
      seq.computed += tokens;
      this.registerFullBlocks(seq);
    }
    sampled.forEach((seq, i) => {
      const pick = picks[i]!;
      const event = this.eventOf(seq!, events);
      if (seq!.stopIds.has(pick.id)) {
        this.finish(seq!, "stop", undefined, event);
        return;
      }
      seq!.tokens.push(pick.id);
      seq!.generated++;
      this.generatedTokens++;
      event.tokens.push(pick);
      if (seq!.generated >= seq!.params.maxTokens || seq!.tokens.length >= this.model.config.maxPositionEmbeddings) {
        this.finish(seq!, "length", undefined, event);
      }
    });
  }

  /** The batch's rows: each chunk's tokens in position order, with their slots and the sequences' block tables. */
  private layout(chunks: ScheduledChunk[]): Batch {
    const bs = this.limits.blockSize;
    const T = chunks.reduce((sum, c) => sum + c.tokens, 0);
    const ids = new Int32Array(T);
    const positions = new Int32Array(T);
    const slots = new Int32Array(T);
    const seqs = new Int32Array(chunks.length * SEQ_FIELDS);
    const blockTables = new Int32Array(chunks.reduce((sum, c) => sum + c.seq.blocks.length, 0));
    const logitRows: number[] = [];
    let row = 0;
    let table = 0;
    chunks.forEach(({ seq, tokens }, i) => {
      seqs.set([row, tokens, seq.computed + tokens, table], i * SEQ_FIELDS);
      blockTables.set(seq.blocks, table);
      table += seq.blocks.length;
      for (let j = 0; j < tokens; j++, row++) {
        const p = seq.computed + j;
        ids[row] = seq.tokens[p];
        positions[row] = p;
        slots[row] = seq.blocks[Math.floor(p / bs)] * bs + (p % bs);
      }
      if (seq.computed + tokens === seq.tokens.length) logitRows.push(row - 1);
    });
    return { ids, positions, slots, seqs, blockTables, logitRows: Int32Array.from(logitRows) };
  }

  /** Makes the sequence's newly filled blocks findable by their prefix. */
  private registerFullBlocks(seq: Sequence): void {
    const bs = this.limits.blockSize;
    for (let b = seq.keys.length; b < Math.floor(seq.computed / bs); b++) {
      const key = blockKey(seq.keys[b - 1], seq.tokens.slice(b * bs, (b + 1) * bs));
      this.pool.register(seq.blocks[b], key);
      seq.keys.push(key);
    }
  }

  private eventOf(seq: Sequence, events: Map<Sequence, RequestEvent>): RequestEvent {
    let event = events.get(seq);
    if (!event) {
      event = firstEventFields(seq, { id: seq.id, tokens: [] });
      events.set(seq, event);
    }
    return event;
  }

  private finish(seq: Sequence, reason: "stop" | "length" | "abort" | "error", message?: string, event?: RequestEvent): void {
    this.scheduler.remove(seq);
    this.byId.delete(seq.id);
    seq.finished = true;
    const prompt = blockKey(undefined, seq.params.promptIds);
    if (this.byPrompt.get(prompt) === seq) this.byPrompt.delete(prompt);
    if (event) {
      event.finish = reason;
      if (message) event.message = message;
      return;
    }
    const e = firstEventFields(seq, { id: seq.id, tokens: [], finish: reason });
    if (message) e.message = message;
    this.pending.push(e);
  }
}

/** A request's first event carries its prompt counts and seed. */
function firstEventFields(seq: Sequence, event: RequestEvent): RequestEvent {
  if (!seq.reported) {
    seq.reported = true;
    Object.assign(event, { promptTokens: seq.promptLength, cachedTokens: seq.cachedTokens, seed: seq.sampler.seed });
  }
  return event;
}
