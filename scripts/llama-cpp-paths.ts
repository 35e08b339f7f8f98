/**
 * Where `npm run build:llama-cpp` (scripts/build-llama-cpp.ts) puts llama.cpp's tools: a cache
 * folder outside the repository, one per llama.cpp release, the release being the one the pinned
 * node-llama-cpp ships the source of. Tests and benchmarks ask here and skip when a tool is absent.
 */
import { existsSync, readFileSync } from "node:fs";
import { homedir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

/** The project root, found from this compiled file (dist/scripts/llama-cpp-paths.js). */
export const projectRoot = resolve(dirname(fileURLToPath(import.meta.url)), "../..");

/** The tools built, and the ones a release may lack (llama-tokenize is not in every one). */
export const LLAMA_TOOLS = ["llama-server", "llama-bench", "llama-perplexity", "llama-cli", "llama-tokenize"] as const;
export type LlamaTool = (typeof LLAMA_TOOLS)[number];
/** The tools without which a build counts as not done. */
export const REQUIRED_TOOLS: readonly LlamaTool[] = ["llama-server", "llama-bench", "llama-perplexity", "llama-cli"];

/** `$XDG_CACHE_HOME/tiny-llm`, or `~/.cache/tiny-llm`. */
export function cacheRoot(): string {
  const xdg = process.env.XDG_CACHE_HOME;
  return join(xdg !== undefined && xdg !== "" ? xdg : join(homedir(), ".cache"), "tiny-llm");
}

/** node-llama-cpp's copy of llama.cpp: the git bundle of its source and the release tag. */
export function llamaCppSource(): { bundle: string; release: string } | undefined {
  const dir = join(projectRoot, "node_modules", "node-llama-cpp", "llama");
  const bundle = join(dir, "gitRelease.bundle");
  const info = join(dir, "llama.cpp.info.json");
  if (!existsSync(bundle) || !existsSync(info)) return undefined;
  const tag = (JSON.parse(readFileSync(info, "utf8")) as { tag?: unknown }).tag;
  return typeof tag === "string" && /^[\w.-]+$/.test(tag) ? { bundle, release: tag } : undefined;
}

/** The folder a release's build lives in: `src/` (the clone), `build/`, and `build/bin/`. */
export function llamaCppDir(release: string): string {
  return join(cacheRoot(), "llama.cpp", release);
}

/** The folder the binaries land in, for the pinned release (whether or not they are built). */
export function llamaCppBinDir(): string | undefined {
  const source = llamaCppSource();
  return source === undefined ? undefined : join(llamaCppDir(source.release), "build", "bin");
}

/** The path of one built llama.cpp tool, or undefined where it has not been built. */
export function llamaCppTool(tool: LlamaTool): string | undefined {
  const bin = llamaCppBinDir();
  if (bin === undefined) return undefined;
  const path = join(bin, tool);
  return existsSync(path) ? path : undefined;
}

/** A one-line reason to skip a test that needs `tool`, or false when it is there. */
export function llamaCppSkip(tool: LlamaTool): string | false {
  return llamaCppTool(tool) === undefined ? `${tool} not built (npm run build:llama-cpp)` : false;
}
