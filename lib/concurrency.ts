/**
 * One concurrency mechanism for every server, in the spirit of Python's
 * `socketserver`: the accept loop and the per-connection handler are
 * separate, and where the handler runs is a swappable part.
 *
 * - `async`: the handler runs on the main event loop, one promise per
 *   connection. No extra threads or processes; the fastest mode.
 * - `worker`: the handler runs in a warm pool of Web Workers. The main thread
 *   keeps the socket and relays its bytes (see `mux.ts`).
 * - `process`: the handler runs in a warm pool of `deno` child processes, fed
 *   through their stdin and stdout, inetd style.
 *
 * Workers and children start before the server says it is listening, and are
 * reused for connection after connection: starting one costs 20-30 ms, which
 * no client should wait for. Each serves many connections at once. A handler
 * that throws closes only its own connection; a worker or child that dies
 * closes only the connections it was serving, and a fresh one takes its place.
 *
 * The accept loop itself is `accept.ts`: it skips clients that fail before
 * they are accepted, backs off only when out of file descriptors, and stops
 * accepting while `maxConns` connections are open (refusing the next clients
 * at once, or leaving them in the kernel's queue).
 *
 * @example
 * ```ts
 * import { serve } from "./concurrency.ts";
 * const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
 * await using server = await serve(
 *   listener,
 *   { module: new URL("../echo_server.ts", import.meta.url).href, name: "echoHandler" },
 *   { handlerOptions: { quiet: true }, mode: "worker" },
 * );
 * console.log(server.addr.port);
 * ```
 * @module
 */

import { CliError } from "./cli.ts";
import { type ConnectionHandler, loadHandler, runHandler } from "./handler.ts";
import { type Log, printLog } from "./log.ts";
import {
  FrameDecoder,
  FrameWriter,
  type GuestMessage,
  type HandlerRef,
  HostConn,
  type HostMessage,
  type Link,
} from "./mux.ts";
import { acceptEach, type AcceptStats, newAcceptStats, type WhenFull } from "./accept.ts";
import { closeQuietly, formatAddr, listenOn } from "./net.ts";

export type { HandlerRef } from "./mux.ts";

/** Where handlers run. */
export type Mode = "async" | "worker" | "process";

/** Every mode, in the order the docs present them. */
export const MODES: readonly Mode[] = ["async", "worker", "process"];

/**
 * The `deno run` permission flags a server script needs in each mode, run
 * from the project folder: Workers load the code from disk (`--allow-read`),
 * and child processes are `deno` itself (`--allow-run`).
 */
export const MODE_PERMISSIONS: Readonly<Record<Mode, readonly string[]>> = {
  async: ["--allow-net"],
  worker: ["--allow-net", "--allow-read=."],
  process: ["--allow-net", "--allow-read=.", "--allow-run"],
};

export type { ConnectionHandler, HandlerContext } from "./handler.ts";

/**
 * What every server script lets its caller choose: where to listen, where
 * handlers run, how many connections at once, and how much to log. The
 * echo server's and the proxy's options extend it.
 */
export interface ServerOptions {
  /** Address to bind. @default {"127.0.0.1"} */
  hostname?: string;
  /** Port to bind; 0 picks a free one. @default {0} */
  port?: number;
  /** Where each connection's handler runs. @default {"async"} */
  mode?: Mode;
  /** Workers or child processes kept warm (worker and process modes). @default {CPU count, 2 to MAX_POOL_SIZE} */
  poolSize?: number;
  /** Most connections served at once. 0: no limit. @default {0} */
  maxConns?: number;
  /** Beyond `maxConns`: refuse the next clients at once, or leave them in the kernel's queue. @default {"refuse"} */
  whenFull?: WhenFull;
  /** Log only errors: no line per connection (handlers read it from their options). @default {false} */
  quiet?: boolean;
  /** Receives handler lines and the server's own. @default {printLog} */
  log?: Log;
}

/**
 * Options for {@linkcode serve}: how to run the handler on each connection.
 * The listener's own options (address, port) belong to `Deno.listen()`.
 */
export interface ServeOptions<O> {
  /** Passed to the handler as `context.options`; must survive JSON (children get a JSON copy). */
  handlerOptions: O;
  /** Where each connection's handler runs. @default {"async"} */
  mode?: Mode;
  /** Workers or child processes kept warm (worker and process modes). @default {CPU count, 2 to MAX_POOL_SIZE} */
  poolSize?: number;
  /** Most connections served at once. 0: no limit. @default {0} */
  maxConns?: number;
  /** Beyond `maxConns`: refuse the next clients at once, or leave them in the kernel's queue. @default {"refuse"} */
  whenFull?: WhenFull;
  /** Receives handler lines and the server's own. @default {printLog} */
  log?: Log;
  /** Deno permission flags for child processes, beyond reading the code. @default {["--allow-net"]} */
  childPermissions?: string[];
}

/** Options for {@linkcode serveConnections}: where to listen, and how to serve. */
export interface ServeConnectionsOptions<O> extends ServeOptions<O> {
  /** The handler to run: a module URL and an export name, so workers and children can load it. */
  handler: HandlerRef;
  /** Address to bind. @default {"127.0.0.1"} */
  hostname?: string;
  /** Port to bind; 0 picks a free one. @default {0} */
  port?: number;
}

/**
 * Most Workers or child processes a pool may keep. Each Worker holds about
 * 10 MB and each child about 30 MB, and members beyond the core count add
 * memory, not speed (each member serves many connections at once): 400
 * Workers took 3.8 GB and 13 s to start here.
 */
export const MAX_POOL_SIZE = 32;

/** Counters a server keeps. */
export interface ServerStats extends AcceptStats {
  /** Workers or children replaced after dying. */
  restarts: number;
  /** Tries to start a replacement that failed (each retry counts). */
  startFailures: number;
}

/** A running server; `await using` closes it. */
export interface ConnectionServer extends AsyncDisposable {
  /** The bound address, with the real port when 0 was asked for. */
  readonly addr: Deno.NetAddr;
  /** The mode in use. */
  readonly mode: Mode;
  /** Live counters. */
  readonly stats: ServerStats;
  /** Process ids of the pool's children (process mode), for inspection. */
  childPids(): number[];
  /** Stops accepting, closes live connections, waits for handlers and the pool. */
  close(): Promise<void>;
}

/** The part of a server that decides where a connection's handler runs. */
interface Runner {
  start(): Promise<void>;
  /** Serves `conn`; resolves when it is closed. */
  serve(conn: Deno.TcpConn): Promise<void>;
  /** Closes every connection still open and the pool. */
  stop(): Promise<void>;
  pids(): number[];
}

/**
 * Serves every connection `listener` accepts with `handler`, in the chosen
 * mode, as Go's `http.Serve(listener, handler)` does: the script opens the
 * socket with `Deno.listen()`, this takes it from there. Resolves once the
 * pool is warm and the loop is accepting; clients that connect before that
 * wait in the kernel's queue. From then on the server owns the listener:
 * `close()` closes it. If the pool cannot start, the listener is closed and
 * the error thrown.
 *
 * @example
 * ```ts
 * import { serve } from "./concurrency.ts";
 * const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
 * await using server = await serve(
 *   listener,
 *   { module: new URL("../echo_server.ts", import.meta.url).href, name: "echoHandler" },
 *   { handlerOptions: { quiet: true }, mode: "worker" },
 * );
 * console.log(server.addr.port);
 * ```
 */
export async function serve<O>(
  listener: Deno.TcpListener,
  handler: HandlerRef,
  options: ServeOptions<O>,
): Promise<ConnectionServer> {
  const mode = options.mode ?? "async";
  const log = options.log ?? printLog;
  const stats: ServerStats = { ...newAcceptStats(), restarts: 0, startFailures: 0 };
  let runner: Runner;
  try {
    runner = mode === "async"
      ? new InlineRunner(handler, options, log)
      : new PoolRunner(handler, options, mode, log, stats);
    await runner.start();
  } catch (err) {
    closeQuietly(listener);
    throw err;
  }
  const loop = acceptEach(listener, (conn) => runner.serve(conn), {
    maxConns: options.maxConns,
    whenFull: options.whenFull,
    log,
    stats,
  });

  let closing: Promise<void> | null = null;
  const close = () =>
    closing ??= (async () => {
      loop.close();
      await runner.stop();
      await loop.settled();
    })();

  return {
    addr: listener.addr,
    mode,
    stats,
    childPids: () => runner.pids(),
    close,
    [Symbol.asyncDispose]: close,
  };
}

/**
 * Listens on `hostname:port` ({@linkcode listenOn}: one-line errors) and
 * {@linkcode serve}s it: for callers that do not need the socket in hand.
 *
 * @example
 * ```ts
 * import { serveConnections } from "./concurrency.ts";
 * await using server = await serveConnections({
 *   handler: { module: new URL("../echo_server.ts", import.meta.url).href, name: "echoHandler" },
 *   handlerOptions: { quiet: true },
 * });
 * console.log(server.addr.port);
 * ```
 */
export function serveConnections<O>(
  options: ServeConnectionsOptions<O>,
): Promise<ConnectionServer> {
  return serve(listenOn(options), options.handler, options);
}

// ---------------------------------------------------------------------------

/** `async` mode: the handler runs right here. */
class InlineRunner<O> implements Runner {
  #handler: ConnectionHandler<O> | null = null;
  #live = new Set<Deno.TcpConn>();
  #stopping = false;

  constructor(readonly ref: HandlerRef, readonly options: ServeOptions<O>, readonly log: Log) {}

  async start(): Promise<void> {
    this.#handler = await loadHandler<O>(this.ref);
  }

  async serve(conn: Deno.TcpConn): Promise<void> {
    this.#live.add(conn);
    const context = { options: this.options.handlerOptions, log: this.log };
    // While stopping, handlers fail on the connections closed under them: no news.
    await runHandler(this.#handler!, conn, context, () => !this.#stopping);
    this.#live.delete(conn);
  }

  stop(): Promise<void> {
    this.#stopping = true;
    for (const conn of this.#live) closeQuietly(conn);
    return Promise.resolve();
  }

  pids(): number[] {
    return [];
  }
}

// ---------------------------------------------------------------------------

/** One Worker or child process, as the host sees it. */
interface Guest extends Link<HostMessage> {
  /** Connections it serves now, by id. */
  conns: Map<number, HostConn>;
  /** Resolves when it has stopped, for whatever reason. */
  exited: Promise<string>;
  /** Asks it to stop (children finish; workers are terminated). */
  stop(): void;
  pid?: number;
}

/** Starting a guest, up to its `ready`. */
type GuestFactory = (onMessage: (message: GuestMessage) => void) => Guest;

/** Waiting longer than this for a fresh guest means something is broken. */
const GUEST_START_TIMEOUT_MS = 15_000;
/** Bytes read from a child's stdout at a time. */
const CHILD_READ_BYTES = 256 * 1024;
/** After `stop()`, how long a child may take before it is killed. */
const GUEST_STOP_GRACE_MS = 2_000;
/** First wait before restarting a guest that failed to start or died young; it doubles. */
const RESTART_FIRST_MS = 100;
/** Longest wait between two restarts of a guest that keeps failing. */
const RESTART_MAX_MS = 30_000;
/** A guest that served at least this long before dying is restarted at once. */
const HEALTHY_AFTER_MS = 10_000;

/** `worker` and `process` modes: a warm pool of guests. */
class PoolRunner<O> implements Runner {
  #slots: (Guest | null)[];
  #nextId = 1;
  #stopping = false;
  #factory: GuestFactory;
  /** Slots being refilled, so `stop()` can wait for them. */
  #refills = new Set<Promise<void>>();
  /** Wakes the refills' backoff sleeps when the pool stops. */
  #stopped = new AbortController();
  /** Whether the crash loop has been reported (once, until a guest lives long enough). */
  #crashLoopReported = false;
  /** Per slot: how long to wait before the next start (0 after a guest lived long enough). */
  #backoffMs: number[];

  constructor(
    readonly ref: HandlerRef,
    readonly options: ServeOptions<O>,
    readonly mode: "worker" | "process",
    readonly log: Log,
    readonly stats: ServerStats,
  ) {
    const size = options.poolSize ??
      Math.min(MAX_POOL_SIZE, Math.max(2, navigator.hardwareConcurrency));
    if (!Number.isInteger(size) || size < 1 || size > MAX_POOL_SIZE) {
      throw new RangeError(`poolSize must be 1 to ${MAX_POOL_SIZE}, got ${size}`);
    }
    this.#slots = new Array(size).fill(null);
    this.#backoffMs = new Array(size).fill(0);
    this.#factory = mode === "worker"
      ? workerFactory()
      : childFactory(options.childPermissions ?? ["--allow-net"]);
  }

  /** Starts every slot; a guest that cannot start at all is the caller's error to report. */
  async start(): Promise<void> {
    try {
      await Promise.all(this.#slots.map((_, i) => this.#launch(i)));
    } catch (err) {
      await this.stop();
      throw err;
    }
  }

  // Starts the guest for slot `i` and resolves once it is ready.
  async #launch(i: number): Promise<void> {
    let ready!: () => void;
    let refused!: (err: Error) => void;
    const isReady = new Promise<void>((resolve, reject) => {
      ready = resolve;
      refused = reject;
    });
    isReady.catch(() => {}); // a refusal after the start timed out must not go unhandled
    const guest = this.#factory((message) => {
      if (message.t === "ready") ready();
      else if (message.t === "failed") {
        refused(new CliError(`${this.mode} failed to start: ${message.reason}`));
      } else if (message.t === "log") this.log(message.line);
      else guest.conns.get(message.id)?.receive(message);
    });
    guest.send({ t: "init", handler: this.ref, options: this.options.handlerOptions });
    let timer: ReturnType<typeof setTimeout> | undefined;
    const failed = Promise.race([
      guest.exited.then((why) => {
        throw new CliError(`${this.mode} failed to start: ${why}`);
      }),
      new Promise<never>((_, reject) => {
        timer = setTimeout(
          () =>
            reject(new CliError(`${this.mode} did not start within ${GUEST_START_TIMEOUT_MS} ms`)),
          GUEST_START_TIMEOUT_MS,
        );
      }),
    ]);
    try {
      await Promise.race([isReady, failed]);
    } catch (err) {
      guest.stop();
      await guest.exited;
      throw err;
    } finally {
      clearTimeout(timer);
    }
    failed.catch(() => {});
    if (this.#stopping) {
      guest.stop();
      await guest.exited;
      return;
    }
    this.#slots[i] = guest;
    const startedAt = performance.now();
    guest.exited.then((why) => this.#onExit(i, guest, why, performance.now() - startedAt));
  }

  #onExit(i: number, guest: Guest, why: string, livedMs: number): void {
    if (this.#slots[i] === guest) this.#slots[i] = null;
    const lost = guest.conns.size;
    for (const conn of guest.conns.values()) conn.finish();
    if (this.#stopping) return;
    const what = `${this.mode} ${i} died (${why}); closed its ${lost} connection(s)`;
    if (livedMs >= HEALTHY_AFTER_MS) {
      // A guest that served a good while: replace it at once, and start counting afresh.
      this.#backoffMs[i] = 0;
      this.#crashLoopReported = false;
      this.log(`${what}, starting a new one`);
    } else {
      // Died young: one more turn of a crash loop, perhaps. Wait longer each time.
      this.#backoffMs[i] = nextBackoff(this.#backoffMs[i]);
      this.#reportCrashLoop(`${what} ${Math.round(livedMs)} ms after starting`);
    }
    const refill = this.#refill(i).finally(() => this.#refills.delete(refill));
    this.#refills.add(refill);
  }

  /**
   * Refills slot `i` until a guest starts, waiting longer after each failure
   * (and after each guest that died young): a handler that crashes on load
   * or at once costs a try every 30 s, not a spinning core.
   */
  async #refill(i: number): Promise<void> {
    while (!this.#stopping) {
      if (this.#backoffMs[i] > 0) await sleep(this.#backoffMs[i], this.#stopped.signal);
      if (this.#stopping) return;
      try {
        await this.#launch(i);
        this.stats.restarts++;
        return;
      } catch (err) {
        this.stats.startFailures++;
        this.#backoffMs[i] = nextBackoff(this.#backoffMs[i]);
        this.#reportCrashLoop(`could not restart ${this.mode} ${i}: ${(err as Error).message}`);
      }
    }
  }

  /** Logs the first line of a crash loop, and nothing more until a guest lives long enough. */
  #reportCrashLoop(line: string): void {
    if (this.#crashLoopReported) return;
    this.#crashLoopReported = true;
    this.log(
      `${line}; restarting with backoff up to ${RESTART_MAX_MS / 1000} s (reported once ` +
        `until one lives ${HEALTHY_AFTER_MS / 1000} s)`,
    );
  }

  serve(conn: Deno.TcpConn): Promise<void> {
    // The least busy live guest takes the connection.
    let best: Guest | null = null;
    for (const guest of this.#slots) {
      if (guest && (!best || guest.conns.size < best.conns.size)) best = guest;
    }
    if (!best) {
      this.log(`no ${this.mode} available for ${formatAddr(conn.remoteAddr)}: closing it`);
      closeQuietly(conn);
      return Promise.resolve();
    }
    const guest = best;
    const id = this.#nextId++;
    const hostConn = new HostConn(id, conn, guest);
    guest.conns.set(id, hostConn);
    hostConn.start();
    return hostConn.done.finally(() => guest.conns.delete(id));
  }

  async stop(): Promise<void> {
    this.#stopping = true;
    this.#stopped.abort();
    await Promise.all([...this.#refills]);
    const guests = this.#slots.filter((g): g is Guest => g !== null);
    for (const guest of guests) {
      for (const conn of guest.conns.values()) conn.finish();
      guest.stop();
    }
    await Promise.all(guests.map((g) => g.exited));
  }

  pids(): number[] {
    return this.#slots.flatMap((g) => g?.pid ? [g.pid] : []);
  }
}

/** The wait after `ms`: 100 ms, then twice as long each time, at most 30 s. */
function nextBackoff(ms: number): number {
  return Math.min(Math.max(RESTART_FIRST_MS, ms * 2), RESTART_MAX_MS);
}

/** Waits `ms`, or less if `signal` aborts. */
function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(done, ms);
    signal.addEventListener("abort", done, { once: true });
    function done() {
      clearTimeout(timer);
      signal.removeEventListener("abort", done);
      resolve();
    }
  });
}

// Worker guests: structured clone, buffers transferred.
function workerFactory(): GuestFactory {
  const url = new URL("./guest_worker.ts", import.meta.url);
  requirePermission(
    { name: "read", path: url },
    `--mode worker needs read access to the code, because Web Workers load it from disk: add --allow-read=${
      decodeURIComponent(new URL(".", new URL("..", import.meta.url)).pathname).replace(/\/$/, "")
    }`,
  );
  return (onMessage) => {
    const worker = new Worker(url, { type: "module" });
    let exit!: (why: string) => void;
    const exited = new Promise<string>((resolve) => exit = resolve);
    worker.onmessage = (event: MessageEvent<GuestMessage>) => onMessage(event.data);
    worker.onerror = (event) => {
      // An uncaught error in a worker would otherwise end the whole server.
      event.preventDefault();
      worker.terminate();
      exit(event.message);
    };
    worker.onmessageerror = () => {
      worker.terminate();
      exit("unreadable message");
    };
    return {
      conns: new Map(),
      exited,
      copiesData: false,
      send(message) {
        if (message.t === "data") worker.postMessage(message, [message.bytes.buffer]);
        else worker.postMessage(message);
      },
      stop() {
        worker.terminate();
        exit("stopped");
      },
    };
  };
}

// Child guests: `deno run lib/guest_child.ts`, framed messages on stdin/stdout.
function childFactory(permissions: string[]): GuestFactory {
  const execPath = Deno.execPath();
  requirePermission(
    { name: "run", command: execPath },
    "--mode process needs permission to start deno child processes: add --allow-run",
  );
  const entry = new URL("./guest_child.ts", import.meta.url);
  const codeDir = decodeURIComponent(new URL("..", import.meta.url).pathname).replace(/\/$/, "");
  return (onMessage) => {
    const child = new Deno.Command(execPath, {
      args: [
        "run",
        "--quiet",
        "--no-prompt",
        "--v8-flags=--max-semi-space-size=4",
        `--allow-read=${codeDir}`,
        ...permissions,
        entry.href,
      ],
      stdin: "piped",
      stdout: "piped",
      stderr: "inherit",
    }).spawn();
    const writer = child.stdin.getWriter();
    const kill = () => {
      try {
        child.kill("SIGKILL");
      } catch {
        // Gone already.
      }
    };
    // Runs of small frames go to the child in one write (see FrameWriter).
    const out = new FrameWriter((bytes) => writer.write(bytes));
    const exited = (async () => {
      let why: string | null = null;
      const frames = new FrameDecoder();
      // A BYOB reader refills one buffer instead of allocating a chunk per read.
      const reader = child.stdout.getReader({ mode: "byob" });
      let buffer = new Uint8Array(CHILD_READ_BYTES);
      try {
        while (true) {
          const { value, done } = await reader.read(buffer);
          if (done || !value) break;
          for (const message of frames.push(value)) onMessage(message as GuestMessage);
          buffer = new Uint8Array(value.buffer);
        }
      } catch (err) {
        why = `bad output from child: ${(err as Error).message}`;
        await reader.cancel().catch(() => {});
        kill();
      }
      const status = await child.status;
      // Release our end of its stdin too (a no-op when stop() closed it); later sends fail.
      await writer.abort().catch(() => {});
      return why ?? (status.signal ? `killed by ${status.signal}` : `exit code ${status.code}`);
    })();
    return {
      conns: new Map(),
      exited,
      pid: child.pid,
      copiesData: true,
      send: (message) => out.send(message),
      stop() {
        // Closing stdin tells the child to finish; a stuck one is killed.
        writer.close().catch(() => {});
        const timer = setTimeout(kill, GUEST_STOP_GRACE_MS);
        exited.finally(() => clearTimeout(timer));
      },
    };
  };
}

function requirePermission(descriptor: Deno.PermissionDescriptor, message: string): void {
  if (Deno.permissions.querySync(descriptor).state !== "granted") {
    throw new CliError(message);
  }
}
