/**
 * generation_config.json: the stop tokens and the sampling defaults the model's authors chose.
 */
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { idList } from "../models/config.js";
import type { SamplerOptions } from "./sampler.js";

/** A model's sampling defaults: the sampler's settings, and the repetition penalty applied before it. */
export interface SamplingDefaults extends SamplerOptions {
  repetitionPenalty?: number;
}

export interface GenerationConfig {
  eosTokenIds: number[];
  /** Sampling defaults; greedy when the file says do_sample is false or is absent. */
  sampling: SamplingDefaults;
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
  const sampling: SamplingDefaults =
    cfg.do_sample === true
      ? { temperature: numberOr("temperature") ?? 1, topK: numberOr("top_k"), topP: numberOr("top_p"), minP: numberOr("min_p") }
      : { temperature: 0 };
  // Transformers applies it whether or not it samples, and so do we.
  const repetitionPenalty = numberOr("repetition_penalty");
  if (repetitionPenalty !== undefined && repetitionPenalty !== 1) {
    if (!(repetitionPenalty > 0))
      throw new Error(`${path}: repetition_penalty must be more than 0, got ${repetitionPenalty}; fix or delete it`);
    sampling.repetitionPenalty = repetitionPenalty;
  }
  return { eosTokenIds: idList(cfg.eos_token_id), sampling };
}
