#!/usr/bin/env -S deno run --allow-net
/**
 * The hostile part's well-behaved clients: `--concurrency` loops that each
 * run one short connection after another for `--seconds`, and one JSON line
 * with the connections completed per second and their latency (connect to
 * the last byte read).
 *
 * - `--kind echo`: `echo_load.ts`'s `conns` cycle (connect, send a short
 *   line, half-close, read the echo to the end, close).
 * - `--kind http`: an HTTP GET of `--path` with `Connection: close` (through
 *   the proxy to a local origin), read to the end; it counts when the reply
 *   is a `200` of at least `--min-bytes` bytes.
 *
 * Every loop stops starting connections after `--seconds`; a connection
 * still open `GRACE_SECONDS` later is counted as stuck and the process exits
 * anyway, so a server that stops answering cannot hold up the benchmark.
 *
 * Run: `deno run --allow-net bench/good_clients.ts --port 8001 --seconds 5`
 *
 * @module
 */

import {
  parseChoice,
  parseCli,
  parseCount,
  parsePort,
  parseSeconds,
  runMain,
  UsageError,
} from "../lib/cli.ts";
import { writeAll } from "../lib/net.ts";
import { runConns } from "./echo_load.ts";

/** The kinds of client. */
export const KINDS = ["echo", "http"] as const;

/** Seconds after `--seconds` that connections still open may take before the process exits. */
const GRACE_SECONDS = 5;

/** Bytes per read of an HTTP reply. */
const READ_BYTES = 64 * 1024;

/** What one run measured. */
export interface GoodClientsResult {
  kind: typeof KINDS[number];
  concurrency: number;
  /** Connections that completed as they should. */
  ok: number;
  /** Connections that failed or came back wrong. */
  errors: number;
  /** Connections still open when the process gave up on them. */
  stuck: number;
  /** Seconds from the first connection until every loop finished (or gave up). */
  seconds: number;
  /** Completed connections per second. */
  connsPerSec: number;
  /** Latency of the completed connections, in ms. */
  p50Ms: number | null;
  p99Ms: number | null;
  maxMs: number | null;
  /** The first error seen, for the report. */
  firstError?: string;
}

/** One HTTP GET with `Connection: close`; throws unless a 200 of `minBytes` came back. */
async function httpCycle(
  hostname: string,
  port: number,
  request: Uint8Array,
  minBytes: number,
  buffer: Uint8Array,
): Promise<void> {
  const conn = await Deno.connect({ hostname, port });
  try {
    await writeAll(conn, request);
    let total = 0;
    let head = "";
    while (true) {
      const n = await conn.read(buffer);
      if (n === null) break;
      if (head.length < 12) head += new TextDecoder().decode(buffer.subarray(0, n));
      total += n;
    }
    if (!head.startsWith("HTTP/1.1 200") && !head.startsWith("HTTP/1.0 200")) {
      throw new Error(`reply began ${JSON.stringify(head.slice(0, 12))}, not a 200`);
    }
    if (total < minBytes) throw new Error(`reply had ${total} of at least ${minBytes} bytes`);
  } finally {
    conn.close();
  }
}

function percentile(sorted: number[], q: number): number | null {
  if (sorted.length === 0) return null;
  return sorted[Math.min(sorted.length - 1, Math.ceil(q * sorted.length) - 1)];
}

/** Options for {@linkcode runGoodClients}. */
export interface GoodClientsOptions {
  hostname: string;
  port: number;
  kind: typeof KINDS[number];
  /** Loops at once. */
  concurrency: number;
  /** Seconds during which loops start new connections. */
  seconds: number;
  /** `http`: the path to GET. */
  path: string;
  /** `http`: the fewest bytes a good reply has (headers and body). */
  minBytes: number;
}

/** Runs the loops; see the module docs. */
export async function runGoodClients(options: GoodClientsOptions): Promise<GoodClientsResult> {
  const { hostname, port, kind, concurrency } = options;
  const request = new TextEncoder().encode(
    `GET ${options.path} HTTP/1.1\r\nHost: ${hostname}\r\nConnection: close\r\n\r\n`,
  );
  const latencies: number[] = [];
  let errors = 0;
  let inFlight = 0;
  let firstError: string | undefined;
  const started = performance.now();
  const stopAt = started + options.seconds * 1000;
  const loop = async () => {
    const buffer = new Uint8Array(READ_BYTES);
    while (performance.now() < stopAt) {
      const t0 = performance.now();
      inFlight++;
      try {
        if (kind === "echo") {
          // One connection of echo_load.ts's `conns` test.
          const one = await runConns(hostname, port, 1);
          if (one.errors > 0) throw new Error(one.firstError ?? "echo failed");
        } else {
          await httpCycle(hostname, port, request, options.minBytes, buffer);
        }
        latencies.push(performance.now() - t0);
      } catch (err) {
        errors++;
        firstError ??= (err as Error).message;
      } finally {
        inFlight--;
      }
    }
  };
  let giveUp: ReturnType<typeof setTimeout> | undefined;
  const gaveUp = new Promise<void>((resolve) => {
    giveUp = setTimeout(resolve, (options.seconds + GRACE_SECONDS) * 1000);
  });
  await Promise.race([Promise.all(Array.from({ length: concurrency }, loop)), gaveUp]);
  clearTimeout(giveUp);
  const seconds = (performance.now() - started) / 1000;
  latencies.sort((a, b) => a - b);
  return {
    kind,
    concurrency,
    ok: latencies.length,
    errors,
    stuck: inFlight,
    seconds,
    connsPerSec: latencies.length / seconds,
    p50Ms: percentile(latencies, 0.5),
    p99Ms: percentile(latencies, 0.99),
    maxMs: latencies.at(-1) ?? null,
    firstError,
  };
}

const USAGE = `usage: deno run --allow-net bench/good_clients.ts --port N [options]
  --host ADDR        server address (default 127.0.0.1)
  --port N           server port
  --kind NAME        echo | http (default echo)
  --concurrency N    loops at once (default 4)
  --seconds N        seconds of load (default 5)
  --path PATH        http: the path to GET (default /1k)
  --min-bytes N      http: the fewest bytes of a good reply (default 1024)`;

async function main(): Promise<number> {
  const { values } = parseCli(Deno.args, USAGE, {
    host: { type: "string", default: "127.0.0.1" },
    port: { type: "string" },
    kind: { type: "string", default: "echo" },
    concurrency: { type: "string", default: "4" },
    seconds: { type: "string", default: "5" },
    path: { type: "string", default: "/1k" },
    "min-bytes": { type: "string", default: "1024" },
  });
  if (values.port === undefined) throw new UsageError("--port is required");
  const result = await runGoodClients({
    hostname: values.host as string,
    port: parsePort(values.port as string, "--port"),
    kind: parseChoice(values.kind as string, "--kind", KINDS),
    concurrency: parseCount(values.concurrency as string, "--concurrency"),
    seconds: parseSeconds(values.seconds as string, "--seconds"),
    path: values.path as string,
    minBytes: parseCount(values["min-bytes"] as string, "--min-bytes", 0),
  });
  console.log(JSON.stringify(result));
  // Exit at once: connections stuck on a server that stopped answering must not keep us alive.
  return 0;
}

if (import.meta.main) runMain(USAGE, main);
