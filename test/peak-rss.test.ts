/** The peak RSS figure that `generate --verbose` and `bench` report. */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { join } from "node:path";
import { test } from "node:test";
import { pathToFileURL } from "node:url";
import { peakRssBytes } from "../src/cli/peak-rss.js";
import { projectRoot } from "./support/shared.js";

const MB = 2 ** 20;

test("peak RSS grows with memory the process touches", () => {
  const before = peakRssBytes();
  assert.ok(before >= process.memoryUsage().rss * 0.9, `peak ${before} below the current RSS`);
  const touched = Buffer.alloc(256 * MB, 1);
  const after = peakRssBytes();
  assert.ok(after - before >= 200 * MB, `peak grew by ${((after - before) / MB).toFixed(0)} MB after touching 256 MB`);
  assert.equal(touched[touched.length - 1], 1);
});

test("a child's peak RSS does not include its parent's memory", () => {
  const held = Buffer.alloc(512 * MB, 1);
  const module = pathToFileURL(join(projectRoot, "dist", "src", "cli", "peak-rss.js")).href;
  const script = `import(${JSON.stringify(module)}).then((m) => console.log(m.peakRssBytes()))`;
  const child = Number(execFileSync(process.execPath, ["-e", script], { encoding: "utf8" }).trim());
  assert.ok(child > 0 && child < 256 * MB, `the child reports ${(child / MB).toFixed(0)} MB while its parent holds 512 MB`);
  assert.equal(held[0], 1);
});
