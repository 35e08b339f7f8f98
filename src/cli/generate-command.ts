/**
 * `tiny-llm generate`: load a checkpoint, build the prompt, stream the generated text.
 */
import { parseArgs } from "node:util";
import { checkPromptFits } from "../generation/generate.js";
import { Sampler, type SamplerOptions } from "../generation/sampler.js";
import { loadCheckpoint } from "../generation/load-checkpoint.js";
import { DEFAULT_SAMPLING, type FinishReason } from "../engine/api.js";
import { createEngine } from "../engine/create-engine.js";
import type { ChatMessage } from "../tokenizer/chat-template.js";
import { StreamDecoder } from "../tokenizer/stream-decoder.js";
import { UsageError } from "./errors.js";
import { peakRssBytes } from "./peak-rss.js";
import { BACKEND_OPTIONS, BATCH_INVARIANT_HELP, checkModelExists, parseBackendOptions } from "./options.js";

export const GENERATE_HELP = `Usage: tiny-llm generate --model DIR --prompt TEXT [options]

Generates text from a prompt and streams it to stdout.

Options:
  --model DIR         Hugging Face checkpoint folder (config.json, *.safetensors, tokenizer files),
                      or a .gguf file (weights and tokenizer in one file)
  --prompt TEXT       the prompt; "" starts from the BOS token alone
  --chat              wrap the prompt in the model's chat template as a user message
  --system TEXT       system message (with --chat)
  --max-tokens N      most tokens to generate (default 256)
  --temperature T     0 is greedy; default from generation_config.json, else 0
  --top-k K           sample from the K most likely tokens (0 = off)
  --top-p P           sample from the smallest set of tokens whose probability reaches P
  --min-p P           drop tokens less than P times as likely as the most likely one
  --seed S            seed for sampling, for reproducible output
  --ignore-eos        keep going past end-of-sequence tokens
  --backend B         native (C++ kernels, the default where they built) or ts (the TypeScript reference)
  --threads N         threads for the native kernels (default: one per core)
  --isa I             pin the native kernels to amx, avx512, avx2 or scalar (default: the best here)
${BATCH_INVARIANT_HELP}
  --verbose           print token counts, speed and peak memory to stderr
  -h, --help          show this help

Sampling settings not given fall back to the model's generation_config.json.`;

function parseNumber(name: string, value: string | undefined, integer: boolean): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (value.trim() === "" || !Number.isFinite(n) || (integer && !Number.isInteger(n))) {
    throw new UsageError(`--${name} expects ${integer ? "a whole number" : "a number"}, got "${value}"`);
  }
  return n;
}

export async function runGenerate(argv: string[]): Promise<void> {
  const { values } = parseArgs({
    args: argv,
    options: {
      model: { type: "string" },
      prompt: { type: "string" },
      chat: { type: "boolean", default: false },
      system: { type: "string" },
      "max-tokens": { type: "string" },
      temperature: { type: "string" },
      "top-k": { type: "string" },
      "top-p": { type: "string" },
      "min-p": { type: "string" },
      seed: { type: "string" },
      "ignore-eos": { type: "boolean", default: false },
      ...BACKEND_OPTIONS,
      verbose: { type: "boolean", default: false },
      help: { type: "boolean", short: "h", default: false },
    },
    strict: true,
    allowPositionals: false,
  });
  if (values.help) {
    process.stdout.write(GENERATE_HELP + "\n");
    return;
  }
  if (!values.model)
    throw new UsageError("--model DIR is required (a checkpoint folder with config.json, weights and tokenizer files, or a .gguf file)");
  if (values.prompt === undefined) throw new UsageError('--prompt TEXT is required (use --prompt "" to start from BOS)');
  if (values.system !== undefined && !values.chat) throw new UsageError("--system needs --chat");
  const maxTokens = parseNumber("max-tokens", values["max-tokens"], true) ?? 256;
  if (maxTokens < 0) throw new UsageError("--max-tokens must be >= 0");

  const backendOptions = parseBackendOptions(values);
  checkModelExists(values.model);
  const started = performance.now();
  const { model, tokenizer, eosTokenIds, sampling } = loadCheckpoint(values.model);
  const loaded = performance.now();

  let promptIds: number[];
  if (values.chat) {
    const messages: ChatMessage[] = [];
    if (values.system !== undefined) messages.push({ role: "system", content: values.system });
    messages.push({ role: "user", content: values.prompt });
    // The template writes any BOS itself, so encoding must not add another.
    // The template engine is loaded only for --chat: a plain prompt does not carry it.
    const { renderChatTemplate } = await import("../tokenizer/chat-template.js");
    const text = renderChatTemplate(tokenizer.config, { messages, addGenerationPrompt: true });
    promptIds = tokenizer.encode(text, { addSpecialTokens: false });
  } else {
    promptIds = tokenizer.encode(values.prompt);
  }
  checkPromptFits(model, promptIds.length);

  const flags: SamplerOptions = {
    temperature: parseNumber("temperature", values.temperature, false),
    topK: parseNumber("top-k", values["top-k"], true),
    topP: parseNumber("top-p", values["top-p"], false),
    minP: parseNumber("min-p", values["min-p"], false),
    seed: parseNumber("seed", values.seed, true),
  };
  const options = { ...sampling };
  for (const [key, value] of Object.entries(flags)) if (value !== undefined) Object.assign(options, { [key]: value });
  try {
    new Sampler(options);
  } catch (err) {
    throw new UsageError((err as Error).message);
  }

  // One request on the serving engine, with a KV pool just large enough for it.
  const context = model.config.maxPositionEmbeddings;
  const budget = Math.min(maxTokens, context - promptIds.length);
  const { engine, backend } = createEngine(model, { ...backendOptions, kvCacheSize: `${promptIds.length + budget + 16}t` });
  if (backend.notice) process.stderr.write(`tiny-llm: ${backend.notice}\n`);
  const stopIds = values["ignore-eos"] ? [] : eosTokenIds;
  engine.add("generate", { promptIds, maxTokens: budget, stopIds, sampling: { ...DEFAULT_SAMPLING, ...options } });
  const stream = new StreamDecoder(tokenizer, { skipSpecialTokens: true, context: promptIds });
  const submitted = performance.now();
  let firstToken = 0;
  let count = 0;
  let finish: FinishReason | undefined;
  while (!finish) {
    for (const event of engine.step().events) {
      for (const token of event.tokens) {
        if (count === 0) firstToken = performance.now();
        count++;
        process.stdout.write(stream.push(token.id));
      }
      if (event.finish === "error") throw new Error(event.message);
      finish = event.finish;
    }
  }
  process.stdout.write(stream.flush() + "\n");
  if (values.verbose) {
    const end = performance.now();
    const decodeRate = count > 1 ? ((count - 1) / (end - firstToken)) * 1000 : 0;
    process.stderr.write(
      `${backend.name} backend, ${backend.threads} thread(s) | load ${(loaded - started).toFixed(0)} ms | prompt ${promptIds.length} tokens, first token after ${(firstToken - submitted).toFixed(0)} ms | ` +
        `${count} tokens generated, decode ${decodeRate.toFixed(1)} tokens/s | peak RSS ${(peakRssBytes() / 1e6).toFixed(0)} MB\n`,
    );
  }
}
