#!/usr/bin/env -S deno run --allow-net
/**
 * The P2P file synchronizer's tracker: peers tell it which files they share,
 * and after every message it answers with the directory of who holds the
 * newest copy of each file. Wire-compatible with the course's Python tracker
 * and peers (see `PROTOCOL.md`), without its flaws.
 *
 * Run it: `deno run --allow-net p2p/tracker.ts` (port 9000), or as the
 * course's tracker is run: `deno run --allow-net p2p/tracker.ts 0.0.0.0 9000`.
 * Try it: `echo '{"port": 8001, "files": [{"name": "a.txt", "mtime": 1700000000}]}' | nc 127.0.0.1 9000 -q 1`
 * prints the directory; `http://127.0.0.1:9001/` shows the live peers.
 *
 * Handout 002 ("peer-to-peer file synchronizer"), the tracker part. This
 * file is the socket side: listen, accept, read each connection's lines,
 * write the replies, sweep on a timer. What each message does to the peers
 * and the directory is decided in `tracker_state.ts` (pure, no sockets); the
 * status page is `status_page.ts`.
 *
 * @module
 */

import {
  CliError,
  exitOnSignal,
  parseCli,
  parseHost,
  parsePort,
  parseSeconds,
  runMain,
  UsageError,
} from "../lib/cli.ts";
import { acceptEach } from "../lib/accept.ts";
import { LineReader, LineTooLongError } from "../lib/lines.ts";
import { type Log, printLog } from "../lib/log.ts";
import { closeQuietly, formatAddr, listenOn, writeAll } from "../lib/net.ts";
import {
  encodeLine,
  META_KEY,
  parsePeerMessage,
  ProtocolError,
  TRACKER_MAX_LINE_BYTES,
} from "./protocol.ts";
import { StatusEvents, statusResponse } from "./status_page.ts";
import {
  type EncodedDirectory,
  type Link,
  type Now,
  ownAddressFor,
  parseTransfers,
  peerIp,
  sample,
  TrackerState,
  type TrackerStats,
} from "./tracker_state.ts";

export {
  MAX_LISTED_HOLDERS,
  type PathStats,
  type PeerStats,
  type TrackerCounters,
  type TrackerStats,
} from "./tracker_state.ts";

/** The course's tracker forgets a peer after this much silence. */
export const DEFAULT_PEER_TIMEOUT_SECONDS = 180;

/** The course's tracker looks for expired peers this often. */
export const DEFAULT_SWEEP_INTERVAL_SECONDS = 10;

/**
 * A directory reply that the peer has not taken in full after this long
 * closes its connection: a peer that sends but never reads would otherwise
 * hold a blocked write (and the reply's buffers) for ever. At 30 s a 1 MiB
 * directory needs about 35 KB/s.
 */
export const DEFAULT_SEND_TIMEOUT_SECONDS = 30;

/**
 * Extension "push": the longest a reply is held for news, whatever `"wait"`
 * asked (and at most a third of the peer timeout, so a held peer never
 * expires): a peer hears from the tracker at least this often.
 */
export const MAX_HOLD_SECONDS = 60;

/** Options for {@linkcode startTracker}. */
export interface TrackerOptions {
  /** Address to bind. @default {"127.0.0.1"} */
  hostname?: string;
  /** Port for peers; 0 picks a free one. @default {0} */
  port?: number;
  /**
   * Port of the status page; 0 picks a free one, `null` serves none.
   * @default {port + 1, or 0 when port is 0}
   */
  httpPort?: number | null;
  /**
   * Seconds of silence after which a peer and its files are dropped, and a
   * connection that sent no complete message in that time is closed. @default {180}
   */
  peerTimeoutSeconds?: number;
  /** Seconds between two looks for expired peers. @default {10} */
  sweepIntervalSeconds?: number;
  /**
   * Seconds a peer has to take one whole directory reply; a reply not
   * written by then closes that connection. @default {30}
   */
  sendTimeoutSeconds?: number;
  /** Longest message line accepted; longer ones close that connection. @default {TRACKER_MAX_LINE_BYTES} */
  maxLineBytes?: number;
  /** Leave out the per-message and per-connection lines. @default {false} */
  quiet?: boolean;
  /**
   * Seconds a deletion is kept and shown (extension "versions"); also how
   * long a path nobody holds is remembered. @default {30 days (TOMBSTONE_TTL_MS)}
   */
  tombstoneTtlSeconds?: number;
  /**
   * Most files one peer's list may hold (extension "parts" lets a list pass
   * the line limit); a larger one is refused with its reason. @default {MAX_LIST_FILES} (1,000,000)
   */
  maxListFiles?: number;
  /** Where lines go. @default {console.log} */
  log?: Log;
}

/** A running tracker. */
export interface Tracker extends AsyncDisposable {
  /** Where peers connect. */
  readonly addr: Deno.NetAddr;
  /** Where the status page is, or `null` when there is none. */
  readonly httpAddr: Deno.NetAddr | null;
  /** A snapshot of peers, directory and counters. */
  stats(): TrackerStats;
  /** Stops accepting, closes every connection and the status page, and waits for them. */
  close(): Promise<void>;
}

/** One open connection: what the state knows of it, plus its socket. */
interface PeerConnection extends Link {
  conn: Deno.TcpConn;
  /** `ip:port` of the socket's far end, for log lines. */
  who: string;
}

/**
 * Starts a tracker and resolves once it accepts peers (and its status page,
 * unless `httpPort` is `null`, accepts requests).
 *
 * @example
 * ```ts
 * import { startTracker } from "./tracker.ts";
 * await using tracker = await startTracker({ quiet: true, httpPort: null });
 * console.log(`peers connect to port ${tracker.addr.port}`);
 * ```
 */
export async function startTracker(options: TrackerOptions = {}): Promise<Tracker> {
  const log = options.log ?? printLog;
  const quiet = options.quiet ?? false;
  const peerTimeoutMs = (options.peerTimeoutSeconds ?? DEFAULT_PEER_TIMEOUT_SECONDS) * 1000;
  const sweepIntervalSeconds = options.sweepIntervalSeconds ?? DEFAULT_SWEEP_INTERVAL_SECONDS;
  const sendTimeoutSeconds = options.sendTimeoutSeconds ?? DEFAULT_SEND_TIMEOUT_SECONDS;
  const maxLineBytes = options.maxLineBytes ?? TRACKER_MAX_LINE_BYTES;
  const state = new TrackerState({
    peerTimeoutMs,
    quiet,
    tombstoneTtlMs: options.tombstoneTtlSeconds === undefined
      ? undefined
      : options.tombstoneTtlSeconds * 1000,
    maxListFiles: options.maxListFiles,
  });
  const startedAt = Date.now();

  // Bind the tracker's port: the course's socket(), bind() and listen().
  const listener = listenOn({ hostname: options.hostname ?? "127.0.0.1", port: options.port ?? 0 });
  const addr = listener.addr as Deno.NetAddr;
  const open = new Set<PeerConnection>();
  let closing = false;

  /**
   * One connection's conversation: read a message line, apply it to the
   * state (tracker_state.ts), answer with the directory; until it closes.
   */
  async function serve(pc: PeerConnection): Promise<void> {
    const lines = new LineReader(pc.conn, maxLineBytes);
    let ending = "peer hung up";
    let replyBytes = 0; // the reply being written, for the send timeout's log line
    pc.waitingSince = performance.now();
    /** The next message line; one too long, or not UTF-8, is the peer's protocol error. */
    const readMessage = () =>
      lines.readLine().catch((err) => {
        if (err instanceof LineTooLongError) {
          throw new ProtocolError(`line longer than ${maxLineBytes} bytes`);
        }
        if (err instanceof TypeError) throw new ProtocolError(err.message);
        throw err;
      });
    /** Extension "push": the next line's read, when it began while a reply was held. */
    let early: Promise<string | null> | null = null;
    try {
      while (true) {
        const line = await (early ?? readMessage());
        early = null;
        if (line === null) break;
        // Until the reply is written the send timeout is in charge, not the silence rule.
        pc.waitingSince = undefined;
        let said: string[];
        let since = 0;
        let wait = 0;
        try {
          const message = parsePeerMessage(line);
          since = message.since ?? 0;
          wait = message.wait ?? 0;
          // Downloads in progress that one of our peers reports (checked before anything changes).
          const transfers = parseTransfers(message.transfers);
          said = state.apply(pc, message, clock(), line.length);
          state.setTransfers(pc, transfers, clock());
        } catch (err) {
          if (err instanceof ProtocolError) {
            throw new ProtocolError(`${err.message}; message was ${sample(line)}`);
          }
          throw err;
        }
        for (const text of said) log(text);
        stirHeld();
        // Every message is answered with the whole directory, as in the course.
        // Each peer gets the directory for the extensions its connection asked for,
        // and a peer on another host sees peers on our loopback at our address.
        // A peer with "parts" gets only what changed since the revision it holds, a page at a time.
        const own = ownAddressFor(pc);
        for (const text of state.handOutNotices(own)) log(text);
        // Extension "push": with nothing new yet, the reply may wait until there is.
        if (wait > 0 && pc.features?.includes("push") && pc.features.includes("parts")) {
          early = (await holdReply(pc, since, wait, own, readMessage)).next;
        }
        const reply = pc.features?.includes("parts")
          ? state.pagedDirectory(pc, since, own)
          : state.encodedDirectory(pc.features, own);
        replyBytes = reply.bytes;
        await sendReply(pc, reply);
        state.counters.responses++;
        state.counters.responseBytes += reply.bytes;
        pc.waitingSince = performance.now();
      }
    } catch (err) {
      if (pc.closedFor) {
        // We closed it ourselves (the line below says why): what the read or write threw is moot.
        ending = pc.closedFor;
      } else if (err instanceof ProtocolError) {
        state.counters.rejected++;
        ending = "rejected";
        log(`rejected ${pc.who}: ${err.message}; closing this connection`);
        // A peer that asked for "parts" reads a refusal's reason (a course peer gets no such line).
        if (pc.features?.includes("parts")) await tellRefusal(pc, err.message);
      } else if (closing) {
        ending = "tracker stopping";
      } else {
        ending = err instanceof Deno.errors.ConnectionReset ||
            err instanceof Deno.errors.BrokenPipe
          ? "connection reset by the peer"
          : `error: ${(err as Error).message}`;
      }
    } finally {
      closeQuietly(pc.conn);
      open.delete(pc);
      state.counters.openConnections = open.size;
      if (pc.closedFor === "silence") {
        const partial = lines.bufferedBytes;
        log(
          `closed ${pc.who}: no message for ${peerTimeoutMs / 1000} s` +
            (partial ? ` (only ${partial} B of an unfinished line)` : ""),
        );
      } else if (pc.closedFor === "send timeout") {
        log(
          `closed ${pc.who}: it did not take its ${replyBytes} B directory within ` +
            `${sendTimeoutSeconds} s (it is not reading)`,
        );
      } else if (!quiet && ending !== "rejected") {
        log(`connection from ${pc.who} closed (${ending})`);
      }
    }
  }

  /** Extension "push": one waker per reply held now. */
  const held = new Set<() => void>();

  /** The state changed: each held reply looks whether its peer has news now. */
  function stirHeld(): void {
    for (const wake of held) wake();
  }

  /**
   * Extension "push": holds the reply to `pc` until its directory has news
   * since revision `since`, `seconds` pass (at most {@linkcode MAX_HOLD_SECONDS}
   * and a third of the peer timeout), or the peer sends its next message, which
   * is then answered right after this reply: so one message still gets one
   * reply, in order. Resolves to that next message's read, begun here
   * (wrapped: an async function would wait for a promise it returns).
   */
  async function holdReply(
    pc: PeerConnection,
    since: number,
    seconds: number,
    own: string | undefined,
    readMessage: () => Promise<string | null>,
  ): Promise<{ next: Promise<string | null> | null }> {
    if (state.hasNews(pc, since, own)) return { next: null };
    const next = readMessage();
    let over = false;
    let wake = () => {};
    const stop = () => {
      over = true;
      wake();
    };
    // A message, the connection's end or its error: all end the hold (the loop reads which).
    next.then(stop, stop);
    const timer = setTimeout(
      stop,
      Math.min(seconds, MAX_HOLD_SECONDS, peerTimeoutMs / 3000) * 1000,
    );
    try {
      while (!over && !state.hasNews(pc, since, own)) {
        await new Promise<void>((resolve) => {
          wake = resolve;
          held.add(resolve);
        });
        held.delete(wake);
      }
    } finally {
      clearTimeout(timer);
      held.delete(wake);
    }
    return { next };
  }

  /**
   * Writes one directory reply, and closes the connection if the peer has not
   * taken all of it within the send timeout. One deadline for the whole
   * reply, not `IdleWriter`'s idle timer (from `files.ts`) re-armed by every
   * write: a peer that reads one segment now and then would keep re-arming
   * that one and hold the connection and the reply's buffers for hours, as a
   * trickled line would on the reading side.
   */
  async function sendReply(pc: PeerConnection, reply: EncodedDirectory): Promise<void> {
    const timer = setTimeout(() => {
      pc.closedFor = "send timeout";
      state.counters.sendTimeouts++;
      closeQuietly(pc.conn);
    }, sendTimeoutSeconds * 1000);
    try {
      for (const part of reply.parts) await writeAll(pc.conn, part);
    } finally {
      clearTimeout(timer);
    }
  }

  /**
   * Extension "parts": the last reply to a refused peer, `{"/": {"error": ...}}`,
   * so that its own console says why; bounded by the send timeout like any reply.
   */
  async function tellRefusal(pc: PeerConnection, why: string): Promise<void> {
    const line = encodeLine({ [META_KEY]: { error: `refused by the tracker: ${why}` } });
    await sendReply(pc, { parts: [line], bytes: line.length }).catch(() => {});
  }

  /** Takes one accepted connection: the shared accept loop (lib/accept.ts) calls this. */
  function welcome(conn: Deno.TcpConn): Promise<void> {
    const remote = conn.remoteAddr as Deno.NetAddr;
    const pc: PeerConnection = {
      conn,
      who: formatAddr(remote),
      ip: peerIp(remote),
      // Where it reached us: what it is told for peers on our loopback.
      localIp: peerIp(conn.localAddr as Deno.NetAddr),
      lastFiles: null,
    };
    open.add(pc);
    state.counters.connections++;
    state.counters.openConnections = open.size;
    if (!quiet) log(`connection from ${pc.who}`);
    return serve(pc);
  }

  /** Every sweep interval: expire silent peers and close silent connections (tracker_state.ts decides). */
  function sweep(): void {
    const result = state.sweep(clock(), open);
    for (const line of result.log) log(line);
    // Expired peers' files moved or went: peers waiting for news hear it.
    stirHeld();
    for (const pc of result.close) closeQuietly(pc.conn);
  }

  /** A snapshot of peers, directory and counters, for the status page and `/stats`. */
  function stats(): TrackerStats {
    return {
      addr: formatAddr(addr),
      startedAt: new Date(startedAt).toISOString(),
      peerTimeoutSeconds: peerTimeoutMs / 1000,
      sweepIntervalSeconds,
      peers: state.peerStats(clock()),
      directory: state.directory(),
      paths: state.pathStats(),
      counters: { ...state.counters },
    };
  }

  // Accept each peer's connection (lib/accept.ts), and look for silent ones every sweep interval.
  const accepting = acceptEach(listener, welcome, { log });
  const sweeper = setInterval(sweep, sweepIntervalSeconds * 1000);

  // The status page (status_page.ts) on its own port, unless httpPort is null.
  let http: Deno.HttpServer<Deno.NetAddr> | null = null;
  // The page's live updates (server-sent events at /events): one snapshot a tick for every viewer.
  const events = new StatusEvents(stats);
  const port = options.port ?? 0;
  const httpPort = options.httpPort === undefined
    ? (port === 0 || port === 65535 ? 0 : port + 1)
    : options.httpPort;
  if (httpPort !== null) {
    try {
      http = Deno.serve({
        hostname: addr.hostname,
        port: httpPort,
        onListen: () => {},
      }, (request) => statusResponse(request, stats, events));
    } catch (err) {
      clearInterval(sweeper);
      closing = true;
      listener.close();
      await accepting.settled();
      if (err instanceof Deno.errors.AddrInUse) {
        throw new CliError(
          `status page port ${httpPort} is already in use: choose another with --http-port`,
        );
      }
      throw err;
    }
  }

  let closed: Promise<void> | null = null;
  const close = () => {
    closed ??= (async () => {
      closing = true;
      clearInterval(sweeper);
      listener.close();
      for (const pc of open) closeQuietly(pc.conn);
      await accepting.settled();
      // Open event streams never end on their own: end them, or shutdown() would wait for ever.
      events.close();
      if (http) await http.shutdown();
    })();
    return closed;
  };

  return {
    addr,
    httpAddr: http ? http.addr : null,
    stats,
    close,
    [Symbol.asyncDispose]: close,
  };
}

/** The time on both clocks the state needs. */
function clock(): Now {
  return { wall: Date.now(), mono: performance.now() };
}

const USAGE = `usage: deno run --allow-net p2p/tracker.ts [HOST PORT] [options]
  HOST PORT            where to listen, as the course's tracker takes them
  --host ADDR          address to listen on (default 127.0.0.1; 0.0.0.0 for all)
  --port N             port for peers (default 9000)
  --peer-timeout S     drop a peer and close its connection after S seconds of silence
                       (default 180; fractions allowed)
  --sweep-interval S   look for silent peers every S seconds (default 10; fractions allowed)
  --send-timeout S     close a peer that has not read a whole reply after S seconds (default 30)
  --http-port N        port of the status page (default: port + 1; 0 for any free one)
  --quiet              no line per keep-alive or connection`;

async function main(): Promise<void> {
  const { values, positionals } = parseCli(Deno.args, USAGE, {
    host: { type: "string" },
    port: { type: "string" },
    "peer-timeout": { type: "string", default: String(DEFAULT_PEER_TIMEOUT_SECONDS) },
    "sweep-interval": { type: "string", default: String(DEFAULT_SWEEP_INTERVAL_SECONDS) },
    "send-timeout": { type: "string", default: String(DEFAULT_SEND_TIMEOUT_SECONDS) },
    "http-port": { type: "string" },
    quiet: { type: "boolean", default: false },
  }, true);
  let hostname = values.host === undefined
    ? "127.0.0.1"
    : parseHost(values.host as string, "--host");
  let port = values.port === undefined ? 9000 : parsePort(values.port as string, "--port");
  if (positionals.length > 0) {
    if (positionals.length !== 2) {
      throw new UsageError(`expected HOST PORT, got ${positionals.length} argument(s)`);
    }
    if (values.host !== undefined || values.port !== undefined) {
      throw new UsageError("give the address either as HOST PORT or with --host/--port, not both");
    }
    hostname = parseHost(positionals[0], "HOST", "PORT");
    port = parsePort(positionals[1], "PORT");
  }
  const tracker = await startTracker({
    hostname,
    port,
    httpPort: values["http-port"] === undefined
      ? undefined
      : parsePort(values["http-port"] as string, "--http-port"),
    peerTimeoutSeconds: parseSeconds(values["peer-timeout"] as string, "--peer-timeout"),
    sweepIntervalSeconds: parseSeconds(values["sweep-interval"] as string, "--sweep-interval"),
    sendTimeoutSeconds: parseSeconds(values["send-timeout"] as string, "--send-timeout"),
    quiet: values.quiet as boolean,
  });
  // Ready for Ctrl-C before saying so: a signal right after the line must stop us cleanly.
  exitOnSignal(async () => {
    console.log("stopping: closing peer connections");
    await tracker.close();
  });
  console.log(`tracker listening on ${formatAddr(tracker.addr)}`);
  if (tracker.httpAddr) {
    console.log(`status page on http://${formatAddr(tracker.httpAddr)}/`);
  }
}

if (import.meta.main) runMain(USAGE, main);
