/**
 * One choice of one request, from the engine's token events to text a client may see: tokens are
 * decoded as a stream (never splitting a character), stop strings are matched across token
 * boundaries and held back until they can be told apart from ordinary text, and each token's
 * log-probabilities are released together with the text they belong to. A stop string ends the
 * request in the engine as well, so its blocks are freed at once.
 */
import type { RequestEvent, RequestParams, TopLogprob } from "../engine/api.js";
import type { AsyncEngine } from "../engine/async-engine.js";
import { StopStringMatcher } from "../generation/stop-strings.js";
import type { Tokenizer } from "../tokenizer/tokenizer.js";
import { StreamDecoder } from "../tokenizer/stream-decoder.js";

/** What the server needs of the engine (AsyncEngine). */
export type ServingEngine = Pick<AsyncEngine, "info" | "check" | "submit" | "abort" | "inFlight" | "stats" | "onStep" | "close" | "failed">;

/** A generated token, released with its text. */
export interface ReleasedToken {
  id: number;
  /** The text this token added to the completion (may be "" for part of a character). */
  text: string;
  /** Where that text starts in the completion. */
  offset: number;
  logprob?: number;
  top?: TopLogprob[];
}

export interface ChoiceDelta {
  text: string;
  tokens: ReleasedToken[];
}

export type ChoiceFinish = "stop" | "length" | "abort" | "error";

export interface ChoiceResult {
  finish: ChoiceFinish;
  /** With "abort" and "error": why. */
  message?: string;
  /** The stop string that ended the text, if one did. */
  stopString?: string;
  text: string;
  tokens: ReleasedToken[];
  /** Tokens the engine generated for this choice (those after a stop string included). */
  completionTokens: number;
  promptTokens: number;
  cachedTokens: number;
  seed?: number;
}

export interface ChoiceObserver {
  /** Called for every piece of text (or tokens) that became safe to show. */
  onDelta?(delta: ChoiceDelta): void;
  /** Seconds from submission to the first generated token. */
  onFirstToken?(seconds: number): void;
  /** Mean seconds per output token after the first, once a choice with two or more tokens ends. */
  onFinish?(result: ChoiceResult, secondsPerToken: number | undefined): void;
}

export class ChoiceRun {
  readonly done: Promise<ChoiceResult>;
  private resolve!: (result: ChoiceResult) => void;
  private readonly decoder: StreamDecoder;
  private readonly matcher: StopStringMatcher;
  /** Tokens whose text is not all released yet. */
  private pending: ReleasedToken[] = [];
  private readonly released: ReleasedToken[] = [];
  /** Length of all text decoded so far, released or held. */
  private decodedLength = 0;
  private text = "";
  private generated = 0;
  private promptTokens: number;
  private cachedTokens = 0;
  private seed: number | undefined;
  private ended = false;
  private abortMessage: string | undefined;
  private readonly submitted = performance.now();
  private firstTokenAt = 0;
  private lastTokenAt = 0;

  constructor(
    private readonly engine: Pick<ServingEngine, "submit" | "abort">,
    tokenizer: Pick<Tokenizer, "decode">,
    readonly id: string,
    params: RequestParams,
    stops: readonly string[],
    private readonly observer: ChoiceObserver = {},
  ) {
    this.done = new Promise((resolve) => (this.resolve = resolve));
    this.decoder = new StreamDecoder(tokenizer, { skipSpecialTokens: true, context: params.promptIds });
    this.matcher = new StopStringMatcher(stops);
    this.promptTokens = params.promptIds.length;
    this.seed = params.sampling.seed;
    if (params.maxTokens === 0) {
      // Nothing to generate (echo of a prompt alone): the engine is not involved.
      this.finish("length");
      return;
    }
    engine.submit(id, params, (event) => this.receive(event));
  }

  /** Ends the request in the engine; `done` resolves with finish "abort" and this message. */
  abort(message: string): void {
    if (this.ended) return;
    this.abortMessage = message;
    this.engine.abort(this.id);
  }

  get finished(): boolean {
    return this.ended;
  }

  private receive(event: RequestEvent): void {
    if (this.ended) return;
    if (event.seed !== undefined) this.seed = event.seed;
    if (event.promptTokens !== undefined) this.promptTokens = event.promptTokens;
    if (event.cachedTokens !== undefined) this.cachedTokens = event.cachedTokens;
    let delta = "";
    for (const token of event.tokens) {
      const now = performance.now();
      if (this.generated === 0) {
        this.firstTokenAt = now;
        this.observer.onFirstToken?.((now - this.submitted) / 1000);
      }
      this.lastTokenAt = now;
      this.generated++;
      delta += this.add(token.id, this.decoder.push(token.id), token.logprob, token.top);
      if (this.matcher.stopped) break;
    }
    if (this.matcher.stopped) {
      // The engine would go on to max_tokens: end it there, and ignore what it still sends.
      this.engine.abort(this.id);
      this.emit(delta, this.releaseAll());
      this.finish("stop");
      return;
    }
    if (event.finish === "stop" || event.finish === "length") {
      delta += this.add(undefined, this.decoder.flush());
      if (!this.matcher.stopped) delta += this.show(this.matcher.flush());
      this.emit(delta, this.releaseAll());
      this.finish(this.matcher.stopped ? "stop" : event.finish);
      return;
    }
    this.emit(delta, this.releaseShown());
    if (event.finish === "abort") this.finish("abort", this.abortMessage ?? event.message ?? "the request was cancelled");
    else if (event.finish === "error") this.finish("error", event.message ?? "the engine failed on this request");
  }

  /** Takes a token's decoded text through the stop-string matcher; returns the text that became safe to show. */
  private add(id: number | undefined, piece: string, logprob?: number, top?: TopLogprob[]): string {
    if (id !== undefined) {
      const token: ReleasedToken = { id, text: piece, offset: this.decodedLength };
      if (logprob !== undefined) token.logprob = logprob;
      if (top !== undefined) token.top = top;
      this.pending.push(token);
    } else if (piece.length > 0 && this.pending.length > 0) {
      // Flushed text (an incomplete character at the end) belongs to the last token.
      this.pending[this.pending.length - 1].text += piece;
    }
    this.decodedLength += piece.length;
    return this.show(this.matcher.push(piece).text);
  }

  private show(text: string): string {
    this.text += text;
    return text;
  }

  /**
   * The pending tokens whose text is all shown. Tokens with no text of their own (the first
   * bytes of a character) wait for the token that completes it, so that text flushed at the end
   * always has a token to belong to.
   */
  private releaseShown(): ReleasedToken[] {
    const shown = this.text.length;
    let n = 0;
    let upTo = 0;
    while (n < this.pending.length && this.pending[n].offset + this.pending[n].text.length <= shown) {
      if (this.pending[n++].text.length > 0) upTo = n;
    }
    return this.take(upTo);
  }

  /**
   * At the end: every token whose text starts before the end of the shown text (after a stop
   * string, the one it starts in is cut to the part before it, and later ones are dropped).
   */
  private releaseAll(): ReleasedToken[] {
    const shown = this.text.length;
    if (!this.matcher.stopped) return this.take(this.pending.length);
    let n = 0;
    while (n < this.pending.length && this.pending[n].offset < shown) n++;
    const tokens = this.take(n);
    const last = tokens[tokens.length - 1];
    if (last && last.offset + last.text.length > shown) last.text = last.text.slice(0, shown - last.offset);
    this.pending = [];
    return tokens;
  }

  private take(n: number): ReleasedToken[] {
    const tokens = this.pending.slice(0, n);
    this.pending = this.pending.slice(n);
    this.released.push(...tokens);
    return tokens;
  }

  private emit(text: string, tokens: ReleasedToken[]): void {
    if (text.length > 0 || tokens.length > 0) this.observer.onDelta?.({ text, tokens });
  }

  private finish(finish: ChoiceFinish, message?: string): void {
    this.ended = true;
    const result: ChoiceResult = {
      finish,
      text: this.text,
      tokens: this.released,
      completionTokens: this.generated,
      promptTokens: this.promptTokens,
      cachedTokens: this.cachedTokens,
    };
    if (message !== undefined) result.message = message;
    if (this.matcher.matched !== undefined) result.stopString = this.matcher.matched;
    if (this.seed !== undefined) result.seed = this.seed;
    const perToken = this.generated > 1 ? (this.lastTokenAt - this.firstTokenAt) / 1000 / (this.generated - 1) : undefined;
    this.observer.onFinish?.(result, perToken);
    this.resolve(result);
  }
}
