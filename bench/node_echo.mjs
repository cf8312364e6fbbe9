#!/usr/bin/env node
/**
 * Reference echo server for the benchmark: Node's `net` module, each socket
 * piped into itself. Run: `node bench/node_echo.mjs [PORT]` (0 or nothing
 * picks a free port); prints "listening on 127.0.0.1:PORT".
 */
import net from "node:net";

const BACKLOG = 1024; // connections the kernel queues before refusing

const port = Number(process.argv[2] ?? 0);
// allowHalfOpen: after the client's FIN, keep our side open until the echo is written.
const server = net.createServer({ allowHalfOpen: true }, (socket) => {
  socket.on("error", () => socket.destroy());
  // pipe() ends our side once the client's side has ended and every byte went back.
  socket.pipe(socket);
});
server.listen({ host: "127.0.0.1", port, backlog: BACKLOG }, () => {
  console.log(`node net echo listening on 127.0.0.1:${server.address().port}`);
});
process.on("SIGTERM", () => process.exit(0));
