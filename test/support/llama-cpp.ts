import type { TestContext } from "node:test";
import type { Llama } from "node-llama-cpp";

/**
 * llama.cpp's prebuilt CPU engine (node-llama-cpp), the independent implementation some tests
 * compare against; undefined, with the test marked skipped, where it cannot run here.
 */
export async function loadLlamaCpp(t: TestContext): Promise<Llama | undefined> {
  try {
    const llamaCpp = await import("node-llama-cpp");
    return await llamaCpp.getLlama({ gpu: false, build: "never", logLevel: llamaCpp.LlamaLogLevel.error });
  } catch (error) {
    t.skip(`node-llama-cpp's prebuilt llama.cpp is not usable here: ${(error as Error).message}`);
    return undefined;
  }
}
