/**
 * A real answer from each real instruct model: asked "What is the capital of France?" in the
 * model's own chat template (from the GGUF), greedy decoding says Paris. The TypeScript path keeps
 * activations in f32; the native one rounds them to int8 before each quantized matmul, as
 * llama.cpp does, and SmolLM2-135M at Q4_1 loses the answer that way (llama.cpp on the same file
 * answers "L'Étoile, la Marseillaise, …"). So where our native answer lacks Paris, llama.cpp's
 * on the same file must lack it too: the failure is the model's at int8, not our kernels'.
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { loadCheckpoint, type LoadedCheckpoint } from "../src/generation/load-checkpoint.js";
import { nativeKernels } from "../src/kernels/native.js";
import { selectBackend, type BackendName } from "../src/engine/backend.js";
import { renderChatTemplate } from "../src/tokenizer/chat-template.js";
import { llamaCppTool } from "../scripts/llama-cpp-paths.js";
import { greedySteps } from "./support/greedy-steps.js";
import { LlamaServer } from "./support/llama-server.js";
import { testModel, testModelNames } from "./support/test-models.js";

const MAX_TOKENS = 32;
const FULL = process.env.TINY_LLM_REAL_FULL === "1";

for (const name of testModelNames()) {
  const model = testModel(name);

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
      const where = backend === "native" ? " (or llama.cpp on the same file misses it too)" : "";
      test(`[${backend}] "What is the capital of France?" is answered with Paris${where}`, { skip, timeout: 30 * 60_000 }, async (t) => {
        const { model: reference, tokenizer, eosTokenIds } = load();
        const text = renderChatTemplate(tokenizer.config, {
          messages: [{ role: "user", content: "What is the capital of France?" }],
          addGenerationPrompt: true,
        });
        const prompt = tokenizer.encode(text, { addSpecialTokens: false });
        const { ids } = greedySteps(selectBackend(reference, { backend }).model, prompt, MAX_TOKENS);
        const end = ids.findIndex((id) => eosTokenIds.includes(id));
        const answer = tokenizer.decode(end < 0 ? ids : ids.slice(0, end));
        t.diagnostic(`answer: ${JSON.stringify(answer)}`);
        if (backend === "ts" || /\bParis\b/.test(answer)) {
          assert.ok(end >= 0, `the answer ends within ${MAX_TOKENS} tokens: ${JSON.stringify(answer)}`);
          return assert.match(answer, /\bParis\b/);
        }
        assert.ok(
          llamaCppTool("llama-server"),
          `our answer ${JSON.stringify(answer)} lacks Paris, and llama-server is not built to compare`,
        );
        const server = await LlamaServer.start(model.path as string, { ctx: 1024 });
        try {
          const theirs = (await server.greedy(prompt, MAX_TOKENS, 1)).map((s) => s.id);
          const stop = theirs.findIndex((id) => eosTokenIds.includes(id));
          const llamaAnswer = tokenizer.decode(stop < 0 ? theirs : theirs.slice(0, stop));
          t.diagnostic(`llama.cpp's answer on the same file: ${JSON.stringify(llamaAnswer)}`);
          assert.doesNotMatch(llamaAnswer, /\bParis\b/, `llama.cpp answers ${JSON.stringify(llamaAnswer)}, we ${JSON.stringify(answer)}`);
        } finally {
          await server.close();
        }
      });
    }
  });
}
