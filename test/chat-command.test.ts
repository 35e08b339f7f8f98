// `tiny-llm chat` in a real pseudo-terminal (tmux, on a server of this test's own): typing a
// message and seeing the reply stream, Ctrl-C stopping a reply and the chat going on, the speed
// line's cached count showing that earlier turns come from the prefix cache, /system, /save,
// /reset, and leaving with Ctrl-C twice or Ctrl-D.
import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { DEFAULT_BLOCK_SIZE } from "../src/engine/engine-options.js";
import { projectRoot, sharedPath } from "./support/shared.js";

const MODEL = sharedPath("models", "tiny-random-qwen2");
const hasTmux = spawnSync("tmux", ["-V"]).status === 0;
const skip = MODEL.skip || (hasTmux ? false : "tmux is not installed");

const socket = `tiny-llm-chat-test-${process.pid}`;
const tmux = (...args: string[]): string => execFileSync("tmux", ["-L", socket, ...args], { encoding: "utf8" });
const work = mkdtempSync(join(tmpdir(), "tiny-llm-chat-"));

after(() => {
  if (hasTmux) spawnSync("tmux", ["-L", socket, "kill-server"]);
  rmSync(work, { recursive: true, force: true });
});

const quote = (s: string): string => `'${s.replaceAll("'", `'\\''`)}'`;

/** Starts `tiny-llm chat` with these options in a new 200-column window; the shell reports its exit. */
function startChat(session: string, args: string[]): void {
  const cli = join(projectRoot, "dist", "src", "cli", "main.js");
  const command = [process.execPath, cli, "chat", "--model", MODEL.path, ...args].map(quote).join(" ");
  tmux("new-session", "-d", "-s", session, "-x", "200", "-y", "50", `${command}; echo "[exited $?]"; sleep 600`);
}

/** The window's whole text, its scrollback included, with wrapped lines joined. */
const screen = (session: string): string => tmux("capture-pane", "-p", "-J", "-S", "-", "-t", session);

async function waitFor(session: string, what: string, ok: (text: string) => boolean, ms = 30_000): Promise<string> {
  const end = Date.now() + ms;
  for (;;) {
    const text = screen(session);
    if (ok(text)) return text;
    if (Date.now() > end) assert.fail(`timed out waiting for ${what}; the window shows:\n${text}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

function type(session: string, line: string): void {
  tmux("send-keys", "-t", session, "-l", line);
  tmux("send-keys", "-t", session, "Enter");
}

interface Speed {
  line: string;
  tokens: number;
  prompt: number;
  cached: number;
}

function speedLines(text: string): Speed[] {
  return [...text.matchAll(/^.*?(\d+) tokens?, .*?(\d+) prompt tokens \((\d+) cached\)$/gm)].map((m) => ({
    line: m[0],
    tokens: Number(m[1]),
    prompt: Number(m[2]),
    cached: Number(m[3]),
  }));
}

const blocks = (tokens: number): number => Math.floor(tokens / DEFAULT_BLOCK_SIZE) * DEFAULT_BLOCK_SIZE;

/** Sends `message`, waits until part of the reply is on the screen (no speed line yet), then Ctrl-C. */
async function interruptReply(session: string, message: string, before: number): Promise<Speed> {
  type(session, message);
  const echoed = `> ${message}\n`;
  await waitFor(session, `the reply to "${message}" to stream`, (text) => {
    const after = text.slice(text.lastIndexOf(echoed) + echoed.length);
    return text.includes(echoed) && after.trim().length >= 20 && speedLines(text).length === before;
  });
  tmux("send-keys", "-t", session, "C-c");
  const text = await waitFor(session, "the interrupted reply's speed line", (t) => speedLines(t).length === before + 1);
  const speed = speedLines(text)[before];
  assert.match(speed.line, /^\[interrupted\] /);
  return speed;
}

test("chat in a terminal: streamed replies, Ctrl-C, prefix-cache reuse, /system, /save, /reset, leaving", { skip }, async () => {
  const s = "chat";
  // The TypeScript kernels make replies slow enough to watch and to interrupt.
  startChat(s, ["--backend", "ts", "--temperature", "0", "--max-tokens", "600", "--system", "Be brief."]);
  await waitFor(s, "the chat to start", (t) => t.includes("Type a message") && t.trimEnd().endsWith(">"));

  type(s, "Who are you?");
  const one = speedLines(await waitFor(s, "the first reply", (t) => speedLines(t).length === 1))[0];
  assert.doesNotMatch(one.line, /interrupted/, "the first reply ended by itself");
  assert.equal(one.cached, 0);

  // Every token of the first turn but the reply's last was computed; all full blocks are found.
  const two = await interruptReply(s, "Tell me a long story.", 1);
  assert.ok(two.tokens > 0 && two.tokens < 600, `${two.tokens} tokens before Ctrl-C`);
  assert.ok(two.prompt > one.prompt + one.tokens, "the second prompt holds the first turn");
  assert.equal(two.cached, blocks(one.prompt + one.tokens - 1), two.line);

  // Stopped, the chat goes on, with the interrupted reply in the conversation.
  type(s, "Go on");
  const three = speedLines(await waitFor(s, "the third reply", (t) => speedLines(t).length === 3))[2];
  assert.ok(three.prompt > two.prompt + two.tokens - 1);
  assert.ok(three.cached >= blocks(two.prompt), three.line);

  type(s, "/system Be very brief.");
  await waitFor(s, "/system's note", (t) => t.includes("(system message set)"));
  const saved = join(work, "conversation.json");
  type(s, `/save ${saved}`);
  await waitFor(s, "/save's note", (t) => t.includes(`(saved 7 messages to ${saved})`));
  const file = JSON.parse(readFileSync(saved, "utf8")) as { model: string; messages: { role: string; content: string }[] };
  assert.equal(file.model, MODEL.path);
  assert.deepEqual(
    file.messages.map((m) => m.role),
    ["system", "user", "assistant", "user", "assistant", "user", "assistant"],
  );
  assert.deepEqual(
    file.messages.filter((m) => m.role !== "assistant").map((m) => m.content),
    ["Be very brief.", "Who are you?", "Tell me a long story.", "Go on"],
  );
  assert.ok(file.messages.every((m) => m.role !== "assistant" || m.content.length > 0));

  type(s, "/reset");
  await waitFor(s, "/reset's note", (t) => t.includes("(conversation cleared)"));
  type(s, "Who are you?");
  const fresh = speedLines(await waitFor(s, "the reply after /reset", (t) => speedLines(t).length === 4))[3];
  assert.ok(fresh.prompt < two.prompt, "the conversation started over");
  assert.ok(fresh.cached < fresh.prompt);

  tmux("send-keys", "-t", s, "C-c");
  await waitFor(s, "the hint after one Ctrl-C", (t) => t.includes("(Ctrl-C again or Ctrl-D to exit)"));
  assert.doesNotMatch(screen(s), /\[exited/);
  tmux("send-keys", "-t", s, "C-c");
  await waitFor(s, "the chat to exit after a second Ctrl-C", (t) => t.includes("[exited 0]"));
});

test("Ctrl-D leaves the chat, even during a reply", { skip }, async () => {
  const s = "eof";
  startChat(s, ["--backend", "ts", "--temperature", "0", "--max-tokens", "600"]);
  await waitFor(s, "the chat to start", (t) => t.includes("Type a message") && t.trimEnd().endsWith(">"));
  type(s, "Tell me a long story.");
  await waitFor(s, "the reply to stream", (t) => t.split("> Tell me a long story.\n")[1]?.trim().length > 20);
  tmux("send-keys", "-t", s, "C-d");
  const text = await waitFor(s, "the chat to exit", (t) => t.includes("[exited 0]"));
  assert.match(text, /\[interrupted\] \d+ tokens/);
});

test("a bad --chat-template-kwargs or --chat-template is one line and exit 1", { skip: MODEL.skip }, () => {
  const cli = join(projectRoot, "dist", "src", "cli", "main.js");
  const run = (...args: string[]) =>
    spawnSync(process.execPath, [cli, "chat", "--model", MODEL.path, ...args], { encoding: "utf8", input: "" });
  const notJson = run("--chat-template-kwargs", "{enable_thinking: false}");
  assert.equal(notJson.status, 1);
  assert.match(notJson.stderr, /^tiny-llm: error: --chat-template-kwargs is not JSON .*'\{"enable_thinking": false\}'\n$/);
  const missing = run("--chat-template", join(work, "none.jinja"));
  assert.equal(missing.status, 1);
  assert.match(missing.stderr, /^tiny-llm: error: --chat-template .*none\.jinja cannot be read: ENOENT\n$/);
  const stories = sharedPath("models", "stories260k-qwen2");
  if (!stories.skip) {
    const none = spawnSync(process.execPath, [cli, "chat", "--model", stories.path], { encoding: "utf8", input: "" });
    assert.equal(none.status, 1);
    assert.match(none.stderr, /tiny-llm: error: .*has no chat template/);
  }
});
