#!/usr/bin/env -S deno run --allow-all
/**
 * Samples the resident memory of a process together with all its children
 * (the sum of their VmRSS in Linux `/proc`) until its stdin ends, then prints
 * the peak, and the most processes seen in the tree, as JSON. The benchmark runs it beside each server under test.
 *
 * It needs `--allow-all`: Deno lets a script read `/proc` only with every
 * permission, so this small program, and nothing else in the benchmark, gets
 * them.
 *
 * Run: `deno run --allow-all bench/rss_sampler.ts --pid 1234 --interval-ms 20`
 * (prints "sampling" once the first sample is taken; close stdin to stop), or
 * `--pid 1234 --descendants` to print the ids of its children and theirs.
 *
 * @module
 */

import { parseCli, parseCount, runMain, UsageError } from "../lib/cli.ts";

/** Every live process id with its parent's, from `/proc/PID/stat`. */
function parentsByPid(): Map<number, number> {
  const parents = new Map<number, number>();
  for (const entry of Deno.readDirSync("/proc")) {
    if (!/^\d+$/.test(entry.name)) continue;
    try {
      const stat = Deno.readTextFileSync(`/proc/${entry.name}/stat`);
      // "pid (comm) state ppid ...": comm may hold spaces and parentheses.
      const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      parents.set(Number(entry.name), Number(fields[1]));
    } catch {
      // It exited while we looked.
    }
  }
  return parents;
}

/** The process ids of every descendant of `root` (not `root` itself). */
export function treePids(root: number): number[] {
  const children = new Map<number, number[]>();
  for (const [pid, parent] of parentsByPid()) {
    const list = children.get(parent);
    if (list) list.push(pid);
    else children.set(parent, [pid]);
  }
  const found: number[] = [];
  const queue = [root];
  while (queue.length) {
    for (const pid of children.get(queue.pop()!) ?? []) {
      found.push(pid);
      queue.push(pid);
    }
  }
  return found;
}

/** One look at a process tree. */
export interface TreeSample {
  /** The sum of VmRSS over the tree, in bytes: pages shared by forked children count once per child. */
  rssBytes: number;
  /** Processes in the tree, `root` included. */
  processes: number;
}

/** Resident memory of `root` and all its descendants. */
export function sampleTree(root: number): TreeSample {
  let rssBytes = 0;
  let processes = 0;
  for (const pid of [root, ...treePids(root)]) {
    try {
      const status = Deno.readTextFileSync(`/proc/${pid}/status`);
      rssBytes += Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? 0) * 1024;
      processes++;
    } catch {
      // It exited while we looked.
    }
  }
  return { rssBytes, processes };
}

/** Reads stdin until it ends. */
async function stdinEnded(): Promise<void> {
  const buffer = new Uint8Array(1024);
  while (await Deno.stdin.read(buffer) !== null) {
    // Nothing is sent; the end of stdin is the signal.
  }
}

const USAGE = `usage: deno run --allow-all bench/rss_sampler.ts --pid N [options]
  --pid N            the process to watch, with its children
  --interval-ms N    milliseconds between samples (default 20)
  --descendants      print the ids of its descendants and exit`;

async function main(): Promise<void> {
  const { values } = parseCli(Deno.args, USAGE, {
    pid: { type: "string" },
    "interval-ms": { type: "string", default: "20" },
    descendants: { type: "boolean", default: false },
  });
  if (values.pid === undefined) throw new UsageError("--pid is required");
  const pid = parseCount(values.pid as string, "--pid");
  if (values.descendants) {
    console.log(JSON.stringify(treePids(pid)));
    return;
  }
  const interval = parseCount(values["interval-ms"] as string, "--interval-ms");
  let peakBytes = 0;
  let peakProcesses = 0;
  let samples = 0;
  const sample = () => {
    const now = sampleTree(pid);
    peakBytes = Math.max(peakBytes, now.rssBytes);
    peakProcesses = Math.max(peakProcesses, now.processes);
    samples++;
  };
  sample();
  const timer = setInterval(sample, interval);
  console.log("sampling");
  await stdinEnded();
  clearInterval(timer);
  sample();
  console.log(JSON.stringify({ peakBytes, peakProcesses, samples }));
}

if (import.meta.main) runMain(USAGE, main);
