#!/usr/bin/env -S deno run --allow-net --allow-read --allow-write --allow-run --allow-sys=uid
/**
 * The P2P bad-network benchmark: a real tracker and two real `p2p/peer.ts`
 * processes joined by a slow, lossy link (100 ms each way, 5% loss each
 * way), 400 small files (4 KiB) on peer A, timed until peer B holds them all.
 * The issue's goal is 8 s at most.
 *
 * Two ways to get the link, and the result says which it took:
 *
 * - **namespaces** (root, with `ip` and `python3`): A (with the tracker) and
 *   B each get a Linux network namespace, a host of their own, joined
 *   through `lib/lossy_bridge.py --delay-ms 100 --loss 0.05`, which holds
 *   every frame 100 ms and drops 5% of the IPv4 frames each way. The
 *   kernels' own TCP notices the losses and resends. This kernel has no
 *   `sch_netem`, so the delay comes from that user-space bridge.
 * - **loopback** (anywhere else): `lib/delay_relay.ts` sits in front of A's
 *   file server and of the tracker (for B): 100 ms each way, real; the loss
 *   is EMULATED as the retransmission delay a lost segment would cost,
 *   because no TCP connection on loopback ever loses a byte.
 *
 * It gives up after `--give-up` seconds (120) and reports how many files
 * had arrived. It prints one JSON object on stdout; progress goes to stderr.
 *
 * Run: `deno run --allow-net --allow-read --allow-write --allow-run --allow-sys=uid bench/p2p_badnet.ts`
 * (`--files 400 --file-bytes 4096 --delay-ms 100 --loss 0.05 --give-up 120`;
 * `--quick` for 40 files; `--loopback` to force the relay).
 *
 * @module
 */

import {
  errorMessage,
  parseCli,
  parseCount,
  parseSeconds,
  runMain,
  UsageError,
} from "../lib/cli.ts";
import { type DelayRelay, startDelayRelay } from "../lib/delay_relay.ts";
import {
  addVeth,
  bridgeTotals,
  ip,
  removeNamespace,
  removeStaleNamespaces,
  startInNamespace,
  startLossyBridge,
} from "../lib/netns.ts";
import type { Script } from "../lib/scripts.ts";
import { whyNoNamespaces } from "../lib/tcp_vs_udp.ts";
import { peerPermissions } from "../p2p/peer.ts";
import { parseFraction } from "../udp_echo_server.ts";
import { countShared, startBenchPeer, startBenchTracker } from "./servers.ts";

/** The goal: seconds until B holds all 400 files. */
export const TARGET_SECONDS = 8;
/** The subnet inside the namespaces: A (and the tracker) is .1, B is .2. */
const SUBNET = "10.213.80";
const A_IP = `${SUBNET}.1`;
const B_IP = `${SUBNET}.2`;
/** Our namespaces are called `p2pbad-PID-N-a`, `-b` and `-br`, so stale ones can be found. */
const NS_PREFIX = "p2pbad";
/** The port each peer serves files on inside its namespace (hosts of their own: no clash). */
const NS_PEER_PORT = 8000;
/** Milliseconds a started script, or the bridge, may take to say it is ready. */
const START_TIMEOUT_MS = 30_000;
/** Milliseconds peer A may take to hash its files and send its Init. */
const INIT_TIMEOUT_MS = 60_000;
/** Milliseconds between two looks at B's folder. */
const POLL_MS = 50;
/** Handshakes timed to measure the namespace link's round trip (the fastest one counts). */
const HANDSHAKE_PROBES = 3;

/** Which link a run used. */
export type BadLinkPath = "namespaces" | "loopback";

/** Options for {@linkcode syncOverBadLink}. */
export interface BadLinkOptions {
  /** Peer A's folder: the files to send. */
  from: string;
  /** Peer B's folder (empty): where they go. */
  to: string;
  /** How many files B must hold for the sync to be complete. */
  count: number;
  /** Milliseconds every packet (or chunk) is held back, each way. @default {100} */
  delayMs?: number;
  /** Fraction lost each way, from 0 to below 1. @default {0.05} */
  loss?: number;
  /** Seed for the random drops, to repeat a run. @default {a random seed, reported} */
  seed?: number;
  /** Which link; "auto" takes namespaces where it can, else loopback. @default {"auto"} */
  path?: "auto" | BadLinkPath;
  /** Seconds to wait for B to hold every file before reporting what it has. @default {120} */
  giveUpSeconds?: number;
  /** The peers' `--interval`: seconds between sync rounds and keep-alives. @default {1} */
  intervalSeconds?: number;
  /** Progress lines. @default {no output} */
  progress?: (line: string) => void;
}

/** What {@linkcode syncOverBadLink} saw. */
export interface BadLinkSync {
  /** The link used. */
  path: BadLinkPath;
  /** Why that link, in words (on loopback: why not namespaces). */
  why: string;
  /** The link in one line, for a report: what delays, what drops, and whether the loss is real. */
  link: string;
  /** The seed of the random drops. */
  seed: number;
  /** Files in B's folder at the end. */
  arrived: number;
  /** Whether all `count` arrived before the give-up time. */
  complete: boolean;
  /** Seconds from B's start (its "listening on" line) until the last file, or until giving up. */
  seconds: number;
  /**
   * Namespaces: the fastest TCP handshake from B's host to A's, in ms (one
   * round trip: at least twice the delay). Loopback: null (the relay's
   * handshake is emulated, not timed).
   */
  handshakeMs: number | null;
  /** What the link carried both ways (IPv4 frames, or chunks) and how many it dropped. */
  carried: { packets: number; dropped: number };
  /** Peer B's output lines (downloads, retries). */
  lines: string[];
}

/**
 * Starts a tracker and peer A on `from`, waits until A has told the
 * tracker its files, then starts peer B on `to` across a slow, lossy link
 * and times it until B holds `count` files (or the give-up time passes).
 * Every process, relay and namespace is gone when it returns or throws.
 *
 * @example
 * ```ts
 * import { syncOverBadLink } from "./p2p_badnet.ts";
 * const run = await syncOverBadLink({ from: "/tmp/a", to: "/tmp/b", count: 20 });
 * console.log(`${run.arrived} files in ${run.seconds} s over ${run.link}`);
 * ```
 *
 * @throws {RangeError} when `loss` is not from 0 to below 1.
 * @throws {Error} when a script fails to start, or namespaces were asked for and cannot be built.
 */
export async function syncOverBadLink(options: BadLinkOptions): Promise<BadLinkSync> {
  const settings: Settings = {
    delayMs: options.delayMs ?? 100,
    loss: options.loss ?? 0.05,
    seed: options.seed ?? Math.floor(Math.random() * 2 ** 31),
    interval: String(options.intervalSeconds ?? 1),
    progress: options.progress ?? (() => {}),
  };
  if (!(settings.loss >= 0 && settings.loss < 1)) {
    throw new RangeError(`loss must be from 0 to below 1, got ${settings.loss}`);
  }
  const undo: (() => Promise<unknown> | void)[] = [];
  try {
    const hosts = await pickHosts(settings, options.path ?? "auto", undo);
    settings.progress(`link: ${hosts.link}`);
    const tracker = await hosts.startTracker();
    const peerA = await hosts.startPeer("a", options.from, tracker.port);
    // Its Init goes out after it has hashed its files: only then is there something to fetch.
    await peerA.waitFor(/connected to tracker/, INIT_TIMEOUT_MS);
    const handshakeMs = await hosts.handshakeMs(tracker.port);
    const peerB = await hosts.startPeer("b", options.to, tracker.port);
    // Timed from B's "listening on" line: deno's own start-up is not the peer's work.
    const started = performance.now();
    const giveUpMs = (options.giveUpSeconds ?? 120) * 1000;
    let arrived = countShared(options.to);
    let exited = false;
    peerB.process.status.then(() => exited = true);
    while (arrived < options.count && performance.now() - started < giveUpMs && !exited) {
      await new Promise((resolve) => setTimeout(resolve, POLL_MS));
      arrived = countShared(options.to);
    }
    const seconds = (performance.now() - started) / 1000;
    const complete = arrived >= options.count;
    settings.progress(
      `  ${arrived} of ${options.count} file(s) in ${seconds.toFixed(2)} s${
        complete ? "" : exited ? " (peer B exited)" : " (gave up)"
      }`,
    );
    // Short of the goal: B's last lines say why (a retry, an error), on the progress stream.
    if (!complete) { for (const line of peerB.lines.slice(-5)) settings.progress(`  B: ${line}`); }
    return {
      path: hosts.path,
      why: hosts.why,
      link: hosts.link,
      seed: settings.seed,
      arrived,
      complete,
      seconds,
      handshakeMs,
      // The namespace link stops its bridge to count, so the peers go first.
      carried: await stopAll(undo).then(() => hosts.carried()),
      lines: peerB.lines,
    };
  } finally {
    await stopAll(undo);
  }
}

/** A run's settings with defaults filled in. */
interface Settings {
  delayMs: number;
  loss: number;
  seed: number;
  interval: string;
  progress: (line: string) => void;
}

/** The two hosts and the link between them, ready to run the tracker and the peers on. */
interface Hosts {
  path: BadLinkPath;
  why: string;
  link: string;
  /** The tracker, on A's side. */
  startTracker(): Promise<Script>;
  /** A peer on its side, whose tracker connection and file server go across the link as they must. */
  startPeer(side: "a" | "b", dir: string, trackerPort: number): Promise<Script>;
  /** The round trip from B's host to A's, timed as TCP handshakes (null where not timed). */
  handshakeMs(trackerPort: number): Promise<number | null>;
  /** What the link carried and dropped (call after stopping everything). */
  carried(): { packets: number; dropped: number };
}

/** Runs every undo step, last first; a failing step does not stop the others. */
async function stopAll(undo: (() => Promise<unknown> | void)[]): Promise<void> {
  for (let step = undo.pop(); step; step = undo.pop()) {
    try {
      await step();
    } catch {
      // Already gone.
    }
  }
}

/** Builds the namespaces where asked or possible, else the loopback relays. */
async function pickHosts(
  s: Settings,
  wanted: "auto" | BadLinkPath,
  undo: (() => Promise<unknown> | void)[],
): Promise<Hosts> {
  let why = "the loopback path was asked for";
  if (wanted !== "loopback") {
    const reason = whyNoNamespaces();
    if (reason !== null && wanted === "namespaces") {
      throw new Error(`cannot use network namespaces: ${reason}`);
    }
    if (reason === null) {
      try {
        return await buildNamespaces(s, undo);
      } catch (err) {
        if (wanted === "namespaces") throw err;
        await stopAll(undo);
        why = `building the namespaces failed (${errorMessage(err)})`;
      }
    } else {
      why = reason;
    }
  }
  return loopbackHosts(s, why, undo);
}

// ---------------------------------------------------------------- the namespace path

/** Namespace builds started by this process, so two never share names. */
let builds = 0;

/**
 * Two hosts and a slow, lossy wire: namespace `-a` (the tracker and peer A,
 * 10.213.80.1) and `-b` (peer B, .2), each joined by a veth pair to
 * namespace `-br`, where lossy_bridge.py carries frames between the pairs'
 * other ends, late and not all of them.
 */
async function buildNamespaces(
  s: Settings,
  undo: (() => Promise<unknown> | void)[],
): Promise<Hosts> {
  removeStaleNamespaces(NS_PREFIX);
  const tag = `${NS_PREFIX}-${Deno.pid}-${++builds}`;
  const ns = { a: `${tag}-a`, b: `${tag}-b`, bridge: `${tag}-br` };
  // Registered first, so it runs last: after every process in the namespaces was stopped.
  undo.push(() => Object.values(ns).forEach(removeNamespace));
  for (const name of Object.values(ns)) ip("netns", "add", name);
  // a0 in A's host, a1 at the bridge; b0 and b1 likewise.
  addVeth({ middle: ns.bridge, host: ns.a, stem: "a", address: A_IP });
  addVeth({ middle: ns.bridge, host: ns.b, stem: "b", address: B_IP });
  const bridgeArgs = [
    "a1",
    "b1",
    "--loss",
    String(s.loss),
    "--delay-ms",
    String(s.delayMs),
    "--seed",
    String(s.seed),
  ];
  const bridge = await startLossyBridge(ns.bridge, bridgeArgs, START_TIMEOUT_MS);
  undo.push(() => bridge.stop());
  await bridge.waitFor(/^bridging /);

  /** Runs `deno run PERMISSIONS SCRIPT ARGS` inside the namespace of `side`. */
  const startIn = async (
    side: "a" | "b",
    permissions: string[],
    script: string,
    args: string[],
  ) => {
    const started = await startInNamespace(ns[side], permissions, script, args, {
      timeoutMs: START_TIMEOUT_MS,
    });
    undo.push(() => started.stop());
    return started;
  };
  return {
    path: "namespaces",
    why: "running as root, with ip and python3",
    link: `network namespaces joined by lib/lossy_bridge.py: ${s.delayMs} ms and ${
      percent(s.loss)
    } of IPv4 frames dropped each way (real loss, the kernels' TCP resends; seed ${s.seed})`,
    startTracker: () =>
      startIn("a", ["--allow-net"], "p2p/tracker.ts", [
        "--host",
        "0.0.0.0",
        "--port",
        "0",
        "--http-port",
        "0",
        "--quiet",
      ]),
    startPeer: (side, dir, trackerPort) =>
      startIn(side, peerPermissions(dir, "async"), "p2p/peer.ts", [
        A_IP,
        String(trackerPort),
        "--dir",
        dir,
        "--host",
        side === "a" ? A_IP : B_IP,
        "--port",
        String(NS_PEER_PORT),
        "--interval",
        s.interval,
        "--quiet",
      ]),
    async handshakeMs(trackerPort) {
      // A few TCP handshakes from B's host to the tracker: each is one round trip over the link.
      const probe = `import socket, time
best = None
for _ in range(${HANDSHAKE_PROBES}):
    t = time.monotonic()
    socket.create_connection(("${A_IP}", ${trackerPort}), timeout=10).close()
    ms = (time.monotonic() - t) * 1000
    best = ms if best is None else min(best, ms)
print(round(best, 1))`;
      const out = await new Deno.Command("ip", {
        args: ["netns", "exec", ns.b, "python3", "-c", probe],
        stdout: "piped",
        stderr: "piped",
      }).output();
      const ms = Number(new TextDecoder().decode(out.stdout).trim());
      return out.success && Number.isFinite(ms) ? ms : null;
    },
    carried() {
      // The bridge printed its counts as it stopped.
      return bridgeTotals(bridge.lines);
    },
  };
}

// ---------------------------------------------------------------- the loopback path

/**
 * Loopback: the tracker on 127.0.0.1; peer A serves on 127.0.0.2, with a
 * delay relay on 127.0.0.1 at the same port (the address the tracker hands
 * out for A, so B's downloads cross it); B reaches the tracker through a
 * second relay.
 */
function loopbackHosts(s: Settings, why: string, undo: (() => Promise<unknown> | void)[]): Hosts {
  const relays: DelayRelay[] = [];
  const relayTo = (hostname: string, port: number, listenPort: number, seed: number) => {
    const relay = startDelayRelay({
      target: { hostname, port },
      port: listenPort,
      delayMs: s.delayMs,
      loss: s.loss,
      seed,
    });
    relays.push(relay);
    undo.push(() => relay.close());
    return relay;
  };
  let trackerRelay: DelayRelay | undefined;
  /** Registers a started process to be stopped with the rest. */
  const stopLater = async (starting: Promise<Script>) => {
    const started = await starting;
    undo.push(() => started.stop());
    return started;
  };
  return {
    path: "loopback",
    why,
    link: `loopback through lib/delay_relay.ts: ${s.delayMs} ms each way, real; ${
      percent(s.loss)
    } loss each way EMULATED as retransmission delay (no TCP on loopback loses a byte; seed ${s.seed})`,
    startTracker: () => stopLater(startBenchTracker(START_TIMEOUT_MS)),
    async startPeer(side, dir, trackerPort) {
      const peerOptions = { interval: s.interval, timeoutMs: START_TIMEOUT_MS };
      if (side === "a") {
        const peer = await stopLater(
          startBenchPeer(trackerPort, dir, { ...peerOptions, host: "127.0.0.2" }),
        );
        // The tracker knows A as 127.0.0.1 (where its Init came from) at A's port: the relay.
        relayTo("127.0.0.2", peer.port, peer.port, s.seed);
        return peer;
      }
      trackerRelay ??= relayTo("127.0.0.1", trackerPort, 0, s.seed + 2);
      return await stopLater(startBenchPeer(trackerRelay.addr.port, dir, peerOptions));
    },
    handshakeMs: () => Promise.resolve(null),
    carried() {
      let packets = 0;
      let dropped = 0;
      for (const { stats } of relays) {
        for (const way of [stats.forward, stats.back]) {
          packets += way.delivered + way.dropped;
          dropped += way.dropped;
        }
      }
      return { packets, dropped };
    },
  };
}

/** A fraction as a percentage a person reads: 0.05 is "5%". */
function percent(fraction: number): string {
  return `${Number((fraction * 100).toFixed(2))}%`;
}

function round(x: number): number {
  return Math.round(x * 100) / 100;
}

// ---------------------------------------------------------------- the benchmark

/** What the benchmark prints (as JSON). */
export interface BadnetResult {
  /** "namespaces" or "loopback". */
  path: BadLinkPath;
  /** The link in words (loopback: the loss is emulated). */
  link: string;
  files: number;
  bytesEach: number;
  delayMs: number;
  lossPercent: number;
  /** Files B held when it finished or gave up. */
  arrived: number;
  /** Of those, files whose bytes equal A's. */
  intact: number;
  /** Seconds until B held every file, or until it gave up. */
  seconds: number;
  filesPerSec: number;
  /** Namespaces: one TCP handshake across the link, ms (at least twice the delay). */
  handshakeMs: number | null;
  linkPackets: number;
  linkDropped: number;
  targets: { seconds: number };
  /** Whether every file arrived intact within the goal. */
  meetsTarget: boolean;
}

/** Options for {@linkcode runBadnetBench}. */
export interface BadnetOptions extends Omit<BadLinkOptions, "from" | "to" | "count" | "progress"> {
  /** How many files on A. @default {400} */
  files?: number;
  /** Bytes in each. @default {4096} */
  fileBytes?: number;
  /** Progress lines. @default {console.error} */
  progress?: (line: string) => void;
}

/** Writes the files, syncs them over the bad link, checks their bytes; resolves with the figures. */
export async function runBadnetBench(options: BadnetOptions = {}): Promise<BadnetResult> {
  const progress = options.progress ?? ((line: string) => console.error(line));
  const files = options.files ?? 400;
  const fileBytes = options.fileBytes ?? 4096;
  const work = await Deno.makeTempDir({ prefix: "p2p_badnet_" });
  const [from, to] = [`${work}/a`, `${work}/b`];
  try {
    await Deno.mkdir(from);
    await Deno.mkdir(to);
    progress(`writing ${files} files of ${fileBytes} B`);
    for (let i = 0; i < files; i++) {
      const bytes = new Uint8Array(fileBytes);
      crypto.getRandomValues(bytes.subarray(0, Math.min(fileBytes, 65536)));
      await Deno.writeFile(`${from}/small_${String(i).padStart(5, "0")}.bin`, bytes);
    }
    const run = await syncOverBadLink({ ...options, from, to, count: files, progress });
    let intact = 0;
    for (const entry of Deno.readDirSync(to)) {
      if (entry.name.startsWith(".")) continue;
      const [got, sent] = await Promise.all(
        [to, from].map((dir) => Deno.readFile(`${dir}/${entry.name}`).catch(() => null)),
      );
      if (got && sent && got.length === sent.length && got.every((b, i) => b === sent[i])) intact++;
    }
    return {
      path: run.path,
      link: run.link,
      files,
      bytesEach: fileBytes,
      delayMs: options.delayMs ?? 100,
      lossPercent: Number(((options.loss ?? 0.05) * 100).toFixed(2)),
      arrived: run.arrived,
      intact,
      seconds: round(run.seconds),
      filesPerSec: round(run.arrived / run.seconds),
      handshakeMs: run.handshakeMs,
      linkPackets: run.carried.packets,
      linkDropped: run.carried.dropped,
      targets: { seconds: TARGET_SECONDS },
      meetsTarget: run.complete && intact === files && run.seconds <= TARGET_SECONDS,
    };
  } finally {
    await Deno.remove(work, { recursive: true });
  }
}

const USAGE =
  `usage: deno run --allow-net --allow-read --allow-write --allow-run --allow-sys=uid bench/p2p_badnet.ts [options]
  --files N        how many files on peer A (default 400)
  --file-bytes N   bytes in each file (default 4096)
  --delay-ms N     milliseconds each way (default 100)
  --loss P         fraction lost each way, 0 to below 1 (default 0.05)
  --seed N         seed for the random drops, to repeat a run (default: random)
  --give-up S      seconds to wait for every file before reporting what came (default 120)
  --interval S     the peers' --interval (default 1)
  --loopback       use the loopback relay even where namespaces would work
  --quick          a smoke run: 40 files, giving up after 60 s`;

async function main(): Promise<void> {
  const { values } = parseCli(Deno.args, USAGE, {
    files: { type: "string" },
    "file-bytes": { type: "string", default: "4096" },
    "delay-ms": { type: "string", default: "100" },
    loss: { type: "string", default: "0.05" },
    seed: { type: "string" },
    "give-up": { type: "string" },
    interval: { type: "string", default: "1" },
    loopback: { type: "boolean", default: false },
    quick: { type: "boolean", default: false },
  });
  const loss = parseFraction(values.loss as string, "--loss");
  if (loss === 1) {
    throw new UsageError("--loss must be below 1: over TCP nothing would ever arrive");
  }
  const quick = values.quick as boolean;
  const result = await runBadnetBench({
    files: parseCount((values.files as string | undefined) ?? (quick ? "40" : "400"), "--files"),
    fileBytes: parseCount(values["file-bytes"] as string, "--file-bytes", 0),
    delayMs: parseCount(values["delay-ms"] as string, "--delay-ms", 0, 60_000),
    loss,
    seed: values.seed === undefined ? undefined : parseCount(values.seed as string, "--seed", 0),
    giveUpSeconds: parseSeconds(
      (values["give-up"] as string | undefined) ?? (quick ? "60" : "120"),
      "--give-up",
    ),
    intervalSeconds: parseSeconds(values.interval as string, "--interval"),
    path: values.loopback ? "loopback" : "auto",
  });
  console.log(JSON.stringify(result));
}

if (import.meta.main) runMain(USAGE, main);
