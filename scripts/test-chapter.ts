/**
 * `npm run test:chapter -- NAME`: runs the tests of one chapter of the guide (docs/guide/), as
 * scripts/guide-chapters.ts lists them, from the compiled files in dist/test/. Files whose tests
 * share a name pattern run in one `node --test`; the exit status is the worst of the runs.
 */
import { spawnSync } from "node:child_process";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { CHAPTERS, chapterIds } from "./guide-chapters.js";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "../..");

function main(argv: string[]): number {
  const [name, ...extra] = argv;
  const chapter = CHAPTERS.find((c) => c.id === name);
  if (chapter === undefined || extra.length > 0) {
    const what = name === undefined ? "name a chapter" : extra.length > 0 ? "name one chapter" : `unknown chapter "${name}"`;
    process.stderr.write(`test:chapter: ${what}; the chapters are ${chapterIds().join(", ")}\n`);
    return 2;
  }
  const groups = new Map<string | undefined, string[]>();
  for (const { file, grep } of chapter.tests) {
    groups.set(grep, [...(groups.get(grep) ?? []), join(root, "dist", "test", file.replace(/\.ts$/, ".js"))]);
  }
  let status = 0;
  for (const [grep, files] of groups) {
    const pattern = grep === undefined ? [] : [`--test-name-pattern=${grep}`];
    const run = spawnSync(process.execPath, ["--test", "--test-reporter=spec", ...pattern, ...files], { stdio: "inherit" });
    status = Math.max(status, run.status ?? 1);
  }
  return status;
}

process.exitCode = main(process.argv.slice(2));
