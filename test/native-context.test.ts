/**
 * Native contexts: their options and errors, two contexts in one process used alternately, the
 * addon inside worker threads, and the check that keeps the TypeScript and C++ lists of weight
 * types equal.
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { Worker } from "node:worker_threads";
import {
  NativeScaleType,
  NativeWeightType,
  nativeKernels,
  nativeUnavailableReason,
  typeTableMismatch,
  type NativeAddon,
  type NativeContext,
} from "../src/kernels/native.js";
import { randomTensor } from "./support/numeric.js";
import { bitDifferences, randomNativeWeight } from "./support/native-weights.js";
import type { WorkerJob } from "./support/native-worker.js";

const addon = nativeKernels();
const skip = addon ? false : `native kernels unavailable: ${nativeUnavailableReason()}`;
const a = addon as NativeAddon;

const tmp = mkdtempSync(join(tmpdir(), "tiny-llm-native-context-"));
after(() => rmSync(tmp, { recursive: true, force: true }));

test("availableIsas lists this CPU's instruction sets best first, ending with the portable kernels", { skip }, () => {
  const isas = a.availableIsas();
  const order = ["amx", "avx512", "avx2", "scalar"];
  assert.equal(isas.at(-1), "scalar");
  assert.deepEqual(
    isas,
    order.filter((isa) => isas.includes(isa)),
  );
});

test("createContext: defaults, options, and one-line errors for bad ones", { skip }, () => {
  const isas = a.availableIsas();
  const defaults = a.createContext().info();
  assert.equal(defaults.isa, isas[0]);
  assert.equal(defaults.batchInvariant, true);
  assert.ok(defaults.threads >= 1);
  assert.equal(a.createContext({ threads: 0 }).info().threads, defaults.threads);
  assert.deepEqual(a.createContext({ threads: 3, isa: "scalar", batchInvariant: false }).info(), {
    isa: "scalar",
    threads: 3,
    batchInvariant: false,
  });
  assert.equal(a.createContext({ isa: "auto" }).info().isa, isas[0]);
  for (const isa of isas) assert.equal(a.createContext({ isa, threads: 1 }).info().isa, isa);
  const oneLine = (pattern: RegExp) => (err: Error) => {
    assert.match(err.message, pattern);
    assert.ok(!err.message.includes("\n"));
    return true;
  };
  const available = new RegExp(`instruction set "sse9" is not available on this CPU \\(available: ${isas.join(", ")}\\)`);
  assert.throws(() => a.createContext({ isa: "sse9" }), oneLine(available));
  for (const threads of [257, -1, 1.5, Infinity, NaN, "2" as unknown as number])
    assert.throws(() => a.createContext({ threads }), oneLine(/threads must be 1 to 256 \(0 for one per core\)/), `threads ${threads}`);
  assert.throws(() => a.createContext({ isa: 5 as unknown as string }), /isa must be a string/);
  assert.throws(() => a.createContext({ batchInvariant: "yes" as unknown as boolean }), /batchInvariant must be a boolean/);
  assert.equal(a.createContext({ threads: 256 }).info().threads, 256);
});

test("two contexts with different threads, ISAs and batch invariance, used alternately, each give what they give alone", { skip }, () => {
  const isas = a.availableIsas();
  const K = 512;
  const M = 20;
  const w = randomNativeWeight("q8_0", 70, K, 1);
  const gate = randomNativeWeight("q4_k", 300, K, 2);
  const up = randomNativeWeight("q4_k", 300, K, 3);
  const x = randomTensor([M, K], 4).toFloat32Array();
  const run = (ctx: NativeContext): Float32Array[] => {
    const mm = new Float32Array(M * 70);
    ctx.matmul(mm, x, M, w, null);
    const sw = new Float32Array(M * 300);
    ctx.swiglu(sw, x, M, gate, null, up, null);
    const q = x.slice(0, 4 * 2 * 16);
    ctx.rope(q, 4, 2, 16, Int32Array.of(0, 9, 3, 1000), 10000, false);
    return [mm, sw, q];
  };
  // The best ISA, batched kernels allowed, on 2 threads, beside the portable kernels on 1.
  const make = () => [a.createContext({ threads: 1, isa: "scalar" }), a.createContext({ threads: 2, isa: isas[0], batchInvariant: false })];
  const [one, two] = make();
  assert.equal(one.info().threads, 1);
  assert.equal(two.info().threads, 2);
  const [aloneOne, aloneTwo] = make().map(run);
  for (let i = 0; i < 10; i++) {
    for (const [ctx, alone] of [
      [one, aloneOne],
      [two, aloneTwo],
    ] as const) {
      run(ctx).forEach((out, j) => assert.deepEqual(bitDifferences(out, alone[j]), [], `round ${i}, ${ctx.info().isa}, output ${j}`));
    }
  }
  // Were the ISA or the thread pool shared, both would have run one kernel set.
  if (isas[0] !== "scalar") assert.notDeepEqual(bitDifferences(aloneOne[0], aloneTwo[0]), []);
});

function inWorker(job: WorkerJob): Promise<{ out: Float32Array; info: ReturnType<NativeContext["info"]>; exitCode: number }> {
  return new Promise((resolve, reject) => {
    const worker = new Worker(new URL("./support/native-worker.js", import.meta.url), { workerData: job });
    let result: { out: Float32Array; info: ReturnType<NativeContext["info"]> } | undefined;
    worker.on("message", (m) => (result = m));
    worker.on("error", reject);
    worker.on("exit", (exitCode) =>
      result ? resolve({ ...result, exitCode }) : reject(new Error(`worker exited ${exitCode} without a result`)),
    );
  });
}

test("the addon loads in worker threads, each with contexts of its own, and computes there what it computes here", { skip }, async () => {
  const K = 256;
  const M = 9;
  const x = randomTensor([M, K], 5).toFloat32Array();
  for (const type of ["f32", "q4_0", "q6_k"] as const) {
    const weight = randomNativeWeight(type, 40, K, 6);
    const here = new Float32Array(M * 40);
    a.createContext({ threads: 1 }).matmul(here, x, M, weight, null);
    // Two workers at once, with different thread counts.
    const [w1, w2] = await Promise.all([inWorker({ threads: 1, x, M, weight }), inWorker({ threads: 2, x, M, weight })]);
    assert.equal(w1.info.threads, 1);
    assert.equal(w2.info.threads, 2);
    for (const w of [w1, w2]) {
      assert.equal(w.exitCode, 0);
      assert.equal(w.info.isa, a.availableIsas()[0]);
      assert.deepEqual(bitDifferences(w.out, here), [], `${type} in a worker with ${w.info.threads} threads`);
    }
  }
});

test("the TypeScript weight and scale types must equal the addon's: a difference names the entry", () => {
  const tables = (weights: Record<string, number>, scales: Record<string, number> = NativeScaleType) => ({
    weightTypes: () => weights,
    scaleTypes: () => scales,
  });
  assert.equal(typeTableMismatch(tables({ ...NativeWeightType })), undefined);
  if (addon) assert.equal(typeTableMismatch(addon), undefined);
  assert.equal(
    typeTableMismatch(tables({ ...NativeWeightType, q5_k: 10 })),
    'weight type "q5_k" is 9 in src/kernels/native.ts but 10 in the addon',
  );
  const withoutQ6: Record<string, number> = { ...NativeWeightType };
  delete withoutQ6.q6_k;
  assert.match(typeTableMismatch(tables(withoutQ6)) ?? "", /weight type "q6_k" is 8 in src\/kernels\/native.ts but absent in the addon/);
  assert.match(
    typeTableMismatch(tables({ ...NativeWeightType, q2_k: 10 })) ?? "",
    /weight type "q2_k" is absent in src\/kernels\/native.ts but 10/,
  );
  assert.match(typeTableMismatch(tables({ ...NativeWeightType }, { f32: 0, f16: 2, bf16: 1 })) ?? "", /scale type "f16" is 1 .* but 2/);
});

test("an addon whose weight types differ is not loaded, and the reason names the entry", () => {
  // A stand-in addon (TINY_LLM_ADDON, as tests of a failed build use) with one type renumbered.
  const fake = join(tmp, "fake-addon.cjs");
  const weights = { ...NativeWeightType, affine8: 42 };
  writeFileSync(
    fake,
    `module.exports = { weightTypes: () => (${JSON.stringify(weights)}), scaleTypes: () => (${JSON.stringify(NativeScaleType)}) };`,
  );
  const module = new URL("../src/kernels/native.js", import.meta.url).href;
  const script = `import { nativeKernels, nativeUnavailableReason } from ${JSON.stringify(module)};
    console.log(JSON.stringify({ loaded: nativeKernels() !== undefined, reason: nativeUnavailableReason() }));`;
  const output = execFileSync(process.execPath, ["--input-type=module", "-e", script], {
    env: { ...process.env, TINY_LLM_ADDON: fake },
    encoding: "utf8",
  });
  const { loaded, reason } = JSON.parse(output) as { loaded: boolean; reason: string };
  assert.equal(loaded, false);
  assert.match(reason, /does not match this TypeScript build: weight type "affine8" is 6 in src\/kernels\/native.ts but 42 in the addon/);
});
