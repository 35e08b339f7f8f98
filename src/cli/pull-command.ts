/** `tiny-llm pull REPO`: downloads a Hugging Face repo's model files into the cache, without running it. */
import { statSync } from "node:fs";
import { join } from "node:path";
import { parseModelSpec } from "../hub/model-spec.js";
import { pullRepo } from "../hub/resolve-model.js";
import { UsageError } from "./errors.js";
import { formatBytes, writeOut } from "./output.js";
import { HUB_OPTIONS, parseCommandLine } from "./options.js";
import { downloadBar } from "./progress.js";

export const PULL_HELP = `Usage: tiny-llm pull REPO [options]

Downloads the files a model needs from a Hugging Face repo into the Hugging Face cache (HF_HUB_CACHE,
else HF_HOME/hub, else ~/.cache/huggingface/hub), resuming a download that was cut off, and prints
where they are. REPO is org/name (safetensors or MLX) or org/name:QUANT (one GGUF quantization).
HF_TOKEN is sent for gated repos; HF_ENDPOINT names a mirror.

Options:
  --revision R        branch, tag or commit (default main)
  --offline           only check the cache (also HF_HUB_OFFLINE=1)
  -h, --help          show this help`;

export async function runPull(argv: string[]): Promise<void> {
  const parsed = parseCommandLine("pull", argv, HUB_OPTIONS, PULL_HELP, 1);
  if (!parsed) return;
  const [repo] = parsed.args;
  if (repo === undefined) throw new UsageError("pull needs a repo id: tiny-llm pull org/name (or org/name:QUANT)");
  const spec = parseModelSpec(repo, parsed.values.revision);
  if (spec.kind !== "repo") throw new UsageError(`${repo} is not a Hugging Face repo id (org/name or org/name:QUANT)`);
  const pulled = await pullRepo(spec, { offline: parsed.values.offline, onDownload: downloadBar() });
  const bytes = pulled.files.reduce((sum, file) => sum + statSync(join(pulled.snapshot, file)).size, 0);
  const how = pulled.downloaded ? "downloaded" : "already in the cache";
  writeOut(`${repo}: ${pulled.files.length} files, ${formatBytes(bytes)}, ${how} (commit ${pulled.commit})\n${pulled.path}\n`);
}
