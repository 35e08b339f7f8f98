/**
 * The Hugging Face cache, laid out as huggingface_hub (Python), huggingface-cli, mlx-lm and
 * @huggingface/hub lay it out, so each reuses what the others downloaded:
 *
 *   <cache>/models--org--name/blobs/<etag>                   the files' bytes, by content
 *   <cache>/models--org--name/snapshots/<commit>/<file>      → ../../blobs/<etag>
 *   <cache>/models--org--name/refs/<branch or tag>           the commit it points at
 */
import { existsSync, lstatSync, mkdirSync, readFileSync, readdirSync, rmSync, statSync, symlinkSync, writeFileSync } from "node:fs";
import { homedir } from "node:os";
import { dirname, join, relative } from "node:path";

/** HF_HUB_CACHE, else HF_HOME/hub, else $XDG_CACHE_HOME/huggingface/hub, else ~/.cache/huggingface/hub. */
export function hubCacheDir(): string {
  const env = process.env;
  if (env.HF_HUB_CACHE) return env.HF_HUB_CACHE;
  if (env.HF_HOME) return join(env.HF_HOME, "hub");
  return join(env.XDG_CACHE_HOME || join(homedir(), ".cache"), "huggingface", "hub");
}

/** The folder of `org/name` in the cache. */
export function repoCacheDir(repo: string, cache = hubCacheDir()): string {
  return join(cache, `models--${repo.split("/").join("--")}`);
}

const COMMIT = /^[0-9a-f]{40}$/;

/** The commit `revision` names in the cache: a commit hash itself, else what refs/<revision> holds. */
export function cachedCommit(repoDir: string, revision: string): string | undefined {
  if (COMMIT.test(revision)) return revision;
  const ref = join(repoDir, "refs", revision);
  if (!existsSync(ref)) return undefined;
  const commit = readFileSync(ref, "utf8").trim();
  return COMMIT.test(commit) ? commit : undefined;
}

export function writeRef(repoDir: string, revision: string, commit: string): void {
  if (revision === commit) return;
  const ref = join(repoDir, "refs", revision);
  mkdirSync(dirname(ref), { recursive: true });
  writeFileSync(ref, commit);
}

export function snapshotDir(repoDir: string, commit: string): string {
  return join(repoDir, "snapshots", commit);
}

/** The files of a snapshot that resolve to bytes (a link to a missing blob is no file), as paths relative to it. */
export function snapshotFiles(dir: string): string[] {
  if (!existsSync(dir)) return [];
  return readdirSync(dir, { recursive: true, encoding: "utf8" })
    .filter((file) => existsSync(join(dir, file)) && statSync(join(dir, file)).isFile())
    .map((file) => file.split("\\").join("/"))
    .sort();
}

/** Where the bytes of the file with `etag` go. */
export function blobPath(repoDir: string, etag: string): string {
  return join(repoDir, "blobs", etag);
}

/** Makes snapshots/<commit>/<file> a relative link to its blob, as the other tools do. */
export function linkSnapshotFile(repoDir: string, commit: string, file: string, etag: string): void {
  const link = join(snapshotDir(repoDir, commit), file);
  mkdirSync(dirname(link), { recursive: true });
  rmSync(link, { force: true });
  symlinkSync(relative(dirname(link), blobPath(repoDir, etag)), link);
}

export interface CachedRepo {
  repo: string;
  dir: string;
  /** Bytes of its blobs (each counted once, however many snapshots link it). */
  bytes: number;
  snapshots: { commit: string; refs: string[]; files: string[] }[];
}

/** The model repos in the cache, by name. */
export function scanCache(cache = hubCacheDir()): CachedRepo[] {
  if (!existsSync(cache)) return [];
  return readdirSync(cache)
    .filter((entry) => entry.startsWith("models--") && statSync(join(cache, entry)).isDirectory())
    .map((entry) => scanRepo(join(cache, entry), entry.slice("models--".length).split("--").join("/")))
    .sort((a, b) => a.repo.localeCompare(b.repo));
}

function scanRepo(dir: string, repo: string): CachedRepo {
  const refsDir = join(dir, "refs");
  const refs = existsSync(refsDir)
    ? readdirSync(refsDir, { recursive: true, encoding: "utf8" }).filter((ref) => statSync(join(refsDir, ref)).isFile())
    : [];
  const commits = existsSync(join(dir, "snapshots")) ? readdirSync(join(dir, "snapshots")).sort() : [];
  const snapshots = commits.map((commit) => ({
    commit,
    refs: refs.filter((ref) => cachedCommit(dir, ref) === commit),
    files: snapshotFiles(snapshotDir(dir, commit)),
  }));
  const blobs = join(dir, "blobs");
  // lstat: a blob is the bytes themselves; an .incomplete one counts too, it takes the space.
  const bytes = existsSync(blobs) ? readdirSync(blobs).reduce((sum, blob) => sum + lstatSync(join(blobs, blob)).size, 0) : 0;
  return { repo, dir, bytes, snapshots };
}

/** Deletes `org/name` from the cache; false when it was not there. */
export function removeCachedRepo(repo: string, cache = hubCacheDir()): boolean {
  const dir = repoCacheDir(repo, cache);
  if (!existsSync(dir)) return false;
  rmSync(dir, { recursive: true, force: true });
  return true;
}
