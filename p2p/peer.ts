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
 * {@linkcode startPeer} reads as the steps, each in a file of its own:
 * 1. bind and serve files (`serve_files.ts`); 2. connect to the tracker,
 * Init, KeepAlive (`tracker_link.ts`); 3. plan what to fetch (`plan.ts`, a
 * pure function); 4. fetch it (`fetch.ts`).
 *
 * @module
 */

import {
  CliError,
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
import { MAX_POOL_SIZE, type Mode, MODES } from "../lib/concurrency.ts";
import { parseWorkers } from "../lib/server_cli.ts";
import { type Log, printLog } from "../lib/log.ts";
import { formatAddr } from "../lib/net.ts";
import { HashCache, listSharedFiles, removeStaleTempFiles } from "./files.ts";
import { listenFromPort, serveFiles } from "./serve_files.ts";
import { repeatRounds, TrackerLink } from "./tracker_link.ts";
import { localVersions, planDownloads } from "./plan.ts";
import { DownloadQueue } from "./fetch.ts";

export { PARALLEL_DOWNLOADS } from "./fetch.ts";
export { type FileHandlerOptions, fileRequestHandler } from "./serve_files.ts";

/** The course's peer serves on the first free port counting up from here. */
const FIRST_PORT = 8000;
/** How many ports above {@linkcode FIRST_PORT} we try before giving up. */
const PORT_SEARCH_SPAN = 1000;

/**
 * The `deno run` permission flags `p2p/peer.ts` needs to share `dir` in a
 * mode, run from the project folder: the folder to read and write, the code
 * to read (Workers and children load it), and `--allow-run` for children.
 *
 * @example
 * ```ts
 * import { peerPermissions } from "./peer.ts";
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
  const stats: PeerStats = { rounds: 0, downloads: 0, bytes: 0, failures: 0, connects: 0 };

  // Step 1: bind the file-serving port, then answer each request with the file (serve_files.ts).
  const listener = listenFromPort({
    hostname: options.hostname,
    port: options.port,
    portSearch: options.portSearch,
  });
  const server = await serveFiles(listener, {
    dir,
    mode: options.mode,
    poolSize: options.poolSize,
    quiet: options.quiet,
    requestTimeoutSeconds: options.requestTimeoutSeconds,
    sendTimeoutSeconds: options.sendTimeoutSeconds,
    log,
  });

  // Step 2: the tracker, told the port we serve on (tracker_link.ts).
  const tracker = new TrackerLink({
    tracker: options.tracker,
    port: server.addr.port,
    interval: options.interval,
    stats,
    log,
  });
  // Step 4's queue: it fetches what each plan chooses (fetch.ts).
  const hashes = new HashCache();
  const downloads = new DownloadQueue({
    dir,
    hashes,
    stats,
    idleTimeoutSeconds: options.idleTimeoutSeconds,
    progress: options.progress,
    log,
  });
  /** Skipped directory entries already reported, so each is logged once. */
  const warned = new Set<string>();

  /** One round: list the folder, send Init or KeepAlive, plan, fetch. */
  async function round(): Promise<void> {
    downloads.forgetRecent();
    const files = await listSharedFiles(dir, hashes);
    if (tracker.closed) return;
    // Step 2: Init on a new connection, else a KeepAlive; the tracker answers with the directory.
    const directory = await tracker.exchange(files);
    stats.rounds++;
    // Step 3: decide what to fetch and from whom (plan.ts: a pure function of plain data).
    const plan = planDownloads({
      directory,
      local: localVersions(files, downloads.recent),
      self: tracker.self,
      inFlight: downloads.inFlight,
      queued: downloads.queued,
      badHolders: downloads.badHolders,
      warned,
      now: Date.now(),
    });
    for (const key of plan.warned) warned.add(key);
    for (const line of plan.log) log(`round ${stats.rounds}: ${line}`);
    // Step 4: fetch, a few files at once, each from its holders in turn (fetch.ts).
    downloads.replace(plan.fetch);
  }
  // A round now, then one every interval (the KeepAlives); after a tracker failure, back off.
  const rounds = repeatRounds(tracker, round, { interval: options.interval, log });

  let closing: Promise<void> | null = null;
  const close = () =>
    closing ??= (async () => {
      downloads.abort();
      await rounds.stop();
      await downloads.settled();
      await server.close();
    })();
  return {
    addr: server.addr,
    mode: server.mode,
    dir,
    stats,
    close,
    [Symbol.asyncDispose]: close,
  };
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
