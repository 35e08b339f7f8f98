/**
 * The tiny-llm package: `import { loadModel } from "tiny-llm"`. loadModel() starts an Engine for
 * a checkpoint folder or GGUF file; its generate() and chat() stream tokens and text as async
 * iterators, any number at once. The CLI and the HTTP server are layers over the same pieces.
 */
export { loadModel, type LoadModelOptions, type LoadProgress } from "./api/load-model.js";
export { ChatSession, type ChatSessionOptions } from "./api/chat-session.js";
export { Engine, type ChatOptions, type ChatTemplateSettings } from "./api/engine.js";
export { Generation, type GeneratedToken, type GenerationChunk, type GenerationResult } from "./api/generation.js";
export type { GenerateOptions } from "./api/request-options.js";
export type { ChoiceTimings as GenerationTimings } from "./api/choice-run.js";
export { RequestRejectedError, type EngineStats, type StepTrace } from "./engine/api.js";
export type { EngineInfo } from "./engine/async-engine.js";
export type { EngineOptions } from "./engine/engine-options.js";
export type { ModelConfig } from "./models/config.js";
export type { ChatMessage } from "./tokenizer/chat-template.js";
export type { Tokenizer } from "./tokenizer/tokenizer.js";
