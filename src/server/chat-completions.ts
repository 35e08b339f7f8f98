/**
 * POST /v1/chat/completions: the messages rendered with the model's own chat template, one
 * response or a stream of chunks (the role first, then the content, finish_reason on each
 * choice's last chunk, a usage chunk with stream_options.include_usage, then [DONE]).
 */
import { randomUUID } from "node:crypto";
import type { FastifyInstance, FastifyReply } from "fastify";
import { renderChatTemplate, type ChatMessage } from "../tokenizer/chat-template.js";
import { invalidRequest, serverError, toApiError } from "./errors.js";
import type { ReleasedToken } from "../api/choice-run.js";
import { chatCompletionSchema, type ChatCompletionBody, type ChatMessageBody } from "./openai-schemas.js";
import { choiceSettings } from "./request-params.js";
import { admit, checkModelName, failure, finishReason, launch, usage, type LoadedModel, type ServerState } from "./serving.js";
import { SseStream } from "./sse.js";

/** Message content as plain text: a string, or the text of its text parts. */
function messageText(message: ChatMessageBody, index: number): string {
  const content = message.content;
  if (content === null || content === undefined) return "";
  if (typeof content === "string") return content;
  return content
    .map((part, p) => {
      if (part.type !== "text") {
        throw invalidRequest(
          `messages.${index}.content.${p}: only text parts are supported, got type "${part.type}"`,
          `messages.${index}.content`,
        );
      }
      if (typeof part.text !== "string") {
        throw invalidRequest(`messages.${index}.content.${p}: a text part needs a "text" string`, `messages.${index}.content`);
      }
      return part.text;
    })
    .join("");
}

/** The messages as the chat template's prompt ids. */
export function chatPromptIds(model: LoadedModel, messages: ChatMessageBody[], addGenerationPrompt = true): number[] {
  const { tokenizer, chatTemplate = {} } = model;
  const override = chatTemplate.chatTemplate;
  if (override === undefined && !tokenizer.config.chat_template) {
    throw invalidRequest(
      "messages need a chat template and this model has none (its tokenizer_config.json has no chat_template): " +
        "start the server with --chat-template FILE, or use /v1/completions with a plain prompt",
      "messages",
    );
  }
  const rendered: ChatMessage[] = messages.map((m, i) => ({
    role: m.role === "developer" ? "system" : m.role,
    content: messageText(m, i),
  }));
  let text: string;
  try {
    text = renderChatTemplate(tokenizer.config, {
      messages: rendered,
      addGenerationPrompt,
      kwargs: chatTemplate.chatTemplateKwargs,
      template: typeof override === "string" ? { source: override, origin: "the chat template given" } : override,
    });
  } catch (err) {
    throw invalidRequest((err as Error).message, "messages");
  }
  // The template writes any BOS itself.
  return tokenizer.encode(text, { addSpecialTokens: false });
}

interface ChatLogprob {
  token: string;
  logprob: number;
  bytes: number[];
  top_logprobs: { token: string; logprob: number; bytes: number[] }[];
}

function chatLogprobs(model: LoadedModel, tokens: ReleasedToken[]): ChatLogprob[] {
  const text = model.tokenText;
  return tokens.map((t) => ({
    token: text.piece(t.id),
    logprob: t.logprob ?? 0,
    bytes: text.bytes(t.id),
    top_logprobs: (t.top ?? []).map((alt) => ({ token: text.piece(alt.id), logprob: alt.logprob, bytes: text.bytes(alt.id) })),
  }));
}

export function registerChatCompletions(app: FastifyInstance, state: ServerState): void {
  app.post<{ Body: ChatCompletionBody }>("/v1/chat/completions", { schema: { body: chatCompletionSchema } }, async (request, reply) => {
    const body = request.body;
    const model = state.requireModel();
    checkModelName(model, body.model);
    if (body.top_logprobs !== undefined && body.top_logprobs !== null && body.logprobs !== true) {
      throw invalidRequest("top_logprobs needs logprobs: true", "top_logprobs");
    }
    const promptIds = chatPromptIds(model, body.messages);
    const maxTokensField =
      body.max_completion_tokens !== undefined && body.max_completion_tokens !== null ? "max_completion_tokens" : "max_tokens";
    const settings = choiceSettings(body, promptIds, model.limits, {
      promptField: "messages",
      maxTokens: body.max_completion_tokens ?? body.max_tokens,
      maxTokensField,
      logprobs: body.logprobs === true ? (body.top_logprobs ?? 0) : undefined,
    });
    const prompts = [{ settings }];
    admit(state, model, prompts, maxTokensField);

    const id = `chatcmpl-${randomUUID().replaceAll("-", "")}`;
    const base = { id, created: Math.floor(Date.now() / 1000), model: model.name };
    const wantLogprobs = settings.params.logprobs !== undefined;

    if (!settings.stream) {
      const group = launch(state, model, prompts, id, reply);
      const results = await group.results();
      const error = failure(state, results);
      if (error) throw error;
      return {
        ...base,
        object: "chat.completion",
        choices: results.map((r, index) => ({
          index,
          message: { role: "assistant", content: r.text, refusal: null },
          logprobs: wantLogprobs ? { content: chatLogprobs(model, r.tokens), refusal: null } : null,
          finish_reason: finishReason(r),
        })),
        usage: usage(results, settings.n),
      };
    }
    return streamChat(state, model, prompts, reply, base, wantLogprobs, settings.includeUsage);
  });
}

function streamChat(
  state: ServerState,
  model: LoadedModel,
  prompts: Parameters<typeof launch>[2],
  reply: FastifyReply,
  base: { id: string; created: number; model: string },
  wantLogprobs: boolean,
  includeUsage: boolean,
): void {
  const sse = new SseStream(reply);
  const extra = includeUsage ? { usage: null } : {};
  const chunk = (index: number, delta: object, logprobs: object | null, finish: string | null) => ({
    ...base,
    object: "chat.completion.chunk",
    choices: [{ index, delta, logprobs, finish_reason: finish }],
    ...extra,
  });
  const n = prompts[0].settings.n;
  for (let index = 0; index < n; index++) sse.send(chunk(index, { role: "assistant", content: "" }, null, null));
  let group: ReturnType<typeof launch> | undefined;
  try {
    group = launch(state, model, prompts, base.id, reply, (index) => ({
      onDelta: (delta) => {
        const logprobs = wantLogprobs ? { content: chatLogprobs(model, delta.tokens), refusal: null } : null;
        if (delta.text.length > 0 || logprobs) sse.send(chunk(index, { content: delta.text }, logprobs, null));
      },
    }));
  } catch (err) {
    sse.fail(toApiError(err));
    return;
  }
  const running = group;
  running.runs.forEach((run, index) =>
    run.done.then((result) => {
      if (result.finish === "stop" || result.finish === "length") {
        sse.send(chunk(index, {}, null, finishReason(result)));
        return;
      }
      // One choice failed or was cancelled: the stream ends with its error, and the others stop.
      running.abort("another choice of this request failed");
      sse.fail(failure(state, [result]) ?? serverError("the request failed"));
    }),
  );
  void running.results().then((results) => {
    if (!sse.open) return;
    if (includeUsage) sse.send({ ...base, object: "chat.completion.chunk", choices: [], usage: usage(results, n) });
    sse.done();
  });
}
