/**
 * The "push" extension (`p2p/PROTOCOL.md`): a peer watches its folder and
 * announces a change once it settles, and our tracker holds a KeepAlive with
 * `"wait"` until its directory changes, so a file saved on one peer reaches
 * another in well under the course's keep-alive of 5 s. Course trackers, and
 * peers started with `--no-push`, keep the plain rounds.
 */

import assert from "node:assert/strict";
import { encodeLine, FEATURES } from "../p2p/protocol.ts";
import { type FolderWatcher, startPeer } from "../p2p/peer.ts";
import { startTracker } from "../p2p/tracker.ts";
import { LineReader } from "../lib/lines.ts";
import { withTimeout } from "./helpers.ts";
import { startPeerScript, startTrackerScript, tempFolder, waitUntil } from "./p2p_helpers.ts";

const encoder = new TextEncoder();

/** Edits timed one after the other (each waits until the other peer has it). */
const EDITS = 10;
/** The bound each edit must reach the other peer within: the course's rounds often take longer. */
const PROPAGATION_BOUND_MS = 4_000;

/**
 * Writes `EDITS` versions of one file on `from`, each once the last one
 * reached `to`, and returns how long each took to arrive (ms).
 */
async function timeEdits(from: string, to: string): Promise<number[]> {
  const times: number[] = [];
  for (let i = 0; i < EDITS; i++) {
    const text = `edit ${i} at ${Date.now()}\n`;
    const start = performance.now();
    await Deno.writeTextFile(`${from}/notes.txt`, text);
    // Bounded: a lost edit fails here, after well over any round.
    await waitUntil(
      () => Deno.readTextFile(`${to}/notes.txt`).then((t) => t === text, () => false),
      15_000,
      `edit ${i} to reach the other peer`,
    );
    times.push(performance.now() - start);
  }
  return times;
}

function describeTimes(times: number[]): string {
  const sorted = [...times].sort((a, b) => a - b);
  const median = (sorted[(sorted.length - 1) >> 1] + sorted[sorted.length >> 1]) / 2;
  return `median ${Math.round(median)} ms, max ${Math.round(sorted.at(-1)!)} ms ` +
    `(${times.map((t) => Math.round(t)).join(", ")})`;
}

Deno.test("with --interval 5, each of 10 edits saved on one peer reaches the other within 4 s", async () => {
  await using a = await tempFolder();
  await using b = await tempFolder();
  await using tracker = await startTrackerScript();
  await using peerA = await startPeerScript(a.path, tracker.port, { interval: 5 });
  await using peerB = await startPeerScript(b.path, tracker.port, { interval: 5 });
  // Both have had their first round (Init and the reply that accepted "push").
  await peerA.waitFor(/connected to tracker/, 10_000);
  await peerB.waitFor(/connected to tracker/, 10_000);
  const times = await timeEdits(a.path, b.path);
  console.log(`push, --interval 5: ${describeTimes(times)}`);
  const scripts = [tracker, peerA, peerB].map((s) => s.lines.join("\n")).join("\n---\n");
  for (const [i, t] of times.entries()) {
    assert.ok(t < PROPAGATION_BOUND_MS, `edit ${i} took ${Math.round(t)} ms\n${scripts}`);
  }
  // B's downloads do not come back as changes of its own: B never announced a version of notes.txt.
  assert.ok(!peerA.lines.some((l) => /downloaded notes\.txt/.test(l)), scripts);
  assert.ok(!tracker.lines.some((l) => /conflict/.test(l)), scripts);
});

Deno.test("peers started with --no-push still sync, by the rounds", async () => {
  await using a = await tempFolder();
  await using b = await tempFolder();
  await using tracker = await startTrackerScript(["--quiet"]);
  const args = ["--no-push"];
  await using peerA = await startPeerScript(a.path, tracker.port, { interval: 0.5, args });
  await using peerB = await startPeerScript(b.path, tracker.port, { interval: 0.5, args });
  await peerB.waitFor(/connected to tracker/, 10_000);
  await Deno.writeTextFile(`${a.path}/x.txt`, "by rounds\n");
  await waitUntil(
    () => Deno.readTextFile(`${b.path}/x.txt`).then((t) => t === "by rounds\n", () => false),
    15_000,
    "x.txt to reach b",
    () => [peerA, peerB].map((s) => s.lines.join("\n")).join("\n---\n"),
  );
});

/** A connection to our tracker speaking the protocol by hand: one line out, one line in. */
async function rawPeer(port: number) {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  const lines = new LineReader(conn, 1 << 20);
  return {
    send: (message: unknown) => conn.write(encodeLine(message)),
    read: async () => JSON.parse((await withTimeout(lines.readLine(), 10_000, "a reply"))!),
    close: () => conn.close(),
  };
}

Deno.test("our tracker holds a KeepAlive with wait until the directory changes, and answers in order", async () => {
  await using tracker = await startTracker({ quiet: true, httpPort: null, log: () => {} });
  const port = tracker.addr.port;
  const features = [...FEATURES];
  const waiter = await rawPeer(port);
  const other = await rawPeer(port);
  try {
    await waiter.send({ port: 8001, files: [], id: "WAITER", features });
    const first = await waiter.read();
    assert.ok(first["/"].features.includes("push"));
    const rev = first["/"].rev;
    assert.equal(rev, 0, "an empty directory");
    // Held: nothing has changed since `rev` (0 here: nothing at all yet).
    await waiter.send({ port: 8001, since: rev, wait: 30 });
    const held = waiter.read();
    // The tracker has taken the KeepAlive before the change below comes.
    await waitUntil(() => tracker.stats().counters.messages === 2, 5000, "the KeepAlive taken");
    await other.send({ port: 8002, files: [{ name: "new.txt", mtime: 1_700_000_000 }] });
    await other.read();
    // The held reply came because of the change, and carries it (at once, it would have had nothing).
    const pushed = await held;
    assert.equal(pushed["new.txt"].port, 8002);
    assert.ok(pushed["/"].rev > rev);

    // A message sent while one is held: the held one is answered first, then the new one.
    await waiter.send({ port: 8001, since: pushed["/"].rev, wait: 30 });
    await waiter.send({
      port: 8001,
      since: pushed["/"].rev,
      files: [{ name: "mine.txt", mtime: 1_700_000_001 }],
    });
    const interrupted = await waiter.read();
    assert.equal(interrupted["/"].rev, pushed["/"].rev, "the held reply: nothing new yet");
    const own = await waiter.read();
    assert.equal(own["mine.txt"].port, 8001);
  } finally {
    waiter.close();
    other.close();
  }
});

Deno.test("our tracker answers a wait at once on a connection that did not ask for push", async () => {
  await using tracker = await startTracker({ quiet: true, httpPort: null, log: () => {} });
  const peer = await rawPeer(tracker.addr.port);
  try {
    const features = FEATURES.filter((f) => f !== "push");
    await peer.send({ port: 8001, files: [], features });
    const first = await peer.read();
    assert.ok(!first["/"].features.includes("push"));
    // A wait of an hour, answered within the read's 10 s: it was not held.
    await peer.send({ port: 8001, since: first["/"].rev, wait: 3600 });
    assert.equal((await peer.read())["/"].rev, first["/"].rev);
    // A course peer (no features) that sends a wait gets the course's directory at once.
    await peer.send({ port: 8001, wait: 3600 });
    await peer.read();
  } finally {
    peer.close();
  }
});

/**
 * A tracker as the course writes it, in-process: every message answered at
 * once with the whole directory (no `"/"` entry), every message kept.
 */
function startCourseTracker() {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const messages: Record<string, unknown>[] = [];
  const conns = new Set<Deno.Conn>();
  const directory: Record<string, { ip: string; port: number; mtime: number }> = {};
  const serving = (async () => {
    const handlers: Promise<void>[] = [];
    for await (const conn of listener) {
      conns.add(conn);
      handlers.push((async () => {
        const lines = new LineReader(conn, 1 << 20);
        try {
          while (true) {
            const line = await lines.readLine();
            if (line === null) break;
            const message = JSON.parse(line);
            messages.push(message);
            for (const f of message.files ?? []) {
              if (!directory[f.name] || f.mtime > directory[f.name].mtime) {
                directory[f.name] = { ip: "127.0.0.1", port: message.port, mtime: f.mtime };
              }
            }
            await conn.write(encoder.encode(JSON.stringify(directory) + "\n"));
          }
        } catch {
          // Closed under us: the test is over.
        } finally {
          conns.delete(conn);
          try {
            conn.close();
          } catch { /* already closed */ }
        }
      })());
    }
    await Promise.all(handlers);
  })();
  return {
    port: (listener.addr as Deno.NetAddr).port,
    messages,
    async [Symbol.asyncDispose]() {
      listener.close();
      for (const conn of conns) conn.close();
      await serving;
    },
  };
}

Deno.test("with a course tracker the peer sends plain KeepAlives, one a round, never a wait", async () => {
  await using share = await tempFolder();
  await using course = startCourseTracker();
  const lines: string[] = [];
  await using peer = await startPeer({
    dir: share.path,
    tracker: { hostname: "127.0.0.1", port: course.port },
    interval: 0.5,
    log: (line) => lines.push(line),
  });
  await waitUntil(() => course.messages.length >= 2, 5000, "two messages");
  const before = course.messages.length;
  await new Promise((resolve) => setTimeout(resolve, 2000));
  const during = course.messages.length - before;
  // About one a round (0.5 s): a peer that took the at-once answers for held ones would spin.
  assert.ok(during >= 1 && during <= 8, `${during} messages in 2 s\n${lines.join("\n")}`);
  // A file saved here still goes out, on a KeepAlive with the list, as the course expects.
  await Deno.writeTextFile(`${share.path}/saved.txt`, "hello\n");
  await waitUntil(
    () => course.messages.some((m) => JSON.stringify(m.files ?? []).includes("saved.txt")),
    5000,
    "the new list",
  );
  assert.ok(!course.messages.some((m) => "wait" in m), JSON.stringify(course.messages));
  assert.ok(peer.stats.rounds >= 3);
});

Deno.test("with push, a quiet peer's KeepAlives still come about once per --interval", async () => {
  await using share = await tempFolder();
  await using tracker = await startTracker({ quiet: true, httpPort: null, log: () => {} });
  await using _peer = await startPeer({
    dir: share.path,
    tracker: { hostname: "127.0.0.1", port: tracker.addr.port },
    interval: 1,
    log: () => {},
  });
  await waitUntil(() => tracker.stats().counters.messages >= 2, 5000, "the first rounds");
  const before = tracker.stats().counters.messages;
  await new Promise((resolve) => setTimeout(resolve, 3500));
  const during = tracker.stats().counters.messages - before;
  // Held KeepAlives of 1 s: about 3 in 3.5 s; neither silence nor a flood.
  assert.ok(during >= 2 && during <= 6, `${during} messages in 3.5 s`);
});

/** A watcher that yields `events`, then fails with `error` (or waits until closed). */
function fakeWatcher(events: Deno.FsEvent[], error?: Error): FolderWatcher {
  let close = () => {};
  const closed = new Promise<void>((resolve) => close = resolve);
  return {
    close,
    async *[Symbol.asyncIterator]() {
      for (const event of events) yield event;
      if (error) throw error;
      await closed;
    },
  };
}

for (
  const [what, watchFs, said] of [
    [
      "cannot start",
      (): FolderWatcher => {
        throw new Error("OS file watch limit reached");
      },
      /^cannot watch .*OS file watch limit reached.*found by the round every 0\.3 s$/,
    ],
    [
      "fails",
      () => fakeWatcher([], new Error("watch descriptor lost")),
      /^the watcher of .* failed \(watch descriptor lost\): .*found by the round every 0\.3 s$/,
    ],
    [
      "overflows",
      () =>
        fakeWatcher([
          { kind: "other", paths: [], flag: "rescan" },
          { kind: "other", paths: [], flag: "rescan" },
        ]),
      /^the watcher of .* lost events .*rescanning the folder$/,
    ],
  ] as const
) {
  Deno.test(`a watcher that ${what} leaves the rounds to find changes, with one log line`, async () => {
    await using a = await tempFolder();
    await using b = await tempFolder();
    await using tracker = await startTracker({ quiet: true, httpPort: null, log: () => {} });
    const linesA: string[] = [];
    const where = { hostname: "127.0.0.1", port: tracker.addr.port };
    await using _a = await startPeer({
      dir: a.path,
      tracker: where,
      interval: 0.3,
      watchFs,
      log: (line) => linesA.push(line),
    });
    await using _b = await startPeer({ dir: b.path, tracker: where, interval: 0.3, log: () => {} });
    await Deno.writeTextFile(`${a.path}/late.txt`, "found by a round\n");
    await waitUntil(
      () => Deno.readTextFile(`${b.path}/late.txt`).then(() => true, () => false),
      10_000,
      "late.txt to reach b",
      () => linesA.join("\n"),
    );
    const about = linesA.filter((l) => /watch/.test(l));
    assert.equal(about.length, 1, linesA.join("\n"));
    assert.match(about[0], said);
  });
}

Deno.test("a peer stops watching while it writes a batch of downloads, then looks through its folder: a file saved meanwhile is announced at once", async () => {
  await using a = await tempFolder();
  await using b = await tempFolder();
  const files = 600;
  const block = new Uint8Array(4096);
  for (let i = 0; i < files; i++) {
    block[0] = i & 0xff;
    block[1] = i >> 8;
    await Deno.writeFile(`${a.path}/f${String(i).padStart(4, "0")}.bin`, block);
  }
  await using tracker = await startTracker({ quiet: true, httpPort: null, log: () => {} });
  const where = { hostname: "127.0.0.1", port: tracker.addr.port };
  await using _a = await startPeer({ dir: a.path, tracker: where, interval: 60, log: () => {} });
  // B's watchers, counted: the batch closes one and opens the next.
  let opened = 0;
  let closedByPeer = 0;
  const linesB: string[] = [];
  await using _b = await startPeer({
    dir: b.path,
    tracker: where,
    // Only the watcher, or the look after the batch, can find mine.txt within the bound below.
    interval: 60,
    watchFs: (dir) => {
      opened++;
      const watcher = Deno.watchFs(dir, { recursive: true });
      return {
        close: () => {
          closedByPeer++;
          watcher.close();
        },
        [Symbol.asyncIterator]: () => watcher[Symbol.asyncIterator](),
      };
    },
    log: (line) => linesB.push(line),
  });
  // Saved on B as soon as the batch has begun to land.
  await waitUntil(
    () => [...Deno.readDirSync(b.path)].some((e) => e.name.endsWith(".bin")),
    20_000,
    "the first download",
  );
  const midBatch = [...Deno.readDirSync(b.path)].filter((e) => e.name.endsWith(".bin")).length;
  await Deno.writeTextFile(`${b.path}/mine.txt`, "saved during the batch\n");
  await waitUntil(
    () => Deno.readTextFile(`${a.path}/mine.txt`).then(() => true, () => false),
    10_000,
    "mine.txt to reach a (the rounds are 60 s apart)",
    () => linesB.join("\n"),
  );
  await waitUntil(
    () => [...Deno.readDirSync(b.path)].filter((e) => e.name.endsWith(".bin")).length === files,
    20_000,
    "every file on b",
  );
  console.log(`mine.txt saved with ${midBatch} of ${files} files on b; watchers opened: ${opened}`);
  assert.ok(opened >= 2, `the batch paused the watcher (opened ${opened})`);
  assert.ok(closedByPeer >= 1);
  assert.ok(!linesB.some((l) => /watcher/.test(l)), linesB.join("\n"));
});
