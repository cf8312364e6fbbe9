/**
 * The tracker's live status page over real sockets: `/events` (server-sent
 * events) sends the page's body at once and again when a peer joins, and
 * the downloads our peers report ("transfers", `p2p/PROTOCOL.md`) show up
 * there, in `/stats` and on the page while a big download runs, with a rate.
 */

import assert from "node:assert/strict";
import { LineReader } from "../lib/lines.ts";
import { writeAll } from "../lib/net.ts";
import { startPeer } from "../p2p/peer.ts";
import { DIRECTORY_MAX_LINE_BYTES, encodeLine } from "../p2p/protocol.ts";
import { startTracker, type Tracker } from "../p2p/tracker.ts";
import { randomBytes, sha256, withTimeout } from "./helpers.ts";
import { fakeHolder, MIB, tempFolder, waitUntil } from "./p2p_helpers.ts";

const T0 = 1_700_000_000; // an mtime, seconds

/** The `/events` stream of a tracker, read one event at a time. */
async function openEvents(tracker: Tracker) {
  const { hostname, port } = tracker.httpAddr!;
  const response = await fetch(`http://${hostname}:${port}/events`);
  assert.equal(response.status, 200);
  assert.match(response.headers.get("content-type")!, /^text\/event-stream/);
  const reader = response.body!.pipeThrough(new TextDecoderStream()).getReader();
  let buffered = "";
  return {
    /** The data of the next `status` event (comments and other fields skipped). */
    async next(): Promise<string> {
      while (true) {
        const end = buffered.indexOf("\n\n");
        if (end >= 0) {
          const block = buffered.slice(0, end);
          buffered = buffered.slice(end + 2);
          const lines = block.split("\n");
          if (!lines.includes("event: status")) continue;
          return lines.filter((l) => l.startsWith("data: ")).map((l) => l.slice(6)).join("\n");
        }
        const { value, done } = await reader.read();
        if (done) throw new Error("the event stream ended");
        buffered += value;
      }
    },
    /** Reads events until one matches, at most `limit` of them. */
    async until(pattern: RegExp, limit = 30): Promise<string> {
      for (let i = 0; i < limit; i++) {
        const data = await this.next();
        if (pattern.test(data)) return data;
      }
      throw new Error(`no event matched ${pattern} in ${limit} events`);
    },
    [Symbol.asyncDispose]: () => reader.cancel(),
  };
}

/** A raw connection to the tracker: one JSON line out, the directory line back (or `null`). */
async function rawPeer(port: number) {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  const lines = new LineReader(conn, DIRECTORY_MAX_LINE_BYTES);
  return {
    async send(message: unknown): Promise<string | null> {
      await writeAll(conn, encodeLine(message));
      return await lines.readLine().catch(() => null);
    },
    [Symbol.asyncDispose]() {
      try {
        conn.close();
      } catch {
        // The tracker closed it.
      }
      return Promise.resolve();
    },
  };
}

Deno.test("/events sends the status at once and again, without asking, when a peer joins", async () => {
  await using tracker = await startTracker({ quiet: true, log: () => {} });
  await using events = await openEvents(tracker);
  const first = await events.next();
  assert.match(first, /Live peers \(0\)/);
  assert.ok(!first.includes("<html"), "an event is the body only, not a whole page");

  await using peer = await rawPeer(tracker.addr.port);
  await peer.send({ port: 8001, files: [{ name: "<b>a.txt", mtime: T0 }] });
  const joined = await events.until(/127\.0\.0\.1:8001/);
  assert.match(joined, /Live peers \(1\)/);
  assert.match(joined, /&#60;b&#62;a\.txt/, "names stay escaped in events");

  // The page itself takes its body from /events and has no reload timer but for browsers
  // without script.
  const { hostname, port } = tracker.httpAddr!;
  const page = await (await fetch(`http://${hostname}:${port}/`)).text();
  assert.match(page, /new EventSource\("\/events"\)/);
  assert.match(page, /<noscript><meta http-equiv="refresh"/);
  assert.doesNotMatch(page.replace(/<noscript>.*<\/noscript>/, ""), /http-equiv="refresh"/);
});

Deno.test("/events ends when the tracker closes, so close() does not wait for viewers", async () => {
  const tracker = await startTracker({ quiet: true, log: () => {} });
  const events = await openEvents(tracker);
  await withTimeout(events.next(), 10_000, "the first event");
  // Bounded: a close() that waited for viewers would hang here for ever.
  await withTimeout(tracker.close(), 10_000, "tracker.close() with a viewer connected");
  await assert.rejects(() => withTimeout(events.next(), 10_000, "the end of the stream"), /ended/);
  await events[Symbol.asyncDispose]();
});

Deno.test("a running download shows on the status page with its rate, and goes when it ends", async () => {
  await using tracker = await startTracker({ quiet: true, log: () => {} });
  const size = 8 * MIB;
  const content = randomBytes(size, 5);
  // A holder that trickles the file (64 KiB every 50 ms) until the test has seen the report.
  let release = false;
  await using holder = fakeHolder(async (_name, conn) => {
    await writeAll(conn, new TextEncoder().encode(`Content-Length: ${size}\n`));
    for (let sent = 0; sent < size;) {
      const n = release ? size - sent : 64 * 1024;
      await writeAll(conn, content.subarray(sent, sent + n));
      sent += n;
      if (!release) await new Promise((r) => setTimeout(r, 50));
    }
  });
  // The holder announces the file as one of our peers would (a version by content).
  await using announcer = await rawPeer(tracker.addr.port);
  await announcer.send({
    port: holder.port,
    id: "HOLDER",
    features: ["versions"],
    files: [{ name: "big.bin", mtime: T0, size, sha256: sha256(content), by: "HOLDER" }],
  });

  await using share = await tempFolder();
  const log: string[] = [];
  await using peer = await startPeer({
    dir: share.path,
    tracker: { hostname: "127.0.0.1", port: tracker.addr.port },
    interval: 0.2,
    quiet: true,
    log: (line) => log.push(line),
  });
  const self = `127.0.0.1:${peer.addr.port}`;
  const reported = () =>
    tracker.stats().peers.find((p) => p.port === peer.addr.port)?.transfers?.[0];
  try {
    await waitUntil(() => (reported()?.bytes ?? 0) > 0, 20_000, "the download to be reported");
    const t = reported()!;
    assert.equal(t.name, "big.bin");
    assert.equal(t.from, `127.0.0.1:${holder.port}`);
    assert.equal(t.size, size);
    assert.ok(t.bytes < size, "reported while running");
    assert.ok(t.rate > 0, `a rate: ${t.rate}`);

    // The same over HTTP: /stats for a program, /events for the page.
    const { hostname, port } = tracker.httpAddr!;
    const stats = await (await fetch(`http://${hostname}:${port}/stats`)).json();
    const ours = stats.peers.find((p: { port: number }) => p.port === peer.addr.port);
    assert.equal(ours.transfers[0].name, "big.bin");
    await using events = await openEvents(tracker);
    const shown = await events.until(/Transfers in progress \(1\)/);
    assert.ok(shown.includes(self) && shown.includes("big.bin"), shown);
    assert.match(shown, /<progress max="8388608" value="\d+">/);
    assert.match(shown, /\d+(\.\d)? (B|KiB|MiB)\/s/);
  } finally {
    release = true;
  }
  // Once the file is in place the peer says so (an empty report), and the page shows none.
  await waitUntil(
    async () => (await Deno.stat(`${share.path}/big.bin`).catch(() => null))?.size === size,
    20_000,
    "the download to finish",
  );
  await waitUntil(() => reported() === undefined, 10_000, "the report to be cleared");
});

Deno.test("transfers are bounded, checked like file names, and ignored from course peers", async () => {
  const lines: string[] = [];
  await using tracker = await startTracker({ quiet: true, log: (l) => lines.push(l) });
  const entry = (name: string) => ({ name, from: "10.0.0.3:8002", bytes: 1, size: 2, rate: 3 });
  const transfersOf = (port: number) =>
    tracker.stats().peers.find((p) => p.port === port)?.transfers?.map((t) => t.name);

  // A course peer (no features): the field is ignored, as the course's tracker ignores it.
  await using course = await rawPeer(tracker.addr.port);
  await course.send({ port: 8001, files: [], transfers: [entry("a.bin")] });
  assert.equal(transfersOf(8001), undefined);

  // One of ours: kept; an unsafe name is dropped; the next report replaces the last.
  await using ours = await rawPeer(tracker.addr.port);
  await ours.send({ port: 8002, files: [], id: "OURS", features: ["versions"] });
  await ours.send({ port: 8002, transfers: [entry("a.bin"), entry("../etc/passwd")] });
  assert.deepEqual(transfersOf(8002), ["a.bin"]);
  await ours.send({ port: 8002, transfers: [] });
  assert.equal(transfersOf(8002), undefined, "an empty report clears it");

  // Bad reports close the connection with the reason, as any bad message does.
  const bad = [
    Array.from({ length: 51 }, (_, i) => entry(`f${i}`)),
    [{ ...entry("a.bin"), bytes: 3 }],
    [{ ...entry("a.bin"), rate: -1 }],
    [{ ...entry("a.bin"), from: "<script>" }],
    "a.bin",
  ];
  for (const transfers of bad) {
    await using liar = await rawPeer(tracker.addr.port);
    await liar.send({ port: 8003, files: [], features: ["versions"] });
    assert.equal(await liar.send({ port: 8003, transfers }), null, JSON.stringify(transfers));
  }
  assert.equal(lines.filter((l) => /rejected .*transfers/.test(l)).length, bad.length);
});
