import type { DecodeOptions, Tokenizer } from "./tokenizer.js";

/** What StreamDecoder needs from a tokenizer. */
export type Detokenizer = Pick<Tokenizer, "decode">;

export interface StreamDecoderOptions extends DecodeOptions {
  /**
   * Ids that come before the streamed ones, such as the prompt. They are never printed; they
   * give the first streamed token the context it has in the full text, so that a SentencePiece
   * decoder does not strip its leading space as the start of the text.
   */
  context?: readonly number[];
}

const REPLACEMENT_CHAR = "\uFFFD";
/** How many ids of `context` to keep: enough for any decoder that only looks at the first token. */
const CONTEXT_IDS = 4;
/**
 * A UTF-8 character has at most 4 bytes and every token adds at least one, so a character
 * cannot stay incomplete over this many held tokens: the U+FFFD is then in the text itself
 * (or the bytes are invalid), and the tokens are printed rather than held forever.
 */
const MAX_HELD_IDS = 8;

/**
 * Turns generated ids into printable text one token at a time. A character can span several
 * tokens (byte-fallback pieces like <0xE4>, or byte-level BPE pieces), and some decoders change a
 * token's text depending on what precedes it, so each step decodes a short window (the last
 * printed tokens plus the held ones) and prints only what that window adds to the printed part.
 * The printed chunks concatenate to the tokenizer's decode of all ids.
 */
export class StreamDecoder {
  private readonly tokenizer: Detokenizer;
  private readonly decodeOptions: DecodeOptions;
  /** The last printed ids followed by the held (not yet printed) ones. */
  private window: number[];
  /** How many ids at the start of `window` are already printed. */
  private printedIds: number;
  /** decode(window.slice(0, printedIds)). */
  private printedText: string;

  constructor(tokenizer: Detokenizer, opts: StreamDecoderOptions = {}) {
    this.tokenizer = tokenizer;
    this.decodeOptions = { skipSpecialTokens: opts.skipSpecialTokens };
    this.window = (opts.context ?? []).slice(-CONTEXT_IDS);
    this.printedIds = this.window.length;
    this.printedText = this.decode(this.window);
  }

  /** Adds one id; returns the text that became printable (possibly ""). */
  push(id: number): string {
    this.window.push(id);
    const text = this.decode(this.window);
    const held = this.window.length - this.printedIds;
    const incomplete = text.length <= this.printedText.length || text.endsWith(REPLACEMENT_CHAR);
    return incomplete && held < MAX_HELD_IDS ? "" : this.print(text);
  }

  /** Returns whatever is still held, such as an incomplete character at the end of generation. */
  flush(): string {
    // Nothing held: keep the printed ids as context for any later push.
    if (this.window.length === this.printedIds) return "";
    return this.print(this.decode(this.window));
  }

  /** Prints the held ids (whose window decodes to `text`); they become the context for the next ones. */
  private print(text: string): string {
    const chunk = text.slice(this.printedText.length);
    this.window = this.window.slice(this.printedIds);
    this.printedIds = this.window.length;
    this.printedText = this.decode(this.window);
    return chunk;
  }

  private decode(ids: number[]): string {
    return this.tokenizer.decode(ids, this.decodeOptions);
  }
}
