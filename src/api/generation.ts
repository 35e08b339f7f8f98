/**
 * One request's output as the library gives it: an async iterator of chunks (the text that
 * became safe to show and the tokens it came from) and a promise of the whole result. Breaking
 * out of the loop, calling abort() or aborting the request's AbortSignal cancels the request in
 * the engine, which frees its KV blocks within a step; the output then ends normally with
 * finishReason "abort" and what was generated so far. An engine failure rejects both.
 */
import { CANCELLED, type ChoiceDelta, type ChoiceObserver, type ChoiceRun, type ChoiceTimings, type ReleasedToken } from "./choice-run.js";

/** Text that became safe to show, and the tokens it came from (with log-probabilities when asked for). */
export type GenerationChunk = ChoiceDelta;

export type { ReleasedToken as GeneratedToken };

export interface GenerationResult {
  text: string;
  /** "stop": an end-of-sequence token or a stop string; "length": maxTokens or the context; "abort": cancelled. */
  finishReason: "stop" | "length" | "abort";
  /** The stop string that ended the text, if one did. */
  stopString?: string;
  tokens: ReleasedToken[];
  usage: {
    promptTokens: number;
    /** Prompt tokens found in the prefix cache rather than computed. */
    cachedTokens: number;
    /** Tokens the engine generated (those after a stop string included). */
    completionTokens: number;
  };
  timings: ChoiceTimings;
  /** The seed the request sampled with. */
  seed?: number;
}

export class Generation implements AsyncIterable<GenerationChunk> {
  /** Resolves when the request ends; rejects if the engine failed on it. */
  readonly result: Promise<GenerationResult>;
  private readonly run: ChoiceRun;
  private readonly chunks: GenerationChunk[] = [];
  private ended = false;
  private wake: (() => void) | undefined;
  private read = false;

  /** `start` submits the request with the observer it is given (Engine does this). */
  constructor(start: (observer: ChoiceObserver) => ChoiceRun) {
    this.run = start({ onDelta: (delta) => this.push(delta) });
    this.result = this.run.done.then((r) => {
      this.ended = true;
      this.wake?.();
      if (r.finish === "error") throw new Error(r.message ?? "the engine failed on this request");
      const result: GenerationResult = {
        text: r.text,
        finishReason: r.finish,
        tokens: r.tokens,
        usage: { promptTokens: r.promptTokens, cachedTokens: r.cachedTokens, completionTokens: r.completionTokens },
        timings: r.timings,
      };
      if (r.stopString !== undefined) result.stopString = r.stopString;
      if (r.seed !== undefined) result.seed = r.seed;
      return result;
    });
    // A caller that only iterates still gets the error from the iterator; this keeps it from
    // also counting as an unhandled rejection.
    this.result.catch(() => {});
  }

  /** Cancels the request; the output ends with finishReason "abort". */
  abort(): void {
    this.run.abort(CANCELLED);
  }

  /** The chunks as they come; it can be read once. */
  [Symbol.asyncIterator](): AsyncIterator<GenerationChunk> {
    if (this.read) throw new Error("a generation's chunks can be read only once; await its result for the whole text");
    this.read = true;
    return this.chunksAsTheyCome();
  }

  private async *chunksAsTheyCome(): AsyncGenerator<GenerationChunk> {
    try {
      for (;;) {
        const chunk = this.chunks.shift();
        if (chunk) yield chunk;
        else if (this.ended) break;
        else await new Promise<void>((resolve) => (this.wake = resolve));
      }
      await this.result;
    } finally {
      // Past the end this does nothing; a loop left early (break, return, a throw) cancels the request.
      this.abort();
    }
  }

  private push(chunk: GenerationChunk): void {
    this.chunks.push(chunk);
    this.wake?.();
  }
}
