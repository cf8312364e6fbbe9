/**
 * Every script over IPv6 loopback (`::1`), run as a student runs them, in
 * every concurrency mode (async, worker, process): the echo server on `::1`
 * and on `::` (dual stack: IPv4 clients too), the proxy relaying to an origin
 * on `::1`, both clients asking an IPv6 server (the `Host:` header must put
 * the address in brackets), the UDP echo server and pinger, and the tracker
 * with two peers syncing a file over IPv6. Skipped as a whole where this
 * machine cannot bind `::1`; the dual-stack cases are skipped where the
 * kernel makes `::` IPv6-only.
 */

import assert from "node:assert/strict";
import { type Mode, MODE_PERMISSIONS, MODES } from "../lib/concurrency.ts";
import { LineReader } from "../lib/lines.ts";
import { closeQuietly, writeAll } from "../lib/net.ts";
import { startOrigin } from "../lib/origin.ts";
import { buildGetRequest } from "../client.ts";
import { startEchoServer } from "../echo_server.ts";
import { peerPermissions, startPeer } from "../p2p/peer.ts";
import { encodeLine } from "../p2p/protocol.ts";
import {
  exchange,
  randomBytes,
  readAll,
  runScript,
  type Script,
  sha256,
  startScript,
  waitUntil,
} from "./helpers.ts";
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

/**
 * Whether a socket bound to `::` takes IPv4 clients too (as `::ffff:a.b.c.d`).
 * Linux decides for TCP and for `node:dgram` alike, by `net.ipv6.bindv6only`:
 * 0 (the default) makes `::` dual stack, 1 makes it IPv6 only. Where the file
 * is missing (not Linux) the platforms we know default to dual stack.
 */
function kernelIsDualStack(): boolean {
  try {
    return Deno.readTextFileSync("/proc/sys/net/ipv6/bindv6only").trim() === "0";
  } catch {
    return true;
  }
}

const NO_DUAL_STACK = NO_IPV6 || !kernelIsDualStack();
if (!NO_IPV6 && NO_DUAL_STACK) {
  console.error(
    "tests/ipv6_test.ts: net.ipv6.bindv6only is 1, so :: takes no IPv4 client: skipping those cases",
  );
}

/** A payload big enough to take many reads and writes each way. */
const STREAM_BYTES = 256 * 1024;

/**
 * Starts a server script on `host` in `mode`, with the permissions that mode
 * needs and two workers or children (a small pool keeps the machine's load down).
 */
function startServerScript(
  script: string,
  host: string,
  mode: Mode,
  args: string[] = [],
): Promise<Script> {
  const pool = mode === "async" ? [] : ["--workers", "2"];
  return startScript(
    script,
    ["--host", host, "--port", "0", "--mode", mode, ...pool, ...args],
    { permissions: MODE_PERMISSIONS[mode] },
  );
}

/**
 * Checks an echo path from `hostname` to `port`: a random stream of
 * {@linkcode STREAM_BYTES} comes back byte for byte while it is still being
 * sent; then a message written and half-closed before the first read comes
 * back whole, and the reply ends (the server half-closes in turn).
 */
async function assertEchoes(hostname: string, port: number, seed: number): Promise<void> {
  const data = randomBytes(STREAM_BYTES, seed);
  const result = await exchange(port, data, { hostname, keep: false });
  assert.equal(result.bytes, data.length, `bytes echoed to ${hostname}`);
  assert.equal(result.sha256, sha256(data), `echo to ${hostname} differs`);

  const conn = await Deno.connect({ hostname, port });
  try {
    const message = encoder.encode(`sent from ${hostname}, then half-closed\n`);
    await writeAll(conn, message);
    await conn.closeWrite();
    assert.deepEqual(await readAll(conn), message, `half-closed echo to ${hostname}`);
  } finally {
    conn.close();
  }
}

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

for (const [index, mode] of MODES.entries()) {
  Deno.test({
    name:
      `echo_server.ts --mode ${mode} on ::1 echoes IPv6 clients byte for byte, half-close included, and client.ts --host ::1 --message`,
    ignore: NO_IPV6,
    async fn() {
      await using server = await startServerScript("echo_server.ts", "::1", mode);
      assert.ok(
        server.lines.some((l) => l.includes(`(${mode} mode) listening on [::1]:${server.port}`)),
        server.lines.join("\n"),
      );
      await assertEchoes("::1", server.port, 10 + index);

      // The lab's client, sending a message instead of a GET, as a student tries the server.
      const run = await runScript("client.ts", [
        "--host",
        "::1",
        "--port",
        String(server.port),
        "--message",
        "Foobar over IPv6",
      ]);
      assert.equal(run.code, 0, run.stderr);
      assert.equal(decoder.decode(run.stdout), "Foobar over IPv6");
      assert.match(
        run.stderr,
        new RegExp(`connected from \\[::1\\]:\\d+ to \\[::1\\]:${server.port}`),
      );

      // The client's address reaches the log in brackets, whichever worker or child served it.
      await server.waitFor(/Connected by \[::1\]:\d+/);
      await server.waitFor(/Closed \[::1\]:\d+ \(client finished sending\): echoed 256\.0 KiB/);
      assert.ok(!server.lines.some((l) => l.includes("[[")), server.lines.join("\n"));
    },
  });

  Deno.test({
    name:
      `echo_server.ts --mode ${mode} on :: is dual stack: it echoes an IPv6 and an IPv4 client byte for byte`,
    ignore: NO_DUAL_STACK,
    async fn() {
      await using server = await startServerScript("echo_server.ts", "::", mode);
      assert.ok(
        server.lines.some((l) => l.includes(`listening on [::]:${server.port}`)),
        server.lines.join("\n"),
      );
      await assertEchoes("::1", server.port, 20 + index);
      await assertEchoes("127.0.0.1", server.port, 30 + index);
      // The IPv4 client arrives as an IPv4-mapped IPv6 address.
      await server.waitFor(/Connected by \[::1\]:\d+/);
      await server.waitFor(/Connected by \[::ffff:127\.0\.0\.1\]:\d+/);
    },
  });

  Deno.test({
    name:
      `proxy_server.ts --mode ${mode} on ::1 relays to an origin at --upstream [::1]:PORT, and on :: relays IPv4 and IPv6 clients byte for byte`,
    ignore: NO_IPV6,
    async fn() {
      const page = `<p>page for the ${mode} proxy</p>`;
      await using origin = await startOrigin({ hostname: "::1", pages: { "/": page } });
      await using proxy = await startServerScript("proxy_server.ts", "::1", mode, [
        "--upstream",
        `[::1]:${origin.addr.port}`,
      ]);
      assert.ok(
        proxy.lines.some((l) =>
          l.includes(`listening on [::1]:${proxy.port}, relaying to [::1]:${origin.addr.port}`)
        ),
        proxy.lines.join("\n"),
      );
      // One client, its reply byte for byte on stdout.
      const one = await runScript("proxy_client.ts", ["--proxy", `[::1]:${proxy.port}`]);
      assert.equal(one.code, 0, one.stderr);
      assert.equal(decoder.decode(one.stdout).endsWith(`\r\n\r\n${page}`), true);
      assert.match(one.stderr, /via \[::1\]:\d+: HTTP\/1\.[01] 200 OK/);
      // Four clients at once, spread over the pool in worker and process modes.
      const four = await runScript("proxy_client.ts", [
        "--proxy",
        `[::1]:${proxy.port}`,
        "--count",
        "4",
      ]);
      assert.equal(four.code, 0, decoder.decode(four.stdout) + four.stderr);
      assert.match(decoder.decode(four.stdout), /total: 4 of 4 clients got a reply/);
      await proxy.waitFor(
        new RegExp(`Connected by \\[::1\\]:\\d+, relaying to \\[::1\\]:${origin.addr.port}$`),
      );
      assert.equal(origin.requests(), 5);

      // On ::, in front of an echo server on ::1, so every relayed byte can be checked, both
      // ways, and the client's half-close must travel to the echo server and back.
      await using echo = await startEchoServer({ hostname: "::1", quiet: true });
      await using any = await startServerScript("proxy_server.ts", "::", mode, [
        "--upstream",
        `[::1]:${echo.addr.port}`,
      ]);
      await assertEchoes("::1", any.port, 40 + index);
      await any.waitFor(/Connected by \[::1\]:\d+, relaying to \[::1\]:\d+/);
      if (!NO_DUAL_STACK) {
        await assertEchoes("127.0.0.1", any.port, 50 + index);
        await any.waitFor(/Connected by \[::ffff:127\.0\.0\.1\]:\d+, relaying to \[::1\]:\d+/);
      }
      assert.ok(!any.lines.some((l) => l.includes("[[")), any.lines.join("\n"));
    },
  });
}

Deno.test({
  name: "proxy_client.ts --host ::1 (or [::1]) through a proxy on ::1 sends Host: [::1]",
  ignore: NO_IPV6,
  async fn() {
    // A recording origin, to see the Host header proxy_client.ts sends (always for port 80).
    await using recorder = startRecordingOrigin();
    await using proxy = await startScript("proxy_server.ts", [
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
        `[::1]:${proxy.port}`,
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

/** Runs udp_pinger.ts for three quick pings to `host` at `port`. */
function pingThree(host: string, port: number) {
  return runScript("udp_pinger.ts", [
    "--host",
    host,
    "--port",
    String(port),
    "--count",
    "3",
    "--interval",
    "0.05",
    "--timeout",
    "5",
  ]);
}

/** Checks that a pinger run got all three replies from `from` (as the pinger prints it). */
function assertThreeReplies(
  run: { code: number; stdout: Uint8Array; stderr: string },
  from: string,
): void {
  const out = decoder.decode(run.stdout);
  assert.equal(run.code, 0, out + run.stderr);
  for (const seq of [1, 2, 3]) assert.ok(out.includes(`reply from ${from}: seq=${seq} `), out);
  assert.match(out, /^3 packets transmitted, 3 received, 0% packet loss/m);
}

Deno.test({
  name:
    "udp_echo_server.ts --host ::1 answers udp_pinger.ts --host ::1 and [::1], and logs the sender in brackets",
  ignore: NO_IPV6,
  async fn() {
    await using server = await startScript("udp_echo_server.ts", ["--host", "::1", "--port", "0"]);
    assert.ok(
      server.lines.some((l) => l.includes(`listening on [::1]:${server.port} (udp)`)),
      server.lines.join("\n"),
    );
    for (const host of ["::1", "[::1]"]) {
      const run = await pingThree(host, server.port);
      assertThreeReplies(run, `[::1]:${server.port}`);
      assert.match(
        decoder.decode(run.stdout),
        new RegExp(`^PING \\[::1\\]:${server.port} \\(udp\\)`),
      );
    }
    await server.waitFor(/^\[::1\]:\d+ sent \d+ B: "PING seq=3 /);
  },
});

// node:dgram in Deno 2.9.6 opens a "udp6" socket without IPV6_V6ONLY, so on `::` it takes IPv4
// datagrams as ::ffff:a.b.c.d and its replies to that address reach the IPv4 sender. Where the
// kernel makes `::` IPv6-only (bindv6only=1) no IPv4 datagram reaches it, and the test is skipped.
Deno.test({
  name: "udp_echo_server.ts --host :: is dual stack: it answers an IPv4 and an IPv6 pinger",
  ignore: NO_DUAL_STACK,
  async fn() {
    await using server = await startScript("udp_echo_server.ts", ["--host", "::", "--port", "0"]);
    assert.ok(
      server.lines.some((l) => l.includes(`listening on [::]:${server.port} (udp)`)),
      server.lines.join("\n"),
    );
    assertThreeReplies(await pingThree("127.0.0.1", server.port), `127.0.0.1:${server.port}`);
    assertThreeReplies(await pingThree("::1", server.port), `[::1]:${server.port}`);
    // The IPv4 sender arrives as an IPv4-mapped IPv6 address, and the reply to it got through.
    await server.waitFor(/^\[::ffff:127\.0\.0\.1\]:\d+ sent \d+ B: "PING seq=3 /);
    await server.waitFor(/^\[::1\]:\d+ sent \d+ B: "PING seq=3 /);
  },
});

for (const [index, mode] of MODES.entries()) {
  Deno.test({
    name:
      `a tracker on ::1 hands out IPv6 holders, and two peers in --mode ${mode} started without --host sync through it; an IPv4 client is served too`,
    ignore: NO_IPV6,
    async fn() {
      await using a = await tempFolder();
      await using b = await tempFolder();
      // Large enough to take many reads when a worker or child process serves it.
      const bytes = randomBytes(STREAM_BYTES, 60 + index);
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
        "--mode",
        mode,
        ...(mode === "async" ? [] : ["--workers", "1"]),
      ];
      await using pa = await startScript("p2p/peer.ts", peerArgs(a.path), {
        permissions: peerPermissions(a.path, mode),
      });
      await using pb = await startScript("p2p/peer.ts", peerArgs(b.path), {
        permissions: peerPermissions(b.path, mode),
      });
      await waitUntil(
        async () => {
          try {
            return sha256(await Deno.readFile(`${b.path}/hello.txt`)) === sha256(bytes);
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
      const reply = await readAll(conn);
      conn.close();
      const head = encoder.encode(`Content-Length: ${bytes.length}\n`);
      assert.deepEqual(reply.subarray(0, head.length), head);
      assert.equal(sha256(reply.subarray(head.length)), sha256(bytes));
      // a served both, in the mode asked for, and logged each client's address in brackets.
      assert.ok(
        pa.lines.some((l) => l.includes(`peer (${mode} mode)`) && l.includes(`on [::]:${pa.port}`)),
        pa.lines.join("\n"),
      );
      await pa.waitFor(/sent "hello\.txt" \(256\.0 KiB\) to \[::1\]:\d+/);
      await pa.waitFor(/sent "hello\.txt" \(256\.0 KiB\) to \[::ffff:127\.0\.0\.1\]:\d+/);
      assert.ok(!pa.lines.some((l) => l.includes("[[")), pa.lines.join("\n"));
      assert.ok(!pb.lines.some((l) => l.includes("[[")), pb.lines.join("\n"));
    },
  });
}

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
