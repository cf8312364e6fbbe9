#!/usr/bin/env node
/**
 * Reference relay for the benchmark's proxy part: a plain Node `net` relay,
 * one upstream connection per client, both directions piped.
 * Run: `node bench/node_relay.mjs PORT UPSTREAM_HOST UPSTREAM_PORT`; prints
 * "listening on 127.0.0.1:PORT".
 */
import net from "node:net";

const BACKLOG = 1024; // connections the kernel queues before refusing

const [port, upstreamHost, upstreamPort] = process.argv.slice(2);
const server = net.createServer({ allowHalfOpen: true }, (client) => {
  const upstream = net.connect({
    host: upstreamHost,
    port: Number(upstreamPort),
    allowHalfOpen: true,
  });
  const drop = () => {
    client.destroy();
    upstream.destroy();
  };
  client.on("error", drop);
  upstream.on("error", drop);
  // Each pipe ends its destination when its source ends: half-closes travel through.
  client.pipe(upstream);
  upstream.pipe(client);
  // Once both directions are done, release both sockets.
  let ended = 0;
  const onEnd = () => {
    if (++ended === 2) drop();
  };
  client.on("finish", onEnd);
  upstream.on("finish", onEnd);
});
server.listen({ host: "127.0.0.1", port: Number(port ?? 0), backlog: BACKLOG }, () => {
  console.log(`node net relay listening on 127.0.0.1:${server.address().port}`);
});
process.on("SIGTERM", () => process.exit(0));
