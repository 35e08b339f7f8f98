/**
 * One token's text and bytes, as log-probabilities show them: " the" with its leading space (a
 * SentencePiece decoder drops that space from the first token of a text, so the token is
 * decoded after an anchor token and the anchor's text cut off), and the raw bytes a token stands
 * for even when they are part of a character (byte-fallback "<0xE4>", byte-level "Ã¤").
 */
import type { Tokenizer } from "../tokenizer/tokenizer.js";

const REPLACEMENT_CHAR = "\uFFFD";
const BYTE_FALLBACK = /^<0x([0-9A-Fa-f]{2})>$/;

/** GPT-2's byte-level alphabet read backwards: the character that stands for each byte → the byte. */
function byteLevelDecoder(): Map<string, number> {
  const decoder = new Map<string, number>();
  let shifted = 0;
  for (let byte = 0; byte < 256; byte++) {
    const printable = (byte >= 0x21 && byte <= 0x7e) || (byte >= 0xa1 && byte <= 0xac) || (byte >= 0xae && byte <= 0xff);
    decoder.set(String.fromCodePoint(printable ? byte : 256 + shifted++), byte);
  }
  return decoder;
}

let byteLevel: Map<string, number> | undefined;

export type TokenTextSource = Pick<Tokenizer, "decode" | "encode" | "idToToken">;

export class TokenText {
  private readonly pieces = new Map<number, string>();
  private readonly anchor: number[];
  private readonly anchorText: string;

  constructor(private readonly tokenizer: TokenTextSource) {
    this.anchor = tokenizer.encode("a", { addSpecialTokens: false }).slice(-1);
    this.anchorText = tokenizer.decode(this.anchor);
  }

  /** The token's text (special tokens included), as it reads in the middle of a text. */
  piece(id: number): string {
    let piece = this.pieces.get(id);
    if (piece === undefined) {
      const inContext = this.tokenizer.decode([...this.anchor, id]);
      piece =
        this.anchor.length > 0 && inContext.startsWith(this.anchorText)
          ? inContext.slice(this.anchorText.length)
          : this.tokenizer.decode([id]);
      if (this.pieces.size < 65536) this.pieces.set(id, piece);
    }
    return piece;
  }

  /** The UTF-8 bytes the token stands for. */
  bytes(id: number): number[] {
    const piece = this.piece(id);
    if (!piece.includes(REPLACEMENT_CHAR)) return [...Buffer.from(piece, "utf8")];
    const token = this.tokenizer.idToToken(id) ?? "";
    const fallback = BYTE_FALLBACK.exec(token);
    if (fallback) return [parseInt(fallback[1], 16)];
    byteLevel ??= byteLevelDecoder();
    const bytes = [...token].map((ch) => byteLevel?.get(ch));
    if (bytes.length > 0 && bytes.every((b) => b !== undefined)) return bytes as number[];
    return [...Buffer.from(piece, "utf8")];
  }
}
