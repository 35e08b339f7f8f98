/**
 * The serving engine in a worker thread, so that forward passes never block the event loop of
 * the process that holds it (an HTTP server answers /health and streams to other clients while
 * a long prompt is prefilled). The worker loads the model and runs Engine's step loop; this side
 * sends requests and aborts and gets each step's events back.
 */
import { Worker } from "node:worker_threads";
import type { ModelConfig } from "../models/config.js";
import { type EngineStats, type RequestEvent, type RequestParams, type StepTrace } from "./api.js";
import type { EngineOptions } from "./engine-options.js";
import { checkRequest } from "./engine.js";
import type { FromWorker, ToWorker } from "./engine-worker.js";

/** What the loaded engine is, for /v1/models, /health and --verbose. */
export interface EngineInfo {
  config: ModelConfig;
  backend: "native" | "ts";
  isa: string;
  threads: number;
  kv: { blocks: number; blockSize: number; dtype: string; bytes: number };
  maxNumSeqs: number;
  maxBatchTokens: number;
}

export type RequestListener = (event: RequestEvent) => void;

export class AsyncEngine {
  private readonly listeners = new Map<string, RequestListener>();
  private readonly stepListeners = new Set<(trace: StepTrace, stats: EngineStats) => void>();
  private latest: EngineStats;
  private closed = false;
  private failure?: Error;

  private constructor(
    private readonly worker: Worker,
    readonly info: EngineInfo,
    stats: EngineStats,
  ) {
    this.latest = stats;
    worker.on("message", (msg: FromWorker) => this.receive(msg));
    worker.on("error", (err) => this.fail(err));
    worker.on("exit", (code) => {
      if (!this.closed) this.fail(new Error(`the engine worker exited (code ${code})`));
    });
  }

  /** Loads the model in a new worker thread; resolves once it is ready to take requests. */
  static start(modelPath: string, opts: EngineOptions = {}): Promise<AsyncEngine> {
    const worker = new Worker(new URL("./engine-worker.js", import.meta.url), { workerData: { modelPath, opts } });
    return new Promise((resolve, reject) => {
      const onMessage = (msg: FromWorker): void => {
        if (msg.type === "ready") {
          worker.off("message", onMessage);
          worker.off("error", reject);
          resolve(new AsyncEngine(worker, msg.info, msg.stats));
        } else if (msg.type === "load-error") {
          void worker.terminate();
          reject(new Error(msg.message));
        }
      };
      worker.on("message", onMessage);
      worker.once("error", reject);
    });
  }

  /** Throws RequestRejectedError (one line, with the numbers) when the request can never be served. */
  check(params: RequestParams): void {
    checkRequest(params, this.info.config, this.info.kv.blocks * this.info.kv.blockSize, "max_tokens");
  }

  /**
   * Queues a request (after check()). Its events arrive through `listener`, in order, until one
   * with `finish`. Ids must be unique among requests in flight.
   */
  submit(id: string, params: RequestParams, listener: RequestListener): void {
    if (this.failure) {
      listener({ id, tokens: [], finish: "error", message: this.failure.message });
      return;
    }
    this.check(params);
    if (this.listeners.has(id)) throw new Error(`request id ${id} is already in flight`);
    this.listeners.set(id, listener);
    this.post({ type: "add", id, params });
  }

  /** Cancels a request; its blocks are freed within one step and its last event has finish "abort". */
  abort(id: string): void {
    if (this.listeners.has(id)) this.post({ type: "abort", id });
  }

  /** Why the engine stopped working (its worker died), or undefined while it works. */
  get failed(): Error | undefined {
    return this.failure;
  }

  /** Requests submitted and not finished. */
  get inFlight(): number {
    return this.listeners.size;
  }

  /** The counters after the latest step. */
  stats(): EngineStats {
    return this.latest;
  }

  /** Called after every engine step that ran a batch. */
  onStep(listener: (trace: StepTrace, stats: EngineStats) => void): () => void {
    this.stepListeners.add(listener);
    return () => this.stepListeners.delete(listener);
  }

  /** Stops the worker; requests still in flight end with finish "abort". */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.worker.terminate();
    this.endAll("abort", "the engine was shut down");
  }

  private post(msg: ToWorker): void {
    this.worker.postMessage(msg);
  }

  private receive(msg: FromWorker): void {
    if (msg.type !== "step") return;
    this.latest = msg.stats;
    for (const event of msg.events) {
      const listener = this.listeners.get(event.id);
      if (!listener) continue;
      if (event.finish) this.listeners.delete(event.id);
      listener(event);
    }
    if (msg.trace) for (const l of this.stepListeners) l(msg.trace, msg.stats);
  }

  private fail(err: Error): void {
    this.failure = err;
    this.endAll("error", `the engine failed: ${err.message}`);
  }

  private endAll(finish: "abort" | "error", message: string): void {
    const pending = [...this.listeners];
    this.listeners.clear();
    for (const [id, listener] of pending) listener({ id, tokens: [], finish, message });
  }
}
