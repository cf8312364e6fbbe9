#!/usr/bin/env -S deno run --allow-net
/**
 * A TCP echo server: every byte a client sends comes straight back, in order,
 * even after the client has half-closed its side.
 *
 * Run it: `deno run --allow-net echo_server.ts` (port 8001, like the lab).
 * Try it: `echo "Foobar" | nc localhost 8001 -q 1` prints `Foobar`.
 * Many clients at once: `--mode async` (default), `--mode worker` (add
 * `--allow-read=.`) or `--mode process` (add `--allow-read=. --allow-run`).
 *
 * Lab 2 steps answered: "echo server", "print information about what is
 * connected", "print whatever is sent", and "make it forking" (the modes).
 *
 * The socket core, top to bottom: {@linkcode startEchoServer} calls
 * `Deno.listen()` and hands the listener to `serve()`, which accepts each
 * client and runs {@linkcode echoHandler} on it: `read()` until it returns
 * `null`, `write()` every chunk back, `closeWrite()`.
 *
 * @module
 */

import { parseCli, runMain } from "./lib/cli.ts";
import {
  type ConnectionServer,
  type HandlerContext,
  serve,
  type ServerOptions,
} from "./lib/concurrency.ts";
import { elapsedMs, formatBytes, type Log, preview, silentLog } from "./lib/log.ts";
import {
  type Connection,
  explainListenError,
  formatAddr,
  READ_BUFFER_BYTES,
  writeAll,
} from "./lib/net.ts";
import { announceServer, readServerFlags, serverFlags, serverUsage } from "./lib/server_cli.ts";

/** Bytes of each connection shown as previews before the log goes quiet. */
const PREVIEW_BUDGET_BYTES = 4 * 1024;

/** How a connection ends when all went well. */
const CLEAN_ENDING = "client finished sending";

/** What the echo handler needs to know; the same in every mode. */
export interface EchoHandlerOptions {
  /** Log only errors: no per-connection lines. @default {false} */
  quiet?: boolean;
}

/**
 * Echoes one connection: read a chunk, write it back, until the client has
 * finished sending; then half-close our side so the client's read ends too.
 * Logs who connected, a short preview of what arrived, and the totals.
 *
 * @example
 * ```ts
 * import { echoHandler } from "./echo_server.ts";
 * const listener = Deno.listen({ port: 0 });
 * const conn = await listener.accept();
 * await echoHandler(conn, { options: {}, log: console.log });
 * ```
 */
export async function echoHandler(
  conn: Connection,
  { options, log }: HandlerContext<EchoHandlerOptions>,
): Promise<void> {
  const say: Log = options.quiet ? silentLog : log;
  const who = formatAddr(conn.remoteAddr);
  const started = performance.now();
  const buffer = new Uint8Array(READ_BUFFER_BYTES);
  let echoed = 0;
  let ending = CLEAN_ENDING;
  say(`Connected by ${who}`);
  try {
    while (true) {
      // read() gives null once the client has half-closed (the lab's empty recv()).
      const n = await conn.read(buffer);
      if (n === null) break;
      const chunk = buffer.subarray(0, n);
      if (!options.quiet && echoed < PREVIEW_BUDGET_BYTES) {
        say(`${who} sent ${n} B: ${preview(chunk)}`);
        if (echoed + n >= PREVIEW_BUDGET_BYTES) {
          say(`${who}: further data is echoed without a preview`);
        }
      }
      await writeAll(conn, chunk);
      echoed += n;
    }
    // Our reply is complete: half-close so the client sees the end of it.
    await conn.closeWrite();
  } catch (err) {
    ending = err instanceof Deno.errors.ConnectionReset
      ? "reset by the client"
      : `error: ${(err as Error).message}`;
  } finally {
    conn.close();
    // An ending other than the normal one is an error worth a line even with --quiet.
    const report = ending === CLEAN_ENDING ? say : log;
    report(`Closed ${who} (${ending}): echoed ${formatBytes(echoed)} in ${elapsedMs(started)}`);
  }
}

/** Options for {@linkcode startEchoServer}: the shared server options. */
export type EchoServerOptions = ServerOptions;

/**
 * Starts an echo server and resolves once it accepts connections.
 *
 * @example
 * ```ts
 * import { startEchoServer } from "./echo_server.ts";
 * await using server = await startEchoServer({ quiet: true });
 * console.log(`echoing on port ${server.addr.port}`);
 * ```
 */
export function startEchoServer(options: EchoServerOptions = {}): Promise<ConnectionServer> {
  const hostname = options.hostname ?? "127.0.0.1";
  const port = options.port ?? 0;

  // The handout's socket(), bind() and listen() are one call in Deno.
  let listener: Deno.TcpListener;
  try {
    listener = Deno.listen({ hostname, port, transport: "tcp" });
  } catch (err) {
    throw explainListenError(err, hostname, port);
  }

  // The handout's `while True: conn, addr = s.accept()`, then echo on conn: serve() runs
  // that loop (lib/accept.ts) and hands every accepted connection to echoHandler, inline or
  // in a Worker or child process, depending on the mode.
  return serve(listener, { module: import.meta.url, name: "echoHandler" }, {
    handlerOptions: { quiet: options.quiet ?? false } satisfies EchoHandlerOptions,
    mode: options.mode,
    poolSize: options.poolSize,
    maxConns: options.maxConns,
    whenFull: options.whenFull,
    log: options.log,
  });
}

const USAGE = `usage: deno run --allow-net echo_server.ts [options]
${serverUsage(8001)}`;

async function main(): Promise<void> {
  const { values } = parseCli(Deno.args, USAGE, serverFlags(8001));
  const server = await startEchoServer(readServerFlags(values));
  announceServer(server, "echo server");
  if (!values.quiet) {
    console.log(`try: echo "Foobar" | nc ${server.addr.hostname} ${server.addr.port} -q 1`);
  }
}

if (import.meta.main) runMain(USAGE, main);
