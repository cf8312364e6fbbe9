/**
 * The benchmark's proxy part: `wrk` against a local origin (a 1 KiB and a
 * 10 MiB file), with keep-alive and with `Connection: close`, directly and
 * through proxy_server.ts in each mode, haproxy (TCP mode, one thread), a
 * Node `net` relay with TCP_NODELAY and the same relay untuned (Nagle on),
 * and socat. When proxy_server.ts has a `--forward` mode, a row sends the
 * same requests to it in absolute form, as a browser does to its proxy.
 *
 * The origin is nginx when it is installed (the cheapest origin per request
 * here, so the relays, not the origin, set the pace), otherwise
 * bench/origin_server.ts. The origin, every relay and wrk each run in a
 * process of their own.
 *
 * @module
 */

import { errorMessage } from "../lib/cli.ts";
import { MODES } from "../lib/concurrency.ts";
import { freePort } from "../lib/scripts.ts";
import type { Tools } from "./echo_part.ts";
import { absoluteFormScript, haproxyCommand, nginxCommand } from "./proxy_anchors.ts";
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
  findProgram,
  ourServerCommand,
  RssSampler,
  type RunningServer,
  runTool,
  shownCommand,
  socatFork,
  spawnServer,
  startOrNote,
} from "./servers.ts";

/** How hard and how long wrk drives each relay. */
export interface ProxySettings {
  /** wrk threads. */
  threads: number;
  /** wrk connections. */
  connections: number;
  /** Seconds per wrk run. */
  seconds: number;
  /** Milliseconds between memory samples. */
  sampleMs: number;
}

/** The sizes from the issue: `wrk -t2 -c50 -d10s`. */
export const FULL_PROXY: ProxySettings = {
  threads: 2,
  connections: 50,
  seconds: 10,
  sampleMs: 100,
};

/** Short runs for a smoke test. */
export const QUICK_PROXY: ProxySettings = {
  threads: 2,
  connections: 10,
  seconds: 1,
  sampleMs: 100,
};

/** The four cases: file × connection handling. */
export const PROXY_CASES = [
  { id: "1k_keepalive", path: "/1k", close: false, label: "1 KiB keep-alive" },
  { id: "1k_close", path: "/1k", close: true, label: "1 KiB Connection: close" },
  { id: "10m_keepalive", path: "/10m", close: false, label: "10 MiB keep-alive" },
  { id: "10m_close", path: "/10m", close: true, label: "10 MiB Connection: close" },
] as const;

/** What one wrk run reported. */
export interface WrkFigures {
  reqPerSec: number | null;
  mibPerSec: number | null;
  p50Ms: number | null;
  p99Ms: number | null;
  /** Socket errors (connect, read, write, timeout) plus non-2xx/3xx responses. */
  errors: number;
  /** Which errors, in wrk's words: "timeout 20, non-2xx 3". */
  errorKinds?: string;
  /** Percent of one core the origin used during the run (100 = a whole core). */
  originCpuPct?: number | null;
}

/** One relay's (or the direct path's) figures. */
export interface ProxyRow {
  /**
   * direct, haproxy, node (TCP_NODELAY), node-nagle (untuned), socat, async,
   * worker, process, forward (async, absolute-form requests).
   */
  id: string;
  label: string;
  ours: boolean;
  command: string;
  /** Figures by case id. */
  cases: Record<string, WrkFigures>;
  /** Peak memory of the relay with its children while wrk ran (null for direct). */
  peakRssMiB: number | null;
  /** Why a case is missing: not installed, did not start, wrk errors. */
  errors: string[];
}

/** Which web server the relays fetch from, and why. */
export interface ProxyOrigin {
  /** "nginx" or "deno". */
  id: string;
  /** Its name and version: "nginx/1.22.1". */
  label: string;
  command: string;
  /** Why this one, in a sentence for the report. */
  why: string;
}

/** The proxy part of results.json. */
export interface ProxyPart {
  date: string;
  settings: ProxySettings;
  /** Sizes of the origin's files. */
  files: Record<string, number>;
  /** The origin every row fetches from (absent when the part was skipped). */
  origin?: ProxyOrigin;
  /** Versions of the reference servers this part starts itself (haproxy, nginx). */
  versions?: Record<string, string>;
  /** Programs that are not installed: their rows say so instead of figures. */
  missing: string[];
  rows: ProxyRow[];
  targets: Target[];
}

const MIB = 1024 * 1024;
/** Seconds wrk waits for a response before counting a timeout. */
const WRK_TIMEOUT_SECONDS = 10;

/** Milliseconds from a wrk latency such as `617.52us`, `2.34ms` or `1.02s`. */
function wrkMs(text: string): number | null {
  const match = /^([\d.]+)(us|ms|s|m)$/.exec(text);
  if (!match) return null;
  const scale = { us: 0.001, ms: 1, s: 1000, m: 60_000 }[match[2]]!;
  return Number(match[1]) * scale;
}

/** Bytes from a wrk size such as `1.29MB` (wrk's units are powers of 1024). */
function wrkBytes(text: string): number | null {
  const match = /^([\d.]+)([KMGT]?B)$/.exec(text);
  if (!match) return null;
  const power = ["B", "KB", "MB", "GB", "TB"].indexOf(match[2]);
  return Number(match[1]) * 1024 ** power;
}

/** Reads the figures out of wrk's report (run with `--latency`). */
export function parseWrk(out: string): WrkFigures {
  const reqs = /Requests\/sec:\s+([\d.]+)/.exec(out);
  const transfer = /Transfer\/sec:\s+(\S+)/.exec(out);
  const p50 = /^\s+50%\s+(\S+)/m.exec(out);
  const p99 = /^\s+99%\s+(\S+)/m.exec(out);
  const socket = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(out);
  const non2xx = /Non-2xx or 3xx responses: (\d+)/.exec(out);
  const bytes = transfer ? wrkBytes(transfer[1]) : null;
  const kinds = ["connect", "read", "write", "timeout"]
    .map((kind, i) => [kind, Number(socket?.[i + 1] ?? 0)] as const)
    .concat([["non-2xx", Number(non2xx?.[1] ?? 0)]])
    .filter(([, n]) => n > 0)
    .map(([kind, n]) => `${kind} ${n}`)
    .join(", ");
  return {
    reqPerSec: reqs ? round(Number(reqs[1])) : null,
    mibPerSec: bytes === null ? null : round(bytes / MIB),
    p50Ms: p50 ? round(wrkMs(p50[1])) : null,
    p99Ms: p99 ? round(wrkMs(p99[1])) : null,
    errors: (socket ? socket.slice(1).reduce((sum, n) => sum + Number(n), 0) : 0) +
      (non2xx ? Number(non2xx[1]) : 0),
    ...(kinds ? { errorKinds: kinds } : {}),
  };
}

interface Spec {
  id: string;
  label: string;
  ours: boolean;
  /** null for the direct path (wrk talks to the origin itself). */
  command: string[] | null;
  knownPort?: number;
  /** Why this row has no figures in this run (a program is not installed, a mode not built). */
  unavailable?: string;
  /** Requests in absolute form (`GET http://origin/1k`), as a browser sends them to its proxy. */
  absoluteForm?: boolean;
}

/** The reference servers this part finds for itself (Debian keeps them in /usr/sbin). */
interface Anchors {
  haproxy: string | null;
  nginx: string | null;
}

/** The rows, in table order; `dir` is where configuration files go. */
async function specs(
  tools: Tools,
  anchors: Anchors,
  origin: string,
  dir: string,
  missing: string[],
): Promise<Spec[]> {
  const notInstalled = (name: string) => {
    missing.push(name);
    return `${name} is not installed (apt-get install ${name})`;
  };
  const [originHost, originPort] = origin.split(":");
  const list: Spec[] = [{ id: "direct", label: "direct (no relay)", ours: false, command: null }];
  const haproxyPort = freePort();
  list.push({
    id: "haproxy",
    label: "haproxy (TCP mode, nbthread 1)",
    ours: false,
    command: await haproxyCommand(anchors.haproxy ?? "haproxy", dir, haproxyPort, origin),
    knownPort: haproxyPort,
    unavailable: anchors.haproxy ? undefined : notInstalled("haproxy"),
  });
  const node = tools.node ?? "node";
  const nodeMissing = tools.node ? undefined : notInstalled("node");
  list.push({
    id: "node",
    label: "Node relay (TCP_NODELAY)",
    ours: false,
    command: [node, "bench/node_relay.mjs", "0", originHost, originPort, "--nodelay"],
    unavailable: nodeMissing,
  });
  list.push({
    id: "node-nagle",
    label: "Node relay (Nagle on, untuned)",
    ours: false,
    command: [node, "bench/node_relay.mjs", "0", originHost, originPort],
    unavailable: nodeMissing,
  });
  list.push({
    id: "socat",
    label: "socat fork",
    ours: false,
    ...socatFork(tools.socat ?? "socat", `TCP:${origin}`),
    unavailable: tools.socat ? undefined : notInstalled("socat"),
  });
  const ready = exists("proxy_server.ts") ? undefined : "proxy_server.ts is not yet available";
  for (const mode of MODES) {
    list.push({
      id: mode,
      label: `ours: ${mode}`,
      ours: true,
      command: ourServerCommand("proxy_server.ts", mode, ["--upstream", origin]),
      unavailable: ready,
    });
  }
  // Forward mode (issue 12): no upstream; wrk names the origin in every request line. The row
  // starts by itself once `proxy_server.ts --help` mentions --forward.
  list.push({
    id: "forward",
    label: "ours: async --forward (absolute-form)",
    ours: true,
    command: ourServerCommand("proxy_server.ts", "async", ["--forward"]),
    absoluteForm: true,
    unavailable: ready ?? await forwardMissing(),
  });
  return list;
}

/** Why the forward row cannot run yet, or undefined when proxy_server.ts has `--forward`. */
async function forwardMissing(): Promise<string | undefined> {
  const help = await runTool([Deno.execPath(), "run", "--allow-net", "proxy_server.ts", "--help"]);
  return /--forward\b/.test(help.stdout + help.stderr)
    ? undefined
    : "proxy_server.ts --help does not mention --forward yet";
}

function exists(relative: string): boolean {
  try {
    return Deno.statSync(new URL(`../${relative}`, import.meta.url)).isFile;
  } catch {
    return false;
  }
}

/**
 * Runs wrk once against `port`; with `script`, wrk loads that Lua file (the
 * absolute-form requests of the forward row).
 */
async function wrk(
  wrkPath: string,
  port: number,
  path: string,
  close: boolean,
  settings: ProxySettings,
  script?: string,
): Promise<WrkFigures> {
  const run = await runTool([
    wrkPath,
    `-t${settings.threads}`,
    `-c${settings.connections}`,
    `-d${settings.seconds}s`,
    // 10 MiB responses shared by 50 connections can take longer than wrk's default of 2 s.
    `--timeout`,
    `${WRK_TIMEOUT_SECONDS}s`,
    "--latency",
    ...(close ? ["-H", "Connection: close"] : []),
    ...(script ? ["-s", script] : []),
    `http://127.0.0.1:${port}${path}`,
  ]);
  const figures = parseWrk(run.stdout);
  if (run.code !== 0 || figures.reqPerSec === null) {
    throw new Error(`wrk exited ${run.code}: ${(run.stderr || run.stdout).trim().split("\n")[0]}`);
  }
  return figures;
}

/** Clock ticks per second in /proc/PID/stat (`getconf CLK_TCK`; 100 on every common Linux). */
let clockTicks: number | null = null;

/**
 * CPU seconds (user + system, all threads) process `pid` has used so far,
 * from /proc/PID/stat read with `cat` (Deno itself reads /proc only with
 * --allow-all); null when that cannot be read.
 */
async function cpuSeconds(pid: number): Promise<number | null> {
  if (clockTicks === null) {
    const run = await runTool(["getconf", "CLK_TCK"]).catch(() => null);
    clockTicks = Number(run?.stdout.trim()) || 100;
  }
  const run = await runTool(["cat", `/proc/${pid}/stat`]).catch(() => null);
  if (!run || run.code !== 0) return null;
  // Fields after the command name, which is in parentheses and may hold spaces:
  // field 3 (state) is at index 0, so utime (14) and stime (15) are at 11 and 12.
  const fields = run.stdout.slice(run.stdout.lastIndexOf(")") + 2).split(" ");
  const ticks = Number(fields[11]) + Number(fields[12]);
  return Number.isFinite(ticks) ? ticks / clockTicks : null;
}

/** The version a program prints for `flag`, matched by `pattern` (its first group); "missing". */
async function versionOf(program: string | null, flag: string, pattern: RegExp): Promise<string> {
  if (!program) return "missing";
  const run = await runTool([program, flag]).catch(() => null);
  return pattern.exec(`${run?.stdout}\n${run?.stderr}`)?.[1] ?? "unknown";
}

/** A running origin and what the report says about it. */
interface StartedOrigin {
  server: RunningServer;
  origin: ProxyOrigin;
}

/**
 * Starts the origin: nginx when it is installed and starts, otherwise
 * bench/origin_server.ts, with the reason in `origin.why`.
 */
async function startProxyOrigin(
  nginx: string | null,
  nginxVersion: string,
  dir: string,
  say: (line: string) => void,
): Promise<StartedOrigin> {
  let why = "nginx is not installed (apt-get install nginx)";
  if (nginx) {
    const port = freePort();
    const command = await nginxCommand(nginx, dir, port);
    try {
      const server = await spawnServer("nginx origin", command, { knownPort: port });
      return {
        server,
        origin: {
          id: "nginx",
          label: `nginx/${nginxVersion}`,
          command: shownCommand(command),
          why: "nginx, one process (bench/proxy_anchors.ts): it costs the least CPU per " +
            "request of the origins we can run here (sendfile for 10 MiB), so the relays, not " +
            "the origin, set the pace",
        },
      };
    } catch (err) {
      why = `nginx did not start (${errorMessage(err).split("\n")[0]})`;
      say(`proxy: ${why}`);
    }
  }
  const command = [Deno.execPath(), "run", "--allow-net", "bench/origin_server.ts", "--port", "0"];
  return {
    server: await spawnServer("origin", command),
    origin: {
      id: "deno",
      label: "bench/origin_server.ts (Deno.serve)",
      command: shownCommand(command),
      why: `${why}: this origin costs more CPU per request, which the relays then lack, so ` +
        `their 1 KiB figures are lower than with nginx`,
    },
  };
}

/** Runs the proxy part and returns its figures. */
export async function runProxyPart(
  settings: ProxySettings,
  tools: Tools,
  say: (line: string) => void,
): Promise<ProxyPart> {
  const part: ProxyPart = {
    date: new Date().toISOString(),
    settings,
    files: { "/1k": 1024, "/10m": 10 * MIB },
    missing: [],
    rows: [],
    targets: [],
  };
  if (!tools.wrk) {
    part.missing.push("wrk");
    say("proxy: wrk is not installed (apt-get install wrk); part skipped");
    part.targets = proxyTargets(part.rows);
    return part;
  }
  const anchors: Anchors = {
    haproxy: await findProgram("haproxy"),
    nginx: await findProgram("nginx"),
  };
  part.versions = {
    haproxy: await versionOf(anchors.haproxy, "-v", /HA-?Proxy version (\S+)/i),
    nginx: await versionOf(anchors.nginx, "-v", /nginx\/(\S+)/),
  };
  // Configuration files, the origin's files and wrk's scripts: removed at the end.
  const dir = await Deno.makeTempDir({ prefix: "bench_proxy_" });
  const servers: (RunningServer | null)[] = [];
  let origin: RunningServer | null = null;
  try {
    const started = await startProxyOrigin(anchors.nginx, part.versions.nginx, dir, say);
    origin = started.server;
    part.origin = started.origin;
    say(`proxy: origin ${part.origin.label}: ${part.origin.why}`);
    const upstream = `127.0.0.1:${origin.port}`;
    const list = await specs(tools, anchors, upstream, dir, part.missing);
    part.rows = list.map((s) => ({
      id: s.id,
      label: s.label,
      ours: s.ours,
      command: s.command ? shownCommand(s.command) : `wrk straight to the origin (${upstream})`,
      cases: {},
      peakRssMiB: null,
      errors: s.unavailable ? [s.unavailable] : [],
    }));
    if (part.missing.length) say(`proxy: not installed, left out: ${part.missing.join(", ")}`);
    const scripts: Record<string, string> = {};
    for (const c of PROXY_CASES) {
      scripts[c.id] = `${dir}/absolute_${c.id}.lua`;
      await Deno.writeTextFile(scripts[c.id], absoluteFormScript(`http://${upstream}${c.path}`));
    }
    for (const [i, spec] of list.entries()) {
      if (!spec.command || spec.unavailable) {
        servers.push(null);
        continue;
      }
      const command = spec.command;
      servers.push(await startOrNote("proxy", { ...spec, command }, part.rows[i].errors, say));
    }
    for (const c of PROXY_CASES) {
      for (const [i, spec] of list.entries()) {
        const row = part.rows[i];
        const server = servers[i];
        if (spec.unavailable || (spec.command && !server)) continue;
        const sampler = server ? await RssSampler.start(server.pid, settings.sampleMs) : null;
        const cpuBefore = await cpuSeconds(origin.pid);
        const start = performance.now();
        try {
          const figures = await wrk(
            tools.wrk,
            server?.port ?? origin.port,
            c.path,
            c.close,
            settings,
            spec.absoluteForm ? scripts[c.id] : undefined,
          );
          const cpuAfter = await cpuSeconds(origin.pid);
          const seconds = (performance.now() - start) / 1000;
          figures.originCpuPct = cpuBefore === null || cpuAfter === null
            ? null
            : round((cpuAfter - cpuBefore) / seconds * 100);
          row.cases[c.id] = figures;
          if (figures.errors > 0) row.errors.push(`${c.label}: wrk errors: ${figures.errorKinds}`);
        } catch (err) {
          row.errors.push(`${c.label}: ${errorMessage(err)}`);
        } finally {
          if (sampler) {
            const peak = await sampler.stop();
            row.peakRssMiB = Math.max(row.peakRssMiB ?? 0, round(peak.peakBytes / MIB) ?? 0);
          }
        }
      }
      say(`proxy: ${c.label} done`);
    }
  } finally {
    await Promise.all(servers.map((s) => s?.stop()));
    await origin?.stop();
    await Deno.remove(dir, { recursive: true });
  }
  part.targets = proxyTargets(part.rows);
  return part;
}

/**
 * The goals of issues 3 and 12, as ratios in this run ("tuned Node" is the
 * Node relay with TCP_NODELAY, "untuned Node" the one with Nagle on).
 */
export function proxyTargets(rows: ProxyRow[]): Target[] {
  const figure = (id: string, c: string, key: "reqPerSec" | "mibPerSec") =>
    rows.find((r) => r.id === id)?.cases[c]?.[key] ?? null;
  const req = (id: string, c = "1k_keepalive") => figure(id, c, "reqPerSec");
  const mib = (id: string) => figure(id, "10m_keepalive", "mibPerSec");
  const info = (what: string, measured: number | null, goal: number) =>
    target("proxy", what, measured, goal, "x", true);
  return [
    // Issue 12: against what an engineer would deploy.
    target("proxy", "async req/s vs haproxy (1 KiB)", ratio(req("async"), req("haproxy")), 1.0),
    target(
      "proxy",
      "async req/s vs tuned Node (1 KiB)",
      ratio(req("async"), req("node")),
      1.2,
    ),
    target(
      "proxy",
      "async MiB/s vs tuned Node (10 MiB)",
      ratio(mib("async"), mib("node")),
      1.5,
    ),
    target(
      "proxy",
      "forward req/s vs relay mode (1 KiB)",
      ratio(req("forward"), req("async")),
      0.8,
    ),
    // Issue 3.
    target("proxy", "async req/s vs socat (1 KiB)", ratio(req("async"), req("socat")), 1.5),
    target("proxy", "worker req/s vs async (1 KiB)", ratio(req("worker"), req("async")), 0.25),
    target("proxy", "process req/s vs async (1 KiB)", ratio(req("process"), req("async")), 0.25),
    // Shown only: the same comparisons for the other cases and the untuned relay.
    info("async MiB/s vs haproxy (10 MiB)", ratio(mib("async"), mib("haproxy")), 1.0),
    info(
      "async req/s vs untuned Node (1 KiB)",
      ratio(req("async"), req("node-nagle")),
      1.0,
    ),
    info(
      "async req/s vs haproxy (1 KiB, close)",
      ratio(req("async", "1k_close"), req("haproxy", "1k_close")),
      1.0,
    ),
    info(
      "async req/s vs tuned Node (1 KiB, close)",
      ratio(req("async", "1k_close"), req("node", "1k_close")),
      1.0,
    ),
    info(
      "async req/s vs socat (1 KiB, close)",
      ratio(req("async", "1k_close"), req("socat", "1k_close")),
      1.5,
    ),
  ];
}

/**
 * The proxy part as a text table: req/s and MiB/s per case, ratios against
 * the Node relay with TCP_NODELAY, the origin's share of a core, and which
 * origin was used and why.
 */
export function proxyTable(part: ProxyPart): string {
  const s = part.settings;
  const title = `Proxy: wrk -t${s.threads} -c${s.connections} -d${s.seconds}s against a local ` +
    `origin; ratios (xNode) against the Node relay with TCP_NODELAY`;
  if (part.rows.length === 0) return `${title}\n  skipped: ${part.missing.join(", ")} missing`;
  const node = part.rows.find((r) => r.id === "node");
  const headers = ["relay"];
  for (const c of PROXY_CASES) {
    const size = c.path === "/1k" ? "1KiB" : "10MiB";
    const unit = c.path === "/1k" ? "req/s" : "MiB/s";
    headers.push(`${size}${c.close ? " close" : ""} ${unit}`, "xNode");
  }
  headers.push("p99 ms (1k)", "origin CPU% (1k)", "peak RSS MiB");
  const body = part.rows.map((r) => {
    const cells = [r.label];
    for (const c of PROXY_CASES) {
      const key = c.path === "/1k" ? "reqPerSec" : "mibPerSec";
      const value = r.cases[c.id]?.[key] ?? null;
      cells.push(formatNumber(value), formatRatio(ratio(value, node?.cases[c.id]?.[key])));
    }
    const oneK = r.cases["1k_keepalive"];
    cells.push(
      formatNumber(oneK?.p99Ms, 2),
      formatNumber(oneK?.originCpuPct),
      formatNumber(r.peakRssMiB, 1),
    );
    return cells;
  });
  const origin = part.origin ? [`origin: ${part.origin.label}: ${part.origin.why}`] : [];
  const problems = part.rows.flatMap((r) => r.errors.map((e) => `  ${r.label}: ${e}`));
  return [
    title,
    ...origin,
    textTable(headers, body),
    ...(problems.length ? ["not measured or with errors:", ...problems] : []),
  ].join("\n");
}
