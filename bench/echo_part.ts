/**
 * The benchmark's echo part: our echo_server.ts in its three modes next to a
 * Node `net` echo, Python's `socketserver.ForkingTCPServer` and socat, all
 * started here, each in its own process, and driven by `echo_load.ts` (in a
 * process of its own too). Rounds are interleaved across the servers, so a
 * burst of load from elsewhere on the machine hurts them all alike, and each
 * figure is the best of its rounds.
 *
 * @module
 */

import { errorMessage } from "../lib/cli.ts";
import { MODES } from "../lib/concurrency.ts";
import type { EchoLoadResult, EchoTest } from "./echo_load.ts";
import {
  formatNumber,
  formatRatio,
  ratio,
  round,
  type Target,
  target,
  textTable,
} from "./report.ts";
import {
  lastJson,
  ourServerCommand,
  RssSampler,
  type RunningServer,
  runTool,
  type ServerSpec,
  shownCommand,
  socatFork,
  startOrNote,
} from "./servers.ts";

/** How much load each test puts on a server. */
export interface EchoSettings {
  /** Sequential connections in the connections/s test. */
  conns: number;
  /** Bytes through one connection in the bulk test. */
  bulkBytes: number;
  /** Connections at once in the burst test. */
  burstConns: number;
  /** Bytes each burst connection sends. */
  burstBytes: number;
  /** How long the burst's connections stay open after the last echo, in ms. */
  holdMs: number;
  /** Times each test runs on each server; the best run counts. */
  rounds: number;
  /** Milliseconds between memory samples during the burst. */
  sampleMs: number;
}

/** The sizes from the issue. */
export const FULL_ECHO: EchoSettings = {
  conns: 2000,
  bulkBytes: 512 * 1024 * 1024,
  burstConns: 500,
  burstBytes: 4096,
  holdMs: 300,
  rounds: 5,
  sampleMs: 20,
};

/** Small sizes for smoke tests (a few seconds in all). */
export const QUICK_ECHO: EchoSettings = {
  conns: 200,
  bulkBytes: 16 * 1024 * 1024,
  burstConns: 50,
  burstBytes: 4096,
  holdMs: 100,
  rounds: 1,
  sampleMs: 20,
};

/** Paths of the programs the reference servers need; null when missing. */
export interface Tools {
  node: string | null;
  python: string | null;
  socat: string | null;
  wrk: string | null;
}

/** One server's figures. */
export interface EchoRow {
  /** Short key: node, python, socat, async, worker, process. */
  id: string;
  /** Name in the tables. */
  label: string;
  /** Our echo_server.ts (true) or a reference server. */
  ours: boolean;
  /** The command line that started it. */
  command: string;
  /** Best sequential connections per second. */
  connsPerSec: number | null;
  /** Best bulk MiB/s (bytes echoed, each counted once). */
  mibPerSec: number | null;
  /** The burst run with the lowest p99, and the peak memory over all burst runs. */
  burst: {
    p50Ms: number | null;
    p99Ms: number | null;
    maxMs: number | null;
    seconds: number | null;
    /** Sum of VmRSS over the server's process tree (a forked child's shared pages count again). */
    peakRssMiB: number | null;
    /** Most processes in the server's tree at one sample. */
    peakProcesses: number | null;
  };
  /** Every run's figure, in round order. */
  runs: { connsPerSec: number[]; mibPerSec: number[]; burstP99Ms: number[] };
  /** What went wrong, if anything (a server that would not start, a short echo). */
  errors: string[];
}

/** The echo part of results.json. */
export interface EchoPart {
  date: string;
  settings: EchoSettings;
  /** Reference servers left out because their program is missing. */
  missing: string[];
  rows: EchoRow[];
  targets: Target[];
}

/** The servers under test: references first, then ours. */
function specs(tools: Tools, missing: string[]): ServerSpec[] {
  const list: ServerSpec[] = [];
  if (tools.node) {
    list.push({
      id: "node",
      label: "Node net",
      ours: false,
      command: [tools.node, "bench/node_echo.mjs", "0"],
    });
  } else missing.push("node");
  if (tools.python) {
    list.push({
      id: "python",
      label: "Python ForkingTCPServer",
      ours: false,
      command: [tools.python, "bench/python_fork_echo.py", "0"],
    });
  } else missing.push("python3");
  if (tools.socat) {
    // PIPE with no file name is socat's own echo (socat 1.8 calls it PIPES).
    list.push({ id: "socat", label: "socat fork", ours: false, ...socatFork(tools.socat, "PIPE") });
  } else missing.push("socat");
  // Our server, exactly as a student runs it, with the narrowest permissions of each mode.
  for (const mode of MODES) {
    list.push({
      id: mode,
      label: `ours: ${mode}`,
      ours: true,
      command: ourServerCommand("echo_server.ts", mode),
    });
  }
  return list;
}

/** Runs one load-generator test against `port` and returns what it printed. */
async function load(
  port: number,
  test: EchoTest,
  settings: EchoSettings,
): Promise<EchoLoadResult> {
  const args = test === "conns"
    ? ["--count", String(settings.conns)]
    : test === "bulk"
    ? ["--bytes", String(settings.bulkBytes)]
    : [
      "--count",
      String(settings.burstConns),
      "--bytes",
      String(settings.burstBytes),
      "--hold-ms",
      String(settings.holdMs),
    ];
  const run = await runTool([
    Deno.execPath(),
    "run",
    "--allow-net",
    "bench/echo_load.ts",
    "--port",
    String(port),
    "--test",
    test,
    ...args,
  ]);
  return lastJson<EchoLoadResult>(run);
}

const MIB = 1024 * 1024;

/** Runs the echo part and prints its tables. */
export async function runEchoPart(
  settings: EchoSettings,
  tools: Tools,
  say: (line: string) => void,
): Promise<EchoPart> {
  const missing: string[] = [];
  const list = specs(tools, missing);
  const rows: EchoRow[] = list.map((s) => ({
    id: s.id,
    label: s.label,
    ours: s.ours,
    command: shownCommand(s.command),
    connsPerSec: null,
    mibPerSec: null,
    burst: {
      p50Ms: null,
      p99Ms: null,
      maxMs: null,
      seconds: null,
      peakRssMiB: null,
      peakProcesses: null,
    },
    runs: { connsPerSec: [], mibPerSec: [], burstP99Ms: [] },
    errors: [],
  }));
  if (missing.length) say(`echo: not installed, left out: ${missing.join(", ")}`);

  // Start every server before measuring, one at a time so start-up costs do not overlap.
  const servers: (RunningServer | null)[] = [];
  for (const [i, spec] of list.entries()) {
    servers.push(await startOrNote("echo", spec, rows[i].errors, say));
  }
  try {
    for (let round = 1; round <= settings.rounds; round++) {
      for (const test of ["conns", "bulk", "burst"] as const) {
        for (const [i, server] of servers.entries()) {
          if (!server) continue;
          const row = rows[i];
          try {
            await measure(row, server, test, settings);
          } catch (err) {
            row.errors.push(`${test}: ${errorMessage(err)}`);
          }
        }
        say(`echo round ${round}/${settings.rounds}: ${test} done`);
      }
    }
  } finally {
    await Promise.all(servers.map((s) => s?.stop()));
  }
  for (const row of rows) {
    row.errors = [...new Set(row.errors)];
  }
  const part: EchoPart = {
    date: new Date().toISOString(),
    settings,
    missing,
    rows,
    targets: echoTargets(rows),
  };
  return part;
}

/** Runs one test on one server and folds the result into its row. */
async function measure(
  row: EchoRow,
  server: RunningServer,
  test: EchoTest,
  settings: EchoSettings,
): Promise<void> {
  if (test === "burst") {
    // The server's memory, children included, is sampled all through the burst.
    const sampler = await RssSampler.start(server.pid, settings.sampleMs);
    let result: EchoLoadResult;
    try {
      result = await load(server.port, test, settings);
    } finally {
      const peak = await sampler.stop();
      row.burst.peakRssMiB =
        Math.max(row.burst.peakRssMiB ?? 0, round(peak.peakBytes / MIB) ?? 0) ||
        null;
      row.burst.peakProcesses = Math.max(row.burst.peakProcesses ?? 0, peak.peakProcesses) || null;
    }
    noteErrors(row, result);
    if (result.errors === 0 && result.p99Ms !== undefined) {
      row.runs.burstP99Ms.push(round(result.p99Ms)!);
      if (row.burst.p99Ms === null || result.p99Ms < row.burst.p99Ms) {
        row.burst.p50Ms = round(result.p50Ms);
        row.burst.p99Ms = round(result.p99Ms);
        row.burst.maxMs = round(result.maxMs);
        row.burst.seconds = round(result.seconds);
      }
    }
    return;
  }
  const result = await load(server.port, test, settings);
  noteErrors(row, result);
  if (result.errors > 0) return;
  if (test === "conns") {
    row.runs.connsPerSec.push(round(result.connsPerSec)!);
    row.connsPerSec = Math.max(row.connsPerSec ?? 0, round(result.connsPerSec)!);
  } else {
    row.runs.mibPerSec.push(round(result.mibPerSec)!);
    row.mibPerSec = Math.max(row.mibPerSec ?? 0, round(result.mibPerSec)!);
  }
}

function noteErrors(row: EchoRow, result: EchoLoadResult): void {
  if (result.errors > 0) {
    row.errors.push(
      `${result.test}: ${result.errors} connection(s) failed, first: ${result.firstError}`,
    );
  }
}

/** The goals of issue 2, section 6, as ratios in this run. */
function echoTargets(rows: EchoRow[]): Target[] {
  const get = (id: string) => rows.find((r) => r.id === id);
  const [node, python, ours, worker, proc] = ["node", "python", "async", "worker", "process"].map(
    get,
  );
  return [
    target("echo", "async conn/s vs Node net", ratio(ours?.connsPerSec, node?.connsPerSec), 1.2),
    target("echo", "async MiB/s vs Node net", ratio(ours?.mibPerSec, node?.mibPerSec), 1.2),
    target("echo", "worker conn/s", worker?.connsPerSec ?? null, 1000, "conn/s"),
    target("echo", "worker MiB/s vs async", ratio(worker?.mibPerSec, ours?.mibPerSec), 0.5),
    target(
      "echo",
      "process conn/s vs Python fork",
      ratio(proc?.connsPerSec, python?.connsPerSec),
      1.0,
    ),
  ];
}

/** The echo part as a text table, every ratio against Node net. */
export function echoTable(part: EchoPart): string {
  const node = part.rows.find((r) => r.id === "node");
  const body = part.rows.map((r) => [
    r.label,
    formatNumber(r.connsPerSec),
    formatRatio(ratio(r.connsPerSec, node?.connsPerSec)),
    formatNumber(r.mibPerSec),
    formatRatio(ratio(r.mibPerSec, node?.mibPerSec)),
    formatNumber(r.burst.p50Ms, 1),
    formatNumber(r.burst.p99Ms, 1),
    formatNumber(r.burst.peakRssMiB, 1),
    formatNumber(r.burst.peakProcesses),
  ]);
  const s = part.settings;
  const title = `Echo: ${formatNumber(s.conns)} sequential connections; ` +
    `${formatNumber(s.bulkBytes / MIB)} MiB on one connection; ` +
    `${formatNumber(s.burstConns)} connections at once with ${formatNumber(s.burstBytes)} B each ` +
    `(best of ${s.rounds} round${s.rounds === 1 ? "" : "s"}; ratios against Node net)`;
  const table = textTable(
    ["server", "conn/s", "xNode", "MiB/s", "xNode", "p50 ms", "p99 ms", "peak RSS MiB", "procs"],
    body,
  );
  const note = "peak RSS: the sum of VmRSS over the server and its children during the burst; " +
    "pages a forked child shares with its parent count once per child (procs: most processes seen)";
  const problems = part.rows.flatMap((r) => r.errors.map((e) => `  ${r.label}: ${e}`));
  return [title, table, note, ...(problems.length ? ["problems:", ...problems] : [])].join("\n");
}
