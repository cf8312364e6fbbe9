/**
 * The benchmark's UDP part: our udp_echo_server.ts next to a Node `dgram`
 * echo and Python's `socketserver.UDPServer`, each started here in its own
 * process, and driven by `udp_load.ts` (in a process of its own too).
 *
 * 1. Round trips: one datagram at a time, each waiting for its echo;
 *    round trips per second and p50/p99 round-trip time.
 * 2. Datagrams: a window of datagrams in flight at once; echoed datagrams
 *    per second.
 *
 * A datagram with no echo within the timeout counts as lost and the load
 * goes on. Rounds are interleaved across the servers, so a burst of load
 * from elsewhere on the machine hurts them all alike, and each figure is
 * the best of its rounds.
 *
 * Run: `deno task bench --part udp` (about 1.5 minutes), `--quick` for a
 * ten-second smoke run.
 *
 * @module
 */

import { errorMessage } from "../lib/cli.ts";
import type { Tools } from "./echo_part.ts";
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
  type RunningServer,
  runTool,
  type ServerSpec,
  shownCommand,
  startOrNote,
} from "./servers.ts";
import type { UdpLoadResult, UdpTest } from "./udp_load.ts";

/** How much load each test puts on a server. */
export interface UdpSettings {
  /** Seconds each test runs on each server in each round. */
  seconds: number;
  /** Bytes per datagram in the round-trip test. */
  rttSize: number;
  /** Bytes per datagram in the window test. */
  windowSize: number;
  /** Datagrams in flight at once in the window test. */
  window: number;
  /** Milliseconds without an echo before a datagram counts as lost. */
  timeoutMs: number;
  /** Times each test runs on each server; the best run counts. */
  rounds: number;
}

/** The sizes from the issue. */
export const FULL_UDP: UdpSettings = {
  seconds: 5,
  rttSize: 32,
  windowSize: 64,
  window: 64,
  timeoutMs: 200,
  rounds: 3,
};

/** Small sizes for smoke tests (about ten seconds in all). */
export const QUICK_UDP: UdpSettings = { ...FULL_UDP, seconds: 1, rounds: 1 };

/** One server's figures. */
export interface UdpRow {
  /** Short key: node, python, ours. */
  id: string;
  /** Name in the tables. */
  label: string;
  /** Our udp_echo_server.ts (true) or a reference server. */
  ours: boolean;
  /** The command line that started it. */
  command: string;
  /** Best round trips per second, with the p50/p99/max of that run. */
  rtt: { perSec: number | null; p50Ms: number | null; p99Ms: number | null; maxMs: number | null };
  /** Best echoed datagrams per second with the window full. */
  datagramsPerSec: number | null;
  /** Datagrams lost over all runs, per test. */
  lost: { rtt: number; window: number };
  /** Every run's figure, in round order. */
  runs: { roundTripsPerSec: number[]; datagramsPerSec: number[] };
  /** What went wrong, if anything (a server that would not start, a short echo). */
  errors: string[];
}

/** The UDP part of results.json. */
export interface UdpPart {
  date: string;
  settings: UdpSettings;
  /** Reference servers left out because their program is missing. */
  missing: string[];
  rows: UdpRow[];
  targets: Target[];
}

/** The servers under test: references first, then ours. */
function specs(tools: Tools, missing: string[]): ServerSpec[] {
  const list: ServerSpec[] = [];
  if (tools.node) {
    list.push({
      id: "node",
      label: "Node dgram",
      ours: false,
      command: [tools.node, "bench/node_udp_echo.mjs", "0"],
    });
  } else missing.push("node");
  if (tools.python) {
    list.push({
      id: "python",
      label: "Python UDPServer",
      ours: false,
      command: [tools.python, "bench/python_udp_echo.py", "0"],
    });
  } else missing.push("python3");
  // Our server exactly as a student runs it; its "listening on HOST:PORT (udp)" line gives the port.
  list.push({
    id: "ours",
    label: "ours: udp_echo_server",
    ours: true,
    command: [
      Deno.execPath(),
      "run",
      "--allow-net",
      "udp_echo_server.ts",
      "--port",
      "0",
      "--quiet",
    ],
  });
  return list;
}

/** Runs one load-generator test against `port` and returns what it printed. */
async function load(port: number, test: UdpTest, settings: UdpSettings): Promise<UdpLoadResult> {
  const run = await runTool([
    Deno.execPath(),
    "run",
    "--allow-net",
    "bench/udp_load.ts",
    "--port",
    String(port),
    "--test",
    test,
    "--seconds",
    String(settings.seconds),
    "--size",
    String(test === "rtt" ? settings.rttSize : settings.windowSize),
    "--window",
    String(settings.window),
    "--timeout-ms",
    String(settings.timeoutMs),
  ]);
  return lastJson<UdpLoadResult>(run);
}

/** Runs the UDP part and returns its figures. */
export async function runUdpPart(
  settings: UdpSettings,
  tools: Tools,
  say: (line: string) => void,
): Promise<UdpPart> {
  const missing: string[] = [];
  const list = specs(tools, missing);
  const rows: UdpRow[] = list.map((s) => ({
    id: s.id,
    label: s.label,
    ours: s.ours,
    command: shownCommand(s.command),
    rtt: { perSec: null, p50Ms: null, p99Ms: null, maxMs: null },
    datagramsPerSec: null,
    lost: { rtt: 0, window: 0 },
    runs: { roundTripsPerSec: [], datagramsPerSec: [] },
    errors: [],
  }));
  if (missing.length) say(`udp: not installed, left out: ${missing.join(", ")}`);

  // Start every server before measuring, one at a time so start-up costs do not overlap.
  const servers: (RunningServer | null)[] = [];
  for (const [i, spec] of list.entries()) {
    servers.push(await startOrNote("udp", spec, rows[i].errors, say));
  }
  try {
    for (let round = 1; round <= settings.rounds; round++) {
      for (const test of ["rtt", "window"] as const) {
        for (const [i, server] of servers.entries()) {
          if (!server) continue;
          try {
            fold(rows[i], await load(server.port, test, settings));
          } catch (err) {
            rows[i].errors.push(`${test}: ${errorMessage(err)}`);
          }
        }
        say(`udp round ${round}/${settings.rounds}: ${test} done`);
      }
    }
  } finally {
    await Promise.all(servers.map((s) => s?.stop()));
  }
  for (const row of rows) row.errors = [...new Set(row.errors)];
  return { date: new Date().toISOString(), settings, missing, rows, targets: udpTargets(rows) };
}

/** Folds one run into its row: the best run counts, losses add up. */
function fold(row: UdpRow, result: UdpLoadResult): void {
  if (result.bad > 0) {
    row.errors.push(`${result.test}: ${result.bad} echo(es) of the wrong length`);
  }
  if (result.echoed === 0) {
    row.errors.push(`${result.test}: no echo came back (${result.lost} lost)`);
    return;
  }
  if (result.test === "rtt") {
    row.lost.rtt += result.lost;
    const perSec = round(result.roundTripsPerSec)!;
    row.runs.roundTripsPerSec.push(perSec);
    if (row.rtt.perSec === null || perSec > row.rtt.perSec) {
      row.rtt = {
        perSec,
        p50Ms: round(result.p50Ms),
        p99Ms: round(result.p99Ms),
        maxMs: round(result.maxMs),
      };
    }
  } else {
    row.lost.window += result.lost;
    const perSec = round(result.datagramsPerSec)!;
    row.runs.datagramsPerSec.push(perSec);
    row.datagramsPerSec = Math.max(row.datagramsPerSec ?? 0, perSec);
  }
}

/** The goals of the UDP issue: ours at least as fast as Node dgram. */
function udpTargets(rows: UdpRow[]): Target[] {
  const node = rows.find((r) => r.id === "node");
  const ours = rows.find((r) => r.id === "ours");
  return [
    target("udp", "udp round trips/s vs Node dgram", ratio(ours?.rtt.perSec, node?.rtt.perSec), 1),
    target(
      "udp",
      "udp datagrams/s vs Node dgram",
      ratio(ours?.datagramsPerSec, node?.datagramsPerSec),
      1,
    ),
  ];
}

/** The UDP part as a text table, every ratio against Node dgram. */
export function udpTable(part: UdpPart): string {
  const node = part.rows.find((r) => r.id === "node");
  const body = part.rows.map((r) => [
    r.label,
    formatNumber(r.rtt.perSec),
    formatRatio(ratio(r.rtt.perSec, node?.rtt.perSec)),
    formatNumber(r.rtt.p50Ms, 3),
    formatNumber(r.rtt.p99Ms, 3),
    formatNumber(r.datagramsPerSec),
    formatRatio(ratio(r.datagramsPerSec, node?.datagramsPerSec)),
    `${r.lost.rtt}/${r.lost.window}`,
  ]);
  const s = part.settings;
  const title = `UDP: ${s.seconds} s of ${s.rttSize} B round trips one at a time; ` +
    `${s.seconds} s with ${s.window} datagrams of ${s.windowSize} B in flight ` +
    `(best of ${s.rounds} round${s.rounds === 1 ? "" : "s"}; ratios against Node dgram)`;
  const table = textTable(
    ["server", "rt/s", "xNode", "p50 ms", "p99 ms", "dgram/s", "xNode", "lost rt/win"],
    body,
  );
  const notes = [
    `lost: datagrams with no echo within ${s.timeoutMs} ms, over all rounds (round trips/window)`,
    ...(part.missing.length ? [`left out (not installed): ${part.missing.join(", ")}`] : []),
  ];
  const problems = part.rows.flatMap((r) => r.errors.map((e) => `  ${r.label}: ${e}`));
  return [title, table, ...notes, ...(problems.length ? ["problems:", ...problems] : [])].join(
    "\n",
  );
}
