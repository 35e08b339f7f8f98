/**
 * What the CLI writes: results on stdout, which may be a pipe whose reader stops early
 * (`| head`); notices and errors on stderr, one line each; and on a terminal a status line
 * rewritten in place (loading, quantizing), which is never written to a pipe or a file. Colour
 * only on a terminal, and never with NO_COLOR set (https://no-color.org).
 */

let stdoutClosed = false;

/**
 * Makes a reader that stops early (EPIPE) end the output quietly instead of with a stack trace,
 * and any other failure to write it (a full disk) one line; outputClosed() then tells a
 * long-running command to stop.
 */
export function watchStdout(): void {
  process.stdout.on("error", (err: NodeJS.ErrnoException) => {
    stdoutClosed = true;
    if (err.code === "EPIPE") return;
    process.stderr.write(errorLine(`cannot write the output: ${err.message}`));
    process.exitCode = 1;
  });
}

/** True once stdout's reader has gone: nothing written from then on is read. */
export function outputClosed(): boolean {
  // A failed write sets `errored` at once; the error event comes only later.
  return stdoutClosed || process.stdout.errored !== null;
}

/** Writes to stdout unless its reader has gone; false when it has. */
export function writeOut(text: string): boolean {
  if (outputClosed()) return false;
  if (text.length > 0) process.stdout.write(text);
  return !outputClosed();
}

/** Whether `stream` is a terminal that takes colour. */
export function colourOn(stream: NodeJS.WriteStream): boolean {
  return stream.isTTY === true && !process.env.NO_COLOR && process.env.TERM !== "dumb";
}

/** `text` in SGR colour `code` when `stream` takes colour. */
export function paint(stream: NodeJS.WriteStream, code: number, text: string): string {
  return colourOn(stream) ? `\x1b[${code}m${text}\x1b[0m` : text;
}

const ERASE_LINE = "\r\x1b[2K";

/** One line of stderr rewritten in place while something runs; shown only when stderr is a terminal. */
class StatusLine {
  private shown = false;
  private last = 0;

  constructor(private readonly stream: NodeJS.WriteStream) {}

  private get enabled(): boolean {
    return this.stream.isTTY === true && process.env.TERM !== "dumb";
  }

  /** Shows `text` in place of the last status; updates come at most every 100 ms unless `now`. */
  show(text: string, now = true): void {
    if (!this.enabled) return;
    const t = performance.now();
    if (!now && t - this.last < 100) return;
    this.last = t;
    // Cut to the terminal's width: a wrapped line could not be rewritten in place.
    const width = Math.max(10, (this.stream.columns || 80) - 1);
    const line = text.length > width ? text.slice(0, width - 1) + "…" : text;
    this.stream.write(ERASE_LINE + paint(this.stream, 2, line));
    this.shown = true;
  }

  /** Removes the status line, before other output or at the end. */
  clear(): void {
    if (!this.shown) return;
    this.stream.write(ERASE_LINE);
    this.shown = false;
  }
}

export const status = new StatusLine(process.stderr);

/** Bytes in MB, or GB from a gigabyte on (powers of 1000, as the hub and `ls -h --si` count). */
export function formatBytes(bytes: number): string {
  return bytes >= 1e9 ? `${(bytes / 1e9).toFixed(2)} GB` : `${(bytes / 1e6).toFixed(1)} MB`;
}

/** A one-line notice on stderr ("tiny-llm: …"). */
export function notice(text: string): void {
  status.clear();
  process.stderr.write(`tiny-llm: ${text}\n`);
}

/** The one line an error is reported as. */
export function errorLine(message: string): string {
  status.clear();
  return `tiny-llm: ${paint(process.stderr, 31, "error")}: ${message.replace(/\s*\n\s*/g, " ").trim()}\n`;
}
