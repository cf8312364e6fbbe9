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
 * Beyond the course: files in subfolders are synced too (by relative path,
 * with a tracker that accepts the "paths" extension), and a `.p2pignore`
 * file in the folder says what stays local (`ignore.ts`). A change in the
 * folder is announced as soon as the file stops changing (it watches the
 * folder), and with a tracker that accepts "push" a change elsewhere
 * arrives at once too, not at the next round (`PROTOCOL.md`, "push").
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
import { type Log, preview, printLog } from "../lib/log.ts";
import { formatAddr } from "../lib/net.ts";
import { errorMessage } from "../lib/cli.ts";
import { type DownloadResult, HashCache, listSharedFiles, removeStaleTempFiles } from "./files.ts";
import { listenFromPort, serveFiles } from "./serve_files.ts";
import { repeatRounds, TrackerLink } from "./tracker_link.ts";
import {
  type LocalCopy,
  localVersions,
  type Plan,
  planDownloads,
  planVersions,
  type VersionsPlan,
  type Wanted,
  warningKey,
} from "./plan.ts";
import { DownloadQueue } from "./fetch.ts";
import { deleteIfUnchanged, goneFrom, keepConflictCopy } from "./local_actions.ts";
import { FEATURES, type FileInfo } from "./protocol.ts";
import { IGNORE_FILE, IgnoreFile, ignoreNote, IgnoreRules } from "./ignore.ts";
import {
  forgetOldDeletions,
  loadState,
  saveState,
  scanFolder,
  STATE_DIR,
  type SyncState,
} from "./sync_state.ts";
import { MAX_HISTORY, type Version } from "./versions.ts";

export { PARALLEL_DOWNLOADS } from "./fetch.ts";
export { type FileHandlerOptions, fileRequestHandler } from "./serve_files.ts";

/** The course's peer serves on the first free port counting up from here. */
const FIRST_PORT = 8000;
/** How many ports above {@linkcode FIRST_PORT} we try before giving up. */
const PORT_SEARCH_SPAN = 1000;
/**
 * Quiet time after the last change seen in the folder before a round
 * announces it: a file being written keeps changing, and a half-written
 * file is not worth sending.
 */
const SETTLE_MS = 200;
/** How long a finished download's own events in the folder are told apart as ours. */
const OWN_WRITE_MS = 5_000;
/** Shortest `--interval`: each round is a message to the tracker and a look through the folder. */
export const MIN_INTERVAL_SECONDS = 0.1;

/** What {@linkcode PeerOptions.watchFs} returns: the part of `Deno.FsWatcher` the peer uses. */
export type FolderWatcher = AsyncIterable<Deno.FsEvent> & { close(): void };

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
  /**
   * Watch the folder and announce a change as soon as it settles, and ask
   * the tracker to push changes (extension "push"); `false`: changes go and
   * come with the rounds, as in the course. @default {true}
   */
  push?: boolean;
  /**
   * Opens the folder watcher (tests pass one that fails or overflows).
   * @default {(dir) => Deno.watchFs(dir, { recursive: true })}
   */
  watchFs?: (dir: string) => FolderWatcher;
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
  // What this peer remembers of its folder between runs: its id, the version of each file,
  // its deletions (sync_state.ts). Losing it is safe: see p2p/PROTOCOL.md.
  const state = await loadState(dir, log);
  const saver = new StateSaver(dir, state, log);
  /** Downloads finished since the round's listing began: path to what is there now. */
  const downloaded = new Map<string, LocalCopy>();

  // Step 4's queue: it fetches what each plan chooses (fetch.ts).
  const hashes = new HashCache();
  /** The folder's watcher (with "push"); made once the rounds can be nudged. */
  let watch: FolderWatch | null = null;
  const downloads = new DownloadQueue({
    dir,
    hashes,
    stats,
    idleTimeoutSeconds: options.idleTimeoutSeconds,
    progress: options.progress,
    log,
    // A batch's own writes are not watched: one look through the folder afterwards is cheaper.
    onBatch: (running) => running ? watch?.pause() : watch?.resume(),
    onDownloaded(name, wanted, result) {
      // The watcher will see this rename: it is no change of ours to announce.
      ownWrites.set(name, {
        size: result.bytes,
        mtime: Math.floor(wanted.entry.mtime),
        until: Date.now() + OWN_WRITE_MS,
      });
      state.files.set(name, downloadedVersion(wanted, result, state.files.get(name)));
      state.deleted.delete(name);
      downloaded.set(name, { sha256: result.sha256, mtime: Math.floor(wanted.entry.mtime) });
      saver.dirty = true;
    },
  });
  /** Skipped directory entries already reported, so each is logged once. */
  const warned = new Set<string>();
  /** Says a line once: skips and ignored names, of the listing and of the plan alike. */
  const once = (key: string, line: string) => {
    if (warned.has(key)) return;
    warned.add(key);
    log(line);
  };
  /** The share's `.p2pignore`, read again each round if it changed. */
  const ignoreFile = new IgnoreFile(dir);
  /** The ignore rules of the last round, for the watcher to skip what is not shared. */
  let lastIgnore = IgnoreRules.DEFAULT;
  /** Files our downloads just put in place: the watcher's events for them are not changes. */
  const ownWrites = new Map<string, { size: number; mtime: number; until: number }>();
  const push = options.push ?? true;
  /**
   * Whether the tracker's last reply on this connection accepted "paths":
   * only then do names with `/` go out (the course's tracker would pass them
   * to everyone). A failed exchange clears it, so an Init on a new
   * connection never carries one.
   */
  let pathsAccepted = false;

  /** One round: list the folder, send Init or KeepAlive, plan, fetch. */
  async function round(): Promise<void> {
    downloads.forgetRecent();
    downloaded.clear();
    const { rules: ignore, changed, problem } = await ignoreFile.read();
    lastIgnore = ignore;
    for (const [path, own] of ownWrites) if (own.until < Date.now()) ownWrites.delete(path);
    if (problem !== null) {
      if (changed) log(problem);
    } else if (changed && ignore.count > IgnoreRules.DEFAULT.count) {
      log(`read ${IGNORE_FILE}: ${ignore.count - IgnoreRules.DEFAULT.count} rule(s)`);
    }
    const files = await listSharedFiles(dir, hashes, {
      ignore,
      onSkip: (skip) => {
        if (skip.ignored) {
          const note = ignoreNote(skip.ignored);
          once(note.key, note.line);
        } else {
          const shown = preview(new TextEncoder().encode(skip.path));
          once(warningKey(skip.path, skip.reason), `not sharing ${shown}: ${skip.reason}`);
        }
      },
    });
    if (tracker.closed) return;
    // What changed here since the last round: edits are new versions, missing files deletions.
    const listed = new Set(files.map((f) => f.name));
    // An ignored file is this peer's alone: its removal is not a deletion to tell anyone.
    const gone = await goneFrom(
      dir,
      [...state.files.keys()].filter((p) => !listed.has(p) && ignore.ignored(p) === null),
    );
    const now = Date.now();
    const scan = scanFolder(state, files, (path) => gone.has(path), now, downloaded);
    forgetOldDeletions(state, now);
    for (const path of scan.deleted) log(`deleted here: ${path} (telling the other peers)`);
    if (scan.changed.length > 0 || scan.deleted.length > 0) saver.dirty = true;

    // Step 2: Init on a new connection, else a KeepAlive; the tracker answers with the directory.
    const held = new Set([...listed, ...downloaded.keys()]);
    const withPaths = pathsAccepted;
    pathsAccepted = false;
    const sendable = (name: string) => withPaths || !name.includes("/");
    const announced = announcedFiles(held, state).filter((f) => sendable(f.name));
    const deleted = [...state.deleted].filter(([name]) => sendable(name));
    const reply = await tracker.exchange(announced, {
      id: state.id,
      features: push ? FEATURES : FEATURES.filter((f) => f !== "push"),
      deleted: deleted.map(([name, d]) => ({
        name,
        sha256: d.sha256,
        time: Math.floor(d.deletedAt / 1000),
      })),
      // Our tracker's status page shows the downloads running now (extension "transfers").
      transfers: downloads.transfers,
    });
    pathsAccepted = reply.features?.includes("paths") ?? false;
    stats.rounds++;
    // Step 3: decide what to do and from whom (plan.ts: pure functions of plain data): by
    // content when the tracker speaks "versions", by the course's newest mtime otherwise.
    const common = {
      directory: reply.directory,
      self: tracker.self,
      inFlight: downloads.inFlight,
      queued: downloads.queued,
      badHolders: downloads.badHolders,
      warned,
      now,
      paths: pathsAccepted,
      ignore,
    };
    let plan: Plan;
    let versionsPlan: VersionsPlan | null = null;
    if (reply.features?.includes("versions")) {
      const local = new Map(files.map((f) => [f.name, { sha256: f.sha256, mtime: f.mtime }]));
      for (const [name, copy] of downloaded) local.set(name, copy);
      plan = versionsPlan = planVersions({
        ...common,
        deleted: reply.deleted,
        local,
        recorded: state.files,
        deletedHere: state.deleted,
      });
    } else {
      plan = planDownloads({ ...common, local: localVersions(files, downloads.recent) });
    }
    for (const key of plan.warned) warned.add(key);
    for (const line of plan.log) log(`round ${stats.rounds}: ${line}`);
    if (versionsPlan) await applyToFolder(versionsPlan);
    // Step 4: fetch, a few files at once, each from its holders in turn (fetch.ts).
    downloads.replace(plan.fetch);
    await saver.save();
  }

  /** Keeps conflict losers under their copy names and deletes what the swarm deleted. */
  async function applyToFolder(plan: VersionsPlan): Promise<void> {
    for (const { from, to, sha256 } of plan.copies) {
      const why = await keepConflictCopy(dir, from, to, sha256).catch(errorMessage);
      if (why !== null) {
        log(`round ${stats.rounds}: could not keep ${from} as ${to}: ${why}; will try again`);
        plan.fetch.delete(from);
        continue;
      }
      state.files.delete(from);
      saver.dirty = true;
      log(`round ${stats.rounds}: ${from} lost a conflict: your version is kept as ${to}`);
    }
    for (const { path, sha256, by } of plan.deletes) {
      const why = await deleteIfUnchanged(dir, path, sha256).catch(errorMessage);
      if (why !== null) {
        log(`round ${stats.rounds}: not deleting ${path}: ${why}`);
        continue;
      }
      state.files.delete(path);
      saver.dirty = true;
      log(`round ${stats.rounds}: deleted ${path}: it was deleted on peer ${by || "(unknown)"}`);
    }
  }
  // A round now, then one every interval (the KeepAlives); after a tracker failure, back off.
  const rounds = repeatRounds(tracker, round, { interval: options.interval, log });

  /**
   * Whether a change the watcher saw at `path` may be one to announce: not
   * a hidden or ignored name (our temp files, the state folder), not a file
   * our own download just put in place, not the removal of a path nobody
   * recorded. The round decides for sure; this only spares it needless runs.
   */
  function mayAnnounce(path: string): boolean {
    const inside = path.startsWith(dir + SEPARATOR) ? path.slice(dir.length + 1) : null;
    if (inside === null) return path !== dir;
    const rel = SEPARATOR === "/" ? inside : inside.replaceAll(SEPARATOR, "/");
    // .p2pignore itself counts: the round reads it again.
    if (rel === IGNORE_FILE) return true;
    if (rel.split("/").some((name) => name.startsWith("."))) return false;
    if (lastIgnore.ignored(rel) !== null) return false;
    // Sync, as the listing does: a download burst brings an event per file, and the async call's
    // thread hop cost more than the look itself.
    let info: Deno.FileInfo | null = null;
    try {
      info = Deno.lstatSync(path);
    } catch {
      // Gone, or not ours to look at: as gone.
    }
    if (info === null) {
      // Gone: a change only if it was a file (or a folder of files) announced here.
      if (state.files.has(rel)) return true;
      const folder = rel + "/";
      for (const recorded of state.files.keys()) if (recorded.startsWith(folder)) return true;
      return false;
    }
    const own = ownWrites.get(rel);
    if (own !== undefined) {
      if (own.until < Date.now()) ownWrites.delete(rel);
      else if (
        info.isFile && info.size === own.size &&
        Math.floor((info.mtime?.getTime() ?? 0) / 1000) === own.mtime
      ) return false;
    }
    return true;
  }
  // Watch the folder: a change that settles starts a round at once (the rounds stay the safety net).
  watch = push
    ? watchFolder(dir, {
      open: options.watchFs,
      mayAnnounce,
      onSettled: () => rounds.nudge(),
      interval: options.interval ?? 5,
      log,
    })
    : null;

  let closing: Promise<void> | null = null;
  const close = () =>
    closing ??= (async () => {
      await watch?.close();
      downloads.abort();
      await rounds.stop();
      await downloads.settled();
      await saver.save();
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
 * The files our peer announces, sorted by name: the course's name and mtime,
 * and the version the state records for each (the scan has just updated it).
 */
function announcedFiles(paths: Set<string>, state: SyncState): FileInfo[] {
  const files: FileInfo[] = [];
  for (const name of [...paths].sort()) {
    const v = state.files.get(name);
    if (v === undefined) continue;
    const info: FileInfo = { name, mtime: v.mtime, size: v.size, sha256: v.sha256, by: v.by };
    if (v.history.length > 0) info.history = v.history;
    files.push(info);
  }
  return files;
}

/**
 * The version a finished download put in place: the directory's, when it
 * named one; else (a course peer's file, by mtime) a new version based on
 * the one recorded here.
 */
function downloadedVersion(
  wanted: Wanted,
  result: DownloadResult,
  recorded: Version | undefined,
): Version {
  const { entry } = wanted;
  if (entry.sha256 === result.sha256 && entry.by !== undefined) {
    return {
      sha256: result.sha256,
      size: result.bytes,
      mtime: Math.floor(entry.mtime),
      by: entry.by,
      history: entry.history ?? [],
    };
  }
  const history = recorded && recorded.sha256 !== result.sha256
    ? [recorded.sha256, ...recorded.history].slice(0, MAX_HISTORY)
    : recorded?.history ?? [];
  return {
    sha256: result.sha256,
    size: result.bytes,
    mtime: Math.floor(entry.mtime),
    by: "",
    history,
  };
}

/** Writes the state after a round that changed it; a failure is reported once per reason. */
class StateSaver {
  dirty = true;
  #dir: string;
  #state: SyncState;
  #log: Log;
  #lastError: string | null = null;

  constructor(dir: string, state: SyncState, log: Log) {
    this.#dir = dir;
    this.#state = state;
    this.#log = log;
  }

  async save(): Promise<void> {
    if (!this.dirty) return;
    try {
      await saveState(this.#dir, this.#state);
      this.dirty = false;
      this.#lastError = null;
    } catch (err) {
      const why = errorMessage(err);
      if (why !== this.#lastError) {
        this.#log(
          `cannot save ${STATE_DIR}/ in the folder (${why}); syncing on, but a restart ` +
            "will see every file as new (conflicts keep both versions)",
        );
        this.#lastError = why;
      }
    }
  }
}

/** The separator in the paths the watcher reports. */
const SEPARATOR = Deno.build.os === "windows" ? "\\" : "/";

/** A running {@linkcode watchFolder}. */
interface FolderWatch {
  /**
   * Stops watching for a while (our own batch of downloads is being written:
   * its events would cost more than one look through the folder afterwards).
   */
  pause(): void;
  /** Watches again after {@linkcode FolderWatch.pause}, and calls `onSettled` (the round rescans). */
  resume(): void;
  /** Stops watching and waits for the last event to be handled. */
  close(): Promise<void>;
}

/**
 * Watches `dir` and its subfolders, and calls `onSettled` once the changes
 * that `mayAnnounce` lets through have stopped for {@linkcode SETTLE_MS}.
 * When the system's queue of events overflowed (events were lost), it calls
 * `onSettled` once the events stop too: the round rescans the whole folder. A watcher that
 * cannot start, or fails, is reported in one line; the rounds every
 * `interval` then find every change, as they always do.
 */
function watchFolder(
  dir: string,
  options: {
    open?: (dir: string) => FolderWatcher;
    mayAnnounce: (path: string) => boolean;
    onSettled: () => void;
    interval: number;
    log: Log;
  },
): FolderWatch {
  const { mayAnnounce, onSettled, log } = options;
  const fallback = `changes here are found by the round every ${options.interval} s`;
  let closed = false;
  let paused = false;
  let overflowSaid = false;
  let timer: ReturnType<typeof setTimeout> | undefined;
  const settle = () => {
    clearTimeout(timer);
    timer = setTimeout(() => {
      timer = undefined;
      onSettled();
    }, SETTLE_MS);
  };
  /** The watcher in use and its loop; null while paused, closed, or after a failure. */
  let current: { watcher: FolderWatcher; running: Promise<void> } | null = null;
  let failed = false;

  function start(): void {
    let watcher: FolderWatcher;
    try {
      watcher = (options.open ?? ((d) => Deno.watchFs(d, { recursive: true })))(dir);
    } catch (err) {
      log(`cannot watch ${dir} (${errorMessage(err)}): ${fallback}`);
      failed = true;
      return;
    }
    const running = (async () => {
      try {
        for await (const event of watcher) {
          if (event.flag === "rescan") {
            if (!overflowSaid) {
              log(
                `the watcher of ${dir} lost events (too many changes at once): rescanning the folder`,
              );
              overflowSaid = true;
            }
            // After the burst, not during it: the events lost are most often our own downloads'
            // renames, and a round in the middle would list the whole folder for nothing.
            settle();
            continue;
          }
          for (const path of event.paths) {
            if (mayAnnounce(path)) {
              settle();
              break;
            }
          }
        }
        if (current?.watcher === watcher) {
          log(`the watcher of ${dir} stopped: ${fallback}`);
          failed = true;
        }
      } catch (err) {
        if (current?.watcher === watcher) {
          log(`the watcher of ${dir} failed (${errorMessage(err)}): ${fallback}`);
          failed = true;
        }
      }
    })();
    current = { watcher, running };
  }

  /** Closes the watcher in use (its loop ends quietly); resolves when the loop has. */
  function stop(): Promise<void> {
    const was = current;
    current = null;
    if (was === null) return Promise.resolve();
    try {
      was.watcher.close();
    } catch {
      // Already closed by its own failure.
    }
    return was.running;
  }

  /** The loops of watchers closed by pause(), until they have ended. */
  const ending = new Set<Promise<void>>();
  start();
  return {
    pause() {
      if (closed || paused || failed) return;
      paused = true;
      // A change seen just before is found by the look through the folder that resume() asks for.
      clearTimeout(timer);
      const loop = stop();
      ending.add(loop);
      loop.finally(() => ending.delete(loop));
    },
    resume() {
      if (closed || !paused) return;
      paused = false;
      start();
      // Whatever changed while nobody watched is found by looking through the folder once.
      if (!failed) onSettled();
    },
    async close() {
      closed = true;
      clearTimeout(timer);
      await Promise.all([stop(), ...ending]);
      clearTimeout(timer);
    },
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
  --interval S         seconds between sync rounds and keep-alives, at least 0.1 (default 5)
  --mode MODE          async | worker | process: where each file request is served (default async)
                       worker also needs --allow-read=.,DIR  process needs --allow-read=.,DIR --allow-run
  --workers N          workers or child processes kept warm, 1 to ${MAX_POOL_SIZE} (default: CPU count)
  --no-push            do not watch the folder or ask the tracker to push changes:
                       changes go and come only with the rounds, as in the course
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
    "no-push": { type: "boolean", default: false },
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
  // A round is a message to the tracker and a look through the folder: not a thousand a second.
  const interval = parseSeconds(values.interval as string, "--interval", MIN_INTERVAL_SECONDS);
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
    push: !(values["no-push"] as boolean),
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
