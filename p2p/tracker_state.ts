/**
 * The tracker's state machine (handout 002, the tracker part): who is live,
 * who holds which version of each file, and the directory every message is
 * answered with. Pure: no sockets, no timers, no clock. `tracker.ts` feeds it
 * each parsed message with the time ({@linkcode TrackerState.apply}), asks it
 * every sweep interval who expired and which connections went silent
 * ({@linkcode TrackerState.sweep}), and writes its
 * {@linkcode TrackerState.encodedDirectory} back; the state returns the lines
 * to log and the connections to close, and the caller does both.
 *
 * The rules today:
 * - a peer is the IP on its socket plus the port in its messages; one
 *   connection is one peer, so a new port on it replaces the old record;
 * - a file list replaces the peer's previous one; a KeepAlive keeps it;
 * - an entry is the newest mtime (of equal mtimes, the first announced),
 *   with the other holders of that version after it;
 * - a peer silent for the peer timeout expires, and its entries move to the
 *   next holder; one that speaks again on the same connection gets its last
 *   list back.
 *
 * @example
 * ```ts
 * import { type Link, TrackerState } from "./tracker_state.ts";
 * const state = new TrackerState({ peerTimeoutMs: 180_000 });
 * const link: Link = { ip: "10.0.0.2", lastFiles: null };
 * state.apply(link, { port: 8001, files: [{ name: "a.txt", mtime: 1700000000 }] }, { wall: 0, mono: 0 });
 * // ["peer 10.0.0.2:8001 joined with 1 file"]
 * state.directory(); // { "a.txt": { ip: "10.0.0.2", port: 8001, mtime: 1700000000, holders: [...] } }
 * ```
 * @module
 */

import { preview } from "../lib/log.ts";
import { concatBytes, formatAddr } from "../lib/net.ts";
import {
  type DirectoryEntry,
  encodeJson,
  type FileInfo,
  type Holder,
  isSafeFileName,
  type PeerMessage,
} from "./protocol.ts";

/**
 * Holders listed in an entry's `holders` field: enough to fall back on when
 * one is gone, few enough that a file held by a thousand peers does not make
 * every directory response huge.
 */
export const MAX_LISTED_HOLDERS = 16;

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

/**
 * The time, on both clocks the tracker reads: the wall clock for people
 * (`Date.now()`), the monotonic one for expiry (`performance.now()`), which
 * does not jump when the system clock is set.
 */
export interface Now {
  /** Milliseconds since 1970, as `Date.now()`. */
  wall: number;
  /** Milliseconds on a clock that only moves forward, as `performance.now()`. */
  mono: number;
}

/** A live peer: identified by the IP on its socket and the port in its messages. */
export interface PeerRecord {
  /** `ip|port`: the key of {@linkcode TrackerState.peers}. */
  key: string;
  /** The IP on its socket. */
  ip: string;
  /** The file-serving port in its messages. */
  port: number;
  /** When it first spoke (wall clock, ms). */
  firstSeen: number;
  /** When it last spoke (wall clock, ms). */
  lastSeen: number;
  /** When it last spoke (monotonic clock, ms), for expiry. */
  lastHeard: number;
  /** Messages it has sent. */
  messages: number;
  /** The files it announced last, by name. */
  files: Map<string, FileInfo>;
  /** The connection its last message came on. */
  via: Link;
}

/** One peer holding one version of a file. */
export interface Holding {
  peer: PeerRecord;
  info: FileInfo;
  /** Order of announcement: of equal mtimes, the first announced wins, as in the course. */
  seq: number;
}

/**
 * One open connection as the state sees it: no socket, only what was said on
 * it, and the last file list announced on it (to restore after an expiry).
 * The tracker's own connection record extends it with the socket.
 */
export interface Link {
  /** The IP peers are told about (see {@linkcode peerIp}). */
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
export function peerIp(addr: Deno.NetAddr): string {
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
export function hostPort(p: { ip: string; port: number }): string {
  return formatAddr({ hostname: p.ip, port: p.port });
}

/** A short, quoted, escaped sample of a message for a log line. */
export function sample(line: string): string {
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
export interface EncodedDirectory {
  /** Write these one after the other. */
  parts: Uint8Array[];
  /** Their total length. */
  bytes: number;
}

/** Options for {@linkcode TrackerState}. */
export interface TrackerStateOptions {
  /** Milliseconds of silence after which a peer expires and a connection is closed. */
  peerTimeoutMs: number;
  /** No line for a plain keep-alive. @default {false} */
  quiet?: boolean;
}

/** What one {@linkcode TrackerState.sweep} found. */
export interface SweepResult<L extends Link> {
  /** One line per expired peer. */
  log: string[];
  /** Connections that sent no complete message for the peer timeout: close them. */
  close: L[];
}

/**
 * The tracker's state: live peers, who holds what, and the encoded
 * directory, rebuilt only after something in it changed.
 */
export class TrackerState {
  /** Live peers by key (`ip|port`), oldest first. */
  readonly peers: Map<string, PeerRecord> = new Map();
  /** File name to its holders, in announcement order; names in order of first appearance. */
  readonly holdings: Map<string, Holding[]> = new Map();
  /** Totals since the tracker started; the tracker adds its connection counts here too. */
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
  #peerTimeoutMs: number;
  #quiet: boolean;
  #seq = 0;
  /** Each name's encoded `"name": {...}` text, until that name changes. */
  #fragments = new Map<string, string>();
  /** The directory's names in order, cut into blocks that are encoded separately. */
  #blocks: Block[] = [];
  #blockOf = new Map<string, Block>();
  /** The response as it goes on the wire, until something in it changes. */
  #reply: EncodedDirectory | null = null;

  /** An empty state: no peers, an empty directory. */
  constructor(options: TrackerStateOptions) {
    this.#peerTimeoutMs = options.peerTimeoutMs;
    this.#quiet = options.quiet ?? false;
  }

  /**
   * Applies one valid message that came on `link` at `now`, and returns the
   * lines to log (none for a keep-alive when quiet). A file list replaces
   * the peer's previous one; names that are not plain file names are
   * ignored (and counted); of two entries for one name the newer counts.
   */
  apply(link: Link, message: PeerMessage, now: Now): string[] {
    const said: string[] = [];
    const key = `${link.ip}|${message.port}`;
    const name = hostPort({ ip: link.ip, port: message.port });
    this.counters.messages++;
    const previous = link.peer;
    if (previous && previous.key !== key) {
      // One connection is one peer: a new port replaces the record of the old
      // one at once (unless another connection has spoken for it since), and
      // the list announced for the old port is not kept to restore.
      link.lastFiles = null;
      if (previous.via === link && this.peers.get(previous.key) === previous) {
        const names = this.dropPeer(previous);
        this.counters.portChanges++;
        said.push(
          `peer ${hostPort(previous)} now announces port ${message.port} on the same connection: ` +
            `dropped it as ${this.#holderOf(names)}`,
        );
      }
    }
    let peer = this.peers.get(key);
    const joined = !peer;
    if (!peer) {
      peer = {
        key,
        ip: link.ip,
        port: message.port,
        firstSeen: now.wall,
        lastSeen: now.wall,
        lastHeard: now.mono,
        messages: 0,
        files: new Map(),
        via: link,
      };
      this.peers.set(key, peer);
      this.counters.peersJoined++;
    }
    peer.lastSeen = now.wall;
    peer.lastHeard = now.mono;
    peer.messages++;
    peer.via = link;
    link.peer = peer;

    let files = message.files;
    let restored = false;
    if (files) {
      this.counters.fileLists++;
      link.lastFiles = { port: message.port, files };
    } else {
      this.counters.keepAlives++;
      // A peer that went silent, expired, and speaks again on the same
      // connection still has the files it announced there: keep them listed.
      if (joined && link.lastFiles?.port === message.port) {
        files = link.lastFiles.files;
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
      if (!restored) this.counters.unsafeNames += ignored.length;
      this.setFiles(peer, wanted);
    }
    // At most three names, each cut short: a name can be as long as a whole line.
    const unsafe = ignored.length === 0 || restored
      ? ""
      : `; ignored unsafe names ${ignored.slice(0, 3).map(sample).join(", ")}` +
        (ignored.length > 3 ? ` and ${ignored.length - 3} more` : "");

    const count = `${peer.files.size} file${peer.files.size === 1 ? "" : "s"}`;
    if (joined && restored) {
      said.push(
        `peer ${name} is back after expiring; restored its ${count} announced on this connection`,
      );
    } else if (joined && message.files) {
      said.push(`peer ${name} joined with ${count}${unsafe}`);
    } else if (joined) {
      said.push(
        `peer ${name} joined without a file list (keep-alive from a peer we did not know)`,
      );
    } else if (message.files) {
      said.push(`peer ${name} sent its file list again: ${count}${unsafe}`);
    } else if (!this.#quiet) {
      said.push(`keep-alive from ${name} (${count})`);
    }
    return said;
  }

  /**
   * Expires the peers silent for longer than the peer timeout (their
   * entries move to the next holder, or go), and picks the connections of
   * `links` that have waited that long for a complete message line: bytes
   * of an unfinished line do not count, so a line trickled a byte at a time
   * cannot keep one open either. Those are marked `closedFor: "silence"`;
   * the caller closes them.
   */
  sweep<L extends Link>(now: Now, links: Iterable<L>): SweepResult<L> {
    const log: string[] = [];
    for (const peer of [...this.peers.values()]) {
      if (now.mono - peer.lastHeard <= this.#peerTimeoutMs) continue;
      const names = this.dropPeer(peer);
      this.counters.peersExpired++;
      const silent = ((now.mono - peer.lastHeard) / 1000).toFixed(1);
      log.push(
        `peer ${hostPort(peer)} expired after ${silent} s of silence: dropped it as ${
          this.#holderOf(names)
        }`,
      );
    }
    // Silent connections go in the same look, not on a timer of their own:
    // one pass over the open connections every sweep interval costs nothing
    // even for thousands of them, and needs no timer re-armed per message. A
    // connection closes between peerTimeout and peerTimeout + sweepInterval
    // after its last message, together with the peer it spoke for (whose
    // record still expires on its own, as in the course).
    const close: L[] = [];
    for (const link of links) {
      if (link.closedFor || link.waitingSince === undefined) continue;
      if (now.mono - link.waitingSince <= this.#peerTimeoutMs) continue;
      link.closedFor = "silence";
      this.counters.silentClosed++;
      close.push(link);
    }
    return { log, close };
  }

  /** The live peers as `/stats` shows them, oldest first. */
  peerStats(now: Now): PeerStats[] {
    return [...this.peers.values()].map((p) => ({
      ip: p.ip,
      port: p.port,
      firstSeen: new Date(p.firstSeen).toISOString(),
      lastSeen: new Date(p.lastSeen).toISOString(),
      secondsSinceLastSeen: round((now.mono - p.lastHeard) / 1000),
      secondsToExpiry: round(Math.max(0, (this.#peerTimeoutMs - (now.mono - p.lastHeard)) / 1000)),
      messages: p.messages,
      files: [...p.files.values()],
    }));
  }

  /** How a dropped peer's files fared: `holder of 2 files (1 moved to another holder, 1 gone)`. */
  #holderOf(names: string[]): string {
    const moved = names.filter((n) => this.holdings.has(n)).length;
    return `holder of ${names.length} file${names.length === 1 ? "" : "s"}` +
      (names.length ? ` (${moved} moved to another holder, ${names.length - moved} gone)` : "");
  }

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

/** Tenths of a second are enough for a status page. */
function round(x: number): number {
  return Math.round(x * 10) / 10;
}
