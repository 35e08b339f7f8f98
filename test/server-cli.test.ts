/**
 * `tiny-llm serve` as a process: bad flags are one line and exit 1; the server listens at once,
 * prints one line when ready, writes --trace-steps, and on SIGTERM or SIGINT lets running
 * requests finish (or, past --shutdown-timeout, ends them with an error event) and exits 0.
 */
import assert from "node:assert/strict";
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import { postJson, readSse, withTimeout } from "./support/server.js";
import { projectRoot, sharedPath } from "./support/shared.js";

const cli = join(projectRoot, "dist", "src", "cli", "main.js");
const storiesModel = sharedPath("models", "stories260k-qwen2");
const randomModel = sharedPath("models", "tiny-random-qwen2");

test("bad flags are one line on stderr and exit 1", () => {
  const model = storiesModel.path;
  const cases: [string[], RegExp][] = [
    // No --model is the default model: offline with an empty cache, one line before listening.
    [[], /Qwen\/Qwen2\.5-0\.5B-Instruct is not in the Hugging Face cache .* downloads are off/],
    [["--model", model, "--port", "abc"], /--port expects a whole number/],
    [["--model", model, "--port", "70000"], /--port must be at most 65535/],
    [["--model", model, "--kv-dtype", "f8"], /--kv-dtype must be f32, f16 or bf16/],
    [["--model", model, "--kv-cache-size", "lots"], /--kv-cache-size/],
    [["--model", model, "--max-queue=-1"], /--max-queue must be at least 0/],
    [["--model", model, "--max-num-seqs", "0"], /--max-num-seqs must be at least 1/],
    [["--model", model, "--shutdown-timeout", "soon"], /--shutdown-timeout expects seconds/],
    [["--model", model, "--backend", "gpu"], /--backend must be "native" or "ts"/],
    [["--model", model, "--batch-invariant", "maybe"], /--batch-invariant must be "on" or "off"/],
    [["--model", model, "--bogus"], /unknown option --bogus/],
    [["--model", "/nonexistent/model"], /does not exist/],
    [
      ["--model", model, "--chat-template", "/nonexistent/template.jinja"],
      /--chat-template \/nonexistent\/template.jinja cannot be read: ENOENT/,
    ],
    [["--model", model, "--chat-template-kwargs", "[1]"], /--chat-template-kwargs must be a JSON object/],
  ];
  for (const [args, message] of cases) {
    const env = { ...process.env, HF_HUB_OFFLINE: "1", HF_HUB_CACHE: join(tmpdir(), "tiny-llm-serve-no-cache") };
    const r = spawnSync(process.execPath, [cli, "serve", ...args], { encoding: "utf8", timeout: 30_000, env });
    assert.equal(r.status, 1, `${args.join(" ")}: ${r.stderr}`);
    assert.equal(r.stdout, "");
    const lines = r.stderr.trimEnd().split("\n");
    assert.equal(lines.length, 1, r.stderr);
    assert.match(lines[0], /^tiny-llm: error: /);
    assert.match(lines[0], message);
  }
  const help = spawnSync(process.execPath, [cli, "serve", "--help"], { encoding: "utf8", timeout: 30_000 });
  assert.equal(help.status, 0);
  assert.match(help.stdout, /--shutdown-timeout/);
});

/** Resolves with the first match of `pattern` in what the stream has written so far. */
function waitForOutput(stream: NodeJS.ReadableStream, pattern: RegExp, what: string, ms = 60_000): Promise<RegExpMatchArray> {
  let seen = "";
  return withTimeout(
    new Promise((resolve, reject) => {
      const onData = (chunk: Buffer) => {
        seen += chunk.toString("utf8");
        const m = seen.match(pattern);
        if (m) {
          stream.off("data", onData);
          resolve(m);
        }
      };
      stream.on("data", onData);
      stream.once("end", () => reject(new Error(`the stream ended before ${what}: ${seen}`)));
    }),
    ms,
    what,
  );
}

function exitOf(child: ChildProcess): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve({ code: child.exitCode, signal: child.signalCode });
  return new Promise((resolve) => child.once("exit", (code, signal) => resolve({ code, signal })));
}

describe("tiny-llm serve as a process", { skip: storiesModel.skip || randomModel.skip }, () => {
  const children: ChildProcess[] = [];
  const dir = mkdtempSync(join(tmpdir(), "tiny-llm-serve-"));
  after(() => {
    for (const child of children) if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
    rmSync(dir, { recursive: true, force: true });
  });

  function serve(args: string[]): { child: ChildProcess; stderr: string[] } {
    const child = spawn(process.execPath, [cli, "serve", "--port", "0", ...args], { stdio: ["ignore", "pipe", "pipe"] });
    children.push(child);
    const stderr: string[] = [];
    child.stderr?.on("data", (chunk: Buffer) => stderr.push(chunk.toString("utf8")));
    return { child, stderr };
  }

  test("--chat-template FILE gives a model without a template chat: the messages rendered by it, as a completion of that text", async () => {
    const template = join(dir, "story.jinja");
    writeFileSync(template, "{{ bos_token }}{% for message in messages %}{{ message.content }}\n{% endfor %}");
    const started = [serve(["--model", storiesModel.path]), serve(["--model", storiesModel.path, "--chat-template", template])];
    const [plain, templated] = await Promise.all(
      started.map(async ({ child }) => {
        const [, url] = await waitForOutput(child.stderr as NodeJS.ReadableStream, /listening on (http:\/\/127\.0\.0\.1:\d+)/, "the url");
        await waitForOutput(child.stdout as NodeJS.ReadableStream, /^tiny-llm: serving .*\n/m, "the ready line");
        return url;
      }),
    );
    const chat = { messages: [{ role: "user", content: "Once upon a time" }], max_tokens: 24, temperature: 0 };
    const refused = await postJson(`${plain}/v1/chat/completions`, chat);
    assert.equal(refused.status, 400);
    assert.match(((await refused.json()) as { error: { message: string } }).error.message, /--chat-template FILE/);
    const answered = await postJson(`${templated}/v1/chat/completions`, chat);
    assert.equal(answered.status, 200);
    const reply = (await answered.json()) as { choices: { message: { content: string } }[]; usage: { prompt_tokens: number } };
    const completion = (await (
      await postJson(`${templated}/v1/completions`, { prompt: "Once upon a time\n", max_tokens: 24, temperature: 0 })
    ).json()) as { choices: { text: string }[]; usage: { prompt_tokens: number } };
    assert.equal(reply.usage.prompt_tokens, completion.usage.prompt_tokens);
    assert.equal(reply.choices[0].message.content, completion.choices[0].text);
    for (const { child } of started) child.kill("SIGTERM");
    for (const { child } of started)
      assert.deepEqual(await withTimeout(exitOf(child), 30_000, "the server to exit"), { code: 0, signal: null });
  });

  test("listens at once, says when ready, traces steps, and on SIGTERM finishes the running request and exits 0", async () => {
    const trace = join(dir, "steps.jsonl");
    const { child, stderr } = serve(["--model", storiesModel.path, "--api-key", "k", "--trace-steps", trace, "--shutdown-timeout", "20"]);
    const [, url] = await waitForOutput(
      child.stderr as NodeJS.ReadableStream,
      /listening on (http:\/\/127\.0\.0\.1:\d+)/,
      "the listening line",
    );
    const early = await fetch(`${url}/health`);
    // The model may already be loaded; if not, /health says so.
    if (early.status === 503) assert.deepEqual(await early.json(), { status: "loading" });
    else assert.equal(early.status, 200);

    const [ready] = await waitForOutput(child.stdout as NodeJS.ReadableStream, /^tiny-llm: serving .*\n/m, "the ready line");
    assert.match(ready, new RegExp(`at ${url.replaceAll(".", "\\.")} \\| (native|ts) backend .* \\| KV pool \\d+ blocks × 16 tokens`));
    assert.equal((await fetch(`${url}/health`)).status, 200);

    const response = await fetch(`${url}/v1/completions`, {
      method: "POST",
      headers: { "content-type": "application/json", authorization: "Bearer k" },
      body: JSON.stringify({
        prompt: "",
        max_tokens: 500,
        temperature: 0,
        ignore_eos: true,
        stream: true,
        stream_options: { include_usage: true },
      }),
    });
    assert.equal(response.status, 200);
    const events = readSse(response);
    child.kill("SIGTERM");
    const all = await withTimeout(events, 30_000, "the running stream to finish");
    assert.equal(all.at(-1), "[DONE]");
    const usage = all.at(-2) as { usage: { completion_tokens: number } };
    assert.equal(usage.usage.completion_tokens, 500);
    const finish = all.map((e) => (e as { choices?: { finish_reason: string | null }[] }).choices?.[0]?.finish_reason).filter(Boolean);
    assert.deepEqual(finish, ["length"]);

    const exit = await withTimeout(exitOf(child), 30_000, "the server to exit");
    assert.deepEqual(exit, { code: 0, signal: null }, stderr.join(""));
    assert.match(stderr.join(""), /SIGTERM: shutting down/);
    await assert.rejects(fetch(`${url}/health`), "no longer listening");

    const steps = readFileSync(trace, "utf8")
      .trimEnd()
      .split("\n")
      .map((line) => JSON.parse(line));
    assert.ok(steps.length >= 500, `${steps.length} steps traced`);
    for (const step of steps) {
      assert.equal(typeof step.step, "number");
      assert.equal(typeof step.ms, "number");
      assert.ok(Array.isArray(step.requests) && step.requests.length > 0);
    }
    const kinds = new Set(steps.flatMap((s: { requests: { kind: string }[] }) => s.requests.map((r) => r.kind)));
    assert.deepEqual([...kinds].sort(), ["decode", "prefill"]);
  });

  test("past --shutdown-timeout, SIGINT aborts the requests still running with an error event, then exits 0", async () => {
    const { child, stderr } = serve(["--model", randomModel.path, "--shutdown-timeout", "0.3"]);
    const [, url] = await waitForOutput(
      child.stdout as NodeJS.ReadableStream,
      /serving .* at (http:\/\/127\.0\.0\.1:\d+)/,
      "the ready line",
    );
    const streams = await Promise.all(
      Array.from({ length: 4 }, () =>
        fetch(`${url}/v1/completions`, {
          method: "POST",
          headers: { "content-type": "application/json" },
          body: JSON.stringify({ prompt: "Once upon a time", max_tokens: 3000, temperature: 0, ignore_eos: true, stream: true }),
        }),
      ),
    );
    const events = streams.map((r) => readSse(r));
    const started = Date.now();
    child.kill("SIGINT");
    const results = await withTimeout(Promise.all(events), 30_000, "the streams to end");
    for (const all of results) {
      const last = all.at(-1) as { error?: { message: string; type: string } };
      assert.match(last.error?.message ?? "", /shut down before this request finished/);
      assert.equal(last.error?.type, "service_unavailable");
    }
    const exit = await withTimeout(exitOf(child), 30_000, "the server to exit");
    assert.deepEqual(exit, { code: 0, signal: null }, stderr.join(""));
    assert.ok(Date.now() - started >= 250, "the grace period was given");
  });
});
