/**
 * The library's Engine: one loaded model served by the engine in its worker thread, taking any
 * number of concurrent requests from the process that holds it, as the HTTP server does but
 * without HTTP. Every generate() and chat() is one request; requests that run at once share each
 * engine step (continuous batching), and a conversation's earlier turns come from the prefix
 * cache. Made by loadModel().
 */
import type { EngineStats, StepTrace } from "../engine/api.js";
import type { AsyncEngine, EngineInfo } from "../engine/async-engine.js";
import type { ModelConfig } from "../models/config.js";
import { renderChatTemplate, type ChatMessage } from "../tokenizer/chat-template.js";
import type { Tokenizer } from "../tokenizer/tokenizer.js";
import { ChoiceRun } from "./choice-run.js";
import { Generation } from "./generation.js";
import { requestParams, type GenerateOptions, type RequestDefaults } from "./request-options.js";
import type { SamplingDefaults } from "../generation/generation-config.js";

export interface ChatTemplateSettings {
  /** Extra Jinja variables for the template, such as `{ enable_thinking: false }` for Qwen3. */
  chatTemplateKwargs?: Record<string, unknown>;
  /** A Jinja template to use instead of the model's, or that and where it came from (named in errors). */
  chatTemplate?: string | { source: string; origin: string };
}

export interface ChatOptions extends GenerateOptions, ChatTemplateSettings {}

/** What loadModel hands the Engine. */
export interface EngineParts {
  /** The engine in its worker thread. */
  core: AsyncEngine;
  tokenizer: Tokenizer;
  eosTokenIds: number[];
  /** generation_config.json's sampling settings. */
  sampling: SamplingDefaults;
  /** The model's folder or file. */
  path: string;
}

export class Engine {
  /** The engine in its worker thread, for a layer that drives it by token ids (the HTTP server). */
  readonly core: AsyncEngine;
  readonly tokenizer: Tokenizer;
  /** The model's end-of-sequence ids: they end a request unless ignoreEos. */
  readonly eosTokenIds: readonly number[];
  /** generation_config.json's sampling settings, the defaults of every request. */
  readonly sampling: Readonly<SamplingDefaults>;
  /** The model's folder or file. */
  readonly path: string;
  private readonly defaults: RequestDefaults;
  private requests = 0;

  /** Use loadModel(). */
  constructor(parts: EngineParts) {
    this.core = parts.core;
    this.tokenizer = parts.tokenizer;
    this.eosTokenIds = parts.eosTokenIds;
    this.sampling = parts.sampling;
    this.path = parts.path;
    const { info } = parts.core;
    this.defaults = {
      config: info.config,
      poolTokens: info.kv.blocks * info.kv.blockSize,
      eosTokenIds: parts.eosTokenIds,
      sampling: parts.sampling,
    };
  }

  /** Backend, KV pool and batch limits. */
  get info(): EngineInfo {
    return this.core.info;
  }

  get config(): ModelConfig {
    return this.core.info.config;
  }

  /**
   * Continues `prompt`: text (encoded with the tokenizer's BOS rules; "" is BOS alone where the
   * tokenizer adds one) or token ids. Throws at once for bad options or a prompt that cannot fit.
   */
  generate(prompt: string | readonly number[], opts: GenerateOptions = {}): Generation {
    const promptIds = typeof prompt === "string" ? this.tokenizer.encode(prompt) : [...prompt];
    return this.start(promptIds, opts);
  }

  /** The assistant's reply to `messages`, rendered with the model's chat template. */
  chat(messages: readonly ChatMessage[], opts: ChatOptions = {}): Generation {
    // The template writes any BOS itself.
    const promptIds = this.tokenizer.encode(this.applyChatTemplate(messages, opts), { addSpecialTokens: false });
    return this.start(promptIds, opts);
  }

  /** `messages` as the prompt text the model's chat template makes of them (ending with the assistant's header unless told not to). */
  applyChatTemplate(messages: readonly ChatMessage[], opts: ChatTemplateSettings & { addGenerationPrompt?: boolean } = {}): string {
    const override = opts.chatTemplate;
    if (override === undefined && !this.tokenizer.config.chat_template) {
      throw new Error(
        `${this.path} has no chat template (its tokenizer_config.json has none): give one with the chatTemplate option, or use generate()`,
      );
    }
    return renderChatTemplate(this.tokenizer.config, {
      messages: [...messages],
      addGenerationPrompt: opts.addGenerationPrompt ?? true,
      kwargs: opts.chatTemplateKwargs,
      template: typeof override === "string" ? { source: override, origin: "the chatTemplate option" } : override,
    });
  }

  /** The engine's counters after its latest step. */
  stats(): EngineStats {
    return this.core.stats();
  }

  /** Requests submitted and not finished. */
  get inFlight(): number {
    return this.core.inFlight;
  }

  /** Called after every engine step that ran a batch; returns a function that stops it. */
  onStep(listener: (trace: StepTrace, stats: EngineStats) => void): () => void {
    const off = this.core.onStep(listener);
    return () => void off();
  }

  /** Stops the engine's worker; requests still running end with finishReason "abort". */
  close(): Promise<void> {
    return this.core.close();
  }

  private start(promptIds: number[], opts: GenerateOptions): Generation {
    const { params, stops } = requestParams(promptIds, opts, this.defaults);
    const id = `lib-${this.requests++}`;
    return new Generation((observer) => new ChoiceRun(this.core, this.tokenizer, id, params, stops, observer, opts.signal));
  }
}
