/**
 * Tests of `p2p/tracker.ts` against clients that hold its resources without
 * behaving like peers: connections that never send a message (or stop after
 * their Init, or trickle half a line), a client that sends but never reads
 * its replies, and one connection that announces a second port. Each must
 * cost the tracker a bounded time and one peer record at most, while a real
 * peer goes on being answered.
 */

import assert from "node:assert/strict";
import { LineReader } from "../lib/lines.ts";
import { closeQuietly, writeAll } from "../lib/net.ts";
import { DIRECTORY_MAX_LINE_BYTES, encodeLine, parseDirectory } from "../p2p/protocol.ts";
import { startTracker, type Tracker, type TrackerOptions } from "../p2p/tracker.ts";
import { waitUntil } from "./helpers.ts";

const MTIME = 1700000000; // seconds: any fixed past time
const CLOSE_BOUND_MS = 10_000; // generous: the tracker closes after 0.5 s plus one sweep

const delay = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A tracker in this process with short timeouts, its log lines kept. */
async function tracker(options: TrackerOptions = {}): Promise<Tracker & { lines: string[] }> {
  const lines: string[] = [];
  const t = await startTracker({
    port: 0,
    httpPort: null,
    peerTimeoutSeconds: 0.5,
    sweepIntervalSeconds: 0.1,
    quiet: true,
    log: (l) => lines.push(l),
    ...options,
  });
  return Object.assign(t, { lines });
}

/** A well-behaved peer: sends one message and reads its directory line. */
interface Peer extends Disposable {
  ask(message: unknown): Promise<string>;
}

async function connectPeer(port: number): Promise<Peer> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  const lines = new LineReader(conn, DIRECTORY_MAX_LINE_BYTES);
  return {
    ask: async (message) => {
      await writeAll(conn, encodeLine(message));
      const line = await lines.readLine();
      assert.notEqual(line, null, "the tracker closed a peer that was talking");
      return line!;
    },
    [Symbol.dispose]: () => closeQuietly(conn),
  };
}

/**
 * Reads (and throws away) whatever comes until the tracker closes the
 * connection; resolves with whether it did within `ms`. Closes our end in
 * any case.
 */
async function closedByTracker(conn: Deno.Conn, ms: number): Promise<boolean> {
  let timedOut = false;
  const reading = (async () => {
    const buffer = new Uint8Array(64 * 1024);
    try {
      while ((await conn.read(buffer)) !== null) {
        // Replies to the client's own messages: not what we wait for.
      }
    } catch {
      // A reset is a close too (and so is our own close after the bound).
    }
  })();
  const timer = setTimeout(() => {
    timedOut = true;
    closeQuietly(conn);
  }, ms);
  await reading;
  clearTimeout(timer);
  closeQuietly(conn);
  return !timedOut;
}

function file(name: string, mtime = MTIME) {
  return { name, mtime };
}

Deno.test("startTracker() closes connections that send nothing or go silent after Init; a talking peer stays", async () => {
  await using t = await tracker();
  using good = await connectPeer(t.addr.port);
  await good.ask({ port: 8001, files: [file("a.txt")] });

  // 20 that never send a byte, and 20 that send an Init, read the answer and go silent.
  const silent = await Promise.all(
    Array.from({ length: 20 }, () => Deno.connect({ hostname: "127.0.0.1", port: t.addr.port })),
  );
  const afterInit: Deno.Conn[] = [];
  for (let i = 0; i < 20; i++) {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port: t.addr.port });
    afterInit.push(conn);
    await writeAll(conn, encodeLine({ port: 9001 + i, files: [file(`init-${i}.txt`)] }));
    const reply = await new LineReader(conn, DIRECTORY_MAX_LINE_BYTES).readLine();
    assert.ok(reply !== null && `init-${i}.txt` in parseDirectory(reply), "its Init was taken");
  }

  // Meanwhile the good peer sends a keep-alive every 0.1 s and reads each directory.
  let talking = true;
  let answers = 0;
  const keepAlive = (async () => {
    while (talking) {
      parseDirectory(await good.ask({ port: 8001 }));
      answers++;
      await delay(100);
    }
  })();
  let closed: boolean[];
  try {
    closed = await Promise.all(
      [...silent, ...afterInit].map((c) => closedByTracker(c, CLOSE_BOUND_MS)),
    );
  } finally {
    talking = false;
    await keepAlive;
  }
  assert.equal(closed.filter((c) => c).length, 40, "every silent connection was closed");
  assert.ok(answers > 0, "the talking peer was answered meanwhile");
  assert.deepEqual(Object.keys(parseDirectory(await good.ask({ port: 8001 }))), ["a.txt"]);

  const c = t.stats().counters;
  assert.equal(c.silentClosed, 40);
  assert.equal(c.openConnections, 1, "only the talking peer is left");
  assert.equal(c.rejected + c.sendTimeouts, 0);
  const closes = t.lines.filter((l) => /^closed 127\.0\.0\.1:\d+: no message for 0\.5 s$/.test(l));
  assert.equal(closes.length, 40, t.lines.join("\n"));
});

Deno.test("startTracker() closes a connection that trickles half a line one byte at a time", async () => {
  await using t = await tracker();
  const conn = await Deno.connect({ hostname: "127.0.0.1", port: t.addr.port });
  // A byte every 0.1 s, never a newline: bytes keep coming, a message never does.
  const partial = new TextEncoder().encode(`{"port": 8001, "files": [${" ".repeat(1000)}`);
  let trickling = true;
  const trickle = (async () => {
    for (let i = 0; trickling && i < partial.length; i++) {
      try {
        await conn.write(partial.subarray(i, i + 1));
      } catch {
        return; // closed: by the tracker, or by us once it was
      }
      await delay(100);
    }
  })();
  let closed: boolean;
  try {
    closed = await closedByTracker(conn, CLOSE_BOUND_MS);
  } finally {
    trickling = false;
    await trickle;
  }
  assert.ok(closed, "the trickling connection was closed");
  assert.equal(t.stats().counters.silentClosed, 1);
  assert.match(
    t.lines.join("\n"),
    /^closed 127\.0\.0\.1:\d+: no message for 0\.5 s \(only \d+ B of an unfinished line\)$/m,
  );
});

Deno.test("startTracker() closes a client that sends but never reads; other peers are still answered", async () => {
  // A long peer timeout: here only the send timeout may close anything.
  await using t = await tracker({ peerTimeoutSeconds: 30, sendTimeoutSeconds: 0.5 });
  using good = await connectPeer(t.addr.port);
  // About 1 MB of directory per reply: long names, as many as a 1 MiB Init line holds.
  const files = Array.from(
    { length: 3000 },
    (_, i) => file(`${"n".repeat(232)}-${String(i).padStart(6, "0")}.txt`),
  );
  const first = await good.ask({ port: 8001, files });
  assert.equal(Object.keys(parseDirectory(first)).length, 3000);

  // The hostile client: one Init, then 200 keep-alives, each answered with the
  // whole directory (200 MB, far more than the sockets' buffers hold), and it
  // never reads a byte.
  const evil = await Deno.connect({ hostname: "127.0.0.1", port: t.addr.port });
  await writeAll(evil, encodeLine({ port: 9001, files: [] }));
  const keepAlives = new TextEncoder().encode(`${JSON.stringify({ port: 9001 })}\n`.repeat(200));
  await writeAll(evil, keepAlives);

  // The good peer keeps asking until the hostile one is closed (or the bound passes).
  let answeredMeanwhile = 0;
  let goodAnswers = 1;
  try {
    await waitUntil(
      async () => {
        if (t.stats().counters.sendTimeouts > 0) return true;
        const reply = await good.ask({ port: 8001 });
        goodAnswers++;
        if (t.stats().counters.sendTimeouts === 0) answeredMeanwhile++;
        assert.equal(reply.length, first.length);
        return false;
      },
      CLOSE_BOUND_MS,
      "the client that never reads to be closed",
    );
    assert.ok(answeredMeanwhile > 0, "the good peer was answered while the other was stuck");
    assert.ok(await closedByTracker(evil, CLOSE_BOUND_MS), "its connection is closed");
  } finally {
    closeQuietly(evil);
  }
  const c = t.stats().counters;
  assert.equal(c.sendTimeouts, 1);
  assert.equal(c.silentClosed, 0);
  assert.equal(c.openConnections, 1);
  const evilAnswers = c.responses - goodAnswers;
  assert.ok(
    evilAnswers < 201,
    `the tracker got stuck writing to it (${evilAnswers} replies written)`,
  );
  assert.match(
    t.lines.join("\n"),
    /^closed 127\.0\.0\.1:\d+: it did not take its \d+ B directory within 0\.5 s/m,
  );
  assert.equal((await good.ask({ port: 8001 })).length, first.length, "the good peer goes on");
});

Deno.test("startTracker() keeps one record per connection: a new port replaces the old one", async () => {
  await using t = await tracker({ peerTimeoutSeconds: 30 });
  using conn = await connectPeer(t.addr.port);
  const files = [file("a.txt"), file("b.txt")];
  await conn.ask({ port: 8001, files });
  const d = parseDirectory(await conn.ask({ port: 8002, files }));

  assert.deepEqual(t.stats().peers.map((p) => p.port), [8002], "one record, for the new port");
  for (const name of ["a.txt", "b.txt"]) {
    assert.equal(d[name].port, 8002);
    assert.deepEqual(d[name].holders!.map((h) => h.port), [8002], `${name} held under 8002 only`);
  }
  assert.equal(t.stats().counters.portChanges, 1);
  assert.match(
    t.lines.join("\n"),
    /peer 127\.0\.0\.1:8001 now announces port 8002 on the same connection: dropped it as holder of 2 files \(0 moved to another holder, 2 gone\)/,
  );

  // A bare KeepAlive for a new port also replaces the record; going back to the
  // old port does not bring back the list announced for it.
  assert.deepEqual(parseDirectory(await conn.ask({ port: 8003 })), {});
  assert.deepEqual(parseDirectory(await conn.ask({ port: 8002 })), {});
  assert.deepEqual(t.stats().peers.map((p) => [p.port, p.files.length]), [[8002, 0]]);
});

Deno.test("startTracker() leaves a record alone that another connection spoke for since", async () => {
  await using t = await tracker({ peerTimeoutSeconds: 30 });
  using first = await connectPeer(t.addr.port);
  using second = await connectPeer(t.addr.port);
  // A peer that reconnected: its old connection is still open and speaks up later.
  await first.ask({ port: 8001, files: [file("a.txt")] });
  await second.ask({ port: 8001, files: [file("a.txt")] });
  await first.ask({ port: 8002, files: [] });
  assert.deepEqual(t.stats().peers.map((p) => p.port).sort(), [8001, 8002]);
  assert.equal(parseDirectory(await second.ask({ port: 8001 }))["a.txt"].port, 8001);
  assert.equal(t.stats().counters.portChanges, 0);
});
