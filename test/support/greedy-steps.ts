import assert from "node:assert/strict";
import { generate } from "../../src/generation/generate.js";
import { Sampler } from "../../src/generation/sampler.js";
import type { LanguageModel } from "../../src/models/language-model.js";

export interface GreedySteps {
  ids: number[];
  logits: Float32Array[];
}

/** Greedy tokens from `prompt` and the logits each was picked from. */
export function greedySteps(model: LanguageModel, prompt: readonly number[], maxTokens: number): GreedySteps {
  const ids: number[] = [];
  const logits: Float32Array[] = [];
  for (const step of generate(model, prompt, { sampler: new Sampler({ temperature: 0 }), maxTokens })) {
    ids.push(step.id);
    // Copied as they come: the native model reuses its logits buffer.
    logits.push(step.logits.slice());
  }
  return { ids, logits };
}

/**
 * The same tokens, and logits within 1e-3 of each step's largest |logit| (f32 kernels against the
 * reference's f64 sums).
 */
export function assertSameSteps(actual: GreedySteps, expected: GreedySteps): void {
  assert.deepEqual(actual.ids, expected.ids);
  actual.logits.forEach((l, i) => {
    let worst = 0;
    let scale = 1;
    for (let v = 0; v < l.length; v++) {
      worst = Math.max(worst, Math.abs(l[v] - expected.logits[i][v]));
      scale = Math.max(scale, Math.abs(expected.logits[i][v]));
    }
    assert.ok(worst <= 1e-3 * scale, `step ${i}: logits differ by ${worst} (scale ${scale})`);
  });
}
