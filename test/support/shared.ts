import { existsSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

/** The project root, found from this compiled file (dist/test/support/shared.js). */
export const projectRoot = resolve(dirname(fileURLToPath(import.meta.url)), "../../..");

/** `../shared` beside the project: real checkpoints and golden outputs, never copied in. */
export const sharedDir = resolve(projectRoot, "..", "shared");

/**
 * Path to a file under ../shared, or a skip reason for node:test when it is absent, so a
 * checkout without the shared folder still runs every other test.
 */
export function sharedPath(...parts: string[]): { path: string; skip: string | false } {
  const path = join(sharedDir, ...parts);
  return existsSync(path) ? { path, skip: false } : { path, skip: `${path} not found: shared test data is absent` };
}
