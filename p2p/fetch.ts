/**
 * The peer's step 4 (handout 002, peer to peer again): fetch what the plan
 * (`plan.ts`) chose. A queue that the plan replaces every round, a few
 * downloads at once, each trying the file's holders in order; a holder that
 * fails is remembered, so the next plan tries it last. Each download checks
 * the length and SHA-256 before the file gets its name (`files.ts`).
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
import { downloadFile, type DownloadResult, type HashCache, LocalChangeError } from "./files.ts";
import { sourceName, type Wanted } from "./plan.ts";

/** Files fetched at once; more wait their turn. */
export const PARALLEL_DOWNLOADS = 4;
/** Files at least this big get a progress line on a terminal. */
const PROGRESS_MIN_BYTES = 16 * 1024 * 1024; // bytes
/** Time between progress line updates. */
const PROGRESS_EVERY_MS = 250;

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

  /** Forgets the finished downloads: call it as a new listing of the folder starts. */
  forgetRecent(): void {
    this.recent.clear();
  }

  /** Makes `wanted` (a plan's `fetch`) the whole queue, and starts downloads while slots are free. */
  replace(wanted: Map<string, Wanted>): void {
    this.#queue = wanted;
    this.#pump();
  }

  /** Stops starting downloads and aborts those in flight (their temp files go). */
  abort(): void {
    this.#abort.abort();
  }

  /** Empties the queue and waits for the downloads in flight to end. */
  async settled(): Promise<void> {
    this.#queue.clear();
    await Promise.allSettled([...this.#inFlight.values()]);
  }

  get #stopping(): boolean {
    return this.#abort.signal.aborted;
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
        return;
      } catch (err) {
        if (this.#stopping) return;
        if (err instanceof LocalChangeError) {
          // Not the holder's fault: the next round announces our copy and decides again.
          this.#log(`download of ${name} from ${where} dropped: ${err.message}; kept ours`);
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
