#!/usr/bin/env -S deno run --allow-net --allow-run --allow-read=/proc --allow-sys=uid
/**
 * What TCP does for you, measured: the same numbered messages go over TCP
 * (to `echo_server.ts`) and over UDP (`udp_pinger.ts` to
 * `udp_echo_server.ts`) through a link that loses 10% of packets each way.
 * TCP hands back every byte, in order, only later; UDP loses some.
 *
 * Run it: `deno run --allow-net --allow-run --allow-read=/proc --allow-sys=uid lib/tcp_vs_udp.ts`
 * (as root for the real thing; add `--loopback` to force the loopback path).
 * `--allow-sys=uid` and `--allow-read=/proc` are optional: they give a
 * clearer reason when not root, and let it clear namespaces a killed run left.
 *
 * Two ways to get a lossy link, and {@linkcode compareTcpUdp} says which it took:
 *
 * - **namespaces** (root, with `ip` and `python3`): the client and the
 *   servers each get a Linux network namespace, a host of their own, joined
 *   through `lossy_bridge.py`, which drops 10% of the IPv4 packets each way.
 *   The kernel's real TCP notices and retransmits; the lab shows how many
 *   segments it resent.
 * - **loopback** (anywhere else): `lossy_relay.ts` sits between client and
 *   server. For UDP it really drops datagrams. For TCP it can only EMULATE
 *   retransmission (a "dropped" chunk arrives after a 200 ms timeout,
 *   doubling, in order), because the kernels on both sides of a user-space
 *   relay never lose anything; the lines say so.
 *
 * The same file is also the TCP half's client:
 * `deno run --allow-net lib/tcp_vs_udp.ts --tcp-client HOST:PORT --messages 20`
 * sends `message 1 of 20` ... one every `--interval` seconds, reads the
 * echoes, and prints one JSON line with what came back and when. The
 * comparison runs it inside the client's namespace, where this process
 * cannot go.
 *
 * @module
 */

import {
  CliError,
  errorMessage,
  parseCli,
  parseCount,
  parseHostPort,
  parseSeconds,
  runMain,
  UsageError,
} from "./cli.ts";
import { type Log, silentLog } from "./log.ts";
import { closeQuietly, concatBytes, connectTo, READ_BUFFER_BYTES, writeAll } from "./net.ts";
import { DEFAULT_RTO_MS, type LossyRelay, startLossyRelay } from "./lossy_relay.ts";
import {
  addVeth,
  bridgeTotals,
  ip,
  removeNamespace,
  removeStaleNamespaces,
  startInNamespace,
  startLossyBridge,
  whyNoNetns,
} from "./netns.ts";
import { type Script, startCommand } from "./scripts.ts";
import { parseFraction } from "../udp_echo_server.ts";

/** Which lossy link a comparison ran over. */
export type TcpUdpPath = "namespaces" | "loopback";

/** Options for {@linkcode compareTcpUdp}. */
export interface TcpUdpOptions {
  /** Messages sent over TCP, and pings sent over UDP. @default {20} */
  messages?: number;
  /** Fraction of packets lost each way, from 0 to below 1. @default {0.1} */
  loss?: number;
  /** Seed for the random drops, to repeat a run. @default {a random seed, reported} */
  seed?: number;
  /** Which link to use; "auto" takes namespaces where it can, else loopback. @default {"auto"} */
  path?: "auto" | TcpUdpPath;
  /** Seconds from one message (and one ping) to the next. @default {0.05} */
  intervalSeconds?: number;
  /** Seconds the pinger waits for each reply before it counts the ping lost. @default {0.3} */
  replyTimeoutSeconds?: number;
  /** Seconds the whole comparison may take before it is stopped and cleaned up. @default {20} */
  deadlineSeconds?: number;
  /** Where each line goes as it happens (they are in the report too). @default {no output} */
  log?: Log;
}

/** What the TCP half's client saw: {@linkcode sendNumberedMessages}'s result. */
export interface TcpClientRun {
  /** Messages sent. */
  sent: number;
  /** Messages echoed back whole and in order, counted from the first. */
  received: number;
  /** Whether the bytes echoed were exactly the bytes sent, in the same order. */
  intact: boolean;
  /** Bytes sent. */
  bytesSent: number;
  /** Bytes echoed back. */
  bytesReceived: number;
  /** Milliseconds to open the connection (a lost SYN or SYN-ACK costs a whole second). */
  connectMs: number;
  /** Milliseconds from sending the first message to the last echo (or to giving up). */
  timeMs: number;
  /** The slowest echo: milliseconds from sending a message to the last byte of its echo. */
  slowestMs: number;
  /** The median echo, in milliseconds: what an echo takes when nothing was lost. */
  medianMs: number;
  /** What went wrong, or null when the connection ended normally. */
  error: string | null;
}

/** What came back over TCP. */
export interface TcpResult extends TcpClientRun {
  /**
   * Segments the two kernels retransmitted (namespaces), or times the relay
   * held a chunk back as a retransmission (loopback: emulated).
   */
  retransmissions: number;
}

/** What came back over UDP, as the pinger counted it. */
export interface UdpResult {
  /** Pings sent. */
  sent: number;
  /** Replies that came back in time. */
  received: number;
  /** Pings with no reply in time. */
  lost: number;
  /** Replies that came after their timeout (counted lost, as ping does). */
  late: number;
  /** Milliseconds from the first ping to the end. */
  timeMs: number;
  /** The slowest reply that came, in milliseconds, or null when none came. */
  slowestMs: number | null;
}

/** Everything {@linkcode compareTcpUdp} found. */
export interface TcpUdpReport {
  /** The link used. */
  path: TcpUdpPath;
  /** Why that link, in words (on loopback: why not namespaces). */
  why: string;
  /** The loss each way. */
  loss: number;
  /** The seed of the random drops: pass it again to repeat the run. */
  seed: number;
  /** The TCP half. */
  tcp: TcpResult;
  /** The UDP half. */
  udp: UdpResult;
  /**
   * What the link carried, both ways and both halves: IPv4 packets
   * (namespaces), or datagrams and chunks with each emulated resend counted
   * (loopback); and how many of them it dropped.
   */
  link: { packets: number; dropped: number };
  /** Milliseconds the whole comparison took, set-up and clean-up included. */
  elapsedMs: number;
  /** The lines a lab step prints: the path, each command run, and the results. */
  lines: string[];
}

/** The subnet inside the namespaces: the client is .1, the servers are .2. */
const SUBNET = "10.213.78";
const CLIENT_IP = `${SUBNET}.1`;
const SERVER_IP = `${SUBNET}.2`;
/** Our namespaces are called `tvu-PID-N-c`, `-s` and `-br`, so stale ones can be found. */
const NS_PREFIX = "tvu";
/** The most messages one comparison sends each way (at 0.05 s apart, already over 8 minutes). */
const MAX_MESSAGES = 10_000;
/** Seconds the TCP client may take before it reports what it has. */
const TCP_CLIENT_DEADLINE_SECONDS = 8;
/** Milliseconds a started server or the bridge may take to say it is ready. */
const START_TIMEOUT_MS = 10_000;
/** A connect slower than this lost its SYN or SYN-ACK: Linux resends them after 1 s. */
const SLOW_CONNECT_MS = 900;

/** Comparisons started by this process, so two never share namespace names. */
let runs = 0;

/**
 * Why this machine cannot take the namespace path, or `null` when it can:
 * it needs Linux, root, `ip`, `python3`, and leave to add a namespace.
 *
 * @example
 * ```ts
 * import { whyNoNamespaces } from "./tcp_vs_udp.ts";
 * console.log(whyNoNamespaces() ?? "network namespaces work here");
 * ```
 */
export function whyNoNamespaces(): string | null {
  return whyNoNetns(NS_PREFIX, { python3: "python3 (for lib/lossy_bridge.py) is missing" });
}

/**
 * Sends the same numbered messages over TCP and over UDP through a link
 * that loses `loss` of the packets each way, and reports what came back.
 * Every process it started is stopped, and every namespace removed, before
 * it returns or throws; it gives up after `deadlineSeconds`.
 *
 * @example
 * ```ts
 * import { compareTcpUdp } from "./tcp_vs_udp.ts";
 * const report = await compareTcpUdp({ messages: 20, seed: 7 });
 * for (const line of report.lines) console.log(line);
 * ```
 *
 * @throws {RangeError} when `loss` is not from 0 to below 1, or `messages` not from 1 to 10,000.
 * @throws {CliError} when a server or client fails, or the deadline passes.
 */
export async function compareTcpUdp(options: TcpUdpOptions = {}): Promise<TcpUdpReport> {
  const started = performance.now();
  const run: Run = {
    messages: options.messages ?? 20,
    loss: options.loss ?? 0.1,
    seed: options.seed ?? Math.floor(Math.random() * 2 ** 31),
    interval: options.intervalSeconds ?? 0.05,
    replyTimeout: options.replyTimeoutSeconds ?? 0.3,
    lines: [],
    log: options.log ?? silentLog,
    cleanup: new Cleanup(),
  };
  if (!(run.loss >= 0 && run.loss < 1)) {
    throw new RangeError(`loss must be from 0 to below 1, got ${run.loss}`);
  }
  if (!Number.isInteger(run.messages) || run.messages < 1 || run.messages > MAX_MESSAGES) {
    throw new RangeError(
      `messages must be a whole number from 1 to ${MAX_MESSAGES}, got ${run.messages}`,
    );
  }
  const deadlineMs = (options.deadlineSeconds ?? 20) * 1000;
  const work = pickLinkAndCompare(run, options.path ?? "auto");
  let timer: ReturnType<typeof setTimeout> | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(new CliError(`the TCP/UDP comparison took over ${deadlineMs / 1000} s`)),
      deadlineMs,
    );
  });
  let report: Omit<TcpUdpReport, "elapsedMs">;
  try {
    report = await Promise.race([work, deadline]);
  } finally {
    clearTimeout(timer);
    // Stop every process and remove the namespaces, whatever happened. Then wait for the work
    // itself: with its processes gone it ends at once, and nothing of it outlives this call.
    await run.cleanup.close();
    await work.catch(() => {});
  }
  return { ...report, elapsedMs: performance.now() - started };
}

/** One comparison's settings, its lines so far, and what to undo at the end. */
interface Run {
  messages: number;
  loss: number;
  seed: number;
  interval: number;
  replyTimeout: number;
  lines: string[];
  log: Log;
  cleanup: Cleanup;
}

/** Adds a line to the report and passes it to the caller's log. */
function say(run: Run, line: string): void {
  run.lines.push(line);
  run.log(line);
}

/**
 * Undo steps, run last first (stop the processes, then remove the network
 * they ran in). Once closed, a step added late (by work the deadline cut
 * short) runs at once.
 */
class Cleanup {
  #steps: (() => Promise<unknown> | void)[] = [];
  #closed = false;

  /** Registers `step`; after {@linkcode Cleanup.close} it runs it at once and throws. */
  async add(step: () => Promise<unknown> | void): Promise<void> {
    if (this.#closed) {
      await step();
      throw new CliError("the comparison was stopped");
    }
    this.#steps.push(step);
  }

  /** Runs every step registered so far, last first; a failing step does not stop the others. */
  async run(): Promise<void> {
    for (let step = this.#steps.pop(); step; step = this.#steps.pop()) {
      try {
        await step();
      } catch {
        // Already gone: nothing left to undo.
      }
    }
  }

  /** Runs every step, and every step added from now on. */
  async close(): Promise<void> {
    this.#closed = true;
    await this.run();
  }
}

/**
 * A lossy link, ready: where the servers listen, how to run a script on the
 * client's or the servers' side, and its counters.
 */
interface Link {
  path: TcpUdpPath;
  why: string;
  /** The address the servers listen on. */
  serverHost: string;
  /** Runs `deno run --allow-net script args` on one side, as a student types it. */
  start(
    side: "client" | "server",
    script: string,
    args: string[],
    listens: boolean,
  ): Promise<Script>;
  /** Where the client must send to reach a server on `port` through the lossy link. */
  through(transport: "tcp" | "udp", port: number): Promise<string>;
  /** The TCP retransmissions so far: the kernels' (namespaces) or the relay's (loopback). */
  retransmissions(): Promise<number>;
  /** What the link carried and dropped (the namespace path stops its bridge to count). */
  totals(): Promise<{ packets: number; dropped: number }>;
}

/** Builds the link the caller asked for (or the best this machine allows), then compares. */
async function pickLinkAndCompare(
  run: Run,
  wanted: "auto" | TcpUdpPath,
): Promise<Omit<TcpUdpReport, "elapsedMs">> {
  let link: Link | undefined;
  let why = "the loopback path was asked for";
  if (wanted !== "loopback") {
    const reason = whyNoNamespaces();
    if (reason !== null && wanted === "namespaces") {
      throw new CliError(`cannot use network namespaces: ${reason}`);
    }
    if (reason === null) {
      try {
        link = await buildNamespaces(run);
      } catch (err) {
        if (wanted === "namespaces") throw err;
        // Undo the half-built network, then fall back to loopback.
        await run.cleanup.run();
        why = `building the namespaces failed (${errorMessage(err)})`;
      }
    } else {
      why = reason;
    }
  }
  link ??= startLoopback(run, why);
  return await compareOver(link, run);
}

/** The comparison proper, the same on either link. */
async function compareOver(link: Link, run: Run): Promise<Omit<TcpUdpReport, "elapsedMs">> {
  // The servers, as a student starts them: any free port, one line each.
  const serverArgs = ["--host", link.serverHost, "--port", "0", "--quiet"];
  const echo = await link.start("server", "echo_server.ts", serverArgs, true);
  const udpEcho = await link.start("server", "udp_echo_server.ts", serverArgs, true);
  const tcpTarget = await link.through("tcp", echo.port);
  const udpTarget = await link.through("udp", udpEcho.port);

  // TCP: numbered messages, one every interval, each echoed back.
  say(
    run,
    `TCP: ${run.messages} numbered messages to the echo server, one every ${run.interval} s`,
  );
  const client = await link.start("client", "lib/tcp_vs_udp.ts", [
    "--tcp-client",
    tcpTarget,
    "--messages",
    String(run.messages),
    "--interval",
    String(run.interval),
  ], false);
  const json = await client.waitFor(/^\{/, (TCP_CLIENT_DEADLINE_SECONDS + 5) * 1000);
  await client.stop();
  const tcp: TcpResult = {
    ...(JSON.parse(json) as TcpClientRun),
    retransmissions: await link.retransmissions(),
  };
  for (const line of describeTcp(tcp, link.path)) say(run, line);

  // UDP: the same number of pings, with the pinger as a student runs it.
  say(run, `UDP: ${run.messages} pings to the UDP echo server, one every ${run.interval} s`);
  const [udpHost, udpPort] = splitHostPort(udpTarget);
  const pinger = await link.start("client", "udp_pinger.ts", [
    "--host",
    udpHost,
    "--port",
    udpPort,
    "--count",
    String(run.messages),
    "--interval",
    String(run.interval),
    "--timeout",
    String(run.replyTimeout),
  ], false);
  const worstCaseMs = run.messages * Math.max(run.interval, run.replyTimeout) * 1000;
  await pinger.waitFor(/packets transmitted/, worstCaseMs + START_TIMEOUT_MS);
  await pinger.stop();
  const udp = readPingerLines(pinger.lines);
  for (const line of describeUdp(udp)) say(run, line);

  const carried = await link.totals();
  const share = carried.packets === 0 ? 0 : carried.dropped / carried.packets * 100;
  say(
    run,
    `The link dropped ${carried.dropped} of ${carried.packets} ${
      link.path === "namespaces" ? "IPv4 packets" : "datagrams and chunks"
    } (${share.toFixed(1)}%), both ways, both halves.`,
  );
  say(run, "TCP: every byte, in order, but some of it late. UDP: on time, or never.");
  return {
    path: link.path,
    why: link.why,
    loss: run.loss,
    seed: run.seed,
    tcp,
    udp,
    link: carried,
    lines: run.lines,
  };
}

/** The TCP half's lines. */
function describeTcp(tcp: TcpResult, path: TcpUdpPath): string[] {
  const lines = [];
  const whole = tcp.intact
    ? `all ${tcp.sent} came back, every byte intact and in order (${tcp.bytesReceived} B)`
    : `only ${tcp.received} of ${tcp.sent} came back whole and in order (${tcp.bytesReceived} of ${tcp.bytesSent} B)${
      tcp.error ? `: ${tcp.error}` : ""
    }`;
  lines.push(`  ${whole}, the last after ${Math.round(tcp.timeMs)} ms`);
  if (tcp.connectMs > SLOW_CONNECT_MS) {
    lines.push(
      `  connecting took ${
        Math.round(tcp.connectMs)
      } ms: a lost SYN or SYN-ACK is resent after 1 s`,
    );
  }
  const resent = path === "namespaces"
    ? `the kernels retransmitted ${tcp.retransmissions} segment(s)`
    : `the relay held chunks back ${tcp.retransmissions} time(s), as retransmissions would (emulated)`;
  // A lost segment shows as a slow echo, and holds up every echo behind it: TCP keeps order.
  lines.push(
    `  slowest echo ${Math.round(tcp.slowestMs)} ms, median ${
      tcp.medianMs.toFixed(1)
    } ms; ${resent}`,
  );
  return lines;
}

/** The UDP half's lines. */
function describeUdp(udp: UdpResult): string[] {
  const share = udp.sent === 0 ? 0 : udp.lost / udp.sent * 100;
  const slowest = udp.slowestMs === null
    ? ""
    : `; the slowest reply took ${udp.slowestMs.toFixed(2)} ms`;
  const late = udp.late > 0 ? ` (${udp.late} of them late)` : "";
  return [
    `  ${udp.received} of ${udp.sent} came back, ${udp.lost} lost${late} (${
      share.toFixed(0)
    }%), in ${Math.round(udp.timeMs)} ms${slowest}`,
    "  nothing resends a lost datagram: the pinger can only count the holes",
  ];
}

/** Reads the pinger's counts from its output lines. */
function readPingerLines(lines: readonly string[]): UdpResult {
  const summary = lines.map((l) =>
    /^(\d+) packets transmitted, (\d+) received, .* time (\d+) ms/.exec(l)
  ).find((m) => m);
  if (!summary) throw new CliError(`udp_pinger.ts printed no summary:\n${lines.join("\n")}`);
  const rtt = lines.map((l) => /^rtt min\/avg\/max\/mdev = [\d.]+\/[\d.]+\/([\d.]+)\//.exec(l))
    .find((m) => m);
  const sent = Number(summary[1]);
  const received = Number(summary[2]);
  return {
    sent,
    received,
    lost: sent - received,
    late: lines.filter((l) => l.startsWith("late reply")).length,
    timeMs: Number(summary[3]),
    slowestMs: rtt ? Number(rtt[1]) : null,
  };
}

/** A fraction as a percentage a person reads: 0.1 is "10%", 0.07 is "7%" (not 7.000000000000001). */
function percent(fraction: number): string {
  return `${Number((fraction * 100).toFixed(2))}%`;
}

/** `HOST:PORT` (IPv4 or a name) into its two parts. */
function splitHostPort(target: string): [string, string] {
  const colon = target.lastIndexOf(":");
  return [target.slice(0, colon), target.slice(colon + 1)];
}

// ---------------------------------------------------------------- the namespace path

/** Reads the TCP `RetransSegs` counter of namespace `ns` (each namespace counts its own). */
function retransmittedSegments(ns: string): number {
  const out = new Deno.Command("ip", {
    args: ["netns", "exec", ns, "cat", "/proc/net/snmp"],
    stdout: "piped",
    stderr: "null",
  }).outputSync();
  // Two "Tcp:" lines: the counters' names, then their values.
  const [names, values] = new TextDecoder().decode(out.stdout).split("\n")
    .filter((l) => l.startsWith("Tcp:")).map((l) => l.split(/\s+/));
  const at = names?.indexOf("RetransSegs") ?? -1;
  return at === -1 || !values ? 0 : Number(values[at]);
}

/**
 * Two hosts and a lossy wire: namespace `-c` (the client, 10.213.78.1) and
 * `-s` (the servers, .2), each joined by a veth pair to namespace `-br`,
 * where lossy_bridge.py carries frames between the pairs' other ends.
 */
async function buildNamespaces(run: Run): Promise<Link> {
  removeStaleNamespaces(NS_PREFIX);
  const tag = `${NS_PREFIX}-${Deno.pid}-${++runs}`;
  const ns = { client: `${tag}-c`, server: `${tag}-s`, bridge: `${tag}-br` };
  // Registered first, so it runs last: after every process in the namespaces was stopped.
  await run.cleanup.add(() => Object.values(ns).forEach(removeNamespace));
  for (const name of Object.values(ns)) ip("netns", "add", name);
  // c0 in the client, c1 at the bridge; s0 and s1 likewise.
  addVeth({ middle: ns.bridge, host: ns.client, stem: "c", address: CLIENT_IP });
  addVeth({ middle: ns.bridge, host: ns.server, stem: "s", address: SERVER_IP });
  const bridgeArgs = ["c1", "s1", "--loss", String(run.loss), "--seed", String(run.seed)];
  const bridge = await startLossyBridge(ns.bridge, bridgeArgs, START_TIMEOUT_MS);
  await run.cleanup.add(() => bridge.stop());
  await bridge.waitFor(/^bridging /);

  const why = "running as root, with ip and python3";
  say(run, `Path: network namespaces (${why}).`);
  say(
    run,
    `  The client (${ns.client}, ${CLIENT_IP}) and the servers (${ns.server}, ${SERVER_IP})`,
  );
  say(run, `  are two hosts; lib/lossy_bridge.py joins them and drops ${percent(run.loss)}`);
  say(
    run,
    `  of the IPv4 packets each way (seed ${run.seed}). The kernel's own TCP resends what is lost.`,
  );
  say(run, `$ ip netns exec ${ns.bridge} python3 lib/lossy_bridge.py ${bridgeArgs.join(" ")}`);
  let totals: { packets: number; dropped: number } | undefined;
  return {
    path: "namespaces",
    why,
    serverHost: SERVER_IP,
    async start(side, script, args, listens) {
      const where = side === "client" ? ns.client : ns.server;
      say(run, `$ ip netns exec ${where} deno run --allow-net ${script} ${args.join(" ")}`);
      const started = await startInNamespace(where, ["--allow-net"], script, args, {
        waitForListening: listens,
        timeoutMs: START_TIMEOUT_MS,
      });
      await run.cleanup.add(() => started.stop());
      return started;
    },
    through: (_transport, port) => Promise.resolve(`${SERVER_IP}:${port}`),
    retransmissions: () =>
      Promise.resolve(retransmittedSegments(ns.client) + retransmittedSegments(ns.server)),
    async totals() {
      // The bridge prints its counts as it stops.
      if (!totals) {
        await bridge.stop();
        totals = bridgeTotals(bridge.lines);
      }
      return totals;
    },
  };
}

// ---------------------------------------------------------------- the loopback path

/** Loopback: the servers on 127.0.0.1, a lossy relay in front of each. */
function startLoopback(run: Run, why: string): Link {
  const relays: LossyRelay[] = [];
  let tcpRelay: LossyRelay | undefined;
  say(run, `Path: loopback (${why}).`);
  say(
    run,
    `  lib/lossy_relay.ts sits between the client and the servers and loses ${percent(run.loss)}`,
  );
  say(
    run,
    `  each way (seed ${run.seed}). UDP datagrams are really dropped. TCP is EMULATED: no relay`,
  );
  say(run, "  in user space can make the kernel lose and resend a segment, so a chunk the relay");
  say(
    run,
    `  "drops" arrives, in order, after a retransmission timeout (${DEFAULT_RTO_MS} ms, doubling),`,
  );
  say(run, "  as a resent segment would.");
  return {
    path: "loopback",
    why,
    serverHost: "127.0.0.1",
    async start(_side, script, args, listens) {
      say(run, `$ deno run --allow-net ${script} ${args.join(" ")}`);
      const started = await startCommand(
        Deno.execPath(),
        ["run", "--quiet", "--allow-net", script, ...args],
        { waitForListening: listens, label: script, timeoutMs: START_TIMEOUT_MS },
      );
      await run.cleanup.add(() => started.stop());
      return started;
    },
    async through(transport, port) {
      const relay = await startLossyRelay({
        transport,
        target: { hostname: "127.0.0.1", port },
        loss: run.loss,
        seed: run.seed,
        log: silentLog,
      });
      await run.cleanup.add(() => relay.close());
      relays.push(relay);
      // Run in this process; the line shows the command that does the same by hand.
      if (transport === "tcp") tcpRelay = relay;
      say(
        run,
        `$ deno run --allow-net lib/lossy_relay.ts --${transport} --to 127.0.0.1:${port} --port ${relay.addr.port} --loss ${run.loss} --seed ${run.seed}`,
      );
      return `127.0.0.1:${relay.addr.port}`;
    },
    retransmissions: () =>
      Promise.resolve(tcpRelay ? tcpRelay.stats.forward.dropped + tcpRelay.stats.back.dropped : 0),
    totals() {
      let packets = 0;
      let dropped = 0;
      for (const { stats } of relays) {
        for (const way of [stats.forward, stats.back]) {
          packets += way.delivered + way.dropped;
          dropped += way.dropped;
        }
      }
      return Promise.resolve({ packets, dropped });
    },
  };
}

// ---------------------------------------------------------------- the TCP half's client

/** Options for {@linkcode sendNumberedMessages}. */
export interface TcpClientOptions {
  /** The echo server (or the relay in front of it). */
  hostname: string;
  /** Its TCP port. */
  port: number;
  /** Messages to send. @default {20} */
  messages?: number;
  /** Seconds from one message to the next. @default {0.05} */
  intervalSeconds?: number;
  /** Seconds to wait for every echo before reporting what came. @default {8} */
  deadlineSeconds?: number;
}

/**
 * Sends `message 1 of N\n` ... over one TCP connection, one every
 * interval, then half-closes; reads the echoes meanwhile, and reports
 * whether every byte came back in order, and how late.
 *
 * @example
 * ```ts
 * import { sendNumberedMessages } from "./tcp_vs_udp.ts";
 * const run = await sendNumberedMessages({ hostname: "127.0.0.1", port: 8001, messages: 5 });
 * console.log(run.intact ? "all back, in order" : `only ${run.received} back`);
 * ```
 *
 * @throws {CliError} when the connection cannot be opened.
 */
export async function sendNumberedMessages(options: TcpClientOptions): Promise<TcpClientRun> {
  const count = options.messages ?? 20;
  const intervalMs = (options.intervalSeconds ?? 0.05) * 1000;
  const deadlineSeconds = options.deadlineSeconds ?? TCP_CLIENT_DEADLINE_SECONDS;
  const messages = Array.from(
    { length: count },
    (_, i) => new TextEncoder().encode(`message ${i + 1} of ${count}\n`),
  );
  // Echo i is complete once this many bytes have come back.
  const ends: number[] = [];
  for (const m of messages) ends.push((ends.at(-1) ?? 0) + m.length);

  const begin = performance.now();
  const conn = await connectTo(options.hostname, options.port, deadlineSeconds);
  const connectMs = performance.now() - begin;
  let error: string | null = null;
  const fail = (err: unknown) => {
    error ??= errorMessage(err);
    closeQuietly(conn); // ends the other loop too
  };
  // At the deadline, stop waiting and report what came.
  const timer = setTimeout(
    () => fail(`not every echo came back within ${deadlineSeconds} s`),
    Math.max(0, deadlineSeconds * 1000 - connectMs),
  );

  const firstSend = performance.now();
  const sentAt: number[] = [];
  const echoedAt: number[] = [];
  const echoed: Uint8Array[] = [];

  // Send each message at its time, then say we are done (the server half-closes after the last echo).
  async function send(): Promise<void> {
    for (let i = 0; i < count; i++) {
      const wait = firstSend + i * intervalMs - performance.now();
      if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
      sentAt.push(performance.now());
      await writeAll(conn, messages[i]);
    }
    await conn.closeWrite();
  }

  // Read the echoes until the server is done, noting when each message's last byte arrived.
  async function receive(): Promise<void> {
    const buffer = new Uint8Array(READ_BUFFER_BYTES);
    let total = 0;
    while (true) {
      const n = await conn.read(buffer);
      if (n === null) return;
      echoed.push(buffer.slice(0, n));
      total += n;
      while (echoedAt.length < count && total >= ends[echoedAt.length]) {
        echoedAt.push(performance.now());
      }
    }
  }

  await Promise.all([send().catch(fail), receive().catch(fail)]);
  clearTimeout(timer);
  closeQuietly(conn);

  const got = concatBytes(echoed);
  let received = 0;
  for (let at = 0; received < count; received++) {
    const m = messages[received];
    if (at + m.length > got.length || !sameBytes(got.subarray(at, at + m.length), m)) break;
    at += m.length;
  }
  const latencies = echoedAt.map((t, i) => t - sentAt[i]);
  return {
    sent: sentAt.length,
    received,
    intact: received === count && got.length === ends[count - 1],
    bytesSent: ends[sentAt.length - 1] ?? 0,
    bytesReceived: got.length,
    connectMs,
    timeMs: (echoedAt.length === count ? echoedAt[count - 1] : performance.now()) - firstSend,
    slowestMs: latencies.length ? Math.max(...latencies) : 0,
    medianMs: latencies.length ? latencies.toSorted((a, b) => a - b)[latencies.length >> 1] : 0,
    error,
  };
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

// ---------------------------------------------------------------- the command line

const USAGE = `usage: deno run --allow-net --allow-run lib/tcp_vs_udp.ts [options]
       deno run --allow-net lib/tcp_vs_udp.ts --tcp-client HOST:PORT [--messages N] [--interval S]
  --messages N          messages over TCP and pings over UDP (default 20)
  --loss P              fraction lost each way, 0 to below 1 (default 0.1)
  --seed N              seed for the random drops, to repeat a run (default: random)
  --interval S          seconds between messages (default 0.05)
  --loopback            use the loopback relay even where namespaces would work
  --tcp-client HOST:PORT  only the TCP half's client: print one JSON line with what came back
  -h, --help            show this help`;

async function main(): Promise<number> {
  const { values } = parseCli(Deno.args, USAGE, {
    messages: { type: "string", default: "20" },
    loss: { type: "string", default: "0.1" },
    seed: { type: "string" },
    interval: { type: "string", default: "0.05" },
    loopback: { type: "boolean", default: false },
    "tcp-client": { type: "string" },
  });
  const messages = parseCount(values.messages as string, "--messages", 1, MAX_MESSAGES);
  const intervalSeconds = parseSeconds(values.interval as string, "--interval");
  if (values["tcp-client"] !== undefined) {
    const { hostname, port } = parseHostPort(values["tcp-client"] as string, "--tcp-client");
    console.log(JSON.stringify(
      await sendNumberedMessages({ hostname, port, messages, intervalSeconds }),
    ));
    return 0;
  }
  const loss = parseFraction(values.loss as string, "--loss");
  if (loss === 1) {
    throw new UsageError("--loss must be below 1: over TCP nothing would ever arrive");
  }
  const report = await compareTcpUdp({
    messages,
    loss,
    seed: values.seed === undefined ? undefined : parseCount(values.seed as string, "--seed", 0),
    intervalSeconds,
    path: values.loopback ? "loopback" : "auto",
    log: (line) => console.log(line),
  });
  console.log(`(${(report.elapsedMs / 1000).toFixed(1)} s in all, set-up and clean-up included)`);
  return 0;
}

if (import.meta.main) runMain(USAGE, main);
