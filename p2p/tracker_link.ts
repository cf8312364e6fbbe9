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
 * Extension "parts" (`PROTOCOL.md`): a file list goes in parts of at most
 * {@linkcode PART_BYTES}; Init carries the first one (with `"more": true`),
 * and the rest follow only once the tracker said it takes parts (else the
 * next KeepAlive carries the whole list in one line, as the course's tracker
 * expects). The directory then comes as pages of changes since the revision
 * this link holds: it keeps its copy of the directory for as long as the
 * connection lasts, and asks again while the tracker says there is more.
 *
 * Extension "push": once the tracker accepted it (with "parts"), the wait
 * between rounds is a KeepAlive with `"wait"` that the tracker answers when
 * its directory changes ({@linkcode TrackerLink.poll}); a message sent
 * meanwhile (a change here) gets the held reply first, then its own.
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
  type DeletedEntry,
  type DeletionInfo,
  DIRECTORY_MAX_LINE_BYTES,
  type DirectoryEntry,
  encodeJson,
  encodeLine,
  type FileInfo,
  parseTrackerReply,
  type TrackerReply,
} from "./protocol.ts";
import { PART_BYTES, splitIntoParts } from "./pages.ts";

/** What our peer adds to Init and to a changed file list (the course's tracker ignores it). */
export interface Extensions {
  /** This peer's id. */
  id: string;
  /** The extensions it asks for. */
  features: readonly string[];
  /** The deletions it made (sent with every file list). */
  deleted: DeletionInfo[];
  /**
   * Downloads in progress, reported to our tracker's status page (see
   * `PROTOCOL.md`, "transfers"): sent only to a tracker whose reply had the
   * `"/"` entry, at most once a round, and once empty when they are over.
   */
  transfers?: readonly TransferReport[];
}

/** One download in progress as the peer reports it (`fetch.ts`'s `Transfer`). */
export interface TransferReport {
  name: string;
  /** The holder, `ip:port`. */
  from: string;
  bytes: number;
  size: number;
  /** Bytes per second. */
  rate: number;
}

/** Downloads one report carries at most: our tracker takes 50 (`MAX_TRANSFERS`). */
const MAX_REPORTED_TRANSFERS = 50; // entries

/** First wait before reconnecting to the tracker; it doubles up to the maximum. */
const BACKOFF_FIRST_MS = 250;
const BACKOFF_MAX_MS = 10_000;
/** Seconds to wait for the tracker's reply, at least (3 intervals if longer). */
const TRACKER_REPLY_TIMEOUT_SECONDS = 10;
/**
 * Extension "push": a held KeepAlive answered with nothing new sooner than
 * this (or than half the wait) was not held: the rest of the wait is plain.
 */
const MIN_HOLD_MS = 1_000;
/** Seconds to wait for the tracker to accept the connection. */
const CONNECT_TIMEOUT_SECONDS = 5;
/**
 * Pages of directory changes asked for in one round at most (extension
 * "parts"): 1,000 pages are two million entries. Past it the round plans
 * with what it has and the next round goes on from there.
 */
const MAX_PAGES_PER_ROUND = 1_000;

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
  /** The file list as last sent to the tracker in full, to resend it only when it changed. */
  #announced: { files: FileInfo[]; deleted: DeletionInfo[] | undefined } | null = null;
  /** Extension "parts": the tracker's last reply on this connection accepted it. */
  #parts = false;
  /** Extension "parts": this connection's copy of the directory, kept up to date by pages. */
  #directory: Record<string, DirectoryEntry> = Object.create(null);
  #deleted: Record<string, DeletedEntry> = Object.create(null);
  /** Extension "parts": the revision of that copy (0: nothing yet). */
  #since = 0;
  /** The last reply as handed out (with this connection's copy of the directory). */
  #last: TrackerReply | null = null;
  /** Extension "push": the tracker's last reply accepted "push" and "parts". */
  #push = false;
  /** Extension "push": the held KeepAlive, until its reply is read; resolves to "it brought news". */
  #polling: Promise<boolean> | null = null;
  /** Extension "push": the last reply was a held KeepAlive's, and no message went since. */
  #fresh = false;
  /** Extension "push": that reply brought news that no exchange has handed out yet. */
  #unseen = false;
  /** Extension "transfers": the tracker's last reply had the `"/"` entry (it is one of ours). */
  #ours = false;
  /** Extension "transfers": the last report sent listed downloads (so an empty one is due). */
  #reporting = false;
  /** Extension "transfers": the report the next message carries, once. */
  #report: TransferReport[] | undefined;

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

  /**
   * Extension "push": whether the tracker's last reply on this connection
   * accepted it, so that {@linkcode TrackerLink.poll} may wait for news.
   */
  get pushing(): boolean {
    return this.#conn !== null && this.#push;
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
    const deleted = extensions?.deleted;
    const init = this.#conn === null;
    if (init) await this.#connect();
    else this.#report = this.#transferReport(extensions?.transfers);
    const last = this.#last;
    // Compared once: the list is long in a big folder.
    const unchanged = !init && this.#sameAsAnnounced(files, deleted);
    if (unchanged && (this.#polling !== null || this.#fresh) && last !== null && !last.more) {
      // Extension "push": nothing to say, and the tracker answers a held KeepAlive as soon as
      // anything changes: the copy here is as new as the tracker's, no message needed.
      this.#fresh = this.#unseen = false;
      return last;
    }
    let reply: TrackerReply;
    if (!unchanged) {
      // Init always goes in parts (the tracker's answer says whether it takes the rest); a
      // changed list goes in parts only to a tracker that said so, else whole, as the course's.
      const parts = init || this.#parts
        ? splitList(files, deleted ?? [])
        : [{ files, deleted: deleted ?? [] }];
      const say = (sent: number) =>
        `${files.length} file(s)` + (sent > 1 ? ` in ${sent} parts` : "");
      reply = await this.#ask(this.#listMessage(parts[0], parts.length > 1, extensions));
      let sent = 1;
      while (sent < parts.length && this.#parts) {
        reply = await this.#ask(this.#listMessage(parts[sent], sent < parts.length - 1));
        sent++;
      }
      if (init) {
        this.#log(
          `connected to tracker ${formatAddr(this.tracker)}; sent Init with ${
            sent === parts.length ? say(sent) : `the first ${parts[0].files.length} file(s)`
          }`,
        );
        if (sent < parts.length) {
          this.#log(
            `the tracker does not take a list in parts: the next KeepAlive carries all ${files.length}`,
          );
        }
      } else {
        this.#log(`file list changed: sent KeepAlive with ${say(sent)}`);
      }
      // Only a list sent in full counts as announced; else the next message sends it whole.
      this.#announced = sent === parts.length ? { files, deleted } : null;
    } else {
      reply = await this.#ask(this.#keepAlive());
    }
    // Extension "parts": the rest of the directory's changes, before anyone plans with it.
    for (let pages = 1; reply.more && pages < MAX_PAGES_PER_ROUND; pages++) {
      reply = await this.#ask(this.#keepAlive());
    }
    this.#fresh = this.#unseen = false;
    return reply;
  }

  /**
   * Extension "push" (only while {@linkcode TrackerLink.pushing}): sends a
   * KeepAlive that the tracker may hold for up to `seconds`, until its
   * directory changes; resolves to whether the reply brought news. While it
   * is held, calling it again returns the same wait, and an
   * {@linkcode TrackerLink.exchange} with nothing to say sends nothing (one
   * with a changed list interrupts the wait: its message goes at once).
   * News that no exchange has handed out yet resolves it at once.
   *
   * @throws {TrackerError} when the connection fails (the reply is late by a reply timeout).
   */
  poll(seconds: number): Promise<boolean> {
    if (this.#unseen) return Promise.resolve(true);
    if (this.#polling !== null) return this.#polling;
    const since = this.#since;
    const polling: Promise<boolean> = this.#ask(
      { port: this.#port, since, wait: seconds },
      seconds,
    ).then((reply) => {
      const news = reply.rev !== since || reply.reset === true || reply.more === true;
      this.#fresh = true;
      if (news) this.#unseen = true;
      return news;
    }).finally(() => {
      if (this.#polling === polling) this.#polling = null;
    });
    this.#polling = polling;
    return polling;
  }

  /**
   * Extension "transfers": the downloads to report this round, or
   * `undefined` for none: only to our tracker, and an empty list only once
   * after a report that had some (so the page stops showing them).
   */
  #transferReport(transfers: readonly TransferReport[] = []): TransferReport[] | undefined {
    if (!this.#ours || (transfers.length === 0 && !this.#reporting)) return undefined;
    this.#reporting = transfers.length > 0;
    return transfers.slice(0, MAX_REPORTED_TRANSFERS);
  }

  /** A KeepAlive: the port, and with "parts" the revision of the directory held here. */
  #keepAlive(): Record<string, unknown> {
    return this.#parts ? { port: this.#port, since: this.#since } : { port: this.#port };
  }

  /** One message with (a part of) the file list; Init's also says who we are and what we speak. */
  #listMessage(
    part: { files: FileInfo[]; deleted: DeletionInfo[] },
    more: boolean,
    extensions?: Extensions,
  ): Record<string, unknown> {
    return {
      port: this.#port,
      files: part.files,
      ...(extensions
        ? { id: extensions.id, features: extensions.features, deleted: part.deleted }
        : part.deleted.length > 0
        ? { deleted: part.deleted }
        : {}),
      ...(more ? { more: true } : {}),
      ...(this.#parts ? { since: this.#since } : {}),
    };
  }

  /** Whether `files` and `deleted` are what was last announced in full (compared field by field). */
  #sameAsAnnounced(files: FileInfo[], deleted: DeletionInfo[] | undefined): boolean {
    const last = this.#announced;
    if (last === null) return false;
    const sameFile = (a: FileInfo, b: FileInfo) =>
      a.name === b.name && a.mtime === b.mtime && a.size === b.size && a.sha256 === b.sha256 &&
      a.by === b.by && (a.history ?? []).join() === (b.history ?? []).join();
    const sameDeletion = (a: DeletionInfo, b: DeletionInfo) =>
      a.name === b.name && a.sha256 === b.sha256 && a.time === b.time;
    return sameList(last.files, files, sameFile) &&
      sameList(last.deleted ?? [], deleted ?? [], sameDeletion) &&
      (last.deleted === undefined) === (deleted === undefined);
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
    // A new connection knows nothing yet: its directory starts from revision 0.
    this.#parts =
      this.#push =
      this.#fresh =
      this.#unseen =
        false;
    this.#polling = this.#last = null;
    this.#directory = Object.create(null);
    this.#deleted = Object.create(null);
    this.#since = 0;
    this.#stats.connects++;
  }

  /**
   * Takes one reply in: a tracker with "parts" sends changes, which go into
   * this connection's copy (forgotten first on `reset`); any other sends the
   * whole directory, which is the answer as it is.
   */
  #take(reply: TrackerReply): TrackerReply {
    if (reply.error !== undefined) throw new TrackerError(reply.error);
    this.#ours = reply.features !== null;
    this.#parts = reply.features?.includes("parts") ?? false;
    this.#push = this.#parts && (reply.features?.includes("push") ?? false);
    if (!this.#parts) return this.#last = reply;
    if (reply.reset) {
      this.#directory = Object.create(null);
      this.#deleted = Object.create(null);
    }
    for (const name of reply.absent ?? []) {
      delete this.#directory[name];
      delete this.#deleted[name];
    }
    for (const [name, entry] of Object.entries(reply.directory)) {
      delete this.#deleted[name];
      this.#directory[name] = entry;
    }
    for (const [name, entry] of Object.entries(reply.deleted)) {
      delete this.#directory[name];
      this.#deleted[name] = entry;
    }
    this.#since = reply.rev ?? 0;
    return this.#last = { ...reply, directory: this.#directory, deleted: this.#deleted };
  }

  /**
   * Sends one message and reads the directory it is answered with. A held
   * KeepAlive (extension "push") is answered first: its reply is read before
   * this one's. `holdSeconds`: how long the tracker may hold this reply.
   */
  async #ask(message: unknown, holdSeconds = 0): Promise<TrackerReply> {
    const tracker = this.#conn!;
    const earlier = this.#polling;
    if (this.#report !== undefined) {
      // The round's report rides on its first message only (pages asked for after it go without).
      message = { ...(message as Record<string, unknown>), transfers: this.#report };
      this.#report = undefined;
    }
    const limit = Math.max(TRACKER_REPLY_TIMEOUT_SECONDS, (3 * this.#interval) / 1000) +
      holdSeconds;
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      this.drop();
    }, limit * 1000);
    try {
      await writeAll(tracker.conn, encodeLine(message));
      // Our message made the tracker answer the held KeepAlive at once: that reply comes first.
      if (earlier !== null) await earlier.catch(() => {});
      const line = await tracker.lines.readLine();
      if (line === null) throw new TrackerError("it closed the connection");
      // A reply read after a reconnect belongs to the old connection: not to this directory.
      if (this.#conn !== tracker) throw new TrackerError("connection lost");
      return this.#take(parseTrackerReply(line));
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

/**
 * A file list and its deletions cut into parts of at most
 * {@linkcode PART_BYTES} of JSON each (files first, then deletions).
 */
function splitList(
  files: FileInfo[],
  deleted: DeletionInfo[],
): { files: FileInfo[]; deleted: DeletionInfo[] }[] {
  const items: (FileInfo | DeletionInfo)[] = [...files, ...deleted];
  const parts = splitIntoParts(items, (item) => encodeJson(item).length, PART_BYTES);
  let at = 0;
  return parts.map((part) => {
    const from = at;
    at += part.length;
    const cut = Math.min(Math.max(files.length - from, 0), part.length);
    return { files: part.slice(0, cut) as FileInfo[], deleted: part.slice(cut) as DeletionInfo[] };
  });
}

/** Whether two lists hold the same items in the same order. */
function sameList<T>(a: readonly T[], b: readonly T[], same: (x: T, y: T) => boolean): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (!same(a[i], b[i])) return false;
  return true;
}

/** A running {@linkcode repeatRounds} loop. */
export interface Rounds {
  /** Stops the loop (closing the tracker link) and waits for the round under way. */
  stop(): Promise<void>;
  /**
   * Asks for a round soon (something changed here): at once when the loop
   * waits between rounds, else right after the round under way. It does not
   * cut short the wait after a tracker failure.
   */
  nudge(): void;
}

/**
 * Runs `round` now and then once per interval: the peer's rhythm of
 * KeepAlives. A tracker failure (a {@linkcode TrackerError} or a
 * {@linkcode CliError} from connecting) drops the connection and waits
 * longer before each new try, 250 ms doubling to 10 s; any other failure is
 * logged and the next round comes on time.
 *
 * Extension "push": while the tracker accepts it, the wait between rounds
 * is a KeepAlive it holds ({@linkcode TrackerLink.poll}), so a change on the
 * tracker starts the next round at once; the interval stays the longest
 * wait, and so the keep-alive period.
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
  /** A round was asked for since the last one began. */
  let nudged = false;
  /** Ends the wait under way (stop, or a nudge when `nudgeable`). */
  let wake: (() => void) | null = null;
  let nudgeable = false;

  /**
   * Waits `ms` between rounds, less when nudged, stopped, or (extension
   * "push") told of news by the tracker. After a tracker failure only
   * stopping ends the wait early.
   */
  async function idle(ms: number, afterFailure: boolean): Promise<void> {
    const deadline = performance.now() + ms;
    let answeredAtOnce = false;
    nudgeable = !afterFailure;
    while (!stopping && !(nudged && nudgeable)) {
      const left = deadline - performance.now();
      if (left <= 0) break;
      let timer: ReturnType<typeof setTimeout> | undefined;
      const asked = performance.now();
      const news = await new Promise<boolean>((resolve) => {
        wake = () => resolve(false);
        if (!afterFailure && link.pushing && !answeredAtOnce) {
          // The held KeepAlive is the wait; a failure shows in the next round's exchange.
          link.poll(left / 1000).then(resolve, () => resolve(true));
        } else {
          timer = setTimeout(() => resolve(false), left);
        }
      });
      clearTimeout(timer);
      wake = null;
      if (news) break;
      // A tracker that answers a held KeepAlive at once with nothing new must not make us spin:
      // the rest of this wait is a plain one.
      answeredAtOnce = performance.now() - asked < Math.min(left / 2, MIN_HOLD_MS);
    }
    nudgeable = false;
  }

  // One round per interval; after a tracker failure, wait longer each time.
  async function loop(): Promise<void> {
    let backoff = BACKOFF_FIRST_MS;
    while (!stopping) {
      let wait = interval;
      let failed = false;
      nudged = false;
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
          failed = true;
        } else {
          log(`sync round failed: ${errorMessage(err)}`);
        }
      }
      await idle(wait, failed);
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
    nudge() {
      nudged = true;
      if (nudgeable) wake?.();
    },
  };
}
