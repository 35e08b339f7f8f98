/**
 * What the routes share: the loaded model (absent while it loads), the requests in flight (for
 * the queue limit and for shutdown), and starting a request's choices in the engine after every
 * check that can still turn it away with a status code.
 */
import { basename, resolve } from "node:path";
import type { FastifyReply } from "fastify";
import { ChoiceRun, type ChoiceObserver, type ChoiceResult } from "../api/choice-run.js";
import type { ChatTemplateSettings } from "../api/engine.js";
import { RequestRejectedError, type RequestParams } from "../engine/api.js";
import type { AsyncEngine } from "../engine/async-engine.js";
import type { Tokenizer } from "../tokenizer/tokenizer.js";
import { invalidRequest, notFound, queueFull, serverError, unavailable, type ApiError } from "./errors.js";
import { ServerMetrics } from "./metrics.js";
import { paramsForChoice, type ChoiceSettings, type ModelLimits } from "./request-params.js";
import { onClientGone } from "./sse.js";
import { TokenText } from "./token-text.js";
import type { SamplingDefaults } from "../generation/generation-config.js";

export const DEFAULT_MAX_QUEUE = 256;

/** What the server needs of the engine (AsyncEngine). */
export type ServingEngine = Pick<AsyncEngine, "info" | "check" | "submit" | "abort" | "inFlight" | "stats" | "onStep" | "close" | "failed">;

/** A loaded model and what serving it needs. */
export interface ServedModel {
  engine: ServingEngine;
  tokenizer: Tokenizer;
  eosTokenIds: readonly number[];
  /** generation_config.json's sampling defaults. */
  sampling: SamplingDefaults;
  /** The id /v1/models lists (the --model argument as given). */
  name: string;
  /** A template to use instead of the model's, and extra variables for it (serve's --chat-template options). */
  chatTemplate?: ChatTemplateSettings;
}

export interface LoadedModel extends ServedModel {
  /** The model's folder or file, absolute. */
  root: string;
  limits: ModelLimits;
  tokenText: TokenText;
}

/** A request whose choices run in the engine. */
export interface ActiveRequest {
  /** Aborts every choice still running; each ends with finish "abort" and this message. */
  abort(message: string): void;
}

export class ServerState {
  readonly metrics = new ServerMetrics();
  readonly created = Math.floor(Date.now() / 1000);
  /** Requests whose response is not complete. */
  readonly active = new Set<ActiveRequest>();
  private loaded: LoadedModel | undefined;
  private draining = false;
  private idle: (() => void)[] = [];

  constructor(readonly maxQueue: number = DEFAULT_MAX_QUEUE) {}

  get model(): LoadedModel | undefined {
    return this.loaded;
  }

  /** Starts serving `model`: /health turns 200 and the generation routes answer. */
  setModel(model: ServedModel): void {
    const { engine } = model;
    const config = engine.info.config;
    this.loaded = {
      ...model,
      root: resolve(model.name),
      limits: {
        contextLength: config.maxPositionEmbeddings,
        poolTokens: engine.info.kv.blocks * engine.info.kv.blockSize,
        vocabSize: config.vocabSize,
        eosTokenIds: model.eosTokenIds,
        sampling: model.sampling,
      },
      tokenText: new TokenText(model.tokenizer),
    };
    this.metrics.setStats(engine.stats());
    engine.onStep((trace, stats) => this.metrics.observeStep(trace, stats));
  }

  /** Stops taking generation requests (they get 503 from now on). */
  drain(): void {
    this.draining = true;
  }

  get isDraining(): boolean {
    return this.draining;
  }

  /** The model, or a 503 while it loads or after shutdown began. */
  requireModel(): LoadedModel {
    if (this.draining) throw unavailable("the server is shutting down");
    if (!this.loaded) throw unavailable("the model is still loading; try again when GET /health answers 200");
    return this.loaded;
  }

  /** Resolves once no request is active. */
  whenIdle(): Promise<void> {
    if (this.active.size === 0) return Promise.resolve();
    return new Promise((resolve) => this.idle.push(resolve));
  }

  track(request: ActiveRequest, reply: FastifyReply): void {
    this.active.add(request);
    reply.raw.once("close", () => {
      this.active.delete(request);
      if (this.active.size === 0) for (const resolve of this.idle.splice(0)) resolve();
    });
  }
}

/** Throws a 404 unless `requested` (when given) names the served model. */
export function checkModelName(model: LoadedModel, requested: string | null | undefined): void {
  if (requested === undefined || requested === null || requested === "") return;
  if (requested === model.name || requested === model.root || requested === basename(model.root)) return;
  throw notFound(`the model "${requested}" does not exist: this server serves "${model.name}"`, "model_not_found");
}

/** One prompt of a request and its settings; it runs settings.n choices. */
export interface PromptRun {
  settings: ChoiceSettings;
}

/** The choices of one request, indexed prompt-major: prompt p's choice j is index p·n + j. */
export class ChoiceGroup implements ActiveRequest {
  readonly runs: ChoiceRun[] = [];

  constructor(readonly n: number) {}

  abort(message: string): void {
    for (const run of this.runs) run.abort(message);
  }

  results(): Promise<ChoiceResult[]> {
    return Promise.all(this.runs.map((run) => run.done));
  }
}

/**
 * Everything that can still turn a request away before its response begins: an engine that has
 * failed, the queue limit, then whether the engine can ever serve each prompt (context and KV pool).
 */
export function admit(state: ServerState, model: LoadedModel, prompts: PromptRun[], maxTokensField: string): void {
  const { engine } = model;
  const failed = engine.failed;
  if (failed) throw unavailable(`the engine failed and serves no more requests: ${failed.message}; restart the server`);
  const choices = prompts.reduce((sum, p) => sum + p.settings.n, 0);
  const limit = engine.info.maxNumSeqs + state.maxQueue;
  if (engine.inFlight + choices > limit) {
    throw queueFull(
      `the server is at capacity: ${engine.inFlight} requests in flight and ${choices} more would exceed ${limit} (max-num-seqs ${engine.info.maxNumSeqs} + max-queue ${state.maxQueue}); retry later`,
    );
  }
  for (const { settings } of prompts) {
    try {
      engine.check(settings.params);
    } catch (err) {
      if (err instanceof RequestRejectedError) throw invalidRequest(err.message, maxTokensField, "context_length_exceeded");
      throw err;
    }
  }
}

/**
 * Starts every choice of an admitted request. `observe(index)` gives each choice's observer;
 * metrics are recorded around it. A client that disconnects aborts the choices still running.
 */
export function launch(
  state: ServerState,
  model: LoadedModel,
  prompts: PromptRun[],
  idPrefix: string,
  reply: FastifyReply,
  observe: (index: number) => ChoiceObserver = () => ({}),
): ChoiceGroup {
  const n = prompts[0]?.settings.n ?? 1;
  const group = new ChoiceGroup(n);
  state.track(group, reply);
  onClientGone(reply, () => group.abort("the client disconnected"));
  const metrics = state.metrics;
  try {
    prompts.forEach(({ settings }, p) => {
      for (let j = 0; j < settings.n; j++) {
        const index = p * n + j;
        const own = observe(index);
        const params: RequestParams = paramsForChoice(settings.params, j);
        group.runs.push(
          new ChoiceRun(model.engine, model.tokenizer, `${idPrefix}-${index}`, params, settings.stops, {
            onDelta: own.onDelta,
            onFirstToken: (seconds) => {
              metrics.observeFirstToken(seconds);
              own.onFirstToken?.(seconds);
            },
            onFinish: (result, perToken) => {
              metrics.observeFinish(result.finish, perToken);
              own.onFinish?.(result, perToken);
            },
          }),
        );
      }
    });
  } catch (err) {
    // Choices already started would run on with no one to answer.
    group.abort("another choice of this request could not start");
    throw err;
  }
  return group;
}

export interface Usage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
  prompt_tokens_details: { cached_tokens: number };
}

/**
 * Token counts of a request: each prompt counts once however many choices it has (with the
 * prefix-cache hits of its first choice); every choice's generated tokens count.
 */
export function usage(results: ChoiceResult[], n: number): Usage {
  let prompt = 0;
  let cached = 0;
  let completion = 0;
  results.forEach((r, i) => {
    if (i % n === 0) {
      prompt += r.promptTokens;
      cached += r.cachedTokens;
    }
    completion += r.completionTokens;
  });
  return {
    prompt_tokens: prompt,
    completion_tokens: completion,
    total_tokens: prompt + completion,
    prompt_tokens_details: { cached_tokens: cached },
  };
}

/** OpenAI's finish_reason for a choice that ended normally. */
export function finishReason(result: ChoiceResult): "stop" | "length" {
  return result.finish === "length" ? "length" : "stop";
}

/** A choice that did not end normally, as the error to answer with. */
export function failure(state: ServerState, results: ChoiceResult[]): ApiError | undefined {
  const failed = results.find((r) => r.finish === "error") ?? results.find((r) => r.finish === "abort");
  if (!failed) return undefined;
  if (failed.finish === "error") return serverError(failed.message ?? "the engine failed on this request");
  return unavailable(failed.message ?? (state.isDraining ? "the server is shutting down" : "the request was cancelled"));
}
