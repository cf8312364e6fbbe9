/**
 * The accept loop every server here shares: take connections off a
 * listener until it closes, hand each to a function, and keep going whatever
 * one client does.
 *
 * Errors from `accept()` are sorted the way Go's `net/http` sorts them:
 *
 * - An error that belongs to one connection (the client reset before Deno
 *   read its address, which Deno reports as `NotConnected`, os error 107; or
 *   `ConnectionAborted`, `ConnectionReset`, `Interrupted`) is counted and
 *   skipped at once. A port scanner or a killed load tool must not pause the
 *   loop for everyone else.
 * - Running out of file descriptors (`EMFILE`, `ENFILE`) is the one case
 *   where waiting helps: the loop backs off, 5 ms doubling to 1 s, and logs
 *   at most one line a second about it.
 * - With `maxConns`, the loop stops accepting while that many connections are
 *   open, rather than accepting clients only to close them. By default it
 *   also closes the listening socket until one finishes, so the next client
 *   is refused at once ("Connection refused") instead of hanging (one
 *   that had just connected and was still in the kernel's queue gets a
 *   reset); the address is listened on again as soon as a slot is free. With
 *   `whenFull: "queue"` the socket stays open and the next clients wait in
 *   the kernel's queue until one finishes (haproxy's `maxconn`, and the
 *   handout's one-at-a-time server).
 *
 * @example
 * ```ts
 * import { acceptEach } from "./accept.ts";
 * const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
 * const loop = acceptEach(listener, async (conn) => {
 *   await conn.write(new TextEncoder().encode("hello\n"));
 *   conn.close();
 * });
 * loop.close();
 * await loop.settled();
 * ```
 * @module
 */

import { type Log, printLog } from "./log.ts";
import { closeQuietly } from "./net.ts";

/** First wait after running out of file descriptors; it doubles while the shortage lasts. */
const BACKOFF_FIRST_MS = 5;
/** Longest wait between two tries to accept while out of file descriptors. */
const BACKOFF_MAX_MS = 1_000;
/** At most one log line per this many milliseconds about the same kind of accept error. */
const LOG_EVERY_MS = 1_000;

/** Error classes `accept()` throws for a failure of one incoming connection, not of the listener. */
const ONE_CONNECTION_ERRORS = [
  Deno.errors.NotConnected,
  Deno.errors.ConnectionAborted,
  Deno.errors.ConnectionReset,
  Deno.errors.Interrupted,
];

/** Error codes that mean "no file descriptor left": worth a pause, not a spin. */
const OUT_OF_DESCRIPTORS = ["EMFILE", "ENFILE"];

/** What an accept loop has done so far. */
export interface AcceptStats {
  /** Connections accepted and handed over. */
  accepted: number;
  /** Connections being served now. */
  active: number;
  /** Connections that failed before they could be served (reset before accept, and the like). */
  skipped: number;
  /** Pauses taken because the process ran out of file descriptors (or could not listen again after a full spell). */
  backoffs: number;
  /** Times the loop stopped accepting because `maxConns` connections were open. */
  fullPauses: number;
}

/**
 * What a full server (`maxConns` connections open) does with the next
 * client: `"refuse"` closes the listening socket until a slot is free, so
 * the client is refused at once; `"queue"` leaves it waiting in the
 * kernel's queue.
 */
export type WhenFull = "refuse" | "queue";

/** Options for {@linkcode acceptEach}. */
export interface AcceptOptions {
  /** Most connections served at once. 0: no limit. @default {0} */
  maxConns?: number;
  /** What happens to clients beyond `maxConns`. @default {"refuse"} */
  whenFull?: WhenFull;
  /** Where the loop's own lines go. @default {printLog} */
  log?: Log;
  /** Counters to update (a server may share them with its callers). @default {fresh counters} */
  stats?: AcceptStats;
}

/** A running accept loop. */
export interface AcceptLoop {
  /** Live counters. */
  readonly stats: AcceptStats;
  /** Stops accepting and closes the listening socket (the one in use, if it was replaced). */
  close(): void;
  /** Resolves once the listener is closed and every handed-over connection has been served. */
  settled(): Promise<void>;
}

/** Fresh, zeroed counters. */
export function newAcceptStats(): AcceptStats {
  return { accepted: 0, active: 0, skipped: 0, backoffs: 0, fullPauses: 0 };
}

/**
 * Accepts connections from `listener` until {@linkcode AcceptLoop.close}
 * (or, without `maxConns`, until the listener is closed), and calls
 * `serve(conn)` for each, without waiting for it: many connections are
 * served at once. TCP_NODELAY is set on each connection first, since every
 * server here writes small replies that should leave at once.
 *
 * `serve` owns the connection and must close it; if it throws, the
 * connection is closed for it and the error is logged.
 */
export function acceptEach(
  listener: Deno.Listener<Deno.TcpConn, Deno.NetAddr>,
  serve: (conn: Deno.TcpConn) => Promise<void>,
  options: AcceptOptions = {},
): AcceptLoop {
  const log = options.log ?? printLog;
  const maxConns = options.maxConns ?? 0;
  const refuseWhenFull = (options.whenFull ?? "refuse") === "refuse";
  const stats = options.stats ?? newAcceptStats();
  const live = new Set<Promise<void>>();
  /** The socket accepted on: the caller's, or a fresh one on its address after a full spell. */
  let current = listener;
  let stopped = false;
  /** Wakes the loop while it waits for a free slot (a connection ended, or close()). */
  let slotFreed: (() => void) | null = null;
  const skippedNote = new RateLimitedNote(log);
  const backoffNote = new RateLimitedNote(log);
  const fullNote = new RateLimitedNote(log);

  function handOver(conn: Deno.TcpConn): void {
    stats.accepted++;
    stats.active++;
    const job = (async () => {
      try {
        await serve(conn);
      } catch (err) {
        log(`serving a connection failed: ${(err as Error)?.message ?? err}`);
        closeQuietly(conn);
      }
    })().finally(() => {
      stats.active--;
      live.delete(job);
      const wake = slotFreed;
      slotFreed = null;
      wake?.();
    });
    live.add(job);
  }

  async function loop(): Promise<void> {
    let backoffMs = 0;
    while (true) {
      if (maxConns > 0 && stats.active >= maxConns) {
        stats.fullPauses++;
        fullNote.say(() =>
          `serving ${stats.active} connections (the most allowed): ` +
          (refuseWhenFull
            ? "refusing new clients until one finishes"
            : "new clients wait until one finishes")
        );
        // Refuse: with no socket listening, the kernel answers the next SYN with a reset.
        if (refuseWhenFull) closeQuietly(current);
        await new Promise<void>((resolve) => slotFreed = resolve);
        if (stopped) return;
        if (refuseWhenFull) {
          const reopened = await listenAgain(current.addr);
          if (reopened === null) return;
          current = reopened;
          // close() may have come while the socket was being opened: it closed the old one.
          if (stopped) {
            closeQuietly(current);
            return;
          }
        }
        continue;
      }
      let conn: Deno.TcpConn;
      try {
        conn = await current.accept();
      } catch (err) {
        if (err instanceof Deno.errors.BadResource) return; // the listener was closed
        if (ONE_CONNECTION_ERRORS.some((E) => err instanceof E)) {
          stats.skipped++;
          skippedNote.say(
            (n) =>
              `skipped ${n} connection(s) that failed before they were accepted (${brief(err)})`,
          );
          continue;
        }
        // Out of descriptors, or something unknown: wait a little, longer each time, never spin.
        stats.backoffs++;
        backoffMs = Math.min(Math.max(BACKOFF_FIRST_MS, backoffMs * 2), BACKOFF_MAX_MS);
        const why = OUT_OF_DESCRIPTORS.includes((err as { code?: string }).code ?? "")
          ? "out of file descriptors"
          : brief(err);
        backoffNote.say((n) => `accept failed ${n} time(s): ${why}; retrying in ${backoffMs} ms`);
        await new Promise((resolve) => setTimeout(resolve, backoffMs));
        continue;
      }
      backoffMs = 0;
      try {
        // Small replies go out at once instead of waiting for an ACK (Nagle's algorithm, which
        // with delayed ACKs held request/response traffic up to 40 ms here).
        conn.setNoDelay(true);
      } catch {
        // The client is gone already: nothing to serve.
        stats.skipped++;
        closeQuietly(conn);
        continue;
      }
      handOver(conn);
    }
  }

  /** Listens on `addr` again after a full spell, retrying with backoff; null once stopped. */
  async function listenAgain(addr: Deno.NetAddr): Promise<Deno.TcpListener | null> {
    let waitMs = BACKOFF_FIRST_MS;
    while (!stopped) {
      try {
        return Deno.listen({ hostname: addr.hostname, port: addr.port, transport: "tcp" });
      } catch (err) {
        // Another program took the port meanwhile, say: keep trying, say so once a second.
        stats.backoffs++;
        backoffNote.say((n) =>
          `listening on port ${addr.port} again failed ${n} time(s): ${brief(err)}; retrying`
        );
        await new Promise((resolve) => setTimeout(resolve, waitMs));
        waitMs = Math.min(waitMs * 2, BACKOFF_MAX_MS);
      }
    }
    return null;
  }

  const accepting = loop();
  return {
    stats,
    close() {
      stopped = true;
      closeQuietly(current);
      const wake = slotFreed;
      slotFreed = null;
      wake?.();
    },
    async settled() {
      await accepting;
      while (live.size > 0) await Promise.allSettled([...live]);
    },
  };
}

/** An error's message without its os error number noise, for a log line. */
function brief(err: unknown): string {
  return err instanceof Error ? `${err.name}: ${err.message}` : String(err);
}

/**
 * Counts events and logs about them at most once per {@linkcode LOG_EVERY_MS}:
 * the first at once, later ones summed into the next line.
 */
class RateLimitedNote {
  #count = 0;
  #lastAt = -Infinity;

  constructor(readonly log: Log) {}

  say(line: (count: number) => string): void {
    this.#count++;
    const now = performance.now();
    if (now - this.#lastAt < LOG_EVERY_MS) return;
    this.#lastAt = now;
    this.log(line(this.#count));
    this.#count = 0;
  }
}
