// tus-node-server (@tus/server + @tus/file-store) for the peer benchmarks, on loopback.
//
//   node bench/tus_server.mjs <npm prefix> <port> <data dir>
//
// <npm prefix> is the directory whose node_modules holds the packages (bench/peers.py installs
// them there, outside the repository); ES modules ignore NODE_PATH, so they are imported from
// it by path. A plain node:http server hands every request to the tus Server (path /files/),
// which stores each upload as a file (plus a .json info file) in the data directory.

import http from "node:http";
import path from "node:path";
import { pathToFileURL } from "node:url";

const [prefix, port, directory] = process.argv.slice(2);
if (!prefix || !port || !directory) {
  console.error("usage: node tus_server.mjs <npm prefix> <port> <data dir>");
  process.exit(2);
}

const load = (name) =>
  import(pathToFileURL(path.join(prefix, "node_modules", name, "dist", "index.js")).href);
const { Server } = await load("@tus/server");
const { FileStore } = await load("@tus/file-store");

const tus = new Server({ path: "/files", datastore: new FileStore({ directory }) });
const server = http.createServer((req, res) => tus.handle(req, res));
server.keepAliveTimeout = 60_000;
server.listen(Number(port), "127.0.0.1", () => {
  console.log(`tus-node-server listening on 127.0.0.1:${port}, data in ${directory}`);
});
for (const signal of ["SIGTERM", "SIGINT"]) {
  process.on(signal, () => server.close(() => process.exit(0)));
}
