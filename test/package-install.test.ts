/**
 * The package a user installs: `npm pack` of this tree, installed with --omit=dev into an empty
 * folder (so with no TypeScript and no node-llama-cpp) and globally, then run on stories260k. The
 * install script builds the addon without downloading Node's headers, a second run with
 * everything up to date builds nothing, and a build that fails says so in one line and leaves
 * the TypeScript backend to run.
 *
 * Packs dist/ as it is (--ignore-scripts skips prepack's tsc, which would rewrite dist/ under
 * the other tests): `npm test` has just built it. One install is shared by the tests; the native
 * build in it takes under a minute on 2 cores. Skips when the npm registry is unreachable.
 */
import assert from "node:assert/strict";
import { spawnSync, type SpawnSyncReturns } from "node:child_process";
import { cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { projectRoot, sharedPath } from "./support/shared.js";

const stories = sharedPath("golden", "stories260k.json");
const model = sharedPath("models", "stories260k-qwen2");
const pkg = JSON.parse(readFileSync(join(projectRoot, "package.json"), "utf8")) as { name: string; version: string };

const MINUTES = 60_000;
const BUILT = /^tiny-llm: native kernels built in \d+ s$/m;
const FALLBACK = /^tiny-llm: native kernels did not build \(.*\); the slower TypeScript backend will be used$/m;

/**
 * The environment for npm: none of the npm_* variables of an `npm test` around this (its local
 * prefix would be this project), an empty user config (a developer's may set nodedir), and
 * node-gyp with nowhere to get Node's headers from but the install script's --nodedir: an empty
 * header cache and a download URL that refuses connections.
 */
function npmEnv(scratch: string, devdir: string): NodeJS.ProcessEnv {
  const env = Object.fromEntries(Object.entries(process.env).filter(([key]) => !/^npm_/i.test(key)));
  const userconfig = join(scratch, "npmrc");
  writeFileSync(userconfig, "");
  mkdirSync(devdir, { recursive: true });
  return { ...env, npm_config_userconfig: userconfig, npm_config_devdir: devdir, npm_config_dist_url: "http://127.0.0.1:9/" };
}

function run(command: string, args: string[], cwd: string, env: NodeJS.ProcessEnv, timeout = 10 * MINUTES): SpawnSyncReturns<string> {
  const r = spawnSync(command, args, { cwd, env, encoding: "utf8", timeout });
  assert.equal(r.error, undefined, `${command} ${args.join(" ")}: ${r.error?.message}`);
  assert.equal(r.status, 0, `${command} ${args.join(" ")} exited ${r.status}:\n${r.stdout}\n${r.stderr}`);
  return r;
}

const NPM_FLAGS = ["--prefer-offline", "--no-audit", "--no-fund", "--foreground-scripts"];

const registry = spawnSync("npm", ["ping"], { encoding: "utf8", timeout: 30_000 });
const offline = registry.status === 0 ? false : "the npm registry is unreachable (npm ping failed): the package cannot be installed";

describe("the packed package", { skip: stories.skip || model.skip || offline }, () => {
  const scratch = mkdtempSync(join(tmpdir(), "tiny-llm-package-"));
  const app = join(scratch, "app");
  const installed = join(app, "node_modules", pkg.name);
  const addon = join(installed, "build", "Release", "tiny_llm_native.node");
  const devdir = join(scratch, "node-gyp-devdir");
  const golden = (): string => (JSON.parse(readFileSync(stories.path, "utf8")) as { qwen2: { greedy_text: string } }).qwen2.greedy_text;
  let env: NodeJS.ProcessEnv;
  let tarball: string;
  let files: string[];
  let install: SpawnSyncReturns<string>;

  before(() => {
    env = npmEnv(scratch, devdir);
    run("npm", ["pack", "--ignore-scripts", "--pack-destination", scratch], projectRoot, env);
    tarball = join(scratch, `${pkg.name}-${pkg.version}.tgz`);
    files = run("tar", ["-tzf", tarball], scratch, env)
      .stdout.split("\n")
      .filter((line) => line !== "" && !line.endsWith("/"))
      .map((line) => line.replace(/^package\//, ""));
    mkdirSync(app);
    writeFileSync(join(app, "package.json"), JSON.stringify({ private: true }));
    install = run("npm", ["install", "--omit=dev", ...NPM_FLAGS, tarball], app, env);
  });
  after(() => rmSync(scratch, { recursive: true, force: true }));

  test("holds the compiled JavaScript, the native sources and the install script, and no tests, models or builds", () => {
    for (const file of ["package.json", "README.md", "dist/src/cli/main.js", "binding.gyp", "native/src/addon.cc", "scripts/install.mjs"]) {
      assert.ok(files.includes(file), `${file} is in the package`);
    }
    const page = join(projectRoot, "src", "server", "page");
    for (const file of existsSync(page) ? readdirSync(page) : [])
      assert.ok(files.includes(`src/server/page/${file}`), `the chat page's ${file}`);
    const unwanted = files.filter(
      (f) => /^(test|dist\/test|dist\/scripts|build|node_modules)\//.test(f) || /\.(map|gguf|safetensors|node)$|(?<!\.d)\.ts$/.test(f),
    );
    assert.deepEqual(unwanted, []);
    assert.ok(statSync(tarball).size < 1_000_000, `the tarball is ${statSync(tarball).size} bytes`);
  });

  test("installs with --omit=dev: no TypeScript or node-llama-cpp, the addon built offline (or one line saying it did not)", () => {
    const output = install.stdout + install.stderr;
    assert.ok(BUILT.test(output) !== FALLBACK.test(output), `one of the two outcomes is reported:\n${output}`);
    assert.equal(existsSync(addon), BUILT.test(output));
    assert.deepEqual(readdirSync(devdir), [], "node-gyp downloaded no headers");
    assert.doesNotMatch(output, /compiling TypeScript/);
    for (const dev of ["typescript", "node-llama-cpp", "@node-llama-cpp", "eslint"]) {
      assert.ok(!existsSync(join(app, "node_modules", dev)), `${dev} is not installed`);
    }
    const buildsHere = existsSync(join(projectRoot, "build", "Release", "tiny_llm_native.node"));
    if (buildsHere) assert.match(output, BUILT, "the addon built in this checkout, so it builds from the package");
  });

  test("tiny-llm generate prints the reference story (native kernels where they built)", () => {
    const backend = existsSync(addon) ? "native" : "ts";
    const bin = join(app, "node_modules", ".bin", "tiny-llm");
    const args = ["generate", "--model", model.path, "--prompt", "", "--max-tokens", "256", "--temperature", "0", "--backend", backend];
    assert.equal(run(bin, args, app, env, 2 * MINUTES).stdout, golden() + "\n");
  });

  test("a second install run with everything up to date builds nothing", (t) => {
    if (!existsSync(addon)) return t.skip("the addon did not build");
    const before = statSync(addon).mtimeMs;
    const started = performance.now();
    const r = run("npm", ["rebuild", pkg.name, ...NPM_FLAGS], app, env, 2 * MINUTES);
    const seconds = (performance.now() - started) / 1000;
    assert.match(r.stdout, /^tiny-llm: native kernels up to date$/m);
    assert.equal(statSync(addon).mtimeMs, before);
    assert.ok(seconds < 20, `npm rebuild took ${seconds.toFixed(1)} s`);
  });

  test("a failed native build is one line, removes the stale addon, and the TypeScript backend runs", () => {
    // A copy beside the installed package resolves node-addon-api and the rest from app/node_modules.
    const broken = join(app, "node_modules", "tiny-llm-broken");
    cpSync(installed, broken, { recursive: true });
    writeFileSync(join(broken, "binding.gyp"), "{ not gyp");
    // As npm runs it: with the node-gyp npm bundles.
    const gyp = run("npm", ["config", "get", "node-gyp"], app, env).stdout.trim();
    const r = run(process.execPath, [join(broken, "scripts", "install.mjs")], broken, { ...env, npm_config_node_gyp: gyp }, 2 * MINUTES);
    const lines = r.stdout.split("\n").filter((line) => line.startsWith("tiny-llm: "));
    assert.equal(lines.length, 2, r.stdout);
    assert.match(lines[1], FALLBACK);
    assert.ok(existsSync(join(broken, "build-native.log")));
    assert.ok(!existsSync(join(broken, "build", "Release", "tiny_llm_native.node")), "no addon older than its sources is left to load");
    const cli = join(broken, "dist", "src", "cli", "main.js");
    const args = [cli, "generate", "--model", model.path, "--prompt", "", "--max-tokens", "256", "--temperature", "0"];
    assert.equal(run(process.execPath, args, app, env, 2 * MINUTES).stdout, golden() + "\n");
  });

  test("installs globally: tiny-llm --version and generate from <prefix>/bin", () => {
    // --ignore-scripts: the addon's build is tested above; this is about the bin link and dependencies.
    const prefix = join(scratch, "global");
    run("npm", ["install", "--global", "--prefix", prefix, "--ignore-scripts", ...NPM_FLAGS, tarball], scratch, env);
    const bin = join(prefix, "bin", "tiny-llm");
    assert.equal(run(bin, ["--version"], scratch, env).stdout.trim(), `tiny-llm ${pkg.version}`);
    const args = ["generate", "--model", model.path, "--prompt", "", "--max-tokens", "256", "--temperature", "0"];
    assert.equal(run(bin, args, scratch, env, 2 * MINUTES).stdout, golden() + "\n");
  });
});
