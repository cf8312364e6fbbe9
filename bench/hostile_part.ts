/**
 * The benchmark's hostile part: how our servers hold up against clients
 * that misbehave, side by side with Node (and Python) in one run. Every
 * server, every misbehaving client and every well-behaved client runs in a
 * process of its own, on loopback; every load is bounded in time.
 *
 * 1. Reset storm: good clients per second (`good_clients.ts`) served by each
 *    echo server and by the proxy in each mode, alone and beside
 *    `reset_storm.py` (connections reset with SO_LINGER 0 at a steady rate),
 *    and the good clients' p99 under the storm.
 * 2. Tiny segments: one client writes one byte per segment and never reads
 *    (`tiny_sender.ts`); the peak memory growth of each echo server and
 *    proxy, children included. A server past the cap is killed.
 * 3. Silent connections: thousands of connections to the P2P tracker that
 *    never send a byte (`silent_conns.ts`); how fast the tracker still
 *    answers a real peer's Init, its open descriptors, and how many of the
 *    silent connections it closes after `--peer-timeout`.
 *
 * Run: `deno task bench --part hostile` (about 3.5 minutes), `--quick` for a
 * half-minute smoke run.
 *
 * @module
 */

import { errorMessage } from "../lib/cli.ts";
import { MODES } from "../lib/concurrency.ts";
import { closeQuietly, writeAll } from "../lib/net.ts";
import { startCommand } from "../lib/scripts.ts";
import type { Tools } from "./echo_part.ts";
import type { GoodClientsResult } from "./good_clients.ts";
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
  spawnServer,
  startOrNote,
  startResetStorm,
  type StormReport,
} from "./servers.ts";
import type { SilentConnsResult } from "./silent_conns.ts";
import type { TinySenderResult } from "./tiny_sender.ts";

/** How hard and how long each section pushes. */
export interface HostileSettings {
  /** Seconds of good clients before anything is measured on a fresh server, to warm it. */
  warmupSeconds: number;
  /** Seconds of good-client load in each phase (alone, then beside the storm). */
  goodSeconds: number;
  /** Good-client loops at once. */
  goodConcurrency: number;
  /** Resets per second the storm aims at. */
  resetRate: number;
  /** Seconds the tiny-segment client writes. */
  tinySeconds: number;
  /** Memory (server and children, MiB) at which a tiny-segment run is cut short. */
  rssCapMiB: number;
  /** Silent connections held open against the tracker. */
  silentConns: number;
  /** The tracker's `--peer-timeout`, in seconds. */
  peerTimeoutSeconds: number;
  /** Init round trips timed while the silent connections are open. */
  initProbes: number;
  /** Milliseconds between memory samples. */
  sampleMs: number;
}

/** The sizes from the issue. */
export const FULL_HOSTILE: HostileSettings = {
  warmupSeconds: 1,
  goodSeconds: 5,
  goodConcurrency: 4,
  resetRate: 300,
  tinySeconds: 10,
  rssCapMiB: 2048,
  silentConns: 5000,
  peerTimeoutSeconds: 10,
  initProbes: 10,
  sampleMs: 50,
};

/** Short runs for a smoke test (about half a minute in all; not a measurement). */
export const QUICK_HOSTILE: HostileSettings = {
  warmupSeconds: 0.2,
  goodSeconds: 0.5,
  goodConcurrency: 4,
  resetRate: 300,
  tinySeconds: 1,
  rssCapMiB: 2048,
  silentConns: 500,
  peerTimeoutSeconds: 2,
  initProbes: 5,
  sampleMs: 50,
};

/** Goals from the issue. */
const GOAL_STORM_RATIO = 0.7; // good conn/s under the storm, as a share of the rate without it
const GOAL_STORM_P99_MS = 100; // good clients' p99 under the storm
const GOAL_TINY_GROWTH_MIB = 32; // peak memory growth under tiny segments
const GOAL_INIT_MS = 50; // the tracker's answer to an Init beside the silent connections

/** Seconds after the peer timeout the silent connections are still watched (sweeps, slack). */
const SILENT_MARGIN_SECONDS = 3;
/** Milliseconds one Init probe may take before it counts as failed. */
const PROBE_TIMEOUT_MS = 5_000;
/** Milliseconds between two looks at memory during a tiny-segment run (for the cap). */
const CAP_CHECK_MS = 250;
/** Milliseconds of memory sampling after the tiny-segment client ends (queued work). */
const SETTLE_MS = 500;

const MIB = 1024 * 1024;

/** What the good clients measured in one phase. */
export interface GoodFigures {
  connsPerSec: number | null;
  p50Ms: number | null;
  p99Ms: number | null;
  maxMs: number | null;
  /** Connections that failed. */
  errors: number;
  /** Connections still open when the clients gave up. */
  stuck: number;
}

/** One server's reset-storm figures. */
export interface StormRow {
  /** node, python, echo-async, ..., proxy-async, ... */
  id: string;
  label: string;
  ours: boolean;
  /** echo: the echo cycle; http: a GET through the proxy with `Connection: close`. */
  kind: "echo" | "http";
  command: string;
  /** Good clients alone. */
  alone: GoodFigures | null;
  /** Good clients beside the storm. */
  storm: GoodFigures | null;
  /** Resets per second the storm reached. */
  resetsPerSec: number | null;
  /** Storm connections that failed (timed out in a full queue, refused). */
  stormFailures: number | null;
  /** conn/s under the storm over conn/s alone. */
  ratio: number | null;
  errors: string[];
}

/** One server's tiny-segment figures. */
export interface TinyRow {
  id: string;
  label: string;
  ours: boolean;
  command: string;
  /** Memory of the server and its children before the client connected, MiB. */
  baselineMiB: number | null;
  /** Highest memory while the client wrote (and shortly after), MiB; the cap if killed there. */
  peakMiB: number | null;
  /** peak - baseline, MiB. */
  growthMiB: number | null;
  /** The server passed the cap and was killed: its peak and growth are then lower bounds. */
  capped: boolean;
  /** One-byte segments the server's kernel took. */
  bytesSent: number | null;
  /** Whether the client was waiting to write at the end (the server held back). */
  blocked: boolean | null;
  errors: string[];
}

/** The silent-connection figures. */
export interface SilentFigures {
  /** Connections asked for and opened. */
  count: number;
  opened: number | null;
  /** A real peer's Init answered beside them, ms (connect to the directory line). */
  initP50Ms: number | null;
  initMaxMs: number | null;
  /** Init probes that failed or timed out. */
  initErrors: number;
  /** The tracker's open descriptors: before, with the silent connections, after the timeout. */
  fdsBefore: number | null;
  fdsWithSilent: number | null;
  fdsAfterTimeout: number | null;
  /** Silent connections the tracker closed while they were watched. */
  closedByServer: number | null;
  /** Seconds from opening to the tracker's close: median and last. */
  closedAfterP50Seconds: number | null;
  closedAfterMaxSeconds: number | null;
  /** Seconds they were watched once all were open. */
  heldSeconds: number | null;
  command: string;
  errors: string[];
}

/** The hostile part of results.json. */
export interface HostilePart {
  date: string;
  settings: HostileSettings;
  /** Programs missing, and what was left out for it. */
  missing: string[];
  storm: StormRow[];
  tiny: TinyRow[];
  silent: SilentFigures;
  targets: Target[];
}

function denoScript(script: string, args: string[], permissions = ["--allow-net"]): string[] {
  return [Deno.execPath(), "run", ...permissions, script, ...args];
}

/** The echo servers of both sections: Node and Python first, then ours. */
function echoSpecs(tools: Tools): ServerSpec[] {
  const list: ServerSpec[] = [];
  if (tools.node) {
    list.push({
      id: "node",
      label: "Node net echo",
      ours: false,
      command: [tools.node, "bench/node_echo.mjs", "0"],
    });
  }
  if (tools.python) {
    list.push({
      id: "python",
      label: "Python ThreadingTCPServer",
      ours: false,
      command: [tools.python, "bench/python_thread_echo.py", "0"],
    });
  }
  for (const mode of MODES) {
    list.push({
      id: `echo-${mode}`,
      label: `ours: echo ${mode}`,
      ours: true,
      command: ourServerCommand("echo_server.ts", mode),
    });
  }
  return list;
}

/** Our proxy in each mode, relaying to `upstream`. */
function proxySpecs(upstream: string): ServerSpec[] {
  return MODES.map((mode) => ({
    id: `proxy-${mode}`,
    label: `ours: proxy ${mode}`,
    ours: true,
    command: ourServerCommand("proxy_server.ts", mode, ["--upstream", upstream]),
  }));
}

/** Runs the good clients against `port` for `seconds`. */
async function goodClients(
  port: number,
  kind: "echo" | "http",
  settings: HostileSettings,
  seconds = settings.goodSeconds,
): Promise<{ figures: GoodFigures; firstError?: string }> {
  const run = await runTool(denoScript("bench/good_clients.ts", [
    "--port",
    String(port),
    "--kind",
    kind,
    "--concurrency",
    String(settings.goodConcurrency),
    "--seconds",
    String(seconds),
    "--path",
    "/1k",
  ]));
  const r = lastJson<GoodClientsResult>(run, "good_clients.ts");
  return {
    figures: {
      connsPerSec: round(r.connsPerSec),
      p50Ms: round(r.p50Ms),
      p99Ms: round(r.p99Ms),
      maxMs: round(r.maxMs),
      errors: r.errors,
      stuck: r.stuck,
    },
    firstError: r.firstError,
  };
}

/**
 * Runs `during` beside a reset storm on `port`: the storm starts first, and
 * stops once `during` is done.
 */
async function besideStorm<T>(
  python: string,
  port: number,
  settings: HostileSettings,
  during: () => Promise<T>,
): Promise<{ result: T; storm: StormReport }> {
  await using storm = await startResetStorm(port, {
    python,
    rate: settings.resetRate,
    // Its longest run, should the end of its stdin go astray: the good clients and their grace.
    maxSeconds: settings.goodSeconds + 15,
  });
  const result = await during();
  return { result, storm: await storm.stop() };
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, Math.max(0, ms)));

/** A process tree's memory and members, from one `ps` (cheap enough to poll for the cap). */
async function psTree(root: number): Promise<{ rssBytes: number; pids: number[] } | null> {
  let run;
  try {
    run = await runTool(["ps", "-e", "-o", "pid=,ppid=,rss="]);
  } catch {
    return null; // No ps: the cap is not enforced.
  }
  if (run.code !== 0) return null;
  const children = new Map<number, number[]>();
  const rss = new Map<number, number>();
  for (const line of run.stdout.trim().split("\n")) {
    const [pid, parent, kib] = line.trim().split(/\s+/).map(Number);
    rss.set(pid, kib * 1024);
    children.set(parent, [...(children.get(parent) ?? []), pid]);
  }
  if (!rss.has(root)) return { rssBytes: 0, pids: [] };
  const pids = [root];
  for (let i = 0; i < pids.length; i++) pids.push(...(children.get(pids[i]) ?? []));
  return { rssBytes: pids.reduce((sum, pid) => sum + (rss.get(pid) ?? 0), 0), pids };
}

function killAll(pids: number[]): void {
  for (const pid of pids) {
    try {
      Deno.kill(pid, "SIGKILL");
    } catch {
      // It has exited already.
    }
  }
}

/** The good clients alone, then beside the storm (when Python is there), on one server. */
async function stormRun(
  row: StormRow,
  server: RunningServer,
  python: string | null,
  settings: HostileSettings,
): Promise<void> {
  const note = (phase: string, figures: GoodFigures, firstError?: string) => {
    if (figures.errors > 0 || figures.stuck > 0) {
      row.errors.push(
        `${phase}: ${figures.errors} failed, ${figures.stuck} stuck` +
          (firstError ? `, first: ${firstError}` : ""),
      );
    }
  };
  // Not measured: the first connections to a fresh server pay for its JIT warming up.
  await goodClients(server.port, row.kind, settings, settings.warmupSeconds);
  const alone = await goodClients(server.port, row.kind, settings);
  row.alone = alone.figures;
  note("alone", alone.figures, alone.firstError);
  if (!python) return;
  const { result, storm } = await besideStorm(
    python,
    server.port,
    settings,
    () => goodClients(server.port, row.kind, settings),
  );
  row.storm = result.figures;
  note("under the storm", result.figures, result.firstError);
  row.resetsPerSec = round(storm.resetsPerSec);
  row.stormFailures = storm.failures;
  if (storm.failures > 0) {
    row.errors.push(`storm: ${storm.failures} connection(s) failed, first: ${storm.firstError}`);
  }
  row.ratio = round(ratio(row.storm.connsPerSec, row.alone.connsPerSec));
}

/** One tiny-segment client against a server, its memory sampled; kills it past the cap. */
async function tinyRun(
  row: TinyRow,
  server: RunningServer,
  settings: HostileSettings,
): Promise<void> {
  // Warm first (the echo cycle, through the proxy too): the growth should be what the server
  // holds for the tiny segments, not the code and heap its first connections bring in.
  await goodClients(server.port, "echo", settings, settings.warmupSeconds);
  // The baseline is a sampler started and stopped at once: one look at the idle tree.
  const baseline = await (await RssSampler.start(server.pid, settings.sampleMs)).stop();
  row.baselineMiB = round(baseline.peakBytes / MIB);
  const sampler = await RssSampler.start(server.pid, settings.sampleMs);
  let peak;
  let run;
  try {
    const sending = runTool(denoScript("bench/tiny_sender.ts", [
      "--port",
      String(server.port),
      "--seconds",
      String(settings.tinySeconds),
    ]));
    let done = false;
    sending.finally(() => done = true).catch(() => {});
    while (!done) {
      await Promise.race([sending, sleep(CAP_CHECK_MS)]);
      if (done) break;
      const tree = await psTree(server.pid);
      if (tree && tree.rssBytes > settings.rssCapMiB * MIB) {
        // Past the cap: stop it before it takes the machine's memory.
        killAll(tree.pids);
        row.capped = true;
        break;
      }
    }
    run = await sending;
    if (!row.capped) await sleep(SETTLE_MS);
  } finally {
    peak = await sampler.stop();
  }
  // Killed at the cap, it reached the cap at least, whatever the last sample saw.
  const peakBytes = Math.max(peak.peakBytes, row.capped ? settings.rssCapMiB * MIB : 0);
  row.peakMiB = round(peakBytes / MIB);
  row.growthMiB = round(Math.max(0, peakBytes - baseline.peakBytes) / MIB);
  const sent = lastJson<TinySenderResult>(run, "tiny_sender.ts");
  row.bytesSent = sent.bytes;
  row.blocked = sent.blocked;
  if (sent.error && !row.capped) row.errors.push(`tiny sender: ${sent.error}`);
}

/** A process's open descriptors, from `/proc` through `ls` (as p2p_tracker_load.ts uses `cat`). */
async function countFds(pid: number): Promise<number | null> {
  const run = await runTool(["ls", `/proc/${pid}/fd`]);
  return run.code === 0 ? run.stdout.split("\n").filter((l) => l.trim()).length : null;
}

/** How long the tracker gets to accept every silent connection before its descriptors count. */
const FDS_SETTLE_MS = 5_000;

/** Counts `pid`'s descriptors until there are at least `expected`, or `withinMs` has passed. */
async function countFdsUntil(
  pid: number,
  expected: number,
  withinMs: number,
): Promise<number | null> {
  const deadline = performance.now() + withinMs;
  while (true) {
    const fds = await countFds(pid);
    if (fds === null || fds >= expected || performance.now() > deadline) return fds;
    await sleep(50);
  }
}

/** A real peer's Init: `{"port": 8001, "files": []}` and its directory line back. */
const INIT_LINE = new TextEncoder().encode('{"port": 8001, "files": []}\n');

/** Times one Init round trip, connect included, in ms. */
async function initProbe(port: number): Promise<number> {
  const t0 = performance.now();
  let timer: ReturnType<typeof setTimeout> | undefined;
  const connecting = Deno.connect({ hostname: "127.0.0.1", port });
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(new Error(`no answer within ${PROBE_TIMEOUT_MS} ms`)),
      PROBE_TIMEOUT_MS,
    );
  });
  let conn: Deno.TcpConn | undefined;
  try {
    conn = await Promise.race([connecting, timeout]);
    const c = conn;
    const exchange = (async () => {
      await writeAll(c, INIT_LINE);
      const buffer = new Uint8Array(64 * 1024);
      while (true) {
        const n = await c.read(buffer);
        if (n === null) throw new Error("the tracker closed the connection before answering");
        if (buffer.subarray(0, n).includes(0x0a)) return performance.now() - t0;
      }
    })();
    return await Promise.race([exchange, timeout]);
  } finally {
    clearTimeout(timer);
    if (conn) closeQuietly(conn);
    // A connect that lost the race still resolves later: close that connection too.
    else connecting.then(closeQuietly, () => {});
  }
}

/** The silent-connection section against the tracker. */
async function runSilent(
  settings: HostileSettings,
  say: (line: string) => void,
): Promise<SilentFigures> {
  const command = denoScript("p2p/tracker.ts", [
    "--port",
    "0",
    "--http-port",
    "0",
    "--quiet",
    "--peer-timeout",
    String(settings.peerTimeoutSeconds),
    "--sweep-interval",
    "1",
  ]);
  const figures: SilentFigures = {
    count: settings.silentConns,
    opened: null,
    initP50Ms: null,
    initMaxMs: null,
    initErrors: 0,
    fdsBefore: null,
    fdsWithSilent: null,
    fdsAfterTimeout: null,
    closedByServer: null,
    closedAfterP50Seconds: null,
    closedAfterMaxSeconds: null,
    heldSeconds: null,
    command: shownCommand(command),
    errors: [],
  };
  let tracker: RunningServer;
  try {
    tracker = await spawnServer("tracker", command);
  } catch (err) {
    figures.errors.push(`the tracker did not start: ${errorMessage(err)}`);
    return figures;
  }
  try {
    figures.fdsBefore = await countFds(tracker.pid);
    const holdSeconds = settings.peerTimeoutSeconds + SILENT_MARGIN_SECONDS;
    const silent = await startCommand(Deno.execPath(), [
      "run",
      "--allow-net",
      "bench/silent_conns.ts",
      "--port",
      String(tracker.port),
      "--count",
      String(settings.silentConns),
      "--hold-seconds",
      String(holdSeconds),
    ], { waitForListening: false, label: "silent_conns.ts" });
    try {
      const openedLine = await silent.waitFor(/^opened \d+/, 120_000);
      const openedAt = performance.now();
      // The client counts a connection open once the kernel has it; the tracker may still be
      // accepting the tail of them, so wait (briefly) until its descriptors have caught up.
      const expected = (figures.fdsBefore ?? 0) + Number(openedLine.match(/\d+/)?.[0] ?? 0);
      figures.fdsWithSilent = await countFdsUntil(tracker.pid, expected, FDS_SETTLE_MS);
      const times: number[] = [];
      for (let i = 0; i < settings.initProbes; i++) {
        try {
          times.push(await initProbe(tracker.port));
        } catch (err) {
          figures.initErrors++;
          if (figures.initErrors === 1) figures.errors.push(`Init probe: ${errorMessage(err)}`);
        }
        await sleep(50);
      }
      times.sort((a, b) => a - b);
      figures.initP50Ms = times.length ? round(times[Math.ceil(times.length / 2) - 1]) : null;
      figures.initMaxMs = round(times.at(-1));
      say(`hostile: ${settings.silentConns} silent connections open; waiting out the peer timeout`);
      // Just before the silent clients give up: has the tracker let go of their descriptors?
      await sleep(openedAt + (holdSeconds - 0.5) * 1000 - performance.now());
      figures.fdsAfterTimeout = await countFds(tracker.pid);
      const line = await silent.waitFor(/^\{/, (holdSeconds + 30) * 1000);
      const result = JSON.parse(line) as SilentConnsResult;
      figures.opened = result.opened;
      figures.closedByServer = result.closedByServer;
      figures.closedAfterP50Seconds = round(result.closedAfterP50Seconds);
      figures.closedAfterMaxSeconds = round(result.closedAfterMaxSeconds);
      figures.heldSeconds = round(result.heldSeconds);
      if (result.firstError) {
        figures.errors.push(
          `${result.count - result.opened} silent connection(s) did not open: ${result.firstError}`,
        );
      }
    } finally {
      await silent.stop();
    }
  } catch (err) {
    figures.errors.push(errorMessage(err));
  } finally {
    await tracker.stop();
  }
  return figures;
}

function stormRowOf(spec: ServerSpec, kind: "echo" | "http"): StormRow {
  return {
    id: spec.id,
    label: spec.label,
    ours: spec.ours,
    kind,
    command: shownCommand(spec.command),
    alone: null,
    storm: null,
    resetsPerSec: null,
    stormFailures: null,
    ratio: null,
    errors: [],
  };
}

function tinyRowOf(spec: ServerSpec): TinyRow {
  return {
    id: spec.id,
    label: spec.label,
    ours: spec.ours,
    command: shownCommand(spec.command),
    baselineMiB: null,
    peakMiB: null,
    growthMiB: null,
    capped: false,
    bytesSent: null,
    blocked: null,
    errors: [],
  };
}

/** Runs the hostile part: the three sections, one server under test at a time. */
export async function runHostilePart(
  settings: HostileSettings,
  tools: Tools,
  say: (line: string) => void,
): Promise<HostilePart> {
  const missing: string[] = [];
  if (!tools.node) missing.push("node (no Node echo rows)");
  if (!tools.python) missing.push("python3 (no reset storm, no Python row)");
  if (missing.length) say(`hostile: not installed, left out: ${missing.join("; ")}`);
  const date = new Date().toISOString();
  const stormRows: StormRow[] = [];
  const tinyRows: TinyRow[] = [];
  /** Runs `measure` on a fresh server for `spec`, then stops it. */
  const onFreshServer = async (
    spec: ServerSpec,
    errors: string[],
    what: string,
    measure: (server: RunningServer) => Promise<void>,
  ) => {
    const server = await startOrNote("hostile", spec, errors, say);
    if (!server) return;
    try {
      await measure(server).catch((err) => errors.push(errorMessage(err)));
      say(`hostile: ${what} on ${spec.label} done`);
    } finally {
      await server.stop();
    }
  };

  // The proxy faces the storm in front of an origin, and the tiny segments in front of an echo
  // server, so that what it relays comes back towards a client that never reads.
  const origin = await spawnServer(
    "origin",
    denoScript("bench/origin_server.ts", ["--port", "0"]),
  );
  const upstreamEcho = await spawnServer(
    "upstream echo",
    tools.node
      ? [tools.node, "bench/node_echo.mjs", "0"]
      : ourServerCommand("echo_server.ts", "async"),
  );
  try {
    // 1: every echo server, then the proxy in each mode.
    for (const spec of [...echoSpecs(tools), ...proxySpecs(`127.0.0.1:${origin.port}`)]) {
      const row = stormRowOf(spec, spec.id.startsWith("proxy-") ? "http" : "echo");
      stormRows.push(row);
      await onFreshServer(
        spec,
        row.errors,
        "reset storm",
        (server) => stormRun(row, server, tools.python, settings),
      );
    }
    // 2: on fresh servers too, as one may still be working through a storm's backlog.
    const echoes = echoSpecs(tools).filter((spec) => spec.id !== "python");
    for (const spec of [...echoes, ...proxySpecs(`127.0.0.1:${upstreamEcho.port}`)]) {
      const row = tinyRowOf(spec);
      tinyRows.push(row);
      await onFreshServer(
        spec,
        row.errors,
        "tiny segments",
        (server) => tinyRun(row, server, settings),
      );
    }
  } finally {
    await origin.stop();
    await upstreamEcho.stop();
  }

  // 3: the tracker.
  const silent = await runSilent(settings, say);
  say("hostile: silent connections done");
  const part: HostilePart = {
    date,
    settings,
    missing,
    storm: stormRows,
    tiny: tinyRows,
    silent,
    targets: [],
  };
  part.targets = hostileTargets(part);
  return part;
}

/** The goals of the issue, for our rows (names short enough for the chart's label column). */
function hostileTargets(part: HostilePart): Target[] {
  const targets: Target[] = [];
  for (const row of part.storm.filter((r) => r.ours)) {
    const name = row.label.replace(/^ours: /, "");
    targets.push(
      target("hostile", `${name} conn/s under resets`, row.ratio, GOAL_STORM_RATIO),
      target(
        "hostile",
        `${name} p99 under resets`,
        row.storm?.p99Ms ?? null,
        GOAL_STORM_P99_MS,
        "ms",
        false,
        true,
      ),
    );
  }
  for (const row of part.tiny.filter((r) => r.ours)) {
    targets.push(
      target(
        "hostile",
        `${row.label.replace(/^ours: /, "")} memory, 1-byte writes`,
        row.growthMiB,
        GOAL_TINY_GROWTH_MIB,
        "MiB",
        false,
        true,
      ),
    );
  }
  const s = part.silent;
  targets.push(
    target(
      "hostile",
      `tracker Init, ${formatNumber(s.count)} silent conns`,
      // A probe that got no answer within the probe timeout took at least that long.
      s.initErrors > 0 ? PROBE_TIMEOUT_MS : s.initMaxMs,
      GOAL_INIT_MS,
      "ms",
      false,
      true,
    ),
    target(
      "hostile",
      "tracker closes silent conns",
      ratio(s.closedByServer, s.opened),
      1.0,
    ),
  );
  return targets;
}

/** MiB with one decimal; for a server killed at the cap, "> " and the least it must have been. */
function formatMiB(value: number | null, capped: boolean): string {
  return capped ? `> ${formatNumber(value)}` : formatNumber(value, 1);
}

/** The hostile part as three text tables. */
export function hostileTable(part: HostilePart): string {
  const s = part.settings;
  const node = part.storm.find((r) => r.id === "node");
  const stormTitle = `Reset storm: ${s.goodConcurrency} good-client loops for ${s.goodSeconds} s ` +
    `alone, then beside ${s.resetRate} resets/s (reset_storm.py, SO_LINGER 0); goal: under the ` +
    `storm >= ${GOAL_STORM_RATIO.toFixed(2)}x the rate alone, p99 <= ${GOAL_STORM_P99_MS} ms`;
  const stormBody = part.storm.map((r) => [
    r.label,
    r.kind === "http" ? "GET 1k" : "echo",
    formatNumber(r.alone?.connsPerSec),
    formatNumber(r.alone?.p99Ms, 1),
    formatNumber(r.storm?.connsPerSec),
    formatNumber(r.storm?.p99Ms, 1),
    formatNumber(r.resetsPerSec),
    formatRatio(r.ratio),
    r.kind === "echo" ? formatRatio(ratio(r.storm?.connsPerSec, node?.storm?.connsPerSec)) : "—",
  ]);
  const stormTable = textTable(
    [
      "server",
      "client",
      "alone conn/s",
      "p99 ms",
      "storm conn/s",
      "p99 ms",
      "resets/s",
      "storm/alone",
      "xNode",
    ],
    stormBody,
    "llrrrrrrr",
  );

  const tinyTitle = `Tiny segments: one client writes 1-byte segments (TCP_NODELAY) for ` +
    `${s.tinySeconds} s and never reads; memory of the server and its children (proxies in ` +
    `front of an echo server); goal: growth <= ${GOAL_TINY_GROWTH_MIB} MiB; killed past ` +
    `${formatNumber(s.rssCapMiB)} MiB`;
  const tinyTable = textTable(
    ["server", "baseline MiB", "peak MiB", "growth MiB", "bytes taken", "client blocked"],
    part.tiny.map((r) => [
      r.label,
      formatNumber(r.baselineMiB, 1),
      formatMiB(r.peakMiB, r.capped),
      formatMiB(r.growthMiB, r.capped),
      formatNumber(r.bytesSent),
      r.blocked === null ? "—" : r.blocked ? "yes" : "no",
    ]),
  );

  const q = part.silent;
  const closedShare = ratio(q.closedByServer, q.opened);
  const silentTitle = `Silent connections: ${formatNumber(q.count)} connections that never send ` +
    `a byte, against p2p/tracker.ts --peer-timeout ${s.peerTimeoutSeconds} --sweep-interval 1`;
  const silentTable = textTable(
    ["figure", "measured", "goal"],
    [
      ["silent connections open", formatNumber(q.opened), ""],
      [
        `Init answered beside them, p50 / max ms (${s.initProbes} tries)`,
        `${formatNumber(q.initP50Ms, 1)} / ${formatNumber(q.initMaxMs, 1)}` +
        (q.initErrors ? ` (${q.initErrors} failed)` : ""),
        `<= ${GOAL_INIT_MS} ms`,
      ],
      [
        "tracker descriptors: before / with them / after the timeout",
        `${formatNumber(q.fdsBefore)} / ${formatNumber(q.fdsWithSilent)} / ${
          formatNumber(q.fdsAfterTimeout)
        }`,
        "",
      ],
      [
        "closed by the tracker",
        `${formatNumber(q.closedByServer)} (${
          closedShare === null ? "—" : `${Math.round(closedShare * 100)}%`
        })`,
        "all",
      ],
      [
        "closed after, p50 / last s",
        `${formatNumber(q.closedAfterP50Seconds, 1)} / ${formatNumber(q.closedAfterMaxSeconds, 1)}`,
        `~${s.peerTimeoutSeconds} s`,
      ],
    ],
    "lrl",
  );

  const problems = [
    ...part.storm.flatMap((r) => r.errors.map((e) => `  ${r.label} (storm): ${e}`)),
    ...part.tiny.flatMap((r) => r.errors.map((e) => `  ${r.label} (tiny): ${e}`)),
    ...part.silent.errors.map((e) => `  tracker: ${e}`),
  ];
  const notes = part.missing.length ? [`left out: ${part.missing.join("; ")}`] : [];
  return [
    stormTitle,
    stormTable,
    "",
    tinyTitle,
    tinyTable,
    "",
    silentTitle,
    silentTable,
    ...notes,
    ...(problems.length ? ["problems:", ...problems] : []),
  ].join("\n");
}
