#!/usr/bin/env -S deno run --allow-net --allow-read --allow-write --allow-run
/**
 * The P2P propagation benchmark (issue 10, item 1): how long a file saved on
 * one peer takes to reach another, with the course's keep-alive of 5 s. A
 * real `p2p/tracker.ts` and two real `p2p/peer.ts` processes; one file on A
 * is rewritten `--edits` times (each once the last one reached B), and each
 * edit is timed from the write on A to the new bytes in B's folder. The
 * issue's goal is a median of 1 s at most.
 *
 * It also checks the tracker's status page is live: `GET /events` must
 * answer `text/event-stream` (server-sent events), so that the page updates
 * itself instead of reloading.
 *
 * It prints one JSON object on stdout; progress goes to stderr.
 *
 * Run: `deno run --allow-net --allow-read --allow-write --allow-run bench/p2p_propagation.ts`
 * (`--edits 10 --interval 5`; `--quick` for 3 edits).
 *
 * @module
 */

import { parseCli, parseCount, parseSeconds, runMain } from "../lib/cli.ts";
import type { Script } from "../lib/scripts.ts";
import { startBenchPeer, startBenchTracker } from "./servers.ts";

/** The goal: the median edit reaches the other peer within this many ms. */
export const TARGET_MEDIAN_MS = 1_000;
/** Milliseconds one edit may take before the run gives up (the course's rounds take about 5 s). */
const EDIT_TIMEOUT_MS = 30_000;
/** Milliseconds between two looks at B's copy. */
const POLL_MS = 10;
/** Milliseconds a peer may take to start and have its first round. */
const START_TIMEOUT_MS = 30_000;
/** What the status page row says when `/events` streams. */
export const LIVE_STATUS = "live (server-sent events)";

/** What one run measured. */
export interface PropagationResult {
  edits: number;
  /** The peers' `--interval`, seconds. */
  interval: number;
  medianMs: number;
  maxMs: number;
  /** Each edit's time, in the order they were made. */
  timesMs: number[];
  /** {@linkcode LIVE_STATUS}, or why the status page is not live. */
  statusPage: string;
  targets: { medianMs: number };
}

/** Options for {@linkcode runPropagationBench}. */
export interface PropagationOptions {
  /** Edits timed one after the other. @default {10} */
  edits?: number;
  /** The peers' `--interval`, seconds (the course's keep-alive). @default {5} */
  interval?: number;
  /** Progress lines. @default {console.error} */
  progress?: (line: string) => void;
}

/**
 * Runs the propagation measurement; resolves with the figures.
 *
 * @example
 * ```ts
 * import { runPropagationBench } from "./p2p_propagation.ts";
 * const result = await runPropagationBench({ edits: 3 });
 * console.log(`median ${result.medianMs} ms`);
 * ```
 */
export async function runPropagationBench(
  options: PropagationOptions = {},
): Promise<PropagationResult> {
  const progress = options.progress ?? ((line: string) => console.error(line));
  const edits = options.edits ?? 10;
  const interval = options.interval ?? 5;
  const work = await Deno.makeTempDir({ prefix: "p2p_propagation_" });
  const [a, b] = [`${work}/a`, `${work}/b`];
  for (const dir of [a, b]) await Deno.mkdir(dir);
  try {
    await using tracker = await startBenchTracker(START_TIMEOUT_MS);
    const statusLine = await tracker.waitFor(/status page on/, START_TIMEOUT_MS);
    const statusPort = Number(/status page on http:\/\/\S+:(\d+)\//.exec(statusLine)![1]);
    const statusPage = await checkLiveStatus(statusPort);
    progress(`status page: ${statusPage}`);

    const peer = (dir: string) =>
      startBenchPeer(tracker.port, dir, { interval, quiet: false, timeoutMs: START_TIMEOUT_MS });
    await using peerA: Script = await peer(a);
    await using peerB: Script = await peer(b);
    // Both have had their first round, in which the tracker accepted "push".
    await peerA.waitFor(/connected to tracker/, START_TIMEOUT_MS);
    await peerB.waitFor(/connected to tracker/, START_TIMEOUT_MS);

    const timesMs: number[] = [];
    for (let i = 0; i < edits; i++) {
      const text = `edit ${i} at ${Date.now()}\n`;
      const started = performance.now();
      await Deno.writeTextFile(`${a}/notes.txt`, text);
      while (await readOrNull(`${b}/notes.txt`) !== text) {
        if (performance.now() - started > EDIT_TIMEOUT_MS) {
          throw new Error(`edit ${i} did not reach peer B within ${EDIT_TIMEOUT_MS} ms`);
        }
        await new Promise((resolve) => setTimeout(resolve, POLL_MS));
      }
      timesMs.push(Math.round(performance.now() - started));
      progress(`  edit ${i}: ${timesMs.at(-1)} ms`);
    }
    return {
      edits,
      interval,
      medianMs: median(timesMs),
      maxMs: Math.max(...timesMs),
      timesMs,
      statusPage,
      targets: { medianMs: TARGET_MEDIAN_MS },
    };
  } finally {
    await Deno.remove(work, { recursive: true });
  }
}

/** The file's text, or null while it is missing (or half-renamed). */
function readOrNull(path: string): Promise<string | null> {
  return Deno.readTextFile(path).catch(() => null);
}

/** The middle value (the mean of the two middle ones for an even count). */
function median(values: number[]): number {
  const sorted = [...values].sort((x, y) => x - y);
  return (sorted[(sorted.length - 1) >> 1] + sorted[sorted.length >> 1]) / 2;
}

/**
 * Asks the status page for `/events` and says whether it streams
 * server-sent events: {@linkcode LIVE_STATUS}, or what it answered instead.
 */
async function checkLiveStatus(port: number): Promise<string> {
  const aborter = new AbortController();
  const timer = setTimeout(() => aborter.abort(), 10_000);
  try {
    const response = await fetch(`http://127.0.0.1:${port}/events`, { signal: aborter.signal });
    const type = response.headers.get("content-type") ?? "";
    // The stream never ends by itself: stop reading it once the header is known.
    await response.body?.cancel();
    return response.ok && type.startsWith("text/event-stream")
      ? LIVE_STATUS
      : `not live: /events answered ${response.status} ${type || "(no content-type)"}`;
  } catch (err) {
    return `not live: /events failed (${err instanceof Error ? err.message : String(err)})`;
  } finally {
    clearTimeout(timer);
  }
}

const USAGE =
  `usage: deno run --allow-net --allow-read --allow-write --allow-run bench/p2p_propagation.ts [options]
  --edits N      edits timed one after the other (default 10)
  --interval S   the peers' keep-alive, seconds (default 5, the course's)
  --quick        3 edits`;

async function main(): Promise<void> {
  const { values } = parseCli(Deno.args, USAGE, {
    edits: { type: "string", default: "10" },
    interval: { type: "string", default: "5" },
    quick: { type: "boolean", default: false },
  });
  const result = await runPropagationBench({
    edits: values.quick ? 3 : parseCount(values.edits as string, "--edits"),
    interval: parseSeconds(values.interval as string, "--interval"),
  });
  console.log(JSON.stringify(result));
}

if (import.meta.main) runMain(USAGE, main);
