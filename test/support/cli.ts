/**
 * The compiled `tiny-llm` command run as a child process, as a user runs it.
 */
import { spawn, spawnSync, type SpawnSyncOptions } from "node:child_process";
import { join } from "node:path";
import { projectRoot } from "./shared.js";

export const cliPath = join(projectRoot, "dist", "src", "cli", "main.js");

export interface CliRun {
  status: number | null;
  stdout: string;
  stderr: string;
}

/** Runs `tiny-llm ...args` to completion. */
export function runCli(args: readonly string[], opts: Omit<SpawnSyncOptions, "encoding"> = {}): CliRun {
  const r = spawnSync(process.execPath, [cliPath, ...args], { timeout: 120_000, ...opts, encoding: "utf8" });
  if (r.error) throw r.error;
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

/**
 * Runs `tiny-llm ...args` to completion without blocking this process's event loop, for a test
 * whose servers (a fake hub) must answer the command meanwhile.
 */
export async function runCliAsync(args: readonly string[], env: NodeJS.ProcessEnv = process.env): Promise<CliRun> {
  const child = spawn(process.execPath, [cliPath, ...args], { env, stdio: ["ignore", "pipe", "pipe"], timeout: 120_000 });
  let stdout = "";
  let stderr = "";
  child.stdout.setEncoding("utf8").on("data", (chunk: string) => (stdout += chunk));
  child.stderr.setEncoding("utf8").on("data", (chunk: string) => (stderr += chunk));
  const status = await new Promise<number | null>((resolve, reject) => child.on("error", reject).on("close", resolve));
  return { status, stdout, stderr };
}
