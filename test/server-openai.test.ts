/**
 * tiny-llm's server driven by the official openai client: completions and chat, streaming and
 * not, log-probabilities, n, seeds, stop strings across token boundaries, include_usage, and the
 * golden outputs of ../shared/golden through HTTP.
 */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { after, before, describe, test } from "node:test";
import OpenAI from "openai";
import { loadTokenizer } from "../src/generation/load-checkpoint.js";
import { TokenText } from "../src/server/token-text.js";
import { postJson, startServer, waitFor, type TestServer } from "./support/server.js";
import { sharedPath } from "./support/shared.js";

const storiesModel = sharedPath("models", "stories260k-qwen2");
const storiesGolden = sharedPath("golden", "stories260k.json");
const chatModel = sharedPath("models", "tiny-random-qwen2");
const chatGolden = sharedPath("golden", "tiny-random-qwen2.json");
const skip = storiesModel.skip || storiesGolden.skip || chatModel.skip || chatGolden.skip;

const client = (server: TestServer) => new OpenAI({ baseURL: `${server.url}/v1`, apiKey: "unused", maxRetries: 0, timeout: 60_000 });

/** vLLM's extra fields, which the openai client passes through. */
type Extra = { ignore_eos?: boolean; top_k?: number; min_p?: number; repetition_penalty?: number };

describe("the openai client against tiny-llm serve", { skip }, () => {
  let stories: TestServer;
  let chat: TestServer;
  let golden: { greedy_ids: number[]; greedy_text: string };
  let chatFixture: { prompt_ids: number[]; greedy_ids: number[]; llama_cpp_top5_logprobs: [number, number][][] };

  before(async () => {
    golden = JSON.parse(readFileSync(storiesGolden.path, "utf8")).qwen2;
    chatFixture = JSON.parse(readFileSync(chatGolden.path, "utf8"));
    stories = await startServer(storiesModel.path);
    // f32 K/V, as llama.cpp ran the golden log-probabilities.
    chat = await startServer(chatModel.path, { engine: { kvDtype: "f32" } });
  });
  after(async () => {
    await Promise.all([stories?.close(), chat?.close()]);
  });

  test("completions: the empty prompt at temperature 0 gives the golden story, with usage", async () => {
    const r = await client(stories).completions.create({ model: storiesModel.path, prompt: "", max_tokens: 256, temperature: 0 });
    assert.equal(r.object, "text_completion");
    assert.match(r.id, /^cmpl-/);
    assert.equal(r.choices.length, 1);
    assert.equal(r.choices[0].text, golden.greedy_text);
    assert.equal(r.choices[0].finish_reason, "length");
    assert.equal(r.choices[0].logprobs, null);
    assert.equal(r.usage?.prompt_tokens, 1);
    assert.equal(r.usage?.completion_tokens, 256);
    assert.equal(r.usage?.total_tokens, 257);
    assert.equal(typeof r.usage?.prompt_tokens_details?.cached_tokens, "number");
  });

  test("completions: streaming gives the same story, finish_reason on the last chunk, and a usage chunk with include_usage", async () => {
    const stream = await client(stories).completions.create({
      model: storiesModel.path,
      prompt: "",
      max_tokens: 256,
      temperature: 0,
      stream: true,
      stream_options: { include_usage: true },
    });
    let text = "";
    const finishes: (string | null)[] = [];
    let usageChunk: OpenAI.Completions.Completion | undefined;
    let chunks = 0;
    for await (const chunk of stream) {
      chunks++;
      if (chunk.choices.length === 0) {
        usageChunk = chunk;
        continue;
      }
      assert.equal(usageChunk, undefined, "the usage chunk comes last");
      text += chunk.choices[0].text;
      finishes.push(chunk.choices[0].finish_reason);
    }
    assert.equal(text, golden.greedy_text);
    assert.ok(chunks > 10, "streamed in many chunks");
    assert.equal(finishes.at(-1), "length");
    assert.ok(
      finishes.slice(0, -1).every((f) => f === null),
      "only the last chunk has a finish_reason",
    );
    assert.equal(usageChunk?.usage?.completion_tokens, 256);
    assert.equal(usageChunk?.usage?.prompt_tokens, 1);
  });

  test("completions: a prompt of token ids, and several prompts, each its own indexed choice", async () => {
    const ids = await client(stories).completions.create({ model: storiesModel.path, prompt: [1], max_tokens: 20, temperature: 0 });
    const expected20 = loadTokenizer(storiesModel.path).tokenizer.decode(golden.greedy_ids.slice(0, 20), { skipSpecialTokens: true });
    assert.equal(ids.choices[0].text, expected20);

    const many = await client(stories).completions.create({
      model: storiesModel.path,
      prompt: [[1], [1, ...golden.greedy_ids.slice(0, 5)]],
      max_tokens: 10,
      temperature: 0,
    });
    assert.deepEqual(
      many.choices.map((c) => c.index),
      [0, 1],
    );
    const tok = loadTokenizer(storiesModel.path).tokenizer;
    assert.equal(many.choices[0].text, tok.decode(golden.greedy_ids.slice(0, 10), { skipSpecialTokens: true }));
    // The second prompt's continuation is the story's tokens 5..14, decoded after its first five.
    const whole = tok.decode(golden.greedy_ids.slice(0, 15), { skipSpecialTokens: true });
    const head = tok.decode(golden.greedy_ids.slice(0, 5), { skipSpecialTokens: true });
    assert.equal(head + many.choices[1].text, whole);
    assert.equal(many.usage?.prompt_tokens, 1 + 6);
    assert.equal(many.usage?.completion_tokens, 20);

    const strings = await client(stories).completions.create({
      model: storiesModel.path,
      prompt: ["", "Once upon"],
      max_tokens: 4,
      temperature: 0,
    });
    assert.equal(strings.choices.length, 2);
    assert.equal(strings.choices[0].text, tok.decode(golden.greedy_ids.slice(0, 4), { skipSpecialTokens: true }));
  });

  test("completions: legacy logprobs line up with the text", async () => {
    const r = await client(stories).completions.create({
      model: storiesModel.path,
      prompt: "",
      max_tokens: 40,
      temperature: 0,
      logprobs: 3,
    });
    const choice = r.choices[0];
    const lp = choice.logprobs;
    assert.ok(lp && lp.tokens && lp.token_logprobs && lp.top_logprobs && lp.text_offset);
    assert.equal(lp.tokens.length, 40);
    assert.equal(lp.tokens.join(""), choice.text);
    let offset = 0;
    lp.tokens.forEach((token, i) => {
      assert.equal(lp.text_offset?.[i], offset);
      offset += token.length;
      const logprob = lp.token_logprobs?.[i] as number;
      assert.ok(logprob <= 0 && logprob > -50, `logprob ${logprob}`);
      const top = lp.top_logprobs?.[i] as Record<string, number>;
      // Three alternatives, the sampled (greedy: the best) among them.
      assert.ok(Object.keys(top).length === 3, JSON.stringify(top));
      assert.equal(top[token], logprob);
      assert.equal(Math.max(...Object.values(top)), logprob);
    });
  });

  test("completions: echo returns the prompt before the completion, prompt logprobs null", async () => {
    const r = await client(stories).completions.create({
      model: storiesModel.path,
      prompt: "Once upon a time",
      max_tokens: 5,
      temperature: 0,
      echo: true,
      logprobs: 1,
    });
    const choice = r.choices[0];
    assert.ok(choice.text.startsWith("Once upon a time"), choice.text);
    assert.ok(choice.text.length > "Once upon a time".length);
    const lp = choice.logprobs;
    assert.ok(lp?.tokens && lp.token_logprobs && lp.text_offset);
    const promptTokens = r.usage?.prompt_tokens as number;
    assert.equal(lp.tokens.length, promptTokens + 5);
    assert.ok(lp.token_logprobs.slice(0, promptTokens).every((v) => v === null));
    assert.ok(lp.token_logprobs.slice(promptTokens).every((v) => typeof v === "number"));
    assert.equal(lp.tokens.join(""), choice.text);
    assert.equal(lp.text_offset[promptTokens], "Once upon a time".length);
  });

  test("seeds: the same seed gives the same text and log-probabilities; n choices use seed, seed+1, …", async () => {
    const c = client(stories);
    const ask = (seed: number, n = 1) =>
      c.completions.create({ model: storiesModel.path, prompt: "", max_tokens: 30, temperature: 1, seed, n, logprobs: 2 });
    const [a, b, other] = await Promise.all([ask(7), ask(7), ask(8)]);
    assert.equal(a.choices[0].text, b.choices[0].text);
    assert.deepEqual(a.choices[0].logprobs?.token_logprobs, b.choices[0].logprobs?.token_logprobs);
    assert.notEqual(a.choices[0].text, other.choices[0].text);

    const three = await ask(7, 3);
    assert.deepEqual(
      three.choices.map((ch) => ch.index),
      [0, 1, 2],
    );
    assert.equal(three.choices[0].text, a.choices[0].text);
    assert.equal(three.choices[1].text, other.choices[0].text);
    assert.notEqual(three.choices[2].text, three.choices[0].text);
    assert.equal(three.usage?.prompt_tokens, 1);
    assert.equal(three.usage?.completion_tokens, 90);
  });

  test("stop strings that span two and three tokens end the text just before them, streamed or not", async () => {
    const { tokenizer } = loadTokenizer(storiesModel.path);
    const pieces = new TokenText(tokenizer);
    const ids = golden.greedy_ids;
    // A stop string from the end of one token into the next, and one across three tokens.
    const k = ids.findIndex((id, i) => i > 3 && pieces.piece(id).length >= 4 && pieces.piece(ids[i + 1]).length >= 4);
    const a = pieces.piece(ids[k]);
    const b = pieces.piece(ids[k + 1]);
    const c = pieces.piece(ids[k + 2]);
    const twoTokens = a.slice(-2) + b.slice(0, 2);
    const threeTokens = a.slice(-1) + b + c.slice(0, 1);
    const text = golden.greedy_text;
    /** Tokens generated until the decoded text first holds `stop`. */
    const tokensUntil = (stop: string) => {
      for (let n = 1; n <= ids.length; n++) if (tokenizer.decode(ids.slice(0, n), { skipSpecialTokens: true }).includes(stop)) return n;
      throw new Error(`"${stop}" is not in the story`);
    };
    for (const stop of [twoTokens, threeTokens]) {
      const expected = text.slice(0, text.indexOf(stop));
      const r = await client(stories).completions.create({
        model: storiesModel.path,
        prompt: "",
        max_tokens: 256,
        temperature: 0,
        stop: [stop, "never appears"],
        logprobs: 0,
      });
      assert.equal(r.choices[0].text, expected, `stop ${JSON.stringify(stop)}`);
      assert.equal(r.choices[0].finish_reason, "stop");
      assert.equal(r.usage?.completion_tokens, tokensUntil(stop));
      assert.equal(r.choices[0].logprobs?.tokens?.join(""), expected);

      const stream = await client(stories).completions.create({
        model: storiesModel.path,
        prompt: "",
        max_tokens: 256,
        temperature: 0,
        stop,
        stream: true,
      });
      let streamed = "";
      let finish: string | null = null;
      for await (const chunk of stream) {
        streamed += chunk.choices[0]?.text ?? "";
        finish = chunk.choices[0]?.finish_reason ?? finish;
        // Nothing streamed is ever taken back: what has arrived is always a prefix of the answer.
        assert.ok(expected.startsWith(streamed), `streamed ${JSON.stringify(streamed)}`);
      }
      assert.equal(streamed, expected);
      assert.equal(finish, "stop");
    }
    // The engine stopped generating: nothing is left in flight.
    await waitFor(() => stories.engine.inFlight === 0, 5000, "the stopped requests to leave the engine");

    const atStart = await client(stories).completions.create({
      model: storiesModel.path,
      prompt: "",
      max_tokens: 50,
      temperature: 0,
      stop: "Once",
    });
    assert.equal(atStart.choices[0].text, "");
    assert.equal(atStart.choices[0].finish_reason, "stop");
  });

  test("GET /v1/models lists the model with root and max_model_len", async () => {
    const page = await client(stories).models.list();
    assert.equal(page.data.length, 1);
    const model = page.data[0] as OpenAI.Models.Model & { root: string; max_model_len: number };
    assert.equal(model.id, storiesModel.path);
    assert.equal(model.object, "model");
    assert.equal(model.root, storiesModel.path);
    assert.equal(model.max_model_len, 512);
  });

  test("chat: the model's template, streaming and not, agree with a completion of the rendered prompt", async () => {
    const messages: OpenAI.Chat.ChatCompletionMessageParam[] = [
      { role: "system", content: "Be brief." },
      { role: "user", content: "Once upon a time" },
    ];
    const c = client(chat);
    const r = await c.chat.completions.create({ model: chatModel.path, messages, max_tokens: 12, temperature: 0 });
    assert.equal(r.object, "chat.completion");
    assert.match(r.id, /^chatcmpl-/);
    const message = r.choices[0].message;
    assert.equal(message.role, "assistant");
    assert.equal(typeof message.content, "string");
    assert.ok(["stop", "length"].includes(r.choices[0].finish_reason));

    const tokenized = (await (await postJson(`${chat.url}/tokenize`, { messages })).json()) as { tokens: number[]; count: number };
    assert.equal(r.usage?.prompt_tokens, tokenized.count);
    const plain = await c.completions.create({ model: chatModel.path, prompt: tokenized.tokens, max_tokens: 12, temperature: 0 });
    assert.equal(plain.choices[0].text, message.content);

    const stream = await c.chat.completions.create({
      model: chatModel.path,
      messages,
      max_tokens: 12,
      temperature: 0,
      stream: true,
      stream_options: { include_usage: true },
    });
    const chunks: OpenAI.Chat.ChatCompletionChunk[] = [];
    for await (const chunk of stream) chunks.push(chunk);
    assert.equal(chunks[0].choices[0].delta.role, "assistant", "the role comes first");
    assert.equal(chunks[0].object, "chat.completion.chunk");
    const content = chunks.map((ch) => ch.choices[0]?.delta.content ?? "").join("");
    assert.equal(content, message.content);
    const withChoices = chunks.filter((ch) => ch.choices.length > 0);
    assert.equal(withChoices.at(-1)?.choices[0].finish_reason, r.choices[0].finish_reason);
    const last = chunks.at(-1);
    assert.deepEqual(last?.choices, []);
    assert.equal(last?.usage?.prompt_tokens, r.usage?.prompt_tokens);
    assert.equal(last?.usage?.completion_tokens, r.usage?.completion_tokens);
    // The third time this prompt runs, its full blocks come from the prefix cache.
    const cached = last?.usage?.prompt_tokens_details?.cached_tokens as number;
    const blockSize = chat.engine.info.kv.blockSize;
    assert.equal(cached, Math.floor((tokenized.count - 1) / blockSize) * blockSize);
  });

  test("chat: logprobs with top_logprobs, bytes that add up to the text", async () => {
    const r = await client(chat).chat.completions.create({
      model: chatModel.path,
      messages: [{ role: "user", content: "Tell me a story." }],
      max_tokens: 10,
      temperature: 0,
      logprobs: true,
      top_logprobs: 5,
      ...({ ignore_eos: true } as Extra),
    });
    const entries = r.choices[0].logprobs?.content;
    assert.ok(entries);
    assert.equal(entries.length, r.usage?.completion_tokens);
    for (const e of entries) {
      assert.equal(typeof e.token, "string");
      assert.ok(e.logprob <= 0);
      assert.ok(e.bytes && e.bytes.every((b) => Number.isInteger(b) && b >= 0 && b < 256));
      assert.equal(e.top_logprobs.length, 5);
      // Greedy: the chosen token is the most likely one.
      assert.equal(e.top_logprobs[0].logprob, e.logprob);
      assert.equal(e.top_logprobs[0].token, e.token);
      for (let i = 1; i < 5; i++) assert.ok(e.top_logprobs[i].logprob <= e.top_logprobs[i - 1].logprob);
    }
    const bytes = Buffer.from(entries.flatMap((e) => e.bytes ?? []));
    assert.equal(bytes.toString("utf8"), r.choices[0].message.content);

    const none = await client(chat).chat.completions.create({
      model: chatModel.path,
      messages: [{ role: "user", content: "Hi" }],
      max_tokens: 3,
      temperature: 0,
      logprobs: true,
    });
    assert.ok(none.choices[0].logprobs?.content?.every((e) => e.top_logprobs.length === 0));
    const off = await client(chat).chat.completions.create({
      model: chatModel.path,
      messages: [{ role: "user", content: "Hi" }],
      max_tokens: 3,
    });
    assert.equal(off.choices[0].logprobs, null);
  });

  test("chat: n choices, streamed, each indexed with its own role chunk and finish_reason", async () => {
    const stream = await client(chat).chat.completions.create({
      model: chatModel.path,
      messages: [{ role: "user", content: "Hi" }],
      max_tokens: 6,
      temperature: 1,
      seed: 3,
      n: 3,
      stream: true,
    });
    const roles = new Set<number>();
    const finishes = new Map<number, string>();
    const text = ["", "", ""];
    for await (const chunk of stream) {
      const choice = chunk.choices[0];
      if (choice.delta.role) roles.add(choice.index);
      text[choice.index] += choice.delta.content ?? "";
      if (choice.finish_reason) finishes.set(choice.index, choice.finish_reason);
    }
    assert.deepEqual([...roles].sort(), [0, 1, 2]);
    assert.deepEqual([...finishes.keys()].sort(), [0, 1, 2]);
    const alone = await client(chat).chat.completions.create({
      model: chatModel.path,
      messages: [{ role: "user", content: "Hi" }],
      max_tokens: 6,
      temperature: 1,
      seed: 4,
    });
    assert.equal(text[1], alone.choices[0].message.content);
  });

  test("completions on tiny-random-qwen2: golden greedy tokens and llama.cpp's log-probabilities through HTTP", async () => {
    const { tokenizer } = loadTokenizer(chatModel.path);
    const r = await client(chat).completions.create({
      model: chatModel.path,
      prompt: chatFixture.prompt_ids,
      max_tokens: chatFixture.greedy_ids.length,
      temperature: 0,
      logprobs: 5,
      ...({ ignore_eos: true } as Extra),
    });
    assert.equal(r.choices[0].text, tokenizer.decode(chatFixture.greedy_ids, { skipSpecialTokens: true }));
    const lp = r.choices[0].logprobs;
    assert.ok(lp?.token_logprobs && lp.top_logprobs);
    chatFixture.llama_cpp_top5_logprobs.forEach((top5, step) => {
      assert.ok(Math.abs((lp.token_logprobs?.[step] as number) - top5[0][1]) < 1e-2, `step ${step}`);
      const ours = Object.values(lp.top_logprobs?.[step] as Record<string, number>).sort((x, y) => y - x);
      // The top one always matches; the rest are compared where their texts are distinct.
      assert.ok(Math.abs(ours[0] - top5[0][1]) < 1e-2);
      if (ours.length === 5)
        ours.forEach((v, i) => assert.ok(Math.abs(v - top5[i][1]) < 1e-2, `step ${step} alternative ${i}: ${v} vs ${top5[i][1]}`));
    });
  });

  test("POST /tokenize and /detokenize in llama.cpp's and vLLM's shapes", async () => {
    const { tokenizer } = loadTokenizer(storiesModel.path);
    const text = "Once upon a time";
    const llama = (await (await postJson(`${stories.url}/tokenize`, { content: text })).json()) as { tokens: number[] };
    assert.deepEqual(llama.tokens, tokenizer.encode(text, { addSpecialTokens: false }));
    const vllm = (await (await postJson(`${stories.url}/tokenize`, { prompt: text })).json()) as {
      tokens: number[];
      count: number;
      max_model_len: number;
    };
    assert.deepEqual(vllm.tokens, tokenizer.encode(text));
    assert.equal(vllm.tokens[0], 1, "BOS added");
    assert.equal(vllm.count, vllm.tokens.length);
    assert.equal(vllm.max_model_len, 512);
    const pieces = (await (await postJson(`${stories.url}/tokenize`, { content: text, with_pieces: true })).json()) as {
      tokens: { id: number; piece: string }[];
    };
    assert.equal(pieces.tokens.map((t) => t.piece).join(""), " " + text);
    const back = (await (await postJson(`${stories.url}/detokenize`, { tokens: llama.tokens })).json()) as {
      content: string;
      prompt: string;
    };
    assert.equal(back.content, text);
    assert.equal(back.prompt, text);
  });
});
