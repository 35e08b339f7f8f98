/**
 * Times one engine step of R decode rows (R sequences, one new token each) on the native
 * kernels, and its parts: each kernel call by kind and weight shape, the LM head and the JS
 * between the calls. For finding where a batched decode step's time goes.
 *
 *   node dist/scripts/profile-step.js --model bench-models/qwen2-0.5b-gguf-q4_0.gguf --rows 1,16
 *
 * Options: --rows (list), --context (tokens already in each sequence's cache, default 64),
 * --steps (timed steps per row count, default 20), --threads (default 2), --isa, --batch-invariant on|off.
 */
import { loadavg } from "node:os";
import { parseArgs } from "node:util";
import { loadCheckpoint } from "../src/generation/load-checkpoint.js";
import { selectBackend } from "../src/engine/backend.js";
import { DEFAULT_BLOCK_SIZE } from "../src/engine/engine-options.js";
import { PagedKvCache } from "../src/engine/kv-cache.js";
import type { Batch } from "../src/engine/batch-forward.js";
import type { Kernels } from "../src/kernels/kernels.js";

const { values } = parseArgs({
  options: {
    model: { type: "string" },
    rows: { type: "string", default: "1,16" },
    context: { type: "string", default: "64" },
    steps: { type: "string", default: "20" },
    threads: { type: "string", default: "2" },
    isa: { type: "string" },
    "batch-invariant": { type: "string", default: "on" },
  },
});
if (!values.model) {
  process.stderr.write("profile-step: --model is required (a GGUF file or checkpoint folder)\n");
  process.exit(2);
}

const { model } = loadCheckpoint(values.model);
const backend = selectBackend(model, {
  backend: "native",
  threads: Number(values.threads),
  isa: values.isa,
  batchInvariant: values["batch-invariant"] !== "off",
});
const forward = backend.forward;
const kernels = forward.kernels as Kernels<{ rows: number; cols: number }>;
const config = forward.config;
const context = Number(values.context);
const steps = Number(values.steps);
const blockSize = DEFAULT_BLOCK_SIZE;

// Every kernel call's time by a label (kernel, and the weight's shape for matmuls).
const times = new Map<string, { ms: number; calls: number }>();
let timing = false;
for (const name of ["matmul", "matmulMany", "swiglu", "rmsNorm", "rope", "storeKV", "pagedAttention"] as const) {
  const original = (kernels[name] as (...args: unknown[]) => void).bind(kernels);
  (kernels as unknown as Record<string, unknown>)[name] = (...args: unknown[]): void => {
    if (!timing) return original(...args);
    let label: string = name;
    const M = args[name === "matmulMany" ? 1 : 2];
    if (name === "matmul") {
      const w = args[3] as { rows: number; cols: number };
      label = `matmul ${w.rows}x${w.cols}${w.rows === config.vocabSize ? " (lm head)" : ""}`;
    } else if (name === "matmulMany") {
      label = `matmulMany ${(args[3] as { rows: number }[]).map((w) => w.rows).join("+")}`;
    } else if (name === "swiglu") {
      const w = args[3] as { rows: number; cols: number };
      label = `swiglu 2x${w.rows}x${w.cols}`;
    }
    if (typeof M === "number" && name !== "rmsNorm") label += ` M=${M}`;
    const t0 = performance.now();
    original(...args);
    const dt = performance.now() - t0;
    const entry = times.get(label) ?? { ms: 0, calls: 0 };
    entry.ms += dt;
    entry.calls++;
    times.set(label, entry);
  };
}

/** R sequences of `context` cached tokens each, one new token apiece. */
function decodeBatch(R: number): { batch: Batch; cache: PagedKvCache } {
  const perSeq = Math.ceil((context + 1) / blockSize);
  const cache = new PagedKvCache(config, R * perSeq, blockSize, "f16");
  const seqs: number[] = [];
  const tables: number[] = [];
  const slots: number[] = [];
  for (let r = 0; r < R; r++) {
    seqs.push(r, 1, context + 1, r * perSeq);
    for (let b = 0; b < perSeq; b++) tables.push(r * perSeq + b);
    slots.push((r * perSeq + Math.floor(context / blockSize)) * blockSize + (context % blockSize));
  }
  const batch: Batch = {
    ids: Int32Array.from({ length: R }, (_, r) => (r * 7919) % config.vocabSize),
    positions: new Int32Array(R).fill(context),
    slots: Int32Array.from(slots),
    seqs: Int32Array.from(seqs),
    blockTables: Int32Array.from(tables),
    logitRows: Int32Array.from({ length: R }, (_, r) => r),
  };
  return { batch, cache };
}

const median = (v: number[]): number => [...v].sort((a, b) => a - b)[Math.floor(v.length / 2)];
const load = (): string =>
  loadavg()
    .map((l) => l.toFixed(2))
    .join(" ");

console.log(`isa ${backend.isa}, threads ${backend.threads}, context ${context}, load average ${load()}`);
for (const R of values.rows.split(",").map(Number)) {
  const { batch, cache } = decodeBatch(R);
  const onLogits = (): void => {};
  for (let i = 0; i < 3; i++) forward.forward(batch, cache, onLogits);
  // Whole steps untimed by part, then steps timed by part (the wrappers add a little).
  // CPU time as well as wall time: on a shared machine it is the steadier figure (with one
  // thread; more threads add their waits).
  const whole: number[] = [];
  const cpu: number[] = [];
  for (let i = 0; i < steps; i++) {
    const t0 = performance.now();
    const c0 = process.cpuUsage();
    forward.forward(batch, cache, onLogits);
    const c = process.cpuUsage(c0);
    whole.push(performance.now() - t0);
    cpu.push((c.user + c.system) / 1000);
  }
  times.clear();
  timing = true;
  const parted: number[] = [];
  for (let i = 0; i < steps; i++) {
    const t0 = performance.now();
    forward.forward(batch, cache, onLogits);
    parted.push(performance.now() - t0);
  }
  timing = false;
  const step = median(whole);
  console.log(
    `\nR=${R}: step median ${step.toFixed(2)} ms (min ${Math.min(...whole).toFixed(2)}), CPU median ${median(cpu).toFixed(2)} ms (min ${Math.min(...cpu).toFixed(2)}), ${((R * 1000) / step).toFixed(1)} rows/s, load ${load()}`,
  );
  let inKernels = 0;
  const rows = [...times.entries()].sort((a, b) => b[1].ms - a[1].ms);
  for (const [label, { ms, calls }] of rows) {
    inKernels += ms;
    console.log(`  ${(ms / steps).toFixed(3).padStart(8)} ms/step  ${((ms / calls) * 1000).toFixed(1).padStart(8)} µs/call  ${label}`);
  }
  const js = median(parted) - inKernels / steps;
  console.log(`  ${js.toFixed(3).padStart(8)} ms/step  outside the kernels (JS: embedding, residual adds, logits copy)`);
}
