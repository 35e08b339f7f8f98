/**
 * tokenizer.json's vocabulary and merges read from the bytes, against JSON.parse of the same file:
 * the full Qwen3 tokenizer, and small files with every kind of string escape.
 */
import assert from "node:assert/strict";
import { copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { TOKENIZER_DIR } from "../scripts/make-random-checkpoint.js";
import { HfTokenizerModel } from "../src/tokenizer/hf-tokenizer-model.js";
import { bpeTablesOf, splitTokenizerJson, type BpeTables, type TokenizerJsonFile } from "../src/tokenizer/tokenizer-json.js";
import { Tokenizer, type TokenizerConfig } from "../src/tokenizer/tokenizer.js";

const tmp = mkdtempSync(join(tmpdir(), "tiny-llm-tokenizer-json-"));
after(() => rmSync(tmp, { recursive: true, force: true }));

const parse = (text: string) => JSON.parse(text) as Record<string, unknown>;
const split = (text: string | Uint8Array): TokenizerJsonFile =>
  splitTokenizerJson(typeof text === "string" ? Buffer.from(text) : text, parse);
/** Tables as plain arrays, to compare: the vocabulary as [id, text] by id. */
const plain = (t: BpeTables | undefined) =>
  t && {
    vocab: Array.from(t.vocab.ids, (id, i) => [id, t.vocab.texts.at(i)] as const).sort((a, b) => a[0] - b[0] || (a[1] < b[1] ? -1 : 1)),
    merges: t.merges.toArray(),
  };
/** What JSON.parse makes of the file, as tables, and the file without its vocabulary and merges. */
function reference(text: string) {
  const json = parse(text);
  const model = json.model as Record<string, unknown>;
  return { bpe: plain(bpeTablesOf(model)), rest: { ...json, model: { ...model, vocab: {}, merges: [] } } };
}

test("the Qwen3 tokenizer.json: 151k tokens and merges as JSON.parse reads them, the rest parsed as it is", () => {
  const bytes = readFileSync(join(TOKENIZER_DIR, "tokenizer.json"));
  const file = split(bytes);
  const expected = reference(bytes.toString("utf8"));
  assert.ok(file.bpe, "the vocabulary and merges were read from the bytes");
  assert.equal(file.bpe.vocab.ids.length, 151643);
  assert.deepEqual(plain(file.bpe), expected.bpe);
  assert.deepEqual(file.json, expected.rest);
  assert.deepEqual(file.parseWhole(), parse(bytes.toString("utf8")));
});

test("Tokenizer.fromDir on the Qwen3 files encodes and decodes as the library does on the parsed JSON", () => {
  for (const name of ["tokenizer.json", "tokenizer_config.json"]) copyFileSync(join(TOKENIZER_DIR, name), join(tmp, name));
  const config = parse(readFileSync(join(TOKENIZER_DIR, "tokenizer_config.json"), "utf8")) as TokenizerConfig;
  const library = new Tokenizer(new HfTokenizerModel(parse(readFileSync(join(TOKENIZER_DIR, "tokenizer.json"), "utf8")), config), config);
  const ours = Tokenizer.fromDir(tmp);
  for (const text of ["Hello, world! It's 2026.", "<|im_start|>user\n你好 🙂<|im_end|>", "  \n\tcafé naïve\u0301 x²", "a".repeat(500)]) {
    const ids = library.encode(text);
    assert.deepEqual(ours.encode(text), ids, JSON.stringify(text));
    assert.equal(ours.decode(ids), library.decode(ids));
  }
});

/** A small tokenizer.json whose vocabulary and merges are given as JSON text. */
const tokenizerText = (vocab: string, merges: string, space = "") =>
  `{${space}"version":"1.0",${space}"added_tokens":[{"id":9,"content":"<|x|>","special":true}],${space}"model":{${space}"type":"BPE",` +
  `${space}"vocab":${vocab},${space}"merges":${merges},${space}"ignore_merges":false${space}},${space}"decoder":{"type":"ByteLevel"}${space}}`;

test("string escapes, surrogate pairs, lone surrogates and raw UTF-8 come out as JSON.parse's strings encoded as UTF-8", () => {
  const vocab = String.raw`{"a":0, "\u00e9":1, "\ud83d\ude00":2, "\ud800":3, "x\udc00y":4, "\ud800\u0041":5, "\"\\\/":6, "\b\f\n\r\t":7, "é😀":8, "Ġ\u0120":10, "":11}`;
  const merges = String.raw`["a \u00e9", ["\ud83d\ude00", "\ud800"], ["x y", "z"], "é😀 \"\\"]`;
  for (const space of ["", "\r\n\t  "]) {
    const text = tokenizerText(vocab.replaceAll(", ", `,${space}`), merges, space);
    const file = split(text);
    assert.ok(file.bpe);
    assert.deepEqual(plain(file.bpe), reference(text).bpe);
    assert.deepEqual(file.json, reference(text).rest);
  }
});

test("what is not a vocabulary object before a merge list is parsed whole, as JSON.parse reads it", () => {
  const cases = [
    tokenizerText(`{"a":0,"b":1.5}`, `[]`),
    tokenizerText(`{"a":0,"b":-1}`, `[]`),
    tokenizerText(`{"a":0,"b":"1"}`, `[]`),
    tokenizerText(`{"a":0}`, `["a a", 3]`),
    tokenizerText(`{"a":0}`, `[["a", "a", "a"]]`),
    tokenizerText(`{"a":0}`, `null`),
    tokenizerText(`[]`, `[]`),
    `{"model":{"type":"BPE","merges":[],"vocab":{"a":0}}}`,
    `{"model":{"type":"BPE","vocab":{"a":0},"merges":[]},"model":"replaced"}`,
  ];
  for (const text of cases) {
    const file = split(text);
    assert.equal(file.bpe, undefined, text);
    assert.deepEqual(file.json, parse(text), text);
  }
  // Not UTF-8: parsed whole, where the bad byte becomes U+FFFD.
  const bytes = Buffer.from(tokenizerText(`{"a\xff":0}`, `[]`), "latin1");
  const file = split(bytes);
  assert.equal(file.bpe, undefined);
  assert.deepEqual(Object.keys((file.json.model as { vocab: object }).vocab), ["a\ufffd"]);
});

test("a repeated model key is read as JSON.parse reads it: the last one counts", () => {
  const text = `{"model":{"type":"BPE","vocab":{"old":0},"merges":[]},"model":{"type":"BPE","vocab":{"new":0},"merges":["n ew"]}}`;
  const file = split(text);
  assert.deepEqual(plain(file.bpe), reference(text).bpe);
  assert.deepEqual(plain(file.bpe)?.vocab, [[0, "new"]]);
});

test("malformed JSON anywhere gets the caller's parse error, not a partial tokenizer", () => {
  const good = tokenizerText(`{"a":0,"b":1}`, `["a b"]`);
  const bad = [
    good.slice(0, good.indexOf(`"b":1`) + 3),
    good.replace(`"a":0`, `"a":0,`),
    good.replace(`"a b"`, `"a\\q b"`),
    good.replace(`"a b"`, `"a\nb"`),
    good.replace(`"b":1`, `"b":01`),
    good + "x",
    good.replace(`"1.0"`, `1.0.0`),
  ];
  for (const text of bad) {
    assert.throws(
      () =>
        splitTokenizerJson(Buffer.from(text), (t) => {
          try {
            return parse(t);
          } catch {
            throw new Error("caller's error");
          }
        }),
      /caller's error/,
      text,
    );
  }
  const dir = mkdtempSync(join(tmp, "truncated-"));
  copyFileSync(join(TOKENIZER_DIR, "tokenizer_config.json"), join(dir, "tokenizer_config.json"));
  writeFileSync(join(dir, "tokenizer.json"), bad[0]);
  assert.throws(() => Tokenizer.fromDir(dir), /tokenizer\.json is not valid JSON.*download it again/);
});

test("a vocabulary with a repeated key or a shared id is parsed whole, so JSON.parse decides what it holds", () => {
  for (const vocab of [`{"a":5,"b":1,"a":1}`, `{"a":5,"0":5}`]) {
    const text = tokenizerText(vocab, `[]`);
    const file = split(text);
    assert.equal(file.bpe, undefined, vocab);
    assert.deepEqual(file.json, parse(text), vocab);
  }
});

test("nesting deeper than any tokenizer's is parsed whole rather than overflowing the stack", () => {
  const deep = "[".repeat(5000) + "]".repeat(5000);
  const text = `{"x":${deep},"model":{"type":"BPE","vocab":{"a":0},"merges":[]}}`;
  const file = split(text);
  assert.equal(file.bpe, undefined);
  // Compared in parts: assert's deep comparison itself recurses.
  assert.deepEqual(file.json.model, parse(text).model);
  let depth = 0;
  for (let x = file.json.x; Array.isArray(x); x = x[0]) depth++;
  assert.equal(depth, 5000);
});

test("a parse error after the vocabulary is reported at its position in the file", () => {
  const text = tokenizerText(`{"a":0,"b":1}`, `["a b"]`).replace(`"ignore_merges":false`, `"ignore_merges":--1`);
  const expected = (() => {
    try {
      parse(text);
    } catch (err) {
      return (err as Error).message;
    }
  })();
  assert.ok(expected);
  assert.throws(
    () => split(text),
    (err: Error) => err.message === expected,
  );
});
