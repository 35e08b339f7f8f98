import assert from "node:assert/strict";
import type { TestContext } from "node:test";
import type { ControlledEvaluateInputItem, Llama, LlamaModel, Token } from "node-llama-cpp";

/**
 * llama.cpp's prebuilt CPU engine (node-llama-cpp), the independent implementation some tests
 * compare against; undefined, with the test marked skipped, where it cannot run here.
 */
export async function loadLlamaCpp(t: TestContext): Promise<Llama | undefined> {
  try {
    const llamaCpp = await import("node-llama-cpp");
    return await llamaCpp.getLlama({ gpu: false, build: "never", logLevel: llamaCpp.LlamaLogLevel.error });
  } catch (error) {
    t.skip(`node-llama-cpp's prebuilt llama.cpp is not usable here: ${(error as Error).message}`);
    return undefined;
  }
}

/**
 * llama.cpp's log-probability of every token of the vocabulary (vocabSize of them) coming after
 * `ids`, from `model`.
 */
export async function nextLogProbs(model: LlamaModel, ids: readonly number[], vocabSize: number): Promise<Float64Array> {
  const context = await model.createContext({ contextSize: Math.max(128, ids.length + 1) });
  try {
    const input: ControlledEvaluateInputItem[] = ids.map((id, i) =>
      i < ids.length - 1 ? (id as Token) : [id as Token, { generateNext: { probabilities: true } }],
    );
    const output = await context.getSequence().controlledEvaluate(input);
    const probabilities = output[ids.length - 1]?.next.probabilities as Map<number, number>;
    assert.equal(probabilities.size, vocabSize, "llama.cpp reports every token's probability");
    const out = new Float64Array(vocabSize);
    for (const [id, p] of probabilities) out[id] = Math.log(p);
    return out;
  } finally {
    await context.dispose();
  }
}
