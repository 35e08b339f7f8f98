/**
 * Graceful shutdown: stop accepting connections and requests, give the requests in flight a
 * grace period to finish, abort the rest (their clients get an error: a 503, or an error event
 * in a stream), then close the connections and the engine.
 */
import type { FastifyInstance } from "fastify";
import type { ServerState } from "./serving.js";

/** How long aborted requests get to send their error before connections are cut. */
export const ABORT_GRACE_MS = 5000;

function within(promise: Promise<void>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(false), ms)));
  return Promise.race([promise.then(() => true), timeout]).finally(() => clearTimeout(timer));
}

export interface ShutdownHandle {
  /** Starts shutting down (again: aborts what is still running at once); resolves when all is closed. */
  shutdown(): Promise<void>;
}

/**
 * Returns the shutdown routine for a server. The first call drains for up to `graceMs`; a second
 * call (a second Ctrl-C) cuts the grace period short.
 */
export function gracefulShutdown(app: FastifyInstance, state: ServerState, graceMs: number): ShutdownHandle {
  let done: Promise<void> | undefined;
  let cutShort: (() => void) | undefined;
  const abortAll = (): void => {
    for (const request of state.active) request.abort("the server shut down before this request finished");
  };
  return {
    shutdown(): Promise<void> {
      if (done) {
        cutShort?.();
        return done;
      }
      done = (async () => {
        state.drain();
        // Stops listening; resolves once every connection is closed.
        const closing = app.close();
        const hurried = new Promise<void>((resolve) => (cutShort = resolve));
        const finished = await within(Promise.race([state.whenIdle(), hurried]), graceMs);
        if (!finished || state.active.size > 0) {
          abortAll();
          await within(state.whenIdle(), ABORT_GRACE_MS);
        }
        app.server.closeAllConnections();
        await closing;
        await state.model?.engine.close();
      })();
      return done;
    },
  };
}
