/**
 * deploy/ against the program it deploys: every flag in the Kubernetes manifests and the
 * Dockerfile is one `tiny-llm serve --help` lists and the CLI accepts with its value; ports,
 * names and grace periods agree with each other and with the CLI's defaults; and the probes'
 * paths and every metric name the manifests and docs/deploy.md use are answered by a real
 * server started with the Deployment's own flags; the Job's `tiny-llm pull`, run against a loopback
 * hub, fills the cache that a replica then reads offline. (Docker cannot build here: no engine.)
 */
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { loadAll } from "js-yaml";
import { parseServeArgs, type ServeSettings } from "../src/cli/serve-command.js";
import { ABORT_GRACE_MS } from "../src/server/shutdown.js";
import { runCliAsync } from "./support/cli.js";
import { FakeHub, fakeCommit, folderFiles } from "./support/fake-hub.js";
import { withTimeout } from "./support/server.js";
import { projectRoot, sharedPath } from "./support/shared.js";

const cli = join(projectRoot, "dist", "src", "cli", "main.js");
const deployDir = join(projectRoot, "deploy");
const model = sharedPath("models", "stories260k-qwen2");

interface Probe {
  httpGet: { path: string; port: string | number };
  periodSeconds: number;
  failureThreshold: number;
}
interface Container {
  image: string;
  args: string[];
  env: { name: string; value: string }[];
  ports: { name: string; containerPort: number }[];
  startupProbe: Probe;
  readinessProbe: Probe;
  livenessProbe: Probe;
  lifecycle: { preStop: { exec: { command: string[] } } };
  resources: { requests: { cpu: string; memory: string }; limits: { cpu: string; memory: string } };
  volumeMounts: { name: string; mountPath: string }[];
}
interface Manifest {
  kind: string;
  metadata: { name: string; annotations?: Record<string, string> };
  spec: Record<string, unknown>;
}
interface DeploymentSpec {
  selector: { matchLabels: Record<string, string> };
  template: {
    metadata: { labels: Record<string, string>; annotations: Record<string, string> };
    spec: {
      terminationGracePeriodSeconds: number;
      containers: Container[];
      volumes: { name: string; persistentVolumeClaim?: { claimName: string } }[];
    };
  };
}

const manifests = readdirSync(join(deployDir, "k8s"))
  .filter((f) => f.endsWith(".yaml"))
  .flatMap((f) => loadAll(readFileSync(join(deployDir, "k8s", f), "utf8")) as Manifest[]);

function find(kind: string): Manifest {
  const found = manifests.filter((m) => m.kind === kind);
  assert.equal(found.length, 1, `one ${kind} in deploy/k8s`);
  return found[0];
}

const deployment = find("Deployment");
const deploymentSpec = deployment.spec as unknown as DeploymentSpec;
const pod = deploymentSpec.template;
const container = pod.spec.containers[0];
const dockerfile = readFileSync(join(deployDir, "Dockerfile"), "utf8");

/** A container's arguments as the kubelet passes them: $(VAR) replaced by the container's env. */
function expandedArgs(of: Container = container): string[] {
  const env = new Map(of.env.map((e) => [e.name, e.value]));
  return of.args.map((arg) =>
    arg.replace(/\$\(([A-Za-z_][A-Za-z0-9_]*)\)/g, (ref, name: string) => {
      assert.ok(env.has(name), `${ref} is set in the container's env`);
      return env.get(name) as string;
    }),
  );
}

/** The runtime stage's ENTRYPOINT + CMD, which are JSON arrays. */
function dockerCommand(): string[] {
  const instruction = (name: string): string[] => {
    const lines = [...dockerfile.matchAll(new RegExp(`^${name} (\\[.*\\])$`, "gm"))];
    assert.equal(lines.length, 1, `one ${name} in the Dockerfile`);
    return JSON.parse(lines[0][1]) as string[];
  };
  return [...instruction("ENTRYPOINT"), ...instruction("CMD")];
}

/** `args` after "serve" as the CLI's own parser reads them. */
function serveSettings(args: string[]): ServeSettings {
  assert.equal(args[0], "serve");
  const settings = parseServeArgs(args.slice(1));
  assert.notEqual(settings, "help");
  return settings as ServeSettings;
}

test("every flag in the Deployment and the Dockerfile is one tiny-llm serve --help lists, with a value the CLI accepts", () => {
  const help = spawnSync(process.execPath, [cli, "serve", "--help"], { encoding: "utf8", timeout: 30_000 });
  assert.equal(help.status, 0, help.stderr);
  const listed = new Set(help.stdout.match(/--[a-z][a-z-]*/g));
  const docker = dockerCommand();
  assert.equal(docker[0], "tiny-llm");
  for (const [where, args] of [
    ["deployment.yaml", expandedArgs()],
    ["Dockerfile", docker.slice(1)],
  ] as const) {
    const flags = args.filter((a) => a.startsWith("--")).map((a) => a.split("=")[0]);
    assert.ok(flags.length >= 4, `${where} passes flags`);
    for (const flag of flags) assert.ok(listed.has(flag), `${where}: ${flag} is in tiny-llm serve --help`);
    serveSettings(args);
  }
});

test(
  "the Job fills the cache the replicas read: tiny-llm pull of the Deployment's model, after which a replica's offline run needs no hub",
  { skip: model.skip },
  async () => {
    const job = (find("Job").spec as unknown as { template: DeploymentSpec["template"] }).template.spec.containers[0];
    assert.equal(job.image, container.image, "the Job runs the server's own image");
    const env = (c: Container, name: string): string | undefined => c.env.find((e) => e.name === name)?.value;
    const [command, repo, ...rest] = expandedArgs(job);
    assert.deepEqual([command, rest], ["pull", []]);
    assert.equal(repo, expandedArgs()[expandedArgs().indexOf("--model") + 1], "the Job pulls the model the Deployment serves");
    assert.equal(env(job, "HF_HOME"), env(container, "HF_HOME"));
    assert.equal(env(container, "HF_HUB_OFFLINE"), "1");
    // The Job's command against a hub on loopback, the replica's environment after it: no request.
    const hub = await new FakeHub().start();
    try {
      hub.repos.set(repo, { files: folderFiles(model.path), commit: fakeCommit(repo) });
      const home = mkdtempSync(join(tmpdir(), "tiny-llm-deploy-"));
      const base = { ...process.env, HF_ENDPOINT: hub.url, HF_HOME: home, HF_HUB_CACHE: "", HF_TOKEN: "" };
      const pulled = await runCliAsync(expandedArgs(job), { ...base, HF_HUB_OFFLINE: "" });
      assert.equal(pulled.status, 0, pulled.stderr);
      const seen = hub.requests.length;
      const replica = { ...base, HF_HUB_OFFLINE: env(container, "HF_HUB_OFFLINE") };
      const run = await runCliAsync(["generate", "-m", repo, "-p", "", "-n", "8", "--temperature", "0"], replica);
      assert.equal(run.status, 0, run.stderr);
      assert.ok(run.stdout.length > 0);
      assert.equal(hub.requests.length, seen, "the replica asked the hub nothing");
    } finally {
      await hub.close();
    }
  },
);

test("ports agree: the CLI's default, --port, the container port, EXPOSE, the scrape annotation, the Service and the Ingress", () => {
  const settings = serveSettings(expandedArgs());
  const cliDefault = serveSettings(["serve", "--model", "m"]).port;
  assert.equal(settings.port, cliDefault);
  assert.equal(settings.host, "0.0.0.0", "a pod listens beyond its loopback");
  assert.equal(serveSettings(dockerCommand().slice(1)).port, cliDefault);
  const http = container.ports.find((p) => p.name === "http");
  assert.equal(http?.containerPort, settings.port);
  assert.match(dockerfile, new RegExp(`^EXPOSE ${settings.port}$`, "m"));
  assert.equal(pod.metadata.annotations["prometheus.io/scrape"], "true");
  assert.equal(Number(pod.metadata.annotations["prometheus.io/port"]), settings.port);
  for (const probe of [container.startupProbe, container.readinessProbe, container.livenessProbe]) assert.equal(probe.httpGet.port, "http");

  const service = find("Service");
  const serviceSpec = service.spec as { selector: Record<string, string>; ports: { name: string; targetPort: string }[] };
  for (const [key, value] of Object.entries(serviceSpec.selector))
    assert.equal(pod.metadata.labels[key], value, `the Service selects ${key}`);
  assert.deepEqual(deploymentSpec.selector.matchLabels, serviceSpec.selector);
  assert.ok(serviceSpec.ports.every((p) => container.ports.some((c) => c.name === p.targetPort)));

  const ingress = find("Ingress").spec as {
    rules: { http: { paths: { backend: { service: { name: string; port: { name: string } } } }[] } }[];
  };
  for (const path of ingress.rules.flatMap((r) => r.http.paths)) {
    assert.equal(path.backend.service.name, service.metadata.name);
    assert.ok(serviceSpec.ports.some((p) => p.name === path.backend.service.port.name));
  }
  const hpa = find("HorizontalPodAutoscaler").spec as { scaleTargetRef: { kind: string; name: string } };
  assert.deepEqual([hpa.scaleTargetRef.kind, hpa.scaleTargetRef.name], ["Deployment", deployment.metadata.name]);
  const claims = pod.spec.volumes.flatMap((v) => (v.persistentVolumeClaim ? [v.persistentVolumeClaim.claimName] : []));
  assert.deepEqual(claims, [find("PersistentVolumeClaim").metadata.name]);
});

test("the pod's CPU, threads, KV pool and HF cache are set for a container, not left to the node's size", () => {
  const args = expandedArgs();
  const settings = serveSettings(args);
  assert.deepEqual(container.resources.requests, container.resources.limits, "Guaranteed QoS");
  // As written: the parser cuts --threads to this machine's cores, which need not be the pod's.
  assert.equal(Number(args[args.indexOf("--threads") + 1]), Number(container.resources.limits.cpu), "--threads is the CPU limit");
  assert.ok(settings.engine.kvCacheSize !== undefined, "--kv-cache-size is set");
  const hfHome = container.env.find((e) => e.name === "HF_HOME")?.value;
  assert.ok(container.volumeMounts.some((m) => m.mountPath === hfHome));
  assert.match(dockerfile, new RegExp(`HF_HOME=${hfHome}\\b`));
});

test("the grace period covers preStop, --shutdown-timeout and the aborted requests' last words; liveness outlasts it", () => {
  const settings = serveSettings(expandedArgs());
  const [sleep, seconds] = container.lifecycle.preStop.exec.command;
  assert.equal(sleep, "sleep");
  const grace = pod.spec.terminationGracePeriodSeconds;
  const needed = Number(seconds) + settings.shutdownTimeoutMs / 1000 + ABORT_GRACE_MS / 1000;
  assert.ok(grace >= needed, `terminationGracePeriodSeconds ${grace} >= ${needed}`);
  const live = container.livenessProbe;
  assert.ok(live.periodSeconds * live.failureThreshold > grace, "a drain (503, then no listener) does not fail liveness");
  const docker = serveSettings(dockerCommand().slice(1));
  assert.equal(docker.shutdownTimeoutMs, settings.shutdownTimeoutMs);
});

/** Every tiny_llm_* name in the manifests, the adapter's rules and docs/deploy.md (the Dockerfile names none: its tiny_llm_native is the addon). */
function metricNamesUsed(): Map<string, string> {
  const files = [
    ...readdirSync(join(deployDir, "k8s")).map((f) => join(deployDir, "k8s", f)),
    join(deployDir, "prometheus-adapter.values.yaml"),
    join(projectRoot, "docs", "deploy.md"),
  ];
  const used = new Map<string, string>();
  for (const file of files) for (const m of readFileSync(file, "utf8").matchAll(/\btiny_llm_[a-z0-9_]+/g)) used.set(m[0], file);
  return used;
}

describe("a real server started with the Deployment's flags", { skip: model.skip }, () => {
  let url = "";
  let child: ReturnType<typeof spawn>;
  before(async () => {
    // The Deployment's arguments, with a model that is here and a free port on this machine's loopback.
    const args = expandedArgs();
    const set = (flag: string, value: string): void => void args.splice(args.indexOf(flag) + 1, 1, value);
    set("--model", model.path);
    set("--host", "127.0.0.1");
    set("--port", "0");
    child = spawn(process.execPath, [cli, ...args], { stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    let err = "";
    child.stderr?.on("data", (chunk: Buffer) => (err += chunk.toString()));
    url = await withTimeout(
      new Promise<string>((resolve, reject) => {
        child.stdout?.on("data", (chunk: Buffer) => {
          out += chunk.toString();
          const m = / at (http:\/\/[^\s|]+)/.exec(out);
          if (m) resolve(m[1]);
        });
        child.once("exit", (code) => reject(new Error(`tiny-llm serve exited ${code}: ${err}`)));
      }),
      60_000,
      "tiny-llm serve to be ready",
    );
  });
  after(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
  });

  test("answers the probes' paths and the Dockerfile's HEALTHCHECK with 200", async () => {
    const paths = new Set([container.startupProbe, container.readinessProbe, container.livenessProbe].map((p) => p.httpGet.path));
    const check = /fetch\('http:\/\/127\.0\.0\.1:(\d+)(\/[^']*)'\)/.exec(dockerfile);
    assert.ok(check, "the HEALTHCHECK fetches a local URL");
    assert.equal(Number(check[1]), container.ports[0].containerPort);
    paths.add(check[2]);
    for (const path of paths) {
      const res = await fetch(url + path);
      assert.equal(res.status, 200, path);
      assert.deepEqual(await res.json(), { status: "ok" });
    }
  });

  test("exposes every metric the HPA, the adapter and docs/deploy.md name; the HPA's is a gauge", async () => {
    const res = await fetch(url + pod.metadata.annotations["prometheus.io/path"]);
    assert.equal(res.status, 200);
    const text = await res.text();
    const types = new Map([...text.matchAll(/^# TYPE (\S+) (\S+)$/gm)].map((m) => [m[1], m[2]]));
    const used = metricNamesUsed();
    assert.ok(used.size >= 3, "the docs and manifests name metrics");
    for (const [name, file] of used) {
      const family = name.replace(/_(bucket|sum|count)$/, "");
      assert.ok(types.has(name) || types.get(family) === "histogram", `${name} (in ${file}) is in /metrics`);
    }
    const hpa = find("HorizontalPodAutoscaler").spec as { metrics: { type: string; pods: { metric: { name: string } } }[] };
    for (const metric of hpa.metrics) {
      assert.equal(metric.type, "Pods");
      assert.equal(types.get(metric.pods.metric.name), "gauge", metric.pods.metric.name);
    }
  });

  test("SIGTERM drains and exits 0", async () => {
    const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
    child.kill("SIGTERM");
    assert.equal(
      await withTimeout(exited, serveSettings(expandedArgs()).shutdownTimeoutMs + ABORT_GRACE_MS + 10_000, "the server to exit"),
      0,
    );
  });
});
