#!/usr/bin/env -S deno run --allow-net --allow-read --allow-write --allow-run
/**
 * The big-folder benchmark (issue 9, item 6): peer A shares 100,000 small
 * files with 100-character names, peer B joins with an empty folder, both
 * real `p2p/peer.ts` processes through a real `p2p/tracker.ts`.
 *
 * - how long until B holds every file (downloads included), as files/s;
 * - A's file list: its bytes and the parts it went in (extension "parts");
 * - the tracker's peak resident memory (VmHWM);
 * - a quiet round once synced: the bytes of a directory reply, and the CPU
 *   milliseconds each peer spends per round.
 *
 * It prints one JSON object on stdout; progress goes to stderr.
 *
 * Run: `deno run --allow-net --allow-read --allow-write --allow-run bench/p2p_big.ts`
 * (`--files 100000 --name-bytes 100 --interval 5`; `--dir D` works in D).
 *
 * @module
 */

import { parseCli, parseCount, parseSeconds, runMain } from "../lib/cli.ts";
import type { Script } from "../lib/scripts.ts";
import {
  clockTicksPerSecond,
  countShared,
  cpuSeconds,
  peakRssMiB,
  startBenchPeer,
  startBenchTracker,
} from "./servers.ts";

/** Seconds B may take to hold every file before the run is given up. */
const SYNC_TIMEOUT_SECONDS = 1_800;
/** Seconds of one quiet-round sample, and how many samples at most before giving up on quiet. */
const QUIET_WINDOW_SECONDS = 10;
const QUIET_SAMPLES = 12;
/** A reply at most this long counts as quiet (the "/" entry alone is some sixty bytes). */
const QUIET_REPLY_BYTES = 200;

/** What one run measured. */
export interface BigFolderResult {
  files: number;
  nameBytes: number;
  /** From B's "listening on" line until it holds every file. */
  syncSeconds: number;
  filesPerSec: number;
  /** A's file list as the tracker received it: bytes of all its parts, and how many. */
  listBytes: number;
  listParts: number;
  trackerPeakRssMiB: number;
  peerAPeakRssMiB: number;
  peerBPeakRssMiB: number;
  /** Once synced: bytes per directory reply, and CPU ms per round of each peer. */
  quietReplyBytes: number;
  quietRoundCpuMsA: number;
  quietRoundCpuMsB: number;
}

/** Options for {@linkcode runBigFolderBench}. */
export interface BigFolderOptions {
  /** Files on A. @default {100000} */
  files?: number;
  /** Length of each name. @default {100} */
  nameBytes?: number;
  /** Seconds between the peers' rounds. @default {5} */
  interval?: number;
  /** Work folder. @default {a temp folder} */
  dir?: string;
  /** Progress lines. @default {console.error} */
  progress?: (line: string) => void;
}

/** Runs the big-folder measurement; resolves with the figures. */
export async function runBigFolderBench(options: BigFolderOptions = {}): Promise<BigFolderResult> {
  const progress = options.progress ?? ((line: string) => console.error(line));
  const count = options.files ?? 100_000;
  const nameBytes = options.nameBytes ?? 100;
  const interval = options.interval ?? 5;
  const work = options.dir ?? await Deno.makeTempDir({ prefix: "p2p_big_" });
  const [a, b] = [`${work}/big_a`, `${work}/big_b`];
  for (const dir of [a, b]) await Deno.mkdir(dir, { recursive: true });
  try {
    progress(`writing ${count} files with ${nameBytes}-character names`);
    await writeFiles(a, count, nameBytes);

    await using tracker = await startBenchTracker(60_000);
    const statusPort = Number(
      /status page on http:\/\/\S+:(\d+)\//.exec(await tracker.waitFor(/status page on/))![1],
    );
    const counters = async () => {
      const response = await fetch(`http://127.0.0.1:${statusPort}/stats`);
      return (await response.json()).counters as Record<string, number>;
    };
    const peer = (dir: string) =>
      startBenchPeer(tracker.port, dir, { interval, timeoutMs: 60_000 });

    await using peerA: Script = await peer(a);
    progress("A hashes its files and sends its list");
    await tracker.waitFor(new RegExp(`joined with ${count} files`), 600_000);
    const joined = await counters();
    const listBytes = joined.messageBytes;
    const listParts = Math.max(1, joined.listParts);

    await using peerB: Script = await peer(b);
    const started = performance.now();
    let lastSaid = started;
    while (countShared(b) < count) {
      if (performance.now() - started > SYNC_TIMEOUT_SECONDS * 1000) {
        throw new Error(
          `B holds ${countShared(b)} of ${count} files after ${SYNC_TIMEOUT_SECONDS} s`,
        );
      }
      if (performance.now() - lastSaid > 10_000) {
        progress(`  B holds ${countShared(b)} of ${count}`);
        lastSaid = performance.now();
      }
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    const syncSeconds = (performance.now() - started) / 1000;
    progress(`B holds all ${count} files after ${syncSeconds.toFixed(1)} s`);

    // Quiet rounds: once B's last list change has gone round, every reply is the "/" entry.
    let quietReplyBytes = Infinity;
    let cpuA = 0;
    let cpuB = 0;
    let before = await counters();
    const ticks = clockTicksPerSecond();
    const cpuMs = async (pid: number) => await cpuSeconds(pid, ticks) * 1000;
    const cpus = () => Promise.all([cpuMs(peerA.process.pid), cpuMs(peerB.process.pid)]);
    let cpuBefore = await cpus();
    for (let i = 0; i < QUIET_SAMPLES; i++) {
      await new Promise((resolve) => setTimeout(resolve, QUIET_WINDOW_SECONDS * 1000));
      const after = await counters();
      const cpuAfter = await cpus();
      const replies = after.responses - before.responses;
      quietReplyBytes = replies > 0 ? (after.responseBytes - before.responseBytes) / replies : 0;
      // One reply per round per peer once quiet (no pages to follow).
      const rounds = Math.max(1, replies / 2);
      cpuA = (cpuAfter[0] - cpuBefore[0]) / rounds;
      cpuB = (cpuAfter[1] - cpuBefore[1]) / rounds;
      progress(`  quiet? ${replies} replies, ${quietReplyBytes.toFixed(0)} B each`);
      if (replies > 0 && quietReplyBytes <= QUIET_REPLY_BYTES) break;
      before = after;
      cpuBefore = cpuAfter;
    }
    return {
      files: count,
      nameBytes,
      syncSeconds: round(syncSeconds),
      filesPerSec: round(count / syncSeconds),
      listBytes,
      listParts,
      trackerPeakRssMiB: round(await peakRssMiB(tracker.process.pid)),
      peerAPeakRssMiB: round(await peakRssMiB(peerA.process.pid)),
      peerBPeakRssMiB: round(await peakRssMiB(peerB.process.pid)),
      quietReplyBytes: round(quietReplyBytes),
      quietRoundCpuMsA: round(cpuA),
      quietRoundCpuMsB: round(cpuB),
    };
  } finally {
    await Deno.remove(options.dir === undefined ? work : a, { recursive: true });
    if (options.dir !== undefined) await Deno.remove(b, { recursive: true });
  }
}

function round(x: number): number {
  return Math.round(x * 100) / 100;
}

/** `count` files of a few bytes each, named `file_000001_xxx...x.txt` to `nameBytes` characters. */
async function writeFiles(dir: string, count: number, nameBytes: number): Promise<void> {
  const encoder = new TextEncoder();
  const when = new Date(1_700_000_000_000);
  for (let i = 0; i < count; i += 500) {
    await Promise.all(
      Array.from({ length: Math.min(500, count - i) }, async (_, k) => {
        const n = i + k;
        const name = `file_${String(n).padStart(7, "0")}_`.padEnd(nameBytes - 4, "x") + ".txt";
        await Deno.writeFile(`${dir}/${name}`, encoder.encode(`file ${n}\n`));
        await Deno.utime(`${dir}/${name}`, when, when);
      }),
    );
  }
}

const USAGE =
  `usage: deno run --allow-net --allow-read --allow-write --allow-run bench/p2p_big.ts [options]
  --files N        files on peer A (default 100000)
  --name-bytes N   length of each file name (default 100)
  --interval S     seconds between the peers' rounds (default 5)
  --dir D          work in folder D (default: a temp folder)`;

async function main(): Promise<void> {
  const { values } = parseCli(Deno.args, USAGE, {
    files: { type: "string", default: "100000" },
    "name-bytes": { type: "string", default: "100" },
    interval: { type: "string", default: "5" },
    dir: { type: "string" },
  });
  const result = await runBigFolderBench({
    files: parseCount(values.files as string, "--files"),
    nameBytes: Math.max(20, parseCount(values["name-bytes"] as string, "--name-bytes")),
    interval: parseSeconds(values.interval as string, "--interval"),
    dir: values.dir as string | undefined,
  });
  console.log(JSON.stringify(result));
}

if (import.meta.main) runMain(USAGE, main);
