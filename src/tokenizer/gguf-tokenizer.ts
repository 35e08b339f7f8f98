/**
 * Rebuilds a Hugging Face tokenizer (tokenizer.json + tokenizer_config.json) from the tokenizer
 * llama.cpp stores in GGUF metadata, so a GGUF file runs with nothing beside it; and, for
 * byte-level BPE, writes that metadata from a Hugging Face tokenizer as llama.cpp's converter does.
 *
 * Two kinds are supported, named by `tokenizer.ggml.model`:
 * - "gpt2": byte-level BPE (Qwen, Llama 3, SmolLM). The vocabulary and merges are stored as they are in
 *   tokenizer.json; `tokenizer.ggml.pre` names the pre-tokenizer, i.e. the regex that splits
 *   text into words before BPE.
 * - "llama": SentencePiece-style BPE with byte fallback (Llama 2, TinyStories). GGUF stores a
 *   score per token instead of merges; as in Hugging Face's converter, the merges are every
 *   split of a token into two tokens of the vocabulary, ranked by the merged token's score.
 *
 * `tokenizer.ggml.token_type` marks control and user-defined tokens, which become added tokens
 * (matched whole in the text), and unused padding slots, which are left out.
 */
import {
  metadataBool,
  metadataNumber,
  metadataNumbers,
  metadataString,
  metadataStrings,
  type GgufEntry,
  type GgufHeader,
} from "../loaders/gguf.js";
import { CheckpointError } from "../loaders/safetensors.js";
import type { StringTable } from "../loaders/string-table.js";
import { ByteLevelBpe, TOKEN_KIND } from "./byte-level-bpe.js";
import { byteLevelPreTokenizerName, jsRegExp, PRE_TOKENIZERS, type PreTokenizer } from "./pre-tokenizers.js";
import { specialTokenContent, Tokenizer, type TokenizerConfig } from "./tokenizer.js";

/** llama.cpp's token types (tokenizer.ggml.token_type). */
export const GGUF_TOKEN_TYPE = { NORMAL: 1, UNKNOWN: 2, CONTROL: 3, USER_DEFINED: 4, UNUSED: 5, BYTE: 6 } as const;

const SUPPORTED_MODELS = `"gpt2" (byte-level BPE) and "llama" (SentencePiece-style BPE)`;

export interface HfTokenizerFiles {
  /** The contents of an equivalent tokenizer.json. */
  tokenizerJson: Record<string, unknown>;
  /** The contents of an equivalent tokenizer_config.json. */
  config: TokenizerConfig;
}

/**
 * The tokenizer stored in a GGUF file's metadata. Byte-level BPE runs on compact tables of its
 * own (see byte-level-bpe.ts); SentencePiece-style vocabularies, small in the models that use
 * them, go through @huggingface/tokenizers as their tokenizer.json equivalent.
 */
export function ggufTokenizer(header: GgufHeader): Tokenizer {
  const stored = readStoredTokenizer(header);
  try {
    if (stored.kind === "gpt2") {
      const pre = preTokenizer(stored);
      const model = new ByteLevelBpe({
        tokens: stored.tokens,
        kinds: tokenKinds(stored.types),
        merges: storedMerges(stored),
        split: jsRegExp(pre.regex),
        nfc: pre.nfc,
        ignoreMerges: pre.ignoreMerges,
      });
      return new Tokenizer(model, stored.config(pre.addBos));
    }
    return Tokenizer.fromJson(sentencePieceTokenizer(stored), stored.config(true));
  } catch (err) {
    throw new CheckpointError(`${header.path}: the tokenizer in its metadata could not be built: ${(err as Error).message}`, {
      cause: err,
    });
  }
}

/**
 * The kind of every token. A loop rather than Uint8Array.from(types, tokenKind), which first lists
 * all 150k values in a JS array: enough to make V8 grow its young generation for good.
 */
function tokenKinds(types: ArrayLike<number>): Uint8Array {
  const kinds = new Uint8Array(types.length);
  for (let id = 0; id < types.length; id++) kinds[id] = tokenKind(types[id]);
  return kinds;
}

/** The tokenizer.json and tokenizer_config.json contents equivalent to the GGUF tokenizer. */
export function ggufTokenizerFiles(header: GgufHeader): HfTokenizerFiles {
  const stored = readStoredTokenizer(header);
  if (stored.kind === "gpt2") {
    const pre = preTokenizer(stored);
    return { tokenizerJson: byteLevelTokenizer(stored, pre), config: stored.config(pre.addBos) };
  }
  return { tokenizerJson: sentencePieceTokenizer(stored), config: stored.config(true) };
}

/** The tokenizer metadata every kind has, checked. */
interface StoredTokenizer {
  header: GgufHeader;
  kind: "gpt2" | "llama";
  tokens: StringTable;
  types: ArrayLike<number>;
  unk: number | undefined;
  /** tokenizer_config.json's equivalent, BOS added by default or not. */
  config(addBosDefault: boolean): TokenizerConfig;
  fail(problem: string): never;
}

function readStoredTokenizer(header: GgufHeader): StoredTokenizer {
  const fail = (problem: string): never => {
    throw new CheckpointError(`${header.path}: ${problem}`);
  };
  const kind = metadataString(header, "tokenizer.ggml.model");
  if (kind !== "gpt2" && kind !== "llama") {
    return fail(
      kind === undefined
        ? `has no tokenizer (tokenizer.ggml.model is missing); use a GGUF that includes one`
        : `has tokenizer.ggml.model ${JSON.stringify(kind)}, which is not supported; supported tokenizers are ${SUPPORTED_MODELS}`,
    );
  }
  const tokens = metadataStrings(header, "tokenizer.ggml.tokens") ?? fail("has no tokenizer.ggml.tokens; the file is incomplete");
  const types = metadataNumbers(header, "tokenizer.ggml.token_type") ?? new Uint8Array(tokens.length).fill(GGUF_TOKEN_TYPE.NORMAL);
  if (types.length !== tokens.length) {
    fail(`has ${types.length} tokenizer.ggml.token_type entries for ${tokens.length} tokens; the file is corrupt`);
  }
  const tokenId = (key: string): number | undefined => {
    const id = metadataNumber(header, key);
    if (id !== undefined && !(Number.isInteger(id) && id >= 0 && id < tokens.length)) {
      fail(`has ${key} ${id}, outside its ${tokens.length} tokens; the file is corrupt`);
    }
    return id;
  };
  const bos = tokenId("tokenizer.ggml.bos_token_id");
  const eos = tokenId("tokenizer.ggml.eos_token_id");
  const unk = tokenId("tokenizer.ggml.unknown_token_id");
  const config = (addBosDefault: boolean): TokenizerConfig => ({
    bos_token: bos === undefined ? null : tokens.at(bos),
    eos_token: eos === undefined ? null : tokens.at(eos),
    add_bos_token: metadataBool(header, "tokenizer.ggml.add_bos_token") ?? addBosDefault,
    clean_up_tokenization_spaces: false,
    chat_template: metadataString(header, "tokenizer.chat_template") ?? null,
  });
  return { header, kind, tokens, types, unk, config, fail };
}

function preTokenizer(stored: StoredTokenizer): PreTokenizer {
  const name = metadataString(stored.header, "tokenizer.ggml.pre") ?? "(none)";
  return Object.hasOwn(PRE_TOKENIZERS, name)
    ? PRE_TOKENIZERS[name]
    : stored.fail(
        `has tokenizer.ggml.pre ${JSON.stringify(name)}, which is not supported; supported values are ${Object.keys(PRE_TOKENIZERS).join(", ")}`,
      );
}

function storedMerges(stored: StoredTokenizer): StringTable {
  return (
    metadataStrings(stored.header, "tokenizer.ggml.merges") ??
    stored.fail("has a gpt2 tokenizer without tokenizer.ggml.merges; the file is incomplete")
  );
}

/** Control, user-defined and unknown tokens are added tokens (matched whole in the text). */
function tokenKind(type: number): number {
  switch (type) {
    case GGUF_TOKEN_TYPE.CONTROL:
    case GGUF_TOKEN_TYPE.UNKNOWN:
      return TOKEN_KIND.SPECIAL;
    case GGUF_TOKEN_TYPE.USER_DEFINED:
      return TOKEN_KIND.ADDED;
    case GGUF_TOKEN_TYPE.UNUSED:
      return TOKEN_KIND.UNUSED;
    default:
      return TOKEN_KIND.NORMAL;
  }
}

/** Special token ids from the model's config.json, for the tokens tokenizer_config.json leaves unnamed. */
export interface FallbackTokenIds {
  bos?: number;
  eos?: number;
}

interface AddedTokenJson {
  id: number;
  content: string;
  special?: boolean;
}

/**
 * The `tokenizer.*` GGUF metadata of a Hugging Face byte-level BPE tokenizer, as llama.cpp's
 * converter writes it:
 * - exactly `vocabSize` tokens, one per embedding row; ids the tokenizer does not use become
 *   "[PAD<id>]" tokens of type UNUSED (Qwen pads its embedding past the tokenizer);
 * - added tokens are CONTROL when marked special or spelled `<|…|>`, else USER_DEFINED;
 * - the pre-tokenizer is named by matching its split regex with the ones `ggufTokenizer` knows
 *   (or, for SmolLM's, its Digits and ByteLevel steps);
 * - special token ids come from tokenizer_config.json, else from `fallbackIds` (Qwen names its
 *   BOS only in config.json).
 */
export function ggufTokenizerMetadata(
  files: HfTokenizerFiles,
  vocabSize: number,
  fallbackIds: FallbackTokenIds = {},
): [string, GgufEntry][] {
  const fail = (problem: string): never => {
    throw new Error(`cannot write the tokenizer as GGUF metadata: ${problem}`);
  };
  const { tokenizerJson: json, config } = files;
  const model = json.model as { type?: unknown; vocab?: Record<string, number>; merges?: unknown[] } | undefined;
  if (model?.type !== "BPE" || typeof model.vocab !== "object" || !Array.isArray(model.merges)) {
    return fail(`tokenizer.json's model is not BPE with a vocab and merges; only byte-level BPE tokenizers are supported`);
  }
  const pre = byteLevelPreTokenizerName(json) ?? fail("the pre-tokenizer is not byte-level with the split of Qwen2, Llama 3 or SmolLM");

  const byId = new Map<number, { token: string; type: number }>();
  const place = (token: string, id: number, type: number): void => {
    if (!(Number.isInteger(id) && id >= 0 && id < vocabSize))
      fail(`token ${JSON.stringify(token)} has id ${id}, outside the model's ${vocabSize} embedding rows`);
    byId.set(id, { token, type });
  };
  for (const [token, id] of Object.entries(model.vocab)) place(token, id, GGUF_TOKEN_TYPE.NORMAL);
  for (const added of (json.added_tokens ?? []) as AddedTokenJson[]) {
    // llama.cpp's converter also treats <|…|> tokens as control tokens when they are not marked special.
    const control = added.special === true || (added.content.startsWith("<|") && added.content.endsWith("|>"));
    place(added.content, added.id, control ? GGUF_TOKEN_TYPE.CONTROL : GGUF_TOKEN_TYPE.USER_DEFINED);
  }
  const tokens: string[] = [];
  const types: number[] = [];
  for (let id = 0; id < vocabSize; id++) {
    const entry = byId.get(id) ?? { token: `[PAD${id}]`, type: GGUF_TOKEN_TYPE.UNUSED };
    tokens.push(entry.token);
    types.push(entry.type);
  }
  const merges = model.merges.map((m) =>
    typeof m === "string" ? m : Array.isArray(m) && m.length === 2 ? m.join(" ") : fail(`malformed merge ${JSON.stringify(m)}`),
  );

  const ids = new Map(tokens.map((t, id) => [t, id]));
  const named = (field: string): number | undefined => {
    const content = specialTokenContent(config[field] as TokenizerConfig["bos_token"]);
    if (content === undefined) return undefined;
    return ids.get(content) ?? fail(`tokenizer_config.json's ${field} ${JSON.stringify(content)} is not in the vocabulary`);
  };
  const specialIds: [string, number | undefined][] = [
    ["bos_token_id", named("bos_token") ?? fallbackIds.bos],
    ["eos_token_id", named("eos_token") ?? fallbackIds.eos],
    ["unknown_token_id", named("unk_token")],
    ["padding_token_id", named("pad_token")],
  ];

  const strings = (items: string[]): GgufEntry => ({ type: "array", value: { itemType: "string", items } });
  const metadata: [string, GgufEntry][] = [
    ["tokenizer.ggml.model", { type: "string", value: "gpt2" }],
    ["tokenizer.ggml.pre", { type: "string", value: pre }],
    ["tokenizer.ggml.tokens", strings(tokens)],
    ["tokenizer.ggml.token_type", { type: "array", value: { itemType: "int32", items: types } }],
    ["tokenizer.ggml.merges", strings(merges)],
  ];
  for (const [key, id] of specialIds) {
    if (id === undefined) continue;
    if (!(Number.isInteger(id) && id >= 0 && id < vocabSize)) fail(`${key} ${id} is outside the model's ${vocabSize} tokens`);
    metadata.push([`tokenizer.ggml.${key}`, { type: "uint32", value: id }]);
  }
  if (typeof config.add_bos_token === "boolean")
    metadata.push(["tokenizer.ggml.add_bos_token", { type: "bool", value: config.add_bos_token }]);
  // A list of named templates is stored as the default one plus tokenizer.chat_template.<name>.
  const templates =
    typeof config.chat_template === "string" ? [{ name: "default", template: config.chat_template }] : (config.chat_template ?? []);
  for (const { name, template } of templates) {
    const key = name === "default" ? "tokenizer.chat_template" : `tokenizer.chat_template.${name}`;
    metadata.push([key, { type: "string", value: template }]);
  }
  return metadata;
}

/**
 * Merges for a SentencePiece-style vocabulary: for each token (in id order), every split into
 * two tokens of the vocabulary, ordered by the ids of the two halves; then all of them ordered
 * by the merged token's score, highest first (a stable sort, so ties keep that order).
 */
export function mergesFromScores(tokens: readonly string[], scores: ArrayLike<number>): [string, string][] {
  const ids = new Map(tokens.map((t, id) => [t, id]));
  const merges: { left: string; right: string; score: number }[] = [];
  tokens.forEach((token, id) => {
    // Splits are by code point, so a token of astral characters is never cut inside a surrogate pair.
    const chars = Array.from(token);
    const local: { left: string; right: string; leftId: number; rightId: number }[] = [];
    for (let i = 1; i < chars.length; i++) {
      const left = chars.slice(0, i).join("");
      const right = chars.slice(i).join("");
      const leftId = ids.get(left);
      const rightId = ids.get(right);
      if (leftId !== undefined && rightId !== undefined) local.push({ left, right, leftId, rightId });
    }
    local.sort((a, b) => a.leftId - b.leftId || a.rightId - b.rightId);
    for (const { left, right } of local) merges.push({ left, right, score: scores[id] });
  });
  merges.sort((a, b) => b.score - a.score);
  return merges.map(({ left, right }) => [left, right]);
}

/** tokenizer.json's added_tokens: the tokens tokenKind makes added or special, matched whole in the text. */
function addedTokens(stored: StoredTokenizer): object[] {
  return stored.tokens.toArray().flatMap((content, id) => {
    const kind = tokenKind(stored.types[id]);
    if (kind !== TOKEN_KIND.ADDED && kind !== TOKEN_KIND.SPECIAL) return [];
    return [{ id, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: kind === TOKEN_KIND.SPECIAL }];
  });
}

function byteLevelTokenizer(stored: StoredTokenizer, pre: PreTokenizer): Record<string, unknown> {
  const merges = storedMerges(stored)
    .toArray()
    .map((merge) => {
      // Byte-level tokens never contain a space, so the first space separates the pair.
      const space = merge.indexOf(" ");
      return space > 0 ? [merge.slice(0, space), merge.slice(space + 1)] : stored.fail(`has a malformed merge ${JSON.stringify(merge)}`);
    });
  // llama.cpp pads the vocabulary to the embedding size with unused tokens that Hugging Face lacks.
  const vocab = Object.fromEntries(
    stored.tokens.toArray().flatMap((t, id) => (stored.types[id] === GGUF_TOKEN_TYPE.UNUSED ? [] : [[t, id]])),
  );
  const byteLevel = { type: "ByteLevel", add_prefix_space: false, trim_offsets: false, use_regex: false };
  return {
    version: "1.0",
    truncation: null,
    padding: null,
    added_tokens: addedTokens(stored),
    normalizer: pre.nfc ? { type: "NFC" } : null,
    pre_tokenizer: {
      type: "Sequence",
      pretokenizers: [{ type: "Split", pattern: { Regex: pre.regex }, behavior: "Isolated", invert: false }, byteLevel],
    },
    post_processor: byteLevel,
    decoder: byteLevel,
    model: {
      type: "BPE",
      dropout: null,
      unk_token: null,
      continuing_subword_prefix: "",
      end_of_word_suffix: "",
      fuse_unk: false,
      byte_fallback: false,
      ignore_merges: pre.ignoreMerges,
      vocab,
      merges,
    },
  };
}

function sentencePieceTokenizer(stored: StoredTokenizer): Record<string, unknown> {
  const tokens = stored.tokens.toArray();
  const scores = metadataNumbers(stored.header, "tokenizer.ggml.scores") ?? tokens.map(() => 0);
  if (scores.length !== tokens.length)
    stored.fail(`has ${scores.length} tokenizer.ggml.scores for ${tokens.length} tokens; the file is corrupt`);
  const addSpacePrefix = metadataBool(stored.header, "tokenizer.ggml.add_space_prefix") ?? true;
  const spaceToMeta = { type: "Replace", pattern: { String: " " }, content: "▁" };
  const decoders: object[] = [{ type: "Replace", pattern: { String: "▁" }, content: " " }, { type: "ByteFallback" }, { type: "Fuse" }];
  // The space prefixed to the text is not part of it, so decoding drops one leading space.
  if (addSpacePrefix) decoders.push({ type: "Strip", content: " ", start: 1, stop: 0 });
  return {
    version: "1.0",
    truncation: null,
    padding: null,
    added_tokens: addedTokens(stored),
    normalizer: addSpacePrefix ? { type: "Sequence", normalizers: [{ type: "Prepend", prepend: "▁" }, spaceToMeta] } : spaceToMeta,
    pre_tokenizer: null,
    // BOS is added through tokenizer_config's add_bos_token.
    post_processor: null,
    decoder: { type: "Sequence", decoders },
    model: {
      type: "BPE",
      dropout: null,
      unk_token: stored.unk === undefined ? null : tokens[stored.unk],
      continuing_subword_prefix: null,
      end_of_word_suffix: null,
      fuse_unk: true,
      byte_fallback: true,
      ignore_merges: false,
      vocab: Object.fromEntries(tokens.map((t, id) => [t, id])),
      merges: mergesFromScores(tokens, scores),
    },
  };
}
