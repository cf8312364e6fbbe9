/**
 * The hostile-client suite: every server against clients that misbehave on
 * purpose, while a well-behaved client goes on being served.
 *
 * 1. A reset storm (`bench/reset_storm.py`: connections reset with
 *    SO_LINGER 0, 300 a second) against echo_server.ts and proxy_server.ts
 *    in every mode, the tracker and a peer's file server: a good client's
 *    exchanges, one after another, each answered within a few seconds.
 * 2. A client that writes 1-byte segments and never reads: the memory of the
 *    server and its children stays down, and the server serves others after.
 * 3. An upstream that resets in the middle of a reply the proxy relays: the
 *    client sees the end instead of hanging, and the proxy keeps serving.
 *    And a client that resets while its upstream is stalled: the proxy
 *    closes that upstream at once, not after its idle timeout.
 * 4. A child process killed with SIGKILL while it echoes for several
 *    clients: no client hangs, the other child's clients get their echo, the
 *    pool is whole again.
 * 5. 1,000 connections to the tracker that never send a byte: a real peer is
 *    answered meanwhile, and the tracker closes all 1,000 after its timeout.
 *
 * Every wait is bounded and every bound generous: they catch a hang or a
 * stall of seconds, not a slow machine.
 */

import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { type ResetStorm, startResetStorm as startStorm } from "../bench/servers.ts";
import { startEchoServer } from "../echo_server.ts";
import { MODE_PERMISSIONS, MODES } from "../lib/concurrency.ts";
import { LineReader } from "../lib/lines.ts";
import { closeQuietly, READ_BUFFER_BYTES, writeAll } from "../lib/net.ts";
import { startOrigin } from "../lib/origin.ts";
import { peerPermissions } from "../p2p/peer.ts";
import { DIRECTORY_MAX_LINE_BYTES, encodeLine, parseDirectory } from "../p2p/protocol.ts";
import { startTracker } from "../p2p/tracker.ts";
import { startProxyServer } from "../proxy_server.ts";
import {
  childrenOf,
  exchange,
  haveCommand,
  randomBytes,
  readAll,
  rssBytes,
  sha256,
  startRawOrigin,
  startScript,
  waitUntil,
  withTimeout,
} from "./helpers.ts";
import { putFile, tempFolder } from "./p2p_helpers.ts";

const MIB = 1024 * 1024;
const encoder = new TextEncoder();
const decoder = new TextDecoder();
const delay = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

// ---------------------------------------------------------------------------
// Shared plumbing.

/**
 * Connects to `port` and runs `talk` on the connection; rejects with `what`
 * once `ms` have passed, closing the connection (or abandoning the connect)
 * so that nothing is left open behind a failed test.
 */
async function talkWithin<T>(
  port: number,
  ms: number,
  what: string,
  talk: (conn: Deno.TcpConn) => Promise<T>,
): Promise<T> {
  const abort = new AbortController();
  let conn: Deno.TcpConn | undefined;
  const timer = setTimeout(() => {
    abort.abort();
    if (conn) closeQuietly(conn);
  }, ms);
  try {
    conn = await Deno.connect({ hostname: "127.0.0.1", port, signal: abort.signal });
    if (abort.signal.aborted) throw new Error("aborted");
    return await talk(conn);
  } catch (err) {
    if (abort.signal.aborted) throw new Error(`${what} took over ${ms} ms`);
    throw err;
  } finally {
    clearTimeout(timer);
    if (conn) closeQuietly(conn);
  }
}

/** Resolves with whether `promise` settled within `ms`. */
async function settlesWithin(promise: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    return await Promise.race([
      promise.then(() => true, () => true),
      new Promise<boolean>((resolve) => timer = setTimeout(() => resolve(false), ms)),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

/** Resident memory of a process and its direct children; a child that exits meanwhile counts 0. */
function treeRss(pid: number): number {
  let sum = 0;
  for (const p of [pid, ...childrenOf(pid)]) {
    try {
      sum += rssBytes(p);
    } catch {
      // It exited between the listing and the read.
    }
  }
  return sum;
}

/** A GET as the lab's client sends it: HTTP/1.0, so the origin closes after the reply. */
const GET_ROOT = encoder.encode("GET / HTTP/1.0\r\nHost: www.google.com\r\n\r\n");

/** The status line of an HTTP reply. */
function statusLine(reply: Uint8Array): string {
  const text = decoder.decode(reply.subarray(0, Math.min(reply.length, 256)));
  return text.slice(0, Math.max(0, text.indexOf("\r\n")));
}

// ---------------------------------------------------------------------------
// 1. Reset storm.

/** Resets per second asked of reset_storm.py. */
const STORM_RATE = 300;
/** The storm's own time limit, in seconds, should the end of its stdin go astray. */
const STORM_MAX_SECONDS = 60;
/** Milliseconds the storm may take to start, and to stop and report. */
const STORM_START_STOP_MS = 10_000;
/** Good exchanges, one after another, beside the storm. */
const GOOD_EXCHANGES = 30;
/** Milliseconds one good exchange may take beside the storm (a few ms without it). */
const EXCHANGE_BOUND_MS = 3_000;
/** Milliseconds all the good exchanges together may take. */
const ALL_EXCHANGES_BOUND_MS = 20_000;
/** Milliseconds the storm runs alone first, and between two good exchanges: it must overlap them. */
const STORM_LEAD_MS = 300;
const GOOD_EXCHANGE_GAP_MS = 50;
/** Resets per second the storm must reach for the test to count: it did hit the server. */
const STORM_FLOOR_PER_SEC = 200;

/** Starts the bench's reset storm against `port`, at the rate and limits above. */
function startResetStorm(port: number): Promise<ResetStorm> {
  return startStorm(port, {
    rate: STORM_RATE,
    maxSeconds: STORM_MAX_SECONDS,
    startStopMs: STORM_START_STOP_MS,
  });
}

/**
 * Runs {@linkcode GOOD_EXCHANGES} good exchanges one after another on fresh
 * connections to `port` while a reset storm runs against the same port;
 * each must finish within {@linkcode EXCHANGE_BOUND_MS}, all of them within
 * {@linkcode ALL_EXCHANGES_BOUND_MS}.
 */
async function goodExchangesBesideStorm(
  label: string,
  port: number,
  talk: (conn: Deno.TcpConn) => Promise<void>,
): Promise<void> {
  await using storm = await startResetStorm(port);
  await delay(STORM_LEAD_MS);
  const started = performance.now();
  for (let i = 1; i <= GOOD_EXCHANGES; i++) {
    // Spread over a second and a half, as a person's client would, so the storm goes on throughout.
    if (i > 1) await delay(GOOD_EXCHANGE_GAP_MS);
    await talkWithin(
      port,
      EXCHANGE_BOUND_MS,
      `good exchange ${i} of ${GOOD_EXCHANGES} beside the reset storm`,
      talk,
    );
    const spent = performance.now() - started;
    assert.ok(
      spent < ALL_EXCHANGES_BOUND_MS,
      `${i} good exchanges took ${spent.toFixed(0)} ms beside the reset storm`,
    );
  }
  const spent = performance.now() - started;
  const report = await storm.stop();
  console.log(
    `${label}: ${GOOD_EXCHANGES} good exchanges in ${spent.toFixed(0)} ms beside ` +
      `${report.resetsPerSec} resets/s (${report.failures} storm connects failed)`,
  );
  // Guards the test itself: a storm that fell short says nothing about the server.
  assert.ok(
    report.resetsPerSec >= STORM_FLOOR_PER_SEC,
    `the storm reached only ${report.resetsPerSec} resets/s (first error: ${report.firstError})`,
  );
}

/** The echo cycle: 1 KiB, half-close, the same 1 KiB back. */
async function echoTalk(conn: Deno.TcpConn): Promise<void> {
  const data = randomBytes(1024, 21);
  await writeAll(conn, data);
  await conn.closeWrite();
  assert.deepEqual(await readAll(conn), data);
}

/** A GET through the proxy to a local origin: a 200 comes back. */
async function httpTalk(conn: Deno.TcpConn): Promise<void> {
  await writeAll(conn, GET_ROOT);
  assert.match(statusLine(await readAll(conn)), /^HTTP\/1\.[01] 200 /);
}

/** A real peer's Init: one line out, the directory line back. */
async function initTalk(conn: Deno.TcpConn): Promise<void> {
  await writeAll(conn, encodeLine({ port: 8001, files: [] }));
  const line = await new LineReader(conn, DIRECTORY_MAX_LINE_BYTES).readLine();
  assert.notEqual(line, null, "the tracker closed the connection without answering the Init");
  parseDirectory(line!);
}

const PYTHON = haveCommand("python3");
const NO_PYTHON = "SKIPPED because python3 is not installed (the storm is bench/reset_storm.py)";

for (const script of ["echo_server.ts", "proxy_server.ts"] as const) {
  for (const mode of MODES) {
    const what = `${script} --mode ${mode} beside a reset storm`;
    Deno.test({
      name: PYTHON
        ? `${what}: a good client's ${GOOD_EXCHANGES} exchanges are each served within seconds`
        : `${what}: ${NO_PYTHON}`,
      ignore: !PYTHON,
      async fn() {
        await using origin = script === "proxy_server.ts" ? await startOrigin() : null;
        const upstream = origin ? ["--upstream", `127.0.0.1:${origin.addr.port}`] : [];
        await using server = await startScript(
          script,
          ["--port", "0", "--mode", mode, "--quiet", "--workers", "2", ...upstream],
          { permissions: MODE_PERMISSIONS[mode] },
        );
        await goodExchangesBesideStorm(
          `${script} ${mode}`,
          server.port,
          script === "echo_server.ts" ? echoTalk : httpTalk,
        );
      },
    });
  }
}

Deno.test({
  name: PYTHON
    ? `p2p/tracker.ts beside a reset storm: ${GOOD_EXCHANGES} real peers' Init lines are each answered within seconds`
    : `p2p/tracker.ts beside a reset storm: ${NO_PYTHON}`,
  ignore: !PYTHON,
  async fn() {
    await using tracker = await startScript("p2p/tracker.ts", [
      "--port",
      "0",
      "--http-port",
      "0",
      "--quiet",
    ]);
    await goodExchangesBesideStorm("p2p/tracker.ts", tracker.port, initTalk);
  },
});

Deno.test({
  name: PYTHON
    ? `p2p/peer.ts's file server beside a reset storm: ${GOOD_EXCHANGES} file requests are each answered within seconds`
    : `p2p/peer.ts's file server beside a reset storm: ${NO_PYTHON}`,
  ignore: !PYTHON,
  async fn() {
    await using folder = await tempFolder("hostile_peer_");
    const file = randomBytes(64 * 1024, 33);
    await putFile(folder.path, "shared.bin", file, 1700000000);
    // The peer syncs with a tracker of its own; only its file server is under test.
    await using tracker = await startTracker({ httpPort: null, quiet: true, log: () => {} });
    await using peer = await startScript(
      "p2p/peer.ts",
      [
        "127.0.0.1",
        String(tracker.addr.port),
        "--dir",
        folder.path,
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--quiet",
      ],
      { permissions: peerPermissions(folder.path, "async") },
    );
    await goodExchangesBesideStorm("p2p/peer.ts", peer.port, async (conn) => {
      await writeAll(conn, encoder.encode("shared.bin\n"));
      const reply = await readAll(conn);
      const header = `Content-Length: ${file.length}\n`;
      assert.equal(decoder.decode(reply.subarray(0, header.length)), header);
      assert.equal(sha256(reply.subarray(header.length)), sha256(file));
    });
  },
});

// ---------------------------------------------------------------------------
// 2. Tiny segments, never read.

/** Seconds the tiny-segment client writes. */
const TINY_SECONDS = 2.5;
/**
 * Bulk bytes the client adds every {@linkcode FILL_EVERY_MS} (see floodTinySegments): twice
 * as much through the proxy, whose way back holds two connections' buffers.
 */
const FILL_CHUNK_BYTES = { "echo_server.ts": 64 * 1024, "proxy_server.ts": 128 * 1024 };
const FILL_EVERY_MS = 10;
/** Milliseconds between two looks at the server's memory. */
const SAMPLE_EVERY_MS = 100;
/** Memory growth allowed while the tiny-segment client writes (server and children). */
const TINY_GROWTH_BOUND_BYTES = 64 * MIB;

/**
 * One client that writes 1-byte segments (TCP_NODELAY) as fast as it can for
 * `seconds` and never reads; closes (a reset, with the echo unread) at the end.
 *
 * With `fillBytes`, it also writes that many bytes every 10 ms. 1-byte
 * segments alone fill the buffers on the way back (the echo the client never
 * reads) only after about 8 s here; until then a server keeps up and holds
 * nothing. The bulk fills them within a second or two, and the 1-byte
 * segments keep arriving between the bulk writes: a relay whose window
 * counts payload bytes then queues a message (and a read buffer) per
 * segment. Counted that way, worker mode grew by over 100 MiB here.
 */
async function floodTinySegments(
  port: number,
  seconds: number,
  fillBytes = 0,
): Promise<{ tinyWrites: number; filled: number }> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  conn.setNoDelay(true);
  const one = Uint8Array.of(0x2e);
  const chunk = randomBytes(fillBytes, 44);
  let stop = false;
  let tinyWrites = 0;
  let filled = 0;
  const tiny = (async () => {
    try {
      while (!stop) tinyWrites += await conn.write(one);
    } catch {
      // Closed under a write that waited: the end of the run.
    }
  })();
  const bulk = (async () => {
    try {
      while (fillBytes > 0 && !stop) {
        filled += await conn.write(chunk);
        await delay(FILL_EVERY_MS);
      }
    } catch {
      // Likewise.
    }
  })();
  await delay(seconds * 1000);
  stop = true;
  conn.close();
  await Promise.all([tiny, bulk]);
  return { tinyWrites, filled };
}

for (const script of ["echo_server.ts", "proxy_server.ts"] as const) {
  for (const mode of MODES) {
    Deno.test(`${script} --mode ${mode}: a client sending 1-byte segments and never reading holds memory down`, async () => {
      // The proxy relays to an echo server, so that what it relays comes back towards the client.
      await using upstream = script === "proxy_server.ts"
        ? await startEchoServer({ quiet: true, log: () => {} })
        : null;
      // A short idle timeout: a relay whose client reset while its upstream was stalled waits
      // for it (see the test of exactly that below), and so does stopping the proxy.
      const upstreamArgs = upstream
        ? ["--upstream", `127.0.0.1:${upstream.addr.port}`, "--idle-timeout", "5"]
        : [];
      await using server = await startScript(
        script,
        ["--port", "0", "--mode", mode, "--quiet", "--workers", "2", ...upstreamArgs],
        { permissions: MODE_PERMISSIONS[mode] },
      );
      const pid = server.process.pid;
      // Warm first: the growth should be what the server holds for the client, not the code
      // and heap its first connections bring in.
      for (let i = 0; i < 2; i++) {
        const data = randomBytes(MIB, 50 + i);
        assert.equal((await exchange(server.port, data, { keep: false })).sha256, sha256(data));
      }
      await floodTinySegments(server.port, 0.5);
      await delay(300);
      const baseline = treeRss(pid);
      let peak = baseline;
      const sampler = setInterval(() => peak = Math.max(peak, treeRss(pid)), SAMPLE_EVERY_MS);
      let sent;
      try {
        sent = await floodTinySegments(server.port, TINY_SECONDS, FILL_CHUNK_BYTES[script]);
      } finally {
        clearInterval(sampler);
      }
      peak = Math.max(peak, treeRss(pid));
      const growth = peak - baseline;
      console.log(
        `${script} ${mode}: +${(growth / MIB).toFixed(1)} MiB over ${
          (baseline / MIB).toFixed(1)
        } MiB while ${sent.tinyWrites} 1-byte and ${
          (sent.filled / MIB).toFixed(1)
        } MiB bulk writes went out`,
      );
      assert.ok(
        growth < TINY_GROWTH_BOUND_BYTES,
        `memory grew by ${(growth / MIB).toFixed(1)} MiB (bound ${
          TINY_GROWTH_BOUND_BYTES / MIB
        } MiB)`,
      );
      // The server goes on serving.
      const data = randomBytes(MIB, 52);
      const got = await withTimeout(
        exchange(server.port, data, { keep: false }),
        10_000,
        "an echo after the tiny-segment client",
      );
      assert.equal(got.sha256, sha256(data));
    });
  }
}

// ---------------------------------------------------------------------------
// 3. Upstream reset in the middle of a relay.

/** Milliseconds a write may wait before the way to its reader counts as full. */
const STALLED_AFTER_MS = 500;
/** Most bytes sent while filling a way (far more than socket buffers hold). */
const FILL_MAX_BYTES = 256 * MIB;
/** Milliseconds the client may wait for the upstream's reset, and then for the end of its reply. */
const END_BOUND_MS = 10_000;

/**
 * Writes `chunk` over and over until a write has waited
 * {@linkcode STALLED_AFTER_MS} (every buffer towards the reader is full) or
 * {@linkcode FILL_MAX_BYTES} went out; resolves with the bytes written and
 * the write still waiting, if any (it fails once the connection is closed).
 */
async function writeUntilStalled(
  conn: Deno.Conn,
  chunk: Uint8Array,
): Promise<{ written: number; waiting: Promise<unknown> | null }> {
  let written = 0;
  while (written < FILL_MAX_BYTES) {
    const write = conn.write(chunk);
    if (!await settlesWithin(write, STALLED_AFTER_MS)) {
      return { written, waiting: write.catch(() => {}) };
    }
    written += await write;
  }
  return { written, waiting: null };
}

/** Reads to the end of a connection; resolves with the bytes read and how it ended. */
async function readToEnd(conn: Deno.Conn): Promise<{ bytes: number; end: string }> {
  const buffer = new Uint8Array(READ_BUFFER_BYTES);
  let bytes = 0;
  try {
    while (true) {
      const n = await conn.read(buffer);
      if (n === null) return { bytes, end: "eof" };
      bytes += n;
    }
  } catch (err) {
    return { bytes, end: err instanceof Deno.errors.ConnectionReset ? "reset" : String(err) };
  }
}

for (const mode of MODES) {
  Deno.test(`startProxyServer() in ${mode} mode: an upstream that resets mid-reply ends the client's reply, and serving goes on`, async () => {
    const lines: string[] = [];
    let resetAfter = -1;
    let upstreamReset!: () => void;
    const reset = new Promise<void>((resolve) => upstreamReset = resolve);
    await using origin = startRawOrigin(async (conn, index) => {
      if (index > 0) {
        // Later clients: a short page, as a web server sends it.
        await conn.read(new Uint8Array(64 * 1024));
        await writeAll(conn, encoder.encode("HTTP/1.0 200 OK\r\n\r\nstill here\n"));
        await conn.closeWrite();
        return;
      }
      // The first client: take one chunk of its upload and leave the rest unread, stream a
      // reply until the way to the client is full, then close. With data unread, the kernel
      // sends a reset instead of a normal end, and drops the part of the reply not yet sent.
      await conn.read(new Uint8Array(16 * 1024));
      const { written, waiting } = await writeUntilStalled(conn, randomBytes(256 * 1024, 61));
      conn.close();
      await waiting;
      resetAfter = written;
      upstreamReset();
    });
    await using proxy = await startProxyServer({
      mode,
      poolSize: 2,
      log: (line) => lines.push(line),
      upstream: { hostname: "127.0.0.1", port: origin.port },
    });
    const conn = await Deno.connect({ hostname: "127.0.0.1", port: proxy.addr.port });
    try {
      const upload = new Uint8Array(256 * 1024);
      upload.set(GET_ROOT);
      const sending = writeAll(conn, upload).catch(() => {});
      // Read nothing until the upstream has reset: the reply is then cut short for sure.
      await withTimeout(reset, END_BOUND_MS, "the upstream's reset");
      const got = await withTimeout(readToEnd(conn), END_BOUND_MS, "the end of the cut reply");
      await sending;
      assert.ok(["eof", "reset"].includes(got.end), `the reply ended with ${got.end}`);
      assert.ok(got.bytes < resetAfter, `${got.bytes} B arrived of ${resetAfter} B sent`);
    } finally {
      conn.close();
    }
    await waitUntil(() => proxy.stats.active === 0, 5000, "the relay to be released");
    await waitUntil(() => lines.some((l) => l.startsWith("Closed")), 5000, "the close line");
    assert.match(lines.find((l) => l.startsWith("Closed"))!, /upstream (reset|went away)/);
    // The proxy goes on relaying.
    const reply = await withTimeout(
      exchange(proxy.addr.port, GET_ROOT),
      10_000,
      "a page after the reset",
    );
    assert.equal(decoder.decode(reply.received), "HTTP/1.0 200 OK\r\n\r\nstill here\n");
  });
}

/** Milliseconds the proxy may take to close the upstream of a client that reset. */
const RELEASE_BOUND_MS = 10_000;
/** The proxy's idle timeout there: twice the bound, so that only a prompt close passes. */
const RELEASE_IDLE_TIMEOUT_SECONDS = 20;

for (const mode of MODES) {
  Deno.test(`startProxyServer() in ${mode} mode: a client that resets while its upstream is stalled gets that upstream closed at once`, async () => {
    const lines: string[] = [];
    await using upstream = await startEchoServer({ quiet: true, log: () => {} });
    await using proxy = await startProxyServer({
      mode,
      poolSize: 2,
      idleTimeoutSeconds: RELEASE_IDLE_TIMEOUT_SECONDS,
      log: (line) => lines.push(line),
      upstream: { hostname: "127.0.0.1", port: upstream.addr.port },
    });
    const conn = await Deno.connect({ hostname: "127.0.0.1", port: proxy.addr.port });
    // Send without reading until nothing more goes in: the echo coming back fills every buffer
    // on the way, the upstream stops reading, and the proxy's write to it waits.
    let filled;
    try {
      filled = await writeUntilStalled(conn, randomBytes(256 * 1024, 91));
    } finally {
      // With the echo unread, closing sends a reset.
      conn.close();
    }
    await filled.waiting;
    assert.ok(filled.waiting, `the proxy took all ${filled.written} B without stalling`);
    await waitUntil(
      () => upstream.stats.active === 0 && proxy.stats.active === 0,
      RELEASE_BOUND_MS,
      "the proxy to close the relay and its upstream connection",
      () => `upstream connections ${upstream.stats.active}, relays ${proxy.stats.active}`,
    );
    assert.match(lines.find((l) => l.startsWith("Closed")) ?? "", /client (reset|went away)/);
  });
}

// ---------------------------------------------------------------------------
// 4. A child killed under load.

/** Clients streaming to the process-mode echo server when one child is killed. */
const KILL_CLIENTS = 10;
/** What each of them sends (and expects back). */
const KILL_CLIENT_BYTES = 8 * MIB;
/** Milliseconds a client may take in all, the kill included, before it counts as hung. */
const KILL_CLIENT_BOUND_MS = 30_000;

/** How one streaming client ended. */
interface StreamOutcome {
  bytes: number;
  sha256: string;
  error: string | null;
  hung: boolean;
}

/**
 * Sends `data`, half-closes and reads the echo to the end, concurrently,
 * counting bytes received into `progress[index]`; any error ends it. After
 * `boundMs` it closes the connection and reports itself hung.
 */
async function streamEcho(
  port: number,
  data: Uint8Array,
  progress: number[],
  index: number,
  boundMs: number,
): Promise<StreamOutcome> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  let hung = false;
  const timer = setTimeout(() => {
    hung = true;
    closeQuietly(conn);
  }, boundMs);
  const sending = (async () => {
    try {
      for (let at = 0; at < data.length; at += 256 * 1024) {
        await writeAll(conn, data.subarray(at, at + 256 * 1024));
      }
      await conn.closeWrite();
      return null;
    } catch (err) {
      return String(err);
    }
  })();
  const hash = createHash("sha256");
  const buffer = new Uint8Array(READ_BUFFER_BYTES);
  let bytes = 0;
  let error: string | null = null;
  try {
    while (true) {
      const n = await conn.read(buffer);
      if (n === null) break;
      hash.update(buffer.subarray(0, n));
      bytes += n;
      progress[index] = bytes;
    }
  } catch (err) {
    error = String(err);
  } finally {
    clearTimeout(timer);
    closeQuietly(conn);
  }
  const sendError = await sending;
  return { bytes, sha256: hash.digest("hex"), error: error ?? sendError, hung };
}

Deno.test("startEchoServer() in process mode: a child killed with SIGKILL under load costs only its own clients, and is replaced", async () => {
  const lines: string[] = [];
  await using server = await startEchoServer({
    mode: "process",
    poolSize: 2,
    quiet: true,
    log: (line) => lines.push(line),
  });
  const before = server.childPids();
  assert.equal(before.length, 2);
  const data = randomBytes(KILL_CLIENT_BYTES, 71);
  const progress = new Array<number>(KILL_CLIENTS).fill(0);
  const clients = Array.from(
    { length: KILL_CLIENTS },
    (_, i) => streamEcho(server.addr.port, data, progress, i, KILL_CLIENT_BOUND_MS),
  );
  // Every client is in the middle of its echo: then one child dies at once.
  await waitUntil(
    () => progress.every((n) => n >= 64 * 1024),
    10_000,
    "every client to get some echo back",
    () => `received so far: ${progress.join(", ")}`,
  );
  Deno.kill(before[0], "SIGKILL");
  const outcomes = await Promise.all(clients);
  const full = outcomes.filter((o) => !o.error && o.bytes === data.length).length;
  const cut = outcomes.filter((o) => o.bytes < data.length || o.error).length;
  const summary = outcomes.map((o, i) => `client ${i}: ${o.bytes} B, ${o.error ?? "ok"}`).join(
    "\n",
  );
  assert.equal(outcomes.filter((o) => o.hung).length, 0, `a client hung:\n${summary}`);
  for (const o of outcomes) {
    // Either the whole echo, byte for byte, or an end short of it: never wrong bytes in full.
    if (o.bytes === data.length && !o.error) assert.equal(o.sha256, sha256(data));
  }
  assert.ok(full >= 1, `no client got its full echo:\n${summary}`);
  assert.ok(cut >= 1, `the kill cut no client short (the test missed its moment):\n${summary}`);
  assert.equal(full + cut, KILL_CLIENTS);

  await waitUntil(
    () => server.stats.restarts >= 1 && server.childPids().length === 2,
    15_000,
    "the pool to be refilled",
    () => `children ${server.childPids().join(", ")}, restarts ${server.stats.restarts}`,
  );
  const after = server.childPids();
  assert.ok(!after.includes(before[0]), `the killed child ${before[0]} is still listed`);
  assert.ok(after.some((pid) => !before.includes(pid)), "no new child");
  // New clients are served, on both children.
  for (let i = 0; i < 4; i++) {
    const small = randomBytes(MIB, 80 + i);
    const got = await withTimeout(
      exchange(server.addr.port, small, { keep: false }),
      10_000,
      `echo ${i + 1} after the kill`,
    );
    assert.equal(got.sha256, sha256(small));
  }
});

// ---------------------------------------------------------------------------
// 5. Silent connections against the tracker.

/** Connections that never send a byte. */
const SILENT_CONNS = 1000;
/** File descriptors the test needs: both ends of each silent connection live in this process. */
const SILENT_FDS_NEEDED = 2 * SILENT_CONNS + 1000;
/** Connections opened at once. */
const CONNECT_BATCH = 100;
/** The tracker's peer timeout there, in seconds: long enough to open them all and ask beside them. */
const SILENT_PEER_TIMEOUT_SECONDS = 2;
/** Milliseconds the tracker may take to close them all (it should take its timeout plus a sweep). */
const SILENT_CLOSE_BOUND_MS = 15_000;

/** This process's limit on open files (Deno raises its soft limit to the hard one at start). */
function openFileLimit(): number {
  try {
    const limits = Deno.readTextFileSync("/proc/self/limits");
    const soft = /^Max open files\s+(\S+)/m.exec(limits)?.[1];
    return soft === "unlimited" ? Infinity : Number(soft ?? 0);
  } catch {
    return 0;
  }
}

const FILE_LIMIT = openFileLimit();
const SILENT_NAME =
  `startTracker() with ${SILENT_CONNS} silent connections answers a real peer, then closes all of them`;

Deno.test({
  name: FILE_LIMIT >= SILENT_FDS_NEEDED
    ? SILENT_NAME
    : `${SILENT_NAME}: SKIPPED because the open-file limit is ${FILE_LIMIT} (needs ${SILENT_FDS_NEEDED}; raise ulimit -n)`,
  ignore: FILE_LIMIT < SILENT_FDS_NEEDED,
  async fn() {
    await using tracker = await startTracker({
      httpPort: null,
      peerTimeoutSeconds: SILENT_PEER_TIMEOUT_SECONDS,
      sweepIntervalSeconds: 0.2,
      quiet: true,
      log: () => {},
    });
    const port = tracker.addr.port;
    const conns: Deno.TcpConn[] = [];
    const closedByTracker: Promise<boolean>[] = [];
    const ourClose = new Set<Deno.TcpConn>();
    // A silent connection's read ends only when the tracker closes it (or we do, at the bound).
    const watch = async (conn: Deno.TcpConn) => {
      const buffer = new Uint8Array(1024);
      try {
        while ((await conn.read(buffer)) !== null) {
          // The tracker sends nothing unasked.
        }
      } catch {
        // A reset is a close too.
      }
      return !ourClose.has(conn);
    };
    const giveUp = setTimeout(() => {
      for (const conn of conns) {
        ourClose.add(conn);
        closeQuietly(conn);
      }
    }, SILENT_CLOSE_BOUND_MS);
    try {
      for (let first = 0; first < SILENT_CONNS; first += CONNECT_BATCH) {
        const batch = await Promise.all(
          Array.from(
            { length: CONNECT_BATCH },
            () => Deno.connect({ hostname: "127.0.0.1", port }),
          ),
        );
        for (const conn of batch) {
          conns.push(conn);
          closedByTracker.push(watch(conn));
        }
      }
      // A real peer's Init is answered while they are open.
      await waitUntil(
        () => tracker.stats().counters.connections === SILENT_CONNS,
        10_000,
        "the tracker to accept every silent connection",
        () => `${tracker.stats().counters.connections} accepted`,
      );
      const openBeside = tracker.stats().counters.openConnections;
      await talkWithin(port, 5_000, "a real peer's Init beside the silent connections", initTalk);
      assert.ok(
        openBeside >= SILENT_CONNS / 2,
        `only ${openBeside} silent connections were still open when the peer asked`,
      );

      const closed = await Promise.all(closedByTracker);
      assert.equal(
        closed.filter((c) => c).length,
        SILENT_CONNS,
        "every silent connection was closed by the tracker",
      );
    } finally {
      clearTimeout(giveUp);
      for (const conn of conns) closeQuietly(conn);
      await Promise.all(closedByTracker);
    }
    const c = tracker.stats().counters;
    assert.equal(c.silentClosed, SILENT_CONNS);
    assert.equal(c.connections, SILENT_CONNS + 1);
    await waitUntil(
      () => tracker.stats().counters.openConnections === 0,
      5_000,
      "no connection left open",
    );
  },
});
