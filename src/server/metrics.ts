/**
 * /metrics in Prometheus' text format (prom-client). Gauges and counters of the engine are read
 * from its latest stats when scraped; step duration and batch size are observed after every
 * engine step, time to first token and time per output token as each request runs.
 */
import { Counter, Gauge, Histogram, Registry } from "prom-client";
import type { ChoiceFinish } from "../api/choice-run.js";
import type { EngineStats, StepTrace } from "../engine/api.js";

const PREFIX = "tiny_llm_";

export class ServerMetrics {
  readonly registry = new Registry();
  private stats: EngineStats | undefined;
  private readonly ttft: Histogram;
  private readonly tpot: Histogram;
  private readonly stepDuration: Histogram;
  private readonly stepTokens: Histogram;
  private readonly stepRequests: Histogram;
  private readonly finished: Counter<"finish_reason">;

  constructor() {
    const registers = [this.registry];
    const stat = (read: (s: EngineStats) => number) => () => (this.stats ? read(this.stats) : 0);
    const gauge = (name: string, help: string, read: (s: EngineStats) => number): void => {
      const value = stat(read);
      new Gauge({
        name: PREFIX + name,
        help,
        registers,
        collect() {
          this.set(value());
        },
      });
    };
    // The engine counts from its start; a counter adds what it has counted since the last scrape.
    const counter = (name: string, help: string, read: (s: EngineStats) => number): void => {
      const value = stat(read);
      let seen = 0;
      new Counter({
        name: PREFIX + name,
        help,
        registers,
        collect() {
          const now = value();
          if (now > seen) this.inc(now - seen);
          seen = Math.max(seen, now);
        },
      });
    };
    gauge("requests_running", "Requests running in the engine (their sequences are in the batch).", (s) => s.running);
    gauge("requests_waiting", "Requests waiting in the engine's queue.", (s) => s.waiting);
    gauge("kv_blocks_total", "KV cache blocks in the pool.", (s) => s.blocksTotal);
    gauge("kv_blocks_used", "KV cache blocks held by sequences.", (s) => s.blocksUsed);
    gauge(
      "kv_blocks_free",
      "KV cache blocks free (cached prefix blocks that no sequence holds count as free).",
      (s) => s.blocksTotal - s.blocksUsed,
    );
    gauge("kv_block_size_tokens", "Tokens per KV cache block.", (s) => s.blockSize);
    gauge("prefix_cache_hit_rate", "Prompt blocks found in the prefix cache / prompt blocks looked up, since the start.", (s) =>
      s.prefixQueries > 0 ? s.prefixHits / s.prefixQueries : 0,
    );
    counter("prefix_cache_queries_total", "Full prompt blocks looked up in the prefix cache.", (s) => s.prefixQueries);
    counter("prefix_cache_hits_total", "Full prompt blocks found in the prefix cache.", (s) => s.prefixHits);
    counter("preemptions_total", "Sequences preempted (blocks freed, recomputed later) when the KV pool ran out.", (s) => s.preemptions);
    counter("prompt_tokens_total", "Prompt tokens prefilled (computed, not counting prefix-cache hits).", (s) => s.promptTokens);
    counter("generation_tokens_total", "Tokens generated.", (s) => s.generatedTokens);

    this.ttft = new Histogram({
      name: PREFIX + "time_to_first_token_seconds",
      help: "Seconds from a request's arrival in the engine to its first generated token.",
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80],
      registers,
    });
    this.tpot = new Histogram({
      name: PREFIX + "time_per_output_token_seconds",
      help: "Mean seconds per generated token after the first, per request.",
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 1, 2.5],
      registers,
    });
    this.stepDuration = new Histogram({
      name: PREFIX + "step_duration_seconds",
      help: "Wall time of one engine step (one forward pass over the batch).",
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
      registers,
    });
    this.stepTokens = new Histogram({
      name: PREFIX + "step_batch_tokens",
      help: "Tokens computed in one engine step (prompt chunks and one per decoding sequence).",
      buckets: [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096],
      registers,
    });
    this.stepRequests = new Histogram({
      name: PREFIX + "step_batch_requests",
      help: "Requests in one engine step.",
      buckets: [1, 2, 4, 8, 16, 32, 64, 128, 256],
      registers,
    });
    this.finished = new Counter({
      name: PREFIX + "requests_finished_total",
      help: "Choices finished, by reason (stop, length, abort, error).",
      labelNames: ["finish_reason"],
      registers,
    });
  }

  /** The engine's counters from now on (undefined while loading). */
  setStats(stats: EngineStats | undefined): void {
    this.stats = stats;
  }

  observeStep(trace: StepTrace, stats: EngineStats): void {
    this.stats = stats;
    this.stepDuration.observe(trace.ms / 1000);
    this.stepTokens.observe(trace.requests.reduce((sum, r) => sum + r.tokens, 0));
    this.stepRequests.observe(trace.requests.length);
  }

  observeFirstToken(seconds: number): void {
    this.ttft.observe(seconds);
  }

  observeFinish(finish: ChoiceFinish, secondsPerToken: number | undefined): void {
    this.finished.inc({ finish_reason: finish });
    if (secondsPerToken !== undefined) this.tpot.observe(secondsPerToken);
  }

  get contentType(): string {
    return this.registry.contentType;
  }

  text(): Promise<string> {
    return this.registry.metrics();
  }
}
