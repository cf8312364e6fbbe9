/**
 * What a connection handler is, how it is found by URL, and how one run of
 * it is guarded: the same code in every mode, whether the handler runs on
 * the main thread, in a Web Worker or in a child process.
 *
 * @example
 * ```ts
 * import { loadHandler, runHandler } from "./handler.ts";
 * const handler = await loadHandler({ module: new URL("../echo_server.ts", import.meta.url).href, name: "echoHandler" });
 * const listener = Deno.listen({ port: 0 });
 * const conn = await listener.accept();
 * await runHandler(handler, conn, { options: {}, log: console.log });
 * ```
 * @module
 */

import type { Log } from "./log.ts";
import type { HandlerRef } from "./mux.ts";
import { closeQuietly, type Connection, formatAddr } from "./net.ts";

/** What a handler gets besides its connection. */
export interface HandlerContext<O> {
  /** The server's `handlerOptions`, as given (a structured clone off the main thread). */
  options: O;
  /** Prints a line through the server's log, from any mode. */
  log: Log;
}

/**
 * Serves one connection. It is the same function in every mode; it must not
 * assume anything about the thread or process it runs in.
 */
export type ConnectionHandler<O> = (
  conn: Connection,
  context: HandlerContext<O>,
) => Promise<void>;

/**
 * Imports the module and returns its exported handler.
 *
 * @throws {TypeError} when the module exports no function of that name.
 */
export async function loadHandler<O>(ref: HandlerRef): Promise<ConnectionHandler<O>> {
  const module = await import(ref.module);
  const handler = module[ref.name];
  if (typeof handler !== "function") {
    throw new TypeError(`${ref.module} exports no function "${ref.name}"`);
  }
  return handler;
}

/**
 * Runs the handler on one connection. Whatever it throws closes only this
 * connection, with a log line (unless `reportFailure()` says the server is
 * stopping and failures are expected); the connection is closed afterwards
 * in any case.
 */
export async function runHandler<O>(
  handler: ConnectionHandler<O>,
  conn: Connection,
  context: HandlerContext<O>,
  reportFailure: () => boolean = () => true,
): Promise<void> {
  try {
    await handler(conn, context);
  } catch (err) {
    if (reportFailure()) {
      context.log(
        `handler failed for ${formatAddr(conn.remoteAddr)}: ${(err as Error)?.message ?? err}`,
      );
    }
  } finally {
    closeQuietly(conn);
  }
}
