/**
 * The UDP echo server and pinger over real UDP sockets on loopback: exact
 * echoes up to the largest datagram, many senders at once without crosstalk,
 * `nc -u`, the pinger's summary against a server that drops on purpose, and
 * both scripts run as a student runs them.
 *
 * @module
 */

import assert from "node:assert/strict";
import dgram from "node:dgram";
import { haveCommand, randomBytes, runScript, startScript, withTimeout } from "./helpers.ts";
import { MAX_UDP_PAYLOAD, startUdpEchoServer } from "../udp_echo_server.ts";
import { formatSummary, ping } from "../udp_pinger.ts";

/** A client socket that collects every datagram it receives. */
interface UdpClient extends AsyncDisposable {
  send(data: Uint8Array): Promise<void>;
  /** Resolves with the next `n` datagrams received (fails after `ms`). */
  next(n: number, ms?: number): Promise<Uint8Array[]>;
}

async function udpClient(port: number, hostname = "127.0.0.1"): Promise<UdpClient> {
  const socket = dgram.createSocket(hostname.includes(":") ? "udp6" : "udp4");
  await new Promise<void>((resolve) => socket.bind(0, hostname, () => resolve()));
  const inbox: Uint8Array[] = [];
  let wake: (() => void) | undefined;
  socket.on("message", (data: Uint8Array) => {
    inbox.push(Uint8Array.from(data));
    wake?.();
  });
  return {
    send: (data) =>
      new Promise<void>((resolve, reject) =>
        socket.send(data, port, hostname, (err) => err ? reject(err) : resolve())
      ),
    next: (n, ms = 10_000) =>
      withTimeout(
        (async () => {
          while (inbox.length < n) await new Promise<void>((resolve) => wake = resolve);
          return inbox.splice(0, n);
        })(),
        ms,
        `waiting for ${n} datagrams`,
      ),
    [Symbol.asyncDispose]: () => new Promise<void>((resolve) => socket.close(() => resolve())),
  };
}

/** Whether this machine can bind the IPv6 loopback address. */
function haveIPv6Loopback(): boolean {
  try {
    Deno.listen({ hostname: "::1", port: 0 }).close();
    return true;
  } catch {
    return false;
  }
}

/** A UDP port with nobody on it a moment ago. */
async function closedUdpPort(): Promise<number> {
  const socket = dgram.createSocket("udp4");
  await new Promise<void>((resolve) => socket.bind(0, "127.0.0.1", () => resolve()));
  const { port } = socket.address();
  await new Promise<void>((resolve) => socket.close(() => resolve()));
  return port;
}

Deno.test("startUdpEchoServer() echoes datagrams of 0, 1, 1400 and 65,507 bytes exactly", async () => {
  await using server = await startUdpEchoServer({ quiet: true });
  await using client = await udpClient(server.addr.port);
  for (const size of [0, 1, 1400, MAX_UDP_PAYLOAD]) {
    const payload = randomBytes(size, size + 1);
    await client.send(payload);
    const [reply] = await client.next(1);
    assert.equal(reply.length, size, `a ${size}-byte datagram came back as ${reply.length} bytes`);
    assert.deepEqual(reply, payload);
  }
  assert.deepEqual(server.stats, { received: 4, echoed: 4, dropped: 0 });
});

Deno.test({
  name: "startUdpEchoServer() echoes over IPv6 loopback",
  ignore: !haveIPv6Loopback(),
  fn: async () => {
    await using server = await startUdpEchoServer({ hostname: "::1", quiet: true });
    assert.equal(server.addr.hostname, "::1");
    await using client = await udpClient(server.addr.port, "::1");
    const payload = new TextEncoder().encode("Foobar over IPv6");
    await client.send(payload);
    assert.deepEqual(await client.next(1), [payload]);
  },
});

Deno.test("startUdpEchoServer() sends each of 10 concurrent senders exactly its own 100 datagrams", async () => {
  await using server = await startUdpEchoServer({ quiet: true });
  const SENDERS = 10;
  const PER_SENDER = 100;
  const WINDOW = 10; // datagrams in flight per sender, so no socket buffer overflows
  const clients = await Promise.all(
    Array.from({ length: SENDERS }, () => udpClient(server.addr.port)),
  );
  try {
    await Promise.all(clients.map(async (client, sender) => {
      const got: string[] = [];
      for (let at = 0; at < PER_SENDER; at += WINDOW) {
        for (let i = at; i < at + WINDOW; i++) {
          await client.send(new TextEncoder().encode(`sender ${sender} datagram ${i}`));
        }
        for (const reply of await client.next(WINDOW)) got.push(new TextDecoder().decode(reply));
      }
      const expected = Array.from(
        { length: PER_SENDER },
        (_, i) => `sender ${sender} datagram ${i}`,
      );
      // UDP may reorder; what matters is that every reply is ours and none is missing.
      assert.deepEqual(got.toSorted(), expected.toSorted());
    }));
  } finally {
    await Promise.all(clients.map((client) => client[Symbol.asyncDispose]()));
  }
  assert.equal(server.stats.echoed, SENDERS * PER_SENDER);
});

Deno.test("startUdpEchoServer() rejects a loss outside 0..1", async () => {
  await assert.rejects(() => startUdpEchoServer({ loss: 2 }), RangeError);
  await assert.rejects(() => startUdpEchoServer({ loss: -0.1 }), RangeError);
});

Deno.test("ping() counts every third ping lost against a server that drops every third datagram", async () => {
  await using server = await startUdpEchoServer({ quiet: true, drop: (n) => n % 3 === 0 });
  const lines: string[] = [];
  const report = await ping({
    port: server.addr.port,
    count: 9,
    intervalSeconds: 0.01,
    timeoutSeconds: 0.5,
    log: (line) => lines.push(line),
  });
  assert.deepEqual(
    report.results.map((r) => r.rttMs === null ? "lost" : "ok"),
    ["ok", "ok", "lost", "ok", "ok", "lost", "ok", "ok", "lost"],
  );
  assert.equal(report.summary.transmitted, 9);
  assert.equal(report.summary.received, 6);
  assert.equal(report.summary.late, 0);
  assert.equal(report.summary.duplicates, 0);
  const [first, second] = formatSummary(report.summary);
  assert.match(first, /^9 packets transmitted, 6 received, 33\.3% packet loss, time \d+ ms$/);
  assert.match(second, /^rtt min\/avg\/max\/mdev = [\d.]+\/[\d.]+\/[\d.]+\/[\d.]+ ms$/);
  assert.ok(lines.includes("seq=3 timed out"), lines.join("\n"));
  assert.ok(
    lines.some((l) => /^reply from 127\.0\.0\.1:\d+: seq=1 time=[\d.]+ ms$/.test(l)),
    lines.join("\n"),
  );
  assert.equal(server.stats.dropped, 3);
});

Deno.test("ping() reports a late reply and a duplicate reply without counting them", async () => {
  // A misbehaving echo server: seq 1 comes back twice, seq 2 only after its timeout.
  const socket = dgram.createSocket("udp4");
  await new Promise<void>((resolve) => socket.bind(0, "127.0.0.1", () => resolve()));
  const timers = new Set<ReturnType<typeof setTimeout>>();
  socket.on("message", (data: Uint8Array, from: dgram.RemoteInfo) => {
    const text = new TextDecoder().decode(data);
    const copies = text.startsWith("PING seq=1 ") ? 2 : 1;
    const delay = text.startsWith("PING seq=2 ") ? 400 : 0;
    const timer = setTimeout(() => {
      timers.delete(timer);
      for (let i = 0; i < copies; i++) socket.send(data, from.port, from.address);
    }, delay);
    timers.add(timer);
  });
  try {
    const lines: string[] = [];
    const report = await ping({
      port: socket.address().port,
      count: 4,
      intervalSeconds: 0.3,
      timeoutSeconds: 0.2,
      log: (line) => lines.push(line),
    });
    const all = lines.join("\n");
    assert.deepEqual(report.results.map((r) => r.rttMs !== null), [true, false, true, true], all);
    assert.equal(report.summary.received, 3);
    assert.equal(report.summary.duplicates, 1);
    assert.equal(report.summary.late, 1);
    assert.match(all, /duplicate reply from 127\.0\.0\.1:\d+: seq=1 /);
    assert.match(all, /late reply from 127\.0\.0\.1:\d+: seq=2 /);
  } finally {
    for (const timer of timers) clearTimeout(timer);
    await new Promise<void>((resolve) => socket.close(() => resolve()));
  }
});

Deno.test("udp_echo_server.ts echoes what `nc -u` sends, as in its try line", {
  ignore: !haveCommand("nc"),
}, async () => {
  await using server = await startScript("udp_echo_server.ts", ["--port", "0"]);
  assert.match(server.lines[0], /^udp echo server listening on 127\.0\.0\.1:\d+ \(udp\)$/);
  const child = new Deno.Command("nc", {
    args: ["-u", "-w1", "127.0.0.1", String(server.port)],
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const writer = child.stdin.getWriter();
  await writer.write(new TextEncoder().encode("Foobar"));
  await writer.close();
  const out = await child.output();
  assert.equal(new TextDecoder().decode(out.stdout), "Foobar");
  await server.waitFor(/^127\.0\.0\.1:\d+ sent 6 B: "Foobar"$/);
  // Ctrl-C closes the socket and exits 0.
  assert.equal((await server.stop("SIGINT")).code, 0);
});

Deno.test("udp_pinger.ts against udp_echo_server.ts: every ping answered, exit 0", async () => {
  await using server = await startScript("udp_echo_server.ts", ["--port", "0", "--quiet"]);
  const run = await runScript("udp_pinger.ts", [
    "--port",
    String(server.port),
    "--count",
    "3",
    "--interval",
    "0.05",
    "--size",
    "1000",
  ]);
  const out = new TextDecoder().decode(run.stdout);
  assert.equal(run.code, 0, out + run.stderr);
  assert.match(out, /^3 packets transmitted, 3 received, 0% packet loss, time \d+ ms$/m);
  assert.match(out, /^rtt min\/avg\/max\/mdev = /m);
});

Deno.test("udp_pinger.ts against a closed port says nothing answered and exits 1", async () => {
  const port = await closedUdpPort();
  const run = await runScript("udp_pinger.ts", [
    "--port",
    String(port),
    "--count",
    "2",
    "--interval",
    "0.1",
    "--timeout",
    "0.2",
  ]);
  const out = new TextDecoder().decode(run.stdout);
  assert.equal(run.code, 1, out + run.stderr);
  assert.match(out, /^2 packets transmitted, 0 received, 100% packet loss/m);
  assert.doesNotMatch(out, /rtt/);
  assert.match(run.stderr, /^error: no reply from 127\.0\.0\.1:\d+: is a UDP echo server running/);
  assert.equal(run.stderr.trim().split("\n").length, 1, run.stderr);
});

Deno.test("udp_pinger.ts and udp_echo_server.ts refuse bad input with one line", async (t) => {
  const cases: { script: string; args: string[]; code: number; error: RegExp }[] = [
    {
      script: "udp_pinger.ts",
      args: ["--count", "0"],
      code: 2,
      error: /--count must be a whole number from 1 to 100000, got "0"/,
    },
    {
      script: "udp_echo_server.ts",
      args: ["--loss", "2"],
      code: 2,
      error: /--loss must be a fraction from 0 to 1 .*got "2"/,
    },
    {
      script: "udp_echo_server.ts",
      args: ["--loss", "-0.1"],
      code: 2,
      error: /--loss must be a fraction from 0 to 1 .*got "-0\.1"/,
    },
    {
      script: "udp_pinger.ts",
      args: ["--host", "nosuch.invalid"],
      code: 1,
      error: /cannot resolve host "nosuch\.invalid"/,
    },
  ];
  for (const c of cases) {
    await t.step(`${c.script} ${c.args.join(" ")}`, async () => {
      const run = await runScript(c.script, c.args);
      assert.equal(run.code, c.code, run.stderr);
      const first = run.stderr.split("\n")[0];
      assert.match(first, /^error: /);
      assert.match(first, c.error);
      if (c.code === 1) assert.equal(run.stderr.trim().split("\n").length, 1, run.stderr);
    });
  }
  for (const script of ["udp_pinger.ts", "udp_echo_server.ts"]) {
    await t.step(`${script} --help`, async () => {
      const run = await runScript(script, ["--help"]);
      assert.equal(run.code, 0);
      assert.match(
        new TextDecoder().decode(run.stdout),
        new RegExp(`^usage: deno run --allow-net ${script}`),
      );
    });
  }
});
