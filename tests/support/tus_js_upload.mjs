// One upload with tus-js-client under Node, for tests/e2e/test_tus_js.py.
//
//   node tus_js_upload.mjs <npm prefix> <options JSON>
//
// Options: endpoint, file, and any of tus-js-client's chunkSize, parallelUploads, protocol,
// retryDelays, metadata, headers, uploadDataDuringCreation. tus-js-client is loaded from
// <npm prefix>/node_modules (installed there by bench/peers.py's ensure_npm_packages) through
// require, since its package is CommonJS. Prints one JSON line: the upload's URL and how many
// times it retried (resumed); exits 1 with the error on stderr when the upload fails.

import fs from "node:fs";
import path from "node:path";
import { createRequire } from "node:module";

const [prefix, raw] = process.argv.slice(2);
if (!prefix || !raw) {
  console.error("usage: node tus_js_upload.mjs <npm prefix> <options JSON>");
  process.exit(2);
}
const { Upload } = createRequire(import.meta.url)(path.join(prefix, "node_modules", "tus-js-client"));
const { file, ...options } = JSON.parse(raw);
let retries = 0;

const upload = new Upload(fs.createReadStream(file), {
  ...options,
  onShouldRetry: () => {
    retries += 1;
    return true;
  },
  onError: (error) => {
    console.error(String(error));
    process.exit(1);
  },
  onSuccess: () => {
    console.log(JSON.stringify({ url: upload.url, retries }));
  },
});
upload.start();
