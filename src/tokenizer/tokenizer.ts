import { readFileSync } from "node:fs";
import { join } from "node:path";
import { ByteLevelBpe, byteLevelBpeTables } from "./byte-level-bpe.js";
import { HfTokenizerModel } from "./hf-tokenizer-model.js";
import { splitTokenizerJson, type TokenizerJsonFile } from "./tokenizer-json.js";

/** A special token as tokenizer_config.json writes it: plain text, or an AddedToken object. */
export type SpecialTokenField = string | { content: string } | null;

/** One entry of the list form of `chat_template`. */
export interface NamedChatTemplate {
  name: string;
  template: string;
}

/** The tokenizer_config.json fields this engine reads; the rest pass through to the tokenizer library. */
export interface TokenizerConfig {
  bos_token?: SpecialTokenField;
  eos_token?: SpecialTokenField;
  add_bos_token?: boolean;
  clean_up_tokenization_spaces?: boolean;
  chat_template?: string | NamedChatTemplate[] | null;
  [key: string]: unknown;
}

export interface EncodeOptions {
  /** Add BOS (or whatever the tokenizer's post-processor adds). Default true. */
  addSpecialTokens?: boolean;
}

export interface DecodeOptions {
  /** Leave out special tokens such as `<s>` or `<|im_end|>`. Default false. */
  skipSpecialTokens?: boolean;
}

/** The text of a special token field, or undefined when the config has none. */
export function specialTokenContent(field: SpecialTokenField | undefined): string | undefined {
  if (field === null || field === undefined) return undefined;
  return typeof field === "string" ? field : field.content;
}

/**
 * What a tokenization model provides: the Hugging Face library (any tokenizer.json) and the
 * compact byte-level BPE (GGUF vocabularies and plain byte-level tokenizer.json files) both do.
 */
export interface TokenizerModel {
  /** One more than the largest token id, counting added tokens. */
  readonly vocabSize: number;
  /** Added tokens that decoding can skip. */
  readonly specialIds: ReadonlySet<number>;
  /** The ids of the text, with what the model's post-processor adds when `addSpecialTokens`. */
  encode(text: string, addSpecialTokens: boolean): number[];
  /** The text of the ids; ids without a token (see idToToken) print nothing. */
  decode(ids: readonly number[], skipSpecialTokens: boolean): string;
  idToToken(id: number): string | undefined;
  tokenToId(token: string): number | undefined;
}

/**
 * A tokenizer as Hugging Face's tokenizer_config.json describes it around its model: BOS, EOS and
 * whether BOS is added, and the chat template. Special tokens in the text, such as
 * `<|im_start|>`, are parsed into their ids.
 */
export class Tokenizer {
  readonly config: TokenizerConfig;
  readonly bosId: number | undefined;
  /** The EOS id from tokenizer_config's eos_token; empty when the tokenizer names none. */
  readonly eosIds: number[];
  /** One more than the largest token id, counting added tokens. */
  readonly vocabSize: number;
  private readonly model: TokenizerModel;
  private readonly addsBos: boolean;
  private readonly modelAddsBos: boolean;

  /** Reads `tokenizer.json` and `tokenizer_config.json` from a model folder. */
  static fromDir(dir: string): Tokenizer {
    const tokenizerPath = join(dir, "tokenizer.json");
    const file = splitTokenizerJson(readFile(tokenizerPath), (text) => parseJsonObject(tokenizerPath, text));
    const config = parseJsonObject(
      join(dir, "tokenizer_config.json"),
      readFile(join(dir, "tokenizer_config.json")).toString("utf8"),
    ) as TokenizerConfig;
    try {
      return Tokenizer.fromFile(file, config);
    } catch (err) {
      throw new Error(
        `The tokenizer in ${dir} could not be built: ${errorMessage(err)}. ` +
          "Check that tokenizer.json and tokenizer_config.json come from the same Hugging Face model.",
        { cause: err },
      );
    }
  }

  /** Builds a tokenizer from the parsed contents of tokenizer.json and tokenizer_config.json. */
  static fromJson(tokenizerJson: object, config: TokenizerConfig): Tokenizer {
    const json = tokenizerJson as Record<string, unknown>;
    return Tokenizer.fromFile({ json, bpe: undefined, parseWhole: () => json }, config);
  }

  /**
   * Plain byte-level BPE (Qwen's) runs on compact tables, a fraction of the library's memory
   * (docs/benchmarks.md); anything else runs on @huggingface/tokenizers, which takes the whole file.
   */
  private static fromFile(file: TokenizerJsonFile, config: TokenizerConfig): Tokenizer {
    const tables = byteLevelBpeTables(file.json, config, file.bpe);
    return new Tokenizer(
      tables ? new ByteLevelBpe(tables) : new HfTokenizerModel(file.bpe ? file.parseWhole() : file.json, config),
      config,
    );
  }

  constructor(model: TokenizerModel, config: TokenizerConfig) {
    this.model = model;
    this.config = config;
    this.vocabSize = model.vocabSize;
    this.bosId = this.resolveToken("bos_token", config.bos_token);
    const eosId = this.resolveToken("eos_token", config.eos_token);
    this.eosIds = eosId === undefined ? [] : [eosId];

    // An explicit add_bos_token overrides what tokenizer.json's post-processor does, as in
    // transformers' Llama tokenizers; this also lets a tokenizer rebuilt from GGUF metadata set
    // BOS through the config alone.
    this.modelAddsBos = this.bosId !== undefined && model.encode("", true)[0] === this.bosId;
    this.addsBos = typeof config.add_bos_token === "boolean" ? config.add_bos_token && this.bosId !== undefined : this.modelAddsBos;
  }

  encode(text: string, opts: EncodeOptions = {}): number[] {
    const addSpecialTokens = opts.addSpecialTokens ?? true;
    const ids = this.model.encode(text, addSpecialTokens);
    if (!addSpecialTokens || this.addsBos === this.modelAddsBos) return ids;
    return this.addsBos ? [this.bosId as number, ...ids] : ids.slice(1);
  }

  decode(ids: readonly number[], opts: DecodeOptions = {}): string {
    return this.model.decode(ids, opts.skipSpecialTokens ?? false);
  }

  /** The token's text as the vocabulary spells it (e.g. "▁the", "Ġthe", "<0xE4>"), if the id has one. */
  idToToken(id: number): string | undefined {
    return this.model.idToToken(id);
  }

  isSpecial(id: number): boolean {
    return this.model.specialIds.has(id);
  }

  private resolveToken(field: string, value: SpecialTokenField | undefined): number | undefined {
    const content = specialTokenContent(value);
    if (content === undefined) return undefined;
    const id = this.model.tokenToId(content);
    if (id === undefined) {
      throw new Error(`tokenizer_config.json's ${field} "${content}" is not in the tokenizer's vocabulary`);
    }
    return id;
  }
}

function readFile(path: string): Buffer {
  try {
    return readFileSync(path);
  } catch (err) {
    const missing = (err as NodeJS.ErrnoException).code === "ENOENT";
    throw new Error(
      missing
        ? `${path} not found: the model folder needs the tokenizer.json and tokenizer_config.json ` +
            "from the model's Hugging Face repository; download them next to the weights."
        : `Cannot read ${path}: ${errorMessage(err)}`,
      { cause: err },
    );
  }
}

function parseJsonObject(path: string, text: string): Record<string, unknown> {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    throw new Error(
      `${path} is not valid JSON (${errorMessage(err)}). The file may be truncated or a Git LFS ` +
        "pointer: download it again from the model's Hugging Face repository.",
      { cause: err },
    );
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw new Error(`${path} does not hold a JSON object: download it again from the model's Hugging Face repository.`);
  }
  return value as Record<string, unknown>;
}

function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
