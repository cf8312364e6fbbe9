/**
 * The guest half of the concurrency mechanism: loads the handler named by
 * the host, then runs it once per `open` message on a {@linkcode RemoteConn}.
 * Shared by the Worker entry (`guest_worker.ts`) and the child-process entry
 * (`guest_child.ts`); they differ only in how messages travel.
 *
 * @module
 */

import { errorMessage } from "./cli.ts";
import { type ConnectionHandler, loadHandler, runHandler } from "./handler.ts";
import { type GuestMessage, type HostMessage, type Link, RemoteConn } from "./mux.ts";

/**
 * Runs handlers for the host on the other end of `link`; returns the
 * function that routes each incoming host message.
 */
export function startGuest(link: Link<GuestMessage>): (message: HostMessage) => void {
  const conns = new Map<number, RemoteConn>();
  let handler: ConnectionHandler<unknown> | null = null;
  let options: unknown = undefined;
  const log = (line: string) => link.send({ t: "log", line });

  async function run(conn: RemoteConn): Promise<void> {
    await runHandler(handler!, conn, { options, log });
    conns.delete(conn.id);
  }

  return async (message) => {
    if (message.t === "init") {
      try {
        handler = await loadHandler(message.handler);
      } catch (err) {
        // One line for the host to report (once, however often it retries), not a stack trace.
        link.send({ t: "failed", reason: `could not load the handler: ${errorMessage(err)}` });
        return;
      }
      options = message.options;
      link.send({ t: "ready" });
    } else if (message.t === "open") {
      const conn = new RemoteConn(message.id, message.remote, message.local, link);
      conns.set(message.id, conn);
      run(conn);
    } else {
      conns.get(message.id)?.receive(message);
    }
  };
}
