/**
 * Big folders (issue 9, item 6; the "parts" extension of `p2p/PROTOCOL.md`):
 * a file list past the tracker's line limit travels in parts, the directory
 * comes as pages of changes since a revision, and a list too large is
 * refused with its reason on the peer's own console. Pure tracker-state
 * tests first, then a real tracker with two real peers sharing 20,000 files
 * with 100-character names, and our peer against a course-style tracker.
 */

import assert from "node:assert/strict";
import { LineReader } from "../lib/lines.ts";
import { writeAll } from "../lib/net.ts";
import { PAGE_BYTES, PAGE_ENTRIES } from "../p2p/pages.ts";
import { startPeer } from "../p2p/peer.ts";
import {
  FEATURES,
  type FileInfo,
  parseTrackerReply,
  ProtocolError,
  TRACKER_MAX_LINE_BYTES,
  type TrackerReply,
} from "../p2p/protocol.ts";
import { capStats, PAGE_LIST_LIMIT, statusPage } from "../p2p/status_page.ts";
import { startTracker } from "../p2p/tracker.ts";
import { type Link, type Now, TrackerState } from "../p2p/tracker_state.ts";
import { waitUntil } from "./helpers.ts";
import { namesIn, startPeerScript, tempFolder } from "./p2p_helpers.ts";

const T0 = 1_700_000_000; // seconds
const encoder = new TextEncoder();
const decoder = new TextDecoder();
const PARTS = [...FEATURES];

function at(seconds: number): Now {
  return { wall: T0 * 1000 + seconds * 1000, mono: seconds * 1000 };
}

/** A 100-character file name, as in the big folder. */
function longName(i: number): string {
  return `file_${String(i).padStart(6, "0")}_`.padEnd(96, "x") + ".txt";
}

function sha(i: number): string {
  return (i % 65536).toString(16).padStart(4, "0").repeat(16);
}

function files(from: number, to: number, by = "PEERONE"): FileInfo[] {
  return Array.from({ length: to - from }, (_, k) => ({
    name: longName(from + k),
    mtime: T0,
    size: 10,
    sha256: sha(from + k),
    by,
  }));
}

/** One paged reply to `link`, parsed as our peer parses it, with its size on the wire. */
function page(state: TrackerState, link: Link, since: number): TrackerReply & { bytes: number } {
  const encoded = state.pagedDirectory(link, since);
  const line = decoder.decode(encoded.parts[0]);
  assert.ok(line.endsWith("}\n"));
  return { ...parseTrackerReply(line), bytes: encoded.bytes };
}

/** Pages from `since` until no more: what a peer's copy becomes (`copy` updated in place). */
function follow(state: TrackerState, link: Link, copy: Map<string, unknown>, since = 0) {
  let pages = 0;
  let reply: TrackerReply & { bytes: number };
  do {
    reply = page(state, link, since);
    pages++;
    if (reply.reset) copy.clear();
    for (const name of reply.absent ?? []) copy.delete(name);
    for (const [name, entry] of Object.entries(reply.directory)) copy.set(name, entry);
    for (const [name, entry] of Object.entries(reply.deleted)) copy.set(name, entry);
    since = reply.rev!;
    assert.ok(pages < 1000, "paging ends");
  } while (reply.more);
  return { since, pages, last: reply };
}

/** The directory a "parts" peer should hold: the view's whole directory, without the "/" entry. */
function expected(state: TrackerState): Map<string, unknown> {
  const whole = state.directoryFor(PARTS);
  delete whole["/"];
  return new Map(Object.entries(whole));
}

Deno.test("parts: a list in parts counts only when its last part comes, and replaces the old one then", () => {
  const state = new TrackerState({ peerTimeoutMs: 180_000, quiet: true });
  const link: Link = { ip: "10.0.0.2", lastFiles: null };
  const first = { port: 8001, id: "PEERONE", features: PARTS };
  assert.deepEqual(state.apply(link, { ...first, files: files(0, 1000), more: true }, at(0)), []);
  state.apply(link, { port: 8001, files: files(1000, 2000), more: true }, at(1));
  assert.equal(state.holdings.size, 0, "a half-sent list does not count");
  assert.equal(state.peers.size, 0);
  const said = state.apply(link, { port: 8001, files: files(2000, 2500) }, at(2));
  assert.match(said[0], /joined with 2500 files \(id PEERONE; features: .*parts.*; in 3 parts\)/);
  assert.equal(state.holdings.size, 2500);
  assert.equal(state.counters.listParts, 3);
  // A new list in parts: until its last part the old one stands.
  state.apply(link, { port: 8001, files: files(5000, 5100), more: true }, at(3));
  assert.equal(state.holdings.size, 2500);
  assert.ok(state.holdings.has(longName(0)));
  state.apply(link, { port: 8001, files: files(5100, 5200) }, at(4));
  assert.equal(state.holdings.size, 200);
  assert.ok(!state.holdings.has(longName(0)));
  // A connection that did not ask for "parts" sends whole lists, whatever "more" says.
  const course: Link = { ip: "10.0.0.3", lastFiles: null };
  state.apply(course, { port: 8002, files: files(0, 10), more: true }, at(5));
  assert.equal(state.peers.get("10.0.0.3|8002")?.files.size, 10);
});

Deno.test("parts: a list larger than the tracker takes is refused with its reason, and its parts let go", () => {
  const state = new TrackerState({
    peerTimeoutMs: 180_000,
    quiet: true,
    maxListFiles: 2500,
    maxStagedBytes: 10 * TRACKER_MAX_LINE_BYTES,
  });
  const link: Link = { ip: "10.0.0.2", lastFiles: null };
  state.apply(link, { port: 8001, features: PARTS, files: files(0, 2000), more: true }, at(0));
  assert.throws(
    () => state.apply(link, { port: 8001, files: files(2000, 3000), more: true }, at(1)),
    (err) => err instanceof ProtocolError && /file list too large: 3000 files/.test(err.message),
  );
  assert.equal(link.staged, undefined, "the parts kept aside are let go");
  // Bytes count too: a peer that never sends the last part cannot grow its parts for ever.
  const slow: Link = { ip: "10.0.0.4", lastFiles: null };
  state.apply(slow, { port: 8001, features: PARTS, files: [], more: true }, at(0), 0);
  for (let i = 0; i < 10; i++) {
    state.apply(slow, { port: 8001, files: [], more: true }, at(1), TRACKER_MAX_LINE_BYTES);
  }
  assert.throws(
    () => state.apply(slow, { port: 8001, files: [], more: true }, at(2), TRACKER_MAX_LINE_BYTES),
    /over 10485760 bytes in 12 parts/,
  );
  // A whole list in one message is held to the same bound.
  const whole: Link = { ip: "10.0.0.5", lastFiles: null };
  assert.throws(() => state.apply(whole, { port: 8001, files: files(0, 2501) }, at(0)), /2501/);
});

Deno.test("parts: the directory as pages of changes: every entry once, quiet rounds tiny, changes only", () => {
  const state = new TrackerState({ peerTimeoutMs: 1_000, quiet: true });
  const a: Link = { ip: "10.0.0.2", lastFiles: null };
  const b: Link = { ip: "10.0.0.3", lastFiles: null };
  const total = PAGE_ENTRIES * 2 + 123;
  state.apply(a, { port: 8001, id: "PEERONE", features: PARTS, files: files(0, total) }, at(0));
  state.apply(b, { port: 8002, id: "PEERTWO", features: PARTS, files: [] }, at(0));

  // From nothing: the whole directory, in pages within the bounds.
  const copy = new Map<string, unknown>();
  let since = 0;
  let pages = 0;
  for (;;) {
    const reply = page(state, b, since);
    pages++;
    assert.ok(Object.keys(reply.directory).length <= PAGE_ENTRIES);
    assert.ok(reply.bytes <= PAGE_BYTES + 4096);
    for (const [name, entry] of Object.entries(reply.directory)) copy.set(name, entry);
    since = reply.rev!;
    if (!reply.more) break;
    assert.ok(pages < 100);
  }
  assert.equal(pages, 3);
  assert.deepEqual(copy, expected(state));

  // A quiet round: the "/" entry alone, some sixty bytes.
  const quiet = page(state, b, since);
  assert.deepEqual(Object.keys(quiet.directory), []);
  assert.equal(quiet.rev, since);
  assert.ok(quiet.bytes < 100, `quiet reply of ${quiet.bytes} B`);

  // One file changes, one goes, one comes: the next page has those three only.
  const changed = files(0, total).filter((_, i) => i !== 7);
  changed[3] = { ...changed[3], mtime: T0 + 5, sha256: sha(99_999), history: [sha(3)] };
  changed.push(...files(total, total + 1));
  state.apply(a, { port: 8001, files: changed }, at(1));
  const next = follow(state, b, copy, since);
  assert.equal(next.pages, 1);
  assert.deepEqual(
    [...Object.keys(next.last.directory), ...(next.last.absent ?? [])].sort(),
    [longName(3), longName(7), longName(total)].sort(),
  );
  assert.deepEqual(next.last.absent, [longName(7)]);
  assert.deepEqual(copy, expected(state));

  // A revision this view never gave (a restarted tracker, say): start afresh.
  const stranger = page(state, b, next.since + 1_000);
  assert.equal(stranger.reset, true);
  // Peer a expires: its entries go; b hears each as absent, and its copy ends up empty.
  state.sweep(at(10), []);
  state.apply(b, { port: 8002 }, at(10));
  follow(state, b, copy, next.since);
  assert.equal(copy.size, 0);
  assert.deepEqual(copy, expected(state));
});

Deno.test("parts: a revision from another view's log starts the peer afresh", () => {
  const state = new TrackerState({ peerTimeoutMs: 180_000, quiet: true });
  const remote: Link = { ip: "10.0.0.3", localIp: "10.0.0.1", lastFiles: null };
  state.apply(remote, { port: 8002, features: PARTS, files: files(0, 5) }, at(0));
  const copy = new Map<string, unknown>();
  const first = follow(state, remote, copy);
  assert.equal(copy.size, 5);
  // A peer on the tracker's loopback appears: remote peers now get the view that shows it at
  // 10.0.0.1, with a log of its own, so the old revision means nothing there.
  const local: Link = { ip: "127.0.0.1", localIp: "127.0.0.1", lastFiles: null };
  state.apply(local, { port: 8003, features: PARTS, files: files(100, 102, "PEERTWO") }, at(1));
  const encoded = state.pagedDirectory(remote, first.since, "10.0.0.1");
  const reply = parseTrackerReply(decoder.decode(encoded.parts[0]));
  assert.equal(reply.reset, true);
  assert.equal(Object.keys(reply.directory).length, 7);
  assert.equal(reply.directory[longName(100)].ip, "10.0.0.1");
});

Deno.test("the status page lists the first names of a big directory and counts the rest", () => {
  const state = new TrackerState({ peerTimeoutMs: 180_000, quiet: true });
  const link: Link = { ip: "10.0.0.2", lastFiles: null };
  state.apply(link, { port: 8001, id: "PEERONE", features: PARTS, files: files(0, 2_000) }, at(0));
  const stats = {
    addr: "127.0.0.1:9000",
    startedAt: new Date(T0 * 1000).toISOString(),
    peerTimeoutSeconds: 180,
    sweepIntervalSeconds: 10,
    peers: state.peerStats(at(1)),
    directory: state.directory(),
    paths: state.pathStats(),
    counters: state.counters,
  };
  const html = statusPage(stats);
  assert.ok(html.includes(`and ${2_000 - PAGE_LIST_LIMIT} more`));
  assert.ok(html.includes(longName(PAGE_LIST_LIMIT - 1)));
  assert.ok(!html.includes(longName(PAGE_LIST_LIMIT)));
  assert.ok(html.length < 1_000_000, `${html.length} characters`);
  const capped = capStats(stats, 100);
  assert.equal(Object.keys(capped.directory).length, 100);
  assert.equal(capped.paths.length, 100);
  assert.equal(capped.peers[0].files.length, 100);
  assert.deepEqual(capped.truncated, {
    directory: 1_900,
    paths: 1_900,
    "peer 10.0.0.2:8001": 1_900,
  });
  assert.equal(capStats(stats, 5_000), stats, "nothing to cut: the same snapshot");
});

// ---------------------------------------------------------------------------
// Real sockets.

/** Writes `count` small files with 100-character names into `dir`, all with mtime T0. */
async function writeFiles(dir: string, from: number, count: number): Promise<void> {
  const when = new Date(T0 * 1000);
  for (let i = from; i < from + count; i += 500) {
    await Promise.all(
      Array.from({ length: Math.min(500, from + count - i) }, async (_, k) => {
        const path = `${dir}/${longName(i + k)}`;
        await Deno.writeFile(path, encoder.encode(`file ${i + k}\n`));
        await Deno.utime(path, when, when);
      }),
    );
  }
}

Deno.test({
  name:
    "20,000 files with 100-character names: a peer joins in parts, gets the ~200 it lacks, and quiet rounds are small",
  async fn() {
    const TOTAL = 20_000;
    const MISSING = 200;
    await using a = await tempFolder();
    await using b = await tempFolder();
    await writeFiles(a.path, 0, TOTAL);
    // b already holds identical copies of all but the last 200: the test is the protocol's.
    await writeFiles(b.path, 0, TOTAL - MISSING);
    const lines: string[] = [];
    await using tracker = await startTracker({
      httpPort: null,
      quiet: true,
      log: (line) => lines.push(line),
    });
    await using peerA = await startPeerScript(a.path, tracker.addr.port, { interval: 1 });
    await using peerB = await startPeerScript(b.path, tracker.addr.port, { interval: 1 });
    const scripts = [peerA, peerB];
    const started = performance.now();
    const show = () =>
      [lines.join("\n"), ...scripts.map((s) => s.lines.slice(-20).join("\n"))].join("\n---\n");
    await waitUntil(
      () => namesIn(b.path).length === TOTAL,
      50_000,
      "b to hold all 20,000 files",
      show,
    );
    const synced = (performance.now() - started) / 1000;
    // Each list passed the line limit in parts, and the tracker took both whole.
    assert.ok(
      lines.some((l) => /joined with 20000 files .*in \d+ parts/.test(l)),
      show(),
    );
    assert.ok(tracker.stats().counters.listParts >= 2 * 10);
    assert.equal(tracker.stats().counters.rejected, 0);
    assert.ok(peerB.lines.some((l) => /fetching file_019999_/.test(l)));
    assert.ok(
      !peerB.lines.some((l) => /fetching file_000000_/.test(l)),
      "b fetched only what it lacked",
    );

    // Quiet rounds once everyone has everything: a few dozen bytes per reply, not megabytes.
    let last = { ...tracker.stats().counters };
    let average = Infinity;
    await waitUntil(
      async () => {
        // A round of a peer with 20,000 files takes a second or two (it looks at every file).
        await new Promise((resolve) => setTimeout(resolve, 3_000));
        const now = { ...tracker.stats().counters };
        const replies = now.responses - last.responses;
        average = replies > 0 ? (now.responseBytes - last.responseBytes) / replies : Infinity;
        last = now;
        return replies >= 2 && average < 200;
      },
      30_000,
      "quiet rounds with small replies",
      () => `average reply ${average} B\n${show()}`,
    );
    console.log(
      `synced in ${synced.toFixed(1)} s; quiet rounds: ${average.toFixed(0)} B per reply`,
    );
  },
});

/** A tracker that answers every message with `{}`, as the course's does with an empty folder. */
function courseTracker() {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const messages: Record<string, unknown>[] = [];
  const jobs = new Set<Promise<void>>();
  const conns = new Set<Deno.Conn>();
  const accepting = (async () => {
    for await (const conn of listener) {
      conns.add(conn);
      const job = (async () => {
        // The course's tracker has no line limit: ours reads what the peer sends.
        const lines = new LineReader(conn, 64 * 1024 * 1024);
        try {
          for (let line; (line = await lines.readLine()) !== null;) {
            messages.push(JSON.parse(line));
            await writeAll(conn, encoder.encode("{}\n"));
          }
        } catch {
          // Closed by the test or the peer.
        } finally {
          // close() may have closed it already.
          if (conns.delete(conn)) conn.close();
        }
      })();
      jobs.add(job);
      job.finally(() => jobs.delete(job));
    }
  })();
  return {
    port: (listener.addr as Deno.NetAddr).port,
    messages,
    async close() {
      listener.close();
      for (const conn of conns) conn.close();
      conns.clear();
      await accepting.catch(() => {});
      await Promise.all(jobs);
    },
  };
}

Deno.test("against a course-style tracker, Init carries the first part and the next KeepAlive the whole list in one line", async () => {
  await using share = await tempFolder();
  await writeFiles(share.path, 0, 3_000);
  const tracker = courseTracker();
  try {
    await using _peer = await startPeer({
      dir: share.path,
      tracker: { hostname: "127.0.0.1", port: tracker.port },
      interval: 0.2,
      log: () => {},
    });
    await waitUntil(() => tracker.messages.length >= 4, 20_000, "four messages");
  } finally {
    await tracker.close();
  }
  const [init, whole, ...rest] = tracker.messages;
  const count = (m: Record<string, unknown>) => (m.files as unknown[] | undefined)?.length;
  assert.equal(init.more, true);
  assert.ok(count(init)! > 0 && count(init)! < 3_000, `Init had ${count(init)} files`);
  assert.equal(count(whole), 3_000);
  assert.equal(whole.more, undefined);
  assert.equal(whole.since, undefined, "no revision to a tracker that did not accept parts");
  for (const m of rest) assert.equal(count(m), undefined);
});

Deno.test("a peer refused for size says why on its own console", async () => {
  await using share = await tempFolder();
  await writeFiles(share.path, 0, 3_000);
  const trackerLines: string[] = [];
  await using tracker = await startTracker({
    httpPort: null,
    quiet: true,
    maxListFiles: 1_000,
    log: (line) => trackerLines.push(line),
  });
  const lines: string[] = [];
  await using _peer = await startPeer({
    dir: share.path,
    tracker: { hostname: "127.0.0.1", port: tracker.addr.port },
    interval: 0.2,
    log: (line) => lines.push(line),
  });
  await waitUntil(
    () => lines.some((l) => /refused by the tracker: file list too large/.test(l)),
    20_000,
    "the refusal on the peer's console",
    () => [...lines, "---", ...trackerLines].join("\n"),
  );
  assert.ok(trackerLines.some((l) => /rejected .*file list too large/.test(l)));
});
