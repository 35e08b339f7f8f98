/**
 * The server's pieces that need no running engine: OpenAI body → engine parameters (defaults,
 * limits, seeds per choice), errors → OpenAI's shape, and tokens' text and bytes for logprobs.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { loadTokenizer } from "../src/generation/load-checkpoint.js";
import { ApiError, toApiError } from "../src/server/errors.js";
import { choiceSettings, paramsForChoice, type ModelLimits } from "../src/server/request-params.js";
import { TokenText } from "../src/server/token-text.js";
import { sharedPath } from "./support/shared.js";

const limits: ModelLimits = {
  contextLength: 512,
  poolTokens: 4096,
  vocabSize: 100,
  eosTokenIds: [2],
  sampling: { temperature: 0.7, topK: 20, topP: 0.9 },
};
const opts = { promptField: "prompt", maxTokens: undefined, maxTokensField: "max_tokens", logprobs: undefined };

test("unset fields come from the model's generation config; max_tokens defaults to the rest of the context", () => {
  const s = choiceSettings({}, [1, 5, 6], limits, opts);
  assert.equal(s.params.maxTokens, 509);
  assert.deepEqual(s.params.stopIds, [2]);
  assert.equal(s.params.sampling.temperature, 0.7);
  assert.equal(s.params.sampling.topK, 20);
  assert.equal(s.params.sampling.topP, 0.9);
  assert.equal(s.params.sampling.minP, 0);
  assert.equal(s.params.sampling.repetitionPenalty, 1);
  assert.equal(s.params.sampling.seed, undefined);
  assert.equal(s.params.logprobs, undefined);
  assert.deepEqual(s.stops, []);
  assert.equal(s.n, 1);
  assert.equal(s.stream, false);
  assert.equal(s.includeUsage, false);
  // A pool smaller than the context bounds the default instead.
  assert.equal(choiceSettings({}, [1, 5, 6], { ...limits, poolTokens: 100 }, opts).params.maxTokens, 97);
});

test("generation_config's repetition penalty is a default that a request's own value replaces, 1 included", () => {
  const penalised = { ...limits, sampling: { ...limits.sampling, repetitionPenalty: 1.1 } };
  assert.equal(choiceSettings({}, [1], penalised, opts).params.sampling.repetitionPenalty, 1.1);
  assert.equal(choiceSettings({ repetition_penalty: 1 }, [1], penalised, opts).params.sampling.repetitionPenalty, 1);
  assert.equal(choiceSettings({ repetition_penalty: 1.3 }, [1], penalised, opts).params.sampling.repetitionPenalty, 1.3);
});

test("given fields win, vLLM's extras are read, and stop and ignore_eos shape the stopping", () => {
  const s = choiceSettings(
    {
      temperature: 0,
      top_k: -1,
      top_p: 0.5,
      min_p: 0.1,
      presence_penalty: 0.5,
      frequency_penalty: -0.5,
      repetition_penalty: 1.2,
      seed: 9,
      logit_bias: { "7": -100, "8": 3 },
      stop: "\n\n",
      ignore_eos: true,
      stop_token_ids: [4],
      n: 3,
      stream: true,
      stream_options: { include_usage: true },
    },
    [1],
    limits,
    { ...opts, maxTokens: 10, logprobs: 2 },
  );
  assert.deepEqual(s.params.sampling, {
    temperature: 0,
    topK: 0,
    topP: 0.5,
    minP: 0.1,
    presencePenalty: 0.5,
    frequencyPenalty: -0.5,
    repetitionPenalty: 1.2,
    seed: 9,
    logitBias: { 7: -100, 8: 3 },
  });
  assert.equal(s.params.maxTokens, 10);
  assert.equal(s.params.logprobs, 2);
  assert.deepEqual(s.params.stopIds, [4], "ignore_eos drops the EOS ids, stop_token_ids stay");
  assert.deepEqual(s.stops, ["\n\n"]);
  assert.equal(s.n, 3);
  assert.equal(s.includeUsage, true);
  assert.deepEqual(choiceSettings({ stop: ["a", "", "b"] }, [1], limits, opts).stops, ["a", "b"]);
  assert.equal(choiceSettings({ stream_options: { include_usage: true } }, [1], limits, opts).includeUsage, false);
});

test("each choice samples with seed + its index; without a seed the parameters are shared", () => {
  const seeded = choiceSettings({ seed: 40 }, [1], limits, opts).params;
  assert.equal(paramsForChoice(seeded, 0), seeded);
  assert.equal(paramsForChoice(seeded, 2).sampling.seed, 42);
  assert.equal(seeded.sampling.seed, 40, "the first choice's parameters are not changed");
  const unseeded = choiceSettings({}, [1], limits, opts).params;
  assert.equal(paramsForChoice(unseeded, 3), unseeded);
});

test("bad token ids, empty prompts and prompts that fill the context are 400s naming the field", () => {
  const param = (f: () => unknown) => {
    try {
      f();
    } catch (err) {
      assert.ok(err instanceof ApiError);
      assert.equal(err.status, 400);
      return [err.param, err.message];
    }
    assert.fail("no error");
  };
  assert.equal(param(() => choiceSettings({ logit_bias: { "100": 1 } }, [1], limits, opts))[0], "logit_bias");
  assert.equal(param(() => choiceSettings({ logit_bias: { "-1": 1 } }, [1], limits, opts))[0], "logit_bias");
  assert.equal(param(() => choiceSettings({ stop_token_ids: [100] }, [1], limits, opts))[0], "stop_token_ids");
  assert.equal(param(() => choiceSettings({}, [], limits, opts))[0], "prompt");
  const [field, message] = param(() => choiceSettings({}, new Array(512).fill(1), limits, { ...opts, promptField: "messages" }));
  assert.equal(field, "messages");
  assert.match(message as string, /512 tokens/);
});

test("errors map to OpenAI's shape; what is not the client's fault says nothing of itself", () => {
  assert.deepEqual(toApiError({ code: "FST_ERR_CTP_BODY_TOO_LARGE", statusCode: 413 }).toJSON().error.code, "request_too_large");
  assert.equal(toApiError({ code: "FST_ERR_CTP_BODY_TOO_LARGE", statusCode: 413 }).status, 413);
  assert.equal(toApiError({ code: "FST_ERR_CTP_INVALID_JSON_BODY", statusCode: 400 }).status, 400);
  const validation = toApiError({
    validation: [{ instancePath: "/messages/0", keyword: "required", params: { missingProperty: "role" }, message: "x" }],
  });
  assert.equal(validation.param, "messages.0.role");
  assert.equal(validation.message, "messages.0.role is required");
  const internal = toApiError(new Error("ENOENT: /home/secret/file"));
  assert.equal(internal.status, 500);
  assert.equal(internal.type, "server_error");
  assert.ok(!internal.message.includes("secret"));
});

for (const name of ["stories260k-qwen2", "tiny-random-qwen2"]) {
  const model = sharedPath("models", name);
  test(`${name}: tokens' bytes add up to the text, pieces keep their leading spaces`, { skip: model.skip }, () => {
    const { tokenizer } = loadTokenizer(model.path);
    const text = new TokenText(tokenizer);
    const s = "𝄞 and é, Once";
    const ids = tokenizer.encode(s, { addSpecialTokens: false });
    // The four bytes of 𝄞 come as tokens of their own in both vocabularies: each shows U+FFFD but keeps its byte.
    const bytes = Buffer.from(ids.flatMap((id) => text.bytes(id)));
    // A SentencePiece tokenizer adds its leading space.
    assert.equal(bytes.toString("utf8").trimStart(), s);
    assert.ok(ids.some((id) => text.piece(id) === "\uFFFD" && text.bytes(id).length === 1 && text.bytes(id)[0] >= 0x80));
    const once = ids.at(-1) as number;
    assert.ok(text.piece(once).endsWith("ce"));
    const and = ids.find((id) => text.piece(id) === " and");
    assert.ok(and !== undefined, "the token of ' and' has its space");
  });
}
