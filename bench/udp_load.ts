#!/usr/bin/env -S deno run --allow-net
/**
 * The UDP benchmark's load generator. It runs in a process of its own, so
 * the server under test keeps its CPU to itself, and prints one JSON line.
 *
 * Two tests, one per run, each for `--seconds`:
 * - `rtt`: one datagram of `--size` bytes at a time; wait for its echo, then
 *   send the next. A datagram with no echo within `--timeout-ms` counts as
 *   lost and the next one goes out.
 * - `window`: `--window` datagrams in flight at once; each echo lets a new
 *   datagram out. One with no echo within `--timeout-ms` counts as lost and
 *   is replaced, so the window never shrinks.
 *
 * Every datagram starts with its sequence number (4 bytes, big-endian), so
 * a late echo is told apart from the one awaited and never counted twice.
 * The socket is `node:dgram`, as in udp_echo_server.ts: stable Deno, only
 * `--allow-net`.
 *
 * Run: `deno run --allow-net bench/udp_load.ts --port 8001 --test rtt --seconds 5`
 *
 * @module
 */

import dgram from "node:dgram";
import {
  parseChoice,
  parseCli,
  parseCount,
  parseHost,
  parsePort,
  runMain,
  UsageError,
} from "../lib/cli.ts";

/** The tests this script runs. */
export const UDP_TESTS = ["rtt", "window"] as const;

/** Which test. */
export type UdpTest = typeof UDP_TESTS[number];

/** Bytes of the sequence number at the start of every datagram. */
const SEQ_BYTES = 4;
/** Kernel receive buffer asked for, in bytes: the same as the servers ask for. */
const SOCKET_BUFFER_BYTES = 1024 * 1024;
/** How often the window test looks for datagrams past their timeout, in ms. */
const SWEEP_MS = 10;

/** What one run measured. */
export interface UdpLoadResult {
  test: UdpTest;
  /** Datagrams sent. */
  sent: number;
  /** Datagrams whose echo came back whole and in time. */
  echoed: number;
  /** Datagrams with no echo within the timeout. */
  lost: number;
  /** Echoes of the wrong length (counted apart, never as echoed). */
  bad: number;
  /** Datagrams still in flight when time was up (neither echoed nor lost). */
  inFlight: number;
  /** Wall-clock seconds of the run. */
  seconds: number;
  /** `rtt`: round trips per second. */
  roundTripsPerSec?: number;
  /** `window`: echoed datagrams per second. */
  datagramsPerSec?: number;
  /** `rtt`: round-trip time percentiles, in ms. */
  p50Ms?: number;
  p99Ms?: number;
  maxMs?: number;
}

/** Options shared by both tests. */
export interface UdpLoadOptions {
  /** The echo server's address. @default {"127.0.0.1"} */
  hostname?: string;
  /** Its UDP port. */
  port: number;
  /** How long to run, in seconds. @default {5} */
  seconds?: number;
  /** Bytes per datagram, at least 4 (the sequence number). @default {32} */
  size?: number;
  /** Milliseconds to wait for an echo before counting it lost. @default {200} */
  timeoutMs?: number;
  /** `window`: datagrams in flight at once. @default {64} */
  window?: number;
}

/** A bound client socket, a datagram maker and a way to read a sequence number. */
async function openSocket(hostname: string): Promise<dgram.Socket> {
  const socket = dgram.createSocket({
    type: hostname.includes(":") ? "udp6" : "udp4",
    recvBufferSize: SOCKET_BUFFER_BYTES,
  });
  // Bound before the clock starts, so the first send is not queued behind bind().
  await new Promise<void>((resolve, reject) => {
    socket.once("error", reject);
    socket.bind(0, hostname.includes(":") ? "::1" : "127.0.0.1", () => {
      socket.off("error", reject);
      resolve();
    });
  });
  return socket;
}

/** A fresh datagram of `size` bytes carrying `seq` (fresh: send() may still hold the last one). */
function datagram(seq: number, size: number): Uint8Array {
  const data = new Uint8Array(size);
  new DataView(data.buffer).setUint32(0, seq);
  data.fill(0x55, SEQ_BYTES);
  return data;
}

function seqOf(data: Uint8Array): number {
  return data.length < SEQ_BYTES
    ? -1
    : new DataView(data.buffer, data.byteOffset, data.byteLength).getUint32(0);
}

function closeSocket(socket: dgram.Socket): Promise<void> {
  return new Promise((resolve) => socket.close(() => resolve()));
}

/** The `rtt` test: one datagram at a time. */
export async function runRtt(options: UdpLoadOptions): Promise<UdpLoadResult> {
  const hostname = options.hostname ?? "127.0.0.1";
  const size = options.size ?? 32;
  const timeoutMs = options.timeoutMs ?? 200;
  const socket = await openSocket(hostname);
  let awaited = -1;
  let arrived: ((ok: boolean) => void) | null = null;
  let bad = 0;
  socket.on("message", (data: Uint8Array) => {
    // A late echo of a datagram already counted lost is ignored.
    if (seqOf(data) !== awaited || !arrived) return;
    if (data.length !== size) bad++;
    arrived(data.length === size);
    arrived = null;
  });
  const rtts: number[] = [];
  let sent = 0;
  let lost = 0;
  const started = performance.now();
  const deadline = started + (options.seconds ?? 5) * 1000;
  try {
    while (performance.now() < deadline) {
      const seq = sent++;
      awaited = seq;
      const t0 = performance.now();
      let timer: ReturnType<typeof setTimeout> | undefined;
      const outcome = await new Promise<"echo" | "bad" | "lost">((resolve) => {
        arrived = (ok) => resolve(ok ? "echo" : "bad");
        timer = setTimeout(() => resolve("lost"), timeoutMs);
        socket.send(datagram(seq, size), options.port, hostname);
      });
      clearTimeout(timer);
      arrived = null;
      if (outcome === "echo") rtts.push(performance.now() - t0);
      else if (outcome === "lost") lost++;
    }
  } finally {
    await closeSocket(socket);
  }
  const seconds = (performance.now() - started) / 1000;
  rtts.sort((a, b) => a - b);
  const at = (q: number) =>
    rtts.length ? rtts[Math.min(rtts.length - 1, Math.ceil(q * rtts.length) - 1)] : undefined;
  return {
    test: "rtt",
    sent,
    echoed: rtts.length,
    lost,
    bad,
    inFlight: 0,
    seconds,
    roundTripsPerSec: rtts.length / seconds,
    p50Ms: at(0.5),
    p99Ms: at(0.99),
    maxMs: rtts[rtts.length - 1],
  };
}

/** The `window` test: `window` datagrams in flight at once. */
export async function runWindow(options: UdpLoadOptions): Promise<UdpLoadResult> {
  const hostname = options.hostname ?? "127.0.0.1";
  const size = options.size ?? 64;
  const timeoutMs = options.timeoutMs ?? 200;
  const window = options.window ?? 64;
  const socket = await openSocket(hostname);
  // Sequence number to send time, in send order, so the oldest come first in a sweep.
  const inFlight = new Map<number, number>();
  let sent = 0;
  let echoed = 0;
  let lost = 0;
  let bad = 0;
  let running = true;
  const sendOne = () => {
    const seq = sent++;
    inFlight.set(seq, performance.now());
    socket.send(datagram(seq, size), options.port, hostname);
  };
  socket.on("message", (data: Uint8Array) => {
    const seq = seqOf(data);
    if (!running || !inFlight.delete(seq)) return;
    if (data.length === size) echoed++;
    else bad++;
    sendOne();
  });
  const started = performance.now();
  const sweep = setInterval(() => {
    const now = performance.now();
    for (const [seq, at] of inFlight) {
      if (now - at < timeoutMs) break;
      inFlight.delete(seq);
      lost++;
      if (running) sendOne();
    }
  }, SWEEP_MS);
  for (let i = 0; i < window; i++) sendOne();
  await new Promise((resolve) => setTimeout(resolve, (options.seconds ?? 5) * 1000));
  running = false;
  const seconds = (performance.now() - started) / 1000;
  clearInterval(sweep);
  await closeSocket(socket);
  return {
    test: "window",
    sent,
    echoed,
    lost,
    bad,
    inFlight: inFlight.size,
    seconds,
    datagramsPerSec: echoed / seconds,
  };
}

const USAGE = `usage: deno run --allow-net bench/udp_load.ts --port N --test rtt|window [options]
  --host ADDR       server address (default 127.0.0.1)
  --port N          server's UDP port
  --test NAME       rtt | window
  --seconds N       how long to run (default 5)
  --size N          bytes per datagram, at least 4 (rtt: 32, window: 64)
  --window N        window: datagrams in flight at once (default 64)
  --timeout-ms N    wait this long for an echo before counting it lost (default 200)`;

async function main(): Promise<void> {
  const { values } = parseCli(Deno.args, USAGE, {
    host: { type: "string", default: "127.0.0.1" },
    port: { type: "string" },
    test: { type: "string" },
    seconds: { type: "string", default: "5" },
    size: { type: "string" },
    window: { type: "string", default: "64" },
    "timeout-ms": { type: "string", default: "200" },
  });
  if (values.port === undefined || values.test === undefined) {
    throw new UsageError("--port and --test are required");
  }
  const test = parseChoice(values.test as string, "--test", UDP_TESTS);
  const options: UdpLoadOptions = {
    hostname: parseHost(values.host as string, "--host"),
    port: parsePort(values.port as string, "--port", 1),
    seconds: parseCount(values.seconds as string, "--seconds"),
    size: values.size === undefined
      ? (test === "rtt" ? 32 : 64)
      : parseCount(values.size as string, "--size", SEQ_BYTES, 65_507),
    window: parseCount(values.window as string, "--window"),
    timeoutMs: parseCount(values["timeout-ms"] as string, "--timeout-ms"),
  };
  const result = test === "rtt" ? await runRtt(options) : await runWindow(options);
  console.log(JSON.stringify(result));
}

if (import.meta.main) runMain(USAGE, main);
