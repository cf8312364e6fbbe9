/**
 * The peer's step 4 (handout 002, peer to peer again): fetch what the plan
 * (`plan.ts`) chose. A queue that the plan replaces every round, a few
 * downloads at once, each trying the file's holders in order; a holder that
 * fails is remembered, so the next plan tries it last. Each download checks
 * the length and SHA-256 before the file gets its name (`files.ts`).
 *
 * A failure that is this machine's own (a full disk, a read-only folder, no
 * permission: `LocalDiskError`) blames no holder: the file, or the whole
 * folder when nothing can be written there, waits 5 s, then 10 s, and so on
 * up to 5 minutes, with one log line per reason, until a download works or
 * the device has room again. Blocked names stay in {@linkcode DownloadQueue.queued},
 * so the plan stays a pure function of what it is given and reports them once.
 *
 * @example
 * ```ts
 * import { DownloadQueue } from "./fetch.ts";
 * import { HashCache } from "./files.ts";
 * const stats = { downloads: 0, bytes: 0, failures: 0 };
 * const downloads = new DownloadQueue({ dir: await Deno.realPath("."), hashes: new HashCache(), stats });
 * downloads.replace(new Map()); // a plan's `fetch`
 * downloads.abort();
 * await downloads.settled();
 * ```
 * @module
 */

import { errorMessage } from "../lib/cli.ts";
import { formatBytes, type Log, printLog } from "../lib/log.ts";
import { fits, freeBytes } from "./disk_space.ts";
import {
  downloadFile,
  type DownloadResult,
  type HashCache,
  LocalChangeError,
  LocalDiskError,
} from "./files.ts";
import { sourceName, type Wanted } from "./plan.ts";

/** Files fetched at once; more wait their turn. */
export const PARALLEL_DOWNLOADS = 4;
/** Files at least this big get a progress line on a terminal. */
const PROGRESS_MIN_BYTES = 16 * 1024 * 1024; // bytes
/** Time between progress line updates. */
const PROGRESS_EVERY_MS = 250;
/** The first wait after a local write failure (full disk, read-only folder); it doubles. */
export const LOCAL_RETRY_FIRST_MS = 5_000; // milliseconds
/** The longest wait between attempts after local write failures. */
export const LOCAL_RETRY_MAX_MS = 5 * 60_000; // milliseconds

/** A wait after a local write failure. */
interface Backoff {
  /** When to try again (`Date.now()` milliseconds). */
  until: number;
  /** The wait that set `until`; the next failure doubles it. */
  delayMs: number;
  /** The failure. */
  error: LocalDiskError;
}

/** The counters the downloads add to (the peer's stats). */
export interface DownloadCounters {
  /** Files fetched and put in place. */
  downloads: number;
  /** Bytes in those files. */
  bytes: number;
  /** Download attempts that failed (each holder counts). */
  failures: number;
}

/** Options for {@linkcode DownloadQueue}. */
export interface DownloadQueueOptions {
  /** The shared folder (real path) that downloads go into. */
  dir: string;
  /** The peer's hash cache: a download's hash goes in, so the next listing need not read it. */
  hashes: HashCache;
  /** Counters to add to. */
  stats: DownloadCounters;
  /** Seconds without data before a download gives up on its holder. @default {30} */
  idleTimeoutSeconds?: number;
  /** Show a progress line for large downloads (on a terminal). @default {false} */
  progress?: boolean;
  /** Where lines go. @default {console.log} */
  log?: Log;
  /** Called when a file is in place: the peer records the version it now holds. */
  onDownloaded?: (name: string, wanted: Wanted, result: DownloadResult) => void;
  /**
   * Refuse a file bigger than the folder's free space before fetching it
   * (needs `--allow-sys=statfs`; without it the write error is the signal).
   * @default {true}
   */
  checkSpace?: boolean;
  /**
   * The first wait after a local write failure, in ms; each failed retry
   * doubles it, up to {@linkcode LOCAL_RETRY_MAX_MS}. @default {LOCAL_RETRY_FIRST_MS}
   */
  localRetryFirstMs?: number;
}

/** The downloads a peer runs: the queue the plan sets, and the ones in flight. */
export class DownloadQueue {
  /** Downloads finished since {@linkcode DownloadQueue.forgetRecent}: name to whole-second mtime. */
  readonly recent: Map<string, number> = new Map();
  /** Holders that failed lately: `ip:port` to when (`Date.now()`). */
  readonly badHolders: Map<string, number> = new Map();
  #options: DownloadQueueOptions;
  #log: Log;
  #abort = new AbortController();
  /** Waiting to be fetched, by name; replaced by every plan. */
  #queue = new Map<string, Wanted>();
  #inFlight = new Map<string, Promise<void>>();
  /** The whole folder's wait, when nothing can be written there. */
  #folderBlock: Backoff | null = null;
  /** Waits of single files (too big for the free space, say), by name. */
  #fileBlocks = new Map<string, Backoff>();
  /** Local failures already logged, so that each reason gets one line, not one per attempt. */
  #reported = new Set<string>();
  /** A look at the free space while something waits for room, if one is running. */
  #spaceCheck: Promise<void> | null = null;

  /** A queue that fetches into `options.dir`; nothing runs until {@linkcode DownloadQueue.replace}. */
  constructor(options: DownloadQueueOptions) {
    this.#options = options;
    this.#log = options.log ?? printLog;
  }

  /** Names queued now (what the last plan chose and has not started). */
  get queued(): ReadonlyMap<string, Wanted> {
    return this.#queue;
  }

  /** Names being downloaded now. */
  get inFlight(): ReadonlyMap<string, Promise<void>> {
    return this.#inFlight;
  }

  /**
   * When downloads into the folder may start again (`Date.now()` ms) after a
   * local failure that concerns the whole folder, or 0 when they may now.
   */
  get blockedUntil(): number {
    return this.#folderBlock?.until ?? 0;
  }

  /** Names waiting after a local failure of their own, to when (`Date.now()` ms). */
  get localBlocked(): ReadonlyMap<string, number> {
    return new Map([...this.#fileBlocks].map(([name, b]) => [name, b.until]));
  }

  /** Forgets the finished downloads: call it as a new listing of the folder starts. */
  forgetRecent(): void {
    this.recent.clear();
  }

  /**
   * Makes `wanted` (a plan's `fetch`) the whole queue, and starts downloads
   * while slots are free. Names waiting after a local failure stay queued
   * but start only when their wait is over (so retries follow the rounds).
   */
  replace(wanted: Map<string, Wanted>): void {
    this.#queue = wanted;
    this.#checkSpace();
    this.#pump();
  }

  /** Stops starting downloads and aborts those in flight (their temp files go). */
  abort(): void {
    this.#abort.abort();
  }

  /** Empties the queue and waits for the downloads in flight to end. */
  async settled(): Promise<void> {
    this.#queue.clear();
    await Promise.allSettled([...this.#inFlight.values(), this.#spaceCheck]);
  }

  get #stopping(): boolean {
    return this.#abort.signal.aborted;
  }

  /** Starts queued downloads while slots are free, except those waiting after a local failure. */
  #pump(): void {
    const now = Date.now();
    if (this.#folderBlock !== null && now < this.#folderBlock.until) return;
    for (const [name, wanted] of this.#queue) {
      if (this.#stopping || this.#inFlight.size >= PARALLEL_DOWNLOADS) break;
      const block = this.#fileBlocks.get(name);
      if (block !== undefined && now < block.until) continue;
      this.#queue.delete(name);
      const job = this.#fetch(name, wanted).finally(() => {
        this.#inFlight.delete(name);
        this.#pump();
      });
      this.#inFlight.set(name, job);
    }
  }

  /** Fetches one file, trying each holder in turn. */
  async #fetch(name: string, wanted: Wanted): Promise<void> {
    const { entry, sources, localMtime, byContent } = wanted;
    const stats = this.#options.stats;
    for (const [i, source] of sources.entries()) {
      if (this.#stopping) return;
      const where = sourceName(source);
      try {
        const result = await downloadFile({
          dir: this.#options.dir,
          name,
          hostname: source.ip,
          port: source.port,
          mtime: entry.mtime,
          size: entry.size,
          sha256: entry.sha256,
          localMtime,
          byContent,
          idleTimeoutSeconds: this.#options.idleTimeoutSeconds,
          checkSpace: this.#options.checkSpace,
          onProgress: this.#progress(name, entry.size),
          signal: this.#abort.signal,
        });
        this.#options.hashes.set(name, result.info, result.sha256);
        this.recent.set(name, Math.floor(entry.mtime));
        this.#options.onDownloaded?.(name, wanted, result);
        this.badHolders.delete(where);
        stats.downloads++;
        stats.bytes += result.bytes;
        const rate = result.bytes / 1e6 / Math.max(result.seconds, 1e-6);
        this.#log(
          `downloaded ${name} from ${where}: ${formatBytes(result.bytes)} in ${
            result.seconds.toFixed(2)
          } s (${rate.toFixed(1)} MB/s), ${
            result.verified ? "SHA-256 verified" : "length checked (no SHA-256 given)"
          }`,
        );
        this.#writable(name);
        return;
      } catch (err) {
        if (this.#stopping) return;
        if (err instanceof LocalChangeError) {
          // Not the holder's fault: the next round announces our copy and decides again.
          this.#log(`download of ${name} from ${where} dropped: ${err.message}; kept ours`);
          return;
        }
        if (err instanceof LocalDiskError) {
          // Ours to fix, not the holder's: the next holder would fail alike, so wait instead.
          this.#wait(name, err);
          // Back in the queue, unless a newer plan took its place: still wanted, just waiting,
          // so the next plan sees it queued and does not announce the fetch again.
          if (!this.#queue.has(name)) this.#queue.set(name, wanted);
          return;
        }
        stats.failures++;
        this.badHolders.set(where, Date.now());
        const next = sources[i + 1];
        this.#log(
          `download of ${name} from ${where} failed: ${errorMessage(err)}; ${
            next ? `trying ${sourceName(next)}` : "will retry next round"
          }`,
        );
      }
    }
  }

  /**
   * Puts `name` (or the whole folder) on a wait after a local failure: 5 s,
   * doubled by each failed retry up to 5 min. Failures while the wait runs
   * (other downloads already in flight) do not lengthen it. One line per
   * reason.
   */
  #wait(name: string, error: LocalDiskError): void {
    const now = Date.now();
    const folder = error.scope === "folder";
    const last = folder ? this.#folderBlock : this.#fileBlocks.get(name);
    if (last !== null && last !== undefined && now < last.until) return;
    const delayMs = last
      ? Math.min(last.delayMs * 2, LOCAL_RETRY_MAX_MS)
      : this.#options.localRetryFirstMs ?? LOCAL_RETRY_FIRST_MS;
    const block = { until: now + delayMs, delayMs, error };
    if (folder) this.#folderBlock = block;
    else this.#fileBlocks.set(name, block);
    // The reason without its figures (free bytes change every time), per file or for the folder.
    const key = folder ? `folder\n${error.code}` : `${name}\n${error.code}`;
    if (this.#reported.has(key)) return;
    this.#reported.add(key);
    const what = folder
      ? `cannot write to ${this.#options.dir}`
      : `cannot fetch ${name} into ${this.#options.dir}`;
    this.#log(`${what}: ${error.message}; retrying in ${formatWait(delayMs)}`);
  }

  /** A download worked: its file's wait and the folder's are over, and may be reported anew. */
  #writable(name: string): void {
    this.#fileBlocks.delete(name);
    this.#folderBlock = null;
    let folderReported = false;
    for (const key of this.#reported) {
      if (key.startsWith(`${name}\n`)) this.#reported.delete(key);
      if (key.startsWith("folder\n")) folderReported = this.#reported.delete(key);
    }
    if (folderReported) this.#log(`${this.#options.dir} takes downloads again`);
  }

  /**
   * While something waits for room, looks at the free space once per round:
   * when it grew and the file fits now (someone deleted files, a bigger disk
   * was mounted), the wait ends and starts again from 5 s next time.
   */
  #checkSpace(): void {
    if (this.#spaceCheck !== null || this.#stopping) return;
    const waiting = [
      ...(this.#folderBlock ? [this.#folderBlock] : []),
      ...this.#fileBlocks.values(),
    ].filter((b) => b.error.free !== undefined && b.error.free !== null);
    if (waiting.length === 0) return;
    this.#spaceCheck = (async () => {
      const free = await freeBytes(this.#options.dir);
      if (free === null) return;
      const roomFor = (b: Backoff) =>
        free > (b.error.free ?? Infinity) && fits(b.error.needed ?? 0, free);
      if (this.#folderBlock !== null && roomFor(this.#folderBlock)) this.#folderBlock = null;
      for (const [name, block] of this.#fileBlocks) {
        if (roomFor(block)) this.#fileBlocks.delete(name);
      }
    })().finally(() => {
      this.#spaceCheck = null;
      this.#pump();
    });
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

/** A wait as a log line says it: "5 s", "2 min". */
function formatWait(ms: number): string {
  const seconds = Math.round(ms / 1000);
  return seconds < 120 ? `${seconds} s` : `${Math.round(seconds / 60)} min`;
}
