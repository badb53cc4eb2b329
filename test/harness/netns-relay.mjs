// The inside half of test/harness/netns.ts's port forwarding: started inside one network
// namespace, it listens on a Unix socket (the file system is shared across network namespaces)
// and connects each incoming stream to 127.0.0.1:<port> of its namespace, where <port> is the
// first line the stream carries. Plain JavaScript so that it starts without a TypeScript loader.
//
// Usage: node netns-relay.mjs <socket path>
import { createConnection, createServer } from "node:net";
import { rmSync } from "node:fs";

const socketPath = process.argv[2];
if (!socketPath) {
  process.stderr.write("usage: netns-relay.mjs <socket path>\n");
  process.exit(2);
}
rmSync(socketPath, { force: true });

/** A port header longer than this is not a header: the stream is dropped. */
const MAX_HEADER_BYTES = 16;

const server = createServer((client) => {
  let header = Buffer.alloc(0);
  const onData = (chunk) => {
    header = Buffer.concat([header, chunk]);
    const newline = header.indexOf(10);
    if (newline < 0) {
      if (header.length > MAX_HEADER_BYTES) client.destroy();
      return;
    }
    client.off("data", onData);
    client.pause();
    const port = Number(header.subarray(0, newline).toString("ascii"));
    const rest = header.subarray(newline + 1);
    if (!Number.isInteger(port) || port <= 0 || port > 65535) {
      client.destroy();
      return;
    }
    const target = createConnection({ host: "127.0.0.1", port }, () => {
      if (rest.length > 0) target.write(rest);
      client.pipe(target);
      target.pipe(client);
      client.resume();
    });
    // Either side ending or failing ends the pair; a refused target closes the client at once.
    target.on("error", () => client.destroy());
    client.on("error", () => target.destroy());
    target.on("close", () => client.destroy());
    client.on("close", () => target.destroy());
  };
  client.on("data", onData);
  client.on("error", () => client.destroy());
});
server.listen(socketPath, () => process.stdout.write("relay ready\n"));
for (const signal of ["SIGTERM", "SIGINT"]) process.on(signal, () => process.exit(0));
