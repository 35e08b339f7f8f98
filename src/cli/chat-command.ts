/**
 * `tiny-llm chat`: an interactive chat in the terminal on the library's Engine. Each turn renders
 * the whole conversation with the model's chat template; the engine's prefix cache finds the
 * earlier turns' blocks, so only the new message is computed (the speed line after each reply
 * shows how many prompt tokens came from the cache). Ctrl-C stops a reply and keeps the
 * conversation; Ctrl-C again at the prompt, or Ctrl-D, leaves.
 */
import { writeFileSync } from "node:fs";
import { createInterface, type Interface } from "node:readline";
import { ChatSession } from "../api/chat-session.js";
import type { ChatTemplateSettings, Engine } from "../api/engine.js";
import type { GenerationResult } from "../api/generation.js";
import type { GenerateOptions } from "../api/request-options.js";
import { RequestRejectedError } from "../engine/api.js";
import { Sampler } from "../generation/sampler.js";
import { DEFAULT_MODEL } from "../hub/model-spec.js";
import { UsageError } from "./errors.js";
import { CHAT_TEMPLATE_OPTIONS, chatTemplateHelp, parseChatTemplateOptions } from "./chat-template-options.js";
import {
  BACKEND_OPTIONS,
  HUB_OPTIONS,
  MODEL_OPTION,
  backendHelp,
  localModel,
  modelHelp,
  parseBackendOptions,
  parseNumber,
  parseOptions,
  parseWholeNumber,
} from "./options.js";

export const CHAT_HELP = `Usage: tiny-llm chat [--model M] [options]

Chats with the model in the terminal, with its own chat template. Replies stream as they are
generated; earlier turns are not computed again (prefix cache).

Options:
${modelHelp(`${DEFAULT_MODEL}; the model needs a chat template`)}
  --system TEXT       system message
${chatTemplateHelp()}
  -n, --max-tokens N  most tokens per reply (default: the rest of the context)
  --temperature T     0 is greedy; default from generation_config.json
  --top-k K, --top-p P, --min-p P, --seed S
                      sampling, as for generate
${backendHelp()}
  -h, --help          show this help

In the chat: /reset starts over (keeping the system message), /system TEXT sets the system
message, /save FILE writes the conversation as JSON, /help lists these. Ctrl-C stops a reply;
Ctrl-C at an empty prompt twice, or Ctrl-D, exits.`;

const COMMANDS_HELP = `/reset         start the conversation over (the system message stays)
/system TEXT   set the system message (/system alone removes it)
/save FILE     write the conversation to FILE as JSON
/help          this list
Ctrl-C stops a reply; Ctrl-C twice at an empty prompt, or Ctrl-D, exits.`;

export interface ChatSettings {
  /** As --model names it: a path or a Hugging Face repo id. */
  model: string;
  revision?: string;
  offline: boolean;
  system?: string;
  template: ChatTemplateSettings;
  /** Sampling and max tokens of every reply. */
  reply: Omit<GenerateOptions, "signal">;
  engine: ReturnType<typeof parseBackendOptions>;
}

const OPTIONS = {
  ...MODEL_OPTION,
  ...HUB_OPTIONS,
  system: { type: "string" },
  ...CHAT_TEMPLATE_OPTIONS,
  "max-tokens": { type: "string", short: "n" },
  temperature: { type: "string" },
  "top-k": { type: "string" },
  "top-p": { type: "string" },
  "min-p": { type: "string" },
  seed: { type: "string" },
  ...BACKEND_OPTIONS,
} as const;

/** The command line as settings, or undefined once --help is printed; throws a UsageError (one line) for anything wrong. */
export function parseChatArgs(argv: string[]): ChatSettings | undefined {
  const values = parseOptions("chat", argv, OPTIONS, CHAT_HELP);
  if (!values) return undefined;
  const reply: ChatSettings["reply"] = {
    maxTokens: parseWholeNumber("max-tokens", values["max-tokens"], 1),
    temperature: parseNumber("temperature", values.temperature),
    topK: parseWholeNumber("top-k", values["top-k"], 0),
    topP: parseNumber("top-p", values["top-p"]),
    minP: parseNumber("min-p", values["min-p"]),
    seed: parseWholeNumber("seed", values.seed, 0),
  };
  try {
    new Sampler(reply);
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
  const template = parseChatTemplateOptions(values);
  const settings: ChatSettings = {
    model: values.model ?? DEFAULT_MODEL,
    offline: values.offline,
    template,
    reply,
    engine: parseBackendOptions(values),
  };
  if (values.system !== undefined) settings.system = values.system;
  if (values.revision !== undefined) settings.revision = values.revision;
  return settings;
}

/** Control characters (but newline and tab) from a model's output would drive the terminal: shown as U+FFFD. */
function printable(text: string): string {
  // eslint-disable-next-line no-control-regex -- control characters are what it finds
  return text.replace(/[\u0000-\u0008\u000b-\u001f\u007f-\u009f]/g, "\uFFFD");
}

/** The line after a reply: "42 tokens, 35.1 tok/s, TTFT 120 ms, 310 prompt tokens (296 cached)". */
export function speedLine(r: GenerationResult): string {
  const parts = [`${r.usage.completionTokens} token${r.usage.completionTokens === 1 ? "" : "s"}`];
  if (r.timings.decodeTokensPerSecond !== undefined) parts.push(`${r.timings.decodeTokensPerSecond.toFixed(1)} tok/s`);
  if (r.timings.firstTokenMs !== undefined) parts.push(`TTFT ${r.timings.firstTokenMs.toFixed(0)} ms`);
  parts.push(`${r.usage.promptTokens} prompt tokens (${r.usage.cachedTokens} cached)`);
  const why = r.finishReason === "abort" ? "[interrupted] " : r.finishReason === "length" ? "[max tokens] " : "";
  return why + parts.join(", ");
}

/** The prompt's side of a chat: lines and Ctrl-C in, replies and notes out. */
class ChatPrompt {
  /** The reply being generated, stopped by Ctrl-C. */
  private reply: AbortController | undefined;
  /** A Ctrl-C came last: one more at an empty prompt leaves. */
  private armed = false;
  private readonly dim: (text: string) => string;

  constructor(
    private readonly session: ChatSession,
    private readonly replyOptions: ChatSettings["reply"],
    private readonly rl: Interface,
  ) {
    this.dim = process.stdout.isTTY ? (text) => `\x1b[2m${text}\x1b[0m` : (text) => text;
  }

  /** Stops the reply being generated, if one is. */
  stopReply(): void {
    this.reply?.abort();
  }

  interrupt(): void {
    if (this.reply) {
      this.stopReply();
    } else if (this.rl.line.length > 0) {
      // As in a shell: Ctrl-C drops the line being typed.
      this.rl.write(null, { ctrl: true, name: "e" });
      this.rl.write(null, { ctrl: true, name: "u" });
    } else if (this.armed) {
      this.rl.close();
      return;
    } else {
      process.stdout.write(this.dim("\n(Ctrl-C again or Ctrl-D to exit)") + "\n");
      this.rl.prompt();
    }
    this.armed = true;
  }

  async handle(line: string): Promise<void> {
    this.armed = false;
    const text = line.trim();
    if (text === "") return;
    if (text.startsWith("/")) return this.command(text);
    await this.turn(line);
  }

  private command(text: string): void {
    const [name] = text.split(/\s/, 1);
    const arg = text.slice(name.length).trim();
    switch (name) {
      case "/reset":
        this.session.reset();
        return this.note("(conversation cleared)");
      case "/system":
        this.session.system = arg === "" ? undefined : arg;
        return this.note(arg === "" ? "(system message removed)" : "(system message set)");
      case "/save":
        if (arg === "") return this.note("/save needs a file name: /save FILE");
        try {
          const messages = this.session.messages;
          writeFileSync(arg, JSON.stringify({ model: this.session.engine.path, messages }, null, 2) + "\n");
          return this.note(`(saved ${messages.length} messages to ${arg})`);
        } catch (err) {
          return this.note(`cannot write ${arg}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
        }
      case "/help":
        return this.note(COMMANDS_HELP);
      default:
        return this.note(`unknown command ${name}; /help lists the commands`);
    }
  }

  private async turn(content: string): Promise<void> {
    const controller = new AbortController();
    this.reply = controller;
    try {
      const generation = this.session.send(content, { ...this.replyOptions, signal: controller.signal });
      let ended = "\n";
      for await (const chunk of generation) {
        process.stdout.write(printable(chunk.text));
        if (chunk.text.length > 0) ended = chunk.text.endsWith("\n") ? "" : "\n";
      }
      process.stdout.write(ended + this.dim(speedLine(await generation.result)) + "\n");
    } catch (err) {
      const hint = err instanceof RequestRejectedError ? " (/reset starts over)" : "";
      this.note(`error: ${(err as Error).message}${hint}`);
    } finally {
      this.reply = undefined;
    }
  }

  private note(text: string): void {
    process.stdout.write(this.dim(text) + "\n");
  }
}

export async function runChat(argv: string[]): Promise<void> {
  const settings = parseChatArgs(argv);
  if (!settings) return;
  const path = await localModel(settings);
  const { loadModel } = await import("../api/load-model.js");
  const engine = await loadModel(path, {
    ...settings.engine,
    onProgress: (p) => {
      if (p.phase === "weights") process.stderr.write(`tiny-llm: loading ${p.path} (${(p.bytes / 1e6).toFixed(1)} MB of weights)\n`);
    },
  });
  try {
    if (settings.template.chatTemplate === undefined && !engine.tokenizer.config.chat_template) {
      throw new UsageError(
        `${settings.model} has no chat template (its tokenizer_config.json has none): give one with --chat-template FILE`,
      );
    }
    try {
      // The template, its kwargs and any --chat-template are tried once before the first message.
      engine.applyChatTemplate([{ role: "user", content: "hi" }], settings.template);
    } catch (err) {
      throw new UsageError((err as Error).message);
    }
    const { info } = engine;
    process.stderr.write(
      `tiny-llm: chatting with ${settings.model} | ${info.backend} backend (${info.isa}, ${info.threads} thread(s)) | ` +
        `context ${info.config.maxPositionEmbeddings} tokens\n`,
    );
    await repl(engine, settings);
  } finally {
    await engine.close();
  }
}

async function repl(engine: Engine, settings: ChatSettings): Promise<void> {
  const terminal = process.stdin.isTTY === true && process.stdout.isTTY === true;
  const rl = createInterface({ input: process.stdin, output: process.stdout, prompt: "> ", terminal });
  const prompt = new ChatPrompt(new ChatSession(engine, { ...settings.template, system: settings.system }), settings.reply, rl);
  // A terminal's Ctrl-C reaches readline as a key; from a pipe it is the process's signal.
  const onSigint = (): void => prompt.interrupt();
  rl.on("SIGINT", onSigint);
  if (!terminal) process.on("SIGINT", onSigint);
  // Ctrl-D during a reply leaves at once; the end of piped input only means no more lines.
  if (terminal) rl.on("close", () => prompt.stopReply());
  process.stdout.write("Type a message; /help lists the commands. Ctrl-C stops a reply, Ctrl-D exits.\n");
  let open = true;
  rl.on("close", () => (open = false));
  rl.prompt();
  try {
    for await (const line of rl) {
      await prompt.handle(line);
      if (open) rl.prompt();
    }
  } finally {
    process.off("SIGINT", onSigint);
    process.stdout.write("\n");
  }
}
