/** `tiny-llm ls`: the models in the Hugging Face cache, their sizes and formats. */
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { hubCacheDir, scanCache, snapshotDir, type CachedRepo } from "../hub/hf-cache.js";
import { modelFormats } from "../hub/repo-files.js";
import { formatBytes, writeOut } from "./output.js";
import { parseOptions } from "./options.js";

export const LS_HELP = `Usage: tiny-llm ls [options]

Lists the model repos in the Hugging Face cache (HF_HUB_CACHE, else HF_HOME/hub, else
~/.cache/huggingface/hub), whoever downloaded them: size on disk, the formats their snapshots
hold (safetensors, mlx, gguf QUANT) and their refs.

Options:
  --json              one JSON object: the cache folder and each repo's size, formats and snapshots
  -h, --help          show this help`;

const OPTIONS = { json: { type: "boolean", default: false } } as const;

function formats(repo: CachedRepo): string[] {
  return [
    ...new Set(
      repo.snapshots.flatMap(({ commit, files }) => {
        const config = join(snapshotDir(repo.dir, commit), "config.json");
        // mlx-lm's checkpoints say they are quantized in config.json.
        const quantized = existsSync(config) && /"quantization"\s*:/.test(readFileSync(config, "utf8"));
        return modelFormats(files, quantized);
      }),
    ),
  ];
}

export async function runLs(argv: string[]): Promise<void> {
  const values = parseOptions("ls", argv, OPTIONS, LS_HELP);
  if (!values) return;
  const cache = hubCacheDir();
  const repos = scanCache(cache).map((repo) => ({ ...repo, formats: formats(repo) }));
  if (values.json) {
    writeOut(JSON.stringify({ cache, repos }) + "\n");
    return;
  }
  if (repos.length === 0) {
    writeOut(`no models in the Hugging Face cache (${cache}); tiny-llm pull org/name downloads one\n`);
    return;
  }
  const rows = [
    ["REPO", "SIZE", "FORMATS", "REFS"],
    ...repos.map((r) => [r.repo, formatBytes(r.bytes), r.formats.join(", ") || "-", refs(r)]),
  ];
  const widths = rows[0].map((_, i) => Math.max(...rows.map((row) => row[i].length)));
  writeOut(rows.map((row) => row.map((cell, i) => (i === row.length - 1 ? cell : cell.padEnd(widths[i]))).join("  ")).join("\n") + "\n");
}

function refs(repo: CachedRepo): string {
  return repo.snapshots.map((s) => (s.refs.length > 0 ? s.refs.join(",") : s.commit.slice(0, 10))).join(" ") || "-";
}
