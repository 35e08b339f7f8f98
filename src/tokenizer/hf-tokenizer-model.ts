import { createRequire } from "node:module";
import type * as HfTokenizers from "@huggingface/tokenizers";
import type { TokenizerConfig, TokenizerModel } from "./tokenizer.js";

type HfTokenizer = HfTokenizers.Tokenizer;

/**
 * The library, loaded when a tokenizer first needs it: most checkpoints never do
 * (byte-level-bpe.ts runs theirs), and its code would otherwise take room in every process.
 */
let library: typeof HfTokenizers | undefined;
const hfTokenizers = (): typeof HfTokenizers =>
  (library ??= createRequire(import.meta.url)("@huggingface/tokenizers") as typeof HfTokenizers);

/** Any tokenizer.json, through @huggingface/tokenizers. */
export class HfTokenizerModel implements TokenizerModel {
  readonly vocabSize: number;
  readonly specialIds: ReadonlySet<number>;
  private readonly hf: HfTokenizer;

  constructor(tokenizerJson: object, config: TokenizerConfig) {
    // The library cleans up spaces (" ." becomes ".") unless the config says not to; llama.cpp and
    // the Rust tokenizers never do, and that rewrite would make streamed text differ from a decode.
    this.hf = new (hfTokenizers().Tokenizer)(tokenizerJson, {
      ...config,
      clean_up_tokenization_spaces: config.clean_up_tokenization_spaces ?? false,
    });
    let maxId = -1;
    for (const id of this.hf.get_vocab(true).values()) maxId = Math.max(maxId, id);
    this.vocabSize = maxId + 1;
    this.specialIds = new Set([...this.hf.get_added_tokens_decoder()].filter(([, token]) => token.special).map(([id]) => id));
  }

  encode(text: string, addSpecialTokens: boolean): number[] {
    return this.hf.encode(text, { add_special_tokens: addSpecialTokens }).ids;
  }

  decode(ids: readonly number[], skipSpecialTokens: boolean): string {
    // Ids past the tokenizer's vocabulary (the padding rows of a model's embedding) print nothing,
    // as in llama.cpp; the library would print its unknown token instead.
    const known = ids.filter((id) => this.hf.id_to_token(id) !== undefined);
    // The library throws on an empty list.
    if (known.length === 0) return "";
    return this.hf.decode(known, { skip_special_tokens: skipSpecialTokens });
  }

  idToToken(id: number): string | undefined {
    return this.hf.id_to_token(id);
  }

  tokenToId(token: string): number | undefined {
    return this.hf.token_to_id(token);
  }
}
