#!/usr/bin/env -S deno run --allow-net
/**
 * A UDP pinger (the Kurose & Ross socket assignment): sends numbered,
 * timestamped pings to a UDP echo server, waits a while for each reply, and
 * prints the round-trip time or "timed out", then ping's two summary lines.
 *
 * Run it: `deno run --allow-net udp_pinger.ts` (10 pings to 127.0.0.1:8001).
 * Try it: start `deno run --allow-net udp_echo_server.ts --loss 0.3`, then
 * `deno run --allow-net udp_pinger.ts --count 20 --interval 0.2` shows about
 * 30% packet loss.
 *
 * Each ping is the text `PING seq=3 t=1732912345678.123` (the send time in
 * milliseconds since 1970), padded with spaces to `--size` bytes. The server
 * sends it back unchanged, so the round trip is the arrival time minus the
 * time written in the reply. UDP promises nothing: a reply may never come,
 * come after its timeout ("late reply", not counted), or come twice
 * ("duplicate reply", not counted again).
 *
 * A port nobody listens on: with a connected UDP socket, Linux turns the
 * ICMP "port unreachable" the host sends back into ECONNREFUSED. Deno's
 * `node:dgram` cannot show it: its `connect()` only remembers the address (the
 * socket stays unconnected) and it reports no ICMP errors, and
 * `Deno.listenDatagram` (unstable) is unconnected too. So a closed port looks
 * exactly like a lost reply: every ping times out, and the last line says
 * that nothing answered. `node:dgram` is used, as in `udp_echo_server.ts`,
 * because it needs only `--allow-net` on stable Deno.
 *
 * @module
 */

import dgram from "node:dgram";
import { lookup } from "node:dns/promises";
import {
  CliError,
  parseCli,
  parseCount,
  parseHost,
  parseSeconds,
  parseTargetPort,
  runMain,
} from "./lib/cli.ts";
import { type Log, preview, printLog } from "./lib/log.ts";
import { formatAddr } from "./lib/net.ts";
import { MAX_UDP_PAYLOAD } from "./udp_echo_server.ts";

/** The most pings one run sends. */
export const MAX_PINGS = 100_000;

/** Options for {@linkcode ping}. */
export interface PingOptions {
  /** Echo server's host name or address. @default {"127.0.0.1"} */
  hostname?: string;
  /** Its UDP port. @default {8001} */
  port?: number;
  /** Pings to send, 1 to {@linkcode MAX_PINGS}. @default {10} */
  count?: number;
  /** Seconds from one ping to the next (longer when a wait for a reply runs past it). @default {1} */
  intervalSeconds?: number;
  /** Seconds to wait for each reply. @default {1} */
  timeoutSeconds?: number;
  /** Pad each ping with spaces to this many bytes (never shorter than its text). @default {0} */
  size?: number;
  /** Where the per-ping lines go. @default {console.log} */
  log?: Log;
}

/** What became of one ping. */
export interface PingResult {
  /** Its sequence number, from 1. */
  seq: number;
  /** Round-trip time in milliseconds, or null when it timed out. */
  rttMs: number | null;
}

/** ping's summary: the numbers behind its last two lines. */
export interface PingSummary {
  /** Pings sent. */
  transmitted: number;
  /** Pings answered within their timeout (each counted once). */
  received: number;
  /** Percentage of pings not answered in time. */
  lossPercent: number;
  /** Milliseconds from the first ping to the end. */
  timeMs: number;
  /** Round-trip statistics in milliseconds, or null when nothing came back. */
  rtt: { min: number; avg: number; max: number; mdev: number } | null;
  /** Replies that came after their timeout. */
  late: number;
  /** Replies to a ping already answered. */
  duplicates: number;
}

/** Everything {@linkcode ping} found. */
export interface PingReport {
  /** The server as resolved, e.g. `127.0.0.1:8001`. */
  target: string;
  /** One entry per ping, in order. */
  results: PingResult[];
  /** The totals. */
  summary: PingSummary;
}

/** A ping's text: `PING seq=N t=MS`. */
const PING_TEXT = /^PING seq=(\d+) t=(\d+(?:\.\d+)?)/;

/**
 * Builds ping number `seq`, sent at `sentAt` (ms since 1970), padded with
 * spaces to `size` bytes.
 *
 * @example
 * ```ts
 * import { buildPing } from "./udp_pinger.ts";
 * new TextDecoder().decode(buildPing(3, 1732912345678.123)); // "PING seq=3 t=1732912345678.123"
 * ```
 */
export function buildPing(seq: number, sentAt: number, size = 0): Uint8Array {
  return new TextEncoder().encode(`PING seq=${seq} t=${sentAt.toFixed(3)}`.padEnd(size, " "));
}

/**
 * Pings a UDP echo server `count` times and reports each ping and the
 * totals; lines go to `log` as they happen.
 *
 * @example
 * ```ts
 * import { ping } from "./udp_pinger.ts";
 * import { startUdpEchoServer } from "./udp_echo_server.ts";
 * await using server = await startUdpEchoServer({ quiet: true });
 * const { summary } = await ping({ port: server.addr.port, count: 3, intervalSeconds: 0.1 });
 * console.log(`${summary.received} of ${summary.transmitted} came back`);
 * ```
 *
 * @throws {CliError} when the host name does not resolve.
 */
export async function ping(options: PingOptions = {}): Promise<PingReport> {
  const hostname = options.hostname ?? "127.0.0.1";
  const port = options.port ?? 8001;
  const count = options.count ?? 10;
  const intervalMs = (options.intervalSeconds ?? 1) * 1000;
  const timeoutMs = (options.timeoutSeconds ?? 1) * 1000;
  const log = options.log ?? printLog;
  if (!Number.isInteger(count) || count < 1 || count > MAX_PINGS) {
    throw new RangeError(`count must be a whole number from 1 to ${MAX_PINGS}, got ${count}`);
  }

  // Resolve the name first, so a typo is one clear line, and so we know which socket to open.
  let address: string;
  let family: number;
  try {
    ({ address, family } = await lookup(hostname));
  } catch (err) {
    if (err instanceof Deno.errors.NotCapable) {
      throw new CliError(`no permission to look up "${hostname}": run with --allow-net`);
    }
    throw new CliError(`cannot resolve host "${hostname}" (a typo, or no DNS here?)`);
  }
  const target = formatAddr({ hostname: address, port });
  log(`PING ${target} (udp): ${count} pings, one every ${intervalMs / 1000} s`);

  // The handout's clientSocket = socket(AF_INET, SOCK_DGRAM): no connection to set up.
  const socket = dgram.createSocket(family === 6 ? "udp6" : "udp4");
  const results: PingResult[] = [];
  const answered = new Set<number>();
  let late = 0;
  let duplicates = 0;
  // The ping we are waiting for, and how to stop waiting when its reply comes.
  let waiting: { seq: number; done: () => void } | undefined;

  socket.on("message", (data: Uint8Array, sender: dgram.RemoteInfo) => {
    const arrived = performance.timeOrigin + performance.now();
    const from = formatAddr({ hostname: sender.address, port: sender.port });
    const match = PING_TEXT.exec(new TextDecoder().decode(data.subarray(0, 64)));
    const seq = match ? Number(match[1]) : 0;
    if (!match || seq < 1 || seq > results.length + (waiting ? 1 : 0)) {
      log(`unexpected reply from ${from}: ${preview(data)}`);
      return;
    }
    const rtt = arrived - Number(match[2]);
    if (answered.has(seq)) {
      duplicates++;
      log(`duplicate reply from ${from}: seq=${seq} time=${rtt.toFixed(2)} ms (not counted)`);
    } else if (waiting?.seq === seq) {
      answered.add(seq);
      results.push({ seq, rttMs: rtt });
      log(`reply from ${from}: seq=${seq} time=${rtt.toFixed(2)} ms`);
      waiting.done();
    } else {
      // An earlier ping, already given up on: it is reported, but stays lost.
      answered.add(seq);
      late++;
      log(`late reply from ${from}: seq=${seq} time=${rtt.toFixed(2)} ms (after its timeout)`);
    }
  });
  socket.on("error", (err) => log(`udp socket error: ${err.message}`));

  const started = performance.now();
  try {
    for (let seq = 1; seq <= count; seq++) {
      const due = started + (seq - 1) * intervalMs;
      await sleep(due - performance.now());
      // Wait for this ping's reply or its timeout, whichever comes first.
      let timer: ReturnType<typeof setTimeout> | undefined;
      const replied = await new Promise<boolean>((resolve) => {
        waiting = { seq, done: () => resolve(true) };
        timer = setTimeout(() => resolve(false), timeoutMs);
        // sendto(): the address goes with every datagram.
        socket.send(
          buildPing(seq, performance.timeOrigin + performance.now(), options.size),
          port,
          address,
          (err) => {
            if (err) log(`seq=${seq} not sent: ${err.message}`);
          },
        );
      });
      clearTimeout(timer);
      waiting = undefined;
      if (!replied) {
        results.push({ seq, rttMs: null });
        log(`seq=${seq} timed out`);
      }
    }
  } finally {
    await new Promise<void>((resolve) => socket.close(() => resolve()));
  }
  const summary = summarize(results, performance.now() - started);
  return { target, results, summary: { ...summary, late, duplicates } };
}

/** Pauses for `ms` milliseconds (none when `ms` is not positive). */
function sleep(ms: number): Promise<void> {
  return ms > 0 ? new Promise((resolve) => setTimeout(resolve, ms)) : Promise.resolve();
}

/**
 * ping's totals from the per-ping results: loss, and the round trips' min,
 * average, max and mean deviation (`mdev`, the standard deviation, as ping
 * computes it).
 *
 * @example
 * ```ts
 * import { summarize } from "./udp_pinger.ts";
 * summarize([{ seq: 1, rttMs: 1 }, { seq: 2, rttMs: null }], 1000).lossPercent; // 50
 * ```
 */
export function summarize(
  results: readonly PingResult[],
  timeMs: number,
): Omit<PingSummary, "late" | "duplicates"> {
  const rtts = results.flatMap((r) => r.rttMs === null ? [] : [r.rttMs]);
  const transmitted = results.length;
  const received = rtts.length;
  const lossPercent = transmitted === 0 ? 0 : (transmitted - received) / transmitted * 100;
  if (received === 0) return { transmitted, received, lossPercent, timeMs, rtt: null };
  const avg = rtts.reduce((a, b) => a + b, 0) / received;
  const meanSquare = rtts.reduce((a, b) => a + b * b, 0) / received;
  return {
    transmitted,
    received,
    lossPercent,
    timeMs,
    rtt: {
      min: Math.min(...rtts),
      avg,
      max: Math.max(...rtts),
      mdev: Math.sqrt(Math.max(0, meanSquare - avg * avg)),
    },
  };
}

/**
 * ping's two summary lines (the second only when something came back).
 *
 * @example
 * ```ts
 * import { formatSummary, summarize } from "./udp_pinger.ts";
 * formatSummary(summarize([{ seq: 1, rttMs: 0.5 }], 3));
 * // ["1 packets transmitted, 1 received, 0% packet loss, time 3 ms",
 * //  "rtt min/avg/max/mdev = 0.500/0.500/0.500/0.000 ms"]
 * ```
 */
export function formatSummary(summary: Omit<PingSummary, "late" | "duplicates">): string[] {
  const loss = Number(summary.lossPercent.toFixed(1));
  const lines = [
    `${summary.transmitted} packets transmitted, ${summary.received} received, ${loss}% packet loss, time ${
      Math.round(summary.timeMs)
    } ms`,
  ];
  const rtt = summary.rtt;
  if (rtt) {
    const ms = [rtt.min, rtt.avg, rtt.max, rtt.mdev].map((x) => x.toFixed(3)).join("/");
    lines.push(`rtt min/avg/max/mdev = ${ms} ms`);
  }
  return lines;
}

const USAGE = `usage: deno run --allow-net udp_pinger.ts [options]
  --host HOST     echo server's host (default 127.0.0.1)
  --port N        its UDP port (default 8001)
  --count N       pings to send, 1 to ${MAX_PINGS} (default 10)
  --interval S    seconds between pings (default 1)
  --timeout S     seconds to wait for each reply (default 1)
  --size N        pad each ping to N bytes, up to ${MAX_UDP_PAYLOAD} (default: no padding)
  -h, --help      show this help`;

async function main(): Promise<number> {
  const { values } = parseCli(Deno.args, USAGE, {
    host: { type: "string", default: "127.0.0.1" },
    port: { type: "string", default: "8001" },
    count: { type: "string", default: "10" },
    interval: { type: "string", default: "1" },
    timeout: { type: "string", default: "1" },
    size: { type: "string", default: "0" },
  });
  const options: PingOptions = {
    hostname: parseHost(values.host as string, "--host"),
    port: parseTargetPort(values.port as string, "--port"),
    count: parseCount(values.count as string, "--count", 1, MAX_PINGS),
    intervalSeconds: parseSeconds(values.interval as string, "--interval"),
    timeoutSeconds: parseSeconds(values.timeout as string, "--timeout"),
    size: parseCount(values.size as string, "--size", 0, MAX_UDP_PAYLOAD),
  };
  const report = await ping({
    ...options,
    log: (line) => console.log(line),
  });
  console.log(`--- ${report.target} udp ping statistics ---`);
  for (const line of formatSummary(report.summary)) console.log(line);
  if (report.summary.received === 0) {
    // A closed port and a silent server look the same from here (see the header).
    console.error(
      `error: no reply from ${report.target}: is a UDP echo server running there? (a closed UDP port gives no error this client can see)`,
    );
    return 1;
  }
  return 0;
}

if (import.meta.main) runMain(USAGE, main);
