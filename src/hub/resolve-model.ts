/**
 * --model to a path on this machine. A path is itself; a repo id is its snapshot in the Hugging
 * Face cache, used with no request when it holds the files the model needs, else downloaded
 * (unless --offline or HF_HUB_OFFLINE says not to).
 */
import { existsSync } from "node:fs";
import { join } from "node:path";
import { INDEX_FILE, SINGLE_FILE, readJson } from "../loaders/checkpoint.js";
import { CheckpointError } from "../loaders/safetensors.js";
export type { DownloadProgress } from "./download.js";
import { HubError, downloadFiles, hubEndpoint, isNetworkError, networkReason, repoInfo, type DownloadProgress } from "./download.js";
import { cachedCommit, hubCacheDir, repoCacheDir, snapshotDir, snapshotFiles, writeRef } from "./hf-cache.js";
import { parseModelSpec, type ModelSpec } from "./model-spec.js";
import { ggufQuant, selectRepoFiles, type RepoSelection } from "./repo-files.js";

export interface ResolveOptions {
  /** A branch, tag or commit of a repo id (default main). */
  revision?: string;
  /** Use only the cache (also HF_HUB_OFFLINE=1). */
  offline?: boolean;
  /** Bytes arriving, when files are downloaded. */
  onDownload?: (progress: DownloadProgress) => void;
}

export function offlineFromEnv(): boolean {
  return /^(1|true|yes|on)$/i.test(process.env.HF_HUB_OFFLINE ?? "");
}

const LOCAL_HINT = "pass a local checkpoint folder or .gguf file instead: --model ./my-model or --model model.gguf";

/** The local path of `model`: a checkpoint folder or a GGUF file. */
export async function resolveModel(model: string, opts: ResolveOptions = {}): Promise<string> {
  const spec = parseModelSpec(model, opts.revision);
  if (spec.kind === "path") {
    if (!existsSync(spec.path)) {
      throw new CheckpointError(
        `${spec.path} does not exist; expected a checkpoint folder or a .gguf file, or a Hugging Face repo id (org/name or org/name:QUANT)`,
      );
    }
    return spec.path;
  }
  return (await pullRepo(spec, opts)).path;
}

export interface PulledRepo {
  /** What the loader opens: the snapshot folder, or the (first) GGUF file in it. */
  path: string;
  snapshot: string;
  commit: string;
  files: string[];
  /** Whether anything was downloaded. */
  downloaded: boolean;
}

/** Makes sure the cache holds what `spec` needs, downloading what it lacks. */
export async function pullRepo(spec: Extract<ModelSpec, { kind: "repo" }>, opts: ResolveOptions = {}): Promise<PulledRepo> {
  const repoDir = repoCacheDir(spec.repo);
  const label = spec.quant === undefined ? spec.repo : `${spec.repo}:${spec.quant}`;
  const at = spec.revision === "main" ? "" : ` at revision ${spec.revision}`;
  const commit = cachedCommit(repoDir, spec.revision);
  const offline = opts.offline || offlineFromEnv();
  const cached = commit === undefined ? undefined : completeSnapshot(spec, snapshotDir(repoDir, commit), offline);
  if (commit !== undefined && cached) return { ...located(repoDir, commit, cached), downloaded: false };
  if (offline) {
    throw new HubError(
      `${label}${at} is not in the Hugging Face cache (${hubCacheDir()}) and downloads are off (--offline or HF_HUB_OFFLINE); ` +
        `download it first with network (tiny-llm pull ${label}), or ${LOCAL_HINT}`,
    );
  }
  try {
    const info = await repoInfo(spec.repo, spec.revision);
    const selection = selectRepoFiles(spec.repo, info.files, spec.quant);
    writeRef(repoDir, spec.revision, info.commit);
    await downloadFiles(repoDir, spec.repo, info.commit, selection.files, opts.onDownload);
    return { ...located(repoDir, info.commit, selection), downloaded: true };
  } catch (err) {
    if (!isNetworkError(err)) throw err;
    throw new HubError(
      `cannot download ${label}${at}: ${hubEndpoint()} is unreachable (${networkReason(err)}) and the model is not in the ` +
        `Hugging Face cache (${hubCacheDir()}); connect and run again (an interrupted download resumes), or ${LOCAL_HINT}`,
    );
  }
}

function located(repoDir: string, commit: string, selection: RepoSelection): Omit<PulledRepo, "downloaded"> {
  const snapshot = snapshotDir(repoDir, commit);
  return { path: join(snapshot, selection.entry), snapshot, commit, files: selection.files };
}

/**
 * The files of a cached snapshot that `spec` needs, when it has them all: a folder's config and
 * every weight file (each shard its index lists), or every part of the GGUF file. With no
 * quantization named, a GGUF file other than Q4_K_M (the hub's pick) is only taken offline: the
 * cache may hold another one because it was named before.
 */
function completeSnapshot(spec: Extract<ModelSpec, { kind: "repo" }>, dir: string, offline: boolean): RepoSelection | undefined {
  const files = snapshotFiles(dir);
  let selection: RepoSelection;
  try {
    selection = selectRepoFiles(spec.repo, files, spec.quant);
  } catch {
    return undefined;
  }
  if (selection.kind === "gguf")
    return spec.quant !== undefined || offline || ggufQuant(selection.entry) === "Q4_K_M" ? selection : undefined;
  if (files.includes(INDEX_FILE)) {
    const index = readJson(join(dir, INDEX_FILE), "safetensors index") as { weight_map?: Record<string, string> };
    const shards = new Set(Object.values(index.weight_map ?? {}));
    return shards.size > 0 && [...shards].every((shard) => files.includes(shard)) ? selection : undefined;
  }
  return files.includes(SINGLE_FILE) ? selection : undefined;
}
