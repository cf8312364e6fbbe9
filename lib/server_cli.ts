/**
 * The command line every server script shares: the flags `--host`,
 * `--port`, `--mode`, `--workers`, `--max-conns`, `--queue` and `--quiet`, their usage
 * lines, and the start-up that prints "listening on" and stops on Ctrl-C.
 *
 * @example
 * ```ts
 * import { readServerFlags, serverFlags, serverUsage } from "./server_cli.ts";
 * import { parseCli } from "./cli.ts";
 * const USAGE = `usage: my_server.ts [options]\n${serverUsage(9000)}`;
 * const { values } = parseCli(Deno.args, USAGE, serverFlags(9000));
 * console.log(readServerFlags(values));
 * ```
 * @module
 */

import type { ParseArgsOptionsConfig } from "node:util";
import {
  exitOnSignal,
  parseChoice,
  parseCount,
  type ParsedCli,
  parseHost,
  parsePort,
  UsageError,
} from "./cli.ts";
import { type ConnectionServer, MAX_POOL_SIZE, MODES, type ServerOptions } from "./concurrency.ts";
import { formatAddr } from "./net.ts";

/** The shared server flags, for `parseCli()`. */
export function serverFlags(defaultPort: number): ParseArgsOptionsConfig {
  return {
    host: { type: "string", default: "127.0.0.1" },
    port: { type: "string", default: String(defaultPort) },
    mode: { type: "string", default: "async" },
    workers: { type: "string" },
    "max-conns": { type: "string" },
    queue: { type: "boolean", default: false },
    quiet: { type: "boolean", default: false },
  };
}

/** Usage lines for {@linkcode serverFlags}, in the same words for every script. */
export function serverUsage(defaultPort: number): string {
  return `  --host ADDR         address to listen on (default 127.0.0.1; 0.0.0.0 for all)
  --port N            port to listen on, 0 for any free one (default ${defaultPort})
  --mode MODE         async | worker | process (default async)
                      worker also needs --allow-read=.  process needs --allow-read=. --allow-run
  --workers N         workers or child processes kept warm, 1 to ${MAX_POOL_SIZE} (default: CPU
                      count, at least 2). Each Worker holds ~10 MB and each child ~30 MB, and each
                      serves many connections at once already: more add memory, not speed
  --max-conns N       serve at most N connections at once; while N are open, new clients
                      are refused at once (default: no limit)
  --queue             with --max-conns: new clients wait in the kernel's queue until one
                      finishes instead, like the handout's one-client-at-a-time server
  --quiet             print only the listening line and errors`;
}

/** Validates the shared flags' values. @throws {UsageError} on a bad value. */
export function readServerFlags(values: ParsedCli["values"]): ServerOptions {
  if (values.queue && values["max-conns"] === undefined) {
    throw new UsageError("--queue only changes what --max-conns does: give --max-conns N too");
  }
  return {
    hostname: parseHost(values.host as string, "--host"),
    port: parsePort(values.port as string, "--port"),
    mode: parseChoice(values.mode as string, "--mode", MODES),
    poolSize: values.workers === undefined ? undefined : parseWorkers(values.workers as string),
    maxConns: values["max-conns"] === undefined
      ? 0
      : parseCount(values["max-conns"] as string, "--max-conns"),
    whenFull: values.queue ? "queue" : "refuse",
    quiet: values.quiet as boolean,
  };
}

/**
 * Reads `--workers`: 1 to {@linkcode MAX_POOL_SIZE} (see `--help` for why there is a
 * ceiling).
 *
 * @example
 * ```ts
 * import { parseWorkers } from "./server_cli.ts";
 * parseWorkers("4"); // 4
 * ```
 */
export function parseWorkers(text: string, flag = "--workers"): number {
  return parseCount(text, flag, 1, MAX_POOL_SIZE);
}

/**
 * Arms Ctrl-C and SIGTERM (close every connection, exit 0), then prints
 * `NAME (MODE mode) listening on HOST:PORT` plus `details`. The handler comes
 * first: a script that stops us as soon as it sees the line must still get
 * a clean exit.
 */
export function announceServer(server: ConnectionServer, name: string, details = ""): void {
  exitOnSignal(async () => {
    console.log("stopping: closing live connections");
    await server.close();
  });
  console.log(`${name} (${server.mode} mode) listening on ${formatAddr(server.addr)}${details}`);
}
