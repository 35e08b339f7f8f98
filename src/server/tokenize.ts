/**
 * POST /tokenize and /detokenize in the shapes llama.cpp's server and vLLM both take:
 * `{content}` (llama.cpp; special tokens not added unless add_special) or `{prompt}` (vLLM;
 * added unless add_special_tokens is false) or `{messages}` (the chat template) → `{tokens}`;
 * `{tokens}` → `{content, prompt}` (the text under both names).
 */
import type { FastifyInstance } from "fastify";
import { invalidRequest } from "./errors.js";
import { chatPromptIds } from "./chat-completions.js";
import { detokenizeSchema, tokenizeSchema, type DetokenizeBody, type TokenizeBody } from "./openai-schemas.js";
import { checkModelName, type ServerState } from "./serving.js";

export function registerTokenize(app: FastifyInstance, state: ServerState): void {
  app.post<{ Body: TokenizeBody }>("/tokenize", { schema: { body: tokenizeSchema } }, async (request) => {
    const body = request.body;
    const model = state.requireModel();
    checkModelName(model, body.model);
    const given = [body.content, body.prompt, body.messages].filter((v) => v !== undefined).length;
    if (given !== 1) throw invalidRequest("give exactly one of content, prompt or messages", "content");
    let ids: number[];
    if (body.messages !== undefined) {
      ids = chatPromptIds(model, body.messages, body.add_generation_prompt ?? true);
    } else if (body.content !== undefined) {
      ids = model.tokenizer.encode(body.content, { addSpecialTokens: body.add_special ?? body.add_special_tokens ?? false });
    } else {
      ids = model.tokenizer.encode(body.prompt ?? "", { addSpecialTokens: body.add_special_tokens ?? body.add_special ?? true });
    }
    const tokens = body.with_pieces === true ? ids.map((id) => ({ id, piece: model.tokenText.piece(id) })) : ids;
    return { tokens, count: ids.length, max_model_len: model.limits.contextLength };
  });

  app.post<{ Body: DetokenizeBody }>("/detokenize", { schema: { body: detokenizeSchema } }, async (request) => {
    const body = request.body;
    const model = state.requireModel();
    checkModelName(model, body.model);
    const vocab = model.limits.vocabSize;
    const bad = body.tokens.find((id) => id >= vocab);
    if (bad !== undefined) throw invalidRequest(`tokens: token id ${bad} is not in the vocabulary (0..${vocab - 1})`, "tokens");
    const text = model.tokenizer.decode(body.tokens);
    return { content: text, prompt: text };
  });
}
