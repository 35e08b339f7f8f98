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

setFlagsFromString("--semi-space-growth-factor=1");

const HELP = `Usage: tiny-llm <command> [options]

Commands:
  generate    generate text from a prompt (tiny-llm generate --help)
  bench       measure prefill, decode speed and memory on one model (tiny-llm bench --help)
  quantize    write an MLX-layout 4- or 8-bit copy of a checkpoint, or a GGUF in another type (tiny-llm quantize --help)
  serve       serve the model over HTTP with OpenAI's API (tiny-llm serve --help)
  perplexity  score a model on a text file, as llama-perplexity does (tiny-llm perplexity --help)

Options:
  -h, --help     show this help
  --version      print the version`;

function version(): string {
  const pkg = JSON.parse(readFileSync(new URL("../../../package.json", import.meta.url), "utf8")) as { version: string };
  return pkg.version;
}

// Each command's modules are imported when it runs: a process that generates carries no
// quantizer, and one that benchmarks no chat-template engine (the memory it measures is its own).
async function main(argv: string[]): Promise<void> {
  const [command, ...rest] = argv;
  switch (command) {
    case "generate":
      return (await import("./generate-command.js")).runGenerate(rest);
    case "bench":
      return (await import("./bench-command.js")).runBench(rest);
    case "quantize":
      return (await import("./quantize-command.js")).runQuantize(rest);
    case "serve":
      return (await import("./serve-command.js")).runServe(rest);
    case "perplexity":
      return (await import("./perplexity-command.js")).runPerplexity(rest);
    case "chat":
      return (await import("./chat-command.js")).runChat(rest);
    case undefined:
    case "-h":
    case "--help":
    case "help": {
      const [generate, bench, quantize, serve, perplexity] = await Promise.all([
        import("./generate-command.js"),
        import("./bench-command.js"),
        import("./quantize-command.js"),
        import("./serve-command.js"),
        import("./perplexity-command.js"),
      ]);
      process.stdout.write(
        `${HELP}\n\n${generate.GENERATE_HELP}\n\n${bench.BENCH_HELP}\n\n${quantize.QUANTIZE_HELP}\n\n${serve.SERVE_HELP}\n\n` +
          `${perplexity.PERPLEXITY_HELP}\n`,
      );
      return;
    }
    case "--version":
      process.stdout.write(version() + "\n");
      return;
    default:
      throw new Error(`unknown command "${command}"; run tiny-llm --help for the list`);
  }
}

main(process.argv.slice(2)).catch((err: unknown) => {
  const message = err instanceof Error ? err.message : String(err);
  process.stderr.write(`tiny-llm: error: ${message}\n`);
  if (process.env.TINY_LLM_DEBUG && err instanceof Error) process.stderr.write(`${err.stack}\n`);
  process.exitCode = 1;
});
