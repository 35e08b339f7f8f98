/**
 * The chat page at GET /: plain HTML, one JavaScript module and a style sheet from
 * src/server/page/. tsc copies no assets, so the compiled module (dist/src/server/) finds them
 * three folders up, which holds in the repository and in a packed package alike. The page is
 * public; the API calls it makes send the key typed into it.
 */
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import type { FastifyInstance } from "fastify";

const PAGE_DIR = new URL("../../../src/server/page/", import.meta.url);

const FILES = [
  { route: "/", file: "index.html", type: "text/html; charset=utf-8" },
  { route: "/chat.js", file: "chat.js", type: "text/javascript; charset=utf-8" },
  { route: "/chat.css", file: "chat.css", type: "text/css; charset=utf-8" },
];

// Everything from this server and nothing inline: no CDN can creep in, and no text can run as script.
const CONTENT_SECURITY_POLICY =
  "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; " +
  "base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

function readPageFile(file: string): Buffer {
  try {
    return readFileSync(new URL(file, PAGE_DIR));
  } catch (err) {
    const dir = fileURLToPath(PAGE_DIR);
    throw new Error(`the chat page's ${file} could not be read from ${dir} (${(err as Error).message}); reinstall tiny-llm`, {
      cause: err,
    });
  }
}

export function registerChatPage(app: FastifyInstance): void {
  for (const { route, file, type } of FILES) {
    const body = readPageFile(file);
    app.get(route, { config: { public: true } }, async (_request, reply) =>
      reply
        .type(type)
        .header("cache-control", "no-cache")
        .header("content-security-policy", CONTENT_SECURITY_POLICY)
        .header("x-content-type-options", "nosniff")
        .send(body),
    );
  }
}
