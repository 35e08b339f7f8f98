/**
 * A real answer from each real instruct model: asked "What is the capital of France?" in the
 * model's own chat template (from the GGUF), greedy decoding says Paris. Needs only the model,
 * not llama.cpp.
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { loadCheckpoint, type LoadedCheckpoint } from "../src/generation/load-checkpoint.js";
import { nativeKernels } from "../src/kernels/native.js";
import { selectBackend, type BackendName } from "../src/engine/backend.js";
import { renderChatTemplate } from "../src/tokenizer/chat-template.js";
import { greedySteps } from "./support/greedy-steps.js";
import { KNOWN_GAPS, testModel, testModelNames } from "./support/test-models.js";

const MAX_TOKENS = 32;
const FULL = process.env.TINY_LLM_REAL_FULL === "1";

for (const name of testModelNames()) {
  const model = testModel(name);
  const todo = KNOWN_GAPS[name]?.tokenizer;

  describe(`${name}: a real answer`, { skip: model.skip }, () => {
    let checkpoint: LoadedCheckpoint | undefined;
    const load = (): LoadedCheckpoint => (checkpoint ??= loadCheckpoint(model.path as string));
    // The TypeScript path takes two minutes on the 0.5B model (its greedy decoding is held against
    // llama.cpp in real-greedy.test.ts): by default it answers on models under 200 MB alone
    // (TINY_LLM_REAL_FULL=1 runs it on every model).
    const backends: [BackendName, string | false][] = [
      ["native", nativeKernels() ? false : "native kernels unavailable"],
      ["ts", FULL || model.entry.size < 200e6 ? false : "slow on the TypeScript path at this size (TINY_LLM_REAL_FULL=1 runs it)"],
    ];
    for (const [backend, skip] of backends) {
      const gap = todo ?? (backend === "native" ? KNOWN_GAPS[name]?.native : undefined);
      test(`[${backend}] "What is the capital of France?" is answered with Paris`, { skip, todo: gap, timeout: 30 * 60_000 }, (t) => {
        const { model: reference, tokenizer, eosTokenIds } = load();
        const text = renderChatTemplate(tokenizer.config, {
          messages: [{ role: "user", content: "What is the capital of France?" }],
          addGenerationPrompt: true,
        });
        const prompt = tokenizer.encode(text, { addSpecialTokens: false });
        const { ids } = greedySteps(selectBackend(reference, { backend }).model, prompt, MAX_TOKENS);
        const end = ids.findIndex((id) => eosTokenIds.includes(id));
        assert.ok(end >= 0, `the answer ends within ${MAX_TOKENS} tokens: ${JSON.stringify(tokenizer.decode(ids))}`);
        const answer = tokenizer.decode(ids.slice(0, end));
        t.diagnostic(`answer: ${JSON.stringify(answer)}`);
        assert.match(answer, /\bParis\b/);
      });
    }
  });
}
