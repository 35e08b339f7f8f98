/**
 * generation_config.json: the stop tokens and the sampling defaults the model's authors chose.
 */
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { idList } from "../models/config.js";
import type { SamplerOptions } from "./sampler.js";

export interface GenerationConfig {
  eosTokenIds: number[];
  /** Sampling defaults; greedy when the file says do_sample is false or is absent. */
  sampling: SamplerOptions;
}

export function readGenerationConfig(dir: string): GenerationConfig {
  const path = join(dir, "generation_config.json");
  if (!existsSync(path)) return { eosTokenIds: [], sampling: { temperature: 0 } };
  let cfg: Record<string, unknown>;
  try {
    cfg = JSON.parse(readFileSync(path, "utf8")) as Record<string, unknown>;
  } catch (err) {
    throw new Error(`${path} is not valid JSON (${(err as Error).message}); fix or delete the file`, { cause: err });
  }
  const numberOr = (key: string): number | undefined => (typeof cfg[key] === "number" ? (cfg[key] as number) : undefined);
  const sampling: SamplerOptions =
    cfg.do_sample === true
      ? { temperature: numberOr("temperature") ?? 1, topK: numberOr("top_k"), topP: numberOr("top_p"), minP: numberOr("min_p") }
      : { temperature: 0 };
  return { eosTokenIds: idList(cfg.eos_token_id), sampling };
}
