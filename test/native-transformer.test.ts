/**
 * The native transformer against the TypeScript reference where it does more than run kernels:
 * a prompt longer than two prefill chunks, and prompts after the first, whose buffers have been
 * given back to the system in between.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { Random } from "../src/generation/random.js";
import { nativeKernels } from "../src/kernels/native.js";
import { loadModel } from "../src/loaders/model-loader.js";
import { selectBackend, type BackendName } from "../src/models/backend.js";
import { NativeTransformer, prefillChunk } from "../src/models/native-transformer.js";
import { sharedPath } from "./support/shared.js";
import { assertSameSteps, greedySteps } from "./support/greedy-steps.js";

const noKernels = nativeKernels() ? false : "native kernels unavailable";

for (const name of ["stories260k-qwen2", "tiny-random-qwen3"]) {
  const model = sharedPath("models", name);
  test(
    `${name}: a prompt longer than two prefill chunks gives the TypeScript reference's logits and greedy tokens`,
    { skip: model.skip || noKernels },
    () => {
      const reference = loadModel(model.path);
      const native = selectBackend(reference, { backend: "native" }).model;
      assert.ok(native instanceof NativeTransformer);
      const random = new Random(7);
      // Past two chunks and ending inside the third, within the 512-token context of stories260k.
      const prompt = Array.from(
        { length: 2 * native.prefillChunk + 45 },
        () => 3 + (random.nextUint32() % (reference.embed.weight.rows - 3)),
      );
      const run = (backend: BackendName) =>
        greedySteps(backend === "native" ? native : selectBackend(reference, { backend }).model, prompt, 8);
      assertSameSteps(run("native"), run("ts"));
    },
  );
}

const stories = sharedPath("models", "stories260k-qwen2");
test(
  "each prompt after the first, on buffers given back in between, gives the reference's logits",
  { skip: stories.skip || noKernels },
  () => {
    const reference = loadModel(stories.path);
    const native = selectBackend(reference, { backend: "native" }).model;
    const ts = selectBackend(reference, { backend: "ts" }).model;
    const random = new Random(11);
    // A long prompt sizes the buffers; shorter ones then reuse them.
    for (const length of [200, 37, 120, 2]) {
      const prompt = Array.from({ length }, () => 3 + (random.nextUint32() % (reference.embed.weight.rows - 3)));
      assertSameSteps(greedySteps(native, prompt, 4), greedySteps(ts, prompt, 4));
    }
  },
);

test("a forward pass of no tokens is refused", { skip: stories.skip || noKernels }, () => {
  const sequence = selectBackend(loadModel(stories.path), { backend: "native" }).model.newSequence();
  assert.throws(() => sequence.forward([]), /at least one token/);
});

test("a prefill chunk is the most tokens, 32 to 256, whose buffers stay within 1 % of the weights", () => {
  // Buffers per token: 30 KB for Qwen2-0.5B, 119 KB for Qwen2-7B.
  assert.equal(prefillChunk(278e6, 30_208), 64, "Qwen2-0.5B at Q4_0");
  assert.equal(prefillChunk(531e6, 30_208), 128, "Qwen2-0.5B at Q8_0");
  assert.equal(prefillChunk(994e6, 30_208), 256, "Qwen2-0.5B at F16");
  assert.equal(prefillChunk(4.29e9, 118_784), 256, "Qwen2-7B at Q4_0");
  assert.equal(prefillChunk(1e6, 30_208), 32, "a tiny model");
});
