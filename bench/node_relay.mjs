#!/usr/bin/env node
/**
 * Reference relay for the benchmark's proxy part: a plain Node `net` relay,
 * one upstream connection per client, both directions piped.
 * Run: `node bench/node_relay.mjs PORT UPSTREAM_HOST UPSTREAM_PORT [--nodelay]`;
 * prints "listening on 127.0.0.1:PORT".
 *
 * Without `--nodelay` it is Node's default, untuned: Nagle's algorithm on, so
 * a small response waits for the peer's delayed ACK (p99 near 40 ms). With
 * `--nodelay` both sockets set TCP_NODELAY, as any relay tuned for latency does.
 */
import net from "node:net";

const BACKLOG = 1024; // connections the kernel queues before refusing

const [port, upstreamHost, upstreamPort, flag] = process.argv.slice(2);
if (flag !== undefined && flag !== "--nodelay") {
  console.error(`unknown option ${JSON.stringify(flag)}: the only one is --nodelay`);
  process.exit(2);
}
const noDelay = flag === "--nodelay";
const server = net.createServer({ allowHalfOpen: true }, (client) => {
  const upstream = net.connect({
    host: upstreamHost,
    port: Number(upstreamPort),
    allowHalfOpen: true,
  });
  if (noDelay) {
    // Send each write at once instead of holding small ones back for an ACK.
    client.setNoDelay(true);
    upstream.setNoDelay(true);
  }
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
  const tuning = noDelay ? " (TCP_NODELAY)" : "";
  console.log(`node net relay${tuning} listening on 127.0.0.1:${server.address().port}`);
});
process.on("SIGTERM", () => process.exit(0));
