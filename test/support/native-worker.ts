/**
 * Runs in a worker thread for native-context.test.ts: loads the addon there, makes a context of
 * its own and returns a matmul's result. Loaded on the main thread (as node --test loads every
 * file under test/), it does nothing.
 */
import { parentPort, workerData } from "node:worker_threads";
import { nativeKernels, nativeUnavailableReason, type NativeWeight } from "../../src/kernels/native.js";

export interface WorkerJob {
  threads: number;
  x: Float32Array;
  M: number;
  weight: NativeWeight;
}

if (parentPort) {
  const job = workerData as WorkerJob;
  const addon = nativeKernels();
  if (!addon) throw new Error(`no addon in the worker: ${nativeUnavailableReason()}`);
  const ctx = addon.createContext({ threads: job.threads });
  const out = new Float32Array(job.M * job.weight.rows);
  ctx.matmul(out, job.x, job.M, job.weight, null);
  parentPort.postMessage({ out, info: ctx.info() });
}
