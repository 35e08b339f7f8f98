/**
 * A Hugging Face hub on 127.0.0.1, answering as the real one does the requests that
 * @huggingface/hub and our downloader make: the model-info API
 * (`/api/models/<repo>/revision/<rev>` with `sha` and `siblings`), and `resolve/<rev>/<file>`,
 * which serves small files itself (with `ETag` and `X-Repo-Commit`) and redirects LFS files
 * (weights) to a CDN-like `/cdn/<sha256>` path (with `X-Linked-Etag` and `X-Linked-Size`).
 * Range requests are honoured; a transfer can be cut off midway once; gated repos want a token.
 */
import { createHash } from "node:crypto";
import { readFileSync, readdirSync } from "node:fs";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { join } from "node:path";

export interface FakeRepo {
  /** File name in the repo → its bytes. */
  files: Map<string, Uint8Array>;
  /** The commit `main` points at. */
  commit: string;
  /** When set, files are served only with `Authorization: Bearer <token>`. */
  token?: string;
}

export interface SeenRequest {
  method: string;
  path: string;
  range?: string;
  authorization?: string;
}

/** A commit hash made from `seed`, as the hub's are 40 hex digits. */
export function fakeCommit(seed: string): string {
  return createHash("sha1").update(seed).digest("hex");
}

/** The files of a folder on disk (one level), as a repo's files. */
export function folderFiles(dir: string): Map<string, Uint8Array> {
  return new Map(readdirSync(dir).map((name) => [name, new Uint8Array(readFileSync(join(dir, name)))]));
}

/** As the hub stores them: weights and other large files in LFS, named by their SHA-256. */
const isLfs = (file: string): boolean => /\.(safetensors|gguf|bin|onnx)$/.test(file);
const sha256 = (bytes: Uint8Array): string => createHash("sha256").update(bytes).digest("hex");
/** A git blob's id, the ETag the hub gives a file kept in git. */
const gitBlobId = (bytes: Uint8Array): string => createHash("sha1").update(`blob ${bytes.byteLength}\0`).update(bytes).digest("hex");

export class FakeHub {
  readonly repos = new Map<string, FakeRepo>();
  readonly requests: SeenRequest[] = [];
  /** Blobs (by SHA-256) whose next transfer stops after this many bytes, with the connection dropped. */
  readonly cutAfter = new Map<string, number>();
  private server?: Server;
  url = "";

  async start(): Promise<this> {
    this.server = createServer((req, res) => this.handle(req, res));
    await new Promise<void>((resolve) => this.server?.listen(0, "127.0.0.1", resolve));
    this.url = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
    return this;
  }

  async close(): Promise<void> {
    this.server?.closeAllConnections();
    await new Promise<void>((resolve) => this.server?.close(() => resolve()));
  }

  /** The requests seen so far, as "METHOD path". */
  paths(): string[] {
    return this.requests.map((r) => `${r.method} ${r.path}`);
  }

  private handle(req: IncomingMessage, res: ServerResponse): void {
    const url = new URL(req.url ?? "/", this.url);
    const path = decodeURIComponent(url.pathname);
    this.requests.push({ method: req.method ?? "GET", path, range: req.headers.range, authorization: req.headers.authorization });
    const info = /^\/api\/models\/([^/]+\/[^/]+)\/revision\/([^/]+)$/.exec(path);
    if (info) return this.modelInfo(res, info[1], info[2], url.searchParams.getAll("expand"));
    const resolve = /^\/([^/]+\/[^/]+)\/resolve\/([^/]+)\/(.+)$/.exec(path);
    if (resolve) return this.resolve(req, res, resolve[1], resolve[2], resolve[3]);
    const cdn = /^\/cdn\/([0-9a-f]{64})$/.exec(path);
    if (cdn) return this.cdn(req, res, cdn[1]);
    this.json(res, 404, { error: "Not found" });
  }

  private repoAt(res: ServerResponse, name: string, revision: string): FakeRepo | undefined {
    const repo = this.repos.get(name);
    if (repo && (revision === "main" || revision === "HEAD" || revision === repo.commit)) return repo;
    res.setHeader("X-Error-Code", repo ? "RevisionNotFound" : "RepoNotFound");
    this.json(res, 404, { error: repo ? `Invalid rev id: ${revision}` : "Repository not found" });
    return undefined;
  }

  /** As the real API: with `expand` parameters, only the fields they name (besides the ids). */
  private modelInfo(res: ServerResponse, name: string, revision: string, expand: string[]): void {
    const repo = this.repoAt(res, name, revision);
    if (!repo) return;
    const fields: Record<string, unknown> = {
      sha: repo.commit,
      private: false,
      gated: repo.token === undefined ? false : "manual",
      downloads: 0,
      likes: 0,
      lastModified: "2025-01-01T00:00:00.000Z",
      siblings: [...repo.files.keys()].map((rfilename) => ({ rfilename })),
    };
    const shown = expand.length === 0 ? Object.keys(fields) : expand.filter((key) => key in fields);
    this.json(res, 200, { _id: repo.commit.slice(0, 24), id: name, ...Object.fromEntries(shown.map((key) => [key, fields[key]])) });
  }

  private resolve(req: IncomingMessage, res: ServerResponse, name: string, revision: string, file: string): void {
    const repo = this.repoAt(res, name, revision);
    if (!repo) return;
    if (repo.token !== undefined && req.headers.authorization !== `Bearer ${repo.token}`) {
      res.setHeader("X-Error-Code", "GatedRepo");
      return this.json(res, 401, { error: `Access to model ${name} is restricted. You must have access to it and be authenticated.` });
    }
    const bytes = repo.files.get(file);
    if (!bytes) {
      res.setHeader("X-Error-Code", "EntryNotFound");
      return this.json(res, 404, { error: "Entry not found" });
    }
    res.setHeader("X-Repo-Commit", repo.commit);
    if (isLfs(file)) {
      const oid = sha256(bytes);
      res.setHeader("X-Linked-Etag", `"${oid}"`);
      res.setHeader("X-Linked-Size", String(bytes.byteLength));
      res.setHeader("ETag", `"${gitBlobId(bytes)}"`);
      res.setHeader("Location", `/cdn/${oid}`);
      res.statusCode = 302;
      res.end();
      return;
    }
    res.setHeader("ETag", `"${gitBlobId(bytes)}"`);
    this.send(req, res, bytes);
  }

  private cdn(req: IncomingMessage, res: ServerResponse, oid: string): void {
    const bytes = [...this.repos.values()].flatMap((repo) => [...repo.files.values()]).find((b) => sha256(b) === oid);
    if (!bytes) return this.json(res, 404, { error: "Not found" });
    this.send(req, res, bytes, oid);
  }

  /** The bytes, or the range asked for; cut short once when `cutAfter` says so. */
  private send(req: IncomingMessage, res: ServerResponse, bytes: Uint8Array, oid?: string): void {
    let start = 0;
    let end = bytes.byteLength - 1;
    const range = /^bytes=(\d+)-(\d*)$/.exec(req.headers.range ?? "");
    if (range) {
      start = Number(range[1]);
      end = range[2] === "" ? end : Math.min(end, Number(range[2]));
      if (start > end) {
        res.writeHead(416, { "Content-Range": `bytes */${bytes.byteLength}` });
        return void res.end();
      }
      res.statusCode = 206;
      res.setHeader("Content-Range", `bytes ${start}-${end}/${bytes.byteLength}`);
    }
    res.setHeader("Accept-Ranges", "bytes");
    res.setHeader("Content-Length", String(end - start + 1));
    res.setHeader("Content-Type", "application/octet-stream");
    if (req.method === "HEAD") return void res.end();
    const cut = oid === undefined ? undefined : this.cutAfter.get(oid);
    if (cut !== undefined && cut < end - start + 1) {
      this.cutAfter.delete(oid as string);
      // Headers promise the whole range; the connection drops partway, as a flaky network does.
      res.write(bytes.subarray(start, start + cut), () => res.destroy());
      return;
    }
    res.end(bytes.subarray(start, end + 1));
  }

  private json(res: ServerResponse, status: number, body: unknown): void {
    res.writeHead(status, { "Content-Type": "application/json" });
    res.end(JSON.stringify(body));
  }
}
