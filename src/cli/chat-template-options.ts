/**
 * --chat-template FILE and --chat-template-kwargs JSON, which `chat` and `serve` both take: a
 * template to use instead of the model's, and extra Jinja variables for it.
 */
import { readFileSync } from "node:fs";
import type { ChatTemplateSettings } from "../api/engine.js";
import { UsageError } from "./errors.js";

/** parseOptions declarations of the two options. */
export const CHAT_TEMPLATE_OPTIONS = {
  "chat-template": { type: "string" },
  "chat-template-kwargs": { type: "string" },
} as const;

/** Help lines for CHAT_TEMPLATE_OPTIONS, descriptions at `column` as in the command's help. */
export function chatTemplateHelp(column = 22): string {
  const pad = " ".repeat(column);
  return `  --chat-template FILE
${pad}a Jinja chat template to use instead of the model's (or for a model without one)
  --chat-template-kwargs JSON
${pad}extra template variables, e.g. '{"enable_thinking": false}' for Qwen3`;
}

/** The two options as the library takes them; a file that cannot be read or JSON that is not an object is a one-line UsageError. */
export function parseChatTemplateOptions(values: { "chat-template"?: string; "chat-template-kwargs"?: string }): ChatTemplateSettings {
  const settings: ChatTemplateSettings = {};
  const file = values["chat-template"];
  if (file !== undefined) {
    try {
      settings.chatTemplate = { source: readFileSync(file, "utf8"), origin: file };
    } catch (err) {
      throw new UsageError(`--chat-template ${file} cannot be read: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
    }
  }
  const json = values["chat-template-kwargs"];
  if (json !== undefined) {
    let value: unknown;
    try {
      value = JSON.parse(json);
    } catch (err) {
      throw new UsageError(
        `--chat-template-kwargs is not JSON (${(err as Error).message}): give an object such as '{"enable_thinking": false}'`,
      );
    }
    if (typeof value !== "object" || value === null || Array.isArray(value)) {
      throw new UsageError(`--chat-template-kwargs must be a JSON object such as '{"enable_thinking": false}', got ${json}`);
    }
    settings.chatTemplateKwargs = value as Record<string, unknown>;
  }
  return settings;
}
