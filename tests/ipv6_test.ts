/**
 * The TCP scripts over IPv6 loopback (`::1`), run as a student runs them:
 * the echo server on `::1` and on `::` (dual stack: IPv4 clients too), the
 * proxy relaying to an origin on `::1`, both clients asking an IPv6 server
 * (the `Host:` header must put the address in brackets), and the tracker
 * with two peers syncing a file over IPv6. Skipped as a whole where this
 * machine cannot bind `::1`.
 */

import assert from "node:assert/strict";
import { MODE_PERMISSIONS } from "../lib/concurrency.ts";
import { LineReader } from "../lib/lines.ts";
import { closeQuietly, writeAll } from "../lib/net.ts";
import { startOrigin } from "../lib/origin.ts";
import { buildGetRequest } from "../client.ts";
import { peerPermissions, startPeer } from "../p2p/peer.ts";
import { encodeLine } from "../p2p/protocol.ts";
import { exchange, readAll, runScript, startScript, waitUntil } from "./helpers.ts";
import { putFile, tempFolder } from "./p2p_helpers.ts";

const T0 = 1_700_000_000; // a fixed mtime, in seconds
const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** Whether this machine can listen on IPv6 loopback at all. */
function canBindIPv6Loopback(): boolean {
  try {
    Deno.listen({ hostname: "::1", port: 0 }).close();
    return true;
  } catch {
    return false;
  }
}

const NO_IPV6 = !canBindIPv6Loopback();
if (NO_IPV6) console.error("tests/ipv6_test.ts: cannot bind ::1 here, skipping every IPv6 test");

/** A request as a raw origin saw it. */
interface Seen {
  head: string;
}

/**
 * A tiny HTTP origin on `::1` that keeps each request's head, so a test can
 * read the `Host:` header that arrived, and answers every one with `hello`.
 */
function startRecordingOrigin(): { port: number; seen: Seen[] } & AsyncDisposable {
  const listener = Deno.listen({ hostname: "::1", port: 0 });
  const seen: Seen[] = [];
  const conns = new Set<Deno.TcpConn>();
  const serving: Promise<void>[] = [];
  const accepting = (async () => {
    for await (const conn of listener) {
      conns.add(conn);
      serving.push(
        (async () => {
          // Read up to the blank line that ends the head (the clients send no body).
          let text = "";
          const buffer = new Uint8Array(4096);
          while (!text.includes("\r\n\r\n") && text.length < 64 * 1024) {
            const n = await conn.read(buffer);
            if (n === null) break;
            text += decoder.decode(buffer.subarray(0, n));
          }
          seen.push({ head: text });
          await writeAll(conn, encoder.encode("HTTP/1.0 200 OK\r\nContent-Length: 5\r\n\r\nhello"));
          await conn.closeWrite();
        })().catch(() => {}),
      );
    }
  })().catch(() => {});
  return {
    port: listener.addr.port,
    seen,
    async [Symbol.asyncDispose]() {
      listener.close();
      await accepting;
      await Promise.allSettled(serving);
      for (const conn of conns) closeQuietly(conn);
    },
  };
}

/** The `Host:` header's value in a request head. */
function hostHeader(head: string): string | undefined {
  return /\r\nHost: ([^\r\n]*)\r\n/i.exec(head)?.[1];
}

Deno.test({
  name: "buildGetRequest() puts an IPv6 address in brackets, with and without a port",
  ignore: NO_IPV6,
  fn() {
    assert.match(buildGetRequest("::1", 18555, "/"), /\r\nHost: \[::1\]:18555\r\n/);
    assert.match(buildGetRequest("::1", 80, "/"), /\r\nHost: \[::1\]\r\n/);
    assert.match(buildGetRequest("www.google.com", 80, "/"), /\r\nHost: www\.google\.com\r\n/);
    assert.match(buildGetRequest("127.0.0.1", 8000, "/"), /\r\nHost: 127\.0\.0\.1:8000\r\n/);
  },
});

for (const mode of ["async", "worker"] as const) {
  Deno.test({
    name: `echo_server.ts --host ::1 --mode ${mode} echoes an IPv6 client`,
    ignore: NO_IPV6,
    async fn() {
      await using server = await startScript(
        "echo_server.ts",
        ["--host", "::1", "--port", "0", "--mode", mode],
        { permissions: MODE_PERMISSIONS[mode] },
      );
      assert.ok(
        server.lines.some((l) => /listening on \[::1\]:\d+/.test(l)),
        server.lines.join("\n"),
      );
      const data = encoder.encode("Foobar over IPv6\n");
      const result = await exchange(server.port, data, { hostname: "::1" });
      assert.deepEqual(result.received, data);
      await server.waitFor(/Connected by \[::1\]:\d+/);
    },
  });
}

Deno.test({
  name: "echo_server.ts --host :: is dual stack: it echoes an IPv6 and an IPv4 client",
  ignore: NO_IPV6,
  async fn() {
    await using server = await startScript("echo_server.ts", ["--host", "::", "--port", "0"]);
    for (const hostname of ["::1", "127.0.0.1"]) {
      const data = encoder.encode(`hello from ${hostname}\n`);
      const result = await exchange(server.port, data, { hostname });
      assert.deepEqual(result.received, data, hostname);
    }
    // The IPv4 client arrives as an IPv4-mapped IPv6 address.
    await server.waitFor(/Connected by \[::ffff:127\.0\.0\.1\]:\d+/);
  },
});

Deno.test({
  name:
    "proxy_server.ts on ::1 relays to --upstream [::1]:PORT, for proxy_client.ts --host ::1 and [::1]",
  ignore: NO_IPV6,
  async fn() {
    // First the lab's own origin (Deno.serve) on ::1, as the lab walk-through would use it.
    await using origin = await startOrigin({ hostname: "::1", pages: { "/": "<p>six</p>" } });
    assert.equal(origin.addr.hostname, "::1");
    await using proxy = await startScript("proxy_server.ts", [
      "--host",
      "::1",
      "--port",
      "0",
      "--upstream",
      `[::1]:${origin.addr.port}`,
    ]);
    const viaProxy = await runScript("proxy_client.ts", ["--proxy", `[::1]:${proxy.port}`]);
    assert.equal(viaProxy.code, 0, viaProxy.stderr);
    assert.equal(decoder.decode(viaProxy.stdout).endsWith("<p>six</p>"), true);
    assert.match(viaProxy.stderr, /via \[::1\]:\d+: HTTP\/1\.[01] 200 OK/);

    // Then a recording origin, to see the Host header proxy_client.ts sends (always port 80).
    await using recorder = startRecordingOrigin();
    await using proxy2 = await startScript("proxy_server.ts", [
      "--host",
      "::1",
      "--port",
      "0",
      "--upstream",
      `[::1]:${recorder.port}`,
    ]);
    for (const host of ["::1", "[::1]"]) {
      const run = await runScript("proxy_client.ts", [
        "--proxy",
        `[::1]:${proxy2.port}`,
        "--host",
        host,
      ]);
      assert.equal(run.code, 0, `--host ${host}: ${run.stderr}`);
      assert.match(decoder.decode(run.stdout), /^HTTP\/1\.0 200 OK\r\n[^]*hello$/);
    }
    await waitUntil(() => recorder.seen.length === 2, 10_000, "two requests at the origin");
    for (const { head } of recorder.seen) assert.equal(hostHeader(head), "[::1]", head);
  },
});

Deno.test({
  name: "client.ts --host ::1 (or [::1]) fetches from an IPv6 server and sends Host: [::1]:PORT",
  ignore: NO_IPV6,
  async fn() {
    await using recorder = startRecordingOrigin();
    for (const host of ["::1", "[::1]"]) {
      const run = await runScript("client.ts", ["--host", host, "--port", String(recorder.port)]);
      assert.equal(run.code, 0, `--host ${host}: ${run.stderr}`);
      assert.match(decoder.decode(run.stdout), /hello$/);
      assert.match(run.stderr, new RegExp(`to \\[::1\\]:${recorder.port}`));
    }
    await waitUntil(() => recorder.seen.length === 2, 10_000, "two requests at the origin");
    for (const { head } of recorder.seen) {
      assert.equal(hostHeader(head), `[::1]:${recorder.port}`, head);
    }
  },
});

Deno.test({
  name:
    "a tracker on ::1 hands out IPv6 holders, and two peers started without --host sync through it; an IPv4 client is served too",
  ignore: NO_IPV6,
  async fn() {
    await using a = await tempFolder();
    await using b = await tempFolder();
    const bytes = encoder.encode("synced over IPv6\n");
    await putFile(a.path, "hello.txt", bytes, T0);
    await using tracker = await startScript("p2p/tracker.ts", [
      "--host",
      "::1",
      "--port",
      "0",
      "--http-port",
      "0",
      "--quiet",
    ]);
    // No --host: the peers pick their default, which must be reachable over IPv6.
    const peerArgs = (dir: string) => [
      "--tracker",
      `[::1]:${tracker.port}`,
      "--dir",
      dir,
      "--port",
      "0",
      "--interval",
      "0.3",
    ];
    await using pa = await startScript("p2p/peer.ts", peerArgs(a.path), {
      permissions: peerPermissions(a.path, "async"),
    });
    await using pb = await startScript("p2p/peer.ts", peerArgs(b.path), {
      permissions: peerPermissions(b.path, "async"),
    });
    await waitUntil(
      async () => {
        try {
          return decoder.decode(await Deno.readFile(`${b.path}/hello.txt`)) ===
            decoder.decode(bytes);
        } catch {
          return false;
        }
      },
      20_000,
      "hello.txt to reach the second peer",
      () => [...pa.lines, "---", ...pb.lines].join("\n"),
    );
    // The tracker told b to fetch from a's IPv6 address, and the download went through.
    await pb.waitFor(
      new RegExp(`fetching hello\\.txt \\(missing here\\) from \\[::1\\]:${pa.port}`),
    );
    await pb.waitFor(/downloaded hello\.txt from \[::1\]:\d+: .*SHA-256 verified/);
    assert.equal((await Deno.stat(`${b.path}/hello.txt`)).mtime!.getTime(), T0 * 1000);

    // The same default serves IPv4 clients, as the course's Python peers are.
    const conn = await Deno.connect({ hostname: "127.0.0.1", port: pa.port });
    await writeAll(conn, encoder.encode("hello.txt\n"));
    await conn.closeWrite();
    const reply = decoder.decode(await readAll(conn));
    conn.close();
    assert.equal(reply, `Content-Length: ${bytes.length}\n${decoder.decode(bytes)}`);
    assert.ok(!pa.lines.some((l) => l.includes("[[")), pa.lines.join("\n"));
    assert.ok(!pb.lines.some((l) => l.includes("[[")), pb.lines.join("\n"));
  },
});

Deno.test({
  name:
    "a peer given an IPv6 holder already in brackets logs and fetches from [::1]:PORT, not [[::1]]",
  ignore: NO_IPV6,
  async fn() {
    await using a = await tempFolder();
    await using b = await tempFolder();
    const bytes = encoder.encode("bracketed\n");
    await putFile(a.path, "x.txt", bytes, T0);
    const lines: string[] = [];
    await using holder = await startPeer({
      dir: a.path,
      tracker: { hostname: "::1", port: 1 }, // unreachable on purpose: it only serves
      hostname: "::1",
      interval: 5,
      log: () => {},
    });
    // A tracker of another make that writes the holder's IPv6 address in brackets.
    const listener = Deno.listen({ hostname: "::1", port: 0 });
    const directory = {
      "x.txt": { ip: "[::1]", port: holder.addr.port, mtime: T0 },
    };
    const conns: Deno.TcpConn[] = [];
    const answering: Promise<void>[] = [];
    const serving = (async () => {
      for await (const conn of listener) {
        conns.push(conn);
        answering.push(
          (async () => {
            const reader = new LineReader(conn, 64 * 1024);
            while ((await reader.readLine()) !== null) {
              await writeAll(conn, encodeLine(directory));
            }
          })().catch(() => {}),
        );
      }
    })().catch(() => {});
    try {
      await using _peer = await startPeer({
        dir: b.path,
        tracker: { hostname: "::1", port: listener.addr.port },
        hostname: "::1",
        interval: 0.3,
        log: (line) => lines.push(line),
      });
      await waitUntil(
        () => lines.some((l) => l.startsWith("downloaded x.txt")),
        20_000,
        "x.txt to be downloaded",
        () => lines.join("\n"),
      );
    } finally {
      listener.close();
      await serving;
      for (const conn of conns) closeQuietly(conn);
      await Promise.allSettled(answering);
    }
    assert.ok(!lines.some((l) => l.includes("[[")), lines.join("\n"));
    assert.ok(
      lines.some((l) => l.includes(`fetching x.txt (missing here) from [::1]:${holder.addr.port}`)),
      lines.join("\n"),
    );
    assert.deepEqual(await Deno.readFile(`${b.path}/x.txt`), bytes);
  },
});
