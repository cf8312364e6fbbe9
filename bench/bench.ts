#!/usr/bin/env -S deno run --allow-net --allow-read --allow-write --allow-run --allow-env --allow-sys
/**
 * The benchmark: our servers against well-known ones, side by side in one
 * run on this machine. Every server runs in its own process, started exactly
 * as a student starts it, and so does every load generator.
 *
 * - echo: echo_server.ts (async, worker, process) against a Node `net` echo,
 *   Python's ForkingTCPServer and socat: connections/s, bulk MiB/s, and 500
 *   connections at once (p99 latency, peak memory with children).
 * - proxy: proxy_server.ts in each mode against socat and a Node relay, with
 *   `wrk` against a local origin (1 KiB and 10 MiB files, keep-alive and not).
 * - p2p: the figures of `bench/p2p_transfer.ts` and `bench/p2p_tracker_load.ts`.
 * - hostile: good clients beside a reset storm, 1-byte segments from a client
 *   that never reads, and silent connections against the tracker.
 * - udp: udp_echo_server.ts against a Node `dgram` echo and Python's
 *   UDPServer: round trips/s (p50/p99) and datagrams/s with a window in flight.
 *
 * Run: `deno task bench` (all parts), `deno task bench --part echo`, or
 * `--quick` for small sizes. It prints tables with ratios, writes
 * bench/results.json and draws bench/chart.svg.
 *
 * @module
 */

import { parseChoice, parseCli, runMain } from "../lib/cli.ts";
import { drawChart } from "./chart.ts";
import {
  type EchoPart,
  echoTable,
  FULL_ECHO,
  QUICK_ECHO,
  runEchoPart,
  type Tools,
} from "./echo_part.ts";
import {
  FULL_HOSTILE,
  type HostilePart,
  hostileTable,
  QUICK_HOSTILE,
  runHostilePart,
} from "./hostile_part.ts";
import { type P2pPart, p2pTable, runP2pPart } from "./p2p_part.ts";
import { FULL_PROXY, type ProxyPart, proxyTable, QUICK_PROXY, runProxyPart } from "./proxy_part.ts";
import { type Target, targetTable } from "./report.ts";
import { ROOT, runTool } from "./servers.ts";
import { FULL_UDP, QUICK_UDP, runUdpPart, type UdpPart, udpTable } from "./udp_part.ts";

/** The parts, in the order they run. */
const PARTS = ["all", "echo", "proxy", "p2p", "hostile", "udp"] as const;

/** What bench/results.json holds. */
export interface Results {
  /** When the newest part was measured. */
  date: string;
  /** Whether the reduced sizes of `--quick` were used (for the newest part). */
  quick: boolean;
  machine: Record<string, string | number>;
  versions: Record<string, string>;
  echo?: EchoPart;
  proxy?: ProxyPart;
  p2p?: P2pPart;
  hostile?: HostilePart;
  udp?: UdpPart;
}

/** Finds a program on the PATH; null when it is missing. */
async function which(name: string): Promise<string | null> {
  const run = await runTool(["sh", "-c", `command -v ${name}`]);
  return run.code === 0 && run.stdout.trim() ? run.stdout.trim() : null;
}

/** The first line a command prints (stdout or stderr), or "missing". */
async function firstLine(command: string[], pattern?: RegExp): Promise<string> {
  try {
    const run = await runTool(command);
    const text = `${run.stdout}\n${run.stderr}`;
    const line = pattern
      ? text.split("\n").find((l) => pattern.test(l))
      : text.split("\n").find((l) => l.trim());
    return line?.trim() ?? "unknown";
  } catch {
    return "missing";
  }
}

/** The programs the parts use, resolved once. */
async function findTools(): Promise<Tools> {
  const python = await which("python3");
  // pyenv's python3 is a shell shim: start the interpreter itself, so its pid is the server's.
  const pythonExe = python
    ? (await runTool([python, "-c", "import sys; print(sys.executable)"])).stdout.trim() || python
    : null;
  return {
    node: await which("node"),
    python: pythonExe,
    socat: await which("socat"),
    wrk: await which("wrk"),
  };
}

async function describeVersions(tools: Tools): Promise<Record<string, string>> {
  return {
    deno: Deno.version.deno,
    v8: Deno.version.v8,
    typescript: Deno.version.typescript,
    node: tools.node ? await firstLine([tools.node, "--version"]) : "missing",
    python: tools.python ? await firstLine([tools.python, "--version"]) : "missing",
    socat: tools.socat ? await firstLine([tools.socat, "-V"], /socat version/) : "missing",
    wrk: tools.wrk ? await firstLine([tools.wrk, "--version"], /^wrk/) : "missing",
  };
}

async function describeMachine(): Promise<Record<string, string | number>> {
  let cpu = "unknown";
  try {
    // Deno reads /proc only with --allow-all; cat needs no more than --allow-run.
    const info = await runTool(["cat", "/proc/cpuinfo"]);
    cpu = /model name\s*:\s*(.+)/.exec(info.stdout)?.[1] ?? cpu;
  } catch {
    // Not Linux.
  }
  return {
    os: `${Deno.build.os} ${Deno.osRelease()}`,
    arch: Deno.build.arch,
    cpu,
    cores: navigator.hardwareConcurrency,
    memoryGiB: Math.round(Deno.systemMemoryInfo().total / 1024 ** 3),
    loadAverage: Deno.loadavg().map((n) => n.toFixed(2)).join(" "),
  };
}

/** The results file as it was, so a run of one part keeps the others. */
function readPrevious(path: string): Partial<Results> {
  try {
    return JSON.parse(Deno.readTextFileSync(path));
  } catch {
    return {};
  }
}

const USAGE = `usage: deno task bench [options]
       deno run --allow-net --allow-read --allow-write --allow-run --allow-env --allow-sys bench/bench.ts [options]
  --part NAME     all | echo | proxy | p2p | hostile | udp (default all)
  --quick         small sizes and short runs (a smoke test, not a measurement)
  --json PATH     where to write the results (default bench/results.json)
  --chart PATH    where to draw the chart (default bench/chart.svg)
A run of one part keeps the other parts already in the JSON file.`;

async function main(): Promise<void> {
  const { values } = parseCli(Deno.args, USAGE, {
    part: { type: "string", default: "all" },
    quick: { type: "boolean", default: false },
    json: { type: "string", default: `${ROOT}bench/results.json` },
    chart: { type: "string", default: `${ROOT}bench/chart.svg` },
  });
  const part = parseChoice(values.part as string, "--part", PARTS);
  const quick = values.quick as boolean;
  const jsonPath = values.json as string;
  const chartPath = values.chart as string;
  const say = (line: string) => console.log(line);

  const tools = await findTools();
  const results: Results = {
    ...readPrevious(jsonPath),
    date: new Date().toISOString(),
    quick,
    machine: await describeMachine(),
    versions: await describeVersions(tools),
  };
  say(
    `benchmark on ${results.machine.cores} cores (${results.machine.cpu}), ` +
      `load average ${results.machine.loadAverage}${quick ? ", quick sizes" : ""}`,
  );

  const sections: string[] = [];
  const targets: Target[] = [];
  if (part === "all" || part === "echo") {
    results.echo = await runEchoPart(quick ? QUICK_ECHO : FULL_ECHO, tools, say);
    sections.push(echoTable(results.echo));
    targets.push(...results.echo.targets);
  }
  if (part === "all" || part === "proxy") {
    results.proxy = await runProxyPart(quick ? QUICK_PROXY : FULL_PROXY, tools, say);
    sections.push(proxyTable(results.proxy));
    targets.push(...results.proxy.targets);
  }
  if (part === "all" || part === "p2p") {
    results.p2p = await runP2pPart(quick, say);
    sections.push(p2pTable(results.p2p));
    targets.push(...results.p2p.targets);
  }
  if (part === "all" || part === "hostile") {
    results.hostile = await runHostilePart(quick ? QUICK_HOSTILE : FULL_HOSTILE, tools, say);
    sections.push(hostileTable(results.hostile));
    targets.push(...results.hostile.targets);
  }
  if (part === "all" || part === "udp") {
    results.udp = await runUdpPart(quick ? QUICK_UDP : FULL_UDP, tools, say);
    sections.push(udpTable(results.udp));
    targets.push(...results.udp.targets);
  }
  say("");
  for (const section of sections) say(`${section}\n`);
  if (targets.length) say(`Targets\n${targetTable(targets)}\n`);

  await Deno.writeTextFile(jsonPath, JSON.stringify(results, null, 2) + "\n");
  await Deno.writeTextFile(chartPath, drawChart(results));
  say(`wrote ${jsonPath} and ${chartPath}`);
}

if (import.meta.main) runMain(USAGE, main);
