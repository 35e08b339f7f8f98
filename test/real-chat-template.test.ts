/**
 * Real models' chat templates (the GGUF's tokenizer.chat_template), rendered by our Jinja engine
 * (src/tokenizer/chat-template.ts, what `generate --chat` uses), against the text llama.cpp's
 * template engine renders for the same conversation (llama-server --jinja, /apply-template).
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { readGgufHeader } from "../src/loaders/gguf.js";
import { renderChatTemplate, type ChatMessage } from "../src/tokenizer/chat-template.js";
import { ggufTokenizer } from "../src/tokenizer/gguf-tokenizer.js";
import type { Tokenizer } from "../src/tokenizer/tokenizer.js";
import { llamaCppSkip } from "../scripts/llama-cpp-paths.js";
import { llamaServerFixture } from "./support/llama-server.js";
import { testModel, testModelNames } from "./support/test-models.js";

const CONVERSATIONS: Record<string, ChatMessage[]> = {
  "system + user + assistant + user": [
    { role: "system", content: "You are a terse assistant. Answer in one sentence." },
    { role: "user", content: "What is 2 + 2?" },
    { role: "assistant", content: "2 + 2 is 4." },
    { role: "user", content: "And what is the capital of France?\nAnswer briefly." },
  ],
  // The template's own default system prompt, where it has one.
  "user alone": [{ role: "user", content: "Write a haiku about the sea. 🌊" }],
};

for (const name of testModelNames()) {
  const model = testModel(name);
  const skip = model.skip || llamaCppSkip("llama-server");

  describe(`${name}: chat template against llama.cpp's`, { skip }, () => {
    const server = llamaServerFixture({ before, after }, model.path, { ctx: 512 });
    let ours: Tokenizer | undefined;
    const tokenizer = (): Tokenizer => (ours ??= ggufTokenizer(readGgufHeader(model.path as string)));

    for (const [what, messages] of Object.entries(CONVERSATIONS)) {
      test(`${what}, with the generation prompt: the same text and ids`, async () => {
        const config = tokenizer().config;
        assert.equal(typeof config.chat_template, "string", "the GGUF has a chat template");
        const text = renderChatTemplate(config, { messages, addGenerationPrompt: true });
        const expected = await server().applyTemplate(messages);
        assert.equal(text, expected);
        assert.ok(text.endsWith("assistant\n"), `ends with the assistant's turn header: ${JSON.stringify(text.slice(-40))}`);
        assert.deepEqual(tokenizer().encode(text, { addSpecialTokens: false }), await server().tokenize(text));
      });
    }
  });
}
