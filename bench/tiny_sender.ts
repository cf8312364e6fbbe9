#!/usr/bin/env -S deno run --allow-net
/**
 * The hostile part's tiny-segment client: one connection with TCP_NODELAY
 * that writes one byte at a time as fast as it can for `--seconds`, and
 * never reads. An echo server (or a proxy in front of one) then gets a
 * segment per byte and cannot send the echo back, so whatever it does not
 * hold back piles up in its memory.
 *
 * Once the server stops taking bytes, a write waits; the process gives up
 * `GRACE_SECONDS` after `--seconds` whatever happens. It prints one JSON
 * line: the bytes (= writes) the kernel took.
 *
 * Run: `deno run --allow-net bench/tiny_sender.ts --port 8001 --seconds 10`
 *
 * @module
 */

import { parseCli, parsePort, parseSeconds, runMain, UsageError } from "../lib/cli.ts";

/** Seconds after `--seconds` that a pending write may take before the process exits. */
const GRACE_SECONDS = 2;

/** What one run did. */
export interface TinySenderResult {
  /** One-byte writes that completed. */
  bytes: number;
  /** Seconds spent writing. */
  seconds: number;
  /** Completed writes per second. */
  writesPerSec: number;
  /** Whether the last write was still waiting at the end (the server stopped taking bytes). */
  blocked: boolean;
  /** What ended the connection early, if anything. */
  error?: string;
}

/** Sends one byte at a time to `hostname:port` for `seconds`; see the module docs. */
export async function sendTiny(
  hostname: string,
  port: number,
  seconds: number,
): Promise<TinySenderResult> {
  const conn = await Deno.connect({ hostname, port });
  // Every write leaves as a segment of its own: no Nagle coalescing.
  conn.setNoDelay(true);
  const one = new Uint8Array([0x2e]);
  let bytes = 0;
  let error: string | undefined;
  const started = performance.now();
  const stopAt = started + seconds * 1000;
  let writing = true;
  const writer = (async () => {
    try {
      while (performance.now() < stopAt) bytes += await conn.write(one);
    } catch (err) {
      error = (err as Error).message;
    } finally {
      writing = false;
    }
  })();
  let giveUp: ReturnType<typeof setTimeout> | undefined;
  const gaveUp = new Promise<void>((resolve) => {
    giveUp = setTimeout(resolve, (seconds + GRACE_SECONDS) * 1000);
  });
  await Promise.race([writer, gaveUp]);
  clearTimeout(giveUp);
  const elapsed = Math.min(performance.now(), stopAt) - started;
  const blocked = writing;
  // A write still waiting fails once the connection closes; that is expected here.
  conn.close();
  await writer;
  return {
    bytes,
    seconds: elapsed / 1000,
    writesPerSec: bytes / (elapsed / 1000),
    blocked,
    ...(error && !blocked ? { error } : {}),
  };
}

const USAGE = `usage: deno run --allow-net bench/tiny_sender.ts --port N [options]
  --host ADDR     server address (default 127.0.0.1)
  --port N        server port
  --seconds S     how long to keep writing (default 10)`;

async function main(): Promise<void> {
  const { values } = parseCli(Deno.args, USAGE, {
    host: { type: "string", default: "127.0.0.1" },
    port: { type: "string" },
    seconds: { type: "string", default: "10" },
  });
  if (values.port === undefined) throw new UsageError("--port is required");
  const result = await sendTiny(
    values.host as string,
    parsePort(values.port as string, "--port"),
    parseSeconds(values.seconds as string, "--seconds"),
  );
  console.log(JSON.stringify(result));
}

if (import.meta.main) runMain(USAGE, main);
