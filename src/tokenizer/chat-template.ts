import { Template } from "@huggingface/jinja";
import { specialTokenContent, type TokenizerConfig } from "./tokenizer.js";

export interface ChatMessage {
  /** "system", "user" or "assistant" (templates may accept others, such as "tool"). */
  role: string;
  content: string;
}

export interface ChatTemplateOptions {
  messages: ChatMessage[];
  /** End with the header of an assistant turn, so that the model writes the reply. */
  addGenerationPrompt: boolean;
  /** Defaults to tokenizer_config's bos_token. */
  bosToken?: string;
  /** Defaults to tokenizer_config's eos_token. */
  eosToken?: string;
  /** More variables for the template, such as Qwen3's `enable_thinking` (transformers' chat-template kwargs). */
  kwargs?: Record<string, unknown>;
  /** A template to use instead of the tokenizer's, and where it came from (for errors). */
  template?: { source: string; origin: string };
}

/** The variables renderChatTemplate sets itself; kwargs may not replace them. */
const RESERVED = ["messages", "add_generation_prompt", "bos_token", "eos_token"];

/**
 * Renders tokenizer_config.json's chat template into prompt text. The text already holds the
 * template's special tokens (a template that starts with bos_token writes BOS itself), so
 * transformers encodes it without adding special tokens.
 */
export function renderChatTemplate(config: TokenizerConfig, options: ChatTemplateOptions): string {
  const source = options.template?.source ?? pickTemplate(config);
  const origin = options.template?.origin ?? "tokenizer_config.json";
  const kwargs = options.kwargs ?? {};
  const reserved = RESERVED.filter((name) => Object.hasOwn(kwargs, name));
  if (reserved.length > 0) {
    throw new Error(`chat-template kwargs may not set ${reserved.join(", ")}: the conversation and the generation prompt set them`);
  }
  try {
    return new Template(source).render({
      ...kwargs,
      messages: options.messages,
      add_generation_prompt: options.addGenerationPrompt,
      bos_token: options.bosToken ?? specialTokenContent(config.bos_token) ?? "",
      eos_token: options.eosToken ?? specialTokenContent(config.eos_token) ?? "",
    });
  } catch (err) {
    const message = err instanceof Error ? err.message : String(err);
    throw new Error(`The chat template in ${origin} could not be rendered: ${message}`, { cause: err });
  }
}

function pickTemplate(config: TokenizerConfig): string {
  const template = config.chat_template;
  if (typeof template === "string") return template;
  if (Array.isArray(template)) {
    // The list form names several templates (e.g. "default", "tool_use"); plain chat uses "default".
    const chosen = template.find((t) => t.name === "default");
    if (chosen !== undefined) return chosen.template;
    const names = template.map((t) => `"${t.name}"`).join(", ");
    throw new Error(
      `tokenizer_config.json's chat_template list has no "default" template (it has ${names}); ` +
        "run without --chat to use the prompt as raw text.",
    );
  }
  throw new Error(
    "This tokenizer has no chat template (tokenizer_config.json has no chat_template); " +
      "run without --chat to use the prompt as raw text.",
  );
}
