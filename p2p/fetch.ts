/**
 * The peer's step 4 (handout 002, peer to peer again): fetch what the plan
 * (`plan.ts`) chose. A queue that the plan replaces every round, each
 * download trying the file's holders in order; a holder that fails is
 * remembered, so the next plan tries it last. Small files share pipelined
 * connections with holders that accepted "pipeline", big ones stream one per
 * connection and resume from their partial file with holders that accepted
 * "range"; how many files are in flight adapts to the link. Each download checks
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
  type DownloadOptions,
  type DownloadResult,
  type HashCache,
  HolderConnection,
  LocalChangeError,
  LocalDiskError,
  type Partial,
  PARTIAL_KEEP_MS,
  removeStaleTempFiles,
  tempNameFor,
} from "./files.ts";
import { type Source, sourceAddr, sourceName, type Wanted } from "./plan.ts";

/** Big files (one connection each) fetched at once; more wait their turn. */
export const PARALLEL_DOWNLOADS = 4;
/** Files in flight at first; the window then adapts to the link (see `#adapt`). */
export const INITIAL_IN_FLIGHT = 16;
/** Files in flight at least and at most, whatever the link does. */
const MIN_IN_FLIGHT = 2;
const MAX_IN_FLIGHT = 128;
/** Throughput is measured over at least this long before the window changes. */
const SAMPLE_MS = 200; // milliseconds
/** A file's cost beside its bytes when throughput is measured (a request, a rename). */
const FILE_COST_BYTES = 64 * 1024; // bytes
/** Files up to this size share a pipelined connection with a holder that accepted "pipeline". */
export const PIPELINE_MAX_FILE_BYTES = 1024 * 1024; // bytes
/** Requests outstanding on one pipelined connection before another one is opened. */
export const PIPELINE_DEPTH = 16;
/**
 * Files queued at once that make a batch ({@linkcode DownloadQueueOptions.onBatch}):
 * enough that the events of our own writes would cost more than looking
 * through the folder once afterwards.
 */
export const BATCH_FILES = 32;
/** Body bytes outstanding on one pipelined connection before another one is opened. */
const PIPELINE_MAX_BYTES = 4 * 1024 * 1024; // bytes
/** Pipelined connections to one holder at most. */
const CONNECTIONS_PER_HOLDER = 4;
/** A pipelined connection with nothing to do is closed after this (the holder's own limit is 10 s). */
const POOL_IDLE_MS = 2_000; // milliseconds
/** Partial downloads of versions no longer wanted are looked for at most this often. */
const PARTIAL_SWEEP_MS = 60_000; // milliseconds
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
  /**
   * Files in flight at first; the window then grows while throughput rises
   * and halves when downloads fail. @default {INITIAL_IN_FLIGHT}
   */
  initialInFlight?: number;
  /** Called when a file is in place: the peer records the version it now holds. */
  onDownloaded?: (name: string, wanted: Wanted, result: DownloadResult) => void;
  /**
   * Called with `true` when a batch of at least {@linkcode BATCH_FILES} files
   * starts, and with `false` once nothing is in flight any more: the peer
   * stops watching its folder meanwhile (see `peer.ts`).
   */
  onBatch?: (running: boolean) => void;
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

/** One download in flight, as {@linkcode DownloadQueue.transfers} shows it. */
export interface Transfer {
  /** The file's name (a relative path with "paths"). */
  name: string;
  /** The holder it comes from, `ip:port`. */
  from: string;
  /** Bytes received so far. */
  bytes: number;
  /** Bytes in the whole file (0 until the holder's header came). */
  size: number;
  /** Average bytes per second since this attempt started. */
  rate: number;
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
  /** What each download in flight fetches (its version decides which partial files stay). */
  #inFlightWanted = new Map<string, Wanted>();
  /** Big files (own connection) in flight. */
  #big = 0;
  /** The window: files in flight at most, adapted to the link. */
  #limit: number;
  /** Whether the window grows fast (doubling) until throughput stops rising. */
  #slowStart = true;
  /** Throughput of the last sample (bytes/ms, files counted as FILE_COST_BYTES), 0: none yet. */
  #lastRate = 0;
  /** The running sample: since when, what finished, and whether files had to wait for the window. */
  #sample = { start: performance.now(), bytes: 0, files: 0, full: false };
  /** Pipelined connections by holder (`ip:port`). */
  #pool = new Map<string, Pooled[]>();
  /** When partial files were last looked through (`performance.now()`), -Infinity: never. */
  #lastSweep = -Infinity;
  #sweep: Promise<void> | null = null;
  /** The whole folder's wait, when nothing can be written there. */
  #folderBlock: Backoff | null = null;
  /** Waits of single files (too big for the free space, say), by name. */
  #fileBlocks = new Map<string, Backoff>();
  /** Local failures already logged, so that each reason gets one line, not one per attempt. */
  #reported = new Set<string>();
  /** A look at the free space while something waits for room, if one is running. */
  #spaceCheck: Promise<void> | null = null;
  /** Whether a batch is running (see {@linkcode DownloadQueueOptions.onBatch}). */
  #batch = false;

  /** A queue that fetches into `options.dir`; nothing runs until {@linkcode DownloadQueue.replace}. */
  constructor(options: DownloadQueueOptions) {
    this.#options = options;
    this.#log = options.log ?? printLog;
    this.#limit = options.initialInFlight ?? INITIAL_IN_FLIGHT;
  }

  /** Files in flight at most now (the adaptive window). */
  get window(): number {
    return Math.floor(this.#limit);
  }

  /** Names queued now (what the last plan chose and has not started). */
  get queued(): ReadonlyMap<string, Wanted> {
    return this.#queue;
  }

  /** Names being downloaded now. */
  get inFlight(): ReadonlyMap<string, Promise<void>> {
    return this.#inFlight;
  }

  /** Progress of the downloads in flight, by name (kept by {@linkcode DownloadQueue.transfers}). */
  #transfers = new Map<string, { from: string; bytes: number; size: number; started: number }>();

  /**
   * A snapshot of the downloads in flight: what, from whom, how far, and
   * the average rate of this attempt (bytes per second). Read-only; the peer reports it to our tracker's status page.
   */
  get transfers(): Transfer[] {
    const now = performance.now();
    const out: Transfer[] = [];
    for (const [name, t] of this.#transfers) {
      // A download that ended leaves its entry here until the next look.
      if (!this.#inFlight.has(name)) {
        this.#transfers.delete(name);
        continue;
      }
      const seconds = (now - t.started) / 1000;
      const rate = seconds > 0 ? Math.round(t.bytes / seconds) : 0;
      out.push({ name, from: t.from, bytes: t.bytes, size: t.size, rate });
    }
    return out;
  }

  /** Wraps a download's progress callback to keep {@linkcode DownloadQueue.transfers} up to date. */
  #tracked(
    name: string,
    from: string,
    inner?: (received: number, total: number) => void,
  ): (received: number, total: number) => void {
    const t = { from, bytes: 0, size: 0, started: performance.now() };
    this.#transfers.set(name, t);
    return (received, total) => {
      t.bytes = received;
      t.size = total;
      inner?.(received, total);
    };
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
    this.#sweepPartials();
    this.#pump();
  }

  /** Stops starting downloads and aborts those in flight (resumable partial files stay). */
  abort(): void {
    this.#abort.abort();
    this.#closePool();
  }

  /** Empties the queue and waits for the downloads in flight to end. */
  async settled(): Promise<void> {
    this.#queue.clear();
    await Promise.allSettled([...this.#inFlight.values(), this.#spaceCheck, this.#sweep]);
    this.#closePool();
  }

  get #stopping(): boolean {
    return this.#abort.signal.aborted;
  }

  /** Starts queued downloads while slots are free, except those waiting after a local failure. */
  #pump(): void {
    const now = Date.now();
    if (this.#folderBlock !== null && now < this.#folderBlock.until) return;
    for (const [name, wanted] of this.#queue) {
      if (this.#stopping) break;
      if (this.#inFlight.size >= Math.floor(this.#limit)) {
        // Files wait for the window: the sample says something about the window's size.
        this.#sample.full = true;
        break;
      }
      const block = this.#fileBlocks.get(name);
      if (block !== undefined && now < block.until) continue;
      // Never two downloads of one name at once: they would share the version's partial file.
      // (A plan made while this one started may list it again; it waits until that one ends.)
      if (this.#inFlight.has(name)) continue;
      // A big file takes a connection of its own; small ones behind it need not wait.
      const big = !this.#pipelines(wanted);
      if (big && this.#big >= PARALLEL_DOWNLOADS) continue;
      this.#queue.delete(name);
      if (big) this.#big++;
      this.#inFlightWanted.set(name, wanted);
      const job = this.#fetch(name, wanted).finally(() => {
        if (big) this.#big--;
        this.#inFlight.delete(name);
        this.#inFlightWanted.delete(name);
        // A plan made meanwhile may have queued the version that just arrived: it is here now.
        const again = this.#queue.get(name);
        if (
          again !== undefined && this.recent.get(name) === Math.floor(wanted.entry.mtime) &&
          again.entry.sha256 === wanted.entry.sha256 && again.entry.mtime === wanted.entry.mtime
        ) {
          this.#queue.delete(name);
        }
        this.#pump();
        if (this.#batch && this.#inFlight.size === 0) {
          this.#batch = false;
          this.#options.onBatch?.(false);
        }
      });
      this.#inFlight.set(name, job);
      // A batch starts with its first download: names that only wait (after a local failure)
      // start nothing, and would leave the watcher paused with nothing to end the batch.
      if (!this.#batch && this.#queue.size + this.#inFlight.size >= BATCH_FILES) {
        this.#batch = true;
        this.#options.onBatch?.(true);
      }
    }
  }

  /** Fetches one file, trying each holder in turn. */
  async #fetch(name: string, wanted: Wanted): Promise<void> {
    const { entry, localMtime, byContent } = wanted;
    const stats = this.#options.stats;
    const sources = await this.#order(name, wanted);
    for (const [i, source] of sources.entries()) {
      if (this.#stopping) return;
      const where = sourceName(source);
      const options: DownloadOptions = {
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
        onProgress: this.#tracked(name, where, this.#progress(name, entry.size)),
        signal: this.#abort.signal,
        // Extensions only with a holder the directory says accepted them.
        range: source.features?.includes("range") ?? false,
      };
      try {
        const result = this.#pipelines(wanted) && source.features?.includes("pipeline")
          ? await this.#viaPipeline(source, options)
          : await downloadFile(options);
        // Hashed as it arrived: trusted while fresh, so the next listings need not read it back.
        this.#options.hashes.setWritten(name, result.info, result.sha256);
        this.recent.set(name, Math.floor(entry.mtime));
        this.#options.onDownloaded?.(name, wanted, result);
        this.badHolders.delete(where);
        stats.downloads++;
        stats.bytes += result.bytes;
        this.#adapt(true, result.received);
        const rate = result.received / 1e6 / Math.max(result.seconds, 1e-6);
        this.#log(
          `downloaded ${name} from ${where}: ${formatBytes(result.bytes)} in ${
            result.seconds.toFixed(2)
          } s (${rate.toFixed(1)} MB/s), ${
            result.verified ? "SHA-256 verified" : "length checked (no SHA-256 given)"
          }${
            result.resumedFrom > 0
              ? `; continued from byte ${result.resumedFrom} (${
                formatBytes(result.received)
              } fetched now)`
              : ""
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
        this.#adapt(false, 0);
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
   * The holders to try for `wanted`: the plan's order, except that when a
   * partial download of this version is here, holders that accepted
   * "range" come first (they send only the rest).
   */
  async #order(name: string, wanted: Wanted): Promise<Source[]> {
    const { sources, entry } = wanted;
    if (entry.sha256 === undefined || this.#pipelines(wanted)) return sources;
    const partial = `${this.#options.dir}/${tempNameFor(name, entry.sha256)}`;
    const kept = await Deno.lstat(partial).then((info) => info.size, () => 0);
    if (kept === 0) return sources;
    const ranged = (s: Source) => (s.features?.includes("range") ? 0 : 1);
    return sources.map((s, i) => ({ s, i }))
      .sort((a, b) => ranged(a.s) - ranged(b.s) || a.i - b.i)
      .map(({ s }) => s);
  }

  /** Whether `wanted` is small enough to share a pipelined connection, and a holder offers one. */
  #pipelines(wanted: Wanted): boolean {
    const size = wanted.entry.size;
    return size !== undefined && size <= PIPELINE_MAX_FILE_BYTES &&
      wanted.sources.some((s) => s.features?.includes("pipeline"));
  }

  /**
   * Fetches a small file over a pipelined connection to `source`: the least
   * busy one, or a new one when all are full (up to
   * {@linkcode CONNECTIONS_PER_HOLDER}).
   */
  async #viaPipeline(source: Source, options: DownloadOptions): Promise<DownloadResult> {
    const key = sourceName(source);
    const pool = (this.#pool.get(key) ?? []).filter((p) => !p.broken);
    this.#pool.set(key, pool);
    let chosen = pool.reduce<Pooled | null>(
      (a, b) => (a === null || b.load < a.load ? b : a),
      null,
    );
    if (
      chosen === null ||
      ((chosen.load >= PIPELINE_DEPTH || chosen.bytes >= PIPELINE_MAX_BYTES) &&
        pool.length < CONNECTIONS_PER_HOLDER)
    ) {
      const { hostname, port } = sourceAddr(source);
      const ready = HolderConnection.open(hostname, port, {
        idleTimeoutSeconds: this.#options.idleTimeoutSeconds,
        signal: this.#abort.signal,
      });
      chosen = { ready, load: 0, bytes: 0, broken: false, idle: undefined };
      pool.push(chosen);
      ready.catch(() => chosen!.broken = true);
    }
    const pooled = chosen;
    const size = options.size ?? 0;
    pooled.load++;
    pooled.bytes += size;
    clearTimeout(pooled.idle);
    try {
      const conn = await pooled.ready;
      return await conn.fetch(options);
    } finally {
      pooled.load--;
      pooled.bytes -= size;
      const conn = await pooled.ready.catch(() => null);
      if (conn === null || conn.broken) {
        pooled.broken = true;
        conn?.close();
      } else if (pooled.load === 0) {
        // Closed before the holder's own idle limit, so a request never meets a closing socket.
        clearTimeout(pooled.idle);
        pooled.idle = setTimeout(() => {
          pooled.broken = true;
          conn.close();
        }, POOL_IDLE_MS);
      }
    }
  }

  /** Closes every pipelined connection (the peer stops, or the queue settles). */
  #closePool(): void {
    for (const pool of this.#pool.values()) {
      for (const pooled of pool) {
        clearTimeout(pooled.idle);
        pooled.broken = true;
        pooled.ready.then((c) => c.close(), () => {});
      }
    }
    this.#pool.clear();
  }

  /**
   * Adapts the window to the link after each download: throughput (bytes,
   * each file counted as {@linkcode FILE_COST_BYTES} more) is measured over
   * {@linkcode SAMPLE_MS} or more; while files waited for the window, a rise
   * grows it (doubling at first, then by one), a fall of a third shrinks it
   * by a quarter, and a failed download halves it (AIMD, as TCP does).
   */
  #adapt(ok: boolean, bytes: number): void {
    const now = performance.now();
    if (!ok) {
      this.#limit = Math.max(MIN_IN_FLIGHT, this.#limit / 2);
      this.#slowStart = false;
      this.#sample = { start: now, bytes: 0, files: 0, full: false };
      return;
    }
    const sample = this.#sample;
    sample.bytes += bytes;
    sample.files++;
    const elapsed = now - sample.start;
    if (elapsed < SAMPLE_MS) return;
    const rate = (sample.bytes + sample.files * FILE_COST_BYTES) / elapsed;
    if (sample.full) {
      if (rate >= this.#lastRate * 1.1) {
        this.#limit = this.#slowStart ? this.#limit * 2 : this.#limit + 1;
      } else if (rate < this.#lastRate * 0.67) {
        this.#limit *= 0.75;
        this.#slowStart = false;
      } else {
        this.#slowStart = false;
        this.#limit += 1;
      }
      this.#limit = Math.min(MAX_IN_FLIGHT, Math.max(MIN_IN_FLIGHT, this.#limit));
    }
    this.#lastRate = rate;
    this.#sample = { start: now, bytes: 0, files: 0, full: false };
  }

  /**
   * Removes partial downloads of versions no longer wanted, at most once per
   * {@linkcode PARTIAL_SWEEP_MS}: a partial file stays while its version is
   * queued or in flight; when another version of its file is wanted it goes
   * at once, otherwise after {@linkcode PARTIAL_KEEP_MS} (its holders may be
   * back by then).
   */
  #sweepPartials(): void {
    const now = performance.now();
    if (this.#sweep !== null || this.#stopping || now - this.#lastSweep < PARTIAL_SWEEP_MS) return;
    this.#lastSweep = now;
    const withoutVersion = (path: string) => path.slice(0, -".0123456789abcdef.part".length);
    const keep = (partial: Partial) => {
      // Read at the time of the look, not before: a plan may have come meanwhile.
      const wanted = [...this.#queue, ...this.#inFlightWanted]
        .filter(([, w]) => w.entry.sha256 !== undefined)
        .map(([name, w]) => tempNameFor(name, w.entry.sha256));
      if (wanted.includes(partial.path)) return true;
      if (wanted.some((p) => withoutVersion(p) === withoutVersion(partial.path))) return false;
      return Date.now() - partial.mtime < PARTIAL_KEEP_MS;
    };
    this.#sweep = removeStaleTempFiles(this.#options.dir, keep, true)
      .then((removed) => {
        if (removed.length > 0) {
          this.#log(`removed ${removed.length} partial download(s) no longer wanted`);
        }
      }, () => {})
      .finally(() => this.#sweep = null);
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

/** A pipelined connection in the pool, with the files given to it. */
interface Pooled {
  ready: Promise<HolderConnection>;
  /** Files given to it and not finished. */
  load: number;
  /** Their sizes, summed. */
  bytes: number;
  /** Closed or failed: no more files go to it. */
  broken: boolean;
  /** Closes it after a while with nothing to do. */
  idle: ReturnType<typeof setTimeout> | undefined;
}

/** A wait as a log line says it: "5 s", "2 min". */
function formatWait(ms: number): string {
  const seconds = Math.round(ms / 1000);
  return seconds < 120 ? `${seconds} s` : `${Math.round(seconds / 60)} min`;
}
