/**
 * npm's install step for tiny-llm (package.json "install"): builds what is missing or out of
 * date and nothing else, so a second run (npm rebuild, npm install in a built checkout, npx
 * tiny-llm where npm runs it again) takes a tenth of a second and never deletes build/ under a
 * process that has the addon loaded, as node-gyp rebuild did.
 *
 * Plain JavaScript, since it runs before TypeScript is compiled, and in a user's install from a
 * packed tarball there is no TypeScript at all: that package ships dist/ compiled.
 *
 * - The native addon is built (node-gyp configure, then build) when
 *   build/Release/tiny_llm_native.node is older than binding.gyp or a file in native/src/. With
 *   the running Node's own headers at <prefix>/include/node, node-gyp is pointed at them
 *   (--nodedir) instead of downloading them, so the build works offline. A failed build leaves
 *   its log in build-native.log, says so in one line and exits 0: the TypeScript backend runs.
 * - TypeScript is compiled (tsc -p tsconfig.json) when the compiler is installed and a source
 *   file is newer than its compiled file in dist/.
 */
import { spawnSync } from "node:child_process";
import { chmodSync, closeSync, existsSync, openSync, readdirSync, readFileSync, rmSync, statSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join, relative } from "node:path";
import process from "node:process";
import { fileURLToPath } from "node:url";

const root = dirname(dirname(fileURLToPath(import.meta.url)));
const ADDON = join(root, "build", "Release", "tiny_llm_native.node");
const LOG = join(root, "build-native.log");
const CLI = join(root, "dist", "src", "cli", "main.js");

/** One line of what the install did, on stdout (npm shows it with --foreground-scripts, or on failure). */
function say(line) {
  process.stdout.write(line + "\n");
}

/** Modification time in ms, or -Infinity for a file that is not there. */
function mtime(path) {
  try {
    return statSync(path).mtimeMs;
  } catch {
    return -Infinity;
  }
}

/** Every file under `dir`, recursively (none when it is not there). */
function filesUnder(dir) {
  if (!existsSync(dir)) return [];
  return readdirSync(dir, { recursive: true, withFileTypes: true })
    .filter((entry) => entry.isFile())
    .map((entry) => join(entry.parentPath ?? entry.path, entry.name)); // parentPath from Node 20.12 on
}

/** The flags that point node-gyp at this Node's headers, when they are installed beside it. */
function nodedirFlags() {
  // A nodedir the user configured (npm's --nodedir or .npmrc) is node-gyp's to use.
  if (process.env.npm_config_nodedir) return [];
  const prefix = dirname(dirname(process.execPath));
  return existsSync(join(prefix, "include", "node", "node_api.h")) ? [`--nodedir=${prefix}`] : [];
}

function buildNative() {
  const inputs = [join(root, "binding.gyp"), ...filesUnder(join(root, "native", "src"))];
  const built = mtime(ADDON);
  if (inputs.every((file) => mtime(file) <= built)) {
    say("tiny-llm: native kernels up to date");
    return;
  }
  // npm runs install scripts with npm_config_node_gyp set to the node-gyp it bundles.
  const gyp = process.env.npm_config_node_gyp;
  const command = gyp ? [process.execPath, gyp] : ["node-gyp"];
  const makefile = join(root, "build", "Makefile");
  const steps = [];
  if (mtime(makefile) < mtime(join(root, "binding.gyp"))) steps.push(["configure", ...nodedirFlags()]);
  steps.push(["build", "--jobs=max"]);
  say(`tiny-llm: building the native kernels (node-gyp, about a minute; log: ${relative(process.cwd(), LOG) || LOG})`);
  const started = Date.now();
  const log = openSync(LOG, "w");
  let failure;
  try {
    for (const args of steps) {
      const result = spawnSync(command[0], [...command.slice(1), ...args], { cwd: root, stdio: ["ignore", log, log] });
      if (result.error) failure = `${command.join(" ")} could not run: ${result.error.message}`;
      else if (result.status !== 0) failure = `node-gyp ${args[0]} failed`;
      if (failure) break;
    }
  } finally {
    closeSync(log);
  }
  if (failure) {
    // An addon older than its sources does not match the TypeScript side: the fallback must run.
    rmSync(ADDON, { force: true });
    say(`tiny-llm: native kernels did not build (${failure}; see ${LOG}); the slower TypeScript backend will be used`);
    return;
  }
  say(`tiny-llm: native kernels built in ${Math.round((Date.now() - started) / 1000)} s`);
}

/** The TypeScript sources tsconfig.json includes, each with the file tsc compiles it to. */
function typeScriptSources() {
  const config = JSON.parse(readFileSync(join(root, "tsconfig.json"), "utf8"));
  const outDir = join(root, config.compilerOptions.outDir);
  const dirs = new Set(config.include.map((pattern) => pattern.split("/")[0]));
  return [...dirs]
    .flatMap((dir) => filesUnder(join(root, dir)))
    .filter((file) => file.endsWith(".ts") && !file.endsWith(".d.ts"))
    .map((file) => ({ source: file, output: join(outDir, relative(root, file)).replace(/\.ts$/, ".js") }));
}

function buildTypeScript() {
  // A packed package has dist/ and no sources or tsconfig.json; only a checkout compiles.
  const stale = existsSync(join(root, "tsconfig.json")) ? typeScriptSources().filter((f) => mtime(f.source) > mtime(f.output)) : [];
  if (stale.length === 0) {
    if (existsSync(CLI)) return;
    say("tiny-llm: dist/ is missing and there is nothing to compile it from; install a package made by npm pack");
    process.exit(1);
  }
  let tsc;
  try {
    tsc = createRequire(join(root, "package.json")).resolve("typescript/bin/tsc");
  } catch {
    if (existsSync(CLI)) return;
    say(
      "tiny-llm: dist/ is missing and TypeScript is not installed; run npm install with dev dependencies, or install a package made by npm pack",
    );
    process.exit(1);
  }
  say(`tiny-llm: compiling TypeScript (${stale.length} file(s) changed)`);
  const result = spawnSync(process.execPath, [tsc, "-p", "tsconfig.json"], { cwd: root, stdio: "inherit" });
  if (result.status !== 0) {
    say("tiny-llm: tsc failed (its errors are above)");
    process.exit(1);
  }
  chmodSync(CLI, 0o755);
}

buildNative();
buildTypeScript();
