/**
 * The compiled `tiny-llm` command run as a child process, as a user runs it.
 */
import { spawnSync, type SpawnSyncOptions } from "node:child_process";
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
