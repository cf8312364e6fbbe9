#!/usr/bin/env -S deno run --allow-net --allow-read=. --allow-write=.
/**
 * A P2P file synchronizer peer: it shares the plain files of one folder,
 * tells the tracker about them, and fetches from other peers every file it
 * lacks or holds an older version of, until every live peer has the newest
 * copy of every file.
 *
 * Run it: `deno run --allow-net --allow-read=share --allow-write=share p2p/peer.ts 127.0.0.1 9000 --dir share`
 * (with `p2p/tracker.ts` running). Try it: `printf 'a.txt\n' | nc localhost 8000`
 * shows `Content-Length: N` and the file. Serve requests in Web Workers with
 * `--mode worker` (add `--allow-read=.,share`) or in child processes with
 * `--mode process` (add `--allow-read=.,share --allow-run`).
 *
 * Handout 002's assignment, the peer's two halves:
 * - peer to peer: bind and listen on the file-serving port, take each
 *   request (a file name and `\n`), answer `Content-Length: N\n` and the
 *   bytes, close. Unlike the course's peer it streams (constant memory) and
 *   refuses any name that is not a plain shared file directly in the folder.
 * - peer to tracker: connect, send Init with the file list, read the
 *   directory, fetch what is missing or newer, then send a KeepAlive every
 *   `--interval`. Unlike the course's peer it checks each download's length
 *   and SHA-256 before the file gets its name, tries another holder when one
 *   is dead, and reconnects when the tracker restarts.
 *
 * @module
 */

import {
  CliError,
  errorMessage,
  exitOnSignal,
  type HostPort,
  parseChoice,
  parseCli,
  parseHost,
  parseHostPort,
  parsePort,
  parseSeconds,
  parseTargetPort,
  runMain,
  UsageError,
} from "../lib/cli.ts";
import {
  type ConnectionServer,
  type HandlerContext,
  MAX_POOL_SIZE,
  type Mode,
  MODES,
  serveConnections,
} from "../lib/concurrency.ts";
import { parseWorkers } from "../lib/server_cli.ts";
import { LineReader, LineTooLongError } from "../lib/lines.ts";
import { elapsedMs, formatBytes, type Log, preview, printLog, silentLog } from "../lib/log.ts";
import { closeQuietly, type Connection, connectTo, formatAddr, writeAll } from "../lib/net.ts";
import {
  downloadFile,
  HashCache,
  IdleWriter,
  listSharedFiles,
  LocalChangeError,
  type LocalFile,
  MAX_REQUEST_BYTES,
  openSharedFile,
  refusalReason,
  RefusedError,
  removeStaleTempFiles,
  TRANSFER_BUFFER_BYTES,
} from "./files.ts";
import {
  type Directory,
  DIRECTORY_MAX_LINE_BYTES,
  type DirectoryEntry,
  encodeLine,
  MAX_MTIME_SECONDS,
  parseDirectory,
} from "./protocol.ts";

/** The course's peer serves on the first free port counting up from here. */
const FIRST_PORT = 8000;
/** How many ports above {@linkcode FIRST_PORT} we try before giving up. */
const PORT_SEARCH_SPAN = 1000;
/** Seconds a client may take to send its file request. */
const REQUEST_TIMEOUT_SECONDS = 10;
/** Seconds a client may read nothing of the file we send before we close its connection. */
const SEND_TIMEOUT_SECONDS = 30;
/** Seconds a served connection may stay open after the file, waiting for the client to close. */
const LINGER_SECONDS = 30;
/** Bytes a client may send after its request before we stop waiting for it to close. */
const LINGER_MAX_BYTES = 64 * 1024;
/** Files fetched at once; more wait their turn. */
export const PARALLEL_DOWNLOADS = 4;
/** First wait before reconnecting to the tracker; it doubles up to the maximum. */
const BACKOFF_FIRST_MS = 250;
const BACKOFF_MAX_MS = 10_000;
/** Seconds to wait for the tracker's reply, at least (3 intervals if longer). */
const TRACKER_REPLY_TIMEOUT_SECONDS = 10;
/** A holder that failed is tried last for this long. */
const BAD_HOLDER_MS = 30_000;
/** Files at least this big get a progress line on a terminal. */
const PROGRESS_MIN_BYTES = 16 * 1024 * 1024; // bytes
/** Time between progress line updates. */
const PROGRESS_EVERY_MS = 250;

// ---------------------------------------------------------------------------
// Peer to peer: serving one file request.

/** What the file-request handler needs; the same in every mode. */
export interface FileHandlerOptions {
  /** The shared folder, as a real path (no symlinks in it). */
  dir: string;
  /** No line per served file (refusals are still logged). @default {false} */
  quiet?: boolean;
  /** Seconds a client may take to send its request. @default {10} */
  requestTimeoutSeconds?: number;
  /** Seconds a client may read nothing of the file before its connection is closed. @default {30} */
  sendTimeoutSeconds?: number;
}

/**
 * Serves one file request: reads the name (one line, at most 256 bytes),
 * and if it is a plain shared file directly in the folder, answers
 * `Content-Length: N\n` and streams exactly N bytes, one buffer at a time.
 * Anything else closes the connection with a log line and no reply.
 *
 * @example
 * ```ts
 * import { serveConnections } from "../lib/concurrency.ts";
 * await using server = await serveConnections({
 *   handler: { module: new URL("./peer.ts", import.meta.url).href, name: "fileRequestHandler" },
 *   handlerOptions: { dir: await Deno.realPath("share") },
 * });
 * ```
 */
export async function fileRequestHandler(
  conn: Connection,
  { options, log }: HandlerContext<FileHandlerOptions>,
): Promise<void> {
  const say: Log = options.quiet ? silentLog : log;
  const who = formatAddr(conn.remoteAddr);
  const started = performance.now();
  // A client that never sends its request must not hold the connection.
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    conn.close();
  }, (options.requestTimeoutSeconds ?? REQUEST_TIMEOUT_SECONDS) * 1000);
  let name: string | null;
  try {
    name = await new LineReader(conn, MAX_REQUEST_BYTES).readLine();
  } catch (err) {
    log(
      `refused ${who}: ${
        timedOut
          ? `no request within ${options.requestTimeoutSeconds ?? REQUEST_TIMEOUT_SECONDS} s`
          : err instanceof LineTooLongError
          ? `request longer than ${MAX_REQUEST_BYTES} bytes`
          : errorMessage(err)
      }`,
    );
    return;
  } finally {
    clearTimeout(timer);
  }
  if (name === null) {
    say(`${who} closed the connection without asking for a file`);
    return;
  }
  const shown = preview(new TextEncoder().encode(name));
  let opened;
  try {
    opened = await openSharedFile(options.dir, name);
  } catch (err) {
    if (!(err instanceof RefusedError)) throw err;
    log(`refused ${who}'s request for ${shown}: ${err.message}`);
    return;
  }
  const { file, info } = opened;
  // A client that stops reading must not hold the connection: each write that completes re-arms this.
  const sendTimeout = options.sendTimeoutSeconds ?? SEND_TIMEOUT_SECONDS;
  const out = new IdleWriter(conn, sendTimeout * 1000);
  let sent = 0;
  try {
    await writeAll(out, new TextEncoder().encode(`Content-Length: ${info.size}\n`));
    // Stream exactly the announced length: one buffer in memory, whatever the size.
    const buffer = new Uint8Array(Math.max(1, Math.min(TRANSFER_BUFFER_BYTES, info.size)));
    while (sent < info.size) {
      const n = await file.read(buffer.subarray(0, Math.min(buffer.length, info.size - sent)));
      if (n === null) break;
      await writeAll(out, buffer.subarray(0, n));
      sent += n;
    }
    if (sent < info.size) {
      log(`${shown} shrank while being sent to ${who}: closing after ${sent} of ${info.size} B`);
      return;
    }
    await conn.closeWrite();
    await lingerUntilClosed(conn);
    say(`sent ${shown} (${formatBytes(sent)}) to ${who} in ${elapsedMs(started)}`);
  } catch (err) {
    if (!out.timedOut) throw err;
    log(
      `closed ${who}: it read nothing for ${sendTimeout} s (${sent} of ${info.size} B of ${shown} sent)`,
    );
  } finally {
    file.close();
  }
}

/**
 * Waits until the client has closed its side too (at most {@linkcode LINGER_SECONDS}).
 * Closing a socket whose last bytes are still in flight hands them to the
 * kernel, which resets such orphaned sockets when it runs short of memory:
 * the client would lose the end of the file.
 */
async function lingerUntilClosed(conn: Connection): Promise<void> {
  const timer = setTimeout(() => conn.close(), LINGER_SECONDS * 1000);
  try {
    const scratch = new Uint8Array(1024);
    for (let ignored = 0; ignored < LINGER_MAX_BYTES;) {
      const n = await conn.read(scratch);
      if (n === null) return;
      ignored += n;
    }
  } catch {
    // Reset by the client, or closed by the timer: either way we are done.
  } finally {
    clearTimeout(timer);
  }
}

// ---------------------------------------------------------------------------
// Peer to tracker: the sync loop.

/**
 * The `deno run` permission flags `p2p/peer.ts` needs to share `dir` in a
 * mode, run from the project folder: the folder to read and write, the code
 * to read (Workers and children load it), and `--allow-run` for children.
 *
 * @example
 * ```ts
 * peerPermissions("share", "async"); // ["--allow-net", "--allow-read=share,.", "--allow-write=share"]
 * ```
 */
export function peerPermissions(dir: string, mode: Mode): string[] {
  return [
    "--allow-net",
    `--allow-read=${dir},.`,
    `--allow-write=${dir}`,
    ...(mode === "process" ? ["--allow-run"] : []),
  ];
}

/** Options for {@linkcode startPeer}. */
export interface PeerOptions {
  /** The folder to share and fill. */
  dir: string;
  /** The tracker's address. */
  tracker: HostPort;
  /** Address the file server binds. @default {"127.0.0.1"} */
  hostname?: string;
  /** Port the file server binds; 0 picks a free one. @default {0} */
  port?: number;
  /**
   * Ports to try from `port` upward, as the course's peer counts up from
   * 8000: a port in use moves on to the next one, any other error (an
   * address this machine lacks, no permission) is thrown at once. @default {1}
   */
  portSearch?: number;
  /** Seconds between sync rounds (KeepAlive and directory). @default {5} */
  interval?: number;
  /** Where file requests are served. @default {"async"} */
  mode?: Mode;
  /** Workers or child processes kept warm (worker and process modes). @default {CPU count, at least 2} */
  poolSize?: number;
  /** No line per served file. @default {false} */
  quiet?: boolean;
  /** Show a progress line for large downloads (on a terminal). @default {false} */
  progress?: boolean;
  /** Seconds without data before a download gives up on its holder. @default {30} */
  idleTimeoutSeconds?: number;
  /** Seconds a client may take to send its file request. @default {10} */
  requestTimeoutSeconds?: number;
  /** Seconds a client may read nothing of a file we send before it is closed. @default {30} */
  sendTimeoutSeconds?: number;
  /** Where lines go. @default {console.log} */
  log?: Log;
}

/** Counters a peer keeps. */
export interface PeerStats {
  /** Sync rounds that got a directory. */
  rounds: number;
  /** Files fetched and put in place. */
  downloads: number;
  /** Bytes in those files. */
  bytes: number;
  /** Download attempts that failed (each holder counts). */
  failures: number;
  /** Times the tracker connection was (re)established. */
  connects: number;
}

/** A running peer; `await using` stops it. */
export interface Peer extends AsyncDisposable {
  /** The file server's bound address. */
  readonly addr: Deno.NetAddr;
  /** The mode file requests are served in. */
  readonly mode: Mode;
  /** The shared folder (real path). */
  readonly dir: string;
  /** Live counters. */
  readonly stats: PeerStats;
  /** Stops syncing, aborts downloads (their temp files go), closes the file server. */
  close(): Promise<void>;
}

/**
 * Starts a peer: its file server, then the sync loop (Init, directory,
 * downloads, then a KeepAlive every `interval`).
 *
 * @example
 * ```ts
 * import { startPeer } from "./peer.ts";
 * await using peer = await startPeer({ dir: "share", tracker: { hostname: "127.0.0.1", port: 9000 } });
 * console.log(`serving files on port ${peer.addr.port}`);
 * ```
 */
export async function startPeer(options: PeerOptions): Promise<Peer> {
  const log = options.log ?? printLog;
  const dir = await Deno.realPath(options.dir);
  if (!(await Deno.stat(dir)).isDirectory) throw new CliError(`${options.dir} is not a folder`);
  const stale = await removeStaleTempFiles(dir);
  if (stale.length > 0) log(`removed ${stale.length} temp file(s) left by an earlier run`);
  const server = await serveFiles(options, dir, log);
  const sync = new SyncLoop(options, dir, server.addr.port, log);
  sync.start();
  let closing: Promise<void> | null = null;
  const close = () =>
    closing ??= (async () => {
      await sync.stop();
      await server.close();
    })();
  return {
    addr: server.addr,
    mode: server.mode,
    dir,
    stats: sync.stats,
    close,
    [Symbol.asyncDispose]: close,
  };
}

/**
 * Starts the file server on `options.port`, or on the next port up while
 * ports are in use (`options.portSearch` of them). The server's own bind
 * decides, so two peers started at once never get the same port: the one
 * that loses the race moves on. A quick throwaway bind first skips ports
 * that are plainly taken, without starting a worker pool for each.
 */
async function serveFiles(
  options: PeerOptions,
  dir: string,
  log: Log,
): Promise<ConnectionServer> {
  const hostname = options.hostname ?? "127.0.0.1";
  const first = options.port ?? 0;
  const last = first === 0 ? 0 : Math.min(first + Math.max(1, options.portSearch ?? 1) - 1, 65535);
  let port = first;
  while (port < last && portInUse(hostname, port)) port++;
  while (true) {
    try {
      return await serveConnections<FileHandlerOptions>({
        handler: { module: import.meta.url, name: "fileRequestHandler" },
        handlerOptions: {
          dir,
          quiet: options.quiet ?? false,
          requestTimeoutSeconds: options.requestTimeoutSeconds,
          sendTimeoutSeconds: options.sendTimeoutSeconds,
        },
        hostname,
        port,
        mode: options.mode,
        poolSize: options.poolSize,
        log,
        // Child processes only read the shared folder; the parent keeps the sockets.
        childPermissions: [`--allow-read=${dir}`],
      });
    } catch (err) {
      // Only "in use" moves on; the error of the bind itself says what else went wrong.
      if (port === 0 || !portInUse(hostname, port)) throw err;
      if (port < last) {
        port++;
      } else if (last > first) {
        throw new CliError(`no free port from ${first} to ${last} on ${hostname}`);
      } else {
        throw err;
      }
    }
  }
}

/** Whether `port` is taken on `hostname` right now (any other failure is not "taken"). */
function portInUse(hostname: string, port: number): boolean {
  try {
    Deno.listen({ hostname, port }).close();
    return false;
  } catch (err) {
    return err instanceof Deno.errors.AddrInUse;
  }
}

/** Something went wrong with the tracker connection: reconnect. */
class TrackerError extends Error {
  override name = "TrackerError";
}

/** A holder to fetch from. */
interface Source {
  ip: string;
  port: number;
}

/** A file to fetch: the directory's entry, the holders to try in order, and our copy's mtime. */
interface Wanted {
  entry: DirectoryEntry;
  sources: Source[];
  /** Our copy's whole-second mtime when the fetch was planned; `null`: we had none. */
  localMtime: number | null;
}

/** The peer's side of the protocol with the tracker, and the downloads it leads to. */
class SyncLoop {
  readonly stats: PeerStats = { rounds: 0, downloads: 0, bytes: 0, failures: 0, connects: 0 };
  #options: PeerOptions;
  #dir: string;
  #port: number;
  #log: Log;
  #interval: number;
  #stopping = false;
  #abort = new AbortController();
  #wake: (() => void) | null = null;
  #running: Promise<void> | null = null;
  #tracker: { conn: Deno.TcpConn; lines: LineReader; self: string } | null = null;
  /** The file list as last sent to the tracker (JSON), to resend it only when it changed. */
  #announced: string | null = null;
  #hashes = new HashCache();
  /** Waiting to be fetched, by name; rebuilt every round. */
  #queue = new Map<string, Wanted>();
  #inFlight = new Map<string, Promise<void>>();
  /** Downloads finished since the last listing started: name to mtime. */
  #recent = new Map<string, number>();
  /** Holders that failed lately: "ip:port" to when. */
  #badHolders = new Map<string, number>();
  /** Skipped entries already reported ("name\nreason"), so each is logged once. */
  #warned = new Set<string>();

  constructor(options: PeerOptions, dir: string, port: number, log: Log) {
    this.#options = options;
    this.#dir = dir;
    this.#port = port;
    this.#log = log;
    this.#interval = (options.interval ?? 5) * 1000;
  }

  start(): void {
    this.#running = this.#loop();
  }

  async stop(): Promise<void> {
    this.#stopping = true;
    this.#abort.abort();
    this.#wake?.();
    this.#dropTracker();
    await this.#running;
    this.#queue.clear();
    await Promise.allSettled([...this.#inFlight.values()]);
  }

  // One round per interval; after a tracker failure, wait longer each time.
  async #loop(): Promise<void> {
    let backoff = BACKOFF_FIRST_MS;
    while (!this.#stopping) {
      let wait = this.#interval;
      try {
        await this.#round();
        backoff = BACKOFF_FIRST_MS;
      } catch (err) {
        if (this.#stopping) break;
        const where = formatAddr(this.#options.tracker);
        if (err instanceof TrackerError || err instanceof CliError) {
          this.#dropTracker();
          // Some randomness, so that peers of a restarted tracker do not all return at once.
          wait = backoff * (0.75 + Math.random() / 2);
          this.#log(
            `tracker ${where}: ${err.message}; reconnecting in ${(wait / 1000).toFixed(1)} s`,
          );
          backoff = Math.min(backoff * 2, BACKOFF_MAX_MS);
        } else {
          this.#log(`sync round failed: ${errorMessage(err)}`);
        }
      }
      await this.#sleep(wait);
    }
  }

  #sleep(ms: number): Promise<void> {
    if (this.#stopping) return Promise.resolve();
    return new Promise((resolve) => {
      const timer = setTimeout(done, ms);
      function done() {
        clearTimeout(timer);
        resolve();
      }
      this.#wake = done;
    });
  }

  /** List the folder, send Init or KeepAlive, read the directory, plan downloads. */
  async #round(): Promise<void> {
    this.#recent.clear();
    const files = await listSharedFiles(this.#dir, this.#hashes);
    const snapshot = JSON.stringify(files);
    if (this.#stopping) return;
    let message: { port: number; files?: LocalFile[] };
    if (this.#tracker === null) {
      await this.#connect();
      message = { port: this.#port, files };
      this.#log(
        `connected to tracker ${
          formatAddr(this.#options.tracker)
        }; sent Init with ${files.length} file(s)`,
      );
    } else if (snapshot !== this.#announced) {
      message = { port: this.#port, files };
      this.#log(`file list changed: sent KeepAlive with ${files.length} file(s)`);
    } else {
      message = { port: this.#port };
    }
    const directory = await this.#ask(message);
    this.#announced = snapshot;
    this.stats.rounds++;
    this.#plan(directory, files);
  }

  async #connect(): Promise<void> {
    const { hostname, port } = this.#options.tracker;
    const conn = await connectTo(hostname, port, 5);
    this.#tracker = {
      conn,
      lines: new LineReader(conn, DIRECTORY_MAX_LINE_BYTES),
      // The tracker knows us by the address it sees on this socket.
      self: formatAddr({ hostname: conn.localAddr.hostname, port: this.#port }),
    };
    this.#announced = null;
    this.stats.connects++;
  }

  #dropTracker(): void {
    if (this.#tracker === null) return;
    closeQuietly(this.#tracker.conn);
    this.#tracker = null;
  }

  /** Sends one message and reads the directory it is answered with. */
  async #ask(message: unknown): Promise<Directory> {
    const tracker = this.#tracker!;
    const limit = Math.max(TRACKER_REPLY_TIMEOUT_SECONDS, (3 * this.#interval) / 1000);
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      this.#dropTracker();
    }, limit * 1000);
    try {
      await writeAll(tracker.conn, encodeLine(message));
      const line = await tracker.lines.readLine();
      if (line === null) throw new TrackerError("it closed the connection");
      return parseDirectory(line);
    } catch (err) {
      if (err instanceof TrackerError) throw err;
      if (timedOut) throw new TrackerError(`no directory within ${limit} s`);
      if (this.#stopping) throw err;
      throw new TrackerError(
        err instanceof Deno.errors.BadResource ? "connection lost" : errorMessage(err),
      );
    } finally {
      clearTimeout(timer);
    }
  }

  /** Decides what to fetch, logs the new decisions, and starts downloads. */
  #plan(directory: Directory, files: LocalFile[]): void {
    const have = new Map(files.map((f) => [f.name, f.mtime]));
    for (const [name, mtime] of this.#recent) have.set(name, Math.max(mtime, have.get(name) ?? 0));
    const self = this.#tracker?.self;
    const queue = new Map<string, Wanted>();
    const decisions: string[] = [];
    for (const [name, entry] of Object.entries(directory)) {
      const reason = refusalReason(name) ??
        (entry.mtime > MAX_MTIME_SECONDS
          ? `mtime ${entry.mtime} is past ${MAX_MTIME_SECONDS} (the year 2106)`
          : null);
      if (reason !== null) {
        // Reported once per name and reason, not every round.
        const key = `${name}\n${reason}`;
        if (!this.#warned.has(key)) {
          this.#warned.add(key);
          decisions.push(`skipping ${preview(new TextEncoder().encode(name))}: ${reason}`);
        }
        continue;
      }
      // mtimes are whole seconds on the wire; a peer sending fractions must not cause refetches.
      const theirs = Math.floor(entry.mtime);
      const ours = have.get(name);
      if ((ours !== undefined && ours >= theirs) || this.#inFlight.has(name)) continue;
      const sources = this.#sources(entry, self);
      if (sources.length === 0) continue;
      queue.set(name, { entry, sources, localMtime: ours ?? null });
      if (!this.#queue.has(name)) {
        const why = ours === undefined ? "missing here" : `newer there (mtime ${theirs} > ${ours})`;
        decisions.push(`fetching ${name} (${why}) from ${formatAddr(sourceAddr(sources[0]))}`);
      }
    }
    this.#queue = queue;
    for (const line of decisions) this.#log(`round ${this.stats.rounds}: ${line}`);
    this.#pump();
  }

  /** The holders of an entry's newest version, the chosen one first, lately failed ones last. */
  #sources(entry: DirectoryEntry, self: string | undefined): Source[] {
    const all: Source[] = [{ ip: entry.ip, port: entry.port }];
    for (const holder of entry.holders ?? []) {
      if (holder.mtime < entry.mtime) continue;
      if (!all.some((s) => s.ip === holder.ip && s.port === holder.port)) all.push(holder);
    }
    const now = Date.now();
    const failedLately = (s: Source) => {
      const when = this.#badHolders.get(formatAddr(sourceAddr(s)));
      return when !== undefined && now - when < BAD_HOLDER_MS ? 1 : 0;
    };
    return all
      .filter((s) => formatAddr(sourceAddr(s)) !== self)
      .map((s, i) => ({ s, i }))
      .sort((a, b) => failedLately(a.s) - failedLately(b.s) || a.i - b.i)
      .map(({ s }) => s);
  }

  /** Starts queued downloads while slots are free. */
  #pump(): void {
    while (!this.#stopping && this.#inFlight.size < PARALLEL_DOWNLOADS && this.#queue.size > 0) {
      const [name, wanted] = this.#queue.entries().next().value!;
      this.#queue.delete(name);
      const job = this.#fetch(name, wanted).finally(() => {
        this.#inFlight.delete(name);
        this.#pump();
      });
      this.#inFlight.set(name, job);
    }
  }

  /** Fetches one file, trying each holder in turn. */
  async #fetch(name: string, { entry, sources, localMtime }: Wanted): Promise<void> {
    for (const [i, source] of sources.entries()) {
      if (this.#stopping) return;
      const where = formatAddr(sourceAddr(source));
      try {
        const result = await downloadFile({
          dir: this.#dir,
          name,
          hostname: source.ip,
          port: source.port,
          mtime: entry.mtime,
          size: entry.size,
          sha256: entry.sha256,
          localMtime,
          idleTimeoutSeconds: this.#options.idleTimeoutSeconds,
          onProgress: this.#progress(name, entry.size),
          signal: this.#abort.signal,
        });
        this.#hashes.set(name, result.info, result.sha256);
        this.#recent.set(name, Math.floor(entry.mtime));
        this.#badHolders.delete(where);
        this.stats.downloads++;
        this.stats.bytes += result.bytes;
        const rate = result.bytes / 1e6 / Math.max(result.seconds, 1e-6);
        this.#log(
          `downloaded ${name} from ${where}: ${formatBytes(result.bytes)} in ${
            result.seconds.toFixed(2)
          } s (${rate.toFixed(1)} MB/s), ${
            result.verified ? "SHA-256 verified" : "length checked (no SHA-256 given)"
          }`,
        );
        return;
      } catch (err) {
        if (this.#stopping) return;
        if (err instanceof LocalChangeError) {
          // Not the holder's fault: the next round announces our copy and decides again.
          this.#log(`download of ${name} from ${where} dropped: ${err.message}; kept ours`);
          return;
        }
        this.stats.failures++;
        this.#badHolders.set(where, Date.now());
        const next = sources[i + 1];
        this.#log(
          `download of ${name} from ${where} failed: ${errorMessage(err)}; ${
            next ? `trying ${formatAddr(sourceAddr(next))}` : "will retry next round"
          }`,
        );
      }
    }
  }

  /** A progress printer for a large download when progress lines are on. */
  #progress(name: string, size?: number): ((received: number, total: number) => void) | undefined {
    if (!this.#options.progress || (size ?? 0) < PROGRESS_MIN_BYTES) return undefined;
    const started = performance.now();
    let last = 0;
    return (received, total) => {
      const now = performance.now();
      if (now - last < PROGRESS_EVERY_MS && received < total) return;
      last = now;
      const rate = received / 1e6 / Math.max((now - started) / 1000, 1e-6);
      const text = `\r${name}: ${((received / total) * 100).toFixed(0)}% of ${
        formatBytes(total)
      }, ${rate.toFixed(0)} MB/s`;
      Deno.stdout.writeSync(new TextEncoder().encode(received < total ? text : text + "\n"));
    };
  }
}

function sourceAddr(source: Source): { hostname: string; port: number } {
  // A tracker may hand out an IPv6 address already in brackets: formatAddr() adds its own,
  // and "[[::1]]:8000" would neither read well nor match our own address.
  const bare = /^\[(.*)\]$/.exec(source.ip);
  return { hostname: bare ? bare[1] : source.ip, port: source.port };
}

/**
 * Where the file server listens when `--host` is not given: `::`, which on a
 * dual-stack host serves IPv6 and IPv4 clients alike (IPv4 ones show up as
 * `::ffff:a.b.c.d`), so peers reach us whatever family their tracker uses.
 * Falls back to `0.0.0.0` where `::` cannot be bound (no IPv6) or serves IPv6
 * only (`net.ipv6.bindv6only=1`): there `0.0.0.0` binds beside it on the same port.
 */
function defaultServeHost(): string {
  let dual: Deno.TcpListener;
  try {
    dual = Deno.listen({ hostname: "::", port: 0 });
  } catch {
    return "0.0.0.0";
  }
  try {
    Deno.listen({ hostname: "0.0.0.0", port: (dual.addr as Deno.NetAddr).port }).close();
    return "0.0.0.0";
  } catch {
    // Taken: the `::` socket holds the IPv4 port too, so it serves both families.
    return "::";
  } finally {
    dual.close();
  }
}

// ---------------------------------------------------------------------------
// The command line.

const USAGE =
  `usage: deno run --allow-net --allow-read=DIR --allow-write=DIR p2p/peer.ts [TRACKER_IP TRACKER_PORT] --dir DIR [options]
  TRACKER_IP TRACKER_PORT  the tracker, as the course's peer takes it (or use --tracker)
  --tracker HOST:PORT  the tracker's address (default 127.0.0.1:9000)
  --dir DIR            the folder to share and keep in sync (required)
  --host ADDR          address to serve files on (default ::, IPv6 and IPv4; 0.0.0.0 without IPv6)
  --port N             port to serve files on, 0 for any (default: the first free one from 8000)
  --interval S         seconds between sync rounds and keep-alives (default 5)
  --mode MODE          async | worker | process: where each file request is served (default async)
                       worker also needs --allow-read=.,DIR  process needs --allow-read=.,DIR --allow-run
  --workers N          workers or child processes kept warm, 1 to ${MAX_POOL_SIZE} (default: CPU count)
  --quiet              no line per file served`;

async function main(): Promise<void> {
  const { values, positionals } = parseCli(Deno.args, USAGE, {
    tracker: { type: "string" },
    dir: { type: "string" },
    host: { type: "string" },
    port: { type: "string" },
    interval: { type: "string", default: "5" },
    mode: { type: "string", default: "async" },
    workers: { type: "string" },
    quiet: { type: "boolean", default: false },
  }, true);
  let tracker: HostPort;
  if (positionals.length === 2) {
    if (values.tracker !== undefined) {
      throw new UsageError("give the tracker either as TRACKER_IP TRACKER_PORT or as --tracker");
    }
    tracker = {
      hostname: parseHost(positionals[0], "TRACKER_IP", "TRACKER_PORT"),
      port: parseTargetPort(positionals[1], "TRACKER_PORT"),
    };
  } else if (positionals.length === 0) {
    tracker = parseHostPort((values.tracker as string) ?? "127.0.0.1:9000", "--tracker");
  } else {
    throw new UsageError(
      `expected TRACKER_IP TRACKER_PORT or nothing, got "${positionals.join(" ")}"`,
    );
  }
  if (values.dir === undefined) throw new UsageError("--dir DIR is required");
  const dir = values.dir as string;
  // Checked here: Deno refuses an empty path with a stack trace, and "  " would read as a folder name.
  if (dir.trim() === "") throw new UsageError(`--dir must name a folder, got "${dir}"`);
  const hostname = values.host === undefined
    ? defaultServeHost()
    : parseHost(values.host as string, "--host");
  const interval = parseSeconds(values.interval as string, "--interval");
  const mode = parseChoice(values.mode as string, "--mode", MODES);
  const poolSize = values.workers === undefined
    ? undefined
    : parseWorkers(values.workers as string);
  const wantedPort = values.port === undefined
    ? undefined
    : parsePort(values.port as string, "--port");
  for (const name of ["read", "write"] as const) {
    if ((await Deno.permissions.query({ name, path: dir })).state !== "granted") {
      throw new CliError(
        `no permission to ${name} ${dir}: run with --allow-read=${dir} --allow-write=${dir}`,
      );
    }
  }
  try {
    if (!(await Deno.stat(dir)).isDirectory) throw new CliError(`--dir ${dir} is not a folder`);
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) throw new CliError(`--dir ${dir}: no such folder`);
    if (err instanceof Deno.errors.PermissionDenied) {
      throw new CliError(`--dir ${dir}: the system does not let this user open it`);
    }
    throw err;
  }
  const peer = await startPeer({
    dir,
    tracker,
    hostname,
    // As the course's peer: the first free port from 8000 up, unless --port says otherwise.
    port: wantedPort ?? FIRST_PORT,
    portSearch: wantedPort === undefined ? PORT_SEARCH_SPAN : 1,
    interval,
    mode,
    poolSize,
    quiet: values.quiet as boolean,
    progress: Deno.stdout.isTerminal(),
  });
  // Ready for Ctrl-C before saying so: a signal right after the line must stop us cleanly.
  exitOnSignal(async () => {
    console.log("stopping: temp files of unfinished downloads are removed");
    await peer.close();
  });
  console.log(
    `peer (${peer.mode} mode) sharing ${peer.dir}, listening on ${formatAddr(peer.addr)}; tracker ${
      formatAddr(tracker)
    }`,
  );
}

if (import.meta.main) runMain(USAGE, main);
