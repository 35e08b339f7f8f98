/**
 * The compact byte-level BPE that runs GGUF tokenizers, against @huggingface/tokenizers on the
 * same vocabulary: the full Qwen3 tokenizer (151k tokens, 151k merges) written into GGUF metadata
 * the way llama.cpp's converter writes it, under each pre-tokenizer.
 */
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import { TOKENIZER_DIR } from "../scripts/make-random-checkpoint.js";
import { Random } from "../src/generation/random.js";
import { readGgufHeader, type GgufEntry } from "../src/loaders/gguf.js";
import { writeGguf } from "../src/loaders/gguf-writer.js";
import { CheckpointError } from "../src/loaders/safetensors.js";
import { ggufTokenizer, ggufTokenizerFiles, ggufTokenizerMetadata } from "../src/tokenizer/gguf-tokenizer.js";
import { byteLevelBpeTables } from "../src/tokenizer/byte-level-bpe.js";
import { HfTokenizerModel } from "../src/tokenizer/hf-tokenizer-model.js";
import { jsRegExp, PRE_TOKENIZERS } from "../src/tokenizer/pre-tokenizers.js";
import { Tokenizer, type TokenizerConfig } from "../src/tokenizer/tokenizer.js";
import { sharedPath } from "./support/shared.js";

const tmp = mkdtempSync(join(tmpdir(), "tiny-llm-byte-level-bpe-"));
after(() => rmSync(tmp, { recursive: true, force: true }));

const read = (name: string): Record<string, unknown> =>
  JSON.parse(readFileSync(join(TOKENIZER_DIR, name), "utf8")) as Record<string, unknown>;
const files = { tokenizerJson: read("tokenizer.json"), config: read("tokenizer_config.json") as TokenizerConfig };
// Qwen's embedding has 151936 rows, past the tokenizer's 151669 ids: the rest are unused slots.
const VOCAB_ROWS = 151936;
/** The reference: the same tokenizer files run by @huggingface/tokenizers. */
const libraryTokenizer = ({ tokenizerJson, config }: { tokenizerJson: object; config: TokenizerConfig }): Tokenizer =>
  new Tokenizer(new HfTokenizerModel(tokenizerJson, config), config);
const qwenMetadata = ggufTokenizerMetadata(files, VOCAB_ROWS, { bos: 151643, eos: 151645 });

/** A GGUF holding the Qwen3 tokenizer with `pre` as its pre-tokenizer, and `change` applied. */
function tokenizerGguf(name: string, pre: string, change: (metadata: [string, GgufEntry][]) => void = () => {}): string {
  const metadata = qwenMetadata.map(([key, entry]): [string, GgufEntry] => [
    key,
    key === "tokenizer.ggml.pre" ? { type: "string", value: pre } : entry,
  ]);
  change(metadata);
  const path = join(tmp, name);
  writeGguf(path, metadata, []);
  return path;
}

/** Text split into words as the compact BPE splits it: the regex's matches, and any text between them. */
function splitWords(text: string, regex: RegExp): string[] {
  const words: string[] = [];
  let end = 0;
  for (const match of text.matchAll(regex)) {
    if (match.index > end) words.push(text.slice(end, match.index));
    if (match[0].length > 0) words.push(match[0]);
    end = match.index + match[0].length;
  }
  if (end < text.length) words.push(text.slice(end));
  return words;
}

/** Texts that reach every branch: added tokens, NFC, contractions, digits, whitespace runs, long words, any Unicode. */
function corpus(): string[] {
  const random = new Random(7);
  const pick = <T>(items: readonly T[]): T => items[random.nextUint32() % items.length];
  const fixed = [
    "",
    "Hello, world! I'LL say it's DON'T and we'Re done.",
    "<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>user\n<think>2+2?</think><|im_end|><|endoftext|>",
    "<|im_start<|im_end|>|><|fim_prefix|><|fim_middle|>",
    "caf\u0065\u0301 na\u0069\u0308ve Ångström ﬁ ①②③ x²",
    "1234567890 3.14159 1,000,000 0x1F",
    // Spaces before digits, which SmolLM's digit split cuts off from what follows.
    "a  5 b   12\t\t3x \n 4 '5 ' 6's  ٣٤ Ⅻ ½",
    "\ufeffBOM first, then\u00a0nbsp\u2003em\u3000ideographic\u0085next",
    // Where Unicode's White_Space and JavaScript's \s differ: U+0085 is one, U+FEFF the other.
    "end\ufeff\ufeff \u0085\u0085  \u0085.\ufeff",
    "  \n\n\t\t \r\n   trailing   ",
    "你好，世界！こんにちは 안녕하세요 Привет мир مرحبا 🙂👍🏽🇯🇵 \u{1F9D1}\u200d\u{1F4BB}",
    "def f(x):\n    return {'a': [1, 2]}  # don't\n\n\nclass A:\n\tpass\n",
    "a".repeat(3000),
    " ".repeat(500) + "x",
    "lone \ud800 surrogate \udfff here",
  ];
  const pieces = [
    "the",
    " quick",
    "Brown",
    " 42",
    "123456",
    "7",
    "   ",
    "'s",
    "'T",
    "\n",
    "  ",
    "\t",
    ".",
    "!!",
    "—",
    "é",
    "e\u0301",
    "日本",
    "🙂",
    "<|im_end|>",
    "<think>",
    "\u00a0",
    "ÿ",
    "\u0000",
    "~",
  ];
  const generated = Array.from({ length: 150 }, () => {
    let text = "";
    const n = 1 + (random.nextUint32() % 40);
    for (let i = 0; i < n; i++) {
      // A random code point now and then (surrogate halves included), otherwise a common piece.
      text += random.nextUint32() % 5 === 0 ? String.fromCodePoint(random.nextUint32() % 0x30000) : pick(pieces);
    }
    return text;
  });
  return [...fixed, ...generated];
}

describe("byte-level BPE from GGUF metadata, against @huggingface/tokenizers", () => {
  // Qwen's own tokenizer.json, which a checkpoint folder's tokenizer also runs on the compact tables.
  const original = libraryTokenizer(files);
  const fromFolder = Tokenizer.fromDir(TOKENIZER_DIR);
  const texts = corpus();

  for (const pre of ["qwen2", "llama-bpe", "smollm"]) {
    test(`${pre}: every text encodes to the library's ids, and ids decode to its text`, () => {
      const header = readGgufHeader(tokenizerGguf(`${pre}.gguf`, pre));
      const compact = ggufTokenizer(header);
      const library = libraryTokenizer(ggufTokenizerFiles(header));
      for (const text of texts) {
        const ids = library.encode(text);
        assert.deepEqual(compact.encode(text), ids, JSON.stringify(text));
        assert.equal(compact.decode(ids), library.decode(ids), JSON.stringify(text));
        // The Qwen2 pre-tokenizer is the original tokenizer's own.
        if (pre === "qwen2") {
          assert.deepEqual(original.encode(text), ids, JSON.stringify(text));
          assert.deepEqual(fromFolder.encode(text), ids, JSON.stringify(text));
          assert.equal(fromFolder.decode(ids), library.decode(ids), JSON.stringify(text));
        }
      }
      assert.ok(compact.encode(texts[2]).includes(151667), "<think> (user-defined) is matched whole");
    });
  }

  test("smollm: the one regex splits text as llama.cpp's two splits, one after the other", () => {
    // llama.cpp's "smollm": every \p{N} is a word, then GPT-2's regex splits each stretch between them.
    const gpt2 = jsRegExp(String.raw`'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`);
    const twoSplits = (text: string): string[] => splitWords(text, /\p{N}/gu).flatMap((stretch) => splitWords(stretch, gpt2));
    const oneRegex = jsRegExp(PRE_TOKENIZERS.smollm.regex);
    for (const text of texts) assert.deepEqual(splitWords(text, oneRegex), twoSplits(text), JSON.stringify(text));
  });

  test("smollm: SmolLM's tokenizer.json steps (Digits, then ByteLevel with its regex) encode the same, and are named smollm", () => {
    const header = readGgufHeader(tokenizerGguf("smollm-steps.gguf", "smollm"));
    const compact = ggufTokenizer(header);
    const { tokenizerJson, config } = ggufTokenizerFiles(header);
    const twoSteps = {
      ...tokenizerJson,
      pre_tokenizer: {
        type: "Sequence",
        pretokenizers: [
          { type: "Digits", individual_digits: true },
          { type: "ByteLevel", add_prefix_space: false, trim_offsets: true, use_regex: true },
        ],
      },
    };
    const library = libraryTokenizer({ tokenizerJson: twoSteps, config });
    // Left out: texts with numbers other than ASCII digits, which the library's Digits does not split
    // and llama.cpp's (the reference) does, and with U+0085 or U+FEFF, which its ByteLevel regex takes
    // by JavaScript's \s rather than Unicode's White_Space.
    const comparable = texts.filter((text) => !/(?![0-9])\p{N}|[\u0085\ufeff]/u.test(text));
    assert.ok(comparable.length > texts.length / 2, `${comparable.length} of ${texts.length} texts`);
    for (const text of comparable) assert.deepEqual(compact.encode(text), library.encode(text), JSON.stringify(text));
    const pre = ggufTokenizerMetadata({ tokenizerJson: twoSteps, config }, VOCAB_ROWS).find(([key]) => key === "tokenizer.ggml.pre");
    assert.deepEqual(pre?.[1], { type: "string", value: "smollm" });
  });

  test("decoding random ids (special, user-defined and unused slots among them) matches, with and without special tokens", () => {
    const header = readGgufHeader(tokenizerGguf("decode.gguf", "qwen2"));
    const compact = ggufTokenizer(header);
    const library = libraryTokenizer(ggufTokenizerFiles(header));
    const random = new Random(11);
    for (let n = 0; n < 200; n++) {
      const ids = Array.from({ length: 1 + (random.nextUint32() % 12) }, () =>
        random.nextUint32() % 4 === 0 ? 151640 + (random.nextUint32() % 40) : random.nextUint32() % VOCAB_ROWS,
      );
      for (const skipSpecialTokens of [false, true]) {
        assert.equal(compact.decode(ids, { skipSpecialTokens }), library.decode(ids, { skipSpecialTokens }), `${ids} ${skipSpecialTokens}`);
      }
    }
  });

  test("the vocabulary reads the same: every id's token and text, special ids, BOS, EOS and size", () => {
    const header = readGgufHeader(tokenizerGguf("vocab.gguf", "qwen2"));
    const compact = ggufTokenizer(header);
    const library = libraryTokenizer(ggufTokenizerFiles(header));
    for (let id = 0; id < VOCAB_ROWS; id++) {
      assert.equal(compact.idToToken(id), library.idToToken(id), `id ${id}`);
      assert.equal(compact.isSpecial(id), library.isSpecial(id), `id ${id}`);
      assert.equal(compact.decode([id]), library.decode([id]), `id ${id}`);
    }
    assert.deepEqual([compact.vocabSize, compact.bosId, compact.eosIds], [library.vocabSize, library.bosId, library.eosIds]);
    assert.deepEqual([compact.vocabSize, compact.bosId, compact.eosIds], [151669, 151643, [151645]]);
  });

  const storiesJson = sharedPath("models", "stories260k-llama", "tokenizer.json");
  test("tokenizer.json runs on the compact tables when it is plain byte-level BPE, else on the library", { skip: storiesJson.skip }, () => {
    assert.ok(byteLevelBpeTables(files.tokenizerJson, files.config));
    // Cleaning up spaces, or a pre-tokenizer of another regex, is left to the library.
    assert.equal(byteLevelBpeTables(files.tokenizerJson, { ...files.config, clean_up_tokenization_spaces: true }), undefined);
    const otherSplit = structuredClone(files.tokenizerJson) as { pre_tokenizer: { pretokenizers: { pattern?: { Regex: string } }[] } };
    otherSplit.pre_tokenizer.pretokenizers[0].pattern = { Regex: String.raw`\s+` };
    assert.equal(byteLevelBpeTables(otherSplit, files.config), undefined);
    // SentencePiece-style BPE with byte fallback.
    assert.equal(byteLevelBpeTables(JSON.parse(readFileSync(storiesJson.path, "utf8")) as object, {}), undefined);
  });

  test("a merge of tokens the vocabulary lacks is a CheckpointError naming the file and the merge", () => {
    const path = tokenizerGguf("bad-merge.gguf", "qwen2", (metadata) => {
      const merges = metadata.find(([key]) => key === "tokenizer.ggml.merges");
      assert.ok(merges);
      const items = [...(merges[1].value as { items: Iterable<string> }).items];
      items[5] = "Ġth zzzqqq";
      merges[1] = { type: "array", value: { itemType: "string", items } };
    });
    assert.throws(
      () => ggufTokenizer(readGgufHeader(path)),
      (e: unknown) =>
        e instanceof CheckpointError &&
        e.message.startsWith(path) &&
        /merge 5 "Ġth zzzqqq" is not two tokens of the vocabulary/.test(e.message),
    );
  });
});
