/**
 * A stand-in for AsyncEngine whose requests do what a test scripts: emit tokens, fail mid-way,
 * or run until aborted. It makes the server's failure paths (an engine error after the stream
 * began, a full queue, shutdown with requests still running) reproducible without timing races.
 */
import { RequestRejectedError, type EngineStats, type RequestEvent, type RequestParams } from "../../src/engine/api.js";
import type { EngineInfo, RequestListener } from "../../src/engine/async-engine.js";
import type { ServingEngine } from "../../src/server/generation.js";

/** What a submitted request does: `emit` sends its events (now or later); an abort ends it with finish "abort". */
export type Script = (id: string, params: RequestParams, emit: (event: Omit<RequestEvent, "id">) => void) => void;

export class FakeEngine implements ServingEngine {
  readonly info: EngineInfo;
  readonly submitted: { id: string; params: RequestParams }[] = [];
  readonly aborted: string[] = [];
  closed = false;
  private readonly listeners = new Map<string, RequestListener>();

  constructor(
    private readonly script: Script,
    opts: { maxNumSeqs?: number; vocabSize?: number; context?: number; check?: (params: RequestParams) => void } = {},
  ) {
    this.info = {
      config: { vocabSize: opts.vocabSize ?? 512, maxPositionEmbeddings: opts.context ?? 512 } as EngineInfo["config"],
      backend: "ts",
      isa: "scalar",
      threads: 1,
      kv: { blocks: 64, blockSize: 16, dtype: "f32", bytes: 0 },
      maxNumSeqs: opts.maxNumSeqs ?? 4,
      maxBatchTokens: 256,
    };
    if (opts.check) this.check = opts.check;
  }

  check(params: RequestParams): void {
    const need = params.promptIds.length + params.maxTokens;
    if (need > this.info.config.maxPositionEmbeddings) throw new RequestRejectedError(`${need} tokens exceed the context`);
  }

  submit(id: string, params: RequestParams, listener: RequestListener): void {
    this.check(params);
    this.listeners.set(id, listener);
    this.submitted.push({ id, params });
    this.script(id, params, (event) => this.emit({ id, ...event }));
  }

  abort(id: string): void {
    if (!this.listeners.has(id)) return;
    this.aborted.push(id);
    // As the real engine does, the abort arrives with a later step.
    setTimeout(() => this.emit({ id, tokens: [], finish: "abort" }), 5);
  }

  get inFlight(): number {
    return this.listeners.size;
  }

  stats(): EngineStats {
    return {
      running: this.listeners.size,
      waiting: 0,
      blocksTotal: 64,
      blocksUsed: this.listeners.size,
      prefixQueries: 0,
      prefixHits: 0,
      preemptions: 0,
      promptTokens: 0,
      generatedTokens: 0,
      blockSize: 16,
    };
  }

  onStep(): () => void {
    return () => {};
  }

  async close(): Promise<void> {
    this.closed = true;
    for (const id of [...this.listeners.keys()]) this.emit({ id, tokens: [], finish: "abort", message: "the engine was shut down" });
  }

  private emit(event: RequestEvent): void {
    const listener = this.listeners.get(event.id);
    if (!listener) return;
    if (event.finish) this.listeners.delete(event.id);
    listener(event);
  }
}
