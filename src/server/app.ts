/**
 * The HTTP server of `tiny-llm serve`: a Fastify instance with the OpenAI routes, /health,
 * /metrics, /tokenize and /detokenize, the chat page at /, an API-key check, body limits,
 * JSON-schema validation (no type coercion: a wrong type is a 400 that names the field) and one
 * error handler that answers every failure in OpenAI's error shape. It listens before the model is loaded: until
 * ServerState.setModel, /health answers 503 {"status":"loading"} and the model routes 503.
 */
import { timingSafeEqual } from "node:crypto";
import Fastify, { type FastifyInstance } from "fastify";
import { registerChatCompletions } from "./chat-completions.js";
import { registerChatPage } from "./chat-page.js";
import { registerCompletions } from "./completions.js";
import { notFound, toApiError, unauthorized } from "./errors.js";
import { ServerState } from "./serving.js";
import { registerTokenize } from "./tokenize.js";

/** 4 MiB: far more than any prompt that fits a context, far less than would hurt. */
export const DEFAULT_BODY_LIMIT = 4 * 1024 * 1024;

export interface AppOptions {
  /** Requests must send `Authorization: Bearer <apiKey>` (all routes but /health and the chat page's files). */
  apiKey?: string;
  /** Largest request body, bytes. */
  bodyLimit?: number;
  /** Called with errors that are the server's fault (500s), for the log; clients never see them. */
  onServerError?: (err: unknown) => void;
}

declare module "fastify" {
  interface FastifyContextConfig {
    /** Answers without the API key. */
    public?: boolean;
  }
}

function sameKey(given: string, expected: string): boolean {
  const a = Buffer.from(given);
  const b = Buffer.from(expected);
  return a.length === b.length && timingSafeEqual(a, b);
}

export function buildApp(state: ServerState, opts: AppOptions = {}): FastifyInstance {
  const app = Fastify({
    logger: false,
    bodyLimit: opts.bodyLimit ?? DEFAULT_BODY_LIMIT,
    // While draining, the routes answer 503 themselves, in OpenAI's error shape.
    return503OnClosing: false,
    ajv: { customOptions: { coerceTypes: false, removeAdditional: false, useDefaults: false, allErrors: false, allowUnionTypes: true } },
  });

  app.addHook("onRequest", async (request) => {
    if (opts.apiKey === undefined || request.is404 || request.routeOptions.config.public) return;
    const header = request.headers.authorization ?? "";
    const match = /^Bearer\s+(.+)$/i.exec(header);
    if (!match) throw unauthorized("this server needs an API key: send Authorization: Bearer <key>");
    if (!sameKey(match[1].trim(), opts.apiKey)) throw unauthorized("the API key is not valid");
  });

  // Bodies are JSON only: anything else is a 415.
  app.removeContentTypeParser("text/plain");

  // While draining, kept-alive connections are closed after their response.
  app.addHook("onSend", async (_request, reply) => {
    if (state.isDraining) void reply.header("connection", "close");
  });

  app.setErrorHandler((err, _request, reply) => {
    const api = toApiError(err);
    if (api.status >= 500 && api.type === "server_error") opts.onServerError?.(err);
    if (reply.sent || reply.raw.headersSent) return;
    void reply.status(api.status).send(api.toJSON());
  });

  app.setNotFoundHandler((request, reply) => {
    void reply.status(404).send(notFound(`no route for ${request.method} ${request.url.split("?")[0]}`).toJSON());
  });

  app.get("/health", { config: { public: true } }, async (_request, reply) => {
    if (state.isDraining) return reply.status(503).send({ status: "shutting_down" });
    if (!state.model) return reply.status(503).send({ status: "loading" });
    const failed = state.model.engine.failed;
    if (failed) return reply.status(503).send({ status: "failed", message: failed.message });
    return { status: "ok" };
  });

  app.get("/metrics", async (_request, reply) => {
    if (state.model) state.metrics.setStats(state.model.engine.stats());
    return reply.type(state.metrics.contentType).send(await state.metrics.text());
  });

  app.get("/v1/models", async () => {
    const model = state.requireModel();
    return {
      object: "list",
      data: [
        {
          id: model.name,
          object: "model",
          created: state.created,
          owned_by: "tiny-llm",
          root: model.root,
          parent: null,
          max_model_len: model.limits.contextLength,
        },
      ],
    };
  });

  registerChatPage(app);
  registerChatCompletions(app, state);
  registerCompletions(app, state);
  registerTokenize(app, state);
  return app;
}

export { ServerState };
