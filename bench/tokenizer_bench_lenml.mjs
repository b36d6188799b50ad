// Same measurement as tokenizer_bench.cc with @lenml/tokenizers (transformers.js tokenizers, the
// implementation that produced ../shared/golden/tokenizer/ids.json), for a side-by-side number.
// Usage: node bench/tokenizer_bench_lenml.mjs TOKENIZER_JSON CORPUS_FILE
// (CORPUS_FILE from: tokenizer_bench TOKENIZER_JSON --write-corpus CORPUS_FILE)
import { readFileSync } from "node:fs";
import { TokenizerLoader } from "@lenml/tokenizers";

const [tokenizerPath, corpusPath] = process.argv.slice(2);
const tokenizerJSON = JSON.parse(readFileSync(tokenizerPath, "utf8"));
const tokenizerConfig = { model_max_length: 1 << 30 };
const corpus = readFileSync(corpusPath, "utf8");
const megabytes = Buffer.byteLength(corpus, "utf8") / 1e6;

let bestLoad = Infinity;
for (let i = 0; i < 5; ++i) {
  const start = performance.now();
  TokenizerLoader.fromPreTrained({ tokenizerJSON: JSON.parse(readFileSync(tokenizerPath, "utf8")), tokenizerConfig });
  bestLoad = Math.min(bestLoad, performance.now() - start);
}
const tokenizer = TokenizerLoader.fromPreTrained({ tokenizerJSON, tokenizerConfig });
let best = Infinity;
let count = 0;
for (let i = 0; i < 3; ++i) {
  const start = performance.now();
  count = tokenizer.encode(corpus, { add_special_tokens: false }).length;
  best = Math.min(best, (performance.now() - start) / 1e3);
}
console.log(`corpus: ${megabytes.toFixed(2)} MB, ${count} tokens`);
console.log(`load tokenizer.json (read + JSON.parse + build): ${bestLoad.toFixed(1)} ms (best of 5)`);
console.log(`encode: ${best.toFixed(3)} s, ${(megabytes / best).toFixed(1)} MB/s (best of 3, one thread)`);
