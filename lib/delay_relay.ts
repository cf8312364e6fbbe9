#!/usr/bin/env -S deno run --allow-net
/**
 * A slow, lossy TCP link on loopback: a relay that holds every chunk back a
 * fixed time each way (100 ms unless told), in order, and "loses" a
 * fraction of the segments (5% unless told) as `lossy_relay.ts` does. The
 * P2P bad-network bench and test use it where they cannot build network
 * namespaces (not root, or no `ip`); where they can, `lossy_bridge.py
 * --delay-ms` delays and drops real frames.
 *
 * Run it: `deno run --allow-net lib/delay_relay.ts --to 127.0.0.1:8001 --port 9002`
 * Try it: start `echo_server.ts`, then `nc 127.0.0.1 9002` and type a line:
 * its echo comes back 200 ms later (100 ms there, 100 ms back).
 *
 * The delay is real: a chunk read at time t is written at t + the delay,
 * while the relay keeps reading, so many chunks are in flight at once, as
 * on a long cable (up to {@linkcode MAX_HELD_BYTES} each way: the window).
 * A new connection pays one round trip for its handshake before its first
 * byte moves, as a real one does.
 *
 * The loss is EMULATED. A user-space relay on loopback sits between two
 * TCP connections that never lose a byte, so no kernel ever retransmits.
 * Each chunk counts as `ceil(bytes / 1448)` segments (one Ethernet MSS
 * each); each "lost" segment holds the chunk, and everything behind it,
 * back by one retransmission timeout (a round trip plus Linux's 200 ms
 * minimum, doubling on a repeat loss), as a resent segment would. A lost
 * SYN or SYN-ACK costs Linux's initial 1 s timeout. Real TCP often recovers
 * sooner (duplicate ACKs, tail-loss probes), so this is the slow case.
 *
 * @module
 */

import { acceptEach, type AcceptLoop } from "./accept.ts";
import {
  exitOnSignal,
  parseCli,
  parseCount,
  parseHost,
  parseHostPort,
  parsePort,
  runMain,
  UsageError,
} from "./cli.ts";
import { type Log, silentLog } from "./log.ts";
import { closeQuietly, type Connection, connectTo, formatAddr, listenOn, writeAll } from "./net.ts";
import { relay } from "./relay.ts";
import {
  closeEnds,
  DEFAULT_RTO_MS,
  type LossyRelayStats,
  MAX_RETRANSMISSIONS,
  relayCloser,
  retransmissionDelay,
  seededRandom,
  sleep,
} from "./lossy_relay.ts";
import { parseFraction } from "../udp_echo_server.ts";

/** Bytes of TCP payload in one segment on an Ethernet link (1500 - 20 IP - 32 TCP with timestamps). */
export const SEGMENT_BYTES = 1448;

/** Linux's first SYN retransmission timeout (`TCP_TIMEOUT_INIT`): a lost SYN costs this. */
export const SYN_RTO_MS = 1000; // milliseconds

/**
 * The most bytes one direction of one connection holds while they wait out
 * the delay; a sender beyond it waits, as TCP's window makes it wait.
 * 4 MiB in 100 ms is 40 MiB/s, far more than the bad-network runs need.
 */
export const MAX_HELD_BYTES = 4 * 1024 * 1024;

/** Seconds to wait for the server when the relay connects to it for a client. */
const CONNECT_TIMEOUT_SECONDS = 5;

/** Options for {@linkcode startDelayRelay}. */
export interface DelayRelayOptions {
  /** The TCP server everything is forwarded to. */
  target: { hostname: string; port: number };
  /** Address the relay listens on. @default {"127.0.0.1"} */
  hostname?: string;
  /** Port it listens on; 0 picks a free one. @default {0} */
  port?: number;
  /** Milliseconds every chunk is held back, each way. @default {100} */
  delayMs?: number;
  /** Fraction of segments "lost" each way, from 0 to below 1. @default {0.05} */
  loss?: number;
  /** Seed for the random "drops": the same seed drops the same ones. @default {a random seed} */
  seed?: number;
  /**
   * The first emulated retransmission timeout; it doubles on each repeat.
   * @default {one round trip (2 x delayMs) plus DEFAULT_RTO_MS}
   */
  rtoMs?: number;
  /** Where a line per connection that fails goes. @default {no output} */
  log?: Log;
}

/** A running delay relay. */
export interface DelayRelay extends AsyncDisposable {
  /** The address it listens on (the real port when 0 was asked for). */
  readonly addr: Deno.NetAddr;
  /** The seed in use (the one given, or the one picked): pass it again to repeat a run. */
  readonly seed: number;
  /** Live counters: chunks delivered, and segments "dropped" (each one an emulated resend). */
  readonly stats: LossyRelayStats;
  /** Connections accepted so far. */
  connections(): number;
  /** Stops listening and closes everything; resolves once all is closed. Safe to call twice. */
  close(): Promise<void>;
}

/**
 * How late the emulated TCP delivers a chunk of `bytes` bytes: each of its
 * segments may be "lost" and resent ({@linkcode retransmissionDelay}); the
 * chunk waits for the slowest one. `null` when one segment was lost so often
 * that TCP would give up.
 *
 * @example
 * ```ts
 * import { chunkPenalty } from "./delay_relay.ts";
 * chunkPenalty(() => 0.9, 4096, 0.05, 400); // { dropped: 0, delayMs: 0 }
 * ```
 */
export function chunkPenalty(
  random: () => number,
  bytes: number,
  loss: number,
  rtoMs: number,
): { dropped: number; delayMs: number } | null {
  let dropped = 0;
  let delayMs = 0;
  const segments = Math.max(1, Math.ceil(bytes / SEGMENT_BYTES));
  for (let i = 0; i < segments; i++) {
    const one = retransmissionDelay(random, loss, rtoMs);
    if (one.retransmissions === null) return null;
    dropped += one.retransmissions;
    // Lost segments are resent side by side: the chunk is whole once the latest one arrives.
    delayMs = Math.max(delayMs, one.delayMs);
  }
  return { dropped, delayMs };
}

/**
 * Starts a delaying, lossy TCP relay in front of `target`, listening when it returns.
 *
 * @example
 * ```ts
 * import { startDelayRelay } from "./delay_relay.ts";
 * import { startEchoServer } from "../echo_server.ts";
 * await using server = await startEchoServer({ quiet: true });
 * await using link = startDelayRelay({ target: server.addr, delayMs: 100, loss: 0.05 });
 * console.log(`a 200 ms round trip to the echo server on port ${link.addr.port}`);
 * ```
 *
 * @throws {RangeError} when `loss` is not from 0 to below 1, or `delayMs` is negative.
 * @throws {CliError} when the relay cannot listen.
 */
export function startDelayRelay(options: DelayRelayOptions): DelayRelay {
  const loss = options.loss ?? 0.05;
  const delayMs = options.delayMs ?? 100;
  if (!(loss >= 0 && loss < 1)) throw new RangeError(`loss must be from 0 to below 1, got ${loss}`);
  if (!(delayMs >= 0 && Number.isFinite(delayMs))) {
    throw new RangeError(`delayMs must be 0 or more, got ${delayMs}`);
  }
  const rtoMs = options.rtoMs ?? 2 * delayMs + DEFAULT_RTO_MS;
  const seed = options.seed ?? Math.floor(Math.random() * 2 ** 31);
  const log = options.log ?? silentLog;
  // One generator per direction, as in lossy_relay.ts: one seed fixes both.
  const forward = seededRandom(seed);
  const back = seededRandom(seed + 1);
  const stats: LossyRelayStats = {
    forward: { delivered: 0, dropped: 0 },
    back: { delivered: 0, dropped: 0 },
  };
  let accepted = 0;

  const listener = listenOn({ hostname: options.hostname ?? "127.0.0.1", port: options.port ?? 0 });
  const live = new Set<Connection>();
  // Aborted by close(): cuts short every delay still running.
  const closed = new AbortController();

  const loop: AcceptLoop = acceptEach(listener, async (client) => {
    accepted++;
    const acceptedAt = performance.now();
    live.add(client);
    const who = formatAddr(client.remoteAddr);
    let server: Deno.TcpConn | undefined;
    try {
      // The handshake: SYN there, SYN-ACK back, each maybe lost and resent after 1 s.
      const syn = retransmissionDelay(forward, loss, SYN_RTO_MS);
      const synAck = retransmissionDelay(back, loss, SYN_RTO_MS);
      if (syn.retransmissions === null || synAck.retransmissions === null) {
        log(`${who}: the handshake was lost ${MAX_RETRANSMISSIONS + 1} times: connection refused`);
        return;
      }
      stats.forward.dropped += syn.retransmissions;
      stats.back.dropped += synAck.retransmissions;
      server = await connectTo(
        options.target.hostname,
        options.target.port,
        CONNECT_TIMEOUT_SECONDS,
      );
      live.add(server);
      // The client could send nothing before its handshake was over: a round trip, plus resends.
      const handshakeOver = acceptedAt + 2 * delayMs + syn.delayMs + synAck.delayMs;
      const line = { delayMs, loss, rtoMs, signal: closed.signal };
      await relay(
        delayedWrites(client, { ...line, random: back, stats: stats.back, notBefore: 0 }),
        delayedWrites(server, {
          ...line,
          random: forward,
          stats: stats.forward,
          notBefore: handshakeOver,
        }),
        { names: ["client", "server"] },
      ).then((result) => {
        if (!result.clean) log(`${who}: ${result.reason}`);
      });
    } finally {
      closeEnds(live, [client, server]);
    }
  }, { log });

  const close = relayCloser(listener, closed, live, loop);
  return {
    addr: listener.addr,
    seed,
    stats,
    connections: () => accepted,
    close,
    [Symbol.asyncDispose]: close,
  };
}

/** One direction's delay line: how long, how lossy, and where it counts. */
interface DelayLine {
  delayMs: number;
  loss: number;
  rtoMs: number;
  random: () => number;
  stats: { delivered: number; dropped: number };
  /** No byte is "sent" before this time (performance.now()): the handshake. */
  notBefore: number;
  signal: AbortSignal;
}

/**
 * `conn`, whose writes return at once and land `delayMs` later (plus any
 * emulated resend), in order. The relay's copy loop keeps reading meanwhile,
 * so the link carries many chunks at once; past {@linkcode MAX_HELD_BYTES}
 * a write waits for the line to drain. `closeWrite()` waits for the bytes
 * ahead of it: the end of data travels the same line.
 */
function delayedWrites(conn: Deno.TcpConn, line: DelayLine): Connection {
  // Each chunk's delivery is chained to the previous one: that keeps them in order.
  let tail: Promise<void> = Promise.resolve();
  let lastDue = 0; // when the chunk last queued lands
  let held = 0; // bytes queued, not yet written
  let failure: unknown = null;

  const enqueue = (due: number, step: () => Promise<void>) => {
    lastDue = Math.max(lastDue, due);
    const at = lastDue;
    tail = tail.then(async () => {
      const wait = at - performance.now();
      if (wait > 0) await sleep(wait, line.signal);
      await step();
    });
    // A failed write is reported by the next write or closeWrite(), and ends the relay.
    tail.catch((err) => {
      failure ??= err;
      closeQuietly(conn);
    });
  };

  return {
    read: (p) => conn.read(p),
    write: async (p) => {
      if (failure) throw failure;
      const chunk = p.slice(); // the copy loop reuses its buffer
      const penalty = chunkPenalty(line.random, chunk.length, line.loss, line.rtoMs);
      if (penalty === null) {
        throw new Error(`a segment was lost ${MAX_RETRANSMISSIONS + 1} times: TCP gives up`);
      }
      line.stats.dropped += penalty.dropped;
      const sent = Math.max(performance.now(), line.notBefore);
      held += chunk.length;
      enqueue(sent + line.delayMs + penalty.delayMs, async () => {
        await writeAll(conn, chunk);
        held -= chunk.length;
        line.stats.delivered++;
      });
      // The window is full: wait until what is in flight has landed.
      if (held > MAX_HELD_BYTES) await tail.catch(() => {});
      if (failure) throw failure;
      return chunk.length;
    },
    closeWrite: async () => {
      const sent = Math.max(performance.now(), line.notBefore);
      enqueue(sent + line.delayMs, () => conn.closeWrite());
      await tail.catch(() => {});
      if (failure) throw failure;
    },
    close: () => conn.close(),
    remoteAddr: conn.remoteAddr,
    localAddr: conn.localAddr,
  };
}

const USAGE = `usage: deno run --allow-net lib/delay_relay.ts --to HOST:PORT [options]
  --to HOST:PORT    the TCP server to forward to
  --host ADDR       address to listen on (default 127.0.0.1)
  --port N          port to listen on, 0 for any free one (default 9002)
  --delay-ms N      milliseconds every chunk is held back, each way (default 100)
  --loss P          fraction of segments "lost" each way, 0 to below 1 (default 0.05)
  --seed N          seed for the random drops, to repeat a run (default: random)
  -h, --help        show this help`;

function main(): void {
  const { values } = parseCli(Deno.args, USAGE, {
    to: { type: "string" },
    host: { type: "string", default: "127.0.0.1" },
    port: { type: "string", default: "9002" },
    "delay-ms": { type: "string", default: "100" },
    loss: { type: "string", default: "0.05" },
    seed: { type: "string" },
  });
  if (values.to === undefined) throw new UsageError("--to HOST:PORT is required");
  const loss = parseFraction(values.loss as string, "--loss");
  if (loss === 1) throw new UsageError("--loss must be below 1: nothing would ever arrive");
  const target = parseHostPort(values.to as string, "--to");
  const delayMs = parseCount(values["delay-ms"] as string, "--delay-ms", 0, 60_000);
  const link = startDelayRelay({
    target,
    hostname: parseHost(values.host as string, "--host"),
    port: parsePort(values.port as string, "--port"),
    delayMs,
    loss,
    seed: values.seed === undefined ? undefined : parseCount(values.seed as string, "--seed", 0),
    log: (line) => console.log(line),
  });
  exitOnSignal(async () => {
    await link.close();
    const { forward, back } = link.stats;
    console.log(`to the server: ${forward.delivered} chunks, ${forward.dropped} segments resent`);
    console.log(`back: ${back.delivered} chunks, ${back.dropped} segments resent`);
  });
  console.log(
    `delay relay listening on ${formatAddr(link.addr)} -> ${formatAddr(target)}, ${delayMs} ms` +
      ` each way, losing ${
        Number((loss * 100).toFixed(2))
      }% of segments (emulated; seed ${link.seed})`,
  );
}

if (import.meta.main) runMain(USAGE, main);
