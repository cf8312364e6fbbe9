#!/usr/bin/env -S deno run --allow-net --allow-read --allow-run
/**
 * The P2P tracker's load benchmark: it starts `p2p/tracker.ts` in a process
 * of its own, connects `--peers` simulated peers that each announce
 * `--files` files, then has every peer send a KeepAlive every `--interval`
 * seconds (spread evenly over the interval, as real peers drift apart), and
 * measures for `--duration` seconds:
 * - the tracker process's CPU share (from `/proc/PID/stat`; 100 = one core),
 * - each directory response's latency, from the KeepAlive's first byte
 *   written to the directory's last byte read (p50, p99, max),
 * - the tracker's peak resident memory.
 *
 * It prints one JSON object on stdout; progress goes to stderr.
 *
 * Run: `deno run --allow-net --allow-read --allow-run bench/p2p_tracker_load.ts`
 * (1,000 peers, 10 files each, every 5 s, 30 s measured). `--distinct N`
 * makes the peers share N file names between them instead of each having
 * its own (the directory is then N entries long).
 *
 * @module
 */

import { parseCli, parseCount, parseSeconds, runMain } from "../lib/cli.ts";
import { writeAll } from "../lib/net.ts";
import { encodeLine, type FileInfo } from "../p2p/protocol.ts";
import { clockTicksPerSecond, cpuSeconds, peakRssMiB, startBenchTracker } from "./servers.ts";

/** Target from the issue: p99 directory-response latency. */
const TARGET_P99_MS = 50;

/** Bytes per read while draining a directory response. */
const READ_BYTES = 64 * 1024;

/** Peers connecting (and sending Init) at the same time during the ramp-up. */
const RAMP_BATCH = 50;

/** What one run measured. */
export interface TrackerLoadResult {
  peers: number;
  filesPerPeer: number;
  distinctFiles: number;
  intervalSeconds: number;
  /** Seconds measured, after the ramp-up and one warm-up interval. */
  durationSeconds: number;
  /** Seconds all peers took to connect and get their Init answered. */
  rampSeconds: number;
  /** Directory responses received in the measured window. */
  responses: number;
  /** Average length of one directory response. */
  responseBytes: number;
  /** Latency of directory responses in the window, in ms. */
  p50Ms: number;
  p99Ms: number;
  maxMs: number;
  /** The tracker process's CPU time over the window, as % of one core. */
  trackerCpuPercent: number;
  /** The load generator's own CPU share (it shares the machine). */
  clientCpuPercent: number;
  /** The tracker process's peak resident memory (VmHWM), MiB. */
  trackerPeakRssMiB: number;
  /** Failed requests (connection errors). */
  errors: number;
  targetP99Ms: number;
  meetsTarget: boolean;
}

function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)];
}

const round = (x: number, digits = 2) => Math.round(x * 10 ** digits) / 10 ** digits;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, Math.max(0, ms)));

/** One simulated peer: a connection that asks and drains one directory at a time. */
class SimPeer {
  #conn: Deno.TcpConn;
  #buffer = new Uint8Array(READ_BYTES);
  constructor(conn: Deno.TcpConn) {
    this.#conn = conn;
  }

  /** Sends a message and reads the whole directory line; resolves with its byte count. */
  async ask(message: Uint8Array): Promise<number> {
    await writeAll(this.#conn, message);
    let bytes = 0;
    while (true) {
      const n = await this.#conn.read(this.#buffer);
      if (n === null) throw new Error("the tracker closed the connection");
      bytes += n;
      // Only one answer is ever outstanding, so a newline can only be its end.
      if (this.#buffer[n - 1] === 0x0a) return bytes;
    }
  }

  close(): void {
    try {
      this.#conn.close();
    } catch {
      // Already closed.
    }
  }
}

/** The files peer `i` announces. */
function filesOf(i: number, files: number, distinct: number): FileInfo[] {
  return Array.from({ length: files }, (_, j) => {
    const n = (i * files + j) % distinct;
    return {
      name: `file-${String(n).padStart(5, "0")}.dat`,
      mtime: 1700000000 + n,
      size: 1000 + n,
      sha256: (n.toString(16).padStart(8, "0")).repeat(8),
    };
  });
}

/** Options for {@linkcode runTrackerLoad}. */
export interface TrackerLoadOptions {
  /** @default {1000} */
  peers?: number;
  /** @default {10} */
  files?: number;
  /** Distinct file names over all peers. @default {peers × files} */
  distinct?: number;
  /** Seconds between one peer's KeepAlives. @default {5} */
  interval?: number;
  /** Seconds measured. @default {30} */
  duration?: number;
  /** Where progress lines go. @default {console.error} */
  progress?: (line: string) => void;
}

/** Runs the benchmark once; see the module docs. */
export async function runTrackerLoad(options: TrackerLoadOptions = {}): Promise<TrackerLoadResult> {
  const peers = options.peers ?? 1000;
  const files = options.files ?? 10;
  const distinct = options.distinct ?? peers * files;
  const intervalMs = (options.interval ?? 5) * 1000;
  const durationMs = (options.duration ?? 30) * 1000;
  const progress = options.progress ?? ((line: string) => console.error(line));
  const ticks = clockTicksPerSecond();

  await using tracker = await startBenchTracker();
  const pid = tracker.process.pid;
  const sims: SimPeer[] = [];
  let errors = 0;
  try {
    // Ramp-up: connect every peer and send its Init, a batch at a time.
    const rampStart = performance.now();
    for (let first = 0; first < peers; first += RAMP_BATCH) {
      const batch = Array.from(
        { length: Math.min(RAMP_BATCH, peers - first) },
        (_, k) => first + k,
      );
      await Promise.all(batch.map(async (i) => {
        const conn = await Deno.connect({ hostname: "127.0.0.1", port: tracker.port });
        const sim = new SimPeer(conn);
        sims[i] = sim;
        await sim.ask(encodeLine({ port: 10000 + i, files: filesOf(i, files, distinct) }));
      }));
    }
    const rampSeconds = (performance.now() - rampStart) / 1000;
    progress(`${peers} peers announced ${files} files each in ${rampSeconds.toFixed(1)} s`);

    // Steady state: every peer asks once per interval, at its own offset.
    const latencies: number[] = [];
    let responseBytes = 0;
    const start = performance.now() + 100;
    const windowStart = start + intervalMs; // one interval of warm-up
    const windowEnd = windowStart + durationMs;
    let cpuAtStart = 0;
    let clientCpuAtStart = 0;
    const startMeter = sleep(windowStart - performance.now()).then(async () => {
      [cpuAtStart, clientCpuAtStart] = await Promise.all([
        cpuSeconds(pid, ticks),
        cpuSeconds(Deno.pid, ticks),
      ]);
      progress(`measuring for ${durationMs / 1000} s`);
    });
    await Promise.all(sims.map(async (sim, i) => {
      const keepAlive = encodeLine({ port: 10000 + i });
      let next = start + (i / peers) * intervalMs;
      while (next < windowEnd) {
        await sleep(next - performance.now());
        const sent = performance.now();
        try {
          const bytes = await sim.ask(keepAlive);
          if (sent >= windowStart) {
            latencies.push(performance.now() - sent);
            responseBytes += bytes;
          }
        } catch {
          errors++;
          return;
        }
        next += intervalMs;
        // A peer never sends two messages at once: after a slow answer it skips ahead.
        while (next < performance.now()) next += intervalMs;
      }
    }));
    await startMeter;
    const seconds = (performance.now() - windowStart) / 1000;
    const trackerCpu = await cpuSeconds(pid, ticks) - cpuAtStart;
    const clientCpu = await cpuSeconds(Deno.pid, ticks) - clientCpuAtStart;
    latencies.sort((a, b) => a - b);
    const p99 = percentile(latencies, 99);
    return {
      peers,
      filesPerPeer: files,
      distinctFiles: Math.min(distinct, peers * files),
      intervalSeconds: intervalMs / 1000,
      durationSeconds: round(seconds, 1),
      rampSeconds: round(rampSeconds, 1),
      responses: latencies.length,
      responseBytes: Math.round(responseBytes / Math.max(1, latencies.length)),
      p50Ms: round(percentile(latencies, 50)),
      p99Ms: round(p99),
      maxMs: round(latencies.at(-1) ?? NaN),
      trackerCpuPercent: round((trackerCpu / seconds) * 100, 1),
      clientCpuPercent: round((clientCpu / seconds) * 100, 1),
      trackerPeakRssMiB: round(await peakRssMiB(pid), 1),
      errors,
      targetP99Ms: TARGET_P99_MS,
      meetsTarget: errors === 0 && p99 <= TARGET_P99_MS,
    };
  } finally {
    for (const sim of sims) sim?.close();
  }
}

const USAGE =
  `usage: deno run --allow-net --allow-read --allow-run bench/p2p_tracker_load.ts [options]
  --peers N       simulated peers (default 1000)
  --files N       files each peer announces (default 10)
  --distinct N    distinct file names over all peers (default: peers x files, all different)
  --interval S    seconds between one peer's keep-alives (default 5)
  --duration S    seconds measured, after the ramp-up and one interval of warm-up (default 30)
Prints one JSON object with the tracker's CPU share and directory-response latency.`;

async function main(): Promise<void> {
  const { values } = parseCli(Deno.args, USAGE, {
    peers: { type: "string", default: "1000" },
    files: { type: "string", default: "10" },
    distinct: { type: "string" },
    interval: { type: "string", default: "5" },
    duration: { type: "string", default: "30" },
  });
  const result = await runTrackerLoad({
    peers: parseCount(values.peers as string, "--peers"),
    files: parseCount(values.files as string, "--files"),
    distinct: values.distinct === undefined
      ? undefined
      : parseCount(values.distinct as string, "--distinct"),
    interval: parseSeconds(values.interval as string, "--interval"),
    duration: parseSeconds(values.duration as string, "--duration"),
  });
  console.log(JSON.stringify(result));
}

if (import.meta.main) runMain(USAGE, main);
