/**
 * `npm run build:llama-cpp`: builds llama.cpp's command-line tools (llama-server, llama-bench,
 * llama-perplexity, llama-cli and llama-tokenize) from the source that the pinned node-llama-cpp
 * ships as a git bundle, into `~/.cache/tiny-llm/llama.cpp/<release>/` (scripts/llama-cpp-paths.ts
 * says where), once: when the binaries are there, built for this CPU's instruction sets, it does
 * nothing. Tests and benchmarks hold tiny-llm against these tools.
 *
 * CPU features come from /proc/cpuinfo, never from `GGML_NATIVE`: on CPUs with AMX, ggml's AMX
 * path dies with SIGILL in a worker thread (`ldtilecfg`) on these machines, so AMX stays off and
 * every other instruction set is named. `--force` rebuilds; `--jobs N` sets make's parallelism
 * (default 2).
 */
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, openSync, closeSync, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { LLAMA_TOOLS, REQUIRED_TOOLS, llamaCppDir, llamaCppSource } from "./llama-cpp-paths.js";

/** cmake options for this CPU: the instruction sets /proc/cpuinfo lists, AMX never. */
function cmakeFlags(cpuFlags: ReadonlySet<string>): string[] {
  const has = (...names: string[]): boolean => names.every((n) => cpuFlags.has(n));
  const onOff = (on: boolean): string => (on ? "ON" : "OFF");
  const avx512 = has("avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512cd");
  return [
    "-DCMAKE_BUILD_TYPE=Release",
    "-DGGML_NATIVE=OFF",
    `-DGGML_AVX=${onOff(has("avx"))}`,
    `-DGGML_AVX2=${onOff(has("avx2"))}`,
    `-DGGML_FMA=${onOff(has("fma"))}`,
    `-DGGML_F16C=${onOff(has("f16c"))}`,
    `-DGGML_AVX512=${onOff(avx512)}`,
    `-DGGML_AVX512_VNNI=${onOff(avx512 && has("avx512_vnni"))}`,
    `-DGGML_AVX512_BF16=${onOff(avx512 && has("avx512_bf16"))}`,
    `-DGGML_AVX512_VBMI=${onOff(avx512 && has("avx512vbmi"))}`,
    `-DGGML_AVX_VNNI=${onOff(has("avx_vnni"))}`,
    "-DGGML_AMX_TILE=OFF",
    "-DGGML_AMX_INT8=OFF",
    "-DGGML_AMX_BF16=OFF",
    "-DLLAMA_CURL=OFF",
    // Self-contained binaries: no libllama.so / libggml.so to find at run time.
    "-DBUILD_SHARED_LIBS=OFF",
    "-DLLAMA_BUILD_TESTS=OFF",
  ];
}

/** The flags of the first processor in /proc/cpuinfo (empty where there is no such file). */
function cpuFlags(): Set<string> {
  try {
    const line = readFileSync("/proc/cpuinfo", "utf8")
      .split("\n")
      .find((l) => l.startsWith("flags"));
    return new Set((line?.split(":")[1] ?? "").trim().split(/\s+/));
  } catch {
    return new Set();
  }
}

function run(cmd: string, args: string[], cwd: string, log: number): void {
  const line = `$ ${cmd} ${args.join(" ")}\n`;
  process.stdout.write(line);
  writeFileSync(log, line);
  const result = spawnSync(cmd, args, { cwd, stdio: ["ignore", log, log] });
  if (result.error !== undefined) throw new Error(`${cmd}: ${result.error.message}`);
  if (result.status !== 0) throw new Error(`${cmd} ${args[0] ?? ""} failed with exit code ${result.status ?? result.signal}`);
}

function main(): number {
  const { values } = parseArgs({ options: { force: { type: "boolean" }, jobs: { type: "string", default: "2" } } });
  const source = llamaCppSource();
  if (source === undefined) {
    console.log("build-llama-cpp: node-llama-cpp's llama.cpp source (llama/gitRelease.bundle) is not installed; nothing built");
    return 1;
  }
  const dir = llamaCppDir(source.release);
  const src = join(dir, "src");
  const build = join(dir, "build");
  const bin = join(build, "bin");
  const stampPath = join(build, "tiny-llm-build.json");
  const flags = cmakeFlags(cpuFlags());
  const stamp = JSON.stringify({ release: source.release, flags });
  const built = REQUIRED_TOOLS.every((t) => existsSync(join(bin, t)));
  if (!values.force && built && existsSync(stampPath) && readFileSync(stampPath, "utf8") === stamp) {
    console.log(`build-llama-cpp: llama.cpp ${source.release} already built in ${bin}`);
    return 0;
  }
  mkdirSync(dir, { recursive: true });
  // One build at a time per release; a lock left by a build that died is taken over.
  const lock = join(dir, "build.lock");
  if (!takeLock(lock)) {
    console.log(`build-llama-cpp: another build (process ${readFileSync(lock, "utf8").trim()}) is running in ${dir}`);
    return 1;
  }
  const logPath = join(dir, "build.log");
  const log = openSync(logPath, "w");
  const started = Date.now();
  try {
    if (!existsSync(join(src, "CMakeLists.txt"))) {
      const tmp = `${src}.tmp`;
      rmSync(tmp, { recursive: true, force: true });
      run("git", ["clone", "--quiet", source.bundle, tmp], dir, log);
      rmSync(src, { recursive: true, force: true });
      renameSync(tmp, src);
    }
    if (values.force) rmSync(build, { recursive: true, force: true });
    // llama-tokenize is not in every release.
    const tools = LLAMA_TOOLS.filter((t) => REQUIRED_TOOLS.includes(t) || hasTarget(src, t));
    console.log(`build-llama-cpp: llama.cpp ${source.release}: ${tools.join(", ")} into ${bin} (log: ${logPath})`);
    run("cmake", ["-S", src, "-B", build, ...flags], dir, log);
    run("cmake", ["--build", build, "--config", "Release", `-j${values.jobs}`, "--target", ...tools], dir, log);
    const missing = REQUIRED_TOOLS.filter((t) => !existsSync(join(bin, t)));
    if (missing.length > 0) throw new Error(`the build did not produce ${missing.join(", ")}`);
    writeFileSync(stampPath, stamp);
    console.log(`build-llama-cpp: built in ${((Date.now() - started) / 60000).toFixed(1)} min`);
    return 0;
  } catch (error) {
    console.log(`build-llama-cpp: ${(error as Error).message} (see ${logPath})`);
    return 1;
  } finally {
    closeSync(log);
    rmSync(lock, { force: true });
  }
}

/** Creates the lock file with this process's id; false while a live process holds it. */
function takeLock(lock: string): boolean {
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      writeFileSync(lock, String(process.pid), { flag: "wx" });
      return true;
    } catch {
      const holder = Number(readFileSync(lock, "utf8"));
      if (Number.isInteger(holder) && holder > 0 && isAlive(holder)) return false;
      rmSync(lock, { force: true });
    }
  }
  return false;
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === "EPERM";
  }
}

/** Whether the source tree defines a cmake target of this name. */
function hasTarget(src: string, target: string): boolean {
  for (const sub of ["tools", "examples"]) {
    const cmake = join(src, sub, target.replace(/^llama-/, ""), "CMakeLists.txt");
    if (existsSync(cmake) && readFileSync(cmake, "utf8").includes(`set(TARGET ${target})`)) return true;
  }
  return false;
}

process.exitCode = main();
