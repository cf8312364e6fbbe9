#!/usr/bin/env -S deno run --allow-net
/**
 * The proxy benchmark's origin: the project's local web server (`lib/origin.ts`,
 * HTTP/1.1 with keep-alive) serving a 1 KiB and a 10 MiB file, in a process of
 * its own so that the proxy under test keeps its CPU to itself.
 *
 * Run: `deno run --allow-net bench/origin_server.ts --port 0`; prints
 * "listening on HOST:PORT". Try: `curl -s http://127.0.0.1:PORT/1k | wc -c`.
 *
 * @module
 */

import { exitOnSignal, parseCli, parsePort, runMain } from "../lib/cli.ts";
import { formatAddr } from "../lib/net.ts";
import { startOrigin } from "../lib/origin.ts";

/** The files served, by path, with their sizes in bytes. */
export const ORIGIN_FILES = {
  "/1k": 1024,
  "/10m": 10 * 1024 * 1024,
} as const;

/** `n` bytes of printable filler that does not start with `<` (so it is served as binary). */
function filler(n: number): Uint8Array {
  const bytes = new Uint8Array(n);
  for (let i = 0; i < n; i++) bytes[i] = 0x61 + (i % 26);
  return bytes;
}

const USAGE = `usage: deno run --allow-net bench/origin_server.ts [--port N]
  --port N   port to listen on, 0 for any free one (default 0)
serves /1k (1 KiB) and /10m (10 MiB)`;

async function main(): Promise<void> {
  const { values } = parseCli(Deno.args, USAGE, {
    port: { type: "string", default: "0" },
  });
  const pages: Record<string, Uint8Array> = {};
  for (const [path, size] of Object.entries(ORIGIN_FILES)) pages[path] = filler(size);
  const origin = await startOrigin({ pages, port: parsePort(values.port as string, "--port") });
  console.log(`benchmark origin listening on ${formatAddr(origin.addr)}`);
  exitOnSignal(() => origin.close());
}

if (import.meta.main) runMain(USAGE, main);
