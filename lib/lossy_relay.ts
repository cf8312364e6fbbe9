#!/usr/bin/env -S deno run --allow-net
/**
 * A lossy link on loopback: a relay that sits between a client and a server
 * and loses a fraction of what passes (10% unless told), each way on its own.
 * The TCP-vs-UDP lab step uses it where it cannot build network namespaces
 * (not root, or no `ip`); where it can, `lossy_bridge.py` loses real packets.
 *
 * Run it: `deno run --allow-net lib/lossy_relay.ts --udp --to 127.0.0.1:8001 --port 9001`
 * Try it: start `udp_echo_server.ts`, then
 * `deno run --allow-net udp_pinger.ts --port 9001 --count 20 --interval 0.1`
 * shows about 19% loss (10% of the pings, then 10% of the replies).
 *
 * UDP: each datagram is forwarded or dropped, at random. That is exactly what
 * a lossy network does to UDP, and the pinger sees the holes.
 *
 * TCP: a relay in user space cannot lose a packet the kernel's TCP would
 * notice. It sits between two TCP connections, each of which delivers every
 * byte on its own, so the kernels never retransmit anything. What the relay
 * can do honestly is show what the application on the far end sees on a
 * lossy link: a chunk it "drops" arrives anyway, only later, after a
 * retransmission timeout (200 ms, doubled each time the resent chunk is
 * "dropped" again, as Linux's retransmission timer does), and everything
 * behind it waits, so the bytes stay in order. This EMULATES TCP's
 * retransmission; it is not the kernel doing it, and the lab step says so.
 * (A real Linux TCP often resends sooner, after a tail-loss probe or
 * duplicate ACKs; the timer is its slow case.)
 *
 * `--seed` makes the drops repeatable: the same seed drops the same
 * datagrams (by their number in each direction) on every run.
 *
 * @module
 */

import dgram from "node:dgram";
import { acceptEach, type AcceptLoop } from "./accept.ts";
import {
  CliError,
  exitOnSignal,
  parseCli,
  parseCount,
  parseHost,
  parseHostPort,
  parsePort,
  runMain,
  UsageError,
} from "./cli.ts";
import { type Log, printLog } from "./log.ts";
import { closeQuietly, type Connection, connectTo, formatAddr, listenOn } from "./net.ts";
import { relay } from "./relay.ts";
import { parseFraction } from "../udp_echo_server.ts";

/** Linux's shortest TCP retransmission timeout, the emulation's first wait. */
export const DEFAULT_RTO_MS = 200; // milliseconds

/**
 * Times one chunk may be "dropped" in a row before the emulated TCP gives up
 * and resets both connections, as a real one does after `tcp_retries2`
 * (15 on Linux; fewer here, so a lab run stays short): 200 ms doubling six
 * times waits 12.6 s in all.
 */
export const MAX_RETRANSMISSIONS = 6;

/** Clients one UDP relay keeps a server-side socket for; datagrams from more are dropped. */
const MAX_UDP_CLIENTS = 64;

/** Seconds to wait for the server when the TCP relay connects to it for a client. */
const CONNECT_TIMEOUT_SECONDS = 5;

/** Options for {@linkcode startLossyRelay}. */
export interface LossyRelayOptions {
  /** What to relay: UDP datagrams, or TCP connections (emulated retransmission). */
  transport: "udp" | "tcp";
  /** The server everything is forwarded to; `hostname` must be an IP address for UDP. */
  target: { hostname: string; port: number };
  /** Address the relay listens on. @default {"127.0.0.1"} */
  hostname?: string;
  /** Port it listens on; 0 picks a free one. @default {0} */
  port?: number;
  /** Fraction lost each way, from 0 to 1 (below 1 for TCP). @default {0.1} */
  loss?: number;
  /** Seed for the random drops: the same seed drops the same ones. @default {a random seed} */
  seed?: number;
  /** TCP only: the first emulated retransmission timeout; it doubles on each repeat. @default {DEFAULT_RTO_MS} */
  rtoMs?: number;
  /** Where one line per drop goes. @default {console.log} */
  log?: Log;
}

/** What happened one way across the relay. */
export interface LossyDirectionStats {
  /** Datagrams (UDP) or chunks (TCP) that reached the other side. */
  delivered: number;
  /** Datagrams lost (UDP), or times a chunk was "dropped" and waited to be resent (TCP). */
  dropped: number;
}

/** Counters of a {@linkcode LossyRelay}, client to server (`forward`) and back. */
export interface LossyRelayStats {
  /** From the client to the server. */
  forward: LossyDirectionStats;
  /** From the server back to the client. */
  back: LossyDirectionStats;
}

/** A running lossy relay. */
export interface LossyRelay extends AsyncDisposable {
  /** The address it listens on (the real port when 0 was asked for). */
  readonly addr: Deno.NetAddr;
  /** The seed in use (the one given, or the one picked): pass it again to repeat a run. */
  readonly seed: number;
  /** Live counters. */
  readonly stats: LossyRelayStats;
  /** Stops listening and closes everything; resolves once all is closed. Safe to call twice. */
  close(): Promise<void>;
}

/**
 * A small seeded random generator (mulberry32): numbers from 0 up to 1,
 * the same sequence for the same seed, so a test or a lab run can be
 * repeated drop for drop.
 *
 * @example
 * ```ts
 * import { seededRandom } from "./lossy_relay.ts";
 * const random = seededRandom(7);
 * random() === seededRandom(7)(); // true
 * ```
 */
export function seededRandom(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 2 ** 32;
  };
}

/**
 * How long the emulated TCP holds one chunk back: nothing when its first
 * send gets through, else one retransmission timeout per "drop", starting at
 * `rtoMs` and doubling. `retransmissions` is null when it was dropped
 * {@linkcode MAX_RETRANSMISSIONS} times after the first try and TCP would give up.
 *
 * @example
 * ```ts
 * import { retransmissionDelay } from "./lossy_relay.ts";
 * const draws = [0.05, 0.05, 0.9]; // dropped, dropped again, then through
 * retransmissionDelay(() => draws.shift()!, 0.1, 200); // { retransmissions: 2, delayMs: 600 }
 * ```
 */
export function retransmissionDelay(
  random: () => number,
  loss: number,
  rtoMs: number,
): { retransmissions: number | null; delayMs: number } {
  let delayMs = 0;
  let timeout = rtoMs;
  for (let retransmissions = 0; retransmissions <= MAX_RETRANSMISSIONS; retransmissions++) {
    if (random() >= loss) return { retransmissions, delayMs };
    // Lost: the sender hears no ACK, waits out its timer, sends again and doubles the timer.
    delayMs += timeout;
    timeout *= 2;
  }
  return { retransmissions: null, delayMs };
}

/**
 * Starts a lossy relay in front of `target` and resolves once it listens.
 *
 * @example
 * ```ts
 * import { startLossyRelay } from "./lossy_relay.ts";
 * import { startUdpEchoServer } from "../udp_echo_server.ts";
 * await using server = await startUdpEchoServer({ quiet: true });
 * await using relay = await startLossyRelay({ transport: "udp", target: server.addr, seed: 7 });
 * console.log(`a 10% lossy path to the echo server on UDP port ${relay.addr.port}`);
 * ```
 *
 * @throws {RangeError} when `loss` is not from 0 to 1 (or is 1 for TCP, which would never deliver).
 * @throws {CliError} when the relay cannot listen.
 */
export async function startLossyRelay(options: LossyRelayOptions): Promise<LossyRelay> {
  const loss = options.loss ?? 0.1;
  const tcp = options.transport === "tcp";
  if (!(loss >= 0 && (tcp ? loss < 1 : loss <= 1))) {
    throw new RangeError(`loss must be from 0 to ${tcp ? "below 1" : "1"}, got ${loss}`);
  }
  const seed = options.seed ?? Math.floor(Math.random() * 2 ** 31);
  const settings: RelaySettings = {
    hostname: options.hostname ?? "127.0.0.1",
    port: options.port ?? 0,
    target: options.target,
    loss,
    seed,
    rtoMs: options.rtoMs ?? DEFAULT_RTO_MS,
    log: options.log ?? printLog,
    // One generator per direction: which replies are lost does not depend on
    // how many pings were, so one seed fixes both.
    forward: seededRandom(seed),
    back: seededRandom(seed + 1),
    stats: { forward: { delivered: 0, dropped: 0 }, back: { delivered: 0, dropped: 0 } },
  };
  return tcp ? startTcpRelay(settings) : await startUdpRelay(settings);
}

/** Everything both kinds of relay need, with defaults filled in. */
interface RelaySettings {
  hostname: string;
  port: number;
  target: { hostname: string; port: number };
  loss: number;
  seed: number;
  rtoMs: number;
  log: Log;
  forward: () => number;
  back: () => number;
  stats: LossyRelayStats;
}

/** UDP: one socket faces the clients; each client gets its own socket towards the server. */
async function startUdpRelay(s: RelaySettings): Promise<LossyRelay> {
  const type = (host: string) => host.includes(":") ? "udp6" : "udp4";
  const front = dgram.createSocket(type(s.hostname));
  await new Promise<void>((resolve, reject) => {
    front.once("error", reject);
    front.bind(s.port, s.hostname, () => {
      front.off("error", reject);
      resolve();
    });
  }).catch((err) => {
    front.close();
    throw new CliError(`cannot listen on UDP ${formatAddr(s)}: ${(err as Error).message}`);
  });
  const bound = front.address();
  const addr: Deno.NetAddr = { transport: "udp", hostname: bound.address, port: bound.port };
  // Each client's own socket towards the server, so a reply tells us whose it is.
  const towardsServer = new Map<string, dgram.Socket>();

  // Client to server: forward each datagram, or lose it.
  front.on("message", (data: Uint8Array, client: dgram.RemoteInfo) => {
    const who = formatAddr({ hostname: client.address, port: client.port });
    let upstream = towardsServer.get(who);
    if (!upstream) {
      if (towardsServer.size >= MAX_UDP_CLIENTS) {
        s.log(`${who}: too many clients (${MAX_UDP_CLIENTS}), datagram dropped`);
        return;
      }
      upstream = dgram.createSocket(type(s.target.hostname));
      // Server to client: send each reply back to the client it belongs to, or lose it.
      upstream.on("message", (reply: Uint8Array) => {
        if (s.back() < s.loss) {
          s.stats.back.dropped++;
          s.log(`server -> ${who}: dropped a ${reply.length} B datagram`);
          return;
        }
        s.stats.back.delivered++;
        front.send(reply, client.port, client.address);
      });
      upstream.on("error", (err) => s.log(`towards the server for ${who}: ${err.message}`));
      towardsServer.set(who, upstream);
    }
    if (s.forward() < s.loss) {
      s.stats.forward.dropped++;
      s.log(`${who} -> server: dropped a ${data.length} B datagram`);
      return;
    }
    s.stats.forward.delivered++;
    upstream.send(data, s.target.port, s.target.hostname);
  });
  front.on("error", (err) => s.log(`udp relay socket error: ${err.message}`));

  let closing: Promise<void> | undefined;
  const close = () => {
    closing ??= Promise.all(
      [front, ...towardsServer.values()].map((socket) =>
        new Promise<void>((resolve) => socket.close(() => resolve()))
      ),
    ).then(() => {});
    return closing;
  };
  return { addr, seed: s.seed, stats: s.stats, close, [Symbol.asyncDispose]: close };
}

/** TCP: a relay per connection, whose writes wait out emulated retransmissions. */
function startTcpRelay(s: RelaySettings): LossyRelay {
  const listener = listenOn({ hostname: s.hostname, port: s.port });
  const addr = listener.addr;
  const live = new Set<Deno.TcpConn>();
  // Aborted by close(): cuts short any retransmission timeout still running.
  const closed = new AbortController();

  const loop: AcceptLoop = acceptEach(listener, async (client) => {
    live.add(client);
    const who = formatAddr(client.remoteAddr);
    let server: Deno.TcpConn | undefined;
    try {
      server = await connectTo(s.target.hostname, s.target.port, CONNECT_TIMEOUT_SECONDS);
      live.add(server);
      // Forward: writes to the server wait as if sent over the lossy link; back: writes to the client.
      await relay(
        lossyWrites(client, s.back, s.stats.back, `server -> ${who}`),
        lossyWrites(server, s.forward, s.stats.forward, `${who} -> server`),
        { names: ["client", "server"] },
      );
    } finally {
      closeEnds(live, [client, server]);
    }
  }, { log: s.log });

  /** `conn`, with each write held back by the retransmissions its "drops" would cost. */
  function lossyWrites(
    conn: Deno.TcpConn,
    random: () => number,
    stats: LossyDirectionStats,
    way: string,
  ): Connection {
    return {
      read: (p) => conn.read(p),
      write: async (p) => {
        const { retransmissions, delayMs } = retransmissionDelay(random, s.loss, s.rtoMs);
        if (retransmissions === null) {
          stats.dropped += MAX_RETRANSMISSIONS + 1;
          await sleep(delayMs, closed.signal);
          throw new Error(
            `${way}: a chunk was lost ${MAX_RETRANSMISSIONS + 1} times: TCP gives up`,
          );
        }
        if (retransmissions > 0) {
          stats.dropped += retransmissions;
          s.log(
            `${way}: ${p.length} B "dropped" ${retransmissions}x, delivered ${delayMs} ms late (emulated retransmission)`,
          );
          // Everything behind this chunk waits too: TCP hands bytes over in order only.
          await sleep(delayMs, closed.signal);
        }
        const n = await conn.write(p);
        stats.delivered++;
        return n;
      },
      closeWrite: () => conn.closeWrite(),
      close: () => conn.close(),
      remoteAddr: conn.remoteAddr,
      localAddr: conn.localAddr,
    };
  }

  const close = relayCloser(listener, closed, live, loop);
  return { addr, seed: s.seed, stats: s.stats, close, [Symbol.asyncDispose]: close };
}

/**
 * Waits `ms` milliseconds, or rejects as soon as `signal` aborts: how both
 * TCP relays (this one and `delay_relay.ts`) hold a chunk back, cut short
 * by their `close()`.
 */
export function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal.aborted) return reject(signal.reason);
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal.reason);
    };
    const timer = setTimeout(() => {
      signal.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    signal.addEventListener("abort", onAbort, { once: true });
  });
}

/** Forgets and closes the two ends of one relayed connection (either may be missing). */
export function closeEnds(
  live: Set<{ close(): void }>,
  ends: readonly ({ close(): void } | undefined)[],
): void {
  for (const conn of ends) {
    if (conn) {
      live.delete(conn);
      closeQuietly(conn);
    }
  }
}

/**
 * A TCP relay's `close()`: stops accepting, aborts `closed` (which cuts
 * short every wait), closes the live connections and resolves once every
 * handler is done. Calling it again returns the same promise.
 */
export function relayCloser(
  listener: Deno.Listener,
  closed: AbortController,
  live: Set<{ close(): void }>,
  loop: AcceptLoop,
): () => Promise<void> {
  let closing: Promise<void> | undefined;
  return () => {
    closing ??= (async () => {
      closeQuietly(listener);
      closed.abort(new Deno.errors.Interrupted("relay closed"));
      for (const conn of live) closeQuietly(conn);
      await loop.settled();
    })();
    return closing;
  };
}

const USAGE =
  `usage: deno run --allow-net lib/lossy_relay.ts (--udp | --tcp) --to HOST:PORT [options]
  --udp             relay UDP datagrams, dropping some
  --tcp             relay TCP connections, delaying some chunks as a retransmission would
  --to HOST:PORT    the server to forward to (an IP address for --udp)
  --host ADDR       address to listen on (default 127.0.0.1)
  --port N          port to listen on, 0 for any free one (default 9001)
  --loss P          fraction lost each way, 0 to 1 (default 0.1)
  --seed N          seed for the random drops, to repeat a run (default: random)
  -h, --help        show this help`;

async function main(): Promise<void> {
  const { values } = parseCli(Deno.args, USAGE, {
    udp: { type: "boolean", default: false },
    tcp: { type: "boolean", default: false },
    to: { type: "string" },
    host: { type: "string", default: "127.0.0.1" },
    port: { type: "string", default: "9001" },
    loss: { type: "string", default: "0.1" },
    seed: { type: "string" },
  });
  if (values.udp === values.tcp) throw new UsageError("give exactly one of --udp and --tcp");
  if (values.to === undefined) throw new UsageError("--to HOST:PORT is required");
  const transport = values.udp ? "udp" : "tcp";
  const loss = parseFraction(values.loss as string, "--loss");
  if (transport === "tcp" && loss === 1) {
    throw new UsageError("--loss must be below 1 with --tcp: nothing would ever arrive");
  }
  const relay = await startLossyRelay({
    transport,
    target: parseHostPort(values.to as string, "--to"),
    hostname: parseHost(values.host as string, "--host"),
    port: parsePort(values.port as string, "--port"),
    loss,
    seed: values.seed === undefined ? undefined : parseCount(values.seed as string, "--seed", 0),
  });
  exitOnSignal(async () => {
    await relay.close();
    const { forward, back } = relay.stats;
    console.log(`to the server: ${forward.delivered} delivered, ${forward.dropped} dropped`);
    console.log(`back: ${back.delivered} delivered, ${back.dropped} dropped`);
  });
  console.log(
    `lossy ${transport} relay listening on ${formatAddr(relay.addr)} -> ${
      formatAddr(parseHostPort(values.to as string, "--to"))
    }, losing ${Number((loss * 100).toFixed(2))}% each way (seed ${relay.seed})`,
  );
}

if (import.meta.main) runMain(USAGE, main);
