// The batch-first forward pass on both kernel sets against the week-1 Transformer, the
// independent reference: one sequence across block and attention-tile boundaries, and a batch of
// sequences whose rows must each equal the sequence run alone.
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { BatchForward, passRows } from "../src/engine/batch-forward.js";
import { PagedKvCache } from "../src/engine/kv-cache.js";
import { SingleSequenceModel } from "../src/engine/single-sequence.js";
import { loadCheckpoint } from "../src/generation/load-checkpoint.js";
import { Random } from "../src/generation/random.js";
import { SEQ_FIELDS } from "../src/kernels/kernels.js";
import { kernelSets } from "./support/engine-kernels.js";
import { assertSameSteps, greedySteps } from "./support/greedy-steps.js";
import { sharedPath } from "./support/shared.js";

const MODELS = ["stories260k-qwen2", "tiny-random-qwen3", "tiny-random-llama"];

for (const k of kernelSets()) {
  describe(`batch forward on the ${k.name} kernels`, { skip: k.skip }, () => {
    for (const name of MODELS) {
      const m = sharedPath("models", name);
      test(`${name}: greedy steps equal the reference's across blocks of 16 and tiles of 64 keys`, { skip: m.skip }, () => {
        const { model } = loadCheckpoint(m.path);
        // 37 prompt tokens and 40 steps: the cache crosses blocks 2 to 4 and the 64-key tile.
        const prompt = Array.from({ length: 37 }, (_, i) => (i * 7 + 3) % model.config.vocabSize);
        const expected = greedySteps(model, prompt, 40);
        const ours = new SingleSequenceModel(new BatchForward(model, k.make()), "f32");
        assertSameSteps(greedySteps(ours, prompt, 40), expected);
      });
    }

    const stories = sharedPath("models", "stories260k-qwen2");
    test("decoding past 256 positions, the old cache's first growth, up to the context's last token", { skip: stories.skip }, () => {
      const { model } = loadCheckpoint(stories.path);
      const context = model.config.maxPositionEmbeddings;
      const prompt = Array.from({ length: 200 }, (_, i) => (i * 11 + 5) % model.config.vocabSize);
      const steps = context - prompt.length;
      const ours = new SingleSequenceModel(new BatchForward(model, k.make()), "f32");
      assertSameSteps(greedySteps(ours, prompt, steps), greedySteps(model, prompt, steps));
      const seq = ours.newSequence();
      seq.forward(prompt.concat(Array.from({ length: steps }, () => 1)));
      assert.equal(seq.length, context);
      assert.throws(() => seq.forward([1]), /exceed the model's context of 512/);
    });

    for (const name of ["stories260k-qwen2", "tiny-random-qwen3"]) {
      const m = sharedPath("models", name);
      test(`${name}: a prompt longer than two passes over the layers gives the reference's greedy steps`, { skip: m.skip }, () => {
        const { model } = loadCheckpoint(m.path);
        const forward = new BatchForward(model, k.make());
        const random = new Random(7);
        // Past two passes and ending inside the third, within the 512-token context of stories260k.
        const prompt = Array.from({ length: 2 * forward.passRows + 45 }, () => 3 + (random.nextUint32() % (model.config.vocabSize - 3)));
        assertSameSteps(greedySteps(new SingleSequenceModel(forward, "f32"), prompt, 8), greedySteps(model, prompt, 8));
      });
    }

    test("each prompt after the first, on buffers given back in between, gives the reference's logits", { skip: stories.skip }, () => {
      const { model } = loadCheckpoint(stories.path);
      const ours = new SingleSequenceModel(new BatchForward(model, k.make()), "f32");
      const random = new Random(11);
      // A long prompt sizes the buffers; shorter ones then reuse them.
      for (const length of [200, 37, 120, 2]) {
        const prompt = Array.from({ length }, () => 3 + (random.nextUint32() % (model.config.vocabSize - 3)));
        assertSameSteps(greedySteps(ours, prompt, 4), greedySteps(model, prompt, 4));
      }
      assert.throws(() => ours.newSequence().forward([]), /at least one token/);
    });

    test("each sequence of a mixed batch gets the logits it gets alone, bit for bit", { skip: stories.skip }, () => {
      const { model } = loadCheckpoint(stories.path);
      const forward = new BatchForward(model, k.make());
      const bs = 16;
      const lengths = [1, 17, 5, 33, 16];
      const prompts = lengths.map((n, s) => Array.from({ length: n }, (_, i) => (i * 13 + s * 29 + 1) % model.config.vocabSize));
      const run = (which: number[]): Map<number, Float32Array> => {
        const cache = new PagedKvCache(model.config, 64, bs, "f32");
        let row = 0;
        let table = 0;
        let nextBlock = 0;
        const ids: number[] = [];
        const positions: number[] = [];
        const slots: number[] = [];
        const seqs: number[] = [];
        const tables: number[] = [];
        const logitRows: number[] = [];
        for (const s of which) {
          const n = prompts[s].length;
          // Blocks taken from the far end for every other sequence: tables need not be in order.
          const blocks = Array.from({ length: Math.ceil(n / bs) }, () => (s % 2 ? 63 - nextBlock++ : nextBlock++));
          seqs.push(row, n, n, table);
          tables.push(...blocks);
          table += blocks.length;
          for (let p = 0; p < n; p++) {
            ids.push(prompts[s][p]);
            positions.push(p);
            slots.push(blocks[Math.floor(p / bs)] * bs + (p % bs));
          }
          row += n;
          logitRows.push(row - 1);
        }
        const out = new Map<number, Float32Array>();
        const batch = {
          ids: Int32Array.from(ids),
          positions: Int32Array.from(positions),
          slots: Int32Array.from(slots),
          seqs: Int32Array.from(seqs),
          blockTables: Int32Array.from(tables),
          logitRows: Int32Array.from(logitRows),
        };
        assert.equal(batch.seqs.length, which.length * SEQ_FIELDS);
        forward.forward(batch, cache, (i, logits) => out.set(which[i], logits.slice()));
        return out;
      };
      const together = run([0, 1, 2, 3, 4]);
      for (let s = 0; s < lengths.length; s++) assert.deepEqual(together.get(s), run([s]).get(s), `sequence ${s}`);
    });
  });
}

test("rows per pass: the largest power of two from 32 to 256 whose buffers stay within 1 % of the weights", () => {
  assert.equal(passRows(0, 1000), 32);
  // 128 rows of 1000 bytes are exactly 1 % of 12.8 MB: allowed, one byte less of weights is not.
  assert.equal(passRows(12_800_000, 1000), 128);
  assert.equal(passRows(12_799_999, 1000), 64);
  assert.equal(passRows(1e12, 1000), 256);
});
