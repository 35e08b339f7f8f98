// The guide (docs/guide/) and docs/architecture.md, kept true: every relative link resolves (its
// #anchor too, in a Markdown target); every function a page names as a link, [`name`](file), is
// declared in that file (names in plain backticks are prose, not checked); every backticked
// repository path exists; every chapter of scripts/guide-chapters.ts has its page, its command and
// test files with tests in them; every picture is what its script draws.
//
// Running every chapter's tests here would take as long as `npm test` itself: two cheap chapters
// run for real through test:chapter's script, and for the others each test file must exist, hold
// tests, and have a test or suite whose name the chapter's pattern matches.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { basename, dirname, extname, join, relative, resolve } from "node:path";
import { test } from "node:test";
import { CHAPTERS } from "../scripts/guide-chapters.js";
import { projectRoot } from "./support/shared.js";

const guideDir = join(projectRoot, "docs", "guide");
const docs = [...readdirSync(guideDir).filter((f) => f.endsWith(".md")), "../architecture.md"].map((f) => resolve(guideDir, f));
const read = (path: string): string => readFileSync(path, "utf8");
const show = (path: string): string => relative(projectRoot, path);

/** [text](target) links outside fenced code. */
function links(markdown: string): { text: string; target: string }[] {
  const prose = markdown.replace(/^```[\s\S]*?^```/gm, "");
  return [...prose.matchAll(/\[([^\]]*)\]\(([^)\s]+)\)/g)].map((m) => ({ text: m[1], target: m[2] }));
}

/** GitHub's anchors for a Markdown file's headings: lower case, punctuation dropped, spaces as hyphens. */
function anchors(markdown: string): Set<string> {
  const headings = [...markdown.replace(/^```[\s\S]*?^```/gm, "").matchAll(/^#{1,6}\s+(.+)$/gm)].map((m) => m[1]);
  return new Set(
    headings.map((h) =>
      h
        .toLowerCase()
        .replace(/[^\p{L}\p{N} _-]/gu, "")
        .replace(/ /g, "-"),
    ),
  );
}

const escapeRe = (s: string): string => s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");

/** Whether `name` is declared in TypeScript source: a function, class, type, constant, or a member. */
function declaredInTs(source: string, name: string): boolean {
  const n = escapeRe(name);
  const modifiers = "(?:(?:export|public|private|protected|static|readonly|async|override|get|set|abstract|declare)\\s+)*";
  return (
    new RegExp(`\\b(?:function\\*?|class|interface|type|const|let|enum)\\s+${n}\\b`).test(source) ||
    new RegExp(`^\\s*${modifiers}${n}\\s*[?!]?\\s*[(<:=]`, "m").test(source)
  );
}

/** Whether `name` is declared in C++ source: a function, a class, struct, enum or namespace, or a constant. */
function declaredInCpp(source: string, name: string): boolean {
  const n = escapeRe(name);
  return (
    new RegExp(`\\b${n}\\s*\\(`).test(source) ||
    new RegExp(`\\b(?:struct|class|enum|namespace)\\s+${n}\\b`).test(source) ||
    new RegExp(`\\bconstexpr\\b[^;]*\\b${n}\\s*=`).test(source)
  );
}

/** Why `name` (`fn`, `Class.member`, `ns::fn`) is not declared in `file`, or undefined when it is. */
function undeclared(name: string, file: string): string | undefined {
  const source = read(file);
  const cpp = file.endsWith(".cc") || file.endsWith(".h");
  const parts = name.split(cpp ? "::" : ".");
  if (cpp && parts.length === 2 && new RegExp(`\\b${escapeRe(name)}\\s*\\(`).test(source)) return undefined;
  const missing = parts.filter((p) => !(cpp ? declaredInCpp(source, p) : declaredInTs(source, p)));
  return missing.length === 0 ? undefined : `${missing.join(", ")} of ${name} not declared in ${show(file)}`;
}

test("every relative link in the guide and docs/architecture.md resolves, #anchors included", () => {
  const broken: string[] = [];
  for (const doc of docs) {
    for (const { target } of links(read(doc))) {
      if (/^[a-z]+:/.test(target)) continue;
      const [path, anchor] = target.split("#");
      const file = path === "" ? doc : resolve(dirname(doc), path);
      if (!existsSync(file)) broken.push(`${show(doc)}: ${target} does not exist`);
      else if (anchor !== undefined && file.endsWith(".md") && !anchors(read(file)).has(anchor)) {
        broken.push(`${show(doc)}: ${show(file)} has no heading #${anchor}`);
      }
    }
  }
  assert.deepEqual(broken, []);
});

test("every function a page links to is declared in the file it links to", () => {
  const missing: string[] = [];
  let checked = 0;
  for (const doc of docs) {
    for (const { text, target } of links(read(doc))) {
      const m = /^`([A-Za-z_$][\w$]*(?:(?:\.|::)[A-Za-z_$][\w$]*)*)`$/.exec(text);
      const file = resolve(dirname(doc), target.split("#")[0]);
      if (!m || /^[a-z]+:/.test(target) || m[1] === basename(file) || ![".ts", ".cc", ".h"].includes(extname(file))) continue;
      if (!existsSync(file)) continue; // reported by the link test
      checked++;
      const why = undeclared(m[1], file);
      if (why) missing.push(`${show(doc)}: ${why}`);
    }
  }
  assert.deepEqual(missing, []);
  assert.ok(checked > 100, `${checked} names checked`);
});

test("the checker finds declarations and misses what is not declared", () => {
  const file = join(projectRoot, "src", "engine", "scheduler.ts");
  assert.equal(undeclared("Scheduler.schedule", file), undefined);
  assert.equal(undeclared("Scheduler.preempt", file), undefined);
  assert.match(undeclared("Scheduler.rebalance", file) ?? "", /rebalance of Scheduler.rebalance not declared/);
  const cc = join(projectRoot, "native", "src", "kernels_vnni.cc");
  assert.equal(undeclared("vnni::matmul_strip", cc), undefined);
  assert.match(undeclared("vnni::matmul_tiles", cc) ?? "", /matmul_tiles/);
});

test("every repository path a page names in backticks exists", () => {
  const missing: string[] = [];
  for (const doc of docs) {
    for (const m of read(doc).matchAll(/`((?:src|native|test|scripts|docs)\/[\w./-]*)`/g)) {
      if (!existsSync(join(projectRoot, m[1]))) missing.push(`${show(doc)}: ${m[1]}`);
    }
  }
  assert.deepEqual(missing, []);
});

test("every chapter has its page, its command and links to its test files; every page is a chapter", () => {
  const pages = readdirSync(guideDir).filter((f) => /^week\d-\d\d-.+\.md$/.test(f));
  assert.deepEqual([...pages].sort(), CHAPTERS.map((c) => c.page).sort());
  const ids = new Set(CHAPTERS.map((c) => c.id));
  assert.equal(ids.size, CHAPTERS.length, "chapter ids are unique");
  for (const c of CHAPTERS) {
    const page = read(join(guideDir, c.page));
    assert.ok(page.includes(`npm run test:chapter -- ${c.id}`), `${c.page} gives its command`);
    const linked = new Set(links(page).map((l) => resolve(guideDir, l.target.split("#")[0])));
    for (const { file } of c.tests) assert.ok(linked.has(join(projectRoot, "test", file)), `${c.page} links ${file}`);
  }
  for (const doc of docs) {
    for (const m of read(doc).matchAll(/npm run test:chapter -- ([\w-]+)/g)) assert.ok(ids.has(m[1]), `${show(doc)}: no chapter ${m[1]}`);
  }
});

test("the README links the guide and the architecture; the index links every chapter in course order", () => {
  const readme = links(read(join(projectRoot, "README.md"))).map((l) => l.target);
  assert.ok(readme.includes("docs/guide/index.md"));
  assert.ok(readme.includes("docs/architecture.md"));
  const index = links(read(join(guideDir, "index.md"))).map((l) => l.target);
  const order = CHAPTERS.map((c) => index.indexOf(c.page));
  assert.ok(!order.includes(-1), `the index links ${CHAPTERS.filter((_, i) => order[i] === -1).map((c) => c.page)}`);
  assert.deepEqual(
    order,
    [...order].sort((a, b) => a - b),
  );
});

test("every chapter's test files exist, hold tests, and have tests its name pattern matches", () => {
  for (const c of CHAPTERS) {
    assert.ok(c.tests.length > 0, `${c.id} has tests`);
    for (const { file, grep } of c.tests) {
      const path = join(projectRoot, "test", file);
      assert.ok(existsSync(path), `${c.id}: ${file} exists`);
      const source = read(path);
      assert.match(source, /\btest\(/, `${c.id}: ${file} holds tests`);
      if (grep === undefined) continue;
      const titles = [...source.matchAll(/\b(?:test|describe)\(\s*(["'`])((?:\\.|(?!\1)[^\\])*)\1/g)].map((m) => m[2]);
      const pattern = new RegExp(grep);
      assert.ok(
        titles.some((t) => pattern.test(t)),
        `${c.id}: no test or suite of ${file} matches /${grep}/`,
      );
    }
  }
});

/** The environment of a test process without node:test's marker, so a nested `node --test` reports on its own. */
function plainEnv(): NodeJS.ProcessEnv {
  const env = { ...process.env };
  delete env.NODE_TEST_CONTEXT;
  return env;
}

const testChapter = (...args: string[]) =>
  spawnSync(process.execPath, [join(projectRoot, "dist", "scripts", "test-chapter.js"), ...args], {
    encoding: "utf8",
    env: plainEnv(),
    timeout: 300_000,
  });

for (const id of ["tensors", "rope"]) {
  test(`npm run test:chapter -- ${id} runs its tests, and they pass`, () => {
    const run = testChapter(id);
    const count = (what: string): number =>
      [...run.stdout.matchAll(new RegExp(`^ℹ ${what} (\\d+)$`, "gm"))].reduce((n, m) => n + Number(m[1]), 0);
    assert.equal(run.status, 0, run.stdout.slice(-2000) + run.stderr);
    assert.ok(count("pass") >= 1, `${count("pass")} tests passed`);
    assert.equal(count("fail"), 0);
  });
}

test("test:chapter with an unknown chapter, or none, says so in one line with the chapters", () => {
  for (const args of [["nope"], []]) {
    const run = testChapter(...args);
    assert.equal(run.status, 2);
    assert.equal(run.stdout, "");
    const lines = run.stderr.trimEnd().split("\n");
    assert.equal(lines.length, 1, run.stderr);
    assert.match(lines[0], args.length > 0 ? /unknown chapter "nope"/ : /name a chapter/);
    assert.match(lines[0], /tensors, attention, gqa, .*, deployment$/);
  }
});

test("every picture is what its script draws from the committed code and data", () => {
  const out = mkdtempSync(join(tmpdir(), "guide-pictures-"));
  try {
    const run = spawnSync(process.execPath, [join(projectRoot, "dist", "scripts", "draw-guide-diagrams.js"), "--out", out], {
      encoding: "utf8",
    });
    assert.equal(run.status, 0, run.stderr);
    const drawn = (dir: string): string[] =>
      readdirSync(dir, { recursive: true, encoding: "utf8" })
        .filter((f) => f.endsWith(".svg") && statSync(join(dir, f)).isFile())
        .sort();
    const pictures = drawn(out);
    assert.ok(pictures.length >= 6, `${pictures.length} pictures drawn`);
    for (const p of pictures) {
      assert.ok(existsSync(join(projectRoot, p)), `${p} is committed`);
      assert.ok(
        read(join(projectRoot, p)) === read(join(out, p)),
        `${p} is what the script draws: run node dist/scripts/draw-guide-diagrams.js`,
      );
    }
    // No picture in the docs that no script draws.
    const committed = drawn(join(projectRoot, "docs")).map((f) => join("docs", f));
    assert.deepEqual(committed, pictures);
  } finally {
    rmSync(out, { recursive: true, force: true });
  }
});
