/**
 * The peer's step 2 (handout 002, peer to tracker): connect to the tracker,
 * send Init with the file list, read the directory, then send a KeepAlive
 * every interval (with the list again only when it changed). Unlike the
 * course's peer it reconnects, waiting longer after each failure, when the
 * tracker goes away or restarts.
 *
 * - {@linkcode TrackerLink} is the connection: `exchange(files)` sends Init
 *   or KeepAlive and resolves to the tracker's reply (the directory, and
 *   the extensions' part when the tracker accepted any).
 * - {@linkcode repeatRounds} runs one round per interval and backs off after
 *   a tracker failure.
 *
 * @example
 * ```ts
 * import { TrackerLink } from "./tracker_link.ts";
 * const tracker = new TrackerLink({ tracker: { hostname: "127.0.0.1", port: 9000 }, port: 8000 });
 * const reply = await tracker.exchange([]); // Init with no files
 * console.log(Object.keys(reply.directory));
 * tracker.close();
 * ```
 * @module
 */

import { CliError, errorMessage, type HostPort } from "../lib/cli.ts";
import { LineReader } from "../lib/lines.ts";
import { type Log, printLog } from "../lib/log.ts";
import { closeQuietly, connectTo, formatAddr, writeAll } from "../lib/net.ts";
import {
  type DeletionInfo,
  DIRECTORY_MAX_LINE_BYTES,
  encodeLine,
  type FileInfo,
  parseTrackerReply,
  type TrackerReply,
} from "./protocol.ts";

/** What our peer adds to Init and to a changed file list (the course's tracker ignores it). */
export interface Extensions {
  /** This peer's id. */
  id: string;
  /** The extensions it asks for. */
  features: readonly string[];
  /** The deletions it made (sent with every file list). */
  deleted: DeletionInfo[];
}

/** First wait before reconnecting to the tracker; it doubles up to the maximum. */
const BACKOFF_FIRST_MS = 250;
const BACKOFF_MAX_MS = 10_000;
/** Seconds to wait for the tracker's reply, at least (3 intervals if longer). */
const TRACKER_REPLY_TIMEOUT_SECONDS = 10;
/** Seconds to wait for the tracker to accept the connection. */
const CONNECT_TIMEOUT_SECONDS = 5;

/** Something went wrong with the tracker connection: reconnect. */
export class TrackerError extends Error {
  override name = "TrackerError";
}

/** Options for {@linkcode TrackerLink}. */
export interface TrackerLinkOptions {
  /** The tracker's address. */
  tracker: HostPort;
  /** The port this peer serves files on, sent in every message. */
  port: number;
  /** Seconds between rounds: the reply timeout is 3 of them when that is longer. @default {5} */
  interval?: number;
  /** Counters to add to: `connects` counts each (re)connection. */
  stats?: { connects: number };
  /** Where lines go. @default {console.log} */
  log?: Log;
}

/** The peer's connection to the tracker: one message out, one directory back. */
export class TrackerLink {
  /** The tracker's address. */
  readonly tracker: HostPort;
  #port: number;
  #interval: number;
  #stats: { connects: number };
  #log: Log;
  #closed = false;
  #conn: { conn: Deno.TcpConn; lines: LineReader; self: string } | null = null;
  /** The file list as last sent to the tracker (JSON), to resend it only when it changed. */
  #announced: string | null = null;

  /** A link that connects on its first {@linkcode TrackerLink.exchange}. */
  constructor(options: TrackerLinkOptions) {
    this.tracker = options.tracker;
    this.#port = options.port;
    this.#interval = (options.interval ?? 5) * 1000;
    this.#stats = options.stats ?? { connects: 0 };
    this.#log = options.log ?? printLog;
  }

  /** This peer's `ip:port` as the tracker sees it, while connected. */
  get self(): string | undefined {
    return this.#conn?.self;
  }

  /** Whether {@linkcode TrackerLink.close} was called: the peer is stopping. */
  get closed(): boolean {
    return this.#closed;
  }

  /**
   * Sends Init with `files` on a new connection (connecting first), or a
   * KeepAlive on an open one, carrying `files` only when they changed since
   * the last message; resolves to the directory the tracker answers with.
   *
   * @throws {TrackerError} or {@linkcode CliError} when the tracker cannot be reached or answers badly.
   */
  async exchange(files: FileInfo[], extensions?: Extensions): Promise<TrackerReply> {
    const snapshot = JSON.stringify([files, extensions?.deleted]);
    const withFiles = () => ({
      port: this.#port,
      files,
      ...(extensions
        ? { id: extensions.id, features: extensions.features, deleted: extensions.deleted }
        : {}),
    });
    let message: { port: number; files?: FileInfo[] };
    if (this.#conn === null) {
      await this.#connect();
      message = withFiles();
      this.#log(
        `connected to tracker ${formatAddr(this.tracker)}; sent Init with ${files.length} file(s)`,
      );
    } else if (snapshot !== this.#announced) {
      message = withFiles();
      this.#log(`file list changed: sent KeepAlive with ${files.length} file(s)`);
    } else {
      message = { port: this.#port };
    }
    const reply = await this.#ask(message);
    this.#announced = snapshot;
    return reply;
  }

  /** Sends the file list again with the next message, even if it did not change. */
  resend(): void {
    this.#announced = null;
  }

  /** Closes the connection; the next exchange reconnects and sends Init. */
  drop(): void {
    if (this.#conn === null) return;
    closeQuietly(this.#conn.conn);
    this.#conn = null;
  }

  /** Closes the connection for good: the peer is stopping. */
  close(): void {
    this.#closed = true;
    this.drop();
  }

  async #connect(): Promise<void> {
    const { hostname, port } = this.tracker;
    const conn = await connectTo(hostname, port, CONNECT_TIMEOUT_SECONDS);
    this.#conn = {
      conn,
      lines: new LineReader(conn, DIRECTORY_MAX_LINE_BYTES),
      // The tracker knows us by the address it sees on this socket.
      self: formatAddr({ hostname: conn.localAddr.hostname, port: this.#port }),
    };
    this.#announced = null;
    this.#stats.connects++;
  }

  /** Sends one message and reads the directory it is answered with. */
  async #ask(message: unknown): Promise<TrackerReply> {
    const tracker = this.#conn!;
    const limit = Math.max(TRACKER_REPLY_TIMEOUT_SECONDS, (3 * this.#interval) / 1000);
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      this.drop();
    }, limit * 1000);
    try {
      await writeAll(tracker.conn, encodeLine(message));
      const line = await tracker.lines.readLine();
      if (line === null) throw new TrackerError("it closed the connection");
      return parseTrackerReply(line);
    } catch (err) {
      if (err instanceof TrackerError) throw err;
      if (timedOut) throw new TrackerError(`no directory within ${limit} s`);
      if (this.#closed) throw err;
      throw new TrackerError(
        err instanceof Deno.errors.BadResource ? "connection lost" : errorMessage(err),
      );
    } finally {
      clearTimeout(timer);
    }
  }
}

/** A running {@linkcode repeatRounds} loop. */
export interface Rounds {
  /** Stops the loop (closing the tracker link) and waits for the round under way. */
  stop(): Promise<void>;
}

/**
 * Runs `round` now and then once per interval: the peer's rhythm of
 * KeepAlives. A tracker failure (a {@linkcode TrackerError} or a
 * {@linkcode CliError} from connecting) drops the connection and waits
 * longer before each new try, 250 ms doubling to 10 s; any other failure is
 * logged and the next round comes on time.
 *
 * @example
 * ```ts
 * import { repeatRounds, TrackerLink } from "./tracker_link.ts";
 * const tracker = new TrackerLink({ tracker: { hostname: "127.0.0.1", port: 9000 }, port: 8000 });
 * const rounds = repeatRounds(tracker, async () => console.log((await tracker.exchange([])).directory));
 * await rounds.stop();
 * ```
 */
export function repeatRounds(
  link: TrackerLink,
  round: () => Promise<void>,
  options: { interval?: number; log?: Log } = {},
): Rounds {
  const interval = (options.interval ?? 5) * 1000;
  const log = options.log ?? printLog;
  let stopping = false;
  let wake: (() => void) | null = null;

  function sleep(ms: number): Promise<void> {
    if (stopping) return Promise.resolve();
    return new Promise((resolve) => {
      const timer = setTimeout(done, ms);
      function done() {
        clearTimeout(timer);
        resolve();
      }
      wake = done;
    });
  }

  // One round per interval; after a tracker failure, wait longer each time.
  async function loop(): Promise<void> {
    let backoff = BACKOFF_FIRST_MS;
    while (!stopping) {
      let wait = interval;
      try {
        await round();
        backoff = BACKOFF_FIRST_MS;
      } catch (err) {
        if (stopping) break;
        const where = formatAddr(link.tracker);
        if (err instanceof TrackerError || err instanceof CliError) {
          link.drop();
          // Some randomness, so that peers of a restarted tracker do not all return at once.
          wait = backoff * (0.75 + Math.random() / 2);
          log(`tracker ${where}: ${err.message}; reconnecting in ${(wait / 1000).toFixed(1)} s`);
          backoff = Math.min(backoff * 2, BACKOFF_MAX_MS);
        } else {
          log(`sync round failed: ${errorMessage(err)}`);
        }
      }
      await sleep(wait);
    }
  }

  const running = loop();
  return {
    stop() {
      stopping = true;
      wake?.();
      link.close();
      return running;
    },
  };
}
