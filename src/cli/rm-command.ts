/** `tiny-llm rm REPO`: deletes a repo from the Hugging Face cache. */
import { hubCacheDir, removeCachedRepo, repoCacheDir, scanCache } from "../hub/hf-cache.js";
import { parseModelSpec } from "../hub/model-spec.js";
import { UsageError } from "./errors.js";
import { formatBytes, writeOut } from "./output.js";
import { parseCommandLine } from "./options.js";

export const RM_HELP = `Usage: tiny-llm rm REPO

Deletes the repo org/name from the Hugging Face cache: every snapshot, blob and ref of it,
whichever tool downloaded it. tiny-llm ls lists what the cache holds.

Options:
  -h, --help          show this help`;

export async function runRm(argv: string[]): Promise<void> {
  const parsed = parseCommandLine("rm", argv, {}, RM_HELP, 1);
  if (!parsed) return;
  const [repo] = parsed.args;
  if (repo === undefined) throw new UsageError("rm needs a repo id: tiny-llm rm org/name");
  const spec = parseModelSpec(repo);
  if (spec.kind !== "repo") throw new UsageError(`${repo} is not a Hugging Face repo id (org/name)`);
  if (spec.quant !== undefined) throw new UsageError(`rm deletes whole repos: tiny-llm rm ${spec.repo}`);
  const cache = hubCacheDir();
  const dir = repoCacheDir(spec.repo, cache);
  const bytes = scanCache(cache).find((r) => r.dir === dir)?.bytes ?? 0;
  if (!removeCachedRepo(spec.repo, cache)) {
    throw new UsageError(`${spec.repo} is not in the Hugging Face cache (${cache}); tiny-llm ls lists what is`);
  }
  writeOut(`removed ${spec.repo} (${formatBytes(bytes)}) from ${cache}\n`);
}
