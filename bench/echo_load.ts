#!/usr/bin/env -S deno run --allow-net
/**
 * The echo benchmark's load generator. It runs in a process of its own, so
 * the server under test keeps its CPU to itself, and prints one JSON line.
 *
 * Three tests, one per run:
 * - `conns`: `--count` sequential connections, each connect, send a short
 *   line, half-close, read the echo to the end, close.
 * - `bulk`: `--bytes` on one connection, sent and read back at the same time.
 * - `burst`: `--count` connections at once; each sends `--bytes` and waits for
 *   the echo. Once every echo is back, all stay open for `--hold-ms` (so the
 *   server's memory can be sampled at its peak), then half-close and end.
 *
 * Run: `deno run --allow-net bench/echo_load.ts --port 8001 --test conns --count 2000`
 *
 * @module
 */

import { parseChoice, parseCli, parseCount, parsePort, runMain, UsageError } from "../lib/cli.ts";
import { writeAll } from "../lib/net.ts";

/** The tests this script runs. */
export const TESTS = ["conns", "bulk", "burst"] as const;

/** Which test. */
export type EchoTest = typeof TESTS[number];

/** Bytes per write and per read in the bulk test: large, so the client is cheap per byte. */
const BULK_CHUNK_BYTES = 1024 * 1024;

/** What one run measured; every figure is for the whole run. */
export interface EchoLoadResult {
  test: EchoTest;
  /** Connections that completed with every byte echoed. */
  ok: number;
  /** Connections that failed or came back short. */
  errors: number;
  /** Wall-clock seconds of the measured part. */
  seconds: number;
  /** `conns`: completed connections per second. */
  connsPerSec?: number;
  /** `bulk`: MiB echoed per second (each byte counted once). */
  mibPerSec?: number;
  /** `burst`: per-connection latency, connect to last echoed byte, in ms. */
  p50Ms?: number;
  p99Ms?: number;
  maxMs?: number;
  /** The first error seen, for the report. */
  firstError?: string;
}

/** Reads from `conn` until it ends; returns the byte count. */
async function drain(conn: Deno.Conn, buffer: Uint8Array): Promise<number> {
  let total = 0;
  while (true) {
    const n = await conn.read(buffer);
    if (n === null) return total;
    total += n;
  }
}

/** Reads exactly `want` bytes (fewer if the peer ends first); returns how many came. */
async function readExactly(conn: Deno.Conn, buffer: Uint8Array, want: number): Promise<number> {
  let got = 0;
  while (got < want) {
    const n = await conn.read(buffer.subarray(got, want));
    if (n === null) break;
    got += n;
  }
  return got;
}

function connect(hostname: string, port: number): Promise<Deno.TcpConn> {
  return Deno.connect({ hostname, port });
}

/** The `conns` test: one connection after another. */
export async function runConns(
  hostname: string,
  port: number,
  count: number,
): Promise<EchoLoadResult> {
  const message = new TextEncoder().encode("Foobar: one short line for the echo server\n");
  const buffer = new Uint8Array(4096);
  let ok = 0;
  let errors = 0;
  let firstError: string | undefined;
  const started = performance.now();
  for (let i = 0; i < count; i++) {
    let conn: Deno.TcpConn | undefined;
    try {
      conn = await connect(hostname, port);
      await writeAll(conn, message);
      await conn.closeWrite();
      const got = await drain(conn, buffer);
      if (got === message.length) ok++;
      else throw new Error(`echo came back with ${got} of ${message.length} bytes`);
    } catch (err) {
      errors++;
      firstError ??= (err as Error).message;
    } finally {
      conn?.close();
    }
  }
  const seconds = (performance.now() - started) / 1000;
  return { test: "conns", ok, errors, seconds, connsPerSec: ok / seconds, firstError };
}

/** The `bulk` test: `bytes` through one connection, both directions at once. */
export async function runBulk(
  hostname: string,
  port: number,
  bytes: number,
): Promise<EchoLoadResult> {
  const chunk = new Uint8Array(BULK_CHUNK_BYTES);
  for (let i = 0; i < chunk.length; i++) chunk[i] = (i * 31 + 7) & 0xff;
  const conn = await connect(hostname, port);
  try {
    const started = performance.now();
    const sending = (async () => {
      for (let sent = 0; sent < bytes; sent += chunk.length) {
        await writeAll(conn, chunk.subarray(0, Math.min(chunk.length, bytes - sent)));
      }
      await conn.closeWrite();
    })();
    const received = await drain(conn, new Uint8Array(BULK_CHUNK_BYTES));
    await sending;
    const seconds = (performance.now() - started) / 1000;
    const ok = received === bytes ? 1 : 0;
    return {
      test: "bulk",
      ok,
      errors: 1 - ok,
      seconds,
      mibPerSec: received / (1024 * 1024) / seconds,
      firstError: ok ? undefined : `echoed ${received} of ${bytes} bytes`,
    };
  } finally {
    conn.close();
  }
}

/** The `burst` test: `count` connections at once, `bytes` each. */
export async function runBurst(
  hostname: string,
  port: number,
  count: number,
  bytes: number,
  holdMs: number,
): Promise<EchoLoadResult> {
  const message = new Uint8Array(bytes);
  for (let i = 0; i < bytes; i++) message[i] = 0x41 + (i % 26);
  const latencies: number[] = [];
  let errors = 0;
  let firstError: string | undefined;
  let allEchoed!: () => void;
  const everyEcho = new Promise<void>((resolve) => allEchoed = resolve);
  let settled = 0;
  const settle = () => {
    if (++settled === count) allEchoed();
  };
  const started = performance.now();
  const one = async () => {
    const t0 = performance.now();
    let conn: Deno.TcpConn | undefined;
    let counted = false;
    try {
      conn = await connect(hostname, port);
      const buffer = new Uint8Array(bytes);
      await writeAll(conn, message);
      const got = await readExactly(conn, buffer, bytes);
      if (got !== bytes) throw new Error(`echo came back with ${got} of ${bytes} bytes`);
      latencies.push(performance.now() - t0);
      counted = true;
      settle();
      // Everybody stays connected until the last echo is back, plus the hold.
      await everyEcho;
      await new Promise((resolve) => setTimeout(resolve, holdMs));
      await conn.closeWrite();
      await drain(conn, buffer);
    } catch (err) {
      errors++;
      firstError ??= (err as Error).message;
      if (!counted) settle();
    } finally {
      conn?.close();
    }
  };
  await Promise.all(Array.from({ length: count }, one));
  const seconds = (performance.now() - started - holdMs) / 1000;
  latencies.sort((a, b) => a - b);
  const at = (q: number) =>
    latencies[Math.min(latencies.length - 1, Math.ceil(q * latencies.length) - 1)];
  return {
    test: "burst",
    ok: count - errors,
    errors,
    seconds,
    p50Ms: at(0.5),
    p99Ms: at(0.99),
    maxMs: latencies[latencies.length - 1],
    firstError,
  };
}

const USAGE =
  `usage: deno run --allow-net bench/echo_load.ts --port N --test conns|bulk|burst [options]
  --host ADDR      server address (default 127.0.0.1)
  --port N         server port
  --test NAME      conns | bulk | burst
  --count N        connections (conns: 2000, burst: 500)
  --bytes N        bytes to echo (bulk: 536870912, burst: 4096)
  --hold-ms N      burst: how long all connections stay open after the last echo (default 300)`;

async function main(): Promise<void> {
  const { values } = parseCli(Deno.args, USAGE, {
    host: { type: "string", default: "127.0.0.1" },
    port: { type: "string" },
    test: { type: "string" },
    count: { type: "string" },
    bytes: { type: "string" },
    "hold-ms": { type: "string", default: "300" },
  });
  if (values.port === undefined || values.test === undefined) {
    throw new UsageError("--port and --test are required");
  }
  const host = values.host as string;
  const port = parsePort(values.port as string, "--port");
  const test = parseChoice(values.test as string, "--test", TESTS);
  const number = (flag: string, fallback: number) =>
    values[flag] === undefined ? fallback : parseCount(values[flag] as string, `--${flag}`);
  let result: EchoLoadResult;
  if (test === "conns") result = await runConns(host, port, number("count", 2000));
  else if (test === "bulk") result = await runBulk(host, port, number("bytes", 512 * 1024 * 1024));
  else {
    result = await runBurst(
      host,
      port,
      number("count", 500),
      number("bytes", 4096),
      parseCount(values["hold-ms"] as string, "--hold-ms", 0),
    );
  }
  console.log(JSON.stringify(result));
}

if (import.meta.main) runMain(USAGE, main);
