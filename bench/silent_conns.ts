#!/usr/bin/env -S deno run --allow-net
/**
 * The hostile part's silent clients: `--count` TCP connections to a server
 * (the P2P tracker) that never send a byte, as a port scanner or a stuck
 * peer leaves them. It opens them all, prints `opened N of COUNT`, then
 * waits `--hold-seconds` while watching each one: a read that ends (or
 * fails) means the server closed it. Then it prints one JSON line with how
 * many the server closed, and when, and exits.
 *
 * Run: `deno run --allow-net bench/silent_conns.ts --port 9000 --count 5000 --hold-seconds 13`
 *
 * @module
 */

import { parseCli, parseCount, parsePort, parseSeconds, runMain, UsageError } from "../lib/cli.ts";

/** Connections opened at the same time (a batch waits for the previous one). */
const CONNECT_BATCH = 200;

/** What one run saw. */
export interface SilentConnsResult {
  /** Connections asked for. */
  count: number;
  /** Connections that opened. */
  opened: number;
  /** Seconds it took to open them. */
  openSeconds: number;
  /** Connections the server closed within the hold time. */
  closedByServer: number;
  /** Seconds from each closed connection's opening to its close: median and last. */
  closedAfterP50Seconds: number | null;
  closedAfterMaxSeconds: number | null;
  /** Seconds waited after every connection was open. */
  heldSeconds: number;
  /** The first failure to connect, if any. */
  firstError?: string;
}

/** Options for {@linkcode holdSilentConns}. */
export interface SilentConnsOptions {
  hostname: string;
  port: number;
  /** Connections to open. */
  count: number;
  /** Seconds to watch them once all are open. */
  holdSeconds: number;
  /** Called once every connection is open (or failed), with the count opened. */
  onOpen?: (opened: number) => void;
}

/** Opens silent connections, watches them for closes, then closes them all; see the module docs. */
export async function holdSilentConns(options: SilentConnsOptions): Promise<SilentConnsResult> {
  const conns: Deno.TcpConn[] = [];
  const closedAfter: number[] = [];
  const watchers: Promise<void>[] = [];
  let firstError: string | undefined;
  const watch = async (conn: Deno.TcpConn, openedAt: number) => {
    const buffer = new Uint8Array(1024);
    try {
      // The server sends nothing unasked; anything it does send is read past.
      while (await conn.read(buffer) !== null) { /* keep waiting */ }
    } catch {
      // A reset counts as a close too.
    }
    closedAfter.push((performance.now() - openedAt) / 1000);
  };
  const started = performance.now();
  for (let first = 0; first < options.count; first += CONNECT_BATCH) {
    const batch = Math.min(CONNECT_BATCH, options.count - first);
    await Promise.all(Array.from({ length: batch }, async () => {
      try {
        const conn = await Deno.connect({ hostname: options.hostname, port: options.port });
        conns.push(conn);
        watchers.push(watch(conn, performance.now()));
      } catch (err) {
        firstError ??= (err as Error).message;
      }
    }));
  }
  const openSeconds = (performance.now() - started) / 1000;
  options.onOpen?.(conns.length);
  const holdStarted = performance.now();
  await new Promise((resolve) => setTimeout(resolve, options.holdSeconds * 1000));
  const heldSeconds = (performance.now() - holdStarted) / 1000;
  // Counted before we close our side, which ends every watcher too.
  const closed = [...closedAfter].sort((a, b) => a - b);
  for (const conn of conns) {
    try {
      conn.close();
    } catch {
      // The watcher saw it end and it is closed already.
    }
  }
  await Promise.all(watchers);
  return {
    count: options.count,
    opened: conns.length,
    openSeconds,
    closedByServer: closed.length,
    closedAfterP50Seconds: closed.length ? closed[Math.ceil(closed.length / 2) - 1] : null,
    closedAfterMaxSeconds: closed.at(-1) ?? null,
    heldSeconds,
    ...(firstError ? { firstError } : {}),
  };
}

const USAGE = `usage: deno run --allow-net bench/silent_conns.ts --port N [options]
  --host ADDR        server address (default 127.0.0.1)
  --port N           server port
  --count N          connections to open (default 5000)
  --hold-seconds S   seconds to watch them once all are open (default 13)
Prints "opened N of COUNT" once they are open, then one JSON line.`;

async function main(): Promise<void> {
  const { values } = parseCli(Deno.args, USAGE, {
    host: { type: "string", default: "127.0.0.1" },
    port: { type: "string" },
    count: { type: "string", default: "5000" },
    "hold-seconds": { type: "string", default: "13" },
  });
  if (values.port === undefined) throw new UsageError("--port is required");
  const result = await holdSilentConns({
    hostname: values.host as string,
    port: parsePort(values.port as string, "--port"),
    count: parseCount(values.count as string, "--count"),
    holdSeconds: parseSeconds(values["hold-seconds"] as string, "--hold-seconds"),
    onOpen: (opened) => console.log(`opened ${opened} of ${values.count}`),
  });
  console.log(JSON.stringify(result));
}

if (import.meta.main) runMain(USAGE, main);
