/* global document, localStorage, performance, fetch, AbortController, TextDecoderStream */
// The chat page of `tiny-llm serve`: a multi-turn chat over /v1/chat/completions, streamed as
// server-sent events, with a stop button and TTFT and tokens/s under each reply. Model text only
// ever goes into the page as textContent, never as HTML.

const $ = (id) => document.getElementById(id);
const view = {
  model: $("model"),
  newChat: $("new-chat"),
  settings: $("settings"),
  system: $("system"),
  temperature: $("temperature"),
  maxTokens: $("max-tokens"),
  apiKey: $("api-key"),
  messages: $("messages"),
  error: $("error"),
  composer: $("composer"),
  prompt: $("prompt"),
  send: $("send"),
  stop: $("stop"),
};

/** The turns so far, as the API takes them (the system prompt is added to each request). */
let history = [];
/** The AbortController of the reply being streamed, if one is. */
let running;

// The settings, the API key with them, survive a reload.
for (const input of [view.system, view.temperature, view.maxTokens, view.apiKey]) {
  const key = `tiny-llm.${input.id}`;
  const saved = localStorage.getItem(key);
  if (saved !== null) input.value = saved;
  input.addEventListener("input", () => localStorage.setItem(key, input.value));
}

function requestHeaders() {
  const headers = { "content-type": "application/json" };
  const key = view.apiKey.value.trim();
  if (key !== "") headers.authorization = `Bearer ${key}`;
  return headers;
}

function showError(message) {
  view.error.textContent = message;
  view.error.hidden = false;
}

function hideError() {
  view.error.hidden = true;
  view.error.textContent = "";
}

/** What went wrong with a response that is not 2xx, from its body in OpenAI's error shape. */
async function responseError(response) {
  let message = `the server answered ${response.status} ${response.statusText}`.trim();
  try {
    const body = await response.json();
    if (typeof body?.error?.message === "string") message = body.error.message;
  } catch {
    // Not JSON: the status says it.
  }
  if (response.status === 401) {
    view.settings.open = true;
    return `Not authorized: ${message}. Enter the key the server was started with (--api-key) under Settings.`;
  }
  return `Error ${response.status}: ${message}`;
}

/** Shows the served model's name in the header; a missing or wrong API key shows up here first. */
async function loadModel() {
  try {
    const response = await fetch("v1/models", { headers: requestHeaders() });
    if (!response.ok) {
      view.model.textContent = "";
      showError(await responseError(response));
      return;
    }
    const model = (await response.json()).data?.[0];
    view.model.textContent = model ? `${model.id.split("/").pop()} · ${model.max_model_len} tokens of context` : "";
    view.model.title = model?.id ?? "";
    hideError();
  } catch (err) {
    showError(`The server could not be reached: ${err.message}`);
  }
}

/** A message in the conversation view: its role, its text (a Text node, grown as it streams) and a line of stats. */
function addMessage(role, text) {
  const article = document.createElement("article");
  article.className = `message ${role}`;
  const label = document.createElement("div");
  label.className = "role";
  label.textContent = role === "user" ? "You" : "Model";
  const content = document.createElement("div");
  content.className = "content";
  const node = document.createTextNode(text);
  content.append(node);
  const stats = document.createElement("div");
  stats.className = "stats";
  article.append(label, content, stats);
  view.messages.append(article);
  scrollToEnd(true);
  return { article, node, stats };
}

/** Keeps the newest text in sight, unless the reader has scrolled up. */
function scrollToEnd(force) {
  const box = view.messages;
  if (force || box.scrollHeight - box.scrollTop - box.clientHeight < 80) box.scrollTop = box.scrollHeight;
}

/** The `data:` payloads of a server-sent event stream, parsed, until `[DONE]`. */
async function* sseEvents(body) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    const lines = buffer.split("\n");
    buffer = lines.pop();
    for (const line of lines) {
      if (!line.startsWith("data:")) continue;
      const data = line.slice("data:".length).trim();
      if (data === "[DONE]") return;
      yield JSON.parse(data);
    }
  }
}

/** A number field's value, or undefined when it is empty. */
function numberField(input) {
  const value = input.value.trim();
  return value === "" ? undefined : Number(value);
}

function requestBody() {
  const system = view.system.value.trim();
  const body = {
    messages: system === "" ? [...history] : [{ role: "system", content: system }, ...history],
    stream: true,
    stream_options: { include_usage: true },
  };
  const temperature = numberField(view.temperature);
  if (temperature !== undefined) body.temperature = temperature;
  const maxTokens = numberField(view.maxTokens);
  if (maxTokens !== undefined) body.max_tokens = maxTokens;
  return body;
}

const seconds = (ms) => `${(ms / 1000).toFixed(2)} s`;
const rate = (perSecond) => (perSecond >= 100 ? perSecond.toFixed(0) : perSecond.toFixed(1));

/**
 * The stats line of a reply: time to first token, then decode speed (tokens after the first
 * over the time after the first, with the token count from the stream's usage) and why it ended.
 */
function statsText({ started, first, ended, usage, finish, outcome }) {
  const parts = [];
  if (first !== undefined) parts.push(`TTFT ${seconds(first - started)}`);
  if (usage && ended !== undefined) {
    const tokens = usage.completion_tokens;
    if (tokens > 1 && ended > first) parts.push(`${rate((tokens - 1) / ((ended - first) / 1000))} tokens/s`);
    parts.push(`${tokens} token${tokens === 1 ? "" : "s"}`);
  }
  if (outcome !== undefined) parts.push(outcome);
  else if (ended === undefined) parts.push("…");
  else if (first === undefined) parts.push("empty reply");
  else if (finish === "length") parts.push("max tokens reached");
  return parts.join(" · ");
}

function setRunning(controller) {
  running = controller;
  view.send.disabled = controller !== undefined;
  view.stop.disabled = controller === undefined;
}

async function send(text) {
  hideError();
  // "New chat" may replace the history while this reply streams; this turn belongs to the old one.
  const turns = history;
  turns.push({ role: "user", content: text });
  const body = requestBody();
  const question = addMessage("user", text);
  const reply = addMessage("assistant", "");
  const controller = new AbortController();
  setRunning(controller);
  const timing = { started: performance.now() };
  let answer = "";
  let failed;
  try {
    const response = await fetch("v1/chat/completions", {
      method: "POST",
      headers: requestHeaders(),
      body: JSON.stringify(body),
      signal: controller.signal,
    });
    if (!response.ok) throw new Error(await responseError(response));
    for await (const event of sseEvents(response.body)) {
      if (event.error) throw new Error(`Error: ${event.error.message}`);
      if (event.usage) timing.usage = event.usage;
      const choice = event.choices?.[0];
      const delta = choice?.delta?.content;
      if (delta) {
        timing.first ??= performance.now();
        answer += delta;
        reply.node.appendData(delta);
        scrollToEnd(false);
      }
      if (choice?.finish_reason) timing.finish = choice.finish_reason;
      reply.stats.textContent = statsText(timing);
    }
  } catch (err) {
    if (controller.signal.aborted) timing.outcome = "stopped";
    else {
      timing.outcome = "failed";
      failed = err instanceof TypeError ? `The connection to the server failed: ${err.message}` : err.message;
    }
  } finally {
    timing.ended = performance.now();
    setRunning(undefined);
  }
  if (answer === "" && timing.outcome !== undefined) {
    // Stopped or failed before any text: the turn is taken back and its text returns to the input box.
    turns.pop();
    if (question.article.isConnected && view.prompt.value === "") view.prompt.value = text;
    question.article.remove();
    reply.article.remove();
  } else {
    turns.push({ role: "assistant", content: answer });
    reply.stats.textContent = statsText(timing);
    if (failed) reply.article.classList.add("failed");
  }
  if (failed) showError(failed);
  view.prompt.focus();
}

view.composer.addEventListener("submit", (event) => {
  event.preventDefault();
  const text = view.prompt.value.trim();
  if (text === "" || running) return;
  view.prompt.value = "";
  void send(text);
});

view.prompt.addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    view.composer.requestSubmit();
  }
});

view.stop.addEventListener("click", () => running?.abort());

view.newChat.addEventListener("click", () => {
  running?.abort();
  history = [];
  view.messages.replaceChildren();
  hideError();
  view.prompt.focus();
});

view.apiKey.addEventListener("change", () => void loadModel());

setRunning(undefined);
void loadModel();
view.prompt.focus();
