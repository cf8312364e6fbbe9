/**
 * The peer-to-peer extensions "range" and "pipeline" (issue 10, items 2
 * and 3): the tracker lists each holder's accepted features only to peers
 * that asked; the file server answers JSON requests with an offset, several
 * on one connection, in order, and a course request (a bare name) exactly
 * as before; the download queue fetches many small files over a handful of
 * connections, counted by the connections the holder accepted.
 *
 * @module
 */

import assert from "node:assert/strict";
import { writeAll } from "../lib/net.ts";
import { startDelayRelay } from "../lib/delay_relay.ts";
import { DownloadQueue, INITIAL_IN_FLIGHT, PIPELINE_DEPTH } from "../p2p/fetch.ts";
import { HashCache } from "../p2p/files.ts";
import type { Wanted } from "../p2p/plan.ts";
import { holdersInOrder } from "../p2p/plan.ts";
import { PEER_FEATURES } from "../p2p/protocol.ts";
import { serveFiles } from "../p2p/serve_files.ts";
import { type Link, TrackerState } from "../p2p/tracker_state.ts";
import { randomBytes, readAll, sha256, waitUntil } from "./helpers.ts";
import { putFile, tempFolder } from "./p2p_helpers.ts";

const T0 = 1_700_000_000; // seconds: an ordinary file time
const encoder = new TextEncoder();
const decoder = new TextDecoder();

Deno.test("the tracker lists a holder's range and pipeline features only to peers that asked for them", () => {
  const state = new TrackerState({ peerTimeoutMs: 180_000, quiet: true });
  const ours: Link = { ip: "10.0.0.2", lastFiles: null };
  const course: Link = { ip: "10.0.0.3", lastFiles: null };
  const file = { name: "a.txt", mtime: T0, size: 1, sha256: "a".repeat(64) };
  state.apply(ours, {
    port: 8001,
    files: [file],
    id: "PEERONE",
    features: ["versions", ...PEER_FEATURES],
  }, { wall: 1, mono: 1 });
  state.apply(course, { port: 8002, files: [file] }, { wall: 2, mono: 2 });
  const asked = state.directoryFor(["versions", ...PEER_FEATURES]);
  const entry = asked["a.txt"] as { holders: { port: number; features?: string[] }[] };
  assert.deepEqual(entry.holders.map((h) => [h.port, h.features]), [
    [8001, ["range", "pipeline"]],
    [8002, undefined],
  ]);
  // Only the features the asking peer knows; none at all for the course's view.
  const rangeOnly = state.directoryFor(["versions", "range"])["a.txt"] as typeof entry;
  assert.deepEqual(rangeOnly.holders[0].features, ["range"]);
  const courseView = JSON.stringify(state.directory());
  assert.ok(!courseView.includes("features"), courseView);
  // The plan carries them to the download: an extension is used only with such a holder.
  const sources = holdersInOrder(
    {
      ip: "10.0.0.3",
      port: 8002,
      mtime: T0,
      holders: [{ ip: "10.0.0.2", port: 8001, mtime: T0, features: ["range"] }],
    },
    undefined,
    new Map(),
    0,
  );
  assert.deepEqual(sources, [{ ip: "10.0.0.3", port: 8002 }, {
    ip: "10.0.0.2",
    port: 8001,
    features: ["range"],
  }]);
});

/** A file server on `dir` whose log lines are collected. */
async function fileServer(dir: string) {
  const lines: string[] = [];
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const server = await serveFiles(listener, { dir, log: (l) => lines.push(l) });
  return { server, lines, port: server.addr.port };
}

/** Reads answers (`Content-Length: N` and N bytes, or `Error: ...`) one after the other. */
function answers(conn: Deno.Conn) {
  let buffered = new Uint8Array(0);
  const more = async () => {
    const chunk = new Uint8Array(65536);
    const n = await conn.read(chunk);
    if (n === null) throw new Error("the connection ended");
    buffered = new Uint8Array([...buffered, ...chunk.subarray(0, n)]);
  };
  return async (): Promise<{ header: string; body: Uint8Array }> => {
    while (!buffered.includes(0x0a)) await more();
    const end = buffered.indexOf(0x0a);
    const header = decoder.decode(buffered.subarray(0, end));
    buffered = buffered.subarray(end + 1);
    const match = /^Content-Length: (\d+)$/.exec(header);
    const length = match ? Number(match[1]) : 0;
    while (buffered.length < length) await more();
    const body = buffered.subarray(0, length);
    buffered = buffered.subarray(length);
    return { header, body };
  };
}

Deno.test("the file server answers pipelined JSON requests with offsets in order, and a bare name as the course does", async () => {
  await using share = await tempFolder();
  const a = randomBytes(100_000, 1);
  const b = randomBytes(300, 2);
  await putFile(share.path, "a.bin", a, T0);
  await putFile(share.path, "b.txt", b, T0);
  const { server, lines: log, port } = await fileServer(share.path);
  try {
    // Extended: three requests in one write, answered in order, the connection left open.
    const conn = await Deno.connect({ hostname: "127.0.0.1", port });
    await writeAll(
      conn,
      encoder.encode(
        `{"name": "a.bin", "offset": 40000}\n{"name": "missing.txt"}\n{"name": "b.txt"}\n`,
      ),
    );
    const next = answers(conn);
    const first = await next();
    assert.equal(first.header, "Content-Length: 60000");
    assert.deepEqual(first.body, a.subarray(40000));
    const second = await next();
    assert.match(second.header, /^Error: /);
    const third = await next();
    assert.deepEqual(third.body, b);
    // Still open: one more request on the same connection, then we close.
    await writeAll(conn, encoder.encode(`{"name": "b.txt", "offset": 301}\n`));
    assert.match((await next()).header, /^Error: offset 301 is past/);
    await writeAll(conn, encoder.encode(`{"name": "b.txt", "offset": 300}\n`));
    assert.equal((await next()).header, "Content-Length: 0");
    conn.close();

    // The course's request: the bytes, then the end of the connection.
    const course = await Deno.connect({ hostname: "127.0.0.1", port });
    await writeAll(course, encoder.encode("b.txt\n"));
    const reply = await readAll(course);
    course.close();
    assert.equal(decoder.decode(reply.subarray(0, 20)), "Content-Length: 300\n");
    assert.deepEqual(reply.subarray("Content-Length: 300\n".length), b);
    // The server counts what it sent: a range is logged from its offset.
    await waitUntil(
      () => log.some((l) => /sent "a\.bin" from byte 40000 \(58\.6 KiB\)/.test(l)),
      5000,
      "the log",
      () => log.join("\n"),
    );
  } finally {
    await server.close();
  }
});

/**
 * Writes `count` files of 4 KiB (random bytes from `seed` on) into `dir`, and
 * returns the plan that fetches each from a pipelining holder at `port`.
 */
async function smallFiles(
  dir: string,
  count: number,
  seed: number,
  port: number,
): Promise<Map<string, Wanted>> {
  const fetch = new Map<string, Wanted>();
  for (let i = 0; i < count; i++) {
    const name = `f${String(i).padStart(4, "0")}.bin`;
    const bytes = randomBytes(4096, i + seed);
    await putFile(dir, name, bytes, T0);
    fetch.set(name, {
      entry: { ip: "127.0.0.1", port, mtime: T0, size: bytes.length, sha256: sha256(bytes) },
      sources: [{ ip: "127.0.0.1", port, features: ["range", "pipeline"] }],
      localMtime: null,
    });
  }
  return fetch;
}

/** A download queue into `dir`, with its counters and log lines. */
function downloadQueue(dir: string) {
  const stats = { downloads: 0, bytes: 0, failures: 0 };
  const lines: string[] = [];
  const queue = new DownloadQueue({
    dir,
    hashes: new HashCache(),
    stats,
    log: (l) => lines.push(l),
  });
  return { queue, stats, lines };
}

Deno.test("1,000 small files come over a handful of pipelined connections, not one each", async () => {
  await using from = await tempFolder();
  await using to = await tempFolder();
  const files = 1000;
  const { server, lines: log, port } = await fileServer(from.path);
  const fetch = await smallFiles(from.path, files, 10, port);
  const { queue, stats, lines } = downloadQueue(to.path);
  try {
    queue.replace(fetch);
    await waitUntil(
      () => stats.downloads + stats.failures >= files,
      60_000,
      "every file",
      () => lines.slice(-20).join("\n"),
    );
    await queue.settled();
  } finally {
    queue.abort();
    await queue.settled();
    await server.close();
  }
  assert.equal(stats.downloads, files, lines.filter((l) => l.includes("failed")).join("\n"));
  for (const [name, wanted] of fetch) {
    assert.equal(sha256(await Deno.readFile(`${to.path}/${name}`)), wanted.entry.sha256);
  }
  // Each connection the holder accepted has its own client port in the "sent" lines.
  const ports = new Set(
    log.filter((l) => l.startsWith("sent ")).map((l) => /to 127\.0\.0\.1:(\d+)/.exec(l)![1]),
  );
  assert.equal(log.filter((l) => l.startsWith("sent ")).length, files);
  assert.ok(ports.size <= 8, `${ports.size} connections for ${files} files`);
  console.log(`${files} files over ${ports.size} connection(s), window now ${queue.window}`);
  assert.ok(PIPELINE_DEPTH >= 2);
});

Deno.test("a holder without the pipeline feature gets one course request per connection", async () => {
  await using from = await tempFolder();
  await using to = await tempFolder();
  const { server, lines: log, port } = await fileServer(from.path);
  const fetch = new Map<string, Wanted>();
  for (let i = 0; i < 20; i++) {
    const bytes = randomBytes(1000, i + 100);
    await putFile(from.path, `c${i}.txt`, bytes, T0);
    fetch.set(`c${i}.txt`, {
      entry: { ip: "127.0.0.1", port, mtime: T0, size: bytes.length, sha256: sha256(bytes) },
      sources: [{ ip: "127.0.0.1", port }],
      localMtime: null,
    });
  }
  const stats = { downloads: 0, bytes: 0, failures: 0 };
  const queue = new DownloadQueue({ dir: to.path, hashes: new HashCache(), stats, log: () => {} });
  try {
    queue.replace(fetch);
    await waitUntil(() => stats.downloads + stats.failures >= 20, 30_000, "every file");
  } finally {
    queue.abort();
    await queue.settled();
    await server.close();
  }
  assert.equal(stats.downloads, 20);
  const ports = new Set(
    log.filter((l) => l.startsWith("sent ")).map((l) => /:(\d+) in/.exec(l)![1]),
  );
  assert.equal(ports.size, 20, "one connection per file");
});

Deno.test("over a link with 100 ms each way and 5% loss, the window of files in flight grows past its start", async () => {
  await using from = await tempFolder();
  await using to = await tempFolder();
  const files = 300;
  const { server, port } = await fileServer(from.path);
  // The holder is reached through a relay that holds every chunk back 100 ms each way, and
  // emulates TCP's resends of 5% of the segments (seeded: the same run each time).
  const relay = startDelayRelay({
    target: { hostname: "127.0.0.1", port },
    delayMs: 100,
    loss: 0.05,
    seed: 7,
  });
  const fetch = await smallFiles(from.path, files, 3, relay.addr.port);
  const { queue, stats, lines } = downloadQueue(to.path);
  const windows = new Set<number>();
  try {
    queue.replace(fetch);
    await waitUntil(
      () => {
        windows.add(queue.window);
        return stats.downloads + stats.failures >= files;
      },
      60_000,
      "every file over the slow link",
      () => lines.slice(-20).join("\n"),
    );
  } finally {
    queue.abort();
    await queue.settled();
    await relay.close();
    await server.close();
  }
  assert.equal(stats.downloads, files, lines.filter((l) => l.includes("failed")).join("\n"));
  const seen = [...windows].sort((a, b) => a - b);
  const resent = relay.stats.forward.dropped + relay.stats.back.dropped;
  console.log(`windows seen: ${seen.join(", ")}; ${resent} segment(s) resent`);
  assert.ok(resent > 0, "the relay emulated no loss");
  // On a link where each file waits a round trip, more in flight is more throughput: it grew.
  assert.ok(Math.max(...seen) > INITIAL_IN_FLIGHT, `the window stayed at ${seen.join(", ")}`);
});
