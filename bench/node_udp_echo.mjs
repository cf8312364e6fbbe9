#!/usr/bin/env node
/**
 * Reference UDP echo server for the benchmark: Node's `dgram` module, every
 * datagram sent straight back to its sender. Run: `node bench/node_udp_echo.mjs [PORT]`
 * (0 or nothing picks a free port); prints "listening on 127.0.0.1:PORT (udp)".
 */
import dgram from "node:dgram";

const SOCKET_BUFFER_BYTES = 1024 * 1024; // kernel receive queue asked for, as udp_echo_server.ts asks

const port = Number(process.argv[2] ?? 0);
const socket = dgram.createSocket({ type: "udp4", recvBufferSize: SOCKET_BUFFER_BYTES });
socket.on("message", (data, sender) => socket.send(data, sender.port, sender.address));
// A failed send to one client must not stop the server.
socket.on("error", () => {});
socket.bind(port, "127.0.0.1", () => {
  console.log(`node dgram echo listening on 127.0.0.1:${socket.address().port} (udp)`);
});
process.on("SIGTERM", () => process.exit(0));
