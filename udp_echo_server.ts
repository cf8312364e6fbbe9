#!/usr/bin/env -S deno run --allow-net
/**
 * A UDP echo server: every datagram that arrives goes straight back to the
 * address it came from, unchanged, one datagram for one (an empty one too).
 *
 * Run it: `deno run --allow-net udp_echo_server.ts` (UDP port 8001).
 * Try it: `echo -n Foobar | nc -u -w1 localhost 8001` prints `Foobar`.
 * Lose some on purpose: `--loss 0.3` drops 30% of datagrams at random, like
 * the lossy server of Kurose & Ross's UDP pinger assignment; `udp_pinger.ts`
 * is the client that measures it.
 *
 * A lesson in the port number: 8001 is also the TCP echo server's port, and
 * both can run at once. A port belongs to a protocol: TCP port 8001 and UDP
 * port 8001 are two different sockets that never see each other's traffic.
 *
 * Unlike TCP there is no connection: no accept(), no per-client socket, no
 * end-of-stream. One socket receives every client's datagrams, each with its
 * sender's address, and replies to exactly that address, so replies to many
 * clients at once never mix.
 *
 * Why `node:dgram` and not `Deno.listenDatagram`: Deno's own UDP API still
 * needs the `--unstable-net` flag, which may change between Deno releases;
 * `node:dgram` is stable in Deno and needs only `--allow-net`, so the run line
 * stays the same as the TCP server's.
 *
 * @module
 */

import dgram from "node:dgram";
import {
  CliError,
  exitOnSignal,
  parseCli,
  parseHost,
  parsePort,
  runMain,
  UsageError,
} from "./lib/cli.ts";
import { type Log, preview, printLog, silentLog } from "./lib/log.ts";
import { formatAddr } from "./lib/net.ts";

/** The largest UDP payload over IPv4: 65,535 minus the 8-byte UDP and 20-byte IP headers. */
export const MAX_UDP_PAYLOAD = 65_507; // bytes

/** Options for {@linkcode startUdpEchoServer}. */
export interface UdpEchoServerOptions {
  /** Address to listen on; an IPv6 address (with ":") opens an IPv6 socket. @default {"127.0.0.1"} */
  hostname?: string;
  /** UDP port; 0 asks the OS for a free one. @default {0} */
  port?: number;
  /** Fraction of datagrams to drop at random, from 0 to 1. @default {0} */
  loss?: number;
  /**
   * Decides which datagrams to drop instead of `loss`: called with each
   * datagram's number (1 for the first), drops it when it returns true. For
   * tests that need the same losses on every run. @default {undefined}
   */
  drop?: (n: number) => boolean;
  /** Log only errors: no line per datagram. @default {false} */
  quiet?: boolean;
  /** Where lines go. @default {console.log} */
  log?: Log;
}

/** Counters of a running {@linkcode UdpEchoServer}. */
export interface UdpEchoStats {
  /** Datagrams received. */
  received: number;
  /** Datagrams sent back. */
  echoed: number;
  /** Datagrams dropped on purpose (`loss` or `drop`). */
  dropped: number;
}

/** A running UDP echo server. */
export interface UdpEchoServer extends AsyncDisposable {
  /** The address actually bound (the real port when 0 was asked for). */
  readonly addr: Deno.NetAddr;
  /** Live counters. */
  readonly stats: UdpEchoStats;
  /** Closes the socket; resolves once it is closed. Safe to call twice. */
  close(): Promise<void>;
}

/**
 * Starts a UDP echo server and resolves once its socket is bound.
 *
 * @example
 * ```ts
 * import { startUdpEchoServer } from "./udp_echo_server.ts";
 * await using server = await startUdpEchoServer({ quiet: true });
 * console.log(`echoing datagrams on UDP port ${server.addr.port}`);
 * ```
 *
 * @throws {RangeError} when `loss` is not a number from 0 to 1.
 * @throws {CliError} when the address cannot be bound (port in use, no such address).
 */
export async function startUdpEchoServer(
  options: UdpEchoServerOptions = {},
): Promise<UdpEchoServer> {
  const hostname = options.hostname ?? "127.0.0.1";
  const port = options.port ?? 0;
  const loss = options.loss ?? 0;
  if (!(loss >= 0 && loss <= 1)) throw new RangeError(`loss must be from 0 to 1, got ${loss}`);
  const drop = options.drop ?? (() => Math.random() < loss);
  const log = options.log ?? printLog;
  const quiet = options.quiet ?? false;
  const say = quiet ? silentLog : log;
  const stats: UdpEchoStats = { received: 0, echoed: 0, dropped: 0 };

  // The handout's socket(AF_INET, SOCK_DGRAM) and bind(): one socket for every client. The
  // kernel's default receive queue is kept: asking node:dgram for a larger one (1 MiB) cut the
  // datagrams echoed per second to a third under Deno 2.9.6.
  const socket = dgram.createSocket({ type: hostname.includes(":") ? "udp6" : "udp4" });
  try {
    await new Promise<void>((resolve, reject) => {
      socket.once("error", reject);
      socket.bind(port, hostname, () => {
        socket.off("error", reject);
        resolve();
      });
    });
  } catch (err) {
    socket.close();
    throw explainBindError(err, hostname, port);
  }
  const bound = socket.address();
  const addr: Deno.NetAddr = { transport: "udp", hostname: bound.address, port: bound.port };

  // The handout's `while True: data, addr = recvfrom(); sendto(data, addr)`, as an event.
  socket.on("message", (data: Uint8Array, sender: dgram.RemoteInfo) => {
    stats.received++;
    const who = () => formatAddr({ hostname: sender.address, port: sender.port });
    if (drop(stats.received)) {
      stats.dropped++;
      if (!quiet) say(`${who()} sent ${data.length} B: ${preview(data)} dropped`);
      return;
    }
    // Under --quiet no line is built at all: this runs once per datagram.
    if (!quiet) say(`${who()} sent ${data.length} B: ${preview(data)}`);
    // Reply to the sender's own address: that is all that keeps clients apart.
    socket.send(data, sender.port, sender.address, (err) => {
      if (err) log(`cannot echo to ${who()}: ${err.message}`);
      else stats.echoed++;
    });
  });
  // A failed send to one client must not stop the server: log it and keep serving.
  socket.on("error", (err) => log(`udp socket error: ${err.message}`));

  let closing: Promise<void> | undefined;
  const close = () => {
    closing ??= new Promise<void>((resolve) => socket.close(() => resolve()));
    return closing;
  };
  return { addr, stats, close, [Symbol.asyncDispose]: close };
}

/** One line a student can act on for a failed bind(). */
function explainBindError(err: unknown, hostname: string, port: number): Error {
  const where = formatAddr({ hostname, port });
  const code = (err as { code?: string })?.code;
  if (err instanceof Deno.errors.NotCapable) {
    return new CliError(`no permission to listen on ${where}: run with --allow-net`);
  }
  if (code === "EADDRINUSE") {
    return new CliError(
      `UDP port ${port} is already in use on ${hostname} (another server running?)`,
    );
  }
  if (code === "EADDRNOTAVAIL") {
    return new CliError(`cannot listen on ${where}: this machine has no such address`);
  }
  if (code === "EACCES") {
    return new CliError(`cannot listen on ${where}: ports below 1024 need root`);
  }
  return new CliError(`cannot listen on UDP ${where}: ${(err as Error)?.message ?? err}`);
}

/**
 * Reads a fraction from 0 to 1 in plain decimals (`0`, `0.25`, `.5`, `1`).
 *
 * @example
 * ```ts
 * import { parseFraction } from "./udp_echo_server.ts";
 * parseFraction("0.3", "--loss"); // 0.3
 * ```
 *
 * @throws {UsageError} on anything else, quoting the value.
 */
export function parseFraction(text: string, flag: string): number {
  const value = Number(text);
  if (!/^(?:\d+(?:\.\d*)?|\.\d+)$/.test(text) || value > 1) {
    throw new UsageError(
      `${flag} must be a fraction from 0 to 1 (0.25 drops one datagram in four), got "${text}"`,
    );
  }
  return value;
}

const USAGE = `usage: deno run --allow-net udp_echo_server.ts [options]
  --host HOST   address to listen on (default 127.0.0.1; ::1 for IPv6)
  --port N      UDP port (default 8001; 0 picks a free one)
  --loss P      drop a fraction P of datagrams at random, 0 to 1 (default 0)
  --quiet       no line per datagram
  -h, --help    show this help`;

async function main(): Promise<void> {
  const { values } = parseCli(Deno.args, USAGE, {
    host: { type: "string", default: "127.0.0.1" },
    port: { type: "string", default: "8001" },
    loss: { type: "string", default: "0" },
    quiet: { type: "boolean", default: false },
  });
  const loss = parseFraction(values.loss as string, "--loss");
  const server = await startUdpEchoServer({
    hostname: parseHost(values.host as string, "--host"),
    port: parsePort(values.port as string, "--port"),
    loss,
    quiet: values.quiet as boolean,
  });
  // Ctrl-C closes the socket and exits 0.
  exitOnSignal(() => server.close());
  console.log(`udp echo server listening on ${formatAddr(server.addr)} (udp)`);
  if (loss > 0) console.log(`dropping ${Number((loss * 100).toFixed(2))}% of datagrams at random`);
  if (!values.quiet) {
    console.log(`try: echo -n Foobar | nc -u -w1 ${server.addr.hostname} ${server.addr.port}`);
  }
}

if (import.meta.main) runMain(USAGE, main);
