import assert from "node:assert/strict";
import { CheckpointError } from "../../src/loaders/safetensors.js";

export function escapeRegExp(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}

/** Asserts that `fn` throws a CheckpointError whose message names `file` and matches every pattern. */
export function assertCheckpointError(fn: () => unknown, file: string, ...patterns: RegExp[]): void {
  assert.throws(fn, (error: unknown) => {
    assert.ok(error instanceof CheckpointError, `expected a CheckpointError, got ${String(error)}`);
    assert.match(error.message, new RegExp(escapeRegExp(file)));
    for (const pattern of patterns) assert.match(error.message, pattern);
    return true;
  });
}
