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
 *   list back;
 * - extension "versions" (`PROTOCOL.md`): a peer that asks for it has its
 *   hashed files taken as versions and its deletions applied, one
 *   {@linkcode PathRecord} per path, decided by `versions.ts`; it gets the
 *   directory of versions (a `"/"` entry, tombstones, conflict copies),
 *   everyone else the course's directory made from the same records;
 * - extension "paths": a name with `/` is taken only from a connection that
 *   asked for "paths" (else it is an unsafe name, ignored and counted) and
 *   shown only in the directory of such a connection;
 * - a holder on this host's loopback (`127.0.0.1`, `::1`) is shown to a
 *   peer on another host at the tracker's own address as that peer reached
 *   it ({@linkcode ownAddressFor}): `127.0.0.1` would send it to itself;
 * - extension "parts": a file list may come in parts (`"more": true` on all
 *   but the last), kept aside per connection within bounds and taken only
 *   when complete; such a peer gets the directory as pages of the changes
 *   since the revision it holds ({@linkcode TrackerState.pagedDirectory}),
 *   from a {@linkcode ChangeLog} per view fed by the same change notes that
 *   invalidate the encoded blocks.
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
  type DeletedEntry,
  type DeletionInfo,
  type DirectoryEntry,
  encodeJson,
  FEATURES,
  type FileInfo,
  type Holder,
  isSafeFileName,
  isSafePath,
  META_KEY,
  PEER_FEATURES,
  type PeerMessage,
  ProtocolError,
} from "./protocol.ts";
import { ChangeLog } from "./pages.ts";
import { TOMBSTONE_TTL_MS } from "./sync_state.ts";
import {
  announce,
  isConflictCopy,
  type PathRecord,
  remove,
  UNKNOWN_AUTHOR,
  type Version,
} from "./versions.ts";

/**
 * Holders listed in an entry's `holders` field: enough to fall back on when
 * one is gone, few enough that a file held by a thousand peers does not make
 * every directory response huge.
 */
export const MAX_LISTED_HOLDERS = 16;

/**
 * Paths the tracker keeps records of (extension "versions") before it stops
 * taking in deletions of paths it knows nothing of: those are the only
 * records no live peer's file list pays for, so a peer sending made-up
 * deletions could otherwise grow the table for the whole tombstone time.
 * Records of files peers hold are always kept.
 */
export const MAX_RECORDS = 100_000; // paths

/**
 * Own addresses whose directory (loopback holders shown at that address) is
 * kept encoded at once. A host has a handful; past this many (an IPv6 host
 * answering on a whole prefix) the oldest is dropped and re-encoded if asked.
 */
const MAX_OWN_ADDRESS_VIEWS = 8; // addresses

/**
 * Extension "parts": most files one peer's list may hold. A list is kept
 * whole once taken (the directory needs every name), so this, not the line
 * limit, bounds what one peer costs: about 1 KB per file all told.
 */
export const MAX_LIST_FILES = 1_000_000; // files

/**
 * Extension "parts": most bytes of message lines a connection may send for
 * one list before it is complete: parts are kept aside (parsed) until the
 * last one comes, and a peer that never sends it must not grow them for ever.
 */
export const MAX_STAGED_BYTES = 256 * 1024 * 1024; // bytes of JSON

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
  /** Downloads it reported in progress (`"transfers"`, see `PROTOCOL.md`); absent when none. */
  transfers?: TransferStats[];
}

/** One download in progress as a peer reported it (the `"transfers"` field of its KeepAlive). */
export interface TransferInfo {
  /** The file being fetched: a name the peer could announce. */
  name: string;
  /** The holder it comes from, `ip:port`. */
  from: string;
  /** Bytes received so far. */
  bytes: number;
  /** Bytes in the whole file. */
  size: number;
  /** Bytes per second, as the downloader measured it. */
  rate: number;
}

/** A reported download as `/stats` shows it: with how old the report is. */
export interface TransferStats extends TransferInfo {
  /** Seconds since the peer sent this report. */
  secondsAgo: number;
}

/**
 * Downloads one peer may report at once: our peer runs a few, and the
 * tracker keeps each peer's last report, so this bounds what a report costs.
 */
export const MAX_TRANSFERS = 50; // entries per report

/** Running totals since the tracker started. */
export interface TrackerCounters {
  /** Connections accepted. */
  connections: number;
  /** Connections open now. */
  openConnections: number;
  /** Valid messages received. */
  messages: number;
  /** Bytes of those messages' lines (UTF-16 units, so bytes for the ASCII our JSON is). */
  messageBytes: number;
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
  /** Extension "versions": conflicts found (each keeps both versions). */
  conflicts: number;
  /** Extension "versions": current versions deleted (each left a tombstone). */
  deletions: number;
  /** Extension "versions": deleted paths brought back by an edit the deletion never saw. */
  revivals: number;
  /** Extension "parts": parts of file lists taken (a list in one message is not counted). */
  listParts: number;
  /** Extension "parts": directory replies sent as a page of changes. */
  pages: number;
}

/** One path the tracker keeps versions of (extension "versions"), as `/stats` shows it. */
export interface PathStats {
  /** The path. */
  name: string;
  /** The version under its name, or `null` when it is deleted (or nothing is current). */
  current: { sha256: string; by: string; mtime: number; holders: number } | null;
  /** Versions that lost a conflict here, and the name each is kept under. */
  copies: { sha256: string; name: string }[];
  /** The deletion, when the path has a tombstone (`time`: seconds since 1970). */
  deleted: { sha256: string; by: string; time: number } | null;
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
  /** The directory the next response to a course peer will carry. */
  directory: Record<string, DirectoryEntry>;
  /** Extension "versions": every path with a version record, in directory order. */
  paths: PathStats[];
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
  /** Its id (extension), when its connection gave one: the author of its versions. */
  id?: string;
  /** Whether its connection asked for "versions": its hashed files then count as versions. */
  versions: boolean;
  /** Extension "range"/"pipeline": the peer-to-peer features its connection accepted, joined by ",". */
  serves?: string;
  /**
   * Its last report of downloads in progress, the connection it came on
   * (a report from an older connection is not shown) and when (monotonic ms).
   */
  transfers?: { list: TransferInfo[]; via: Link; at: number };
  /**
   * A peer on loopback: the own addresses it has been shown at to peers on
   * other hosts, so that each is logged once ({@linkcode TrackerState.handOutNotices}).
   */
  shownAs?: Set<string>;
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
   * The tracker's own address this connection came in on (its local end,
   * unwrapped by {@linkcode peerIp}): what this peer can reach the tracker's
   * host at. Unset: loopback holders are shown as they are.
   */
  localIp?: string;
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
  /**
   * The extensions accepted on this connection: those of its `features` that
   * we know ({@linkcode FEATURES}). Unset while it has asked for none, and then
   * it gets exactly the course's directory, with no {@linkcode META_KEY} entry.
   */
  features?: string[];
  /** The peer id it gave (extension). */
  id?: string;
  /** Extension "parts": the parts of a file list received so far, until its last part comes. */
  staged?: StagedList;
  /**
   * Extension "parts": the change log its last page came from. A revision
   * means something only in that log: a reply from another one (a new view
   * after a peer appeared on loopback, say) starts the peer afresh.
   */
  pagedFrom?: ChangeLog;
}

/** Extension "parts": a file list arriving in parts on one connection. */
export interface StagedList {
  /** The port the parts are for: a part for another port starts over. */
  port: number;
  files: FileInfo[];
  deleted: DeletionInfo[];
  /** Parts so far. */
  parts: number;
  /** Bytes of their lines so far. */
  bytes: number;
  /** What the first part said besides files (Init's id and features). */
  id?: string;
  features?: string[];
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

/** Whether an IP is this host's loopback: `127.0.0.0/8`, `::1`, or `::ffff:127.x.y.z`. */
export function isLoopbackIp(ip: string): boolean {
  return /^(::ffff:)?127\.\d+\.\d+\.\d+$/i.test(ip) || ip === "::1";
}

/**
 * The address to show `link` in place of a holder's loopback address: the
 * tracker's own address as this peer reached it, where a peer on the
 * tracker's host serving on every address (our peer's default `::`) is
 * reached too. `undefined` for a peer that is itself on loopback (the
 * loopback address works for it) or whose local end is unknown.
 *
 * @example
 * ```ts
 * import { ownAddressFor } from "./tracker_state.ts";
 * ownAddressFor({ ip: "10.0.0.3", localIp: "10.0.0.1", lastFiles: null }); // "10.0.0.1"
 * ownAddressFor({ ip: "127.0.0.1", localIp: "127.0.0.1", lastFiles: null }); // undefined
 * ```
 */
export function ownAddressFor(link: Link): string | undefined {
  const own = link.localIp;
  if (own === undefined || isLoopbackIp(link.ip) || isLoopbackIp(own)) return undefined;
  return own;
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

/**
 * Consecutive names of the directory, and their encoding in each view that
 * has encoded them since the last change (missing: to be redone).
 */
interface Block {
  names: Set<string>;
  bytes: Map<View, Uint8Array>;
}

/**
 * One way of showing the directory: the course's (for a peer that asked for
 * no extensions), or the one for a set of accepted features. Each keeps its
 * own encoded names and reply; the names and blocks are shared.
 */
interface View {
  /** The features accepted; unset for the course's view (no {@linkcode META_KEY} entry). */
  features: readonly string[] | undefined;
  /** Whether entries are versions (extension "versions") rather than newest-mtime. */
  versions: boolean;
  /** The own address loopback holders are shown at (for peers on other hosts); unset: as they are. */
  ownAddress: string | undefined;
  /** Each name's encoded `"name": {...}` text ("" when this view leaves it out), until it changes. */
  fragments: Map<string, string>;
  /** The response as it goes on the wire, until something in it changes. */
  reply: EncodedDirectory | null;
  /** Extension "parts": every change to this view's names, for peers that get pages. */
  log?: ChangeLog;
}

/** What an entry of a directory may be: a file, a deleted path, or the {@linkcode META_KEY} entry. */
export type ViewEntry = DirectoryEntry | ({ deleted: true } & DeletedEntry) | {
  features: readonly string[];
};

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
  /**
   * Milliseconds a deletion is kept (extension "versions"), and a record of a
   * path nobody holds any more. @default {TOMBSTONE_TTL_MS} (30 days)
   */
  tombstoneTtlMs?: number;
  /** Most files in one peer's list (extension "parts"). @default {MAX_LIST_FILES} */
  maxListFiles?: number;
  /** Most bytes of lines kept aside for one unfinished list. @default {MAX_STAGED_BYTES} */
  maxStagedBytes?: number;
}

/** What one {@linkcode TrackerState.sweep} found. */
export interface SweepResult<L extends Link> {
  /** One line per expired peer and per forgotten deletion. */
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
    messageBytes: 0,
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
    conflicts: 0,
    deletions: 0,
    revivals: 0,
    listParts: 0,
    pages: 0,
  };
  /**
   * Extension "versions": what is known of each path that a peer with
   * "versions" announced or deleted (see `versions.ts`). Kept when nobody
   * holds the path any more, so that a returning holder of an old, deleted
   * or losing version is told so; forgotten after the tombstone time.
   */
  readonly records: Map<string, PathRecord> = new Map();
  #peerTimeoutMs: number;
  #tombstoneTtlMs: number;
  #quiet: boolean;
  #maxListFiles: number;
  #maxStagedBytes: number;
  #seq = 0;
  /** Since when (monotonic ms) no live peer has held any version of a recorded path. */
  #unheldSince = new Map<string, number>();
  /** The directory's names in order, cut into blocks that are encoded separately. */
  #blocks: Block[] = [];
  #blockOf = new Map<string, Block>();
  /**
   * The views asked for so far, by `""` (the course's) or `"/"` + the
   * features, then `"@"` + the own address for loopback holders if any: at
   * most one per subset of FEATURES, times MAX_OWN_ADDRESS_VIEWS + 1.
   */
  #views = new Map<string, View>();
  /** Live peers on loopback: while there are none, every peer gets the views without `"@"`. */
  #loopbackPeers = new Set<PeerRecord>();
  /** Own addresses that have views, oldest first: at most MAX_OWN_ADDRESS_VIEWS. */
  #ownAddresses = new Set<string>();

  /** An empty state: no peers, an empty directory. */
  constructor(options: TrackerStateOptions) {
    this.#peerTimeoutMs = options.peerTimeoutMs;
    this.#tombstoneTtlMs = options.tombstoneTtlMs ?? TOMBSTONE_TTL_MS;
    this.#quiet = options.quiet ?? false;
    this.#maxListFiles = options.maxListFiles ?? MAX_LIST_FILES;
    this.#maxStagedBytes = options.maxStagedBytes ?? MAX_STAGED_BYTES;
  }

  /**
   * Applies one valid message that came on `link` at `now`, and returns the
   * lines to log (none for a keep-alive when quiet). A file list replaces
   * the peer's previous one; names that are not plain file names are
   * ignored (and counted); of two entries for one name the newer counts.
   *
   * Extension "versions": a message with `features` sets the extensions
   * accepted on its connection (later messages without it keep them). For a
   * peer with "versions", each hashed file of its list is announced as a
   * version and each of its `deleted` is applied (`versions.ts` decides);
   * conflicts, deletions and revivals get a line each.
   *
   * Extension "parts" (when the connection asked for it): a message with
   * `"more": true` is one part of a list; it is kept aside (`lineBytes`, the
   * length of its line, counts against {@linkcode MAX_STAGED_BYTES}) and
   * changes nothing else until the last part comes, which completes it.
   *
   * @throws {ProtocolError} when a list is larger than this tracker takes:
   * the caller tells the peer why and closes the connection.
   */
  apply(link: Link, message: PeerMessage, now: Now, lineBytes = 0): string[] {
    if (message.features !== undefined) {
      // Only what we know, in our order: so there is one view per set of features.
      link.features = FEATURES.filter((f) => message.features!.includes(f));
    }
    this.counters.messageBytes += lineBytes;
    const assembled = this.#assemble(link, message, lineBytes);
    if (assembled === null) return this.#partTaken(link, message, now);
    message = assembled.message;
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
        versions: false,
      };
      this.peers.set(key, peer);
      this.counters.peersJoined++;
      if (isLoopbackIp(peer.ip)) this.#loopbackPeers.add(peer);
    }
    peer.lastSeen = now.wall;
    peer.lastHeard = now.mono;
    peer.messages++;
    peer.via = link;
    link.peer = peer;
    if (message.id !== undefined) link.id = message.id;
    if (link.id !== undefined) peer.id = link.id;
    const versions = link.features?.includes("versions") ?? false;
    const becameVersions = versions && !peer.versions;
    if (versions !== peer.versions) {
      // Its hashed files count as versions, or stop counting: every entry it is in may change.
      peer.versions = versions;
      for (const held of peer.files.keys()) this.#changed(held);
    }
    // Entries list each holder's peer-to-peer features: every entry it is in may change.
    const serves = PEER_FEATURES.filter((f) => link.features?.includes(f)).join(",");
    if (serves !== (peer.serves ?? "")) {
      peer.serves = serves;
      for (const held of peer.files.keys()) this.#changed(held);
    }

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
        if (!acceptsName(link, f.name)) {
          ignored.push(f.name);
          continue;
        }
        const seen = wanted.get(f.name);
        if (!seen || f.mtime > seen.mtime) wanted.set(f.name, f);
      }
      if (!restored) this.counters.unsafeNames += ignored.length;
      this.setFiles(peer, wanted);
    }
    // What the versions made of it is said after who the peer is.
    const outcomes = peer.versions && (files || message.deleted || becameVersions)
      ? this.#takeVersions(peer, message.deleted ?? [], now)
      : [];
    // At most three names, each cut short: a name can be as long as a whole line.
    const unsafe = ignored.length === 0 || restored
      ? ""
      : `; ignored unsafe names ${ignored.slice(0, 3).map(sample).join(", ")}` +
        (ignored.length > 3 ? ` and ${ignored.length - 3} more` : "");

    const extras = [
      ...(message.id !== undefined ? [`id ${message.id}`] : []),
      ...(message.features !== undefined
        ? [`features: ${link.features!.join(", ") || "none"}`]
        : []),
      ...(assembled.parts > 1 ? [`in ${assembled.parts} parts`] : []),
    ];
    const count = `${peer.files.size} file${peer.files.size === 1 ? "" : "s"}` +
      (extras.length ? ` (${extras.join("; ")})` : "");
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
    said.push(...outcomes);
    return said;
  }

  /**
   * Extension "parts": the whole message once a list is complete, with the
   * number of parts it came in; `null` while parts are still coming (this
   * one is kept aside). A connection that did not ask for "parts" sends
   * whole lists, whatever `more` says.
   */
  #assemble(
    link: Link,
    message: PeerMessage,
    lineBytes: number,
  ): { message: PeerMessage; parts: number } | null {
    const tooMany = (files: number) =>
      new ProtocolError(
        `file list too large: ${files} files or more, this tracker takes at most ${this.#maxListFiles}`,
      );
    if (!link.features?.includes("parts")) {
      if ((message.files?.length ?? 0) > this.#maxListFiles) {
        throw tooMany(message.files!.length);
      }
      return { message, parts: 1 };
    }
    let staged = link.staged;
    // Parts for another port: the ones kept are void (one connection is one peer).
    if (staged && staged.port !== message.port) staged = link.staged = undefined;
    // A whole list, or a KeepAlive between parts (which leaves them be).
    if (!message.more && (staged === undefined || message.files === undefined)) {
      if ((message.files?.length ?? 0) > this.#maxListFiles) {
        throw tooMany(message.files!.length);
      }
      return { message, parts: 1 };
    }
    staged ??= link.staged = {
      port: message.port,
      files: [],
      deleted: [],
      parts: 0,
      bytes: 0,
      id: message.id,
      features: message.features,
    };
    staged.parts++;
    staged.bytes += lineBytes;
    this.counters.listParts++;
    for (const f of message.files ?? []) staged.files.push(f);
    for (const d of message.deleted ?? []) staged.deleted.push(d);
    if (staged.files.length + staged.deleted.length > this.#maxListFiles) {
      link.staged = undefined;
      throw tooMany(staged.files.length + staged.deleted.length);
    }
    if (staged.bytes > this.#maxStagedBytes) {
      link.staged = undefined;
      throw new ProtocolError(
        `file list too large: over ${this.#maxStagedBytes} bytes in ${staged.parts} parts ` +
          `and not complete yet`,
      );
    }
    if (message.more) return null;
    link.staged = undefined;
    return {
      message: {
        ...message,
        files: staged.files,
        deleted: staged.deleted,
        id: message.id ?? staged.id,
        features: message.features ?? staged.features,
        more: undefined,
      },
      parts: staged.parts,
    };
  }

  /**
   * Extension "parts": a part kept aside is still a sign of life from the
   * peer this connection speaks for (sending a big list takes a while).
   */
  #partTaken(link: Link, message: PeerMessage, now: Now): string[] {
    this.counters.messages++;
    if (message.id !== undefined) link.id = message.id;
    const peer = link.peer;
    if (peer && peer.port === message.port && this.peers.get(peer.key) === peer) {
      peer.lastSeen = now.wall;
      peer.lastHeard = now.mono;
      peer.messages++;
    }
    return [];
  }

  /**
   * Extension "versions": applies a peer's deletions, then announces each of
   * its hashed files as a version (`versions.ts` decides), and says what
   * changed for the worse or the surprising: a conflict, a deletion, a
   * revival. Deletions go first, so that a file deleted and made again in
   * the same list comes back as a revival rather than a conflict.
   */
  #takeVersions(peer: PeerRecord, deleted: DeletionInfo[], now: Now): string[] {
    const said: string[] = [];
    const author = peer.id ?? "";
    for (const d of deleted) {
      if (!acceptsName(peer.via, d.name)) continue;
      // A clock ahead must not make a deletion outlive the tombstone time.
      const deletedAt = Math.min(d.time * 1000, now.wall);
      // Older than the tombstone time: it would be forgotten at the next sweep anyway.
      if (now.wall - deletedAt > this.#tombstoneTtlMs) continue;
      const before = this.records.get(d.name);
      if (!before && this.records.size >= MAX_RECORDS) continue;
      const { record, outcome } = remove(before, { sha256: d.sha256, deletedAt, by: author });
      if (record === before) continue;
      this.#setRecord(d.name, record);
      if (outcome === "deleted") {
        this.counters.deletions++;
        said.push(
          `deleted ${sample(d.name)}: ${short(d.sha256)} by ${authorName(author)} ` +
            `(${hostPort(peer)}); peers holding it or an older version will delete their copies`,
        );
      }
    }
    for (const [name, info] of peer.files) {
      const version = asVersion(info, author);
      if (!version) continue;
      const before = this.records.get(name);
      const current = before?.current;
      // Only a conflict asks; the scan of the holders is skipped for the usual "same".
      const held = !current || current.sha256 === version.sha256 ||
        this.#holdersOf(name, current.sha256).length > 0;
      const { record, outcome } = announce(before, name, version, held);
      if (record === before) continue;
      this.#setRecord(name, record);
      if ((outcome === "won" || outcome === "lost") && current) {
        this.counters.conflicts++;
        const winner = record.current!;
        said.push(
          `conflict on ${sample(name)}: ${describeVersion(current)} and ${
            describeVersion(version)
          }; ${short(winner.sha256)} keeps the name` +
            (held ? "" : ` (nobody online holds ${short(current.sha256)})`) +
            `, the other becomes ${sample(record.copies[0].name)}`,
        );
      } else if (outcome === "revived" && before?.tombstone) {
        this.counters.revivals++;
        const t = before.tombstone;
        said.push(
          `${sample(name)} is back: ${describeVersion(version)} is an edit that the deletion of ` +
            `${short(t.sha256)} by ${authorName(t.by)} never saw`,
        );
      }
    }
    return said;
  }

  /** Records what is now known of a path; its entries change in every view. */
  #setRecord(name: string, record: PathRecord): void {
    this.records.set(name, record);
    this.#changed(name);
  }

  /** Live holdings of exactly this version of a path, in announcement order. */
  #holdersOf(name: string, sha256: string): Holding[] {
    return (this.holdings.get(name) ?? []).filter((h) => h.info.sha256 === sha256);
  }

  /**
   * Extension "versions": forgets deletions older than the tombstone time
   * and records of paths no live peer has held any version of for as long,
   * so memory stays bounded by what peers hold plus a month of history. A
   * path whose deletion is forgotten while peers still hold it is rebuilt
   * from what they hold.
   */
  #sweepRecords(now: Now, log: string[]): void {
    for (const [name, record] of [...this.records]) {
      let next = record;
      const t = record.tombstone;
      if (t && now.wall - t.deletedAt > this.#tombstoneTtlMs) {
        next = { ...record, tombstone: null };
        log.push(
          `forgot the deletion of ${sample(name)} (${short(t.sha256)} by ${authorName(t.by)}): ` +
            `older than ${round(this.#tombstoneTtlMs / 1000)} s`,
        );
        for (const h of this.holdings.get(name) ?? []) {
          const version = isVersioned(h) ? asVersion(h.info, h.peer.id ?? "") : null;
          if (version) next = announce(next, name, version).record;
        }
      }
      if (this.holdings.has(name)) {
        this.#unheldSince.delete(name);
      } else if (!this.#unheldSince.has(name)) {
        this.#unheldSince.set(name, now.mono);
      }
      const since = this.#unheldSince.get(name);
      // Nothing current, no deletion, nobody holding anything: nothing left to tell anyone.
      const empty = next.current === null && next.tombstone === null && !this.holdings.has(name);
      const forgotten = next.tombstone === null && since !== undefined &&
        now.mono - since > this.#tombstoneTtlMs;
      if (empty || forgotten) {
        this.records.delete(name);
        this.#unheldSince.delete(name);
        this.#changed(name);
      } else if (next !== record) {
        this.#setRecord(name, next);
      }
    }
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
    this.#sweepRecords(now, log);
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
      ...(p.transfers && p.transfers.via === p.via
        ? {
          transfers: p.transfers.list.map((t) => ({
            ...t,
            secondsAgo: round((now.mono - p.transfers!.at) / 1000),
          })),
        }
        : {}),
    }));
  }

  /**
   * Keeps the downloads in progress that `link`'s peer reported (see
   * {@linkcode parseTransfers}), replacing its last report; an empty one
   * clears it. Only a connection that asked for extensions is heard: a
   * course peer's field is ignored, as the course's tracker ignores it.
   * Entries whose name this connection could not announce are dropped.
   */
  setTransfers(link: Link, transfers: TransferInfo[] | undefined, now: Now): void {
    const peer = link.peer;
    if (transfers === undefined || link.features === undefined || peer === undefined) return;
    const list = transfers.filter((t) => acceptsName(link, t.name));
    if (list.length === 0) delete peer.transfers;
    else peer.transfers = { list, via: link, at: now.mono };
  }

  /** How a dropped peer's files fared: `holder of 2 files (1 moved to another holder, 1 gone)`. */
  #holderOf(names: string[]): string {
    const moved = names.filter((n) => this.holdings.has(n)).length;
    return `holder of ${names.length} file${names.length === 1 ? "" : "s"}` +
      (names.length ? ` (${moved} moved to another holder, ${names.length - moved} gone)` : "");
  }

  /**
   * The entry for one name in the course's view (a peer that asked for no
   * extensions), or `null` when it shows none. See {@linkcode viewEntry}.
   */
  entry(name: string): DirectoryEntry | null {
    return this.viewEntry(name, undefined) as DirectoryEntry | null;
  }

  /**
   * The entry for one name as a peer with the accepted `features` sees it
   * (unset: a peer that asked for none), or `null` when it sees none.
   *
   * A name no peer with "versions" announced: the newest mtime, first
   * announced holder first, with the other holders of that version (the
   * course's rule, in every view). A recorded name, to a peer with
   * "versions": the current version, fetched from live holders of exactly
   * those bytes (none: no entry), with its author, history and conflict
   * copies; or its tombstone; or, when a course peer's copy is strictly
   * newer than either, that copy by the course's rule and without a hash.
   * A recorded name, to anyone else: the current version's holders or the
   * course peer's newer copy, never a tombstone, a conflict copy or a name
   * with `/`. A name with `/` (extension "paths") only to a peer that
   * accepted "paths", in no other view at all.
   */
  viewEntry(name: string, features: readonly string[] | undefined): ViewEntry | null {
    if (name.includes("/") && !features?.includes("paths")) return null;
    const versions = features?.includes("versions") ?? false;
    const holdings = this.holdings.get(name) ?? [];
    const record = this.records.get(name);
    if (!record) return newestEntry(holdings, features);
    // Copies made by "versions" peers (and paths with folders) are theirs alone.
    const course = holdings.filter((h) => !isVersioned(h));
    if (!versions && (name.includes("/") || isConflictCopy(name))) {
      return newestEntry(course, features);
    }

    const { current, tombstone } = record;
    const since = current
      ? current.mtime
      : tombstone
      ? Math.floor(tombstone.deletedAt / 1000)
      : -Infinity;
    const newer = course.filter((h) =>
      h.info.mtime > since && (current === null || h.info.sha256 !== current.sha256)
    );
    if (newer.length > 0) {
      const entry = newestEntry(newer, features)!;
      // No hash: a "versions" peer fetches it by the mtime rule and announces it as its own version.
      if (versions) delete entry.sha256;
      return entry;
    }
    if (current) {
      const holders = this.#holdersOf(name, current.sha256);
      if (holders.length === 0) return versions ? null : newestEntry(course, features);
      const entry: DirectoryEntry = {
        ip: holders[0].peer.ip,
        port: holders[0].peer.port,
        mtime: current.mtime,
        size: current.size,
        sha256: current.sha256,
      };
      if (versions) {
        entry.by = current.by;
        if (current.history.length > 0) entry.history = current.history;
        if (record.copies.length > 0) {
          entry.copies = record.copies.map((c) => ({ sha256: c.sha256, name: c.name }));
        }
      }
      entry.holders = holders.slice(0, MAX_LISTED_HOLDERS).map((h) => holderOf(h, features));
      return entry;
    }
    if (!versions || !tombstone) return null;
    return {
      deleted: true,
      sha256: tombstone.sha256,
      history: tombstone.history,
      time: Math.floor(tombstone.deletedAt / 1000),
      by: tombstone.by,
    };
  }

  /** The course's directory as plain data (what `encodedDirectory()` encodes). */
  directory(): Record<string, DirectoryEntry> {
    return this.directoryFor(undefined) as Record<string, DirectoryEntry>;
  }

  /**
   * The directory a peer with the accepted `features` gets, as plain data:
   * the {@linkcode META_KEY} entry first when it asked for any, then the
   * names in order of first appearance. With `ownAddress` (see
   * {@linkcode ownAddressFor}), holders on loopback are shown at that address.
   */
  directoryFor(
    features: readonly string[] | undefined,
    ownAddress?: string,
  ): Record<string, ViewEntry> {
    const out: [string, ViewEntry][] = [];
    if (features !== undefined) out.push([META_KEY, { features }]);
    for (const block of this.#blocks) {
      for (const name of block.names) {
        const entry = this.viewEntry(name, features);
        if (entry) out.push([name, shownAt(entry, ownAddress)]);
      }
    }
    return Object.fromEntries(out);
  }

  /** Extension "versions": every recorded path, in directory order, for `/stats`. */
  pathStats(): PathStats[] {
    const out: PathStats[] = [];
    for (const block of this.#blocks) {
      for (const name of block.names) {
        const record = this.records.get(name);
        if (!record) continue;
        const { current, tombstone } = record;
        out.push({
          name,
          current: current && {
            sha256: current.sha256,
            by: current.by,
            mtime: current.mtime,
            holders: this.#holdersOf(name, current.sha256).length,
          },
          copies: record.copies.map((c) => ({ sha256: c.sha256, name: c.name })),
          deleted: tombstone && {
            sha256: tombstone.sha256,
            by: tombstone.by,
            time: Math.floor(tombstone.deletedAt / 1000),
          },
        });
      }
    }
    return out;
  }

  /**
   * The directory line as it goes on the wire to a peer with the accepted
   * `features` (unset: the course's directory), in pieces: a change to one
   * name re-encodes only its block in each view, so a peer's Init costs a
   * few kilobytes of encoding, not the whole directory, and every response
   * in flight shares the same buffers. With `ownAddress` (see
   * {@linkcode ownAddressFor}), holders on loopback are shown at that
   * address, in a view of its own, while any peer is on loopback.
   */
  encodedDirectory(features?: readonly string[], ownAddress?: string): EncodedDirectory {
    const view = this.#view(features, ownAddress);
    if (view.reply) {
      // Unchanged since the last answer: from now on send it in one piece.
      if (view.reply.parts.length > 1) view.reply.parts = [concatBytes(view.reply.parts)];
      return view.reply;
    }
    const parts: Uint8Array[] = [];
    for (const block of this.#blocks) {
      if (block.names.size === 0) continue;
      let bytes = block.bytes.get(view);
      if (!bytes) {
        // Each entry starts with ", ": the first one's is cut off below.
        let text = "";
        for (const name of block.names) {
          const fragment = this.#fragment(view, name);
          if (fragment !== "") text += `, ${fragment}`;
        }
        bytes = encoder.encode(text);
        block.bytes.set(view, bytes);
      }
      // A block whose names this view all leaves out adds nothing.
      if (bytes.length > 0) parts.push(bytes);
    }
    if (view.features !== undefined) {
      // The features accepted, first: then every file entry follows with its ", ".
      const meta = `{${encodeJson(META_KEY)}: ${encodeJson({ features: view.features })}`;
      parts.unshift(encoder.encode(meta));
    } else if (parts.length > 0) {
      parts[0] = concatBytes([OPEN_BRACE, parts[0].subarray(2)]);
    }
    if (parts.length === 0) {
      parts.push(encoder.encode("{}\n"));
    } else {
      parts[parts.length - 1] = concatBytes([parts[parts.length - 1], CLOSE_BRACE_NEWLINE]);
    }
    view.reply = { parts, bytes: parts.reduce((sum, p) => sum + p.length, 0) };
    return view.reply;
  }

  /** The view for the accepted `features`, made the first time a peer needs it. */
  #view(features: readonly string[] | undefined, ownAddress?: string): View {
    // With no peer on loopback there is nothing to show differently: share the usual view.
    const own = this.#loopbackPeers.size > 0 ? ownAddress : undefined;
    const key = (features === undefined ? "" : `/${features.join(",")}`) +
      (own === undefined ? "" : `@${own}`);
    let view = this.#views.get(key);
    if (!view) {
      if (own !== undefined) this.#keepOwnAddress(own);
      view = {
        features,
        versions: features?.includes("versions") ?? false,
        ownAddress: own,
        fragments: new Map(),
        reply: null,
      };
      if (features?.includes("parts")) {
        // Every name there is now is a change since revision 0, in directory order.
        view.log = new ChangeLog();
        for (const block of this.#blocks) for (const name of block.names) view.log.touch(name);
      }
      this.#views.set(key, view);
    }
    return view;
  }

  /**
   * Extension "parts": the reply to a peer that holds the directory as of
   * revision `since` (0: nothing yet), as it goes on the wire: the
   * {@linkcode META_KEY} entry with the features, the revision the reply
   * brings it to, `more` when more changes wait and `reset` when it must
   * forget what it holds first; then one page of the entries changed since
   * (an entry this view no longer shows as `{"absent": true}`). A quiet
   * round is a reply of some sixty bytes, whatever the directory's size.
   */
  pagedDirectory(link: Link, since: number, ownAddress?: string): EncodedDirectory {
    const view = this.#view(link.features, ownAddress);
    const log = view.log!;
    // A revision of another log (another view, or a view made anew) says nothing here.
    const foreign = since > 0 && link.pagedFrom !== log;
    link.pagedFrom = log;
    const page = log.page(
      foreign ? 0 : since,
      (name) => this.#fragment(view, name).length || name.length + 20,
    );
    const reset = page.reset || foreign;
    // From nothing, there is nothing to take away: absent entries are left out.
    const fresh = reset || since === 0;
    const meta = {
      features: view.features,
      rev: page.rev,
      more: page.more || undefined,
      reset: reset || undefined,
    };
    let text = `{${encodeJson(META_KEY)}: ${encodeJson(meta)}`;
    for (const name of page.names) {
      const fragment = this.#fragment(view, name);
      if (fragment !== "") text += `, ${fragment}`;
      else if (!fresh) text += `, ${encodeJson(name)}: {"absent": true}`;
    }
    const bytes = encoder.encode(text + "}\n");
    this.counters.pages++;
    return { parts: [bytes], bytes: bytes.length };
  }

  /**
   * Extension "push": whether {@linkcode TrackerState.pagedDirectory} would
   * bring `link` anything from revision `since`: a change since, or a fresh
   * start. A reply held for news (`"wait"`) is sent as soon as this is true.
   */
  hasNews(link: Link, since: number, ownAddress?: string): boolean {
    const log = this.#view(link.features, ownAddress).log;
    if (log === undefined) return true;
    // A revision from another log is news (a fresh start); from 0, so is anything at all.
    return (since > 0 && link.pagedFrom !== log) || log.rev !== since;
  }

  /** Makes room for one more own address's views: the oldest one's go when there are too many. */
  #keepOwnAddress(own: string): void {
    if (this.#ownAddresses.has(own)) return;
    if (this.#ownAddresses.size >= MAX_OWN_ADDRESS_VIEWS) {
      const oldest = this.#ownAddresses.values().next().value!;
      this.#ownAddresses.delete(oldest);
      for (const [key, view] of this.#views) {
        if (view.ownAddress !== oldest) continue;
        this.#views.delete(key);
        for (const block of this.#blocks) block.bytes.delete(view);
      }
    }
    this.#ownAddresses.add(own);
  }

  /**
   * Lines to log the first time each peer on loopback that holds files is
   * shown at `ownAddress` to a peer on another host: that peer reaches it
   * only if it listens there too, which one started with `--host 127.0.0.1`
   * does not, and the person running it should know where to look.
   */
  handOutNotices(ownAddress: string | undefined): string[] {
    if (ownAddress === undefined) return [];
    const said: string[] = [];
    for (const peer of this.#loopbackPeers) {
      if (peer.files.size === 0) continue;
      peer.shownAs ??= new Set();
      if (peer.shownAs.has(ownAddress) || peer.shownAs.size >= MAX_OWN_ADDRESS_VIEWS) continue;
      peer.shownAs.add(ownAddress);
      const real = hostPort(peer);
      const shown = hostPort({ ip: ownAddress, port: peer.port });
      said.push(
        `peer ${real} is on this host's loopback: peers on other hosts are told ${shown}, ` +
          `where they reached the tracker (it must serve files there too, not only on 127.0.0.1)`,
      );
    }
    return said;
  }

  #fragment(view: View, name: string): string {
    let fragment = view.fragments.get(name);
    if (fragment === undefined) {
      const entry = this.viewEntry(name, view.features);
      fragment = entry ? `${encodeJson(name)}: ${encodeJson(shownAt(entry, view.ownAddress))}` : "";
      view.fragments.set(name, fragment);
    }
    return fragment;
  }

  /**
   * Notes that `name`'s entry changed, appeared or went away, in every view.
   * A name stays in its place for as long as a peer holds it or its record
   * is kept, whether or not a view shows it.
   */
  #changed(name: string): void {
    const listed = this.holdings.has(name) || this.records.has(name);
    for (const view of this.#views.values()) {
      view.fragments.delete(name);
      view.reply = null;
      // Extension "parts": a name no longer listed anywhere is remembered as gone, within bounds.
      view.log?.touch(name, !listed);
    }
    let block = this.#blockOf.get(name);
    if (block && !listed) {
      block.names.delete(name);
      this.#blockOf.delete(name);
      if (block.names.size === 0) this.#blocks.splice(this.#blocks.indexOf(block), 1);
    } else if (!block && listed) {
      // A new name goes last, as in the holdings map (and the course's dict).
      block = this.#blocks.at(-1);
      if (!block || block.names.size >= NAMES_PER_BLOCK) {
        block = { names: new Set(), bytes: new Map() };
        this.#blocks.push(block);
      }
      block.names.add(name);
      this.#blockOf.set(name, block);
    }
    if (block) block.bytes.clear();
  }

  /**
   * Sets a peer's files to `files`: names it no longer lists lose it as a
   * holder, new names and new versions are appended.
   */
  setFiles(peer: PeerRecord, files: Map<string, FileInfo>): void {
    for (const [name, old] of peer.files) {
      const now = files.get(name);
      if (now && now.mtime === old.mtime) {
        // The same version again keeps its place in line; size or hash may have been added,
        // and its history or author may have been learned: the holding keeps the latest word
        // (the sweep rebuilds versions from it), the directory changes only if what it shows did.
        const holding = this.holdings.get(name)!.find((h) => h.peer === peer)!;
        holding.info = now;
        if (now.size !== old.size || now.sha256 !== old.sha256) this.#changed(name);
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
    this.#loopbackPeers.delete(peer);
    return names;
  }
}

/** Tenths of a second are enough for a status page. */
function round(x: number): number {
  return Math.round(x * 10) / 10;
}

/**
 * `entry` with each holder on loopback shown at `ownAddress` instead (see
 * {@linkcode ownAddressFor}); `entry` itself when there is nothing to change.
 * Keys keep their order, so the line is the one `json.dumps` would write.
 */
function shownAt(entry: ViewEntry, ownAddress: string | undefined): ViewEntry {
  if (ownAddress === undefined || !("ip" in entry)) return entry;
  const holders = entry.holders;
  if (!isLoopbackIp(entry.ip) && !holders?.some((h) => isLoopbackIp(h.ip))) return entry;
  const at = (ip: string) => isLoopbackIp(ip) ? ownAddress : ip;
  const shown: DirectoryEntry = { ...entry, ip: at(entry.ip) };
  if (holders) shown.holders = holders.map((h) => ({ ...h, ip: at(h.ip) }));
  return shown;
}

/**
 * A holder as an entry lists it; for a peer that asked for peer-to-peer
 * features (`features`), with those of them the holder accepted too.
 */
function holderOf(h: Holding, features?: readonly string[]): Holder {
  const holder: Holder = { ip: h.peer.ip, port: h.peer.port, mtime: h.info.mtime };
  const both = PEER_FEATURES.filter((f) =>
    features?.includes(f) && h.peer.via.features?.includes(f)
  );
  if (both.length > 0) holder.features = both;
  return holder;
}

/**
 * The course's rule over some holdings of one name: the newest mtime, of
 * equal ones the first announced, then the other holders of that version
 * (unless their size or hash says otherwise). `null` when there are none.
 */
function newestEntry(
  holdings: readonly Holding[],
  features?: readonly string[],
): DirectoryEntry | null {
  if (holdings.length === 0) return null;
  let newest = holdings[0];
  for (const h of holdings) {
    if (h.info.mtime > newest.info.mtime) newest = h;
  }
  const entry: DirectoryEntry = {
    ip: newest.peer.ip,
    port: newest.peer.port,
    mtime: newest.info.mtime,
  };
  if (newest.info.size !== undefined) entry.size = newest.info.size;
  if (newest.info.sha256 !== undefined) entry.sha256 = newest.info.sha256;
  const same = holdings.filter((h) => h.info.mtime === newest.info.mtime && sameBytes(h, newest));
  entry.holders = [newest, ...same.filter((h) => h !== newest)]
    .slice(0, MAX_LISTED_HOLDERS)
    .map((h) => holderOf(h, features));
  return entry;
}

/**
 * A file a peer with "versions" announced, as a version: it needs a hash and
 * a size; the author is the file's `by`, else the peer's id. `null` for a
 * file without them, which then counts as a course peer's copy.
 */
function asVersion(info: FileInfo, author: string): Version | null {
  if (info.sha256 === undefined || info.size === undefined) return null;
  return {
    sha256: info.sha256,
    size: info.size,
    mtime: info.mtime,
    by: info.by ?? author,
    history: info.history ?? [],
  };
}

/**
 * A peer's `"transfers"` field (`PeerMessage.transfers`, as it came),
 * checked, or `undefined` when it has none. At most
 * {@linkcode MAX_TRANSFERS} entries of `{"name", "from", "bytes", "size",
 * "rate"}`; whether each name is safe is {@linkcode TrackerState.setTransfers}'s
 * question.
 *
 * @example
 * ```ts
 * import { parseTransfers } from "./tracker_state.ts";
 * parseTransfers([{ name: "a.bin", from: "10.0.0.3:8002", bytes: 1024, size: 4096, rate: 512 }]);
 * parseTransfers(undefined); // undefined
 * ```
 * @throws {ProtocolError} when the field is there but not such a list.
 */
export function parseTransfers(value: unknown): TransferInfo[] | undefined {
  if (value === undefined) return undefined;
  if (!Array.isArray(value) || value.length > MAX_TRANSFERS) {
    throw new ProtocolError(`transfers must be a list of at most ${MAX_TRANSFERS} downloads`);
  }
  const count = (v: unknown) => typeof v === "number" && Number.isSafeInteger(v) && v >= 0;
  return value.map((t, i) => {
    const ok = typeof t === "object" && t !== null && typeof t.name === "string" &&
      typeof t.from === "string" && /^[0-9A-Za-z.:[\]%-]{3,80}$/.test(t.from) &&
      count(t.bytes) && count(t.size) && t.bytes <= t.size &&
      typeof t.rate === "number" && Number.isFinite(t.rate) && t.rate >= 0;
    if (!ok) {
      throw new ProtocolError(
        `transfers[${i}] must be {"name", "from": "ip:port", "bytes" <= "size", "rate" >= 0}, ` +
          `got ${sample(JSON.stringify(t) ?? String(t))}`,
      );
    }
    return { name: t.name, from: t.from, bytes: t.bytes, size: t.size, rate: t.rate };
  });
}

/**
 * Whether a name from `link` is taken: a plain file name, or (extension
 * "paths", when the connection asked for it) a safe relative path. Anything
 * else is ignored and counted as an unsafe name.
 */
function acceptsName(link: Link, name: string): boolean {
  return link.features?.includes("paths") ? isSafePath(name) : isSafeFileName(name);
}

/** Whether a holding is a version ("versions" peer, hash and size given), not a course peer's copy. */
function isVersioned(h: Holding): boolean {
  return h.peer.versions && h.info.sha256 !== undefined && h.info.size !== undefined;
}

/** The first 8 hex digits of a SHA-256: enough to tell versions apart in a log line. */
function short(sha256: string): string {
  return sha256.slice(0, 8);
}

/** A version's author for a log line. */
function authorName(by: string): string {
  return by === "" ? UNKNOWN_AUTHOR : by;
}

/** `1a2b3c4d by PEERONE (2023-11-14T22:13:20Z)`. */
function describeVersion(v: Version): string {
  const when = v.mtime * 1000 <= 8.64e15
    ? new Date(v.mtime * 1000).toISOString().replace(".000Z", "Z")
    : `${v.mtime} s`;
  return `${short(v.sha256)} by ${authorName(v.by)} (${when})`;
}
