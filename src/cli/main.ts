#!/usr/bin/env -S node --no-short-builtin-calls --v8-pool-size=1
/**
 * The `tiny-llm` command: dispatches to a subcommand and turns every error into one line on
 * stderr with a non-zero exit.
 *
 * V8's memory settings are turned down, since weights, caches and activations live in native
 * buffers and V8's heap holds little more than code (docs/benchmarks.md has what they save). The first line's take
 * effect only at start-up, so they apply when this runs as `tiny-llm`: V8's builtins run from the
 * executable rather than from a copy in fresh memory, and one helper thread instead of four does
 * its background work. The one below can be set at run time, so it applies however this starts:
 * the young generation keeps its starting size instead of doubling as modules load.
 */
import { readFileSync } from "node:fs";
import { setFlagsFromString } from "node:v8";
import { UsageError } from "./errors.js";
import { closest } from "./options.js";
import { errorLine, watchStdout } from "./output.js";

setFlagsFromString("--semi-space-growth-factor=1");

interface Command {
  /** Its line in tiny-llm --help. */
  summary: string;
  run(argv: string[]): Promise<void>;
}

// Each command's modules are imported when it runs: a process that generates carries no
// quantizer, and one that benchmarks no chat-template engine (the memory it measures is its own).
// The list in tiny-llm --help is this table, in this order.
const COMMANDS: Readonly<Record<string, Command>> = {
  generate: {
    summary: "generate text from a prompt",
    run: async (argv) => (await import("./generate-command.js")).runGenerate(argv),
  },
  chat: {
    summary: "chat with a model in the terminal",
    run: async (argv) => (await import("./chat-command.js")).runChat(argv),
  },
  serve: {
    summary: "serve a model over HTTP with OpenAI's API, and a chat page",
    run: async (argv) => (await import("./serve-command.js")).runServe(argv),
  },
  bench: {
    summary: "measure load time, prefill and decode speed, and memory",
    run: async (argv) => (await import("./bench-command.js")).runBench(argv),
  },
  perplexity: {
    summary: "score a model on a text file, as llama-perplexity does",
    run: async (argv) => (await import("./perplexity-command.js")).runPerplexity(argv),
  },
  info: {
    summary: "describe a model: architecture, parameters, weight types, context, memory needed",
    run: async (argv) => (await import("./info-command.js")).runInfo(argv),
  },
  pull: {
    summary: "download a Hugging Face repo's model files into the Hugging Face cache",
    run: async (argv) => (await import("./pull-command.js")).runPull(argv),
  },
  ls: {
    summary: "list the models in the Hugging Face cache, with sizes and formats",
    run: async (argv) => (await import("./ls-command.js")).runLs(argv),
  },
  rm: {
    summary: "delete a repo from the Hugging Face cache",
    run: async (argv) => (await import("./rm-command.js")).runRm(argv),
  },
  quantize: {
    summary: "write an MLX-layout 4- or 8-bit copy of a checkpoint, or a GGUF file in another type",
    run: async (argv) => (await import("./quantize-command.js")).runQuantize(argv),
  },
};

const width = Math.max(...Object.keys(COMMANDS).map((name) => name.length)) + 2;
const HELP = `Usage: tiny-llm <command> [options]

Commands:
${Object.entries(COMMANDS)
  .map(([name, { summary }]) => `  ${name.padEnd(width)}${summary}`)
  .join("\n")}

Run tiny-llm <command> --help for a command's options.

Options:
  -h, --help     show this help
  -V, --version  print the version`;

function version(): string {
  const pkg = JSON.parse(readFileSync(new URL("../../../package.json", import.meta.url), "utf8")) as { version: string };
  return pkg.version;
}

async function main(argv: string[]): Promise<void> {
  const [name, ...rest] = argv;
  if (name === undefined || name === "-h" || name === "--help") {
    process.stdout.write(HELP + "\n");
    return;
  }
  if (name === "-V" || name === "--version") {
    process.stdout.write(`tiny-llm ${version()}\n`);
    return;
  }
  // `tiny-llm help generate` is `tiny-llm generate --help`.
  if (name === "help") return rest.length === 0 ? main([]) : main([rest[0], "--help"]);
  const command = Object.hasOwn(COMMANDS, name) ? COMMANDS[name] : undefined;
  if (!command) {
    const guess = closest(name, Object.keys(COMMANDS));
    throw new UsageError(`unknown command "${name}"${guess ? ` (did you mean ${guess}?)` : ""}; run tiny-llm --help for the list`);
  }
  return command.run(rest);
}

watchStdout();
main(process.argv.slice(2)).catch((err: unknown) => {
  process.stderr.write(errorLine(err instanceof Error ? err.message : String(err)));
  if (process.env.TINY_LLM_DEBUG && err instanceof Error) process.stderr.write(`${err.stack}\n`);
  process.exitCode = 1;
});
