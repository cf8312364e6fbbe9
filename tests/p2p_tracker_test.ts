/**
 * Tests of `p2p/tracker.ts` over real sockets: the course's rules (directory
 * after every message, identity from the socket, newer mtime wins, expiry),
 * our fixes (holder fallback, bounded lines, bad input closes one
 * connection), the status page, a Python client written from the protocol,
 * and the script run as a student runs it.
 */

import assert from "node:assert/strict";
import { LineReader } from "../lib/lines.ts";
import { writeAll } from "../lib/net.ts";
import {
  type Directory,
  DIRECTORY_MAX_LINE_BYTES,
  encodeJson,
  encodeLine,
  parseDirectory,
} from "../p2p/protocol.ts";
import { startTracker, type Tracker, type TrackerOptions } from "../p2p/tracker.ts";
import { haveCommand, rssBytes, runScript, startScript, waitUntil } from "./helpers.ts";

const MTIME = 1700000000; // seconds: any fixed past time

/** A test's stand-in for a peer: one connection to the tracker. */
interface TestPeer extends AsyncDisposable {
  /** Sends one message (an object, or a raw line) and resolves with the raw reply line. */
  sendRaw(message: unknown): Promise<string | null>;
  /** Sends one message and parses the directory it gets back. */
  ask(message: unknown): Promise<Directory>;
  /** The next reply line, or null once the tracker closed the connection. */
  readLine(): Promise<string | null>;
  conn: Deno.TcpConn;
}

async function connectPeer(port: number): Promise<TestPeer> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  const lines = new LineReader(conn, DIRECTORY_MAX_LINE_BYTES);
  let closed = false;
  const readLine = async () => {
    try {
      return await lines.readLine();
    } catch (err) {
      if (err instanceof Deno.errors.ConnectionReset) return null;
      throw err;
    }
  };
  const sendRaw = async (message: unknown) => {
    const bytes = message instanceof Uint8Array
      ? message
      : typeof message === "string"
      ? new TextEncoder().encode(message + "\n")
      : encodeLine(message);
    await writeAll(conn, bytes);
    return await readLine();
  };
  return {
    conn,
    sendRaw,
    readLine,
    ask: async (message) => {
      const line = await sendRaw(message);
      assert.notEqual(line, null, "the tracker closed the connection instead of answering");
      return parseDirectory(line!);
    },
    [Symbol.asyncDispose]: () => {
      if (!closed) conn.close();
      closed = true;
      return Promise.resolve();
    },
  };
}

/** A tracker in this process whose log lines are kept. */
async function tracker(
  options: TrackerOptions = {},
): Promise<Tracker & { log: string[] }> {
  const log: string[] = [];
  const t = await startTracker({ httpPort: null, log: (l) => log.push(l), ...options });
  return Object.assign(t, { log });
}

const delay = (ms: number) => new Promise((r) => setTimeout(r, ms));

function file(name: string, mtime = MTIME, extra: Record<string, unknown> = {}) {
  return { name, mtime, ...extra };
}

Deno.test("startTracker() answers Init and KeepAlive with the directory, as json.dumps writes it", async () => {
  await using t = await tracker();
  await using a = await connectPeer(t.addr.port);
  const init = await a.sendRaw({
    port: 8001,
    files: [file("a.txt"), file("b.txt", MTIME + 1, { size: 3, sha256: "0".repeat(64) })],
  });
  const holder = `{"ip": "127.0.0.1", "port": 8001, "mtime": ${MTIME}}`;
  const holderB = `{"ip": "127.0.0.1", "port": 8001, "mtime": ${MTIME + 1}}`;
  assert.equal(
    init,
    `{"a.txt": {"ip": "127.0.0.1", "port": 8001, "mtime": ${MTIME}, "holders": [${holder}]}, ` +
      `"b.txt": {"ip": "127.0.0.1", "port": 8001, "mtime": ${MTIME + 1}, "size": 3, ` +
      `"sha256": "${"0".repeat(64)}", "holders": [${holderB}]}}`,
  );
  // A KeepAlive gets the same directory; an address the peer claims is ignored.
  assert.equal(await a.sendRaw({ port: 8001, ip: "6.6.6.6" }), init);

  // A second peer on the same host is told apart by its port; both see both.
  await using b = await connectPeer(t.addr.port);
  const both = await b.ask({ port: 8002, files: [file("c.txt")] });
  assert.deepEqual(Object.keys(both), ["a.txt", "b.txt", "c.txt"]);
  assert.deepEqual([both["c.txt"].ip, both["c.txt"].port], ["127.0.0.1", 8002]);
  assert.deepEqual(await a.ask({ port: 8001 }), both);

  // Two messages in one write get two answers, in order.
  await writeAll(a.conn, new TextEncoder().encode('{"port": 8001}\n{"port": 8001}\n'));
  assert.deepEqual(parseDirectory((await a.readLine())!), both);
  assert.deepEqual(parseDirectory((await a.readLine())!), both);

  const stats = t.stats();
  assert.deepEqual(stats.peers.map((p) => [p.ip, p.port, p.messages]), [
    ["127.0.0.1", 8001, 5],
    ["127.0.0.1", 8002, 1],
  ]);
  assert.equal(stats.counters.responses, 6);
  assert.match(t.log.join("\n"), /peer 127\.0\.0\.1:8001 joined with 2 files/);
  assert.match(t.log.join("\n"), /keep-alive from 127\.0\.0\.1:8001 \(2 files\)/);
});

Deno.test("startTracker() takes a KeepAlive from an unknown peer as a peer without files", async () => {
  await using t = await tracker({ quiet: true });
  await using a = await connectPeer(t.addr.port);
  assert.equal(await a.sendRaw({ port: 8001 }), "{}");
  assert.equal(t.stats().peers.length, 1);
  assert.match(t.log.join("\n"), /joined without a file list/);
  assert.ok(!t.log.some((l) => l.startsWith("keep-alive")), "--quiet leaves out keep-alives");
});

Deno.test("startTracker() replaces an entry only with a strictly newer mtime", async () => {
  await using t = await tracker({ quiet: true });
  await using p1 = await connectPeer(t.addr.port);
  await using p2 = await connectPeer(t.addr.port);
  await using p3 = await connectPeer(t.addr.port);
  let d = await p1.ask({ port: 8001, files: [file("x", 100)] });
  assert.equal(d.x.port, 8001);
  // The same version: the first holder stays the one to fetch from; the second is listed.
  d = await p2.ask({ port: 8002, files: [file("x", 100)] });
  assert.equal(d.x.port, 8001);
  assert.deepEqual(d.x.holders?.map((h) => h.port), [8001, 8002]);
  // An older version changes nothing.
  d = await p3.ask({ port: 8003, files: [file("x", 50)] });
  assert.deepEqual([d.x.port, d.x.mtime], [8001, 100]);
  assert.deepEqual(d.x.holders?.map((h) => h.port), [8001, 8002]);
  // A newer one, announced later on the same connection, wins.
  d = await p3.ask({ port: 8003, files: [file("x", 200)] });
  assert.deepEqual([d.x.port, d.x.mtime], [8003, 200]);
  assert.deepEqual(d.x.holders?.map((h) => h.port), [8003]);
  // A peer whose new list lacks a file no longer holds it.
  d = await p3.ask({ port: 8003, files: [] });
  assert.deepEqual([d.x.port, d.x.mtime], [8001, 100]);
  // Duplicate names in one list: the newest counts; unsafe names are ignored.
  d = await p1.ask({
    port: 8001,
    files: [file("x", 100), file("y", 1), file("y", 7), file("../escape", 999), file("a/b", 9)],
  });
  assert.deepEqual(Object.keys(d), ["x", "y"]);
  assert.equal(d.y.mtime, 7);
  assert.equal(t.stats().counters.unsafeNames, 2);
  assert.match(t.log.join("\n"), /ignored unsafe names "\.\.\/escape", "a\/b"/);
});

Deno.test("startTracker() keeps its encoded directory exact through many changes", async () => {
  await using t = await tracker({ quiet: true });
  await using a = await connectPeer(t.addr.port);
  await using b = await connectPeer(t.addr.port);
  // Enough names for several encoding blocks, overlapping between the two peers.
  const names = (from: number, to: number, mtime = MTIME) =>
    Array.from(
      { length: to - from },
      (_, i) => file(`f${String(from + i).padStart(4, "0")}`, mtime),
    );
  const steps: [TestPeer, unknown][] = [
    [a, { port: 8001, files: names(0, 700) }],
    [b, { port: 8002, files: names(500, 1200) }],
    [a, { port: 8001, files: [...names(0, 100), ...names(300, 700, MTIME + 5)] }],
    [b, { port: 8002, files: names(0, 50, MTIME + 9) }],
    [a, { port: 8001, files: [] }],
    [b, { port: 8002 }],
    [a, { port: 8001, files: names(1100, 1300) }],
  ];
  for (const [peer, message] of steps) {
    const line = await peer.sendRaw(message);
    assert.equal(line, encodeJson(t.stats().directory));
  }
  const final = parseDirectory((await a.sendRaw({ port: 8001 }))!);
  assert.deepEqual(Object.keys(final), [
    ...names(0, 50).map((f) => f.name),
    ...names(1100, 1300).map((f) => f.name),
  ]);
});

Deno.test("startTracker() expires a silent peer after a fractional timeout; another holder takes over", async () => {
  await using t = await tracker({
    peerTimeoutSeconds: 0.5,
    sweepIntervalSeconds: 0.1,
    quiet: true,
  });
  await using a = await connectPeer(t.addr.port);
  await using b = await connectPeer(t.addr.port);
  await a.ask({ port: 8001, files: [file("shared.txt"), file("only-a.txt")] });
  let d = await b.ask({ port: 8002, files: [file("shared.txt")] });
  assert.equal(d["shared.txt"].port, 8001);
  const aSilentSince = performance.now();

  // b keeps talking; a says nothing more.
  let talking = true;
  const keepAlive = (async () => {
    while (talking) {
      d = await b.ask({ port: 8002 });
      await delay(100);
    }
  })();
  try {
    await delay(250);
    assert.equal(t.stats().peers.length, 2, "nobody expires before the timeout");
    await waitUntil(() => t.stats().peers.length === 1, 3000, "a to expire");
    const silentFor = (performance.now() - aSilentSince) / 1000;
    assert.ok(silentFor >= 0.5, `expired after only ${silentFor} s`);
    assert.ok(silentFor < 1.5, `expired only after ${silentFor} s`);
    assert.equal(t.stats().peers[0].port, 8002, "the peer that kept talking stays");
  } finally {
    talking = false;
    await keepAlive;
  }
  d = await b.ask({ port: 8002 });
  assert.deepEqual(Object.keys(d), ["shared.txt"], "a's own file left with a");
  assert.deepEqual([d["shared.txt"].ip, d["shared.txt"].port], ["127.0.0.1", 8002]);
  assert.match(
    t.log.join("\n"),
    /peer 127\.0\.0\.1:8001 expired after \d+\.\d s of silence: .*2 files \(1 moved to another holder, 1 gone\)/,
  );

  // a's silent connection is closed too, as it expires (tests/tracker_hostile_test.ts has more).
  await waitUntil(() => t.stats().counters.silentClosed >= 1, 3000, "a's connection to close");
  assert.equal(await a.readLine(), null);
  assert.equal(t.stats().counters.peersExpired, 1);
});

Deno.test("startTracker() keeps only a connection's last file list, whatever ports it announced", async () => {
  await using t = await tracker({
    peerTimeoutSeconds: 0.3,
    sweepIntervalSeconds: 0.05,
    quiet: true,
  });
  await using conn = await connectPeer(t.addr.port);
  // One connection announcing lists for many ports: only the last one may stay in memory,
  // as the one peer record of that connection.
  for (let port = 8001; port <= 8020; port++) {
    await conn.ask({ port, files: [file(`for-${port}.txt`)] });
  }
  assert.deepEqual(t.stats().peers.map((p) => p.port), [8020]);
  assert.deepEqual(Object.keys(await conn.ask({ port: 8020 })), ["for-8020.txt"]);
});

Deno.test("startTracker() closes only the connection that sent bad input, with the reason", async () => {
  await using t = await tracker({ quiet: true });
  await using good = await connectPeer(t.addr.port);
  await good.ask({ port: 8001, files: [file("a.txt")] });
  const bad: [unknown, RegExp][] = [
    ["hello tracker", /invalid JSON/],
    ["", /invalid JSON/],
    ["[8001]", /must be a JSON object, got an array/],
    ['{"files": []}', /no "port" field/],
    ['{"port": "8001"}', /port must be a whole number/],
    ['{"port": 8002, "files": [{"name": 5, "mtime": 1}]}', /files\[0\]\.name must be a string/],
    ['{"port": 8002, "files": [{"name": "x", "mtime": "yesterday"}]}', /mtime must be a number/],
    [new Uint8Array([0x7b, 0xff, 0xfe, 0x7d, 0x0a]), /not valid UTF-8/],
  ];
  for (const [message, reason] of bad) {
    await using evil = await connectPeer(t.addr.port);
    assert.equal(await evil.sendRaw(message), null, `${message} closes the connection`);
    assert.match(t.log.at(-1)!, /^rejected 127\.0\.0\.1:\d+: /);
    assert.match(t.log.at(-1)!, reason);
    assert.deepEqual(Object.keys(await good.ask({ port: 8001 })), ["a.txt"], "others go on");
  }
  // A bad message after a good one: the connection closes, the peer stays until it expires.
  await using late = await connectPeer(t.addr.port);
  await late.ask({ port: 8003, files: [file("late.txt")] });
  assert.equal(await late.sendRaw("{oops"), null);
  assert.ok(Object.keys(await good.ask({ port: 8001 })).includes("late.txt"));
  assert.equal(t.stats().counters.rejected, bad.length + 1);
});

Deno.test("startTracker() refuses an mtime past 2106; its status page keeps working for everyone", async () => {
  await using t = await tracker({ quiet: true, httpPort: 0 });
  await using good = await connectPeer(t.addr.port);
  await good.ask({ port: 8001, files: [file("a.txt")] });
  {
    await using evil = await connectPeer(t.addr.port);
    // 1e15 s is past the last date JavaScript can show: the status page used to answer 500.
    const line = await evil.sendRaw({ port: 8002, files: [file("future.txt", 1e15)] });
    assert.equal(line, null, "the tracker closed that connection");
  }
  assert.match(
    t.log.at(-1)!,
    /^rejected 127\.0\.0\.1:\d+: files\[0\]\.mtime must be a number of seconds from 0 to 4294967295, got number 1000000000000000;/,
  );
  assert.deepEqual(Object.keys(await good.ask({ port: 8001 })), ["a.txt"], "others go on");
  const page = await fetch(`http://127.0.0.1:${t.httpAddr!.port}/`);
  assert.equal(page.status, 200);
  const html = await page.text();
  assert.match(html, /a\.txt/);
  assert.ok(!html.includes("future.txt"));
});

Deno.test("startTracker() refuses an over-long line without buffering it", async () => {
  await using t = await tracker({ quiet: true, maxLineBytes: 1000 });
  await using evil = await connectPeer(t.addr.port);
  const line = `{"port": 8001, "files": [${
    Array.from({ length: 100 }, (_, i) => encodeJson(file(`f${i}`))).join(", ")
  }]}`;
  assert.equal(await evil.sendRaw(line), null);
  assert.match(t.log.at(-1)!, /rejected .*: line longer than 1000 bytes/);
  assert.equal(t.stats().peers.length, 0);
});

Deno.test("tracker.ts survives a 64 MiB line without a newline, its memory bounded", async () => {
  await using script = await startScript("p2p/tracker.ts", ["--port", "0", "--quiet"]);
  const pid = script.process.pid;
  await using good = await connectPeer(script.port);
  await good.ask({ port: 8001, files: [file("a.txt")] });
  const before = rssBytes(pid);
  let peak = before;
  let sent = 0;
  const total = 64 * 1024 * 1024;
  const chunk = new Uint8Array(256 * 1024).fill(0x61); // "aaaa…", no newline anywhere
  {
    await using evil = await connectPeer(script.port);
    await writeAll(evil.conn, new TextEncoder().encode('{"port": 8002, "junk": "'));
    try {
      while (sent < total) {
        await writeAll(evil.conn, chunk);
        sent += chunk.length;
        peak = Math.max(peak, rssBytes(pid));
      }
    } catch (err) {
      // The tracker hung up mid-line, as it should.
      assert.ok(
        err instanceof Deno.errors.BrokenPipe || err instanceof Deno.errors.ConnectionReset,
        String(err),
      );
    }
    assert.equal(await evil.readLine(), null, "the tracker closed that connection");
  }
  await script.waitFor(/rejected 127\.0\.0\.1:\d+: line longer than 1048576 bytes/);
  peak = Math.max(peak, rssBytes(pid));
  assert.ok(sent < total, `the tracker read on to ${sent} bytes`);
  const grew = peak - before;
  console.log(`sent ${sent} B; RSS ${before} -> peak ${peak} (+${grew})`);
  assert.ok(grew < 24 * 1024 * 1024, `tracker RSS grew by ${(grew / 1048576).toFixed(1)} MiB`);
  assert.deepEqual(Object.keys(await good.ask({ port: 8001 })), ["a.txt"], "still serving");
  assert.equal((await script.stop()).code, 0);
});

Deno.test("startTracker() status page shows peers for a person and JSON for a program", async () => {
  // Find two free ports in a row, to check the default status port (peers' port + 1).
  let t: Tracker | null = null;
  for (let tries = 0; !t && tries < 20; tries++) {
    const probe = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const port = probe.addr.port;
    probe.close();
    try {
      t = await startTracker({ port, quiet: true, log: () => {} });
    } catch {
      // Port or port + 1 taken meanwhile: try another pair.
    }
  }
  assert.ok(t, "found two free ports in a row");
  await using _t = t;
  assert.equal(t.httpAddr?.port, t.addr.port + 1);
  await using a = await connectPeer(t.addr.port);
  await a.ask({
    port: 8001,
    files: [file("<img src=x onerror=alert(1)>.txt", MTIME, { size: 12 })],
  });
  const base = `http://127.0.0.1:${t.httpAddr!.port}`;

  const page = await fetch(`${base}/`);
  assert.equal(page.status, 200);
  assert.match(page.headers.get("content-type")!, /text\/html/);
  const html = await page.text();
  assert.match(html, /127\.0\.0\.1:8001/);
  assert.match(html, /&#60;img src=x onerror=alert\(1\)&#62;\.txt/, "names are escaped");
  assert.ok(!html.includes("<img"), "no markup from a peer reaches the page");
  assert.match(html, /expires in/);

  const response = await fetch(`${base}/stats`);
  assert.match(response.headers.get("content-type")!, /application\/json/);
  const stats = await response.json();
  assert.deepEqual(stats.peers.map((p: { ip: string; port: number }) => [p.ip, p.port]), [
    ["127.0.0.1", 8001],
  ]);
  assert.equal(stats.peers[0].files[0].name, "<img src=x onerror=alert(1)>.txt");
  assert.ok(stats.peers[0].secondsToExpiry > 170);
  assert.equal(stats.directory["<img src=x onerror=alert(1)>.txt"].size, 12);
  assert.equal(stats.counters.messages, 1);

  const missing = await fetch(`${base}/nothing`);
  assert.equal(missing.status, 404);
  await missing.body?.cancel();
});

const PYTHON_PEER = `
import json, socket, sys

tracker_ip, tracker_port = sys.argv[1], int(sys.argv[2])
my_port = int(sys.argv[3])

# Connect from 127.0.0.2, so the tracker sees an address other than its own.
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.bind(("127.0.0.2", 0))
s.connect((tracker_ip, tracker_port))

def recv_line():
    data = b""
    while not data.endswith(b"\\n"):
        chunk = s.recv(1024)
        if not chunk:
            sys.exit("tracker closed the connection")
        data += chunk
    return data

def send(message):
    s.sendall((json.dumps(message) + "\\n").encode())
    raw = recv_line()
    directory = json.loads(raw)
    # The reply must be exactly what Python itself would have written.
    assert raw == (json.dumps(directory) + "\\n").encode(), raw
    return directory

files = [{"name": "song.mp3", "mtime": 1700000000}, {"name": "notes.txt", "mtime": 1700000500}]
print(json.dumps(send({"port": my_port, "files": files})))
print(json.dumps(send({"port": my_port})))
s.close()
`;

Deno.test("a Python client written from the protocol talks to our tracker", {
  ignore: !haveCommand("python3"),
}, async () => {
  await using t = await tracker({ quiet: true });
  await using ours = await connectPeer(t.addr.port);
  await ours.ask({ port: 8001, files: [file("notes.txt", MTIME)] });
  const out = await new Deno.Command("python3", {
    args: ["-c", PYTHON_PEER, "127.0.0.1", String(t.addr.port), "8005"],
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
  const [init, keepAlive] = new TextDecoder().decode(out.stdout).trim().split("\n")
    .map((l) => JSON.parse(l));
  assert.deepEqual(init, keepAlive);
  assert.deepEqual(Object.keys(init).sort(), ["notes.txt", "song.mp3"]);
  // Its newer notes.txt replaced ours, and the tracker recorded the address it really used.
  const d = await ours.ask({ port: 8001 });
  assert.deepEqual([d["song.mp3"].ip, d["song.mp3"].port], ["127.0.0.2", 8005]);
  assert.deepEqual([d["notes.txt"].ip, d["notes.txt"].mtime], ["127.0.0.2", 1700000500]);
});

Deno.test("tracker.ts runs as the course's tracker does: HOST PORT, nc, expiry in the log", async () => {
  await using script = await startScript("p2p/tracker.ts", [
    "127.0.0.1",
    "0",
    "--peer-timeout",
    "0.4",
    "--sweep-interval",
    "0.1",
  ]);
  assert.match(script.lines[0], /^tracker listening on 127\.0\.0\.1:\d+$/);
  const statusLine = await script.waitFor(/status page on http:\/\/127\.0\.0\.1:\d+\//);
  const init = `{"port": 8009, "files": [{"name": "a.txt", "mtime": ${MTIME}}]}\n`;
  let reply: string;
  if (haveCommand("nc")) {
    // As a student tries it: nc sends the line, half-closes, prints the answer.
    const nc = new Deno.Command("nc", {
      args: ["-N", "127.0.0.1", String(script.port)],
      stdin: "piped",
      stdout: "piped",
    }).spawn();
    const writer = nc.stdin.getWriter();
    await writer.write(new TextEncoder().encode(init));
    await writer.close();
    reply = new TextDecoder().decode((await nc.output()).stdout);
  } else {
    await using peer = await connectPeer(script.port);
    reply = (await peer.sendRaw(init.trimEnd())) + "\n";
  }
  assert.match(reply, /^\{"a\.txt": \{"ip": "127\.0\.0\.1", "port": 8009, "mtime": 1700000000, /);
  assert.ok(reply.endsWith("}\n"));
  await script.waitFor(/peer 127\.0\.0\.1:8009 joined with 1 file/);
  await script.waitFor(/peer 127\.0\.0\.1:8009 expired after/, 3000);
  const stats = await (await fetch(`${/http:\S+\//.exec(statusLine)![0]}stats`)).json();
  assert.equal(stats.peers.length, 0);
  assert.deepEqual(stats.directory, {});
  assert.equal((await script.stop()).code, 0);
});

Deno.test("tracker.ts prints usage for --help and exits 2 on bad arguments", async () => {
  const runs = await Promise.all([
    ["--help"],
    ["--port", "abc"],
    ["--peer-timeout", "0"],
    ["--sweep-interval", "soon"],
    ["--bogus"],
    ["127.0.0.1"],
    ["127.0.0.1", "9000", "extra"],
    ["127.0.0.1", "9000", "--port", "9001"],
    ["127.0.0.1", "99999"],
  ].map((args) => runScript("p2p/tracker.ts", args)));
  const help = runs.shift()!;
  assert.equal(help.code, 0);
  assert.match(
    new TextDecoder().decode(help.stdout),
    /^usage: deno run --allow-net p2p\/tracker\.ts/,
  );
  for (const run of runs) {
    assert.equal(run.code, 2, run.stderr);
    const lines = run.stderr.trim().split("\n");
    assert.match(lines[0], /^error: /, run.stderr);
    assert.match(lines[1], /^usage: /);
    assert.ok(!run.stderr.includes("    at "), `no stack trace: ${run.stderr}`);
  }
});
