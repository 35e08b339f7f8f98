/**
 * Stop strings matched in streamed text. Generated text arrives a token at a time, and a stop
 * string can span tokens ("\n\n" as two "\n" tokens, "The End" as "The", " End"), so text that
 * could still turn out to be the start of a stop string is held back until it either completes
 * one (the request stops there, and the stop string itself is never shown) or can no longer be
 * one (it is released). Nothing is streamed and then taken back.
 */

/** The most stop strings a request may give (OpenAI's limit). */
export const MAX_STOP_STRINGS = 4;

export interface StopPush {
  /** Text that is safe to show now: it cannot become part of a stop string. */
  text: string;
  /** A stop string was completed: `text` ends just before it, and nothing follows. */
  stopped: boolean;
}

export class StopStringMatcher {
  private readonly stops: readonly string[];
  /** Text received but not yet released: always a proper prefix of some stop string. */
  private held = "";
  private stoppedAt: string | undefined;

  /** Empty strings are ignored (they would match everywhere). */
  constructor(stops: readonly string[]) {
    if (stops.length > MAX_STOP_STRINGS) throw new RangeError(`at most ${MAX_STOP_STRINGS} stop strings, got ${stops.length}`);
    this.stops = stops.filter((s) => s.length > 0);
  }

  /** The stop string that ended the text, once one has. */
  get matched(): string | undefined {
    return this.stoppedAt;
  }

  get stopped(): boolean {
    return this.stoppedAt !== undefined;
  }

  /** Adds the next piece of text; after a stop every push returns no text. */
  push(text: string): StopPush {
    if (this.stoppedAt !== undefined) return { text: "", stopped: true };
    if (this.stops.length === 0) return { text, stopped: false };
    const buffer = this.held + text;
    // The earliest stop string in the buffer wins. None can start in text already released: that
    // text was released because no suffix of it was a prefix of any stop string.
    let cut = -1;
    for (const stop of this.stops) {
      const at = buffer.indexOf(stop);
      if (at >= 0 && (cut < 0 || at < cut)) {
        cut = at;
        this.stoppedAt = stop;
      }
    }
    if (cut >= 0) {
      this.held = "";
      return { text: buffer.slice(0, cut), stopped: true };
    }
    const keep = this.longestPartialMatch(buffer);
    this.held = buffer.slice(buffer.length - keep);
    return { text: buffer.slice(0, buffer.length - keep), stopped: false };
  }

  /** At the end of generation: whatever was held back, since no stop string can complete now. */
  flush(): string {
    const rest = this.held;
    this.held = "";
    return rest;
  }

  /** The length of the longest suffix of `buffer` that is a proper prefix of a stop string. */
  private longestPartialMatch(buffer: string): number {
    let best = 0;
    for (const stop of this.stops) {
      for (let k = Math.min(buffer.length, stop.length - 1); k > best; k--) {
        if (buffer.endsWith(stop.slice(0, k))) {
          best = k;
          break;
        }
      }
    }
    return best;
  }
}
