/**
 * Real models' tokenizers, as our GGUF reader rebuilds them from the metadata, against
 * llama.cpp's tokenizer for the same file (llama-server's /tokenize and /detokenize): the same ids
 * for a corpus of English, code, CJK, emoji, numbers and whitespace runs, and decoding that gives
 * the text back.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { readGgufHeader } from "../src/loaders/gguf.js";
import { ggufTokenizer } from "../src/tokenizer/gguf-tokenizer.js";
import type { Tokenizer } from "../src/tokenizer/tokenizer.js";
import { llamaCppSkip } from "../scripts/llama-cpp-paths.js";
import { TOKENIZER_CORPUS } from "./fixtures/tokenizer-corpus.js";
import { llamaServerFixture } from "./support/llama-server.js";
import { testModel, testModelNames } from "./support/test-models.js";

for (const name of testModelNames()) {
  const model = testModel(name);
  const skip = model.skip || llamaCppSkip("llama-server");

  describe(`${name}: tokenizer against llama.cpp's`, { skip }, () => {
    const server = llamaServerFixture({ before, after }, model.path, { ctx: 512 });
    let ours: Tokenizer | undefined;
    const tokenizer = (): Tokenizer => (ours ??= ggufTokenizer(readGgufHeader(model.path as string)));

    test("the corpus gives llama.cpp's ids (special-token text parsed, no BOS added)", async () => {
      const mismatches: string[] = [];
      for (const text of TOKENIZER_CORPUS) {
        const expected = await server().tokenize(text);
        const actual = tokenizer().encode(text, { addSpecialTokens: false });
        if (JSON.stringify(actual) !== JSON.stringify(expected))
          mismatches.push(`${JSON.stringify(text)}: ours ${JSON.stringify(actual)}, llama.cpp ${JSON.stringify(expected)}`);
      }
      assert.deepEqual(mismatches, [], `${mismatches.length} of ${TOKENIZER_CORPUS.length} texts differ`);
    });

    test("BOS is added as llama.cpp adds it", async () => {
      const text = TOKENIZER_CORPUS[0];
      assert.deepEqual(tokenizer().encode(text, { addSpecialTokens: true }), await server().tokenize(text, true));
    });

    test("decoding gives the text back, as llama.cpp's does", async () => {
      for (const text of TOKENIZER_CORPUS) {
        const ids = tokenizer().encode(text, { addSpecialTokens: false });
        assert.equal(tokenizer().decode(ids), text, `ours round-trips ${JSON.stringify(text)}`);
        assert.equal(await server().detokenize(ids), text, `llama.cpp decodes our ids of ${JSON.stringify(text)} to the text`);
      }
    });
  });
}
