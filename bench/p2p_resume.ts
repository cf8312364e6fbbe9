#!/usr/bin/env -S deno run --allow-net --allow-read --allow-write --allow-run
/**
 * The P2P resume benchmark (issue 10, item 2): downloads that stop part-way
 * and continue, measured by the bytes the holders say they sent (their
 * `sent "NAME"` and `stopped sending "NAME"` log lines). A real
 * `p2p/tracker.ts` and real `p2p/peer.ts` processes, one big file of random
 * bytes (400 MiB).
 *
 * - **restart**: B's download is killed (SIGKILL) once 40% of the file is
 *   in its partial file, then B starts again. Figure: all the bytes the
 *   holder sent / the file's size (goal: 1.05x at most).
 * - **holder gone**: two holders hold the file; the one B downloads from is
 *   killed at 40%, and B finishes from the other. Figure: the bytes the
 *   second holder sent / what was still missing when the first one died
 *   (goal: 1.05x at most; a second holder that starts from 0 shows ~1.7x).
 *   The log figures are rounded to 0.1 MiB, and with a small file the bytes
 *   lost in socket buffers at the kill weigh more: `--quick` is a smoke test.
 *
 * Each downloaded copy is compared with the original, byte for byte. It
 * prints one JSON object on stdout; progress goes to stderr.
 *
 * Run: `deno run --allow-net --allow-read --allow-write --allow-run bench/p2p_resume.ts`
 * (`--mib 400`; `--quick` for 32 MiB).
 *
 * @module
 */

import { parseCli, parseCount, runMain } from "../lib/cli.ts";
import type { Script } from "../lib/scripts.ts";
import { startBenchPeer, startBenchTracker } from "./servers.ts";

/** The goal: holders send at most this share of what was missing. */
export const TARGET_SENT_RATIO = 1.05;
/** Where the download is stopped, as a share of the file. */
const STOP_AT = 0.4;
const MIB = 1024 * 1024; // bytes
/** The shared file's name and time (seconds), the same on every holder. */
const NAME = "big.bin";
const MTIME = 1_700_000_000;
/** Milliseconds a script may take to start, and a step (hash, announce, download) to finish. */
const START_TIMEOUT_MS = 30_000;
const STEP_TIMEOUT_MS = 300_000;
/** Milliseconds between two looks at the partial file. */
const POLL_MS = 20;

/** What one run measured. */
export interface ResumeResult {
  fileMiB: number;
  restart: {
    /** The byte the restarted download asked from. */
    resumedFromByte: number;
    /** Everything the holder sent, before and after the restart. */
    sentBytes: number;
    /** `sentBytes` / the file's size. */
    sentRatio: number;
  };
  holderGone: {
    /** The partial file's size once the first holder was dead. */
    arrivedBytes: number;
    resumedFromByte: number;
    /** What the second holder sent. */
    sentBytes: number;
    /** `sentBytes` / what was missing: the file's size less the larger of the two above. */
    sentRatio: number;
  };
  targets: { sentRatio: number };
}

/** Options for {@linkcode runResumeBench}. */
export interface ResumeOptions {
  /** The file's size, MiB. @default {400} */
  mib?: number;
  /** Progress lines. @default {console.error} */
  progress?: (line: string) => void;
}

/**
 * Runs both resume measurements; resolves with the figures.
 *
 * @example
 * ```ts
 * import { runResumeBench } from "./p2p_resume.ts";
 * const result = await runResumeBench({ mib: 32 });
 * console.log(`${result.restart.sentRatio}x the file sent`);
 * ```
 */
export async function runResumeBench(options: ResumeOptions = {}): Promise<ResumeResult> {
  const progress = options.progress ?? ((line: string) => console.error(line));
  const size = (options.mib ?? 400) * MIB;
  const work = await Deno.makeTempDir({ prefix: "p2p_resume_" });
  try {
    const original = `${work}/original.bin`;
    progress(`writing ${size / MIB} MiB of random bytes`);
    await writeRandomFile(original, size);
    const restart = await restartCase(work, original, size, progress);
    const holderGone = await holderGoneCase(work, original, size, progress);
    return {
      fileMiB: size / MIB,
      restart,
      holderGone,
      targets: { sentRatio: TARGET_SENT_RATIO },
    };
  } finally {
    await Deno.remove(work, { recursive: true });
  }
}

/** B is killed at 40% and restarted: what did the holder send in all? */
async function restartCase(
  work: string,
  original: string,
  size: number,
  progress: (line: string) => void,
): Promise<ResumeResult["restart"]> {
  const [from, to] = await folders(work, "restart", ["from", "to"]);
  await place(original, from);
  try {
    await using tracker = await startTracker();
    await using holder = await startPeer(from, tracker.port);
    await holder.waitFor(/sent Init with 1 file/, STEP_TIMEOUT_MS);
    const first = await startPeer(to, tracker.port);
    try {
      await partialReaches(to, size * STOP_AT);
    } finally {
      await first.stop("SIGKILL");
    }
    progress(`restart: B killed with ${mib(partialSize(to))} of ${mib(size)} MiB`);
    // The connection broke: the holder logs how much it had sent before the restart.
    await holder.waitFor(/stopped sending "big\.bin"|sent "big\.bin"/, STEP_TIMEOUT_MS);
    await using second = await startPeer(to, tracker.port);
    const done = await second.waitFor(/downloaded big\.bin/, STEP_TIMEOUT_MS);
    await holder.waitFor(/sent "big\.bin" from byte/, STEP_TIMEOUT_MS).catch(() => "");
    await assertSame(original, `${to}/${NAME}`);
    const { bytes, offsets } = sentBy(holder.lines);
    progress(`restart: ${done}`);
    return {
      resumedFromByte: offsets.at(-1) ?? 0,
      sentBytes: bytes,
      sentRatio: round(bytes / size),
    };
  } finally {
    await Deno.remove(`${work}/restart`, { recursive: true });
  }
}

/** The first holder dies at 40%: what did the second send, against what was missing? */
async function holderGoneCase(
  work: string,
  original: string,
  size: number,
  progress: (line: string) => void,
): Promise<ResumeResult["holderGone"]> {
  const [a, c, to] = await folders(work, "gone", ["a", "c", "to"]);
  await place(original, a);
  await place(original, c);
  try {
    await using tracker = await startTracker();
    // The first to announce is the one the downloader asks first: announce A before C starts.
    const first = await startPeer(a, tracker.port);
    await first.waitFor(/sent Init with 1 file/, STEP_TIMEOUT_MS);
    await using second = await startPeer(c, tracker.port);
    await second.waitFor(/sent Init with 1 file/, STEP_TIMEOUT_MS);
    await using downloader = await startPeer(to, tracker.port, 0.3);
    try {
      await partialReaches(to, size * STOP_AT);
    } finally {
      await first.stop("SIGKILL");
    }
    // What had arrived when the first holder died: the rest must come from the second.
    const arrived = partialSize(to);
    progress(`holder gone: A killed with ${mib(arrived)} of ${mib(size)} MiB at B`);
    const done = await downloader.waitFor(/downloaded big\.bin/, STEP_TIMEOUT_MS);
    await second.waitFor(/sent "big\.bin"/, STEP_TIMEOUT_MS);
    await assertSame(original, `${to}/${NAME}`);
    const { bytes, offsets } = sentBy(second.lines);
    progress(`holder gone: ${done}`);
    const resumedFrom = offsets.at(-1) ?? 0;
    // Bytes still in flight when A died may land after the look above: what was missing is
    // whichever is less, so a second holder that starts again from 0 shows well over 1x.
    const missing = size - Math.max(arrived, resumedFrom);
    return {
      arrivedBytes: arrived,
      resumedFromByte: resumedFrom,
      sentBytes: bytes,
      sentRatio: round(bytes / missing),
    };
  } finally {
    await Deno.remove(`${work}/gone`, { recursive: true });
  }
}

/** The tracker, as the other p2p benches start it. */
function startTracker(): Promise<Script> {
  return startBenchTracker(START_TIMEOUT_MS);
}

/** A peer without `--quiet`: its "sent" lines are the figures. */
function startPeer(dir: string, trackerPort: number, interval = 1): Promise<Script> {
  return startBenchPeer(trackerPort, dir, { interval, quiet: false, timeoutMs: START_TIMEOUT_MS });
}

async function folders(work: string, group: string, names: string[]): Promise<string[]> {
  const dirs = names.map((n) => `${work}/${group}/${n}`);
  for (const dir of dirs) await Deno.mkdir(dir, { recursive: true });
  return dirs;
}

/** Copies the original into a holder's folder, with the same time on every holder. */
async function place(original: string, dir: string): Promise<void> {
  await Deno.copyFile(original, `${dir}/${NAME}`);
  const when = new Date(MTIME * 1000);
  await Deno.utime(`${dir}/${NAME}`, when, when);
}

/** `size` random bytes, written a MiB at a time (never all in memory). */
async function writeRandomFile(path: string, size: number): Promise<void> {
  using file = await Deno.open(path, { write: true, create: true, truncate: true });
  const chunk = new Uint8Array(MIB);
  for (let written = 0; written < size; written += chunk.length) {
    // getRandomValues fills at most 64 KiB a call.
    for (let i = 0; i < chunk.length; i += 65_536) {
      crypto.getRandomValues(chunk.subarray(i, i + 65_536));
    }
    const part = chunk.subarray(0, Math.min(chunk.length, size - written));
    for (let done = 0; done < part.length;) done += await file.write(part.subarray(done));
  }
}

/** The size of the download's partial file in `dir` (`.big.bin.<tag>.part`), 0 when none. */
function partialSize(dir: string): number {
  let biggest = 0;
  for (const entry of Deno.readDirSync(dir)) {
    if (entry.isFile && entry.name.startsWith(`.${NAME}.`) && entry.name.endsWith(".part")) {
      biggest = Math.max(biggest, Deno.statSync(`${dir}/${entry.name}`).size);
    }
  }
  return biggest;
}

/** Resolves once the partial file in `dir` holds at least `bytes`. */
async function partialReaches(dir: string, bytes: number): Promise<void> {
  const started = performance.now();
  while (partialSize(dir) < bytes) {
    if (performance.now() - started > STEP_TIMEOUT_MS) {
      throw new Error(`the partial file never reached ${bytes} B`);
    }
    await new Promise((resolve) => setTimeout(resolve, POLL_MS));
  }
}

/** Bytes back from a log figure ("58.6 KiB", "128.0 MiB", "300 B"). */
function parseBytes(text: string): number {
  const [value, unit] = text.split(" ");
  const scale: Record<string, number> = { B: 1, KiB: 1024, MiB: MIB, GiB: 1024 * MIB };
  return Number(value) * (scale[unit] ?? NaN);
}

/**
 * What a holder says it sent of the file: each "sent" line (a whole answer,
 * perhaps from an offset) and each "stopped sending" line (what went out
 * before the connection broke). Log figures are rounded to 0.1 MiB.
 */
function sentBy(lines: string[]): { bytes: number; offsets: number[] } {
  let bytes = 0;
  const offsets: number[] = [];
  const sentLine = /^sent "big\.bin"(?: from byte (\d+))? \(([\d.]+ \w+)\)/;
  const stoppedLine = /^stopped sending "big\.bin" to \S+ after ([\d.]+ \w+) of/;
  for (const line of lines) {
    const sent = sentLine.exec(line);
    if (sent) {
      offsets.push(Number(sent[1] ?? 0));
      bytes += parseBytes(sent[2]);
    }
    const stopped = stoppedLine.exec(line);
    if (stopped) bytes += parseBytes(stopped[1]);
  }
  return { bytes: Math.round(bytes), offsets };
}

/** Throws unless the two files hold the same bytes (read a MiB at a time). */
async function assertSame(expected: string, actual: string): Promise<void> {
  using x = await Deno.open(expected);
  using y = await Deno.open(actual);
  const [bx, by] = [new Uint8Array(MIB), new Uint8Array(MIB)];
  for (let at = 0;; at += MIB) {
    const [nx, ny] = [await readFull(x, bx), await readFull(y, by)];
    if (nx !== ny || !bx.subarray(0, nx).every((v, i) => v === by[i])) {
      throw new Error(`${actual} differs from the original in the MiB at byte ${at}`);
    }
    if (nx < MIB) return;
  }
}

/** Fills `buffer` unless the file ends first; the count read. */
async function readFull(file: Deno.FsFile, buffer: Uint8Array): Promise<number> {
  let n = 0;
  while (n < buffer.length) {
    const got = await file.read(buffer.subarray(n));
    if (got === null) break;
    n += got;
  }
  return n;
}

function mib(bytes: number): string {
  return (bytes / MIB).toFixed(1);
}

function round(x: number): number {
  return Math.round(x * 1000) / 1000;
}

const USAGE =
  `usage: deno run --allow-net --allow-read --allow-write --allow-run bench/p2p_resume.ts [options]
  --mib N    the file's size, MiB (default 400)
  --quick    a 32 MiB file`;

async function main(): Promise<void> {
  const { values } = parseCli(Deno.args, USAGE, {
    mib: { type: "string", default: "400" },
    quick: { type: "boolean", default: false },
  });
  const result = await runResumeBench({
    mib: values.quick ? 32 : parseCount(values.mib as string, "--mib"),
  });
  console.log(JSON.stringify(result));
}

if (import.meta.main) runMain(USAGE, main);
