/**
 * `tiny-llm generate`: load a checkpoint, build the prompt, stream the generated text to stdout
 * (or, with --json, print one object at the end). stdout carries only the text; what ran
 * (sampling, seed, backend, why generation stopped) goes to stderr with --verbose, and a sample
 * drawn without --seed always names its seed so it can be repeated.
 */
import { existsSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { checkPromptFits } from "../generation/generate.js";
import { Sampler } from "../generation/sampler.js";
import { loadCheckpoint } from "../generation/load-checkpoint.js";
import { MAX_STOP_STRINGS } from "../generation/stop-strings.js";
import { DEFAULT_SAMPLING, type RequestEvent, type RequestParams, type SamplingParams } from "../engine/api.js";
import { createEngine } from "../engine/create-engine.js";
import type { Engine } from "../engine/engine.js";
import { DEFAULT_MODEL } from "../hub/model-spec.js";
import { ChoiceRun, type ChoiceResult } from "../api/choice-run.js";
import { TokenText } from "../server/token-text.js";
import type { ChatMessage } from "../tokenizer/chat-template.js";
import type { Tokenizer } from "../tokenizer/tokenizer.js";
import { UsageError } from "./errors.js";
import { notice, outputClosed, status, writeOut } from "./output.js";
import { peakRssBytes } from "./peak-rss.js";
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
  type OptionValues,
} from "./options.js";

export const GENERATE_HELP = `Usage: tiny-llm generate [-m MODEL] -p PROMPT [options]

Generates text from a prompt and streams it to stdout. Notices, and with --verbose what ran, go
to stderr; a sample drawn without --seed prints its seed there, so it can be repeated.

Options:
${modelHelp(DEFAULT_MODEL)}
  -p, --prompt TEXT   the prompt; "-" reads it from stdin; "" starts from the BOS token alone
  --prompt-file FILE  read the prompt from FILE (from stdin and files, one final newline is dropped)
  --chat              wrap the prompt in the model's chat template as a user message
  --system TEXT       system message (with --chat)
  --show-prompt       print the prompt as the model sees it and its token ids to stderr
  -n, --max-tokens N  most tokens to generate (default 256; generation also stops when the context is full)

Sampling (values not given come from the model's generation_config.json, else greedy):
  --temperature T     0 is greedy
  --top-k K           sample from the K most likely tokens (0 = off)
  --top-p P           sample from the smallest set of tokens whose probability reaches P (1 = off)
  --min-p P           drop tokens less than P times as likely as the most likely one (0 = off)
  --seed S            0 to 4294967295; the same seed gives the same text
  --repetition-penalty R
                      above 1 makes tokens of the prompt and output so far less likely (1 = off)
  --presence-penalty P
                      -2 to 2, taken once from the logit of every token generated so far
  --frequency-penalty P
                      -2 to 2, taken from a token's logit once per time it was generated
  --stop TEXT         stop before TEXT, which is not printed (up to ${MAX_STOP_STRINGS} --stop options)
  --ignore-eos        keep going past end-of-sequence tokens

Output:
  --json              print one JSON object instead of streaming: text, token ids, finish reason
                      (stop_token, stop_string, length, context), seed, sampling, timings
  --logprobs N        with --json: each token's log-probability and its N (0 to 20) likeliest alternatives
  --verbose           on stderr: model, backend, instruction set, sampling and seed before; why
                      generation stopped, token counts, speed and peak memory after

Backend:
${backendHelp()}
  -h, --help          show this help`;

const OPTIONS = {
  ...MODEL_OPTION,
  ...HUB_OPTIONS,
  prompt: { type: "string", short: "p" },
  "prompt-file": { type: "string" },
  chat: { type: "boolean", default: false },
  system: { type: "string" },
  "show-prompt": { type: "boolean", default: false },
  "max-tokens": { type: "string", short: "n" },
  temperature: { type: "string" },
  "top-k": { type: "string" },
  "top-p": { type: "string" },
  "min-p": { type: "string" },
  seed: { type: "string" },
  "repetition-penalty": { type: "string" },
  "presence-penalty": { type: "string" },
  "frequency-penalty": { type: "string" },
  stop: { type: "string", multiple: true },
  "ignore-eos": { type: "boolean", default: false },
  json: { type: "boolean", default: false },
  logprobs: { type: "string" },
  verbose: { type: "boolean", default: false },
  ...BACKEND_OPTIONS,
} as const;

type Values = OptionValues<typeof OPTIONS>;

/** The most --logprobs alternatives, as OpenAI's top_logprobs. */
const MAX_LOGPROBS = 20;
const MAX_SEED = 2 ** 32 - 1;

/** Why generation ended: a stop token, a --stop string, --max-tokens, or the model's context. */
export type GenerateFinish = "stop_token" | "stop_string" | "length" | "context";

/** Sampling values as the command line gives them; undefined where it does not. */
function samplingFlags(values: Values): Partial<SamplingParams> {
  const topP = parseNumber("top-p", values["top-p"]);
  if (topP !== undefined && !(topP > 0 && topP <= 1)) throw new UsageError(`--top-p must be in (0, 1], got ${topP}`);
  const repetitionPenalty = parseNumber("repetition-penalty", values["repetition-penalty"]);
  if (repetitionPenalty !== undefined && !(repetitionPenalty > 0)) {
    throw new UsageError(`--repetition-penalty must be more than 0 (1 is off), got ${repetitionPenalty}`);
  }
  const flags: Partial<SamplingParams> = {
    temperature: parseNumber("temperature", values.temperature, 0),
    topK: parseWholeNumber("top-k", values["top-k"], 0),
    topP,
    minP: parseNumber("min-p", values["min-p"], 0, 1),
    seed: parseSeed(values.seed),
    repetitionPenalty,
    presencePenalty: parseNumber("presence-penalty", values["presence-penalty"], -2, 2),
    frequencyPenalty: parseNumber("frequency-penalty", values["frequency-penalty"], -2, 2),
  };
  return defined(flags);
}

function parseSeed(value: string | undefined): number | undefined {
  const seed = parseWholeNumber("seed", value, -Infinity);
  if (seed !== undefined && !(seed >= 0 && seed <= MAX_SEED)) {
    throw new UsageError(`--seed must be 0 to ${MAX_SEED}, got ${seed} (without --seed a seed is drawn, and printed)`);
  }
  return seed;
}

function defined<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}

/** Text with one final newline (as `echo` and editors end a file) removed. */
function withoutFinalNewline(text: string): string {
  return text.replace(/\r?\n$/, "");
}

async function readStdin(): Promise<string> {
  if (process.stdin.isTTY) status.show("reading the prompt from the terminal: end it with Ctrl-D");
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
  status.clear();
  return Buffer.concat(chunks).toString("utf8");
}

function readPromptFile(file: string): string {
  if (!existsSync(file)) throw new UsageError(`--prompt-file ${file} does not exist`);
  if (statSync(file).isDirectory()) throw new UsageError(`--prompt-file ${file} is a folder; give a text file`);
  try {
    return readFileSync(file, "utf8");
  } catch (err) {
    throw new UsageError(`cannot read --prompt-file ${file}: ${(err as Error).message}`);
  }
}

async function readPrompt(values: Values): Promise<string> {
  const file = values["prompt-file"];
  if (file !== undefined && values.prompt !== undefined) throw new UsageError("give --prompt or --prompt-file, not both");
  if (file !== undefined) return withoutFinalNewline(readPromptFile(file));
  if (values.prompt === undefined) {
    throw new UsageError('--prompt TEXT is required (--prompt - reads stdin, --prompt "" starts from BOS; or --prompt-file FILE)');
  }
  return values.prompt === "-" ? withoutFinalNewline(await readStdin()) : values.prompt;
}

/** The stop strings, checked. */
function stopStrings(values: Values): string[] {
  const stops = values.stop ?? [];
  if (stops.length > MAX_STOP_STRINGS) throw new UsageError(`at most ${MAX_STOP_STRINGS} --stop strings, got ${stops.length}`);
  if (stops.some((s) => s === "")) throw new UsageError("--stop must not be empty");
  return stops;
}

/** The prompt's text as the model sees it (rendered with the chat template for --chat) and its ids. */
async function renderPrompt(tokenizer: Tokenizer, prompt: string, values: Values): Promise<{ text: string; ids: number[] }> {
  if (!values.chat) return { text: prompt, ids: tokenizer.encode(prompt) };
  const messages: ChatMessage[] = [];
  if (values.system !== undefined) messages.push({ role: "system", content: values.system });
  messages.push({ role: "user", content: prompt });
  // The template engine is loaded only for --chat: a plain prompt does not carry it.
  const { renderChatTemplate } = await import("../tokenizer/chat-template.js");
  const text = renderChatTemplate(tokenizer.config, { messages, addGenerationPrompt: true });
  // The template writes any BOS itself, so encoding must not add another.
  return { text, ids: tokenizer.encode(text, { addSpecialTokens: false }) };
}

interface Generated {
  result: ChoiceResult;
  ttftMs: number;
  decodeTokensPerSecond: number;
}

/**
 * Runs one request on `engine`, step by step in this thread, with ChoiceRun turning its events
 * into text (stop strings, log-probabilities) as the server does; `onText` gets the text as it
 * becomes final. Undefined when stdout's reader went away (`| head`), which ends it at once.
 */
function runRequest(
  engine: Engine,
  tokenizer: Tokenizer,
  request: RequestParams,
  stops: readonly string[],
  onText: (text: string, tokens: number) => void,
): Generated | undefined {
  const listeners = new Map<string, (event: RequestEvent) => void>();
  const local = {
    submit: (id: string, params: RequestParams, listener: (event: RequestEvent) => void) => {
      listeners.set(id, listener);
      engine.add(id, params);
    },
    abort: (id: string) => engine.abort(id),
  };
  let ttftMs = 0;
  let secondsPerToken: number | undefined;
  let result: ChoiceResult | undefined;
  const run = new ChoiceRun(local, tokenizer, "generate", request, stops, {
    onDelta: ({ text, tokens }) => onText(text, tokens.length),
    onFirstToken: (seconds) => (ttftMs = seconds * 1000),
    onFinish: (finished, perToken) => {
      result = finished;
      secondsPerToken = perToken;
    },
  });
  while (!run.finished && !outputClosed()) for (const event of engine.step().events) listeners.get(event.id)?.(event);
  if (!result) return undefined;
  if (result.finish === "error" || result.finish === "abort") throw new Error(result.message ?? "generation failed");
  return { result, ttftMs, decodeTokensPerSecond: secondsPerToken === undefined ? 0 : 1 / secondsPerToken };
}

export async function runGenerate(argv: string[]): Promise<void> {
  const values = parseOptions("generate", argv, OPTIONS, GENERATE_HELP);
  if (!values) return;
  if (values.system !== undefined && !values.chat) throw new UsageError("--system needs --chat");
  const maxTokens = parseWholeNumber("max-tokens", values["max-tokens"], 0) ?? 256;
  const flags = samplingFlags(values);
  const stops = stopStrings(values);
  const logprobs = parseWholeNumber("logprobs", values.logprobs, 0, MAX_LOGPROBS);
  if (logprobs !== undefined && !values.json)
    throw new UsageError("--logprobs needs --json (the log-probabilities are part of its object)");
  const backendOptions = parseBackendOptions(values);
  const promptGiven = await readPrompt(values);
  const name = values.model ?? DEFAULT_MODEL;
  const path = await localModel(values);

  const started = performance.now();
  status.show(`loading ${name}…`);
  const { model, tokenizer, eosTokenIds, sampling } = loadCheckpoint(path);
  status.clear();
  const loadMs = performance.now() - started;

  const prompt = await renderPrompt(tokenizer, promptGiven, values);
  if (values["show-prompt"] && !values.json) {
    const text = prompt.text.endsWith("\n") ? prompt.text : prompt.text + "\n";
    notice(`prompt, ${prompt.ids.length} tokens:\n${text}tiny-llm: prompt ids: ${prompt.ids.join(" ")}`);
  }
  checkPromptFits(model, prompt.ids.length);

  // Values given on the command line win over generation_config.json's, which win over the defaults.
  const fileValues = defined(sampling);
  const seedDrawn = flags.seed === undefined;
  const params: SamplingParams = { ...DEFAULT_SAMPLING, ...fileValues, ...flags, seed: flags.seed ?? Math.floor(Math.random() * 2 ** 32) };
  let greedy: boolean;
  try {
    greedy = new Sampler(params).greedy;
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
  const configFile = existsSync(join(path, "generation_config.json"));
  const fromFile = configFile ? Object.keys(fileValues).filter((key) => !(key in flags)) : [];

  // One request on the serving engine, with a KV pool just large enough for it.
  const context = model.config.maxPositionEmbeddings;
  const budget = Math.min(maxTokens, context - prompt.ids.length);
  const { engine, backend } = createEngine(model, { ...backendOptions, kvCacheSize: `${prompt.ids.length + budget + 16}t` });
  if (backend.notice) notice(backend.notice);
  if (values.verbose) {
    notice(
      `${name} (${model.config.modelType}, context ${context}) | ${backend.name} backend (${backend.isa}, ` +
        `${backend.threads} thread(s)) | loaded in ${loadMs.toFixed(0)} ms`,
    );
    const seed = greedy ? "" : ` | seed ${params.seed}${seedDrawn ? " (drawn)" : ""}`;
    notice(`sampling: ${describeSampling(params, greedy, fromFile)}${seed}`);
  }

  const stopIds = values["ignore-eos"] ? [] : eosTokenIds;
  let tokens = 0;
  const generated = runRequest(
    engine,
    tokenizer,
    { promptIds: prompt.ids, maxTokens: budget, stopIds, sampling: params, logprobs },
    stops,
    (text, n) => {
      tokens += n;
      if (values.json) status.show(`generating: ${tokens} tokens`, false);
      else writeOut(text);
    },
  );
  status.clear();
  if (!generated) return;
  const { result, ttftMs, decodeTokensPerSecond } = generated;
  const finish = finishReason(result, maxTokens);

  if (values.json) {
    const out: Record<string, unknown> = {
      model: name,
      text: result.text,
      finishReason: finish,
      ...(result.stopString === undefined ? {} : { stopString: result.stopString }),
      promptTokens: prompt.ids.length,
      completionTokens: result.completionTokens,
      tokenIds: result.tokens.map((t) => t.id),
      seed: params.seed,
      sampling: { ...params, seed: undefined },
      backend: backend.name,
      isa: backend.isa,
      threads: backend.threads,
      loadMs,
      ttftMs,
      decodeTokensPerSecond,
      peakRssBytes: peakRssBytes(),
    };
    if (values["show-prompt"]) Object.assign(out, { prompt: prompt.text, promptIds: prompt.ids });
    if (logprobs !== undefined) out.logprobs = tokenLogprobs(result, tokenizer);
    writeOut(JSON.stringify(out) + "\n");
  } else {
    writeOut("\n");
  }
  if (values.verbose) {
    notice(
      `stopped: ${describeFinish(finish, result, maxTokens, context)} | prompt ${prompt.ids.length} tokens, first token after ` +
        `${ttftMs.toFixed(0)} ms | ${result.completionTokens} tokens generated, decode ${decodeTokensPerSecond.toFixed(1)} tokens/s | ` +
        `peak RSS ${(peakRssBytes() / 1e6).toFixed(0)} MB`,
    );
  } else if (seedDrawn && !greedy && !values.json && result.completionTokens > 0) {
    notice(`seed ${params.seed} (--seed ${params.seed} repeats this sample)`);
  }
}

/** Each generated token's log-probability and its likeliest alternatives, with their text. */
function tokenLogprobs(result: ChoiceResult, tokenizer: Tokenizer): unknown[] {
  const pieces = new TokenText(tokenizer);
  return result.tokens.map((t) => ({
    id: t.id,
    text: t.text,
    logprob: t.logprob,
    top: (t.top ?? []).map((alt) => ({ id: alt.id, text: pieces.piece(alt.id), logprob: alt.logprob })),
  }));
}

function finishReason(result: ChoiceResult, maxTokens: number): GenerateFinish {
  if (result.finish === "stop") return result.stopString === undefined ? "stop_token" : "stop_string";
  // The engine ends at the request's budget, which the context may have cut below --max-tokens.
  return result.completionTokens >= maxTokens ? "length" : "context";
}

function describeFinish(finish: GenerateFinish, result: ChoiceResult, maxTokens: number, context: number): string {
  switch (finish) {
    case "stop_token":
      return "end-of-sequence token";
    case "stop_string":
      return `stop string ${JSON.stringify(result.stopString)}`;
    case "length":
      return `--max-tokens ${maxTokens} reached`;
    case "context":
      return `the model's context of ${context} tokens is full`;
  }
}

function describeSampling(p: SamplingParams, greedy: boolean, fromFile: string[]): string {
  const parts = greedy ? ["greedy"] : [`temperature ${p.temperature}`];
  if (!greedy && p.topK !== 0) parts.push(`top-k ${p.topK}`);
  if (!greedy && p.topP !== 1) parts.push(`top-p ${p.topP}`);
  if (!greedy && p.minP !== 0) parts.push(`min-p ${p.minP}`);
  if (p.repetitionPenalty !== 1) parts.push(`repetition penalty ${p.repetitionPenalty}`);
  if (p.presencePenalty !== 0) parts.push(`presence penalty ${p.presencePenalty}`);
  if (p.frequencyPenalty !== 0) parts.push(`frequency penalty ${p.frequencyPenalty}`);
  const names: Record<string, string> = {
    temperature: "temperature",
    topK: "top-k",
    topP: "top-p",
    minP: "min-p",
    repetitionPenalty: "repetition penalty",
  };
  const source = fromFile.length > 0 ? ` (${fromFile.map((key) => names[key] ?? key).join(", ")} from generation_config.json)` : "";
  return parts.join(", ") + source;
}
