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
 * Handout 002 ("peer-to-peer file synchronizer"), the tracker part.
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
import { type Log, preview, printLog } from "../lib/log.ts";
import { closeQuietly, concatBytes, formatAddr, listenOn, writeAll } from "../lib/net.ts";
import {
  type DirectoryEntry,
  encodeJson,
  type FileInfo,
  type Holder,
  isSafeFileName,
  parsePeerMessage,
  ProtocolError,
  TRACKER_MAX_LINE_BYTES,
} from "./protocol.ts";

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
 * Holders listed in an entry's `holders` field: enough to fall back on when
 * one is gone, few enough that a file held by a thousand peers does not make
 * every directory response huge.
 */
export const MAX_LISTED_HOLDERS = 16;

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
  /** Where lines go. @default {console.log} */
  log?: Log;
}

/** One live peer as `/stats` shows it. */
export interface PeerStats {
  /** IP address seen on its socket. */
  ip: string;
  /** The file-serving port it announced. */
  port: number;
  /** When it first spoke (ISO 8601). */
  firstSeen: string;
  /** When it last spoke (ISO 8601). */
  lastSeen: string;
  /** Seconds since it last spoke. */
  secondsSinceLastSeen: number;
  /** Seconds until it expires unless it speaks again. */
  secondsToExpiry: number;
  /** Messages it has sent. */
  messages: number;
  /** The files it announced last. */
  files: FileInfo[];
}

/** Running totals since the tracker started. */
export interface TrackerCounters {
  /** Connections accepted. */
  connections: number;
  /** Connections open now. */
  openConnections: number;
  /** Valid messages received. */
  messages: number;
  /** Messages that carried a file list (Init, or a changed list). */
  fileLists: number;
  /** Messages without a file list (KeepAlive). */
  keepAlives: number;
  /** Directory responses sent. */
  responses: number;
  /** Bytes of directory responses sent. */
  responseBytes: number;
  /** Peers that joined (a peer that expired and came back counts again). */
  peersJoined: number;
  /** Peers dropped after going silent. */
  peersExpired: number;
  /** Connections closed because of a bad message. */
  rejected: number;
  /** File names ignored because they were not plain names (such as `../x`). */
  unsafeNames: number;
  /** Connections closed because no complete message came for the peer timeout. */
  silentClosed: number;
  /** Connections closed because a directory reply was not taken within the send timeout. */
  sendTimeouts: number;
  /** Peers dropped because their connection announced another port instead. */
  portChanges: number;
}

/** Everything the status page shows, as `/stats` serves it. */
export interface TrackerStats {
  /** Where peers connect. */
  addr: string;
  /** When the tracker started (ISO 8601). */
  startedAt: string;
  /** The `--peer-timeout` in force. */
  peerTimeoutSeconds: number;
  /** The `--sweep-interval` in force. */
  sweepIntervalSeconds: number;
  /** Live peers, oldest first. */
  peers: PeerStats[];
  /** The directory the next response will carry. */
  directory: Record<string, DirectoryEntry>;
  /** Totals. */
  counters: TrackerCounters;
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

/** A live peer: identified by the IP on its socket and the port in its messages. */
interface PeerRecord {
  key: string;
  ip: string;
  port: number;
  firstSeen: number; // Date.now()
  lastSeen: number; // Date.now()
  lastHeard: number; // performance.now(), for expiry
  messages: number;
  files: Map<string, FileInfo>;
  /** The connection its last message came on. */
  via: PeerConnection;
}

/** One peer holding one version of a file. */
interface Holding {
  peer: PeerRecord;
  info: FileInfo;
  /** Order of announcement: of equal mtimes, the first announced wins, as in the course. */
  seq: number;
}

/** One open connection, and the last file list announced on it (to restore after an expiry). */
interface PeerConnection {
  conn: Deno.TcpConn;
  who: string;
  ip: string;
  /**
   * Only the last list, whatever port it was for: a connection is one peer,
   * and one that announced lists for many ports must not make us keep them all.
   */
  lastFiles: { port: number; files: FileInfo[] } | null;
  /** The peer its last message was for: the one record this connection stands for. */
  peer?: PeerRecord;
  /**
   * When the tracker began waiting for this connection's next message
   * (`performance.now()`, set when it opens and after each reply is written);
   * unset while a reply is being written, which the send timeout bounds.
   */
  waitingSince?: number;
  /** Why the tracker closed this connection itself, for the log line. */
  closedFor?: "silence" | "send timeout";
}

/**
 * Turns the address on a socket into the IP peers are told about: an IPv4
 * peer reaching a dual-stack listener shows up as `::ffff:10.0.0.2`, which a
 * Python peer cannot connect to as given.
 */
function peerIp(addr: Deno.NetAddr): string {
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(addr.hostname);
  return mapped ? mapped[1] : addr.hostname;
}

/** Whether two holders' copies may be the same bytes: no size or hash they both gave differs. */
function sameBytes(a: Holding, b: Holding): boolean {
  const agree = <T>(x: T | undefined, y: T | undefined) =>
    x === undefined || y === undefined || x === y;
  return agree(a.info.size, b.info.size) && agree(a.info.sha256, b.info.sha256);
}

/** `ip:port` as a student writes it (IPv6 in brackets). */
function hostPort(p: { ip: string; port: number }): string {
  return formatAddr({ hostname: p.ip, port: p.port });
}

/** A short, quoted, escaped sample of a message for a log line. */
function sample(line: string): string {
  return preview(new TextEncoder().encode(line));
}

/** Names per block of the encoded directory: a few to a few hundred kilobytes each. */
const NAMES_PER_BLOCK = 256;

const encoder = new TextEncoder();
const OPEN_BRACE = encoder.encode("{");
const CLOSE_BRACE_NEWLINE = encoder.encode("}\n");

/** Consecutive names of the directory and their encoding (null: to be redone). */
interface Block {
  names: Set<string>;
  bytes: Uint8Array | null;
}

/** A directory response ready to send: its pieces, in order. */
interface EncodedDirectory {
  parts: Uint8Array[];
  bytes: number;
}

/**
 * The tracker's state: live peers, who holds what, and the encoded
 * directory, rebuilt only after something in it changed.
 */
class TrackerState {
  readonly peers = new Map<string, PeerRecord>();
  /** File name to its holders, in announcement order; names in order of first appearance. */
  readonly holdings = new Map<string, Holding[]>();
  readonly counters: TrackerCounters = {
    connections: 0,
    openConnections: 0,
    messages: 0,
    fileLists: 0,
    keepAlives: 0,
    responses: 0,
    responseBytes: 0,
    peersJoined: 0,
    peersExpired: 0,
    rejected: 0,
    unsafeNames: 0,
    silentClosed: 0,
    sendTimeouts: 0,
    portChanges: 0,
  };
  #seq = 0;
  /** Each name's encoded `"name": {...}` text, until that name changes. */
  #fragments = new Map<string, string>();
  /** The directory's names in order, cut into blocks that are encoded separately. */
  #blocks: Block[] = [];
  #blockOf = new Map<string, Block>();
  /** The response as it goes on the wire, until something in it changes. */
  #reply: EncodedDirectory | null = null;

  /** The entry for one name: the newest version, first announced holder first. */
  entry(name: string): DirectoryEntry | null {
    const holders = this.holdings.get(name);
    if (!holders || holders.length === 0) return null;
    let newest = holders[0];
    for (const h of holders) {
      if (h.info.mtime > newest.info.mtime) newest = h;
    }
    const entry: DirectoryEntry = {
      ip: newest.peer.ip,
      port: newest.peer.port,
      mtime: newest.info.mtime,
    };
    if (newest.info.size !== undefined) entry.size = newest.info.size;
    if (newest.info.sha256 !== undefined) entry.sha256 = newest.info.sha256;
    // Other holders of the same version, unless their size or hash says otherwise.
    const same = holders.filter((h) => h.info.mtime === newest.info.mtime && sameBytes(h, newest));
    entry.holders = [newest, ...same.filter((h) => h !== newest)]
      .slice(0, MAX_LISTED_HOLDERS)
      .map((h): Holder => ({ ip: h.peer.ip, port: h.peer.port, mtime: h.info.mtime }));
    return entry;
  }

  /** The whole directory as plain data. */
  directory(): Record<string, DirectoryEntry> {
    const out: [string, DirectoryEntry][] = [];
    for (const name of this.holdings.keys()) {
      const entry = this.entry(name);
      if (entry) out.push([name, entry]);
    }
    return Object.fromEntries(out);
  }

  /**
   * The directory line as it goes on the wire, in pieces: a change to one
   * name re-encodes only its block, so a peer's Init costs a few kilobytes
   * of encoding, not the whole directory, and every response in flight
   * shares the same buffers.
   */
  encodedDirectory(): EncodedDirectory {
    if (this.#reply) {
      // Unchanged since the last answer: from now on send it in one piece.
      if (this.#reply.parts.length > 1) this.#reply.parts = [concatBytes(this.#reply.parts)];
      return this.#reply;
    }
    const parts: Uint8Array[] = [];
    for (const block of this.#blocks) {
      if (block.names.size === 0) continue;
      if (!block.bytes) {
        // Each block starts with ", ": the first one's is cut off below.
        let text = "";
        for (const name of block.names) text += `, ${this.#fragment(name)}`;
        block.bytes = encoder.encode(text);
      }
      parts.push(block.bytes);
    }
    if (parts.length === 0) {
      parts.push(encoder.encode("{}\n"));
    } else {
      parts[0] = concatBytes([OPEN_BRACE, parts[0].subarray(2)]);
      parts[parts.length - 1] = concatBytes([parts[parts.length - 1], CLOSE_BRACE_NEWLINE]);
    }
    this.#reply = { parts, bytes: parts.reduce((sum, p) => sum + p.length, 0) };
    return this.#reply;
  }

  #fragment(name: string): string {
    let fragment = this.#fragments.get(name);
    if (fragment === undefined) {
      fragment = `${encodeJson(name)}: ${encodeJson(this.entry(name))}`;
      this.#fragments.set(name, fragment);
    }
    return fragment;
  }

  /** Notes that `name`'s entry changed, appeared or went away. */
  #changed(name: string): void {
    this.#fragments.delete(name);
    this.#reply = null;
    let block = this.#blockOf.get(name);
    if (block && !this.holdings.has(name)) {
      block.names.delete(name);
      this.#blockOf.delete(name);
      if (block.names.size === 0) this.#blocks.splice(this.#blocks.indexOf(block), 1);
    } else if (!block && this.holdings.has(name)) {
      // A new name goes last, as in the holdings map (and the course's dict).
      block = this.#blocks.at(-1);
      if (!block || block.names.size >= NAMES_PER_BLOCK) {
        block = { names: new Set(), bytes: null };
        this.#blocks.push(block);
      }
      block.names.add(name);
      this.#blockOf.set(name, block);
    }
    if (block) block.bytes = null;
  }

  /**
   * Sets a peer's files to `files`: names it no longer lists lose it as a
   * holder, new names and new versions are appended.
   */
  setFiles(peer: PeerRecord, files: Map<string, FileInfo>): void {
    for (const [name, old] of peer.files) {
      const now = files.get(name);
      if (now && now.mtime === old.mtime) {
        // The same version again keeps its place in line; size or hash may have been added.
        const holding = this.holdings.get(name)!.find((h) => h.peer === peer)!;
        if (now.size !== old.size || now.sha256 !== old.sha256) {
          holding.info = now;
          this.#changed(name);
        }
        continue;
      }
      this.#removeHolding(name, peer);
    }
    for (const [name, info] of files) {
      const old = peer.files.get(name);
      if (old && old.mtime === info.mtime) continue;
      let list = this.holdings.get(name);
      if (!list) {
        list = [];
        this.holdings.set(name, list);
      }
      list.push({ peer, info, seq: this.#seq++ });
      this.#changed(name);
    }
    peer.files = files;
  }

  #removeHolding(name: string, peer: PeerRecord): void {
    const list = this.holdings.get(name);
    if (!list) return;
    const rest = list.filter((h) => h.peer !== peer);
    if (rest.length === 0) this.holdings.delete(name);
    else this.holdings.set(name, rest);
    this.#changed(name);
  }

  /** Drops a peer and its holdings; returns the names it held. */
  dropPeer(peer: PeerRecord): string[] {
    const names = [...peer.files.keys()];
    for (const name of names) this.#removeHolding(name, peer);
    peer.files = new Map();
    this.peers.delete(peer.key);
    return names;
  }
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
  const state = new TrackerState();
  const startedAt = Date.now();

  const listener = listenOn({ hostname: options.hostname ?? "127.0.0.1", port: options.port ?? 0 });
  const addr = listener.addr as Deno.NetAddr;
  const open = new Set<PeerConnection>();
  let closing = false;

  /** Applies one valid message and returns the log line for it (null: nothing worth saying). */
  function apply(pc: PeerConnection, line: string): string | null {
    const message = parsePeerMessage(line);
    const key = `${pc.ip}|${message.port}`;
    const name = hostPort({ ip: pc.ip, port: message.port });
    state.counters.messages++;
    const previous = pc.peer;
    if (previous && previous.key !== key) {
      // One connection is one peer: a new port replaces the record of the old
      // one at once (unless another connection has spoken for it since), and
      // the list announced for the old port is not kept to restore.
      pc.lastFiles = null;
      if (previous.via === pc && state.peers.get(previous.key) === previous) {
        const names = state.dropPeer(previous);
        state.counters.portChanges++;
        log(
          `peer ${hostPort(previous)} now announces port ${message.port} on the same connection: ` +
            `dropped it as ${holderOf(names)}`,
        );
      }
    }
    let peer = state.peers.get(key);
    const joined = !peer;
    if (!peer) {
      peer = {
        key,
        ip: pc.ip,
        port: message.port,
        firstSeen: Date.now(),
        lastSeen: Date.now(),
        lastHeard: performance.now(),
        messages: 0,
        files: new Map(),
        via: pc,
      };
      state.peers.set(key, peer);
      state.counters.peersJoined++;
    }
    peer.lastSeen = Date.now();
    peer.lastHeard = performance.now();
    peer.messages++;
    peer.via = pc;
    pc.peer = peer;

    let files = message.files;
    let restored = false;
    if (files) {
      state.counters.fileLists++;
      pc.lastFiles = { port: message.port, files };
    } else {
      state.counters.keepAlives++;
      // A peer that went silent, expired, and speaks again on the same
      // connection still has the files it announced there: keep them listed.
      if (joined && pc.lastFiles?.port === message.port) {
        files = pc.lastFiles.files;
        restored = true;
      }
    }

    const ignored: string[] = [];
    if (files) {
      const wanted = new Map<string, FileInfo>();
      for (const f of files) {
        if (!isSafeFileName(f.name)) {
          ignored.push(f.name);
          continue;
        }
        const seen = wanted.get(f.name);
        if (!seen || f.mtime > seen.mtime) wanted.set(f.name, f);
      }
      if (!restored) state.counters.unsafeNames += ignored.length;
      state.setFiles(peer, wanted);
    }
    // At most three names, each cut short: a name can be as long as a whole line.
    const unsafe = ignored.length === 0 || restored
      ? ""
      : `; ignored unsafe names ${ignored.slice(0, 3).map(sample).join(", ")}` +
        (ignored.length > 3 ? ` and ${ignored.length - 3} more` : "");

    const count = `${peer.files.size} file${peer.files.size === 1 ? "" : "s"}`;
    if (joined && restored) {
      return `peer ${name} is back after expiring; restored its ${count} announced on this connection`;
    }
    if (joined && message.files) return `peer ${name} joined with ${count}${unsafe}`;
    if (joined) {
      return `peer ${name} joined without a file list (keep-alive from a peer we did not know)`;
    }
    if (message.files) return `peer ${name} sent its file list again: ${count}${unsafe}`;
    return quiet ? null : `keep-alive from ${name} (${count})`;
  }

  async function serve(pc: PeerConnection): Promise<void> {
    const lines = new LineReader(pc.conn, maxLineBytes);
    let ending = "peer hung up";
    let replyBytes = 0; // the reply being written, for the send timeout's log line
    pc.waitingSince = performance.now();
    try {
      while (true) {
        let line: string | null;
        try {
          line = await lines.readLine();
        } catch (err) {
          if (err instanceof LineTooLongError) {
            throw new ProtocolError(`line longer than ${maxLineBytes} bytes`);
          }
          if (err instanceof TypeError) throw new ProtocolError(err.message);
          throw err;
        }
        if (line === null) break;
        // Until the reply is written the send timeout is in charge, not the silence rule.
        pc.waitingSince = undefined;
        let said: string | null;
        try {
          said = apply(pc, line);
        } catch (err) {
          if (err instanceof ProtocolError) {
            throw new ProtocolError(`${err.message}; message was ${sample(line)}`);
          }
          throw err;
        }
        if (said) log(said);
        // Every message is answered with the whole directory, as in the course.
        const reply = state.encodedDirectory();
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

  /** Takes one accepted connection: the shared accept loop (lib/accept.ts) calls this. */
  function welcome(conn: Deno.TcpConn): Promise<void> {
    const remote = conn.remoteAddr as Deno.NetAddr;
    const pc: PeerConnection = {
      conn,
      who: formatAddr(remote),
      ip: peerIp(remote),
      lastFiles: null,
    };
    open.add(pc);
    state.counters.connections++;
    state.counters.openConnections = open.size;
    if (!quiet) log(`connection from ${pc.who}`);
    return serve(pc);
  }

  /** How a dropped peer's files fared: `holder of 2 files (1 moved to another holder, 1 gone)`. */
  function holderOf(names: string[]): string {
    const moved = names.filter((n) => state.holdings.has(n)).length;
    return `holder of ${names.length} file${names.length === 1 ? "" : "s"}` +
      (names.length ? ` (${moved} moved to another holder, ${names.length - moved} gone)` : "");
  }

  function sweep(): void {
    const now = performance.now();
    for (const peer of [...state.peers.values()]) {
      if (now - peer.lastHeard <= peerTimeoutMs) continue;
      const names = state.dropPeer(peer);
      state.counters.peersExpired++;
      const silent = ((now - peer.lastHeard) / 1000).toFixed(1);
      log(
        `peer ${hostPort(peer)} expired after ${silent} s of silence: dropped it as ${
          holderOf(names)
        }`,
      );
    }
    // Silent connections go in the same look, not on a timer of their own:
    // one pass over the open connections every sweep interval costs nothing
    // even for thousands of them, and needs no timer re-armed per message. A
    // connection is closed once the tracker has waited the peer timeout for a
    // complete message line: bytes of an unfinished line do not count, so a
    // line trickled a byte at a time cannot keep it open either. It closes
    // between peerTimeout and peerTimeout + sweepInterval after its last
    // message, together with the peer it spoke for (whose record still
    // expires on its own, as in the course).
    for (const pc of open) {
      if (pc.closedFor || pc.waitingSince === undefined) continue;
      if (now - pc.waitingSince <= peerTimeoutMs) continue;
      pc.closedFor = "silence";
      state.counters.silentClosed++;
      closeQuietly(pc.conn);
    }
  }

  function stats(): TrackerStats {
    const now = performance.now();
    return {
      addr: formatAddr(addr),
      startedAt: new Date(startedAt).toISOString(),
      peerTimeoutSeconds: peerTimeoutMs / 1000,
      sweepIntervalSeconds,
      peers: [...state.peers.values()].map((p) => ({
        ip: p.ip,
        port: p.port,
        firstSeen: new Date(p.firstSeen).toISOString(),
        lastSeen: new Date(p.lastSeen).toISOString(),
        secondsSinceLastSeen: round((now - p.lastHeard) / 1000),
        secondsToExpiry: round(Math.max(0, (peerTimeoutMs - (now - p.lastHeard)) / 1000)),
        messages: p.messages,
        files: [...p.files.values()],
      })),
      directory: state.directory(),
      counters: { ...state.counters },
    };
  }

  const accepting = acceptEach(listener, welcome, { log });
  const sweeper = setInterval(sweep, sweepIntervalSeconds * 1000);

  let http: Deno.HttpServer<Deno.NetAddr> | null = null;
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
      }, (request) => statusResponse(request, stats()));
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

function round(x: number): number {
  return Math.round(x * 10) / 10;
}

/** Escapes text for HTML: file names come from peers and may hold markup. */
function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

function statusResponse(request: Request, stats: TrackerStats): Response {
  const path = new URL(request.url).pathname;
  if (request.method !== "GET" && request.method !== "HEAD") {
    return new Response("only GET here\n", { status: 405, headers: { allow: "GET, HEAD" } });
  }
  if (path === "/stats") {
    return new Response(JSON.stringify(stats, null, 2) + "\n", {
      headers: { "content-type": "application/json; charset=utf-8", "cache-control": "no-store" },
    });
  }
  if (path === "/") {
    return new Response(statusPage(stats), {
      headers: { "content-type": "text/html; charset=utf-8", "cache-control": "no-store" },
    });
  }
  return new Response("not found: try / or /stats\n", { status: 404 });
}

/** The page a person reads: live peers and their files, then the directory. */
function statusPage(stats: TrackerStats): string {
  const e = escapeHtml;
  const time = (seconds: number) => new Date(seconds * 1000).toISOString().replace(".000Z", "Z");
  const peerRows = stats.peers.map((p) =>
    `<tr><td>${e(hostPort(p))}</td><td>${p.secondsSinceLastSeen.toFixed(1)} s ago</td>` +
    `<td>${p.secondsToExpiry.toFixed(1)} s</td><td>${p.messages}</td>` +
    `<td>${
      p.files.length === 0 ? "<i>none</i>" : p.files.map((f) => e(f.name)).join(", ")
    }</td></tr>`
  ).join("\n");
  const fileRows = Object.entries(stats.directory).map(([name, d]) =>
    `<tr><td>${e(name)}</td><td>${e(time(d.mtime))}</td>` +
    `<td>${d.size === undefined ? "?" : d.size}</td><td>${e(hostPort(d))}</td>` +
    `<td>${(d.holders ?? []).slice(1).map((h) => e(hostPort(h))).join(", ")}</td></tr>`
  ).join("\n");
  const c = stats.counters;
  return `<!doctype html>
<html><head><meta charset="utf-8"><meta http-equiv="refresh" content="5">
<title>P2P tracker ${e(stats.addr)}</title>
<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}
td,th{border:1px solid #ccc;padding:.2em .6em;text-align:left}</style></head>
<body><h1>P2P tracker on ${e(stats.addr)}</h1>
<p>Up since ${e(stats.startedAt)}. A peer expires after ${stats.peerTimeoutSeconds} s of silence,
checked every ${stats.sweepIntervalSeconds} s. This page reloads every 5 s; the same data as JSON is at
<a href="/stats">/stats</a>.</p>
<h2>Live peers (${stats.peers.length})</h2>
<table><tr><th>peer (ip:port)</th><th>last seen</th><th>expires in</th><th>messages</th><th>files</th></tr>
${peerRows}
</table>
<h2>Directory (${Object.keys(stats.directory).length} files)</h2>
<table><tr><th>name</th><th>mtime</th><th>bytes</th><th>fetch from</th><th>also held by</th></tr>
${fileRows}
</table>
<h2>Counters</h2>
<p>${c.connections} connections (${c.openConnections} open), ${c.messages} messages
(${c.fileLists} with file lists, ${c.keepAlives} keep-alives), ${c.responses} directory responses,
${c.peersJoined} peers joined, ${c.peersExpired} expired, ${c.rejected} connections rejected,
${c.unsafeNames} unsafe file names ignored, ${c.silentClosed} silent connections closed,
${c.sendTimeouts} closed for not reading, ${c.portChanges} peers replaced by another port of theirs.</p>
</body></html>
`;
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
