/**
 * llama.cpp's `llama-server` (built by `npm run build:llama-cpp`) on a loopback port, as the
 * independent reference real-model tests hold tiny-llm against: its tokenizer (`/tokenize`,
 * `/detokenize`), its chat-template engine (`/apply-template`, with `--jinja`) and its greedy
 * decoding with log-probabilities (`/completion`).
 *
 * A server is always stopped: `close()` ends it (SIGTERM, then SIGKILL after a few seconds), and a
 * process exit handler kills any still running should a test file die first.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { request } from "node:http";
import { createServer } from "node:net";
import { llamaCppTool } from "../../scripts/llama-cpp-paths.js";

export interface LlamaServerOptions {
  /** Context size (default 4096). */
  ctx?: number;
  /** Threads (default 2). */
  threads?: number;
  /** Milliseconds to wait for /health (default 120 s). */
  startTimeoutMs?: number;
}

/** One step of llama.cpp's greedy decoding: the token it picked and its top log-probabilities. */
export interface LlamaStep {
  id: number;
  logprob: number;
  /** Best first, from a softmax over the whole vocabulary of the raw logits. */
  top: { id: number; logprob: number }[];
}

export interface ChatMessageJson {
  role: string;
  content: string;
}

const running = new Set<ChildProcess>();
process.on("exit", () => {
  for (const child of running) child.kill("SIGKILL");
});

/** A free TCP port on 127.0.0.1, as the system hands one out. */
async function freePort(): Promise<number> {
  return await new Promise((resolve, reject) => {
    const server = createServer();
    server.unref();
    server.on("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      server.close(() => (typeof address === "object" && address !== null ? resolve(address.port) : reject(new Error("no port"))));
    });
  });
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

export class LlamaServer {
  private exited = false;

  private constructor(
    private readonly child: ChildProcess,
    readonly url: string,
    private readonly log: () => string,
  ) {
    child.once("exit", () => {
      this.exited = true;
      running.delete(child);
    });
  }

  /** Starts llama-server on `model` and waits until /health answers; undefined where it is not built. */
  static async start(model: string, opts: LlamaServerOptions = {}): Promise<LlamaServer> {
    const binary = llamaCppTool("llama-server");
    if (binary === undefined) throw new Error("llama-server is not built (npm run build:llama-cpp)");
    let lastError: Error | undefined;
    // The port is free when asked for, and may be taken before the server binds it: try again.
    for (let attempt = 0; attempt < 3; attempt++) {
      const port = await freePort();
      const args = ["-m", model, "--host", "127.0.0.1", "--port", String(port), "-c", String(opts.ctx ?? 4096), "-np", "1"];
      args.push(
        "-t",
        String(opts.threads ?? 2),
        "-tb",
        String(opts.threads ?? 2),
        "--jinja",
        "--no-webui",
        "--cache-ram",
        "0",
        "--no-warmup",
      );
      const child = spawn(binary, args, { stdio: ["ignore", "ignore", "pipe"] });
      running.add(child);
      let stderr = "";
      child.stderr?.setEncoding("utf8").on("data", (chunk: string) => {
        stderr = (stderr + chunk).slice(-8000);
      });
      const server = new LlamaServer(child, `http://127.0.0.1:${port}`, () => stderr);
      try {
        await server.waitHealthy(opts.startTimeoutMs ?? 120_000);
        return server;
      } catch (error) {
        lastError = error as Error;
        await server.close();
        if (!/bind|address already in use/i.test(stderr)) break;
      }
    }
    throw lastError ?? new Error("llama-server did not start");
  }

  private async waitHealthy(timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      if (this.exited) throw new Error(`llama-server exited before it was ready: ${this.tail()}`);
      try {
        const response = await fetch(`${this.url}/health`, { signal: AbortSignal.timeout(2000) });
        if (response.ok) return;
      } catch {
        // Not listening yet.
      }
      await sleep(200);
    }
    throw new Error(`llama-server was not ready within ${timeoutMs / 1000} s: ${this.tail()}`);
  }

  private tail(): string {
    return this.log().trim().split("\n").slice(-5).join(" | ");
  }

  /** Ends the server and waits for it to go (SIGKILL after 5 s). */
  async close(): Promise<void> {
    if (this.exited) return;
    const gone = new Promise<void>((resolve) => this.child.once("exit", () => resolve()));
    this.child.kill("SIGTERM");
    const timer = setTimeout(() => this.child.kill("SIGKILL"), 5000);
    await gone;
    clearTimeout(timer);
  }

  /** A JSON request on a connection of its own (a kept-alive one may be closed by the server while a slow test computes). */
  private async post<T>(path: string, body: unknown, timeoutMs = 300_000): Promise<T> {
    const payload = Buffer.from(JSON.stringify(body));
    const { status, text } = await new Promise<{ status: number; text: string }>((resolve, reject) => {
      const req = request(
        `${this.url}${path}`,
        {
          method: "POST",
          agent: false,
          headers: { "content-type": "application/json", "content-length": payload.length },
          timeout: timeoutMs,
        },
        (res) => {
          let data = "";
          res.setEncoding("utf8");
          res.on("data", (chunk: string) => (data += chunk));
          res.on("end", () => resolve({ status: res.statusCode ?? 0, text: data }));
          res.on("error", reject);
        },
      );
      req.on("timeout", () => req.destroy(new Error(`llama-server ${path}: no answer within ${timeoutMs / 1000} s`)));
      req.on("error", reject);
      req.end(payload);
    });
    if (status !== 200) throw new Error(`llama-server ${path}: HTTP ${status}: ${text.slice(0, 500)}`);
    return JSON.parse(text) as T;
  }

  /** llama.cpp's ids for `text`: special-token text parsed into its ids, BOS added only if asked. */
  async tokenize(text: string, addSpecial = false): Promise<number[]> {
    const out = await this.post<{ tokens: number[] }>("/tokenize", { content: text, add_special: addSpecial, parse_special: true });
    return out.tokens;
  }

  async detokenize(ids: readonly number[]): Promise<string> {
    return (await this.post<{ content: string }>("/detokenize", { tokens: ids })).content;
  }

  /** The prompt text llama.cpp's template engine renders for a conversation (generation prompt added). */
  async applyTemplate(messages: readonly ChatMessageJson[]): Promise<string> {
    return (await this.post<{ prompt: string }>("/apply-template", { messages })).prompt;
  }

  /**
   * Greedy decoding from `prompt` (token ids) for up to `maxTokens` tokens (fewer when an end of
   * generation token comes), each with the `nProbs` most likely tokens' log-probabilities.
   */
  async greedy(prompt: readonly number[], maxTokens: number, nProbs = 5): Promise<LlamaStep[]> {
    type Prob = { id: number; logprob: number };
    const out = await this.post<{ completion_probabilities: (Prob & { top_logprobs: Prob[] })[] }>("/completion", {
      prompt,
      n_predict: maxTokens,
      n_probs: nProbs,
      temperature: 0,
      top_k: 1,
      samplers: ["top_k"],
      cache_prompt: false,
      stream: false,
    });
    return out.completion_probabilities.map((p) => ({
      id: p.id,
      logprob: p.logprob,
      top: p.top_logprobs.map((t) => ({ id: t.id, logprob: t.logprob })),
    }));
  }
}

/**
 * A llama-server for the tests of one `describe` block: started in its `before` hook, stopped in
 * its `after` hook (which node:test runs whether or not the tests passed). `get()` throws the
 * start-up error, so every test of the block fails with it.
 */
export function llamaServerFixture(
  hooks: { before: (fn: () => Promise<void>) => void; after: (fn: () => Promise<void>) => void },
  model: string | undefined,
  opts?: LlamaServerOptions,
): () => LlamaServer {
  let server: LlamaServer | undefined;
  let failure: Error | undefined;
  hooks.before(async () => {
    if (model === undefined || llamaCppTool("llama-server") === undefined) return;
    try {
      server = await LlamaServer.start(model, opts);
    } catch (error) {
      failure = error as Error;
    }
  });
  hooks.after(async () => {
    await server?.close();
  });
  return () => {
    if (server !== undefined) return server;
    throw failure ?? new Error("llama-server was not started");
  };
}
