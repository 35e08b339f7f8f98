/**
 * Server-sent events on a response Fastify has handed over: `data: <json>` events, `data: [DONE]`
 * at the end, and an error event (then the end of the stream) when something fails after the
 * stream has begun, when no status code can be sent any more.
 */
import type { ServerResponse } from "node:http";
import type { FastifyReply } from "fastify";
import type { ApiError } from "./errors.js";

export class SseStream {
  private readonly res: ServerResponse;
  private ended = false;

  /** Takes over the reply and sends the event-stream headers. */
  constructor(reply: FastifyReply) {
    reply.hijack();
    this.res = reply.raw;
    this.res.writeHead(200, {
      "content-type": "text/event-stream; charset=utf-8",
      "cache-control": "no-cache",
      connection: "keep-alive",
      "x-accel-buffering": "no",
    });
    // Headers go out now, so that a client sees the stream open before the first token.
    this.res.flushHeaders();
  }

  /** False once the stream has ended or the client has gone. */
  get open(): boolean {
    return !this.ended && !this.res.destroyed && this.res.writable;
  }

  send(data: unknown): void {
    if (this.open) this.res.write(`data: ${JSON.stringify(data)}\n\n`);
  }

  /** `data: [DONE]` and the end of the response. */
  done(): void {
    if (this.open) this.res.write("data: [DONE]\n\n");
    this.end();
  }

  /** An error event in OpenAI's shape, then the end of the stream. */
  fail(error: ApiError): void {
    this.send(error.toJSON());
    this.end();
  }

  private end(): void {
    if (this.ended) return;
    this.ended = true;
    if (!this.res.destroyed) this.res.end();
  }
}

/**
 * Calls `onGone` if the client disconnects before the response is complete (mid-stream, or
 * while its request waits in the queue).
 */
export function onClientGone(reply: FastifyReply, onGone: () => void): void {
  const res = reply.raw;
  res.once("close", () => {
    if (!res.writableFinished) onGone();
  });
}
