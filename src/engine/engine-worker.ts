/**
 * The worker thread behind AsyncEngine: loads the model, then steps the engine for as long as it
 * has work, taking requests and aborts between steps and posting every step's events.
 */
import { parentPort, workerData } from "node:worker_threads";
import { loadCheckpoint } from "../generation/load-checkpoint.js";
import type { EngineStats, RequestEvent, RequestParams, StepTrace } from "./api.js";
import type { EngineInfo } from "./async-engine.js";
import { createEngine } from "./create-engine.js";
import type { Engine } from "./engine.js";
import type { EngineOptions } from "./engine-options.js";

export type ToWorker = { type: "add"; id: string; params: RequestParams } | { type: "abort"; id: string };

export type FromWorker =
  | { type: "ready"; info: EngineInfo; stats: EngineStats }
  | { type: "load-error"; message: string }
  | { type: "step"; events: RequestEvent[]; stats: EngineStats; trace?: StepTrace };

function post(msg: FromWorker): void {
  parentPort!.postMessage(msg);
}

function start(): void {
  const { modelPath, opts } = workerData as { modelPath: string; opts: EngineOptions };
  let engine: Engine;
  let info: EngineInfo;
  try {
    const { model } = loadCheckpoint(modelPath);
    const created = createEngine(model, opts);
    engine = created.engine;
    const { limits, cache } = engine;
    info = {
      config: model.config,
      backend: created.backend.name,
      isa: created.backend.isa,
      threads: created.backend.threads,
      kv: { blocks: limits.blocks, blockSize: limits.blockSize, dtype: limits.kvDtype, bytes: cache.bytes },
      maxNumSeqs: limits.maxNumSeqs,
      maxBatchTokens: limits.maxBatchTokens,
    };
  } catch (err) {
    post({ type: "load-error", message: (err as Error).message });
    return;
  }
  post({ type: "ready", info, stats: engine.stats() });

  let scheduled = false;
  const tick = (): void => {
    scheduled = false;
    if (!engine.hasWork()) return;
    const { events, trace } = engine.step();
    post({ type: "step", events, stats: engine.stats(), trace });
    wake();
  };
  // Steps run one per turn of this thread's event loop, so requests and aborts are taken in between.
  const wake = (): void => {
    if (!scheduled) {
      scheduled = true;
      setImmediate(tick);
    }
  };
  parentPort!.on("message", (msg: ToWorker) => {
    if (msg.type === "add") {
      try {
        engine.add(msg.id, msg.params);
      } catch (err) {
        post({
          type: "step",
          events: [{ id: msg.id, tokens: [], finish: "error", message: (err as Error).message }],
          stats: engine.stats(),
        });
        return;
      }
    } else {
      engine.abort(msg.id);
    }
    wake();
  });
}

start();
