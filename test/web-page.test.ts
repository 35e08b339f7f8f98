/**
 * The chat page at / in headless Chromium (Debian's chromium, driven by playwright-core) against
 * the real server: a prompt streams story text from the stories260k model, TTFT and tokens/s
 * show under the reply, a second turn sends both turns, Stop ends a long reply mid-way (and the
 * server aborts it), and with --api-key a wrong key is a visible error and the right one works.
 */
import assert from "node:assert/strict";
import { existsSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { chromium, type Browser, type Page } from "playwright-core";
import { metrics, metricValue, postJson, startServer, waitFor, type TestServer } from "./support/server.js";
import { sharedPath } from "./support/shared.js";

const CHROMIUM = "/usr/bin/chromium";
const CHROMIUM_FLAGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-background-networking",
  "--disable-component-update",
  "--no-first-run",
  "--disable-quic",
  "--disable-sync",
];
const storiesModel = sharedPath("models", "stories260k-qwen2");
const chatModel = sharedPath("models", "tiny-random-qwen2");
const skip = existsSync(CHROMIUM)
  ? storiesModel.skip || chatModel.skip
  : `${CHROMIUM} not found: install Debian's chromium package to test the chat page`;

/**
 * stories260k has no chat template. This one (BOS, then each message's text on a line of its
 * own) lets the story model go on with the conversation as a story, as serve --chat-template FILE would.
 */
const STORY_TEMPLATE = "{{ bos_token }}{% for message in messages %}{{ message.content }}\n{% endfor %}";
const API_KEY = "page-test-key";

interface ChatBody {
  messages: { role: string; content: string }[];
  stream?: boolean;
  stream_options?: { include_usage?: boolean };
  temperature?: number;
  max_tokens?: number;
}

/** The page's requests to /v1/chat/completions, body and Authorization header. */
function captureChatRequests(page: Page): { body: ChatBody; authorization: string | undefined }[] {
  const requests: { body: ChatBody; authorization: string | undefined }[] = [];
  page.on("request", (request) => {
    if (request.url().endsWith("/v1/chat/completions")) {
      requests.push({ body: request.postDataJSON() as ChatBody, authorization: request.headers()["authorization"] });
    }
  });
  return requests;
}

/** The reply the API gives for these messages, without the page, and its token count. */
async function directReply(server: TestServer, body: ChatBody): Promise<{ text: string; tokens: number }> {
  const response = await postJson(`${server.url}/v1/chat/completions`, { ...body, stream: false }, { authorization: `Bearer ${API_KEY}` });
  assert.equal(response.status, 200);
  const reply = (await response.json()) as { choices: { message: { content: string } }[]; usage: { completion_tokens: number } };
  return { text: reply.choices[0].message.content, tokens: reply.usage.completion_tokens };
}

/**
 * Records, from inside the page, the length of the newest reply's text at every change and the
 * task it happened in: a timer counts tasks, so changes in different tasks came from different
 * reads of the stream, while text that arrived all at once is added within one task.
 */
async function recordReplyLengths(page: Page): Promise<void> {
  await page.evaluate(() => {
    const w = window as unknown as { replyLengths: { task: number; n: number }[] };
    w.replyLengths = [];
    let task = 0;
    setInterval(() => task++, 1);
    new MutationObserver(() => {
      const content = [...document.querySelectorAll(".message.assistant .content")].at(-1);
      if (content) w.replyLengths.push({ task, n: content.textContent?.length ?? 0 });
    }).observe(document.getElementById("messages")!, { subtree: true, childList: true, characterData: true });
  });
}

async function replyLengths(page: Page): Promise<{ task: number; n: number }[]> {
  return page.evaluate(() => (window as unknown as { replyLengths: { task: number; n: number }[] }).replyLengths);
}

/** Types a message and sends it with Enter. */
async function say(page: Page, text: string): Promise<void> {
  await page.fill("#prompt", text);
  await page.press("#prompt", "Enter");
}

/** Waits until the `index`-th reply's stats line matches `pattern`, and returns it. */
async function replyStats(page: Page, index: number, pattern: RegExp): Promise<string> {
  const stats = page.locator(".message.assistant .stats").nth(index);
  await page.waitForFunction(
    ([i, source]) => new RegExp(source).test(document.querySelectorAll(".message.assistant .stats")[i]?.textContent ?? ""),
    [index, pattern.source] as const,
  );
  return (await stats.textContent()) ?? "";
}

const replyText = async (page: Page, index: number) => (await page.locator(".message.assistant .content").nth(index).textContent()) ?? "";

async function setting(page: Page, selector: string, value: string): Promise<void> {
  if (!(await page.locator("#settings").evaluate((d) => (d as HTMLDetailsElement).open))) await page.click("#settings summary");
  await page.fill(selector, value);
}

async function abortedRequests(server: TestServer): Promise<number> {
  const text = await metrics(server.url);
  const name = "tiny_llm_requests_finished_total";
  const labels = 'finish_reason="abort"';
  // The labelled sample appears with the first aborted request.
  return text.includes(`${name}{${labels}}`) ? metricValue(text, name, labels) : 0;
}

const STATS = /^TTFT \d+\.\d\d s · \d+(\.\d)? tokens\/s · (\d+) tokens/;
const statsTokens = (stats: string) => Number(STATS.exec(stats)?.[2]);

describe("the chat page in headless Chromium", { skip }, () => {
  let stories: TestServer;
  let keyed: TestServer;
  let browser: Browser;
  let page: Page;
  let chatRequests: ReturnType<typeof captureChatRequests>;
  const pageErrors: Error[] = [];
  const foreignRequests: string[] = [];

  before(async () => {
    // The TypeScript backend, at a third of the native kernels' speed: so that even on a busy
    // machine a reply takes long enough to reach the page in many reads.
    stories = await startServer(storiesModel.path, { engine: { backend: "ts" }, chatTemplate: { chatTemplate: STORY_TEMPLATE } });
    keyed = await startServer(chatModel.path, { app: { apiKey: API_KEY } });
    browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: CHROMIUM_FLAGS });
    page = await browser.newPage({ viewport: { width: 800, height: 700 } });
    page.setDefaultTimeout(30_000);
    page.on("pageerror", (err) => pageErrors.push(err));
    page.on("request", (request) => {
      if (!request.url().startsWith(`${stories.url}/`) && !request.url().startsWith("data:")) foreignRequests.push(request.url());
    });
    chatRequests = captureChatRequests(page);
    const response = await page.goto(`${stories.url}/`);
    assert.equal(response?.status(), 200);
    assert.match(response?.headers()["content-security-policy"] ?? "", /default-src 'none'/);
    await recordReplyLengths(page);
  });
  after(async () => {
    await browser?.close();
    await Promise.all([stories?.close(), keyed?.close()]);
  });

  test("a prompt streams story text into the page, with TTFT and tokens/s under the reply", async () => {
    await page.locator("#model").filter({ hasText: "stories260k-qwen2 · 512 tokens of context" }).waitFor();
    await setting(page, "#temperature", "0");
    await setting(page, "#max-tokens", "200");
    await say(page, "Once upon a time");
    const stats = await replyStats(page, 0, /tokens\/s/);
    assert.match(stats, STATS);

    const text = await replyText(page, 0);
    const lengths = await replyLengths(page);
    const partial = lengths.filter((l) => l.n > 0 && l.n < text.length);
    assert.ok(new Set(partial.map((l) => l.n)).size >= 2, `the reply grew in steps: ${JSON.stringify(lengths)}`);
    assert.ok(partial.at(-1)!.task > partial[0].task, `over time, not all at once: ${JSON.stringify(partial)}`);

    assert.equal(chatRequests.length, 1);
    const body = chatRequests[0].body;
    assert.deepEqual(body, {
      messages: [{ role: "user", content: "Once upon a time" }],
      stream: true,
      stream_options: { include_usage: true },
      temperature: 0,
      max_tokens: 200,
    });
    // The page put together exactly the text the API gives (no chunk lost, doubled or reordered),
    // and counted the tokens the stream's usage gave.
    const direct = await directReply(stories, body);
    assert.equal(text, direct.text);
    assert.equal(statsTokens(stats), direct.tokens);
    assert.ok(text.length > 100, `a story: ${JSON.stringify(text)}`);
  });

  test("a second turn sends the system prompt and both turns; model text stays text", async () => {
    const first = await replyText(page, 0);
    await setting(page, "#system", "A story for children.");
    await setting(page, "#max-tokens", "60");
    await say(page, "<b>The cat</b> sat");
    const stats = await replyStats(page, 1, /tokens\/s/);
    assert.match(stats, STATS);
    assert.deepEqual(chatRequests.at(-1)?.body.messages, [
      { role: "system", content: "A story for children." },
      { role: "user", content: "Once upon a time" },
      { role: "assistant", content: first },
      { role: "user", content: "<b>The cat</b> sat" },
    ]);
    assert.equal(await page.locator(".message.user .content").nth(1).textContent(), "<b>The cat</b> sat");
    assert.equal(await page.locator("#messages b").count(), 0, "no markup from message text");
    assert.deepEqual({ text: await replyText(page, 1), tokens: statsTokens(stats) }, await directReply(stories, chatRequests.at(-1)!.body));

    const file = join(tmpdir(), `tiny-llm-chat-page-${process.pid}.png`);
    await page.screenshot({ path: file });
    const png = readFileSync(file);
    assert.deepEqual([...png.subarray(0, 8)], [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a], "a PNG signature");
    assert.deepEqual([png.readUInt32BE(16), png.readUInt32BE(20)], [800, 700], "IHDR: the viewport's size");
    assert.ok(png.length > 10_000, `${png.length} bytes`);
  });

  test("the page fits a narrow window", async () => {
    await page.setViewportSize({ width: 360, height: 640 });
    try {
      const widths = await page.evaluate(() => [document.documentElement.scrollWidth, document.documentElement.clientWidth]);
      assert.ok(widths[0] <= widths[1], `no horizontal scrolling: ${widths}`);
      for (const button of ["#send", "#stop", "#new-chat"]) {
        const box = await page.locator(button).boundingBox();
        assert.ok(box && box.x >= 0 && box.x + box.width <= 360 && box.y + box.height <= 640, `${button} in view: ${JSON.stringify(box)}`);
      }
    } finally {
      await page.setViewportSize({ width: 800, height: 700 });
    }
  });

  test("Stop ends a long reply mid-way, the server aborts it, and the page takes the next prompt", async () => {
    await page.click("#new-chat");
    assert.equal(await page.locator(".message").count(), 0);
    await setting(page, "#system", "");
    await setting(page, "#temperature", "0");
    await setting(page, "#max-tokens", "480");
    const long = "Once upon a time there was a dog";
    const full = await directReply(stories, { messages: [{ role: "user", content: long }], temperature: 0, max_tokens: 480 });
    assert.equal(full.tokens, 480, "greedy, this prompt runs to max tokens");
    const aborted = await abortedRequests(stories);

    // The model writes hundreds of tokens a second, faster than a click from outside the page could
    // follow; so Stop is clicked from inside it, once 40 characters of the reply are in.
    await page.evaluate(() => {
      const observer = new MutationObserver(() => {
        const content = document.querySelector(".message.assistant .content");
        if ((content?.textContent?.length ?? 0) < 40) return;
        observer.disconnect();
        document.getElementById("stop")!.click();
      });
      observer.observe(document.getElementById("messages")!, { subtree: true, childList: true, characterData: true });
    });
    assert.equal(await page.isDisabled("#stop"), true, "Stop is off while nothing runs");
    await say(page, long);
    const stats = await replyStats(page, 0, /stopped$/);
    assert.match(stats, /^TTFT \d+\.\d\d s · stopped$/);
    const stopped = await replyText(page, 0);
    await new Promise((resolve) => setTimeout(resolve, 300));
    assert.equal(await replyText(page, 0), stopped, "the reply stopped growing");
    assert.ok(
      stopped.length >= 40 && stopped.length < full.text.length / 2,
      `stopped early: ${stopped.length} of ${full.text.length} characters`,
    );
    assert.ok(full.text.startsWith(stopped), "what came is the start of the reply");

    await waitFor(async () => (await abortedRequests(stories)) === aborted + 1, 10_000, "the server to abort the request");
    await waitFor(
      async () => metricValue(await metrics(stories.url), "tiny_llm_requests_running", "") === 0 && stories.engine.inFlight === 0,
      10_000,
      "no request running",
    );

    assert.equal(await page.isDisabled("#stop"), true);
    assert.equal(await page.isEnabled("#send"), true);
    await setting(page, "#max-tokens", "40");
    await say(page, "The end.");
    assert.match(await replyStats(page, 1, /tokens\/s/), STATS);
    assert.deepEqual(chatRequests.at(-1)?.body.messages, [
      { role: "user", content: long },
      { role: "assistant", content: stopped },
      { role: "user", content: "The end." },
    ]);
  });

  test("the page loaded nothing from elsewhere and threw nothing", () => {
    assert.deepEqual(foreignRequests, []);
    assert.deepEqual(pageErrors, []);
  });

  test("with --api-key: the page itself is public, a wrong key is a visible error, the right key works and is kept", async () => {
    assert.equal((await fetch(`${keyed.url}/chat.js`)).status, 200);
    assert.equal((await fetch(`${keyed.url}/v1/models`)).status, 401);
    const context = await browser.newContext();
    try {
      const keyPage = await context.newPage();
      keyPage.setDefaultTimeout(30_000);
      const requests = captureChatRequests(keyPage);
      assert.equal((await keyPage.goto(`${keyed.url}/`))?.status(), 200);
      const error = keyPage.locator("#error");
      await error.filter({ hasText: "Not authorized: this server needs an API key" }).waitFor();
      assert.match((await error.textContent()) ?? "", /--api-key.*Settings/);

      await keyPage.fill("#api-key", "wrong-key");
      await keyPage.fill("#temperature", "0");
      await keyPage.fill("#max-tokens", "40");
      await say(keyPage, "Hello there");
      // The failed turn is taken back and its text is back in the box.
      await keyPage.waitForFunction(() => (document.getElementById("prompt") as HTMLTextAreaElement).value === "Hello there");
      assert.equal(await keyPage.locator(".message").count(), 0);
      assert.equal(requests.at(-1)?.authorization, "Bearer wrong-key");
      assert.match((await error.textContent()) ?? "", /^Not authorized: the API key is not valid\. /);

      await keyPage.fill("#api-key", API_KEY);
      await keyPage.press("#prompt", "Enter");
      const stats = await replyStats(keyPage, 0, /tokens\/s/);
      assert.match(stats, STATS);
      assert.equal(requests.at(-1)?.authorization, `Bearer ${API_KEY}`);
      assert.equal(await error.isHidden(), true);
      // The random model's text is full of markup-like pieces, control characters and special tokens: all kept as text.
      const direct = await directReply(keyed, requests.at(-1)!.body);
      assert.deepEqual({ text: await replyText(keyPage, 0), tokens: statsTokens(stats) }, direct);
      assert.equal(await keyPage.locator(".message.assistant .content *").count(), 0);

      await keyPage.reload();
      assert.equal(await keyPage.inputValue("#api-key"), API_KEY, "the key is kept in localStorage");
      await keyPage.locator("#model").filter({ hasText: "tiny-random-qwen2" }).waitFor();
      assert.equal(await error.isHidden(), true);
    } finally {
      await context.close();
    }
  });
});
