/**
 * A conversation with the model, turn by turn. Each turn renders the whole conversation with the
 * chat template, but the earlier part of its prompt is given to the engine as the very token ids
 * it computed before (the last prompt and the reply as generated), not as that text encoded again:
 * a reply's tokens need not be what the tokenizer makes of its text, and only equal ids are found
 * in the prefix cache. So a new turn computes little more than the new message.
 */
import type { ChatMessage } from "../tokenizer/chat-template.js";
import type { ChatTemplateSettings, Engine } from "./engine.js";
import type { Generation } from "./generation.js";
import type { GenerateOptions } from "./request-options.js";

export interface ChatSessionOptions extends ChatTemplateSettings {
  system?: string;
}

export class ChatSession {
  /** The system message (undefined for none); a change applies from the next turn. */
  system: string | undefined;
  private turns: ChatMessage[] = [];
  /** The latest turn's prompt and reply as text, and as the ids the engine computed for them. */
  private computed: { text: string; ids: number[] } | undefined;
  private replying = false;
  /** Counts resets, so that a reply that ends after one does not join the new conversation. */
  private resets = 0;

  constructor(
    readonly engine: Engine,
    private readonly options: ChatSessionOptions = {},
  ) {
    this.system = options.system;
  }

  /** The conversation so far, the system message first. */
  get messages(): ChatMessage[] {
    return this.system === undefined ? [...this.turns] : [{ role: "system", content: this.system }, ...this.turns];
  }

  /** Forgets the turns (the system message stays). */
  reset(): void {
    this.turns = [];
    this.resets++;
  }

  /**
   * The model's reply to `content`. Once it ends, the message and the reply join the conversation:
   * a reply stopped early as far as it got, and a turn cancelled before any text not at all.
   */
  send(content: string, opts: GenerateOptions = {}): Generation {
    if (this.replying) throw new Error("the previous reply is still being generated: wait for its result or abort it");
    const message: ChatMessage = { role: "user", content };
    const text = this.engine.applyChatTemplate([...this.messages, message], this.options);
    const promptIds = this.encode(text);
    const generation = this.engine.generate(promptIds, opts);
    this.replying = true;
    const resets = this.resets;
    generation.result.then(
      (result) => {
        this.replying = false;
        if (resets !== this.resets || (result.text.length === 0 && result.finishReason === "abort")) return;
        this.turns.push(message, { role: "assistant", content: result.text });
        const ids = [...promptIds, ...result.tokens.map((t) => t.id)];
        // Only a reply whose ids spell its text exactly can stand for it: a special token the
        // model wrote is not in the text, so the next prompt would differ from the conversation.
        const exact = this.engine.tokenizer.decode(ids) === this.engine.tokenizer.decode(promptIds) + result.text;
        this.computed = exact ? { text: text + result.text, ids } : { text, ids: promptIds };
      },
      () => (this.replying = false),
    );
    return generation;
  }

  private encode(text: string): number[] {
    // The template writes any BOS itself.
    const tokenizer = this.engine.tokenizer;
    const before = this.computed;
    if (!before || !text.startsWith(before.text)) return tokenizer.encode(text, { addSpecialTokens: false });
    return [...before.ids, ...tokenizer.encode(text.slice(before.text.length), { addSpecialTokens: false })];
  }
}
