/**
 * Downloads from the Hugging Face hub (or HF_ENDPOINT's mirror) into the cache. @huggingface/hub
 * reads the repo's commit and file list; the bytes are moved here, since its own download to
 * the cache neither resumes a cut transfer nor reports progress: each file goes to
 * blobs/<etag>.incomplete, a retry asks for the rest with `Range: bytes=N-`, and only a complete
 * file (its size, and its SHA-256 for LFS files) is renamed into place and linked from its snapshot.
 */
import { createHash } from "node:crypto";
import { createReadStream, createWriteStream, existsSync, mkdirSync, renameSync, rmSync, statSync } from "node:fs";
import { dirname, join } from "node:path";
import { finished } from "node:stream/promises";
import { blobPath, linkSnapshotFile, snapshotDir } from "./hf-cache.js";

/** An error reaching or reading from the hub: one line that says what to do. */
export class HubError extends Error {
  override name = "HubError";
}

export function hubEndpoint(): string {
  return (process.env.HF_ENDPOINT || "https://huggingface.co").replace(/\/+$/, "");
}

function token(): string | undefined {
  return process.env.HF_TOKEN || undefined;
}

/** A download's bytes so far and in all, over the files it fetches (files already cached count for neither). */
export interface DownloadProgress {
  repo: string;
  file: string;
  bytes: number;
  totalBytes: number;
}

/** What a hub request failing with `status` means for `what` ("Qwen/x", "Qwen/x file y"). */
function statusError(status: number, what: string): HubError {
  if (status === 401 || status === 403) {
    const why = token() === undefined ? "HF_TOKEN is not set" : "the token in HF_TOKEN was refused";
    return new HubError(
      `${what} needs access (HTTP ${status}): ${why}; set HF_TOKEN to a token that can read it, after accepting its terms on its page`,
    );
  }
  if (status === 404) return new HubError(`${what} was not found on ${hubEndpoint()} (HTTP 404); check the name and --revision`);
  return new HubError(`${hubEndpoint()} answered HTTP ${status} for ${what}; try again later`);
}

/** Whether a fetch failed for want of a connection, or lost it midway, rather than with an answer. */
export function isNetworkError(err: unknown): err is TypeError {
  return err instanceof TypeError && /fetch failed|terminated|network/i.test(err.message);
}

/** A network failure's cause in a word or two (ECONNREFUSED, ENOTFOUND). */
export function networkReason(err: TypeError): string {
  const cause = err.cause as { code?: string; message?: string } | undefined;
  return cause?.code ?? cause?.message ?? err.message;
}

/** The commit `revision` of `repo` is at, and its files, from the hub's model-info API. */
export async function repoInfo(repo: string, revision: string): Promise<{ commit: string; files: string[] }> {
  const { modelInfo, HubApiError } = await import("@huggingface/hub");
  try {
    const info = await modelInfo({
      name: repo,
      revision,
      hubUrl: hubEndpoint(),
      accessToken: token(),
      additionalFields: ["sha", "filePaths"],
    });
    // filePaths is the library's name for the API's `siblings`.
    const { sha: commit, filePaths: files } = info as { sha?: unknown; filePaths?: unknown };
    if (typeof commit !== "string" || !Array.isArray(files))
      throw new HubError(`${hubEndpoint()} gave no commit and file list for ${repo}`);
    return { commit, files: files as string[] };
  } catch (err) {
    if (err instanceof HubApiError) throw statusError(err.statusCode, revision === "main" ? repo : `${repo} at revision ${revision}`);
    if (err instanceof TypeError && /access token/.test(err.message))
      throw new HubError(`HF_TOKEN is not a Hugging Face token: ${err.message}`);
    throw err;
  }
}

interface FileMeta {
  etag: string;
  size: number;
  /** Where the bytes are: the CDN the hub redirects to, or the hub itself. */
  url: string;
}

/** A file's etag, size and download address, read from the hub's answer as huggingface_hub reads it (HEAD, no redirects). */
async function fileMeta(repo: string, commit: string, file: string): Promise<FileMeta> {
  let url = `${hubEndpoint()}/${repo}/resolve/${commit}/${file.split("/").map(encodeURIComponent).join("/")}`;
  // identity: a compressed answer's Content-Length is not the file's size.
  const head = (at: string): Promise<Response> =>
    fetch(at, { method: "HEAD", redirect: "manual", headers: { ...authHeaders(at), "Accept-Encoding": "identity" } });
  let res = await head(url);
  // A renamed repo redirects on the hub itself before any CDN: follow that (a few times at most).
  for (let hops = 0; hops < 5 && isRedirect(res.status) && !res.headers.has("x-linked-etag"); hops++) {
    const next = new URL(res.headers.get("location") ?? "", url);
    if (next.origin !== new URL(hubEndpoint()).origin) break;
    url = next.href;
    res = await head(url);
  }
  if (res.status >= 400) throw statusError(res.status, `${repo} file ${file}`);
  // LFS files: the hub redirects and names the content by X-Linked-Etag (its SHA-256); others carry an ETag.
  const rawEtag = res.headers.get("x-linked-etag") ?? res.headers.get("etag");
  const size = Number(res.headers.get("x-linked-size") ?? res.headers.get("content-length"));
  if (!rawEtag || !Number.isSafeInteger(size)) throw new HubError(`${hubEndpoint()} gave no ETag or size for ${repo} file ${file}`);
  const location = isRedirect(res.status) ? res.headers.get("location") : null;
  return { etag: rawEtag.replace(/^W\//, "").replace(/"/g, ""), size, url: location ? new URL(location, url).href : url };
}

const isRedirect = (status: number): boolean => status >= 300 && status < 400;

/** The token goes only to the hub itself, never to the CDN it redirects to. */
function authHeaders(url: string): Record<string, string> {
  const t = token();
  return t !== undefined && new URL(url).origin === new URL(hubEndpoint()).origin ? { Authorization: `Bearer ${t}` } : {};
}

/** How often a cut transfer is taken up again before giving up (a later run resumes it too). */
const ATTEMPTS = 5;

/**
 * Downloads `files` of `repo` at `commit` into the cache at `repoDir`, skipping those its
 * snapshot already has and linking those whose blob is there (another revision's). Each file's
 * size is asked first, so that progress has a total from the start.
 */
export async function downloadFiles(
  repoDir: string,
  repo: string,
  commit: string,
  files: readonly string[],
  onProgress?: (progress: DownloadProgress) => void,
): Promise<void> {
  const snapshot = snapshotDir(repoDir, commit);
  const missing = files.filter((file) => !existsSync(join(snapshot, file)));
  const metas: [string, FileMeta][] = [];
  for (const file of missing) metas.push([file, await fileMeta(repo, commit, file)]);
  const fetched = metas.filter(([, meta]) => !existsSync(blobPath(repoDir, meta.etag)));
  const totalBytes = fetched.reduce((sum, [, meta]) => sum + meta.size, 0);
  let before = 0;
  for (const [file, meta] of fetched) {
    const report = (received: number): void => onProgress?.({ repo, file, bytes: before + received, totalBytes });
    await transfer(meta, blobPath(repoDir, meta.etag), report, `${repo} file ${file}`);
    before += meta.size;
  }
  for (const [file, meta] of metas) linkSnapshotFile(repoDir, commit, file, meta.etag);
}

async function transfer(meta: FileMeta, blob: string, onBytes: (received: number) => void, what: string): Promise<void> {
  const partial = `${blob}.incomplete`;
  mkdirSync(dirname(blob), { recursive: true });
  for (let attempt = 1; ; attempt++) {
    let have = existsSync(partial) ? statSync(partial).size : 0;
    if (have > meta.size) {
      rmSync(partial);
      have = 0;
    }
    if (have < meta.size) {
      try {
        await fetchRange(meta.url, partial, have, onBytes, what);
      } catch (err) {
        if (!isNetworkError(err) || attempt === ATTEMPTS) throw err;
        continue;
      }
    }
    onBytes(meta.size);
    break;
  }
  const got = statSync(partial).size;
  if (got !== meta.size) throw new HubError(`${what}: received ${got} bytes of ${meta.size}; run again to resume`);
  if (/^[0-9a-f]{64}$/.test(meta.etag) && (await sha256(partial)) !== meta.etag) {
    rmSync(partial);
    throw new HubError(`${what}: the downloaded bytes do not match the hub's SHA-256; run again to download it anew`);
  }
  renameSync(partial, blob);
}

/** Appends the bytes of `url` from `start` on to `path`. */
async function fetchRange(url: string, path: string, start: number, onBytes: (received: number) => void, what: string): Promise<void> {
  const headers: Record<string, string> = { ...authHeaders(url), "Accept-Encoding": "identity" };
  if (start > 0) headers.Range = `bytes=${start}-`;
  const res = await fetch(url, { headers });
  if (res.status >= 400) throw statusError(res.status, what);
  // A server that ignores the range sends the whole file again: start over.
  const resumed = res.status === 206 && res.headers.get("content-range")?.startsWith(`bytes ${start}-`) === true;
  let received = resumed ? start : 0;
  const out = createWriteStream(path, { flags: resumed ? "a" : "w" });
  try {
    for await (const chunk of res.body ?? []) {
      const bytes = chunk as Uint8Array;
      if (!out.write(bytes)) await new Promise<void>((resolve) => out.once("drain", () => resolve()));
      received += bytes.byteLength;
      onBytes(received);
    }
  } finally {
    out.end();
    await finished(out);
  }
}

async function sha256(path: string): Promise<string> {
  const hash = createHash("sha256");
  for await (const chunk of createReadStream(path)) hash.update(chunk as Buffer);
  return hash.digest("hex");
}
