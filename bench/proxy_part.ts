/**
 * The benchmark's proxy part: `wrk` against a local origin (a 1 KiB and a
 * 10 MiB file), with keep-alive and with `Connection: close`, directly and
 * through proxy_server.ts in each mode, a socat relay and a plain Node `net`
 * relay. The origin, every relay and wrk each run in a process of their own.
 *
 * @module
 */

import { errorMessage } from "../lib/cli.ts";
import { MODES } from "../lib/concurrency.ts";
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
}

/** One relay's (or the direct path's) figures. */
export interface ProxyRow {
  /** direct, node, socat, async, worker, process. */
  id: string;
  label: string;
  ours: boolean;
  command: string;
  /** Figures by case id. */
  cases: Record<string, WrkFigures>;
  /** Peak memory of the relay with its children while wrk ran (null for direct). */
  peakRssMiB: number | null;
  errors: string[];
}

/** The proxy part of results.json. */
export interface ProxyPart {
  date: string;
  settings: ProxySettings;
  /** Sizes of the origin's files. */
  files: Record<string, number>;
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
  unavailable?: string;
}

function specs(tools: Tools, origin: string, missing: string[]): Spec[] {
  const list: Spec[] = [{ id: "direct", label: "direct (no relay)", ours: false, command: null }];
  if (tools.node) {
    list.push({
      id: "node",
      label: "Node net relay",
      ours: false,
      command: [tools.node, "bench/node_relay.mjs", "0", ...origin.split(":")],
    });
  } else missing.push("node");
  if (tools.socat) {
    list.push({
      id: "socat",
      label: "socat fork",
      ours: false,
      ...socatFork(tools.socat, `TCP:${origin}`),
    });
  } else missing.push("socat");
  const ready = exists("proxy_server.ts");
  for (const mode of MODES) {
    list.push({
      id: mode,
      label: `ours: ${mode}`,
      ours: true,
      command: ourServerCommand("proxy_server.ts", mode, ["--upstream", origin]),
      unavailable: ready ? undefined : "proxy_server.ts is not yet available",
    });
  }
  return list;
}

function exists(relative: string): boolean {
  try {
    return Deno.statSync(new URL(`../${relative}`, import.meta.url)).isFile;
  } catch {
    return false;
  }
}

/** Runs wrk once against `port`. */
async function wrk(
  wrkPath: string,
  port: number,
  path: string,
  close: boolean,
  settings: ProxySettings,
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
    `http://127.0.0.1:${port}${path}`,
  ]);
  const figures = parseWrk(run.stdout);
  if (run.code !== 0 || figures.reqPerSec === null) {
    throw new Error(`wrk exited ${run.code}: ${(run.stderr || run.stdout).trim().split("\n")[0]}`);
  }
  return figures;
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
  const origin = await spawnServer("origin", [
    Deno.execPath(),
    "run",
    "--allow-net",
    "bench/origin_server.ts",
    "--port",
    "0",
  ]);
  const upstream = `127.0.0.1:${origin.port}`;
  const list = specs(tools, upstream, part.missing);
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
  const servers: (RunningServer | null)[] = [];
  try {
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
        if (spec.command && !server) continue;
        const sampler = server ? await RssSampler.start(server.pid, settings.sampleMs) : null;
        try {
          const figures = await wrk(
            tools.wrk,
            server?.port ?? origin.port,
            c.path,
            c.close,
            settings,
          );
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
    await origin.stop();
  }
  part.targets = proxyTargets(part.rows);
  return part;
}

/** The goals of issue 3, as ratios in this run. */
function proxyTargets(rows: ProxyRow[]): Target[] {
  const figure = (id: string, c: string, key: "reqPerSec" | "mibPerSec") =>
    rows.find((r) => r.id === id)?.cases[c]?.[key] ?? null;
  const req = (id: string, c = "1k_keepalive") => figure(id, c, "reqPerSec");
  return [
    target("proxy", "async req/s vs Node relay (1 KiB)", ratio(req("async"), req("node")), 1.0),
    target("proxy", "async req/s vs socat (1 KiB)", ratio(req("async"), req("socat")), 1.5),
    target(
      "proxy",
      "async MiB/s vs Node relay (10 MiB)",
      ratio(
        figure("async", "10m_keepalive", "mibPerSec"),
        figure("node", "10m_keepalive", "mibPerSec"),
      ),
      1.5,
    ),
    target("proxy", "worker req/s vs async (1 KiB)", ratio(req("worker"), req("async")), 0.25),
    target("proxy", "process req/s vs async (1 KiB)", ratio(req("process"), req("async")), 0.25),
    target(
      "proxy",
      "async req/s vs Node relay (1 KiB, close)",
      ratio(req("async", "1k_close"), req("node", "1k_close")),
      1.0,
      "x",
      true,
    ),
    target(
      "proxy",
      "async req/s vs socat (1 KiB, close)",
      ratio(req("async", "1k_close"), req("socat", "1k_close")),
      1.5,
      "x",
      true,
    ),
  ];
}

/** The proxy part as a text table: req/s and MiB/s per case, ratios against the Node relay. */
export function proxyTable(part: ProxyPart): string {
  const s = part.settings;
  const title = `Proxy: wrk -t${s.threads} -c${s.connections} -d${s.seconds}s against a local ` +
    `origin; ratios against the Node net relay`;
  if (part.rows.length === 0) return `${title}\n  skipped: ${part.missing.join(", ")} missing`;
  const node = part.rows.find((r) => r.id === "node");
  const headers = ["relay"];
  for (const c of PROXY_CASES) {
    const size = c.path === "/1k" ? "1KiB" : "10MiB";
    const unit = c.path === "/1k" ? "req/s" : "MiB/s";
    headers.push(`${size}${c.close ? " close" : ""} ${unit}`, "xNode");
  }
  headers.push("p99 ms (1k)", "peak RSS MiB");
  const body = part.rows.map((r) => {
    const cells = [r.label];
    for (const c of PROXY_CASES) {
      const key = c.path === "/1k" ? "reqPerSec" : "mibPerSec";
      const value = r.cases[c.id]?.[key] ?? null;
      cells.push(formatNumber(value), formatRatio(ratio(value, node?.cases[c.id]?.[key])));
    }
    cells.push(formatNumber(r.cases["1k_keepalive"]?.p99Ms, 2), formatNumber(r.peakRssMiB, 1));
    return cells;
  });
  const problems = part.rows.flatMap((r) => r.errors.map((e) => `  ${r.label}: ${e}`));
  return [title, textTable(headers, body), ...(problems.length ? ["problems:", ...problems] : [])]
    .join("\n");
}
