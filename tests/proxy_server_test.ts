/**
 * The proxy server against local origins started by the tests, in every
 * mode: pages byte for byte, many clients at once, half-closes in both
 * orders, a client that stops reading, upstreams that refuse, do not exist or
 * do not answer, idle and resetting clients, the connection limit, file
 * descriptors over many connections, `curl` as a real client, and bad flags.
 */

import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { MODE_PERMISSIONS, MODES } from "../lib/concurrency.ts";
import type { WhenFull } from "../lib/accept.ts";
import { listenOn, READ_BUFFER_BYTES, writeAll } from "../lib/net.ts";
import { startOrigin } from "../lib/origin.ts";
import { startProxyServer } from "../proxy_server.ts";
import {
  assertFdsLevelOff,
  childrenOf,
  exchange,
  haveCommand,
  projectPath,
  randomBytes,
  readAll,
  rssBytes,
  runScript,
  sha256,
  startRawOrigin,
  startScript,
  waitUntil,
  withTimeout,
} from "./helpers.ts";

const MIB = 1024 * 1024;
const encoder = new TextEncoder();
const decoder = new TextDecoder();
/** A GET as the lab's client sends it: HTTP/1.0, so the origin closes after the reply. */
function getRequest(path: string): Uint8Array {
  return encoder.encode(`GET ${path} HTTP/1.0\r\nHost: www.google.com\r\n\r\n`);
}

/** Splits an HTTP response into its status line and body. */
function parseResponse(bytes: Uint8Array): { status: string; body: Uint8Array } {
  const text = decoder.decode(bytes.subarray(0, Math.min(bytes.length, 4096)));
  const headEnd = text.indexOf("\r\n\r\n");
  assert.ok(headEnd > 0, `no HTTP header in ${JSON.stringify(text.slice(0, 80))}`);
  return { status: text.slice(0, text.indexOf("\r\n")), body: bytes.subarray(headEnd + 4) };
}

/** Reads until the end of data, hashing; resolves with the byte count and hash. */
async function drain(conn: Deno.Conn): Promise<{ bytes: number; sha256: string }> {
  const hash = createHash("sha256");
  const buffer = new Uint8Array(READ_BUFFER_BYTES);
  let bytes = 0;
  while (true) {
    const n = await conn.read(buffer);
    if (n === null) return { bytes, sha256: hash.digest("hex") };
    hash.update(buffer.subarray(0, n));
    bytes += n;
  }
}

/** Resolves when a read ends: "eof", "reset", or "closed". */
async function endOf(conn: Deno.Conn): Promise<string> {
  const buffer = new Uint8Array(READ_BUFFER_BYTES);
  try {
    while ((await conn.read(buffer)) !== null) {
      // Discard whatever still comes.
    }
    return "eof";
  } catch (err) {
    return err instanceof Deno.errors.ConnectionReset ? "reset" : "closed";
  }
}

// ---------------------------------------------------------------------------
// In-process, every mode.

for (const mode of MODES) {
  Deno.test(`startProxyServer() in ${mode} mode relays an 8 MiB page byte for byte, then 100 clients at once`, async () => {
    const big = randomBytes(8 * MIB, 8);
    const pages: Record<string, Uint8Array> = { "/big": big };
    for (let i = 0; i < 100; i++) pages[`/page${i}`] = randomBytes(1000 + i * 97, i + 1);
    await using origin = await startOrigin({ pages });
    await using proxy = await startProxyServer({
      mode,
      poolSize: 2,
      quiet: true,
      upstream: { hostname: "127.0.0.1", port: origin.addr.port },
    });
    const got = parseResponse((await exchange(proxy.addr.port, getRequest("/big"))).received);
    assert.equal(got.status, "HTTP/1.0 200 OK");
    assert.equal(got.body.length, big.length);
    assert.equal(sha256(got.body), sha256(big));

    const replies = await Promise.all(
      Array.from({ length: 100 }, async (_, i) => {
        const reply = parseResponse(
          (await exchange(proxy.addr.port, getRequest(`/page${i}`))).received,
        );
        return { status: reply.status, bytes: reply.body.length, sha256: sha256(reply.body) };
      }),
    );
    assert.deepEqual(
      replies,
      Array.from({ length: 100 }, (_, i) => ({
        status: "HTTP/1.0 200 OK",
        bytes: pages[`/page${i}`].length,
        sha256: sha256(pages[`/page${i}`]),
      })),
    );
    assert.equal(origin.requests(), 101);
  });

  Deno.test(`startProxyServer() in ${mode} mode: the client half-closes first, the reply still flows back`, async () => {
    const upload = randomBytes(3 * MIB, 31);
    const reply = randomBytes(2 * MIB, 32);
    // The origin reads to the end of the upload before it says a word.
    await using origin = startRawOrigin(async (conn) => {
      const got = await drain(conn);
      await writeAll(conn, reply);
      await conn.closeWrite();
      return got;
    });
    await using proxy = await startProxyServer({
      mode,
      poolSize: 2,
      quiet: true,
      upstream: { hostname: "127.0.0.1", port: origin.port },
    });
    const back = await exchange(proxy.addr.port, upload, { keep: false });
    assert.equal(back.bytes, reply.length);
    assert.equal(back.sha256, sha256(reply));
    assert.deepEqual(await origin.served(0), { bytes: upload.length, sha256: sha256(upload) });
  });

  Deno.test(`startProxyServer() in ${mode} mode: the upstream finishes first, the client keeps sending`, async () => {
    const upload = randomBytes(3 * MIB, 41);
    const reply = randomBytes(2 * MIB, 42);
    // The origin sends its whole reply and half-closes at once, then reads what the client sends.
    await using origin = startRawOrigin(async (conn) => {
      const reading = drain(conn);
      await writeAll(conn, reply);
      await conn.closeWrite();
      return await reading;
    });
    await using proxy = await startProxyServer({
      mode,
      poolSize: 2,
      quiet: true,
      upstream: { hostname: "127.0.0.1", port: origin.port },
    });
    const conn = await Deno.connect({ port: proxy.addr.port });
    try {
      await writeAll(conn, upload.subarray(0, MIB));
      // The whole reply and its end arrive while two thirds of the upload are still to come.
      const back = await drain(conn);
      assert.equal(back.bytes, reply.length);
      assert.equal(back.sha256, sha256(reply));
      await writeAll(conn, upload.subarray(MIB));
      await conn.closeWrite();
      assert.deepEqual(await origin.served(0), { bytes: upload.length, sha256: sha256(upload) });
      assert.equal(await endOf(conn), "eof");
    } finally {
      conn.close();
    }
  });

  Deno.test(`startProxyServer() in ${mode} mode: a client that resets mid-transfer closes its upstream`, async () => {
    const lines: string[] = [];
    // The origin streams without end until its connection breaks.
    await using origin = startRawOrigin(async (conn) => {
      const chunk = randomBytes(64 * 1024, 5);
      try {
        while (true) await writeAll(conn, chunk);
      } catch {
        return "upstream connection closed";
      }
    });
    await using proxy = await startProxyServer({
      mode,
      poolSize: 2,
      log: (line) => lines.push(line),
      upstream: { hostname: "127.0.0.1", port: origin.port },
    });
    const conn = await Deno.connect({ port: proxy.addr.port });
    const buffer = new Uint8Array(64 * 1024);
    let got = 0;
    while (got < 2 * MIB) got += (await conn.read(buffer)) ?? 0;
    // Closing with unread data makes the kernel send a reset instead of a normal end.
    conn.close();
    assert.equal(
      await withTimeout(origin.served(0), 3000, "the upstream to be closed"),
      "upstream connection closed",
    );
    await waitUntil(() => lines.some((l) => l.startsWith("Closed")), 3000, "the close line");
    assert.match(lines.find((l) => l.startsWith("Closed"))!, /client (reset|went away)/);
    await waitUntil(() => proxy.stats.active === 0, 3000, "the connection to be released");
  });

  Deno.test(`startProxyServer() in ${mode} mode closes both sides after the idle timeout`, async () => {
    const lines: string[] = [];
    // The origin answers nothing and waits for its connection to end.
    await using origin = startRawOrigin((conn) => endOf(conn));
    await using proxy = await startProxyServer({
      mode,
      poolSize: 2,
      idleTimeoutSeconds: 0.5,
      log: (line) => lines.push(line),
      upstream: { hostname: "127.0.0.1", port: origin.port },
    });
    const conn = await Deno.connect({ port: proxy.addr.port });
    try {
      // Some traffic first: the timeout counts from the last byte, not from the connect.
      await writeAll(conn, encoder.encode("hello"));
      await new Promise((resolve) => setTimeout(resolve, 300));
      await writeAll(conn, encoder.encode(" again"));
      const started = performance.now();
      const end = await withTimeout(endOf(conn), 3000, "the idle client to be closed");
      const waited = performance.now() - started;
      assert.ok(["eof", "reset"].includes(end));
      assert.ok(waited >= 400, `closed after only ${waited.toFixed(0)} ms of silence`);
      assert.ok(
        ["eof", "reset"].includes(
          String(await withTimeout(origin.served(0), 3000, "the upstream to be closed")),
        ),
      );
      await waitUntil(() => lines.some((l) => l.startsWith("Closed")), 3000, "the close line");
      assert.match(lines.find((l) => l.startsWith("Closed"))!, /idle timeout/);
    } finally {
      conn.close();
    }
  });
}

// ---------------------------------------------------------------------------
// Upstream failures and limits (the mechanism is the same in every mode).

Deno.test("startProxyServer(): a refused upstream closes the client at once, with a reason, and serving goes on", async () => {
  const lines: string[] = [];
  // A port that was just free: nothing listens there.
  const probe = listenOn();
  const port = probe.addr.port;
  probe.close();
  await using proxy = await startProxyServer({
    log: (line) => lines.push(line),
    upstream: { hostname: "127.0.0.1", port },
  });
  const started = performance.now();
  const got = await exchange(proxy.addr.port, getRequest("/"));
  assert.equal(got.received.length, 0);
  assert.ok(performance.now() - started < 1000);
  assert.equal(lines.length, 1, lines.join("\n"));
  assert.match(lines[0], /^127\.0\.0\.1:\d+: no relay, connection to 127\.0\.0\.1:\d+ refused/);

  // Once something listens there, the same proxy relays to it.
  await using _origin = await startOrigin({ port });
  const page = parseResponse((await exchange(proxy.addr.port, getRequest("/"))).received);
  assert.equal(page.status, "HTTP/1.0 200 OK");
});

Deno.test("startProxyServer(): an unknown upstream host is one log line and a closed client", async () => {
  const lines: string[] = [];
  await using proxy = await startProxyServer({
    log: (line) => lines.push(line),
    upstream: { hostname: "no-such-host.invalid", port: 80 },
    connectTimeoutSeconds: 5,
  });
  const started = performance.now();
  const got = await exchange(proxy.addr.port, getRequest("/"));
  assert.equal(got.received.length, 0);
  assert.ok(performance.now() - started < 5500);
  assert.equal(lines.length, 1, lines.join("\n"));
  assert.match(lines[0], /no relay, .*no-such-host\.invalid/);
});

Deno.test("startProxyServer(): an upstream that does not answer is given up after --connect-timeout", async () => {
  const lines: string[] = [];
  // A listener that never accepts, with a backlog of one that is already taken: the kernel
  // ignores any further attempt to connect, as a firewall that drops packets would.
  const silent = listenOn({ backlog: 0 });
  const filler = await Deno.connect({ port: silent.addr.port });
  try {
    await using proxy = await startProxyServer({
      log: (line) => lines.push(line),
      upstream: { hostname: "127.0.0.1", port: silent.addr.port },
      connectTimeoutSeconds: 0.5,
    });
    const conn = await Deno.connect({ port: proxy.addr.port });
    try {
      const started = performance.now();
      assert.equal(await withTimeout(endOf(conn), 3000, "the client to be closed"), "eof");
      const waited = performance.now() - started;
      assert.ok(waited >= 400 && waited < 1500, `closed after ${waited.toFixed(0)} ms`);
      assert.equal(lines.length, 1, lines.join("\n"));
      assert.match(lines[0], /timed out after 0\.5 s; closed the client/);
    } finally {
      conn.close();
    }
  } finally {
    filler.close();
    silent.close();
  }
});

/**
 * A proxy serving at most two clients at once, in front of an origin that
 * answers "reply" once the request has ended; its log lines are kept.
 */
async function twoClientProxy(whenFull: WhenFull) {
  const lines: string[] = [];
  const origin = startRawOrigin(async (conn) => {
    await endOf(conn);
    await conn.write(new TextEncoder().encode("reply"));
    await conn.closeWrite();
  });
  const proxy = await startProxyServer({
    maxConns: 2,
    whenFull,
    log: (line) => lines.push(line),
    upstream: { hostname: "127.0.0.1", port: origin.port },
  });
  return {
    proxy,
    lines,
    async [Symbol.asyncDispose]() {
      await proxy.close();
      await origin[Symbol.asyncDispose]();
    },
  };
}

Deno.test("startProxyServer(): beyond maxConns, clients are refused at once; once one leaves the next is served", async () => {
  await using setup = await twoClientProxy("refuse");
  const { proxy, lines } = setup;
  const held = [
    await Deno.connect({ port: proxy.addr.port }),
    await Deno.connect({ port: proxy.addr.port }),
  ];
  try {
    await waitUntil(() => proxy.stats.fullPauses >= 1, 3000, "the accept loop to stop");
    await assert.rejects(Deno.connect({ port: proxy.addr.port }), Deno.errors.ConnectionRefused);
    assert.ok(lines.some((l) => /refusing new clients/.test(l)), lines.join("\n"));
    // The held clients are still relayed in full.
    await held[0].write(new TextEncoder().encode("request"));
    await held[0].closeWrite();
    const done = held.shift()!;
    assert.equal(new TextDecoder().decode(await readAll(done)), "reply");
    done.close();
    await waitUntil(() => proxy.stats.active === 1, 3000, "the first relay to end");
    const extra = await withTimeout(
      (async () => {
        while (true) {
          try {
            return await Deno.connect({ port: proxy.addr.port });
          } catch (err) {
            if (!(err instanceof Deno.errors.ConnectionRefused)) throw err;
            await new Promise((resolve) => setTimeout(resolve, 10));
          }
        }
      })(),
      3000,
      "the proxy to listen again",
    );
    try {
      await extra.write(new TextEncoder().encode("request"));
      await extra.closeWrite();
      assert.equal(new TextDecoder().decode(await readAll(extra)), "reply");
      assert.equal(proxy.stats.accepted, 3);
    } finally {
      extra.close();
    }
  } finally {
    for (const conn of held) conn.close();
  }
});

Deno.test("startProxyServer(): beyond maxConns with whenFull queue, clients wait in the queue and are served when one leaves", async () => {
  await using setup = await twoClientProxy("queue");
  const { proxy, lines } = setup;
  const held = [
    await Deno.connect({ port: proxy.addr.port }),
    await Deno.connect({ port: proxy.addr.port }),
  ];
  try {
    await waitUntil(() => proxy.stats.active === 2, 3000, "two relayed connections");
    // The kernel completes the third handshake, but the proxy does not accept it while full.
    const extra = await Deno.connect({ port: proxy.addr.port });
    try {
      await extra.write(new TextEncoder().encode("request"));
      await extra.closeWrite();
      await waitUntil(() => proxy.stats.fullPauses >= 1, 3000, "the accept loop to pause");
      assert.equal(proxy.stats.accepted, 2);
      assert.ok(lines.some((l) => /new clients wait/.test(l)), lines.join("\n"));
      // One held client leaves: the waiting one is accepted and served in full.
      held.shift()!.close();
      const reply = await withTimeout(readAll(extra), 5000, "the waiting client's reply");
      assert.equal(new TextDecoder().decode(reply), "reply");
      assert.equal(proxy.stats.accepted, 3);
    } finally {
      extra.close();
    }
  } finally {
    for (const conn of held) conn.close();
  }
});

// ---------------------------------------------------------------------------
// As a student runs it: `deno run proxy_server.ts ...`.

/** Memory the issue allows above idle while a client is stalled. */
const MEMORY_HEADROOM_BYTES = 96 * MIB;
/** What the origin streams to the stalled client. */
const STALL_STREAM_BYTES = 400 * MIB;

/** Resident memory of a script and its child processes. */
function treeRss(pid: number): number {
  return [pid, ...childrenOf(pid)].reduce((sum, p) => sum + rssBytes(p), 0);
}

for (const mode of MODES) {
  Deno.test(`proxy_server.ts --mode ${mode}: a client that stops reading holds memory down, then gets all 400 MB`, async () => {
    const block = randomBytes(MIB, 400);
    const sentHash = createHash("sha256");
    let sent = 0;
    // The origin streams 400 MiB as fast as the proxy takes it; each block is numbered.
    await using origin = startRawOrigin(async (conn) => {
      for (let i = 0; sent < STALL_STREAM_BYTES; i++) {
        new DataView(block.buffer).setUint32(0, i);
        sentHash.update(block);
        await writeAll(conn, block);
        sent += block.length;
      }
      await conn.closeWrite();
    });
    await using script = await startScript(
      "proxy_server.ts",
      ["--port", "0", "--mode", mode, "--quiet", "--upstream", `127.0.0.1:${origin.port}`],
      { permissions: MODE_PERMISSIONS[mode] },
    );
    const pid = script.process.pid;
    const idle = treeRss(pid);
    let peak = idle;
    const sampler = setInterval(() => peak = Math.max(peak, treeRss(pid)), 25);
    const conn = await Deno.connect({ port: script.port });
    try {
      // Read nothing until the origin cannot send any more: every buffer on the way is full.
      let before = -1;
      while (sent !== before) {
        before = sent;
        await new Promise((resolve) => setTimeout(resolve, 300));
      }
      const stalledAt = sent;
      const stalledGrowth = treeRss(pid) - idle;
      // Socket buffers on the way may hold up to ~72 MiB here (tcp_rmem/tcp_wmem maxima);
      // a proxy that kept reading would let the origin send all 400 MiB.
      assert.ok(stalledAt < 100 * MIB, `the origin got ${stalledAt} B out to a stalled client`);
      assert.ok(stalledGrowth < MEMORY_HEADROOM_BYTES, `grew ${stalledGrowth} B while stalled`);

      const got = await drain(conn);
      assert.equal(got.bytes, STALL_STREAM_BYTES);
      assert.equal(got.sha256, sentHash.digest("hex"));
      clearInterval(sampler);
      console.log(
        `${mode}: stalled after ${(stalledAt / MIB).toFixed(1)} MiB from the origin; memory +${
          (stalledGrowth / MIB).toFixed(1)
        } MiB stalled, +${((peak - idle) / MIB).toFixed(1)} MiB at peak over ${
          (idle / MIB).toFixed(1)
        } MiB idle`,
      );
      assert.ok(peak - idle < MEMORY_HEADROOM_BYTES, `peaked at +${peak - idle} B`);
    } finally {
      clearInterval(sampler);
      conn.close();
    }
  });

  Deno.test(`proxy_server.ts --mode ${mode}: file descriptors level off over 300 connections`, async () => {
    await using origin = await startOrigin();
    await using script = await startScript(
      "proxy_server.ts",
      ["--port", "0", "--mode", mode, "--quiet", "--upstream", `127.0.0.1:${origin.addr.port}`],
      { permissions: MODE_PERMISSIONS[mode] },
    );
    await assertFdsLevelOff(script.process.pid, async () => {
      const reply = await exchange(script.port, getRequest("/"));
      assert.equal(parseResponse(reply.received).status, "HTTP/1.0 200 OK");
    });
    assert.equal(origin.requests(), 300);
  });
}

Deno.test(
  { name: "curl fetches a page through proxy_server.ts", ignore: !haveCommand("curl") },
  async () => {
    const page = randomBytes(300_000, 77);
    await using origin = await startOrigin({ pages: { "/file.bin": page } });
    await using script = await startScript("proxy_server.ts", [
      "--port",
      "0",
      "--upstream",
      `127.0.0.1:${origin.addr.port}`,
    ]);
    const curl = await new Deno.Command("curl", {
      args: [
        "--silent",
        "--show-error",
        "--max-time",
        "10",
        `http://127.0.0.1:${script.port}/file.bin`,
      ],
      stdout: "piped",
      stderr: "piped",
    }).output();
    assert.equal(curl.code, 0, decoder.decode(curl.stderr));
    assert.equal(curl.stdout.length, page.length);
    assert.equal(sha256(curl.stdout), sha256(page));
    const closed = await script.waitFor(/^Closed /, 5000);
    assert.match(
      closed,
      /^Closed 127\.0\.0\.1:\d+ <-> 127\.0\.0\.1:\d+ \(client finished first, then upstream\): \d+ B to upstream, 293\.\d KiB back/,
    );
    assert.ok(script.lines.some((l) => /request: "GET \/file\.bin HTTP\/1\.1\\r\\n/.test(l)));
  },
);

Deno.test("proxy_server.ts: bad flags print one line and the usage, and exit 2", async () => {
  for (
    const args of [
      ["--port", "http"],
      ["--mode", "threads"],
      ["--upstream", "a:b:c"],
      ["--upstream", "127.0.0.1:0"],
      ["--idle-timeout", "0"],
      ["--connect-timeout", "soon"],
      ["--max-conns", "0"],
      ["--colour"],
    ]
  ) {
    const run = await runScript("proxy_server.ts", args);
    assert.equal(run.code, 2, `${args.join(" ")}: ${run.stderr}`);
    const [first, second] = run.stderr.split("\n");
    assert.match(first, /^error: /);
    assert.match(second, /^usage: deno run --allow-net proxy_server\.ts/);
    assert.equal(run.stdout.length, 0);
  }
});

Deno.test("proxy_server.ts stops on SIGTERM with exit code 0", async () => {
  const script = await startScript("proxy_server.ts", ["--port", "0", "--upstream", "127.0.0.1:9"]);
  const status = await script.stop();
  assert.equal(status.code, 0);
  assert.ok(
    script.lines.some((l) => /listening on 127\.0\.0\.1:\d+, relaying to 127\.0\.0\.1:9/.test(l)),
  );
});

// ---------------------------------------------------------------------------
// Bad input in relay mode.

Deno.test("startProxyServer() refuses an upstream that is the proxy itself, at start", async () => {
  const probe = listenOn();
  const port = probe.addr.port;
  probe.close();
  // A proxy relaying to itself would connect to itself for each client, without end.
  assert.throws(
    () => startProxyServer({ port, upstream: { hostname: "127.0.0.1", port } }),
    /--upstream 127\.0\.0\.1:\d+ is this proxy itself/,
  );
  // Nothing is left listening: the port can be taken again at once.
  listenOn({ port }).close();

  const run = await runScript("proxy_server.ts", [
    "--port",
    String(port),
    "--upstream",
    `localhost:${port}`,
  ]);
  assert.equal(run.code, 1, run.stderr);
  assert.match(run.stderr, /^error: --upstream localhost:\d+ is this proxy itself: /);
  assert.equal(run.stderr.trim().split("\n").length, 1);
});

Deno.test("isSelfUpstream(): the same port on our address, loopback, or any address", async () => {
  const { isSelfUpstream } = await import("../proxy_server.ts");
  const at = (hostname: string): Deno.NetAddr => ({ transport: "tcp", hostname, port: 8080 });
  assert.ok(isSelfUpstream({ hostname: "127.0.0.1", port: 8080 }, at("127.0.0.1")));
  assert.ok(isSelfUpstream({ hostname: "localhost", port: 8080 }, at("127.0.0.1")));
  assert.ok(isSelfUpstream({ hostname: "127.0.0.2", port: 8080 }, at("0.0.0.0")));
  assert.ok(isSelfUpstream({ hostname: "0.0.0.0", port: 8080 }, at("127.0.0.1")));
  assert.ok(isSelfUpstream({ hostname: "::1", port: 8080 }, at("::1")));
  assert.ok(!isSelfUpstream({ hostname: "127.0.0.1", port: 8000 }, at("127.0.0.1")));
  assert.ok(!isSelfUpstream({ hostname: "127.0.0.2", port: 8080 }, at("127.0.0.1")));
  assert.ok(!isSelfUpstream({ hostname: "www.google.com", port: 8080 }, at("127.0.0.1")));
});

/** Why the offline test cannot run here, or `null`: it needs an empty network namespace. */
const noNetns = Deno.build.os !== "linux"
  ? "network namespaces need Linux"
  : Deno.uid() !== 0
  ? "unshare --net needs root"
  : !haveCommand("unshare") || !haveCommand("ip")
  ? "unshare (util-linux) or ip (iproute2) is missing"
  : null;

Deno.test({
  name:
    `proxy_server.ts with the default upstream and no network: the log says why the client got nothing${
      noNetns ? ` (skipped: ${noNetns})` : ""
    }`,
  ignore: noNetns !== null,
  async fn() {
    // An empty network namespace is offline for sure, whatever this machine can reach: only
    // its own loopback exists there, so the port is free and no DNS server answers.
    const log = await Deno.makeTempFile({ prefix: "offline_proxy_", suffix: ".log" });
    const script = [
      "ip link set lo up",
      `"${Deno.execPath()}" run --quiet --allow-net proxy_server.ts --port 18090 > "${log}" 2>&1 & pid=$!`,
      `for i in $(seq 100); do grep -q listening "${log}" && break; sleep 0.1; done`,
      'curl --silent --show-error --max-time 20 http://127.0.0.1:18090/; echo "curl exit $?"',
      `sleep 0.5; kill $pid; wait $pid; cat "${log}"`,
    ].join("\n");
    const out = await new Deno.Command("unshare", {
      args: ["--net", "sh", "-c", script],
      cwd: projectPath("."),
      stdout: "piped",
      stderr: "piped",
      signal: AbortSignal.timeout(60_000),
    }).output().finally(() => Deno.remove(log));
    const text = decoder.decode(out.stdout);
    assert.match(text, /curl exit 52/, `${text}\n${decoder.decode(out.stderr)}`);
    assert.match(
      text,
      /^127\.0\.0\.1:\d+: no relay, cannot resolve host "www\.google\.com" \(no DNS or no network here\?\); closed the client after [\d.]+ ms \(offline\? start a local web server and give --upstream 127\.0\.0\.1:PORT\)$/m,
    );
  },
});
